//! The `cdc-bridge` command line, one file per command. It only
//! orchestrates: parse, load the configuration, hand over to the library.

mod check;
mod direction;
mod grants;
mod progress;
mod replay;
mod run;
mod setup;
mod teardown;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing::error;

use crate::config::Config;
use crate::model::Direction;
use crate::service::Role;

/// Keeps a table in sync between per-tenant PostgreSQL databases and a
/// central landlord database, through Kafka, with logical replication.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). See config/example.toml.
    #[arg(
        short,
        long,
        global = true,
        default_value = "config/local.toml",
        env = "CDC_BRIDGE_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the bridge needs (bookkeeping schema, publications,
    /// replica identity) in the landlord and every registered tenant
    /// database, and create the Kafka topics (changes and dead letters).
    /// Safe to run again.
    Setup {
        /// Print the SQL instead of running it; touches nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the bridge in the foreground until Ctrl-C or SIGTERM.
    Run {
        /// Which part to run: everything, or one role so roles scale apart.
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
    },
    /// Remove everything `setup` installed (triggers, bridge columns,
    /// tombstones, publications, bookkeeping schema) from the landlord and
    /// every registered tenant. Stop the bridge first.
    Teardown {
        /// Also drop the replication slots (they retain WAL while they exist).
        #[arg(long)]
        drop_slots: bool,
        /// Also delete the Kafka topics `setup` created (changes and dead
        /// letters): the history is gone for good.
        #[arg(long)]
        delete_topics: bool,
    },
    /// Show or change the sync direction of one tenant or all: this is how
    /// cutover and rollback are done. Takes effect while the bridge runs.
    Direction {
        #[command(subcommand)]
        action: DirectionAction,
    },
    /// Print the GRANT statements that let ROLE run the bridge with least
    /// privilege (after `setup` was run by the tables' owner).
    Grants {
        /// The role `cdc-bridge run` connects as.
        #[arg(long)]
        role: String,
    },
    /// Messages that could not be applied (see the dead-letter topic).
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Compare both sides of every tenant (or the named ones) and print one
    /// state per tenant: consistent, tenant_only, landlord_only, differs,
    /// unreachable or paused. Exit code 0 when all are consistent, 1 when
    /// any is not, 2 when the check could not run.
    Check {
        /// A tenant's registry id; repeat for several (default: all).
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: check::Format,
        /// Make every divergent tenant consistent, newest wins, through the
        /// applier's locked write path (as far as its direction allows).
        #[arg(long)]
        repair: bool,
        /// Most tenants per second (0: no limit).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// Apply the change topic again, from the beginning or a point in time
    /// up to its end at the start, with a throwaway consumer (the
    /// applier's offsets stay), under last writer wins: idempotent, never
    /// replaces a newer row. E.g. after the landlord table was emptied or
    /// restored from an old backup.
    Replay {
        /// Which side receives the changes.
        #[arg(long, value_enum)]
        to: replay::To,
        /// A tenant's registry id; repeat for several (default: all).
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Read the whole topic.
        #[arg(long, conflicts_with = "since", required_unless_present = "since")]
        from_beginning: bool,
        /// Start at this time (2026-12-01T10:00:00Z) or this long ago (2h).
        #[arg(long, value_parser = replay::parse_since)]
        since: Option<std::time::SystemTime>,
    },
    /// Publish one side's current rows to the change topic as snapshot
    /// events (a topic whose retention dropped history, a new consumer).
    Backfill {
        #[arg(long, value_enum)]
        from: replay::From,
        /// A tenant's registry id; repeat for several (default: all).
        #[arg(long = "tenant")]
        tenants: Vec<String>,
    },
    /// Check the configuration file and print it (as TOML, with defaults
    /// filled in) with every secret redacted.
    CheckConfig,
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Send every dead letter not re-driven before back to the change topic
    /// (after fixing the cause: a missing tenant, a column type, ...).
    Redrive,
}

#[derive(Subcommand)]
enum DirectionAction {
    /// Set the direction of a tenant (by registry id), or of every tenant
    /// without its own override (`all`).
    Set {
        tenant: String,
        direction: Direction,
    },
    /// Remove an override: the tenant follows `all`, or the configured default.
    Clear { tenant: String },
    /// Print the overrides and the configured default.
    List,
}

/// Parses the command line and runs the command; the binary's `main`.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_target(false)
        // Logs are diagnostics: stdout stays for what a command prints
        // (check's JSON, dry-run SQL), so that it can be piped.
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Commands that gate pipelines keep 1 for "not consistent".
    let failed = match cli.command {
        Command::Check { .. } | Command::Replay { .. } | Command::Backfill { .. } => {
            ExitCode::from(2)
        }
        _ => ExitCode::FAILURE,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            failed
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Arc::new(Config::load(&cli.config)?);
    crate::postgres::session::configure(&config.postgres);
    if let Some(root_cert) = &config.postgres.tls_root_cert {
        crate::postgres::tls::init(root_cert)?;
    }
    match cli.command {
        Command::Check {
            tenants,
            format,
            repair,
            rate,
        } => {
            let options = crate::consistency::CheckOptions {
                tenants,
                repair,
                rate,
            };
            check::run(config, options, format).await
        }
        Command::Replay {
            to, tenants, since, ..
        } => replay::run_replay(config, to, tenants, since).await,
        Command::Backfill { from, tenants } => replay::run_backfill(config, from, tenants).await,
        command => run_command(config, command)
            .await
            .map(|()| ExitCode::SUCCESS),
    }
}

/// The commands whose success is exit code 0.
async fn run_command(config: Arc<Config>, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Setup { dry_run: true } => {
            setup::print_setup_sql(&config);
            Ok(())
        }
        Command::Setup { dry_run: false } => setup::run_setup(&config).await,
        Command::Run { role } => run::run(config, role).await,
        Command::Teardown {
            drop_slots,
            delete_topics,
        } => {
            let scope = teardown::TeardownScope {
                drop_slots,
                delete_topics,
            };
            teardown::run_teardown(&config, scope).await
        }
        Command::Direction { action } => direction::run_direction(&config, action).await,
        Command::DeadLetters {
            action: DeadLetterAction::Redrive,
        } => {
            let count = crate::kafka::dead_letter::redrive(&config.kafka).await?;
            println!(
                "re-drove {count} dead letters from {} to {}",
                config.kafka.dead_letter_topic(),
                config.kafka.topic
            );
            Ok(())
        }
        Command::Grants { role } => grants::print_grants(&config, &role).await,
        Command::CheckConfig => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Check { .. } | Command::Replay { .. } | Command::Backfill { .. } => {
            Err(anyhow::anyhow!("this command has its own exit codes"))
        }
    }
}
