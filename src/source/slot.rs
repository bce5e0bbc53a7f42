//! The replication slot's lifecycle: what state a slot is in when a reader
//! starts, and what the reader does about it.
//!
//! ```text
//!  slot row?  snapshot done?  wal_status   state                action
//!  yes        yes             not lost     Ready(confirmed)     resume there
//!  yes        no              -            SnapshotIncomplete   drop, create + snapshot
//!  yes        -               lost         Invalidated          drop, create + snapshot (counted)
//!  no         yes             -            Dropped              create + snapshot (counted)
//!  no         no              -            New                  create + snapshot
//! ```
//! "Snapshot done" is the bridge's own record in `slot_state`: a crash
//! between creating a slot and sending its snapshot leaves no record, so the
//! half-made slot is dropped and made again.

use tokio_postgres::Client;
use tracing::{error, info, warn};

use super::capture::{CapturedTable, SourceDb};
use super::snapshot::send_snapshot;
use super::{ReaderError, RowOwner};
use crate::config::Config;
use crate::kafka::delivery::Delivery;
use crate::kafka::Producer;
use crate::model::{Lsn, SlotName};
use crate::postgres::bridge_schema::BridgeTables;
use crate::postgres::table_columns;
use crate::runtime::metrics::metrics;
use crate::source::replication::ReplicationConnection;

/// Slot names are cluster-wide and limited to 63 characters of `[a-z0-9_]`;
/// long database names are shortened with a hash so that they stay unique.
pub fn slot_name(prefix: &str, database: &str) -> SlotName {
    SlotName::new_unchecked(valid_slot_name(prefix, database))
}

fn valid_slot_name(prefix: &str, database: &str) -> String {
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

/// What a reader finds when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Streamed before: resume at the confirmed position.
    Ready(Lsn),
    /// Never created (or removed together with its record).
    New,
    /// Created, but its initial snapshot never reached Kafka.
    SnapshotIncomplete,
    /// The server invalidated it (it fell behind `max_slot_wal_keep_size`).
    Invalidated,
    /// It carried changes and is gone (dropped by hand).
    Dropped,
}

impl SlotState {
    fn from_catalog(confirmed: Option<Lsn>, invalidated: bool, snapshot_done: bool) -> Self {
        match (confirmed, invalidated, snapshot_done) {
            (Some(lsn), false, true) => SlotState::Ready(lsn),
            (Some(_), false, false) => SlotState::SnapshotIncomplete,
            (Some(_), true, _) => SlotState::Invalidated,
            (None, _, true) => SlotState::Dropped,
            (None, _, false) => SlotState::New,
        }
    }

    /// A slot that exists and must go before it is made again.
    fn must_drop(self) -> bool {
        matches!(self, SlotState::SnapshotIncomplete | SlotState::Invalidated)
    }

    /// Changes the slot held are lost to the stream: operators must know.
    fn lost_changes(self) -> Option<&'static str> {
        match self {
            SlotState::Invalidated => {
                Some("was invalidated (it fell behind max_slot_wal_keep_size)")
            }
            SlotState::Dropped => Some("no longer exists (dropped by hand?)"),
            _ => None,
        }
    }
}

/// The position to stream from: the slot's confirmed position, or the
/// consistent point of a slot created now (after its snapshot was sent).
pub(super) async fn prepare_slot(
    client: &mut Client,
    conn: &mut ReplicationConnection,
    config: &Config,
    slot: &SlotName,
    source: (&SourceDb, &RowOwner),
    producer: Producer,
) -> Result<Lsn, ReaderError> {
    let db = source.0.database.as_str();
    let state = read_state(client, config, slot, db).await?;
    if let SlotState::Ready(lsn) = state {
        return Ok(lsn);
    }
    if let Some(what) = state.lost_changes() {
        // A fresh snapshot carries the current state of every row; the
        // conflict rule makes re-sent rows harmless where the other side is
        // already newer.
        error!(
            database = db,
            %slot,
            "replication slot {what}; creating it again and re-sending a snapshot of the current rows"
        );
        metrics().slot_recreated.with_label_values(&[db]).inc();
    }
    if state == SlotState::SnapshotIncomplete {
        warn!(
            database = db,
            %slot, "slot exists but its snapshot never completed; dropping it to snapshot again"
        );
    }
    if state.must_drop() {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot.as_str()])
            .await
            .map_err(|e| ReaderError::sql(db, "drop slot", e))?;
    }
    create_and_snapshot(client, conn, config, slot, source, producer).await
}

async fn read_state(
    client: &Client,
    config: &Config,
    slot: &SlotName,
    db: &str,
) -> Result<SlotState, ReaderError> {
    let sql = format!(
        "SELECT s.confirmed_flush_lsn::text, coalesce(s.wal_status, '') = 'lost',
                EXISTS (SELECT 1 FROM {state_table} WHERE slot_name = $1)
           FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
        state_table = BridgeTables::new(config).slot_state()
    );
    let row = client
        .query_one(&sql, &[&slot.as_str()])
        .await
        .map_err(|e| ReaderError::sql(db, "read slot", e))?;
    let confirmed: Option<String> = row.get(0);
    Ok(SlotState::from_catalog(
        confirmed.and_then(|lsn| lsn.parse().ok()),
        row.get(1),
        row.get(2),
    ))
}

async fn create_and_snapshot(
    client: &mut Client,
    conn: &mut ReplicationConnection,
    config: &Config,
    slot: &SlotName,
    (source, owner): (&SourceDb, &RowOwner),
    producer: Producer,
) -> Result<Lsn, ReaderError> {
    let db = source.database.as_str();
    crate::runtime::status::status()
        .set_reader_state(db, crate::runtime::status::ReaderState::Snapshotting);
    let state_table = BridgeTables::new(config).slot_state();
    client
        .execute(
            &format!("DELETE FROM {state_table} WHERE slot_name = $1"),
            &[&slot.as_str()],
        )
        .await
        .map_err(|e| ReaderError::sql(db, "clear slot state", e))?;
    let created = conn
        .create_slot(slot.as_str())
        .await
        .map_err(ReaderError::replication(db))?;
    let mut tables = Vec::new();
    for table in &config.tables {
        let name = table.on(source.side).to_string();
        let columns = table_columns(client, db, &name).await?;
        let source_table = CapturedTable::new(
            config,
            source.side,
            table,
            columns.into_iter().map(|c| (c.name, c.type_name)).collect(),
        );
        tables.push((source_table, name));
    }
    let mut delivery = Delivery::new(producer, &config.kafka, db, created.consistent_point);
    let sent = send_snapshot(
        client,
        &created.snapshot_name,
        created.consistent_point,
        (source, owner),
        &tables,
        (config, &mut delivery),
    )
    .await?;
    client
        .execute(
            &format!(
                "INSERT INTO {state_table} (slot_name, snapshot_lsn) VALUES ($1, $2::text::pg_lsn)"
            ),
            &[&slot.as_str(), &created.consistent_point.to_string()],
        )
        .await
        .map_err(|e| ReaderError::sql(db, "record snapshot done", e))?;
    metrics()
        .events_produced
        .with_label_values(&[db])
        .inc_by(sent);
    info!(database = db, %slot, rows = sent, at = %created.consistent_point, "initial snapshot sent");
    Ok(created.consistent_point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_valid_and_unique_per_database() {
        assert_eq!(
            slot_name("cdc_bridge", "tenant_acme").as_str(),
            "cdc_bridge_tenant_acme"
        );
        let odd = slot_name("cdc_bridge", "Tenant-Acme").to_string();
        assert!(odd.starts_with("cdc_bridge_tenant_acme_"), "{odd}");
        assert_ne!(odd, slot_name("cdc_bridge", "tenant_acme").to_string());
        let long = slot_name("cdc_bridge", &"x".repeat(80)).to_string();
        assert!(long.len() <= 63, "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }

    #[test]
    fn every_catalog_combination_maps_to_one_state() {
        let lsn = Some(Lsn(42));
        let cases = [
            ((lsn, false, true), SlotState::Ready(Lsn(42)), false),
            ((lsn, false, false), SlotState::SnapshotIncomplete, true),
            ((lsn, true, true), SlotState::Invalidated, true),
            ((lsn, true, false), SlotState::Invalidated, true),
            ((None, false, true), SlotState::Dropped, false),
            ((None, false, false), SlotState::New, false),
        ];
        for ((confirmed, invalidated, done), state, drop) in cases {
            let found = SlotState::from_catalog(confirmed, invalidated, done);
            assert_eq!(found, state, "{confirmed:?} {invalidated} {done}");
            assert_eq!(found.must_drop(), drop, "{state:?}");
        }
        assert!(SlotState::Dropped.lost_changes().is_some());
        assert!(SlotState::New.lost_changes().is_none());
    }
}
