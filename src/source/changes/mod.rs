//! From decoded `pgoutput` messages to change events, for one source: which
//! transaction is open, which relation is which table, which rows are the
//! applier's own echoes. No I/O of its own: events go to an [`EventSink`]
//! (Kafka in production) and type names come from a [`TypeNames`] lookup
//! (the catalog), so the logic runs in-process in tests.
//!
//! ```text
//!  Begin/Commit ─► sink: one tracked transaction
//!  Message 'cdc_bridge.apply' ─► this txn is the applier's: drop its rows (counted)
//!  Relation ─► synced table | tombstones | ignored
//!  Insert/Update of a synced table ─► upsert envelope
//!  Insert/Update of tombstones (this side's) ─► delete envelope
//!  Delete of a synced table ─► nothing: its tombstone carries it
//!  Truncate ─► logged, not replicated
//! ```

use std::collections::HashMap;

use tracing::{debug, warn};

use super::capture::{
    column_text, delete_envelope, parse_tombstone, row_envelope, CapturedTable, SourceDb, TxnInfo,
};
use super::pgoutput::{LogicalMessage, OldTuple, Relation, TupleData};
use super::{ReaderError, RowOwner};
use crate::config::Config;
use crate::kafka::delivery::{Delivery, DeliveryError};
use crate::kafka::progress::TxnSeq;
use crate::model::loop_guard::is_apply_marker;
use crate::model::{Envelope, Lsn, Op};
use crate::postgres::bridge_schema::TOMBSTONES;
use crate::runtime::metrics::metrics;

/// Where change events go, transaction by transaction.
pub(crate) trait EventSink {
    /// A source transaction began; its events carry the returned sequence.
    fn begin(&mut self) -> TxnSeq;
    /// The transaction committed at `end`: no more events for `seq`.
    fn commit(&mut self, seq: TxnSeq, end: Lsn);
    /// One event of transaction `seq`.
    async fn send(&mut self, seq: TxnSeq, envelope: &Envelope) -> Result<(), DeliveryError>;
}

impl EventSink for Delivery {
    fn begin(&mut self) -> TxnSeq {
        self.tracker().begin()
    }

    fn commit(&mut self, seq: TxnSeq, end: Lsn) {
        self.tracker().commit(seq, end);
    }

    async fn send(&mut self, seq: TxnSeq, envelope: &Envelope) -> Result<(), DeliveryError> {
        // Never waits: a full queue parks the event and the stream stops
        // reading until it is through (see `stream`).
        self.offer(seq, envelope)
    }
}

/// `format_type(oid, typmod)` of a column type the stream names by oid.
pub(crate) trait TypeNames {
    async fn type_name(&mut self, oid: u32, modifier: i32) -> Result<String, ReaderError>;
}

/// What a relation of the stream is to us.
enum RelationKind {
    Synced(CapturedTable),
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

/// The per-source state that turns the stream into events.
pub(crate) struct Changes<'a> {
    config: &'a Config,
    source: SourceDb,
    owner: RowOwner,
    /// The mark of this installation's applier transactions.
    apply_marker: String,
    relations: HashMap<u32, RelationKind>,
    type_names: HashMap<(u32, i32), String>,
    current: Option<OpenTxn>,
}

impl<'a> Changes<'a> {
    pub(crate) fn new(
        config: &'a Config,
        source: SourceDb,
        owner: RowOwner,
        apply_marker: String,
    ) -> Self {
        Changes {
            config,
            source,
            owner,
            apply_marker,
            relations: HashMap::new(),
            type_names: HashMap::new(),
            current: None,
        }
    }

    pub(crate) async fn on_logical(
        &mut self,
        message: LogicalMessage,
        sink: &mut impl EventSink,
        types: &mut impl TypeNames,
    ) -> Result<(), ReaderError> {
        match message {
            LogicalMessage::Begin {
                final_lsn,
                commit_timestamp_micros,
                xid,
            } => {
                self.current = Some(OpenTxn {
                    seq: sink.begin(),
                    info: TxnInfo::from_begin(final_lsn, commit_timestamp_micros, xid),
                    is_echo: false,
                });
            }
            LogicalMessage::Commit { end_lsn, .. } => {
                if let Some(txn) = self.current.take() {
                    sink.commit(txn.seq, end_lsn);
                }
            }
            LogicalMessage::Message {
                transactional,
                prefix,
                content,
                ..
            } => self.on_marker(transactional, &prefix, &content),
            LogicalMessage::Relation(relation) => self.on_relation(relation, types).await?,
            LogicalMessage::Insert { relation_id, new } => {
                self.on_row(relation_id, Some(new), None, sink).await?
            }
            LogicalMessage::Update {
                relation_id,
                old,
                new,
            } => self.on_row(relation_id, Some(new), old, sink).await?,
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

    fn on_marker(&mut self, transactional: bool, prefix: &str, content: &[u8]) {
        let ours = is_apply_marker(transactional, prefix, content, &self.apply_marker);
        if let (true, Some(txn)) = (ours, self.current.as_mut()) {
            txn.is_echo = true;
        }
    }

    async fn on_relation(
        &mut self,
        relation: Relation,
        types: &mut impl TypeNames,
    ) -> Result<(), ReaderError> {
        let side = self.source.side;
        if relation.namespace == self.config.replication.bridge_schema
            && relation.name == TOMBSTONES
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
            .find(|t| relation_matches(&relation, t.on(side)))
        else {
            self.relations.insert(relation.id, RelationKind::Ignored);
            return Ok(());
        };
        let mut columns = Vec::with_capacity(relation.columns.len());
        for column in &relation.columns {
            let key = (column.type_oid, column.type_modifier);
            let name = match self.type_names.get(&key) {
                Some(name) => name.clone(),
                None => {
                    let name = types.type_name(key.0, key.1).await?;
                    self.type_names.insert(key, name.clone());
                    name
                }
            };
            columns.push((column.name.clone(), name));
        }
        let synced = CapturedTable::new(self.config, side, table, columns);
        self.relations
            .insert(relation.id, RelationKind::Synced(synced));
        Ok(())
    }

    async fn on_row(
        &mut self,
        relation_id: u32,
        new: Option<TupleData>,
        old: Option<OldTuple>,
        sink: &mut impl EventSink,
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
            sink.send(seq, &envelope).await?;
        }
        Ok(())
    }

    fn upsert_envelope(
        &self,
        table: &CapturedTable,
        txn: &TxnInfo,
        new: Option<TupleData>,
        old: Option<OldTuple>,
    ) -> Result<Option<Envelope>, ReaderError> {
        let Some(new) = new else { return Ok(None) };
        let tenant_id = column_text(table, &new, &table.key_columns[0]);
        let Some(tenant) = self.owner.tenant_of(tenant_id.as_deref()) else {
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
        if tombstone.side != self.source.side {
            return None;
        }
        let table = self.config.table(&tombstone.table)?;
        let tenant_key = table.key_columns(self.source.side).remove(0);
        let tenant_id = tombstone.key.get(&tenant_key).cloned().flatten();
        let tenant = self.owner.tenant_of(tenant_id.as_deref())?;
        Some(delete_envelope(&self.source, &tenant, tombstone, txn))
    }
}

/// Whether a relation from the stream is the configured table name.
fn relation_matches(relation: &Relation, configured: &str) -> bool {
    match configured.split_once('.') {
        Some((schema, name)) => relation.namespace == schema && relation.name == name,
        None => relation.name == configured,
    }
}

#[cfg(test)]
mod tests;
