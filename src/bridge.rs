//! Orchestration of `run`: the reader role (one supervised task per tenant
//! database, re-discovered from the registry on an interval), the applier
//! role, and the HTTP endpoint, all stopped by one shutdown signal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::applier::Applier;
use crate::config::Config;
use crate::envelope::Side;
use crate::kafka;
use crate::reader::{supervise, RowOwner, SourceSpec};
use crate::registry::{load_tenants, Tenant, TenantDirectory};
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// Which parts of the bridge this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Reader and applier.
    All,
    /// Stream databases into Kafka.
    Reader,
    /// Apply Kafka to the databases.
    Applier,
}

/// Runs the selected roles until `shutdown` fires; returns after every task
/// has drained and stopped.
pub async fn run(config: Arc<Config>, role: Role, trigger: ShutdownTrigger) -> anyhow::Result<()> {
    crate::preflight::check(&config).await?;
    kafka::ensure_topic(&config.kafka).await?;
    let mut tasks: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    if role != Role::Applier {
        let config = Arc::clone(&config);
        let shutdown = trigger.subscribe();
        tasks.spawn(async move { run_readers(config, shutdown).await });
    }
    if role != Role::Reader {
        let applier = Applier::new(Arc::clone(&config))?;
        let shutdown = trigger.subscribe();
        tasks.spawn(async move { Ok(applier.run(shutdown).await?) });
    }
    let mut first_error = None;
    // Whichever role ends first with an error stops the others: a process
    // that silently runs only half of the bridge would look healthy.
    while let Some(result) = tasks.join_next().await {
        let result = result.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = result {
            trigger.trigger();
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Running reader tasks by tenant id.
type Readers = HashMap<String, (Tenant, ShutdownTrigger, JoinHandle<()>)>;

/// The reader role: the landlord's reader plus one supervised task per
/// registered tenant, reconciled with the registry on every poll.
async fn run_readers(config: Arc<Config>, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let producer = kafka::producer(&config.kafka)?;
    let directory = TenantDirectory::default();
    let mut running: Readers = HashMap::new();
    let mut landlord: Option<JoinHandle<()>> = None;
    let interval = Duration::from_secs(config.tenants.rediscover_interval_secs);
    // One registry connection for all polls, opened again after a failure.
    let mut registry: Option<tokio_postgres::Client> = None;
    loop {
        match poll_registry(&config, &mut registry).await {
            Ok(tenants) => {
                directory.replace(&tenants);
                // The landlord reader maps rows to tenants, so it starts
                // once the directory has been filled.
                if landlord.is_none() {
                    let spec = landlord_spec(&config, &directory)?;
                    landlord = Some(tokio::spawn(supervise(
                        spec,
                        Arc::clone(&config),
                        producer.clone(),
                        shutdown.clone(),
                    )));
                }
                reconcile(&config, &producer, &mut running, tenants, &shutdown).await;
            }
            Err(error) => {
                warn!(%error, "cannot read the tenant registry; keeping the current tenants")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => break,
        }
    }
    for (_, (_, trigger, handle)) in running {
        trigger.trigger();
        let _ = handle.await;
    }
    if let Some(handle) = landlord {
        let _ = handle.await;
    }
    Ok(())
}

async fn poll_registry(
    config: &Config,
    registry: &mut Option<tokio_postgres::Client>,
) -> Result<Vec<Tenant>, crate::postgres::DbError> {
    let client = match registry.take().filter(|c| !c.is_closed()) {
        Some(client) => client,
        None => crate::postgres::connect(&config.landlord.dsn, "landlord").await?,
    };
    let tenants = load_tenants(&client, config).await?;
    *registry = Some(client);
    Ok(tenants)
}

fn landlord_spec(config: &Config, directory: &TenantDirectory) -> anyhow::Result<SourceSpec> {
    Ok(SourceSpec {
        side: Side::Landlord,
        database: crate::postgres::database_name(&config.landlord.dsn)?,
        dsn: config.landlord.dsn.clone(),
        owner: RowOwner::Landlord(directory.clone()),
    })
}

/// Starts readers for new tenants and stops those no longer listed.
async fn reconcile(
    config: &Arc<Config>,
    producer: &crate::kafka::Producer,
    running: &mut Readers,
    tenants: Vec<Tenant>,
    parent: &Shutdown,
) {
    let wanted: HashMap<String, Tenant> = tenants.into_iter().map(|t| (t.id.clone(), t)).collect();
    let gone: Vec<String> = running
        .iter()
        .filter(|(id, (old, _, _))| wanted.get(*id) != Some(old))
        .map(|(id, _)| id.clone())
        .collect();
    for id in gone {
        if let Some((tenant, trigger, handle)) = running.remove(&id) {
            info!(tenant = %id, database = %tenant.database_name, "tenant left the registry or changed; stopping its reader");
            trigger.trigger();
            let _ = handle.await;
        }
    }
    for (id, tenant) in wanted {
        if running.contains_key(&id) || parent.is_triggered() {
            continue;
        }
        info!(tenant = %id, database = %tenant.database_name, "starting reader");
        let spec = SourceSpec {
            side: Side::Tenant,
            database: tenant.database_name.clone(),
            dsn: tenant.dsn(&config.tenants.connection_template),
            owner: RowOwner::Tenant(tenant.tenant_ref()),
        };
        let (trigger, shutdown) = crate::shutdown::channel();
        let handle = tokio::spawn(supervise(
            spec,
            Arc::clone(config),
            producer.clone(),
            shutdown,
        ));
        running.insert(id, (tenant, trigger, handle));
    }
}
