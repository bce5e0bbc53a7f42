//! The reader: one task per source database streams its slot into Kafka.
//!
//! ```text
//!  ┌ start ─────────────────────────────────────────────────────────────┐
//!  │ install migrations (idempotent) ─► slot exists and snapshot done?   │
//!  │     no  ─► create slot, export snapshot, send snapshot, mark done   │
//!  │     yes ─► resume at the slot's confirmed_flush_lsn                 │
//!  └──► START_REPLICATION ─► loop {                                     │
//!          XLogData  ─► decode ─► envelope ─► Kafka (tracked per txn)   │
//!          keepalive ─► idle? confirm wal_end; reply if asked           │
//!          Kafka ack ─► tracker may move the confirmable LSN            │
//!          tick      ─► standby status with the confirmable LSN         │
//!          shutdown  ─► drain acks, confirm, close }                    │
//! ```
//! A failure anywhere ends the task with an error; the supervisor restarts
//! it after a backoff and it resumes from the slot, so nothing is lost and
//! at worst a few events reach Kafka twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kafka::Producer;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::capture::{CaptureError, SourceContext, SourceTable};
use crate::change_stream::ChangeStream;
use crate::config::{Config, Secret, TableConfig};
use crate::delivery::{Delivery, DeliveryError};
use crate::envelope::{Side, TenantRef};
use crate::lsn::Lsn;
use crate::metrics::metrics;
use crate::pgoutput::DecodeError;
use crate::postgres::{connect, table_columns, DbError};
use crate::registry::TenantDirectory;
use crate::replication::{ReplicationConnection, ReplicationError};
use crate::setup::{ensure_installed, side_key_columns, side_table};
use crate::shutdown::Shutdown;
use crate::snapshot::send_snapshot;

/// A database the bridge reads from.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub side: Side,
    pub database: String,
    pub dsn: Secret,
    /// Who the rows belong to: one tenant for a tenant database; for the
    /// landlord, each row's tenant key looked up in the directory.
    pub owner: RowOwner,
}

/// How a source's rows map to tenants.
#[derive(Debug, Clone)]
pub enum RowOwner {
    Tenant(TenantRef),
    Landlord(TenantDirectory),
}

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("replication stream of database {database}: {source}")]
    Replication {
        database: String,
        source: ReplicationError,
    },
    #[error("undecodable pgoutput message: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

impl ReaderError {
    pub fn sql(database: &str, what: &str, source: tokio_postgres::Error) -> Self {
        ReaderError::Db(DbError::query(database, what, source))
    }

    pub(crate) fn replication(database: &str) -> impl FnOnce(ReplicationError) -> ReaderError + '_ {
        move |source| ReaderError::Replication {
            database: database.to_string(),
            source,
        }
    }
}

/// Slot names are cluster-wide and limited to 63 characters of `[a-z0-9_]`;
/// long database names are shortened with a hash so that they stay unique.
pub fn slot_name(prefix: &str, database: &str) -> String {
    let clean: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let full = format!("{prefix}_{clean}");
    if full.len() <= 63 && clean == database {
        return full;
    }
    let hash = database.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let keep = 63 - 9 - prefix.len() - 1;
    format!("{prefix}_{}_{hash:08x}", &clean[..clean.len().min(keep)])
}

/// Runs one source until shutdown, restarting after failures with backoff.
pub async fn supervise(
    spec: SourceSpec,
    config: Arc<Config>,
    producer: Producer,
    mut shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_triggered() {
        let started = Instant::now();
        match run_source(&spec, &config, producer.clone(), shutdown.clone()).await {
            Ok(()) => break,
            Err(error) => {
                metrics()
                    .source_up
                    .with_label_values(&[spec.database.as_str()])
                    .set(0);
                warn!(database = %spec.database, %error, retry_in = ?backoff, "reader stopped; restarting");
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    metrics()
        .source_up
        .with_label_values(&[spec.database.as_str()])
        .set(0);
}

/// Streams one source database into Kafka until shutdown or an error.
pub async fn run_source(
    spec: &SourceSpec,
    config: &Config,
    producer: Producer,
    shutdown: Shutdown,
) -> Result<(), ReaderError> {
    stream_source(spec, config, producer, shutdown, None).await
}

/// Streams until every change up to `end` is acknowledged by Kafka, then
/// returns (used by the benchmark to drain a prepared workload).
pub async fn drain_source_to(
    spec: &SourceSpec,
    config: &Config,
    producer: Producer,
    end: Lsn,
) -> Result<(), ReaderError> {
    let (_trigger, shutdown) = crate::shutdown::channel();
    stream_source(spec, config, producer, shutdown, Some(end)).await
}

async fn stream_source(
    spec: &SourceSpec,
    config: &Config,
    producer: Producer,
    shutdown: Shutdown,
    stop_at: Option<Lsn>,
) -> Result<(), ReaderError> {
    let db = spec.database.as_str();
    let mut client = connect(&spec.dsn, db).await?;
    ensure_installed(&mut client, config, spec.side, db).await?;
    let slot = slot_name(&config.replication.slot_prefix, db);
    let mut conn = ReplicationConnection::connect(spec.dsn.expose())
        .await
        .map_err(ReaderError::replication(db))?;
    let source = SourceContext {
        side: spec.side,
        database: spec.database.clone(),
    };
    let start = match resume_position(&client, config, &slot, db).await? {
        Some(lsn) => lsn,
        None => {
            create_and_snapshot(
                &mut client,
                &mut conn,
                config,
                &slot,
                (&source, &spec.owner),
                producer.clone(),
            )
            .await?
        }
    };
    conn.start_replication(&slot, start, &config.replication.publication)
        .await
        .map_err(ReaderError::replication(db))?;
    info!(database = db, %slot, %start, "streaming");
    metrics().source_up.with_label_values(&[db]).set(1);
    let delivery = Delivery::new(producer, config.kafka.topic.clone(), start);
    let mut stream = ChangeStream::new(
        config,
        source,
        spec.owner.clone(),
        slot,
        client,
        conn,
        delivery,
        start,
    );
    stream.stop_at = stop_at;
    stream.run(shutdown).await
}

/// The slot's confirmed position, or `None` when the slot must be (re)created.
async fn resume_position(
    client: &Client,
    config: &Config,
    slot: &str,
    db: &str,
) -> Result<Option<Lsn>, ReaderError> {
    let state_table = format!(
        "{}.slot_state",
        crate::postgres::quote_ident(&config.replication.bridge_schema)
    );
    let sql = format!(
        "SELECT s.confirmed_flush_lsn::text, coalesce(s.wal_status, '') = 'lost',
                EXISTS (SELECT 1 FROM {state_table} WHERE slot_name = $1)
           FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1"
    );
    let row = client
        .query_one(&sql, &[&slot])
        .await
        .map_err(|e| ReaderError::sql(db, "read slot", e))?;
    let (confirmed, invalidated, snapshot_done): (Option<String>, bool, bool) =
        (row.get(0), row.get(1), row.get(2));
    match (confirmed, invalidated, snapshot_done) {
        (Some(lsn), false, true) => Ok(lsn.parse().ok()),
        (Some(_), false, false) => {
            warn!(
                database = db,
                slot, "slot exists but its snapshot never completed; dropping it to snapshot again"
            );
            drop_slot(client, slot, db).await?;
            Ok(None)
        }
        (Some(_), true, _) => {
            slot_lost(
                db,
                slot,
                "was invalidated (it fell behind max_slot_wal_keep_size)",
            );
            drop_slot(client, slot, db).await?;
            Ok(None)
        }
        (None, _, true) => {
            slot_lost(db, slot, "no longer exists (dropped by hand?)");
            Ok(None)
        }
        (None, _, false) => Ok(None),
    }
}

/// A slot that carried changes is gone: the changes it held are lost to the
/// stream, so the reader re-creates it and sends a fresh snapshot, which
/// carries the current state of every row (the conflict rule makes the
/// re-sent rows harmless where the other side is already newer).
fn slot_lost(db: &str, slot: &str, what: &str) {
    tracing::error!(
        database = db,
        slot,
        "replication slot {what}; creating it again and re-sending a snapshot of the current rows"
    );
    metrics().slot_recreated.with_label_values(&[db]).inc();
}

async fn drop_slot(client: &Client, slot: &str, db: &str) -> Result<(), ReaderError> {
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(|e| ReaderError::sql(db, "drop slot", e))?;
    Ok(())
}

async fn create_and_snapshot(
    client: &mut Client,
    conn: &mut ReplicationConnection,
    config: &Config,
    slot: &str,
    (source, owner): (&SourceContext, &RowOwner),
    producer: Producer,
) -> Result<Lsn, ReaderError> {
    let db = source.database.as_str();
    let state_table = format!(
        "{}.slot_state",
        crate::postgres::quote_ident(&config.replication.bridge_schema)
    );
    client
        .execute(
            &format!("DELETE FROM {state_table} WHERE slot_name = $1"),
            &[&slot],
        )
        .await
        .map_err(|e| ReaderError::sql(db, "clear slot state", e))?;
    let created = conn
        .create_slot(slot)
        .await
        .map_err(ReaderError::replication(db))?;
    let mut tables = Vec::new();
    for table in &config.tables {
        let name = side_table(source.side, table).to_string();
        let columns = table_columns(client, db, &name).await?;
        let source_table = source_table(
            config,
            source.side,
            table,
            columns.into_iter().map(|c| (c.name, c.type_name)).collect(),
        );
        tables.push((source_table, name));
    }
    let mut delivery = Delivery::new(
        producer,
        config.kafka.topic.clone(),
        created.consistent_point,
    );
    let sent = send_snapshot(
        client,
        &created.snapshot_name,
        created.consistent_point,
        (source, owner),
        &tables,
        &mut delivery,
    )
    .await?;
    client
        .execute(
            &format!(
                "INSERT INTO {state_table} (slot_name, snapshot_lsn) VALUES ($1, $2::text::pg_lsn)"
            ),
            &[&slot, &created.consistent_point.to_string()],
        )
        .await
        .map_err(|e| ReaderError::sql(db, "record snapshot done", e))?;
    metrics()
        .events_produced
        .with_label_values(&[db])
        .inc_by(sent);
    info!(database = db, slot, rows = sent, at = %created.consistent_point, "initial snapshot sent");
    Ok(created.consistent_point)
}

/// The stream's view of a synced table: data columns, key, version column.
pub(crate) fn source_table(
    config: &Config,
    side: Side,
    table: &TableConfig,
    columns: Vec<(String, String)>,
) -> SourceTable {
    let mut excluded = table.exclude_columns.clone();
    excluded.push(config.sync.source_column.clone());
    excluded.push(config.sync.version_column.clone());
    SourceTable {
        name: table.name.clone(),
        columns,
        key_columns: side_key_columns(side, table),
        excluded,
        version_column: config.sync.version_column.clone(),
        source_column: config.sync.source_column.clone(),
    }
}

/// The tenant a row belongs to, given the value of its tenant key column
/// (ignored for tenant databases); `None` only for a landlord row without a
/// tenant key. A landlord row of a tenant the directory does not list yet
/// (registered in the same transaction, say) is still sent, with an empty
/// slug: the applier reads the registry again before it routes it.
pub(crate) fn row_tenant(owner: &RowOwner, tenant_id: Option<&str>) -> Option<TenantRef> {
    match owner {
        RowOwner::Tenant(tenant) => Some(tenant.clone()),
        RowOwner::Landlord(directory) => {
            let id = tenant_id?;
            Some(
                directory
                    .get(id)
                    .map(|t| t.tenant_ref())
                    .unwrap_or_else(|| TenantRef {
                        id: id.to_string(),
                        slug: String::new(),
                    }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_valid_and_unique_per_database() {
        assert_eq!(
            slot_name("cdc_bridge", "tenant_acme"),
            "cdc_bridge_tenant_acme"
        );
        let odd = slot_name("cdc_bridge", "Tenant-Acme");
        assert!(odd.starts_with("cdc_bridge_tenant_acme_"), "{odd}");
        assert_ne!(odd, slot_name("cdc_bridge", "tenant_acme"));
        let long = slot_name("cdc_bridge", &"x".repeat(80));
        assert!(long.len() <= 63, "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }
}
