//! The streaming phase of one source: decode, filter, send, confirm.
//!
//! ```text
//!  XLogData ─► pgoutput ─┬─ Begin/Commit ─► ack tracker (per transaction)
//!                        ├─ Message 'cdc_bridge.apply' ─► this txn is the applier's: drop its rows
//!                        ├─ Relation ─► synced table | tombstones | ignored
//!                        ├─ Insert/Update of a synced table ─► upsert envelope
//!                        ├─ Insert/Update of tombstones (this side's) ─► delete envelope
//!                        └─ Delete of a synced table ─► nothing: its tombstone carries it
//!  keepalive ─► idle? confirm wal_end · reply at once when asked
//! ```

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Client;
use tracing::{debug, info, warn};

use crate::capture::{
    column_text, delete_envelope, parse_tombstone, row_envelope, SourceContext, SourceTable,
    TxnInfo,
};
use crate::config::Config;
use crate::delivery::{Delivery, MAX_IN_FLIGHT};
use crate::envelope::{Envelope, Op};
use crate::loop_guard::is_apply_marker;
use crate::lsn::Lsn;
use crate::metrics::metrics;
use crate::pgoutput::{LogicalMessage, OldTuple, Relation, TupleData};
use crate::postgres::type_name;
use crate::progress::TxnSeq;
use crate::reader::{row_tenant, source_table, ReaderError, RowOwner};
use crate::replication::{ReplicationConnection, StreamMessage};
use crate::setup::side_table;
use crate::shutdown::Shutdown;

/// How long a stopping reader waits for Kafka to acknowledge what it sent.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How often each reader removes expired tombstones (also once at start).
const TOMBSTONE_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);

/// What a relation of the stream is to us.
enum RelationKind {
    Synced(SourceTable),
    /// The bridge's tombstones table (its column names, in order).
    Tombstones(Vec<String>),
    Ignored,
}

/// The open transaction, between Begin and Commit.
struct OpenTxn {
    seq: TxnSeq,
    info: TxnInfo,
    /// The applier wrote this transaction: its rows are echoes.
    is_echo: bool,
}

pub(crate) struct ChangeStream<'a> {
    config: &'a Config,
    source: SourceContext,
    owner: RowOwner,
    slot: String,
    /// Ordinary connection, for type names of new relations.
    client: Client,
    conn: ReplicationConnection,
    delivery: Delivery,
    relations: HashMap<u32, RelationKind>,
    type_names: HashMap<(u32, i32), String>,
    current: Option<OpenTxn>,
    /// Latest WAL end the server told us about (for the lag metric).
    server_position: Lsn,
    /// Stop once this position is confirmable (benchmark drains).
    pub(crate) stop_at: Option<Lsn>,
}

impl<'a> ChangeStream<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: &'a Config,
        source: SourceContext,
        owner: RowOwner,
        slot: String,
        client: Client,
        conn: ReplicationConnection,
        delivery: Delivery,
        start: Lsn,
    ) -> Self {
        ChangeStream {
            config,
            source,
            owner,
            slot,
            client,
            conn,
            delivery,
            relations: HashMap::new(),
            type_names: HashMap::new(),
            current: None,
            server_position: start,
            stop_at: None,
        }
    }

    pub(crate) async fn run(&mut self, mut shutdown: Shutdown) -> Result<(), ReaderError> {
        let interval = Duration::from_millis(self.config.replication.status_interval_ms);
        let mut tick = tokio::time::interval(interval);
        let mut cleanup = tokio::time::interval(TOMBSTONE_CLEANUP_INTERVAL);
        loop {
            let may_read = self.delivery.in_flight() < MAX_IN_FLIGHT;
            tokio::select! {
                message = self.conn.next_message(), if may_read => {
                    let message = message.map_err(ReaderError::replication(&self.source.database))?;
                    self.on_message(message).await?;
                }
                acked = self.delivery.poll(), if self.delivery.in_flight() > 0 => acked?,
                _ = tick.tick() => self.report().await?,
                _ = cleanup.tick() => self.expire_tombstones().await?,
                _ = shutdown.wait() => break,
            }
            self.count_acknowledged();
            if self
                .stop_at
                .is_some_and(|end| self.delivery.confirmable() >= end)
            {
                break;
            }
        }
        // Bounded: with Kafka down the drain would never end. Whatever is not
        // acknowledged is not confirmed either, so it is sent again next start.
        match tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, self.delivery.drain()).await {
            Ok(drained) => drained?,
            Err(_) => {
                warn!(database = %self.source.database, in_flight = self.delivery.in_flight(), "Kafka did not acknowledge in time; unconfirmed events will be sent again on restart")
            }
        }
        self.count_acknowledged();
        self.report().await?;
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
                    self.report().await?;
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
                let info = TxnInfo::from_begin(final_lsn, commit_timestamp_micros, xid);
                self.current = Some(OpenTxn {
                    seq,
                    info,
                    is_echo: false,
                });
            }
            LogicalMessage::Commit { end_lsn, .. } => {
                if let Some(txn) = self.current.take() {
                    self.delivery.tracker().commit(txn.seq, end_lsn);
                }
            }
            LogicalMessage::Message {
                transactional,
                prefix,
                ..
            } => {
                if let (true, Some(txn)) = (
                    is_apply_marker(transactional, &prefix),
                    self.current.as_mut(),
                ) {
                    txn.is_echo = true;
                }
            }
            LogicalMessage::Relation(relation) => self.on_relation(relation).await?,
            LogicalMessage::Insert { relation_id, new } => {
                self.on_row(relation_id, Some(new), None).await?
            }
            LogicalMessage::Update {
                relation_id,
                old,
                new,
            } => self.on_row(relation_id, Some(new), old).await?,
            LogicalMessage::Delete { .. } => {
                // A delete reaches Kafka through the tombstone its trigger wrote
                // in the same transaction, which carries the delete's version.
            }
            LogicalMessage::Truncate { .. } => {
                warn!(database = %self.source.database, "TRUNCATE of a synced table is not replicated; delete rows instead");
            }
            other => {
                debug!(database = %self.source.database, message = ?other, "ignored logical message")
            }
        }
        Ok(())
    }

    async fn on_relation(&mut self, relation: Relation) -> Result<(), ReaderError> {
        let side = self.source.side;
        if relation.namespace == self.config.replication.bridge_schema
            && relation.name == "tombstones"
        {
            let names = relation.columns.iter().map(|c| c.name.clone()).collect();
            self.relations
                .insert(relation.id, RelationKind::Tombstones(names));
            return Ok(());
        }
        let Some(table) = self
            .config
            .tables
            .iter()
            .find(|t| relation_matches(&relation, side_table(side, t)))
        else {
            self.relations.insert(relation.id, RelationKind::Ignored);
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
        let synced = source_table(self.config, side, table, columns);
        self.relations
            .insert(relation.id, RelationKind::Synced(synced));
        Ok(())
    }

    async fn on_row(
        &mut self,
        relation_id: u32,
        new: Option<TupleData>,
        old: Option<OldTuple>,
    ) -> Result<(), ReaderError> {
        let Some(txn) = self.current.as_ref() else {
            return Ok(());
        };
        let (seq, is_echo) = (txn.seq, txn.is_echo);
        let envelope = match self.relations.get(&relation_id) {
            Some(RelationKind::Synced(_)) | Some(RelationKind::Tombstones(_)) if is_echo => {
                metrics()
                    .echo_suppressed
                    .with_label_values(&[self.source.database.as_str()])
                    .inc();
                return Ok(());
            }
            Some(RelationKind::Synced(table)) => {
                self.upsert_envelope(table, &txn.info, new, old)?
            }
            Some(RelationKind::Tombstones(names)) => {
                new.and_then(|row| self.tombstone_envelope(names, &row, &txn.info))
            }
            Some(RelationKind::Ignored) | None => None,
        };
        if let Some(envelope) = envelope {
            self.delivery
                .send(seq, envelope.kafka_key(), &envelope.to_json())
                .await?;
        }
        Ok(())
    }

    fn upsert_envelope(
        &self,
        table: &SourceTable,
        txn: &TxnInfo,
        new: Option<TupleData>,
        old: Option<OldTuple>,
    ) -> Result<Option<Envelope>, ReaderError> {
        let Some(new) = new else { return Ok(None) };
        let tenant_id = column_text(table, &new, &table.key_columns[0]);
        let Some(tenant) = row_tenant(&self.owner, tenant_id.as_deref()) else {
            warn!(database = %self.source.database, tenant = ?tenant_id, "change of a tenant the registry does not list; skipped");
            return Ok(None);
        };
        Ok(Some(row_envelope(
            &self.source,
            &tenant,
            table,
            txn,
            Op::Upsert,
            Some(&new),
            old.as_ref(),
        )?))
    }

    /// A tombstone written by this side's application is a delete to send.
    fn tombstone_envelope(
        &self,
        names: &[String],
        row: &TupleData,
        txn: &TxnInfo,
    ) -> Option<Envelope> {
        let tombstone = parse_tombstone(names, row)?;
        if tombstone.side != self.source.side.as_str() {
            return None;
        }
        let table = self.config.table(&tombstone.table)?;
        let tenant_key = crate::setup::side_key_columns(self.source.side, table).remove(0);
        let tenant_id = tombstone.key.get(&tenant_key).cloned().flatten();
        let tenant = row_tenant(&self.owner, tenant_id.as_deref())?;
        Some(delete_envelope(&self.source, &tenant, tombstone, txn))
    }

    /// Removes tombstones older than the retention. Their deletion is not
    /// replicated (deletes of the tombstones table are ignored).
    async fn expire_tombstones(&mut self) -> Result<(), ReaderError> {
        let sql = format!(
            "DELETE FROM {}.tombstones WHERE deleted_at < now() - make_interval(days => $1)",
            crate::postgres::quote_ident(&self.config.replication.bridge_schema)
        );
        let days = i32::try_from(self.config.sync.tombstone_retention_days).unwrap_or(i32::MAX);
        let removed = self
            .client
            .execute(&sql, &[&days])
            .await
            .map_err(|e| ReaderError::sql(&self.source.database, "expire tombstones", e))?;
        if removed > 0 {
            info!(database = %self.source.database, removed, "expired tombstones removed");
        }
        Ok(())
    }

    fn count_acknowledged(&mut self) {
        let acked = self.delivery.take_acknowledged();
        if acked > 0 {
            metrics()
                .events_produced
                .with_label_values(&[self.source.database.as_str()])
                .inc_by(acked);
        }
    }

    /// Sends a standby status update with the confirmable position (also the
    /// periodic heartbeat, and the answer to a keepalive that asks).
    async fn report(&mut self) -> Result<(), ReaderError> {
        let confirmed = self.delivery.confirmable();
        self.conn
            .send_status(confirmed)
            .await
            .map_err(ReaderError::replication(&self.source.database))?;
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

/// Whether a relation from the stream is the configured table name.
fn relation_matches(relation: &Relation, configured: &str) -> bool {
    match configured.split_once('.') {
        Some((schema, name)) => relation.namespace == schema && relation.name == name,
        None => relation.name == configured,
    }
}
