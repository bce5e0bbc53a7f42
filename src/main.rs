//! The `cdc-bridge` command line. It only orchestrates: parse, load the
//! configuration, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{error, info};

use cdc_bridge::bridge::{self, Role};
use cdc_bridge::config::{Config, Direction};
use cdc_bridge::direction;
use cdc_bridge::envelope::Side;
use cdc_bridge::postgres::{connect, database_name};
use cdc_bridge::reader::slot_name;
use cdc_bridge::registry::load_tenants;
use cdc_bridge::{http, kafka, setup, shutdown};

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
    /// database, and create the Kafka topic. Safe to run again.
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
    /// Check the configuration file and print it with secrets redacted.
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(&cli.config)?);
    if let Some(root_cert) = &config.postgres.tls_root_cert {
        cdc_bridge::tls::init(root_cert)?;
    }
    match cli.command {
        Command::Setup { dry_run: true } => {
            print_setup_sql(&config);
            Ok(())
        }
        Command::Setup { dry_run: false } => run_setup(&config).await,
        Command::Run { role } => run(config, role).await,
        Command::Teardown { drop_slots } => run_teardown(&config, drop_slots).await,
        Command::Direction { action } => run_direction(&config, action).await,
        Command::DeadLetters {
            action: DeadLetterAction::Redrive,
        } => {
            let count = cdc_bridge::dead_letter::redrive(&config.kafka).await?;
            println!(
                "re-drove {count} dead letters from {} to {}",
                config.kafka.dead_letter_topic(),
                config.kafka.topic
            );
            Ok(())
        }
        Command::Grants { role } => print_grants(&config, &role).await,
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
    }
}

fn print_setup_sql(config: &Config) {
    for (side, title) in [
        (Side::Landlord, "landlord database"),
        (Side::Tenant, "every tenant database"),
    ] {
        println!("-- ===== {title} =====");
        for (name, sql) in setup::render_side(config, side) {
            println!("-- {name}\n{sql}");
        }
    }
    println!(
        "-- ===== Kafka =====\n-- create topic {} ({} partitions, replication factor {}, cleanup.policy={}, retention.ms={})",
        config.kafka.topic, config.kafka.partitions, config.kafka.replication_factor, config.kafka.cleanup_policy, config.kafka.retention_ms
    );
}

async fn run_setup(config: &Config) -> anyhow::Result<()> {
    let mut landlord = connect(&config.landlord.dsn, "landlord").await?;
    setup::install(&mut landlord, config, Side::Landlord, "landlord").await?;
    info!("landlord database ready");
    for tenant in load_tenants(&landlord, config).await? {
        let dsn = tenant.dsn(&config.tenants.connection_template);
        let mut client = connect(&dsn, &tenant.database_name).await?;
        setup::install(&mut client, config, Side::Tenant, &tenant.database_name)
            .await
            .with_context(|| {
                format!(
                    "setting up tenant {} ({})",
                    tenant.slug, tenant.database_name
                )
            })?;
        info!(tenant = %tenant.slug, database = %tenant.database_name, "tenant database ready");
    }
    kafka::ensure_topic(&config.kafka).await?;
    info!(topic = %config.kafka.topic, "Kafka topic ready");
    Ok(())
}

async fn print_grants(config: &Config, role: &str) -> anyhow::Result<()> {
    let landlord_db = database_name(&config.landlord.dsn)?;
    let landlord = connect(&config.landlord.dsn, "landlord").await?;
    println!("-- ===== landlord database {landlord_db} =====");
    for (name, sql) in setup::render_grants(config, Side::Landlord, role, &landlord_db) {
        println!("-- {name}\n{sql}");
    }
    for tenant in load_tenants(&landlord, config).await? {
        println!("-- ===== tenant database {} =====", tenant.database_name);
        for (name, sql) in setup::render_grants(config, Side::Tenant, role, &tenant.database_name) {
            println!("-- {name}\n{sql}");
        }
    }
    Ok(())
}

async fn run_teardown(config: &Config, drop_slots: bool) -> anyhow::Result<()> {
    let mut databases = vec![(
        Side::Landlord,
        "landlord".to_string(),
        config.landlord.dsn.clone(),
    )];
    let landlord = connect(&config.landlord.dsn, "landlord").await?;
    for tenant in load_tenants(&landlord, config).await? {
        let dsn = tenant.dsn(&config.tenants.connection_template);
        databases.push((Side::Tenant, tenant.database_name, dsn));
    }
    for (side, database, dsn) in databases {
        let mut client = connect(&dsn, &database).await?;
        if drop_slots {
            let slot = slot_name(
                &config.replication.slot_prefix,
                &current_database(&client).await?,
            );
            client
                .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
                .await
                .with_context(|| format!("dropping slot {slot} (is the bridge still running?)"))?;
        }
        setup::uninstall(&mut client, config, side, &database).await?;
        info!(%database, "bridge objects removed");
    }
    Ok(())
}

async fn current_database(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    Ok(client
        .query_one("SELECT current_database()::text", &[])
        .await?
        .get(0))
}

async fn run_direction(config: &Config, action: DirectionAction) -> anyhow::Result<()> {
    let client = connect(&config.landlord.dsn, "landlord").await?;
    let id = |tenant: &str| {
        if tenant == "all" {
            direction::ALL_TENANTS.to_string()
        } else {
            tenant.to_string()
        }
    };
    match action {
        DirectionAction::Set {
            tenant,
            direction: d,
        } => {
            direction::set(&client, config, &id(&tenant), d).await?;
            println!("direction of {tenant} set to {}", d.as_str());
        }
        DirectionAction::Clear { tenant } => {
            direction::clear(&client, config, &id(&tenant)).await?;
            println!("override of {tenant} removed");
        }
        DirectionAction::List => {
            let directions = direction::load(&client, config).await?;
            println!("default: {}", config.sync.default_direction.as_str());
            for tenant in load_tenants(&client, config).await? {
                println!(
                    "{} ({}): {}",
                    tenant.id,
                    tenant.slug,
                    directions.of(&tenant.id).as_str()
                );
            }
        }
    }
    Ok(())
}

async fn run(config: Arc<Config>, role: Role) -> anyhow::Result<()> {
    let (trigger, _) = shutdown::channel();
    if !config.http.listen.is_empty() {
        let listen = config.http.listen.parse().context("http.listen")?;
        let shutdown = trigger.subscribe();
        let http_config = Arc::clone(&config);
        tokio::spawn(async move {
            if let Err(e) = http::serve(http_config, listen, shutdown).await {
                error!(%listen, error = %e, "HTTP endpoint failed; check http.listen");
            }
        });
    }
    let on_signal = trigger.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down: draining in-flight events");
        on_signal.trigger();
    });
    bridge::run(config, role, trigger).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
