//! Writing one change into a target table, with the conflict rule of
//! `conflict` enforced by the SQL itself, so that an application write racing
//! the applier cannot slip between a check and a write:
//!
//! ```text
//! upsert: INSERT … SELECT … WHERE NOT EXISTS (newer-or-equal tombstone)
//!         ON CONFLICT (key) DO UPDATE SET … WHERE (cur.version, cur.source) < (new.version, new.source)
//! delete: DELETE … WHERE key = … AND (version, source) < (delete.version, delete.side)
//!         + tombstone upsert (kept only if newer than an existing one)
//! ```
//! Values travel as text and are cast to the target column's type in SQL,
//! so any type whose text form both sides share is lossless. Identifiers are
//! always quoted; values are always bound parameters.

mod batch;

pub use batch::ManyUpserts;

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Statement};

use crate::config::Config;
use crate::model::Side;
use crate::postgres::bridge_schema::BridgeTables;
use crate::postgres::class_of_pg;
use crate::postgres::{quote_ident, quote_qualified, ColumnInfo};
use crate::runtime::retry::{Classify, ErrorClass};

/// Column name and text value (`None` = NULL).
pub type ColumnText = (String, Option<String>);

/// One change, in the target's terms.
#[derive(Debug, Clone)]
pub struct Change {
    /// Target key columns and values (the conflict target).
    pub key: Vec<ColumnText>,
    /// Columns to set (unchanged TOAST values already left out).
    pub columns: Vec<ColumnText>,
    /// The change's version (`timestamptz` text) and the side that wrote it.
    pub version: String,
    pub side: Side,
    pub is_delete: bool,
}

/// What happened to a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The target already held a newer version; nothing was written.
    Stale,
}

/// A write that cannot succeed as the message stands.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target table {table} has no column {column}; add it or fix the configuration")]
    MissingColumn { table: String, column: String },
    #[error("database rejected the write: {}", crate::postgres::describe(.0))]
    Database(#[from] tokio_postgres::Error),
}

impl TargetError {
    /// Whether the change itself cannot be applied (a value the column
    /// rejects, a constraint of that row, a column the target lacks): it
    /// goes to the dead-letter topic. Everything else is about the target
    /// as a whole (down, read-only, a privilege or table missing, a lock
    /// or connection limit): the change waits and is retried, never
    /// dead-lettered.
    pub fn is_about_the_change(&self) -> bool {
        match self {
            TargetError::MissingColumn { .. } => true,
            TargetError::Database(e) => e
                .code()
                .is_some_and(|code| matches!(code.code().get(..2), Some("22" | "23"))),
        }
    }
}

impl Classify for TargetError {
    fn class(&self) -> ErrorClass {
        match self {
            TargetError::Database(e) => class_of_pg(e),
            TargetError::MissingColumn { .. } => ErrorClass::Permanent,
        }
    }
}

/// The target table's columns and the statements built for it.
#[derive(Debug)]
pub struct TargetTable {
    /// Logical table name (as in tombstones).
    logical: String,
    quoted: String,
    tombstones: String,
    /// The statement that takes the key lock (see `migrations/common/001`).
    key_lock: String,
    source_column: String,
    version_column: String,
    /// Column name to its type without modifier (cast target).
    columns: HashMap<String, String>,
    /// Prepared statements by SQL text (the column set varies per message).
    statements: HashMap<String, Statement>,
    /// When the columns were read (schema drift re-checks).
    loaded_at: std::time::Instant,
    /// Source-only columns already warned about.
    warned: std::collections::HashSet<String>,
}

impl TargetTable {
    pub fn new(config: &Config, logical: &str, table_name: &str, columns: Vec<ColumnInfo>) -> Self {
        TargetTable {
            logical: logical.to_string(),
            quoted: quote_qualified(table_name),
            tombstones: BridgeTables::new(config).tombstones(),
            key_lock: format!(
                "SELECT {}.lock_key($1::text, $2::text::jsonb)",
                quote_ident(&config.replication.bridge_schema)
            ),
            source_column: quote_ident(&config.sync.source_column),
            version_column: quote_ident(&config.sync.version_column),
            columns: columns.into_iter().map(|c| (c.name, c.base_type)).collect(),
            statements: HashMap::new(),
            loaded_at: std::time::Instant::now(),
            warned: std::collections::HashSet::new(),
        }
    }

    /// True the first time a missing column is reported.
    pub fn first_time_missing(&mut self, column: &str) -> bool {
        self.warned.insert(column.to_string())
    }

    /// Source columns this table lacked when changes carried them.
    pub fn missing_columns(&self) -> impl Iterator<Item = &String> {
        self.warned.iter()
    }

    pub fn columns_age(&self) -> std::time::Duration {
        self.loaded_at.elapsed()
    }

    /// Whether the target has this column (columns only one side has are
    /// not synced).
    pub fn has_column(&self, column: &str) -> bool {
        self.columns.contains_key(column)
    }

    fn cast(&self, column: &str, placeholder: usize) -> Result<String, TargetError> {
        let type_name = self
            .columns
            .get(column)
            .ok_or_else(|| TargetError::MissingColumn {
                table: self.quoted.clone(),
                column: column.to_string(),
            })?;
        Ok(format!("CAST(${placeholder}::text AS {type_name})"))
    }

    /// Applies one change under the last-writer-wins rule. The decision is
    /// taken under the row lock and the key lock, in the order application
    /// writers take them (row, then key), and the write statement's snapshot
    /// is taken after both: a concurrent delete or insert has committed or
    /// has not started, so the row and the tombstone it compares against
    /// are current.
    pub async fn apply<C: GenericClient>(
        &mut self,
        client: &C,
        change: &Change,
    ) -> Result<Outcome, TargetError> {
        if change.is_delete {
            self.lock(client, change).await?;
            self.delete(client, change).await
        } else {
            self.upsert(client, change).await
        }
    }

    async fn lock<C: GenericClient>(
        &mut self,
        client: &C,
        change: &Change,
    ) -> Result<(), TargetError> {
        let values: Vec<Option<&str>> = change.key.iter().map(|(_, v)| v.as_deref()).collect();
        self.execute(client, self.row_lock_sql(&change.key)?, &values)
            .await?;
        let row_key = row_key_json(&change.key);
        let logical = self.logical.clone();
        let key_lock = self.key_lock.clone();
        self.execute(
            client,
            key_lock,
            &[Some(logical.as_str()), Some(row_key.as_str())],
        )
        .await?;
        Ok(())
    }

    /// Locks the row of the key if one is visible (waiting for its writers).
    fn row_lock_sql(&self, key: &[ColumnText]) -> Result<String, TargetError> {
        Ok(format!(
            "SELECT 1 FROM {} WHERE {} FOR UPDATE",
            self.quoted,
            self.key_conditions(key)?
        ))
    }

    fn key_conditions(&self, key: &[ColumnText]) -> Result<String, TargetError> {
        let conditions = key
            .iter()
            .enumerate()
            .map(|(i, (c, _))| Ok(format!("{} = {}", quote_ident(c), self.cast(c, i + 1)?)))
            .collect::<Result<Vec<_>, TargetError>>()?;
        Ok(conditions.join(" AND "))
    }

    async fn upsert<C: GenericClient>(
        &mut self,
        client: &C,
        change: &Change,
    ) -> Result<Outcome, TargetError> {
        let names: Vec<&str> = change
            .key
            .iter()
            .chain(&change.columns)
            .map(|(n, _)| n.as_str())
            .collect();
        let mut values: Vec<Option<&str>> = change
            .key
            .iter()
            .chain(&change.columns)
            .map(|(_, v)| v.as_deref())
            .collect();
        let row_key = row_key_json(&change.key);
        let logical = self.logical.clone();
        values.extend([
            Some(change.side.as_str()),
            Some(change.version.as_str()),
            Some(logical.as_str()),
            Some(row_key.as_str()),
        ]);
        let sql = [
            self.upsert_sql(&names, change.key.len())?,
            self.row_lock_sql(&change.key)?,
            self.key_lock.clone(),
        ];
        let [upsert, row_lock, key_lock] = self.statements(client, sql).await?;
        let key_values: Vec<Option<&str>> = change.key.iter().map(|(_, v)| v.as_deref()).collect();
        let key_lock_values = [Some(logical.as_str()), Some(row_key.as_str())];
        // Both locks and the write in one round trip: the server still runs
        // them in this order, so the write's snapshot is taken after both
        // locks are held, as if each had been awaited.
        let (row_params, key_params) = (as_params(&key_values), as_params(&key_lock_values));
        let upsert_params = as_params(&values);
        let (_, _, rows) = futures::try_join!(
            client.execute(&row_lock, &row_params),
            client.execute(&key_lock, &key_params),
            client.execute(&upsert, &upsert_params),
        )?;
        Ok(if rows > 0 {
            Outcome::Applied
        } else {
            Outcome::Stale
        })
    }

    fn upsert_sql(&self, names: &[&str], key_len: usize) -> Result<String, TargetError> {
        let n = names.len();
        let (side, version, logical, row_key) = (n + 1, n + 2, n + 3, n + 4);
        let mut casts = names
            .iter()
            .enumerate()
            .map(|(i, c)| self.cast(c, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        casts.extend([
            format!("${side}::text"),
            format!("${version}::text::timestamptz"),
        ]);
        let (columns, updates) = self.upsert_columns(names, key_len);
        Ok(format!(
            "INSERT INTO {table} AS cur ({columns}) SELECT {casts} \
             WHERE NOT EXISTS (SELECT 1 FROM {tombstones} tb WHERE tb.table_name = ${logical}::text \
               AND tb.row_key = ${row_key}::text::jsonb \
               AND (tb.version, tb.source) >= (${version}::text::timestamptz, ${side}::text)) \
             ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
            table = self.quoted,
            columns = columns.join(", "),
            casts = casts.join(", "),
            tombstones = self.tombstones,
            conflict = columns[..key_len].join(", "),
        ))
    }

    /// The quoted target columns (`names`, then source and version) and the
    /// `SET … WHERE newer` part of `ON CONFLICT DO UPDATE` every upsert shares.
    fn upsert_columns(&self, names: &[&str], key_len: usize) -> (Vec<String>, String) {
        let n = names.len();
        let mut quoted: Vec<String> = names.iter().map(|c| quote_ident(c)).collect();
        quoted.extend([self.source_column.clone(), self.version_column.clone()]);
        let updates: Vec<String> = quoted[key_len..]
            .iter()
            .map(|q| format!("{q} = EXCLUDED.{q}"))
            .collect();
        let (src, ver) = (&self.source_column, &self.version_column);
        // The same version again (a redelivery, a reconcile) rewrites only
        // when it carries data the row lacks, e.g. a column the target
        // gained after the version was first applied.
        let data = &quoted[key_len..n];
        let same_version_new_data = if data.is_empty() {
            String::new()
        } else {
            let current: Vec<String> = data.iter().map(|q| format!("cur.{q}")).collect();
            let incoming: Vec<String> = data.iter().map(|q| format!("EXCLUDED.{q}")).collect();
            format!(
                " OR ((cur.{ver}, cur.{src}) = (EXCLUDED.{ver}, EXCLUDED.{src}) \
                 AND ROW({}) IS DISTINCT FROM ROW({}))",
                current.join(", "),
                incoming.join(", ")
            )
        };
        let clause = format!(
            "{} WHERE (cur.{ver}, cur.{src}) < (EXCLUDED.{ver}, EXCLUDED.{src}){same_version_new_data}",
            updates.join(", ")
        );
        (quoted, clause)
    }

    async fn delete<C: GenericClient>(
        &mut self,
        client: &C,
        change: &Change,
    ) -> Result<Outcome, TargetError> {
        let mut values: Vec<Option<&str>> = change.key.iter().map(|(_, v)| v.as_deref()).collect();
        values.extend([Some(change.side.as_str()), Some(change.version.as_str())]);
        let deleted = self
            .execute(client, self.delete_sql(&change.key)?, &values)
            .await?;
        let row_key = row_key_json(&change.key);
        let logical = self.logical.clone();
        let tombstone = [
            Some(logical.as_str()),
            Some(row_key.as_str()),
            Some(change.version.as_str()),
            Some(change.side.as_str()),
        ];
        let recorded = self
            .execute(client, self.tombstone_sql(), &tombstone)
            .await?;
        Ok(if deleted > 0 || recorded > 0 {
            Outcome::Applied
        } else {
            Outcome::Stale
        })
    }

    fn delete_sql(&self, key: &[ColumnText]) -> Result<String, TargetError> {
        let n = key.len();
        Ok(format!(
            "DELETE FROM {} WHERE {} AND ({}, {}) < (${}::text::timestamptz, ${}::text)",
            self.quoted,
            self.key_conditions(key)?,
            self.version_column,
            self.source_column,
            n + 2,
            n + 1
        ))
    }

    fn tombstone_sql(&self) -> String {
        format!(
            "INSERT INTO {} AS tb (table_name, row_key, version, source) \
             VALUES ($1::text, $2::text::jsonb, $3::text::timestamptz, $4::text) \
             ON CONFLICT (table_name, row_key) DO UPDATE \
             SET version = EXCLUDED.version, source = EXCLUDED.source, deleted_at = now() \
             WHERE (tb.version, tb.source) < (EXCLUDED.version, EXCLUDED.source)",
            self.tombstones
        )
    }

    async fn execute<C: GenericClient>(
        &mut self,
        client: &C,
        sql: String,
        values: &[Option<&str>],
    ) -> Result<u64, TargetError> {
        self.execute_with(client, sql, &as_params(values)).await
    }
}

fn as_params<'v>(values: &'v [Option<&'v str>]) -> Vec<&'v (dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// The row key as the tombstones table stores it: `{"column": "text"}`.
pub fn row_key_json(key: &[ColumnText]) -> String {
    let map: BTreeMap<&str, Option<&str>> = key
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TargetTable {
        let config = Config::parse(
            r#"
            [landlord]
            dsn = "host=x"
            [tenants]
            connection_template = "dbname={database_name}"
            [[table]]
            name = "tenant_brandings"
            [kafka]
            brokers = "x:9092"
        "#,
        )
        .unwrap();
        let column = |name: &str, type_name: &str| ColumnInfo {
            name: name.into(),
            type_name: type_name.into(),
            base_type: type_name.split('(').next().unwrap_or_default().to_string(),
        };
        TargetTable::new(
            &config,
            "tenant_brandings",
            "tenant_brandings",
            vec![
                column("tenant_db_id", "bigint"),
                column("primary_color", "character varying(7)"),
            ],
        )
    }

    #[test]
    fn upsert_only_overwrites_an_older_version_and_respects_tombstones() {
        let sql = table()
            .upsert_sql(&["tenant_db_id", "primary_color"], 1)
            .unwrap();
        assert!(sql.contains("CAST($1::text AS bigint), CAST($2::text AS character varying), $3::text, $4::text::timestamptz"), "{sql}");
        assert!(sql.contains("ON CONFLICT (\"tenant_db_id\") DO UPDATE SET \"primary_color\" = EXCLUDED.\"primary_color\""), "{sql}");
        assert!(sql.contains("WHERE (cur.\"cdc_version\", cur.\"cdc_source\") < (EXCLUDED.\"cdc_version\", EXCLUDED.\"cdc_source\")"), "{sql}");
        assert!(
            sql.contains("(tb.version, tb.source) >= ($4::text::timestamptz, $3::text)"),
            "{sql}"
        );
        assert!(
            sql.contains("OR ((cur.\"cdc_version\", cur.\"cdc_source\") = (EXCLUDED.\"cdc_version\", EXCLUDED.\"cdc_source\") AND ROW(cur.\"primary_color\") IS DISTINCT FROM ROW(EXCLUDED.\"primary_color\"))"),
            "the same version rewrites only new data: {sql}"
        );
    }

    #[test]
    fn delete_only_removes_an_older_version() {
        let sql = table()
            .delete_sql(&[("tenant_db_id".into(), Some("1".into()))])
            .unwrap();
        assert_eq!(
            sql,
            "DELETE FROM \"tenant_brandings\" WHERE \"tenant_db_id\" = CAST($1::text AS bigint) \
             AND (\"cdc_version\", \"cdc_source\") < ($3::text::timestamptz, $2::text)"
        );
    }

    #[test]
    fn a_column_the_target_lacks_is_named() {
        let err = table()
            .upsert_sql(&["tenant_db_id", "nope"], 1)
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn row_keys_are_text_json_like_the_trigger_builds_them() {
        assert_eq!(
            row_key_json(&[("id".into(), Some("1".into()))]),
            r#"{"id":"1"}"#
        );
    }
}
