//! Turning decoded `pgoutput` rows into change envelopes. Pure logic: the
//! reader resolves relations and type names, this module only maps values.
//!
//! Unchanged TOAST values: PostgreSQL leaves a large value that an UPDATE did
//! not touch out of the new row (`'u'`). With `REPLICA IDENTITY FULL` (which
//! `setup` sets) the old row carries it in full, so it is filled from there;
//! otherwise the column is sent as `unchanged` and the applier leaves the
//! target's value alone. It is never sent as NULL.

use std::collections::BTreeMap;

use super::pgoutput::{pg_micros_to_unix_micros, OldTuple, TupleData, TupleValue};
use crate::config::{Config, TableConfig};
use crate::model::envelope::{
    format_unix_micros, ColumnValue, Envelope, Op, Origin, TenantRef, ENVELOPE_VERSION,
};
use crate::model::{Lsn, Side};

/// A published table as the stream describes it, with resolved type names.
#[derive(Debug, Clone)]
pub struct CapturedTable {
    /// Logical table name from the configuration (goes into the envelope).
    pub name: String,
    /// Column names and `format_type()` names, in relation order.
    pub columns: Vec<(String, String)>,
    /// Row key columns on this side.
    pub key_columns: Vec<String>,
    /// Columns never sent as data (configured exclusions and the bridge's
    /// source and version columns).
    pub excluded: Vec<String>,
    /// The bridge-managed version column, whose value becomes the
    /// envelope's `version`.
    pub version_column: String,
    /// The bridge-managed source column (which side wrote the version).
    pub source_column: String,
}

impl CapturedTable {
    /// The stream's view of a synced table on one side, from the columns
    /// the catalog or a Relation message lists (name, `format_type` name).
    pub fn new(
        config: &Config,
        side: Side,
        table: &TableConfig,
        columns: Vec<(String, String)>,
    ) -> CapturedTable {
        let mut excluded = table.exclude_columns.clone();
        excluded.push(config.sync.source_column.clone());
        excluded.push(config.sync.version_column.clone());
        CapturedTable {
            name: table.name.clone(),
            columns,
            key_columns: table.key_columns(side),
            excluded,
            version_column: config.sync.version_column.clone(),
            source_column: config.sync.source_column.clone(),
        }
    }
}

/// Where the rows come from: fixed for one reader.
#[derive(Debug, Clone)]
pub struct SourceDb {
    pub side: Side,
    pub database: String,
}

/// The transaction a row belongs to (from its Begin message).
#[derive(Debug, Clone)]
pub struct TxnInfo {
    pub commit_lsn: Lsn,
    pub commit_timestamp_micros: Option<i64>,
    pub xid: Option<u32>,
}

impl TxnInfo {
    pub fn from_begin(final_lsn: Lsn, commit_timestamp_micros: i64, xid: u32) -> Self {
        TxnInfo {
            commit_lsn: final_lsn,
            commit_timestamp_micros: Some(pg_micros_to_unix_micros(commit_timestamp_micros)),
            xid: Some(xid),
        }
    }

    /// Snapshot rows have a position (the slot's consistent point) but no
    /// source transaction.
    pub fn snapshot(consistent_point: Lsn) -> Self {
        TxnInfo {
            commit_lsn: consistent_point,
            commit_timestamp_micros: None,
            xid: None,
        }
    }
}

/// A row could not be turned into an envelope.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("table {table}: the row has {found} values but the relation has {expected} columns")]
    ColumnCount {
        table: String,
        expected: usize,
        found: usize,
    },
    #[error("table {table}, column {column}: value is not valid UTF-8; only UTF-8 databases are supported")]
    NotUtf8 { table: String, column: String },
    #[error("table {table}, column {column}: binary values are not supported (pgoutput binary mode is off)")]
    Binary { table: String, column: String },
}

/// One row version as text values in relation order (`None` = NULL,
/// `Err(())` = unchanged TOAST not available).
type RowValues = Vec<Result<Option<String>, ()>>;

fn row_values(table: &CapturedTable, tuple: &TupleData) -> Result<RowValues, CaptureError> {
    if tuple.0.len() != table.columns.len() {
        return Err(CaptureError::ColumnCount {
            table: table.name.clone(),
            expected: table.columns.len(),
            found: tuple.0.len(),
        });
    }
    tuple
        .0
        .iter()
        .zip(&table.columns)
        .map(|(value, (column, _))| match value {
            TupleValue::Null => Ok(Ok(None)),
            TupleValue::UnchangedToast => Ok(Err(())),
            TupleValue::Text(bytes) => String::from_utf8(bytes.to_vec())
                .map(|s| Ok(Some(s)))
                .map_err(|_| CaptureError::NotUtf8 {
                    table: table.name.clone(),
                    column: column.clone(),
                }),
            #[allow(unreachable_patterns)]
            _ => Err(CaptureError::Binary {
                table: table.name.clone(),
                column: column.clone(),
            }),
        })
        .collect()
}

/// Fills unchanged TOAST values of the new row from a full old row.
fn fill_unchanged(new: &mut RowValues, old: Option<&RowValues>) {
    if let Some(old) = old {
        for (slot, previous) in new.iter_mut().zip(old) {
            if slot.is_err() {
                if let Ok(value) = previous {
                    *slot = Ok(value.clone());
                }
            }
        }
    }
}

fn old_values(
    table: &CapturedTable,
    old: Option<&OldTuple>,
) -> Result<Option<RowValues>, CaptureError> {
    match old {
        Some(OldTuple::Full(tuple)) | Some(OldTuple::Key(tuple)) => {
            Ok(Some(row_values(table, tuple)?))
        }
        None => Ok(None),
    }
}

/// The text of one column of a row, e.g. the landlord's tenant key.
pub fn column_text(table: &CapturedTable, tuple: &TupleData, column: &str) -> Option<String> {
    let index = table.columns.iter().position(|(name, _)| name == column)?;
    match tuple.0.get(index)? {
        TupleValue::Text(bytes) => String::from_utf8(bytes.to_vec()).ok(),
        _ => None,
    }
}

/// Builds the envelope for an insert/update (`new` given) or a delete.
pub fn row_envelope(
    context: &SourceDb,
    tenant: &TenantRef,
    table: &CapturedTable,
    txn: &TxnInfo,
    op: Op,
    new: Option<&TupleData>,
    old: Option<&OldTuple>,
) -> Result<Envelope, CaptureError> {
    let old = old_values(table, old)?;
    let values = match new {
        Some(tuple) => {
            let mut values = row_values(table, tuple)?;
            fill_unchanged(&mut values, old.as_ref());
            values
        }
        None => old.unwrap_or_else(|| vec![Err(()); table.columns.len()]),
    };
    let mut key = BTreeMap::new();
    let mut columns = BTreeMap::new();
    let mut version = None;
    let mut source = None;
    for ((name, type_name), value) in table.columns.iter().zip(values) {
        if table.key_columns.contains(name) {
            key.insert(name.clone(), value.clone().unwrap_or(None));
        }
        if *name == table.version_column {
            version = value.clone().unwrap_or(None);
        }
        if *name == table.source_column {
            source = value
                .clone()
                .unwrap_or(None)
                .as_deref()
                .and_then(Side::parse);
        }
        if op == Op::Delete || table.excluded.contains(name) {
            continue;
        }
        let column = match value {
            Ok(text) => ColumnValue::text(type_name.clone(), text),
            Err(()) => ColumnValue::unchanged(type_name.clone()),
        };
        columns.insert(name.clone(), column);
    }
    Ok(Envelope {
        v: ENVELOPE_VERSION,
        op,
        table: table.name.clone(),
        tenant: tenant.clone(),
        origin: origin(context, txn),
        version,
        source,
        key,
        columns,
    })
}

fn origin(source: &SourceDb, txn: &TxnInfo) -> Origin {
    Origin {
        side: source.side,
        database: source.database.clone(),
        lsn: txn.commit_lsn.to_string(),
        commit_ts: txn.commit_timestamp_micros.map(format_unix_micros),
        xid: txn.xid,
    }
}

/// A delete, as recorded in the source's tombstones table by the bridge's
/// trigger: the key of the deleted row and the delete's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// Logical table name.
    pub table: String,
    pub key: BTreeMap<String, Option<String>>,
    pub version: String,
    pub side: Side,
}

/// The columns of `cdc_bridge.tombstones`, in order.
const TOMBSTONE_COLUMNS: [&str; 4] = ["table_name", "row_key", "version", "source"];

/// Reads a tombstones row (insert or update) of the stream.
pub fn parse_tombstone(column_names: &[String], tuple: &TupleData) -> Option<Tombstone> {
    let text = |wanted: &str| {
        let index = column_names.iter().position(|c| c == wanted)?;
        match tuple.0.get(index)? {
            TupleValue::Text(bytes) => String::from_utf8(bytes.to_vec()).ok(),
            _ => None,
        }
    };
    let [table, row_key, version, side] = TOMBSTONE_COLUMNS.map(text);
    let key: BTreeMap<String, Option<String>> = serde_json::from_str(&row_key?).ok()?;
    Some(Tombstone {
        table: table?,
        key,
        version: version?,
        side: Side::parse(&side?)?,
    })
}

/// The envelope of a delete, built from its tombstone.
pub fn delete_envelope(
    source: &SourceDb,
    tenant: &TenantRef,
    tombstone: Tombstone,
    txn: &TxnInfo,
) -> Envelope {
    Envelope {
        v: ENVELOPE_VERSION,
        op: Op::Delete,
        table: tombstone.table,
        tenant: tenant.clone(),
        origin: origin(source, txn),
        source: Some(tombstone.side),
        version: Some(tombstone.version),
        key: tombstone.key,
        columns: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn table() -> CapturedTable {
        CapturedTable {
            name: "tenant_brandings".into(),
            columns: vec![
                ("id".into(), "integer".into()),
                ("primary_color".into(), "text".into()),
                ("custom_css".into(), "text".into()),
                ("secret_note".into(), "text".into()),
            ],
            key_columns: vec!["id".into()],
            excluded: vec!["secret_note".into()],
            version_column: "cdc_version".into(),
            source_column: "cdc_source".into(),
        }
    }

    fn tenant() -> TenantRef {
        TenantRef {
            id: "1".into(),
            slug: "a".into(),
        }
    }

    fn source() -> SourceDb {
        SourceDb {
            side: Side::Tenant,
            database: "tenant_a".into(),
        }
    }

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn txn() -> TxnInfo {
        TxnInfo::from_begin(Lsn(0x100), 0, 42)
    }

    #[test]
    fn insert_carries_key_and_columns_but_not_excluded_ones() {
        let new = TupleData(vec![text("1"), text("#fff"), TupleValue::Null, text("x")]);
        let env = row_envelope(
            &source(),
            &tenant(),
            &table(),
            &txn(),
            Op::Upsert,
            Some(&new),
            None,
        )
        .unwrap();
        assert_eq!(env.key["id"].as_deref(), Some("1"));
        assert_eq!(env.columns["primary_color"].value.as_deref(), Some("#fff"));
        assert_eq!(env.columns["custom_css"], ColumnValue::text("text", None));
        assert!(!env.columns.contains_key("secret_note"));
        assert_eq!(env.origin.xid, Some(42));
        assert_eq!(
            env.origin.commit_ts.as_deref(),
            Some("2000-01-01T00:00:00.000000Z")
        );
    }

    #[test]
    fn unchanged_toast_is_filled_from_the_full_old_row() {
        let old = OldTuple::Full(TupleData(vec![
            text("1"),
            text("#000"),
            text("big css"),
            TupleValue::Null,
        ]));
        let new = TupleData(vec![
            text("1"),
            text("#fff"),
            TupleValue::UnchangedToast,
            TupleValue::Null,
        ]);
        let env = row_envelope(
            &source(),
            &tenant(),
            &table(),
            &txn(),
            Op::Upsert,
            Some(&new),
            Some(&old),
        )
        .unwrap();
        assert_eq!(env.columns["custom_css"].value.as_deref(), Some("big css"));
        assert!(!env.columns["custom_css"].unchanged);
    }

    #[test]
    fn unchanged_toast_without_old_row_is_marked_never_null() {
        let new = TupleData(vec![
            text("1"),
            text("#fff"),
            TupleValue::UnchangedToast,
            TupleValue::Null,
        ]);
        let env = row_envelope(
            &source(),
            &tenant(),
            &table(),
            &txn(),
            Op::Upsert,
            Some(&new),
            None,
        )
        .unwrap();
        assert_eq!(env.columns["custom_css"], ColumnValue::unchanged("text"));
    }

    #[test]
    fn delete_carries_the_key_from_the_old_row_and_no_columns() {
        let old = OldTuple::Key(TupleData(vec![
            text("1"),
            TupleValue::Null,
            TupleValue::Null,
            TupleValue::Null,
        ]));
        let env = row_envelope(
            &source(),
            &tenant(),
            &table(),
            &txn(),
            Op::Delete,
            None,
            Some(&old),
        )
        .unwrap();
        assert_eq!(env.key["id"].as_deref(), Some("1"));
        assert!(env.columns.is_empty());
    }

    #[test]
    fn version_column_becomes_the_envelope_version_not_a_data_column() {
        let mut t = table();
        t.columns
            .push(("cdc_version".into(), "timestamp with time zone".into()));
        t.excluded.push("cdc_version".into());
        let new = TupleData(vec![
            text("1"),
            text("#fff"),
            TupleValue::Null,
            TupleValue::Null,
            text("2026-01-01 00:00:00+00"),
        ]);
        let env = row_envelope(
            &source(),
            &tenant(),
            &t,
            &txn(),
            Op::Upsert,
            Some(&new),
            None,
        )
        .unwrap();
        assert_eq!(env.version.as_deref(), Some("2026-01-01 00:00:00+00"));
        assert!(!env.columns.contains_key("cdc_version"));
        assert_eq!(
            column_text(&t, &new, "primary_color").as_deref(),
            Some("#fff")
        );
    }

    #[test]
    fn a_tombstone_row_becomes_a_delete_with_its_version() {
        let names: Vec<String> = ["table_name", "row_key", "version", "source", "deleted_at"]
            .map(String::from)
            .to_vec();
        let row = TupleData(vec![
            text("tenant_brandings"),
            text(r#"{"id": "1"}"#),
            text("2026-01-01 00:00:00.5+00"),
            text("tenant"),
            text("2026-01-01 00:00:00.5+00"),
        ]);
        let tombstone = parse_tombstone(&names, &row).unwrap();
        assert_eq!(tombstone.key["id"].as_deref(), Some("1"));
        let env = delete_envelope(&source(), &tenant(), tombstone, &txn());
        assert_eq!(env.op, Op::Delete);
        assert_eq!(env.version.as_deref(), Some("2026-01-01 00:00:00.5+00"));
        assert!(env.columns.is_empty());
        assert!(parse_tombstone(&names, &TupleData(vec![text("x")])).is_none());
    }

    #[test]
    fn a_row_that_does_not_match_the_relation_is_an_error() {
        let new = TupleData(vec![text("1")]);
        let err = row_envelope(
            &source(),
            &tenant(),
            &table(),
            &txn(),
            Op::Upsert,
            Some(&new),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("4 columns"), "{err}");
    }
}
