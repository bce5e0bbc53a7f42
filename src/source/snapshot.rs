//! The initial snapshot: when a slot is created, the rows that already exist
//! are read in the slot's exported snapshot and sent as `snapshot` events, so
//! that the stream that follows starts exactly where the snapshot ends.
//!
//! ```text
//!  CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export') ──► consistent point C, snapshot S
//!  second connection: BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT S; SELECT ...
//!      every row ──► Kafka (snapshot events, position C)
//!      this side's tombstones ──► Kafka (delete events: a slot made again
//!      after a loss missed the deletes made meanwhile)
//!  all acknowledged ──► record "snapshot done" in slot_state
//!  START_REPLICATION from C  (changes after the snapshot, none missed, none twice)
//! ```
//! A crash before "snapshot done" leaves a slot without a state row; the next
//! start drops that slot and snapshots again.

use futures::{pin_mut, TryStreamExt};
use tokio_postgres::Client;

use super::tenant_rows::read_tombstones;
use super::{ReaderError, RowOwner};
use crate::config::Config;
use crate::kafka::delivery::Delivery;
use crate::kafka::progress::TxnSeq;
use crate::model::envelope::Op;
use crate::model::Lsn;
use crate::postgres::{quote_ident, quote_literal, quote_qualified};
use crate::source::capture::{
    column_text, delete_envelope, row_envelope, CapturedTable, SourceDb, TxnInfo,
};
use crate::source::pgoutput::{TupleData, TupleValue};

/// Sends every existing row of `tables` (as `(table, source table name)`).
pub(super) async fn send_snapshot(
    client: &mut Client,
    snapshot_name: &str,
    consistent_point: Lsn,
    (source, owner): (&SourceDb, &RowOwner),
    tables: &[(CapturedTable, String)],
    (config, delivery): (&Config, &mut Delivery),
) -> Result<u64, ReaderError> {
    let db = &source.database;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| ReaderError::sql(db, "begin snapshot transaction", e))?;
    tx.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT {}; SET LOCAL statement_timeout = 0",
        quote_literal(snapshot_name)
    ))
    .await
    .map_err(|e| ReaderError::sql(db, "SET TRANSACTION SNAPSHOT", e))?;
    let txn = TxnInfo::snapshot(consistent_point);
    let seq = delivery.tracker().begin();
    let mut sent = 0;
    for (table, table_name) in tables {
        let select = select_as_text(table, table_name);
        let rows = tx
            .query_raw(&select, std::iter::empty::<&str>())
            .await
            .map_err(|e| ReaderError::sql(db, "snapshot select", e))?;
        pin_mut!(rows);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| ReaderError::sql(db, "snapshot read", e))?
        {
            let values = (0..table.columns.len())
                .map(|i| match row.get::<_, Option<&str>>(i) {
                    Some(text) => TupleValue::Text(bytes::Bytes::copy_from_slice(text.as_bytes())),
                    None => TupleValue::Null,
                })
                .collect();
            let tuple = TupleData(values);
            let tenant_id = column_text(table, &tuple, &table.key_columns[0]);
            let Some(tenant) = owner.tenant_of(tenant_id.as_deref()) else {
                tracing::warn!(database = %source.database, tenant = ?tenant_id, "row of a tenant the registry does not list; skipped");
                continue;
            };
            let envelope = row_envelope(
                source,
                &tenant,
                table,
                &txn,
                Op::Snapshot,
                Some(&tuple),
                None,
            )?;
            delivery.send(seq, &envelope).await?;
            sent += 1;
        }
        sent += send_tombstones(&tx, config, (source, owner), table, &txn, (delivery, seq)).await?;
    }
    tx.commit()
        .await
        .map_err(|e| ReaderError::sql(db, "end snapshot transaction", e))?;
    delivery.tracker().commit(seq, consistent_point);
    delivery.drain().await?;
    Ok(sent)
}

/// This side's deletes of `table`, as delete events: a slot made again
/// after it was lost missed them in the stream, and the other side must
/// still learn of them (an older row there loses against the delete).
async fn send_tombstones(
    tx: &tokio_postgres::Transaction<'_>,
    config: &Config,
    (source, owner): (&SourceDb, &RowOwner),
    table: &CapturedTable,
    txn: &TxnInfo,
    (delivery, seq): (&mut Delivery, TxnSeq),
) -> Result<u64, ReaderError> {
    let tombstones =
        read_tombstones(tx, config, &source.database, &table.name, source.side, None).await?;
    let mut sent = 0;
    for tombstone in tombstones {
        let tenant_id = tombstone.key.get(&table.key_columns[0]).cloned().flatten();
        let Some(tenant) = owner.tenant_of(tenant_id.as_deref()) else {
            continue;
        };
        let envelope = delete_envelope(source, &tenant, tombstone, txn);
        delivery.send(seq, &envelope).await?;
        sent += 1;
    }
    Ok(sent)
}

fn select_as_text(table: &CapturedTable, table_name: &str) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, _)| format!("{}::text", quote_ident(name)))
        .collect();
    format!(
        "SELECT {} FROM {}",
        columns.join(", "),
        quote_qualified(table_name)
    )
}
