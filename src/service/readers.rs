//! The reader role: the landlord's reader plus one supervised reader per
//! registered tenant database, started and stopped as the registry changes.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Config;
use crate::kafka;
use crate::model::{Side, TenantId};
use crate::postgres::bridge_schema::{record_installed, ApplyKey};
use crate::postgres::registry::{load_tenants, status_entries, Tenant, TenantDirectory};
use crate::postgres::{connect, DbError};
use crate::runtime::retry::{Classify, FailureLog};
use crate::runtime::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::runtime::status::status;
use crate::source::{slot_name, supervise, RowOwner, SourceSpec};

/// Running reader tasks by tenant id.
type Readers = HashMap<TenantId, (Tenant, ShutdownTrigger, JoinHandle<()>)>;

/// The reader role: the landlord's reader plus one supervised task per
/// registered tenant, kept in step with the registry on every poll.
pub(super) async fn run(
    config: Arc<Config>,
    key: ApplyKey,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let producer = kafka::producer(&config.kafka)?;
    let directory = TenantDirectory::default();
    let mut running: Readers = HashMap::new();
    let mut landlord: Option<JoinHandle<()>> = None;
    let interval = config.tenants.rediscover_interval;
    // One registry connection for all polls, opened again after a failure.
    let mut registry: Option<tokio_postgres::Client> = None;
    let mut failures = FailureLog::default();
    let mut unrecorded: Vec<Tenant> = Vec::new();
    const WHAT: &str = "reading the tenant registry (the current tenants keep syncing)";
    loop {
        match poll_registry(&config, &mut registry).await {
            Ok(tenants) => {
                failures.recovered(WHAT);
                directory.replace(&tenants);
                let template = &config.tenants.connection_template;
                status().set_tenants(status_entries(&tenants, template));
                // The landlord reader maps rows to tenants, so it starts
                // once the directory has been filled.
                if landlord.is_none() {
                    let spec = landlord_spec(&config, &directory, &key)?;
                    landlord = Some(tokio::spawn(supervise(
                        spec,
                        Arc::clone(&config),
                        producer.clone(),
                        shutdown.clone(),
                    )));
                }
                let started =
                    sync_readers(&config, &producer, &key, &mut running, tenants, &shutdown).await;
                unrecorded.extend(started);
                record_streamed(&config, registry.as_ref(), &mut unrecorded).await;
            }
            Err(error) => failures.failed(WHAT, error.class(), &error, interval),
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

fn landlord_spec(
    config: &Config,
    directory: &TenantDirectory,
    key: &ApplyKey,
) -> anyhow::Result<SourceSpec> {
    Ok(SourceSpec {
        side: Side::Landlord,
        database: crate::postgres::database_name(&config.landlord.dsn)?,
        dsn: config.landlord.dsn.clone(),
        owner: RowOwner::Landlord(directory.clone()),
        apply_marker: key.marker.clone(),
    })
}

/// Notes in the landlord which tenant databases are streamed, so that
/// `teardown` reaches them even after they leave the registry; what cannot
/// be recorded now is tried again on the next poll.
async fn record_streamed(
    config: &Config,
    landlord: Option<&tokio_postgres::Client>,
    unrecorded: &mut Vec<Tenant>,
) {
    let Some(landlord) = landlord else { return };
    while let Some(tenant) = unrecorded.last() {
        if let Err(error) = record_installed(landlord, config, tenant).await {
            tracing::debug!(%error, "cannot record the streamed database yet");
            return;
        }
        unrecorded.pop();
    }
}

/// A tenant that moved (its registry row now points at another database)
/// leaves a slot behind at the old place, which would hold WAL there
/// forever: drop it (its reader has stopped), or say so loudly. The new
/// place gets a slot and a snapshot of its own, and the applier
/// reconciles the two sides.
async fn drop_old_slot(config: &Config, old: &Tenant) {
    let dsn = old.dsn(&config.tenants.connection_template);
    let slot = slot_name(&config.replication.slot_prefix, &old.database_name);
    let dropped = async {
        let client = connect(&dsn, &old.database_name).await?;
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE slot_name = $1 AND NOT active",
                &[&slot.as_str()],
            )
            .await
            .map_err(|e| DbError::query(&old.database_name, "drop the moved tenant's old slot", e))
    };
    match dropped.await {
        Ok(n) => {
            info!(tenant = %old.id, %slot, old_place = %dsn, dropped = n, "tenant moved; its old slot is gone")
        }
        Err(error) => tracing::error!(
            tenant = %old.id, %slot, old_place = %dsn, %error,
            "tenant moved but its old slot could not be dropped; it holds WAL there until you drop it: SELECT pg_drop_replication_slot('{slot}')"
        ),
    }
}

/// Starts readers for new tenants and stops those no longer listed (or
/// whose registry row changed: they start again on the new row).
async fn sync_readers(
    config: &Arc<Config>,
    producer: &kafka::Producer,
    key: &ApplyKey,
    running: &mut Readers,
    tenants: Vec<Tenant>,
    parent: &Shutdown,
) -> Vec<Tenant> {
    let mut started = Vec::new();
    let wanted: HashMap<TenantId, Tenant> =
        tenants.into_iter().map(|t| (t.id.clone(), t)).collect();
    let gone: Vec<TenantId> = running
        .iter()
        .filter(|(id, (old, _, _))| wanted.get(*id) != Some(old))
        .map(|(id, _)| id.clone())
        .collect();
    for id in gone {
        if let Some((tenant, trigger, handle)) = running.remove(&id) {
            info!(tenant = %id, database = %tenant.database_name, "tenant left the registry or changed; stopping its reader");
            trigger.trigger();
            let _ = handle.await;
            let template = &config.tenants.connection_template;
            let moved = wanted
                .get(&id)
                .is_some_and(|now| now.dsn(template) != tenant.dsn(template));
            if moved {
                drop_old_slot(config, &tenant).await;
            }
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
            apply_marker: key.marker.clone(),
        };
        let (trigger, shutdown) = shutdown::channel();
        let handle = tokio::spawn(supervise(
            spec,
            Arc::clone(config),
            producer.clone(),
            shutdown,
        ));
        started.push(tenant.clone());
        running.insert(id, (tenant, trigger, handle));
    }
    started
}
