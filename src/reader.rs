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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use tokio_postgres::Client;
use tracing::{debug, info, warn};

use crate::capture::{row_envelope, CaptureError, SourceContext, SourceTable, TxnInfo};
use crate::config::{Config, Secret, TableConfig};
use crate::delivery::{Delivery, DeliveryError, MAX_IN_FLIGHT};
use crate::envelope::{Op, Side, TenantRef};
use crate::lsn::Lsn;
use crate::metrics::metrics;
use crate::pgoutput::{DecodeError, LogicalMessage, OldTuple, Relation, TupleData};
use crate::postgres::{connect, table_columns, type_name, DbError};
use crate::progress::TxnSeq;
use crate::replication::{ReplicationConnection, ReplicationError, StreamMessage};
use crate::setup::install;
use crate::shutdown::Shutdown;
use crate::snapshot::send_snapshot;

/// A database the bridge reads from.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub side: Side,
    pub database: String,
    pub dsn: Secret,
    pub tenant: TenantRef,
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

    fn replication(database: &str) -> impl FnOnce(ReplicationError) -> ReaderError + '_ {
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
    producer: FutureProducer,
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
    producer: FutureProducer,
    shutdown: Shutdown,
) -> Result<(), ReaderError> {
    stream_source(spec, config, producer, shutdown, None).await
}

/// Streams until every change up to `end` is acknowledged by Kafka, then
/// returns (used by the benchmark to drain a prepared workload).
pub async fn drain_source_to(
    spec: &SourceSpec,
    config: &Config,
    producer: FutureProducer,
    end: Lsn,
) -> Result<(), ReaderError> {
    let (_trigger, shutdown) = crate::shutdown::channel();
    stream_source(spec, config, producer, shutdown, Some(end)).await
}

async fn stream_source(
    spec: &SourceSpec,
    config: &Config,
    producer: FutureProducer,
    shutdown: Shutdown,
    stop_at: Option<Lsn>,
) -> Result<(), ReaderError> {
    let db = spec.database.as_str();
    let mut client = connect(&spec.dsn, db).await?;
    install(&mut client, config, spec.side, db).await?;
    let slot = slot_name(&config.replication.slot_prefix, db);
    let mut conn = ReplicationConnection::connect(spec.dsn.expose())
        .await
        .map_err(ReaderError::replication(db))?;
    let source = SourceContext {
        side: spec.side,
        database: spec.database.clone(),
        tenant: spec.tenant.clone(),
    };
    let start = match resume_position(&client, config, &slot, db).await? {
        Some(lsn) => lsn,
        None => {
            create_and_snapshot(
                &mut client,
                &mut conn,
                config,
                &slot,
                &source,
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
    let mut stream = SourceStream {
        config,
        source,
        slot,
        client,
        conn,
        delivery: Delivery::new(producer, config.kafka.topic.clone(), start),
        relations: HashMap::new(),
        type_names: HashMap::new(),
        current: None,
        server_position: start,
        last_reported: Lsn::ZERO,
        stop_at,
    };
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
    let row = client
        .query_opt(
            &format!(
                "SELECT s.confirmed_flush_lsn::text, (SELECT count(*) FROM {state_table} WHERE slot_name = $1)
                   FROM pg_replication_slots s WHERE s.slot_name = $1"
            ),
            &[&slot],
        )
        .await
        .map_err(|e| ReaderError::sql(db, "read slot", e))?;
    match row {
        Some(row) if row.get::<_, i64>(1) > 0 => {
            let lsn: Option<String> = row.get(0);
            Ok(lsn.and_then(|l| l.parse().ok()))
        }
        Some(_) => {
            warn!(
                database = db,
                slot, "slot exists but its snapshot never completed; dropping it to snapshot again"
            );
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await
                .map_err(|e| ReaderError::sql(db, "drop unfinished slot", e))?;
            Ok(None)
        }
        None => Ok(None),
    }
}

async fn create_and_snapshot(
    client: &mut Client,
    conn: &mut ReplicationConnection,
    config: &Config,
    slot: &str,
    source: &SourceContext,
    producer: FutureProducer,
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
        source,
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

fn side_table(side: Side, table: &TableConfig) -> &str {
    match side {
        Side::Tenant => table.tenant_table(),
        Side::Landlord => table.landlord_table(),
    }
}

fn source_table(side: Side, table: &TableConfig, columns: Vec<(String, String)>) -> SourceTable {
    let key_columns = match side {
        Side::Tenant => table.tenant_row_key.clone(),
        Side::Landlord => vec![table.landlord_tenant_key.clone()],
    };
    SourceTable {
        name: table.name.clone(),
        columns,
        key_columns,
        excluded: table.exclude_columns.clone(),
    }
}

/// Whether a relation from the stream is the configured table name.
fn relation_matches(relation: &Relation, configured: &str) -> bool {
    match configured.split_once('.') {
        Some((schema, name)) => relation.namespace == schema && relation.name == name,
        None => relation.name == configured,
    }
}

/// The streaming phase of one source.
struct SourceStream<'a> {
    config: &'a Config,
    source: SourceContext,
    slot: String,
    /// Ordinary connection, for type names of new relations.
    client: Client,
    conn: ReplicationConnection,
    delivery: Delivery,
    /// Relation id to table (`None`: a published table we do not sync).
    relations: HashMap<u32, Option<SourceTable>>,
    type_names: HashMap<(u32, i32), String>,
    /// The open transaction, between Begin and Commit.
    current: Option<(TxnSeq, TxnInfo)>,
    /// Latest WAL end the server told us about (for the lag metric).
    server_position: Lsn,
    last_reported: Lsn,
    /// Stop once this position is confirmable (benchmark drains).
    stop_at: Option<Lsn>,
}

impl SourceStream<'_> {
    async fn run(&mut self, mut shutdown: Shutdown) -> Result<(), ReaderError> {
        let interval = Duration::from_millis(self.config.replication.status_interval_ms);
        let mut tick = tokio::time::interval(interval);
        loop {
            let may_read = self.delivery.in_flight() < MAX_IN_FLIGHT;
            tokio::select! {
                message = self.conn.next_message(), if may_read => {
                    let message = message.map_err(ReaderError::replication(&self.source.database))?;
                    self.on_message(message).await?;
                }
                acked = self.delivery.poll(), if self.delivery.in_flight() > 0 => acked?,
                _ = tick.tick() => self.report(false).await?,
                _ = shutdown.wait() => break,
            }
            if self
                .stop_at
                .is_some_and(|end| self.delivery.confirmable() >= end)
            {
                break;
            }
        }
        self.delivery.drain().await?;
        self.report(false).await?;
        self.conn.close().await;
        info!(database = %self.source.database, confirmed = %self.delivery.confirmable(), "reader stopped cleanly");
        Ok(())
    }

    async fn on_message(&mut self, message: StreamMessage) -> Result<(), ReaderError> {
        match message {
            StreamMessage::XLogData { wal_end, data, .. } => {
                self.server_position = self.server_position.max(wal_end);
                self.on_logical(LogicalMessage::decode(data)?).await
            }
            StreamMessage::Keepalive {
                wal_end,
                reply_requested,
            } => {
                self.server_position = self.server_position.max(wal_end);
                self.delivery.tracker().idle_advance(wal_end);
                if reply_requested {
                    self.report(true).await?;
                }
                Ok(())
            }
        }
    }

    async fn on_logical(&mut self, message: LogicalMessage) -> Result<(), ReaderError> {
        match message {
            LogicalMessage::Begin {
                final_lsn,
                commit_timestamp_micros,
                xid,
            } => {
                let seq = self.delivery.tracker().begin();
                self.current = Some((
                    seq,
                    TxnInfo::from_begin(final_lsn, commit_timestamp_micros, xid),
                ));
            }
            LogicalMessage::Commit { end_lsn, .. } => {
                if let Some((seq, _)) = self.current.take() {
                    self.delivery.tracker().commit(seq, end_lsn);
                }
            }
            LogicalMessage::Relation(relation) => self.on_relation(relation).await?,
            LogicalMessage::Insert { relation_id, new } => {
                self.on_row(relation_id, Op::Upsert, Some(new), None)
                    .await?
            }
            LogicalMessage::Update {
                relation_id,
                old,
                new,
            } => self.on_row(relation_id, Op::Upsert, Some(new), old).await?,
            LogicalMessage::Delete { relation_id, old } => {
                self.on_row(relation_id, Op::Delete, None, Some(old))
                    .await?
            }
            LogicalMessage::Truncate { .. } => {
                warn!(database = %self.source.database, "TRUNCATE of a synced table is not replicated; delete rows instead");
            }
            other => {
                debug!(database = %self.source.database, message = ?other, "ignored logical message")
            }
        }
        let acked = self.delivery.take_acknowledged();
        if acked > 0 {
            metrics()
                .events_produced
                .with_label_values(&[self.source.database.as_str()])
                .inc_by(acked);
        }
        Ok(())
    }

    async fn on_relation(&mut self, relation: Relation) -> Result<(), ReaderError> {
        let side = self.source.side;
        let Some(table) = self
            .config
            .tables
            .iter()
            .find(|t| relation_matches(&relation, side_table(side, t)))
        else {
            self.relations.insert(relation.id, None);
            return Ok(());
        };
        let mut columns = Vec::with_capacity(relation.columns.len());
        for column in &relation.columns {
            let key = (column.type_oid, column.type_modifier);
            if !self.type_names.contains_key(&key) {
                let name = type_name(&self.client, &self.source.database, key.0, key.1).await?;
                self.type_names.insert(key, name);
            }
            columns.push((column.name.clone(), self.type_names[&key].clone()));
        }
        self.relations
            .insert(relation.id, Some(source_table(side, table, columns)));
        Ok(())
    }

    async fn on_row(
        &mut self,
        relation_id: u32,
        op: Op,
        new: Option<TupleData>,
        old: Option<OldTuple>,
    ) -> Result<(), ReaderError> {
        let (Some(Some(table)), Some((seq, txn))) =
            (self.relations.get(&relation_id), self.current.as_ref())
        else {
            return Ok(());
        };
        let envelope = row_envelope(&self.source, table, txn, op, new.as_ref(), old.as_ref())?;
        let seq = *seq;
        self.delivery
            .send(seq, envelope.kafka_key(), &envelope.to_json())
            .await?;
        Ok(())
    }

    /// Sends a standby status update when the confirmable position moved,
    /// when the server asked, or as the periodic heartbeat.
    async fn report(&mut self, reply_requested: bool) -> Result<(), ReaderError> {
        let confirmed = self.delivery.confirmable();
        self.conn
            .send_status(confirmed, reply_requested)
            .await
            .map_err(ReaderError::replication(&self.source.database))?;
        if confirmed != self.last_reported {
            debug!(database = %self.source.database, %confirmed, "confirmed");
            self.last_reported = confirmed;
        }
        let m = metrics();
        m.confirmed_lsn
            .with_label_values(&[self.slot.as_str()])
            .set(confirmed.0 as i64);
        let lag = self.server_position.0.saturating_sub(confirmed.0);
        m.replication_lag_bytes
            .with_label_values(&[self.slot.as_str()])
            .set(lag as i64);
        Ok(())
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
