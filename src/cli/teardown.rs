//! `cdc-bridge teardown [--drop-slots] [--delete-topics]`: remove what
//! `setup` installed from every database the bridge ever set up or
//! streamed — registered tenants, and those recorded in the landlord's
//! `installed_databases` (inactive, removed or moved since) — then from the
//! landlord. A database that cannot be reached is listed and the command
//! fails, keeping the landlord's records so that running it again finishes
//! the job.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use tokio_postgres::Client;
use tracing::info;

use crate::config::{Config, Dsn};
use crate::kafka;
use crate::model::Side;
use crate::postgres::bridge_schema::{forget_installed, installed_tenants};
use crate::postgres::registry::{load_tenants, Tenant};
use crate::postgres::{connect, setup};
use crate::source::slot_name;

/// What `teardown` removes besides the database objects.
#[derive(Debug, Clone, Copy)]
pub(super) struct TeardownScope {
    pub(super) drop_slots: bool,
    pub(super) delete_topics: bool,
}

pub(super) async fn run_teardown(config: &Config, scope: TeardownScope) -> anyhow::Result<()> {
    let landlord = connect(&config.landlord.dsn, "landlord").await?;
    let mut failed = Vec::new();
    for (dsn, tenant) in tenant_databases(&landlord, config).await? {
        match remove_from(config, Side::Tenant, &tenant.database_name, &dsn, scope).await {
            Ok(()) => {
                // Best effort: a landlord without the record table (an
                // older install) has nothing to forget.
                let _ = forget_installed(&landlord, config, &tenant).await;
                info!(tenant = %tenant.id, database = %tenant.database_name, "bridge objects removed");
            }
            Err(error) => failed.push(format!(
                "tenant {} database {} ({dsn}): {error:#}",
                tenant.id, tenant.database_name
            )),
        }
    }
    if !failed.is_empty() {
        bail!(
            "teardown could not reach {} database(s); the landlord keeps its records, so run teardown again once they answer:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    remove_from(
        config,
        Side::Landlord,
        "landlord",
        &config.landlord.dsn,
        scope,
    )
    .await?;
    info!(database = "landlord", "bridge objects removed");
    if scope.delete_topics {
        kafka::delete_topics(&config.kafka).await?;
        info!(topic = %config.kafka.topic, dead_letters = %config.kafka.dead_letter_topic(), "Kafka topics deleted");
    }
    Ok(())
}

/// Registered tenants and recorded ones, each place once (by its DSN).
async fn tenant_databases(
    landlord: &Client,
    config: &Config,
) -> anyhow::Result<Vec<(Dsn, Tenant)>> {
    let template = &config.tenants.connection_template;
    let mut places = BTreeMap::new();
    let recorded = match installed_tenants(landlord, config).await {
        Ok(recorded) => recorded,
        // Installed before the bridge kept records: the registry is all.
        Err(error) => {
            tracing::warn!(%error, "no record of installed databases; tearing down the registered tenants only");
            Vec::new()
        }
    };
    for tenant in load_tenants(landlord, config)
        .await?
        .into_iter()
        .chain(recorded)
    {
        places
            .entry(tenant.dsn(template).expose().to_string())
            .or_insert(tenant);
    }
    Ok(places
        .into_values()
        .map(|tenant| (tenant.dsn(template), tenant))
        .collect())
}

async fn remove_from(
    config: &Config,
    side: Side,
    database: &str,
    dsn: &Dsn,
    scope: TeardownScope,
) -> anyhow::Result<()> {
    let mut client = connect(dsn, database).await?;
    if scope.drop_slots {
        let current: String = client
            .query_one("SELECT current_database()::text", &[])
            .await?
            .get(0);
        let slot = slot_name(&config.replication.slot_prefix, &current);
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot.as_str()],
            )
            .await
            .with_context(|| format!("dropping slot {slot} (is the bridge still running?)"))?;
    }
    setup::uninstall(&mut client, config, side, database).await?;
    Ok(())
}
