//! The `cdc-bridge` command line. It only orchestrates: parse, load the
//! configuration, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{error, info};

use cdc_bridge::bridge::{self, Role};
use cdc_bridge::config::Config;
use cdc_bridge::envelope::Side;
use cdc_bridge::postgres::connect;
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
    /// Check the configuration file and print it with secrets redacted.
    CheckConfig,
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
    match cli.command {
        Command::Setup { dry_run: true } => {
            print_setup_sql(&config);
            Ok(())
        }
        Command::Setup { dry_run: false } => run_setup(&config).await,
        Command::Run { role } => run(config, role).await,
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
    for tenant in load_tenants(config).await? {
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

async fn run(config: Arc<Config>, role: Role) -> anyhow::Result<()> {
    let (trigger, _) = shutdown::channel();
    if !config.http.listen.is_empty() {
        let listen = config.http.listen.parse().context("http.listen")?;
        let shutdown = trigger.subscribe();
        tokio::spawn(async move {
            if let Err(e) = http::serve(listen, shutdown).await {
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
