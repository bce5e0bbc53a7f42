//! Upserts of one table in three statements, however many rows (the live
//! applier, replay, repair): the same rule and the same lock order as one change
//! at a time (every row lock, then every key lock, then the write, whose
//! snapshot is taken after both), with the values as one text array per
//! column.
//!
//! ```text
//!  SELECT … FOR UPDATE   rows of the keys, in key order
//!  SELECT lock_key(…)    key locks, in bucket order (no lock cycle between two writers)
//!  INSERT … SELECT … FROM unnest($1::text[], …) WHERE NOT EXISTS (newer tombstone)
//!         ON CONFLICT (key) DO UPDATE … WHERE (cur.version, cur.source) < (new.version, new.source)
//! ```
//! The changes must have distinct keys and the same columns.

use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use super::{row_key_json, Change, TargetError, TargetTable};
use crate::postgres::quote_ident;

impl TargetTable {
    /// The statements of `changes`' upserts prepared on this connection
    /// (only those not prepared yet cost a round trip), with their values
    /// as one array per column; `None` when there is nothing to write.
    pub async fn prepare_many<'c, C: GenericClient>(
        &mut self,
        client: &C,
        changes: &[&'c Change],
    ) -> Result<Option<ManyUpserts<'c>>, TargetError> {
        let Some(first) = changes.first() else {
            return Ok(None);
        };
        let key_names: Vec<&str> = first.key.iter().map(|(n, _)| n.as_str()).collect();
        let names: Vec<&str> = first
            .key
            .iter()
            .chain(&first.columns)
            .map(|(n, _)| n.as_str())
            .collect();
        let mut arrays: Vec<Vec<Option<&str>>> = (0..names.len())
            .map(|_| Vec::with_capacity(changes.len()))
            .collect();
        let mut sides = Vec::with_capacity(changes.len());
        let mut versions = Vec::with_capacity(changes.len());
        for change in changes {
            for (array, (_, value)) in arrays
                .iter_mut()
                .zip(change.key.iter().chain(&change.columns))
            {
                array.push(value.as_deref());
            }
            sides.push(change.side.as_str());
            versions.push(change.version.as_str());
        }
        let sql = [
            self.lock_many_rows_sql(&key_names)?,
            self.lock_many_keys_sql(),
            self.upsert_many_sql(&names, key_names.len())?,
        ];
        Ok(Some(ManyUpserts {
            statements: self.statements(client, sql).await?,
            key_columns: key_names.len(),
            arrays,
            sides,
            versions,
            row_keys: changes.iter().map(|c| row_key_json(&c.key)).collect(),
            logical: self.logical.clone(),
        }))
    }

    /// `c1, c2, …` casts of the unnested text columns to the target types.
    fn unnest_casts(&self, names: &[&str]) -> Result<Vec<String>, TargetError> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let type_name =
                    self.columns
                        .get(*name)
                        .ok_or_else(|| TargetError::MissingColumn {
                            table: self.quoted.clone(),
                            column: name.to_string(),
                        })?;
                Ok(format!("CAST(u.c{} AS {type_name})", i + 1))
            })
            .collect()
    }

    fn unnest_source(count: usize, first: usize, extra: &[&str]) -> String {
        let mut arrays: Vec<String> = (0..count)
            .map(|i| format!("${}::text[]", first + i))
            .collect();
        let mut aliases: Vec<String> = (1..=count).map(|i| format!("c{i}")).collect();
        for (offset, alias) in extra.iter().enumerate() {
            arrays.push(format!("${}::text[]", first + count + offset));
            aliases.push(alias.to_string());
        }
        format!("unnest({}) AS u({})", arrays.join(", "), aliases.join(", "))
    }

    fn lock_many_rows_sql(&self, key_names: &[&str]) -> Result<String, TargetError> {
        let columns: Vec<String> = key_names.iter().map(|c| quote_ident(c)).collect();
        Ok(format!(
            "SELECT 1 FROM {} WHERE ({}) IN (SELECT {} FROM {}) ORDER BY {} FOR UPDATE",
            self.quoted,
            columns.join(", "),
            self.unnest_casts(key_names)?.join(", "),
            Self::unnest_source(key_names.len(), 1, &[]),
            columns.join(", ")
        ))
    }

    /// The key locks in the order of their buckets (`lock_key`'s own
    /// expression), so that two writers of many keys never wait in a circle.
    fn lock_many_keys_sql(&self) -> String {
        let lock = self.key_lock.replace("$2::text::jsonb", "k::jsonb");
        format!(
            "{lock} FROM unnest($2::text[]) AS k ORDER BY abs(hashtext($1::text || ':' || k::jsonb::text)) % 1024"
        )
    }

    fn upsert_many_sql(&self, names: &[&str], key_len: usize) -> Result<String, TargetError> {
        let n = names.len();
        let logical = n + 4;
        let source = Self::unnest_source(n, 1, &["src", "ver", "rk"]);
        let mut casts = self.unnest_casts(names)?;
        casts.extend(["u.src".to_string(), "u.ver::timestamptz".to_string()]);
        let (columns, updates) = self.upsert_columns(names, key_len);
        Ok(format!(
            "INSERT INTO {table} AS cur ({columns}) SELECT {casts} FROM {source} \
             WHERE NOT EXISTS (SELECT 1 FROM {tombstones} tb WHERE tb.table_name = ${logical}::text \
               AND tb.row_key = u.rk::jsonb \
               AND (tb.version, tb.source) >= (u.ver::timestamptz, u.src)) \
             ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
            table = self.quoted,
            columns = columns.join(", "),
            casts = casts.join(", "),
            tombstones = self.tombstones,
            conflict = columns[..key_len].join(", "),
        ))
    }

    /// Runs `sql` with `params`, preparing it once per connection.
    pub(super) async fn execute_with<C: GenericClient>(
        &mut self,
        client: &C,
        sql: String,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, TargetError> {
        let statement = self.statement(client, sql).await?;
        Ok(client.execute(&statement, params).await?)
    }

    /// `sql` prepared on this connection (once).
    pub(super) async fn statement<C: GenericClient>(
        &mut self,
        client: &C,
        sql: String,
    ) -> Result<tokio_postgres::Statement, TargetError> {
        let [statement] = self.statements(client, [sql]).await?;
        Ok(statement)
    }

    /// Each of `sql` prepared on this connection (once), those not yet
    /// prepared in one round trip: a new connection's first write would
    /// otherwise wait for one per statement.
    pub(super) async fn statements<C: GenericClient, const N: usize>(
        &mut self,
        client: &C,
        sql: [String; N],
    ) -> Result<[tokio_postgres::Statement; N], TargetError> {
        let missing: Vec<&String> = sql
            .iter()
            .filter(|s| !self.statements.contains_key(*s))
            .collect();
        let prepared = futures::future::try_join_all(missing.iter().map(|s| client.prepare(s)));
        for (text, statement) in missing.iter().zip(prepared.await?) {
            self.statements.insert((*text).clone(), statement);
        }
        Ok(sql.map(|s| self.statements[&s].clone()))
    }
}

/// Upserts of many rows ready to go: their statements are prepared, so
/// `send` puts all three on the wire as soon as it is first polled and can
/// share a round trip with the statements around it (`writer`).
pub struct ManyUpserts<'c> {
    /// Row locks, key locks, the write.
    statements: [tokio_postgres::Statement; 3],
    /// How many of `arrays` (the first ones) hold the key.
    key_columns: usize,
    /// One array per column: the key columns', then the data columns'.
    arrays: Vec<Vec<Option<&'c str>>>,
    sides: Vec<&'static str>,
    versions: Vec<&'c str>,
    /// Each row's key as the tombstones and key locks name it.
    row_keys: Vec<String>,
    logical: String,
}

impl ManyUpserts<'_> {
    /// Sends the three statements at once; returns how many rows were
    /// written (the rest were stale). The server runs them in order, so
    /// the write's snapshot is taken after every lock is held.
    pub async fn send<C: GenericClient>(&self, client: &C) -> Result<u64, TargetError> {
        let [lock_rows, key_locks, upsert] = &self.statements;
        let keys: Vec<&Vec<Option<&str>>> = self.arrays[..self.key_columns].iter().collect();
        let all: Vec<&Vec<Option<&str>>> = self.arrays.iter().collect();
        let key_texts: Vec<&str> = self.row_keys.iter().map(String::as_str).collect();
        let extra: [&(dyn ToSql + Sync); 4] =
            [&self.sides, &self.versions, &key_texts, &self.logical];
        let (lock_params, upsert_params) = (params(&keys, &[]), params(&all, &extra));
        let key_lock_params: [&(dyn ToSql + Sync); 2] = [&self.logical, &key_texts];
        // `try_join!` stops at the first error in this order: a statement
        // that fails before it is sent keeps the write from being sent
        // without its locks.
        let (_, _, written) = futures::try_join!(
            client.execute(lock_rows, &lock_params),
            client.execute(key_locks, &key_lock_params),
            client.execute(upsert, &upsert_params),
        )?;
        Ok(written)
    }
}

fn params<'a>(
    arrays: &'a [&'a Vec<Option<&'a str>>],
    extra: &[&'a (dyn ToSql + Sync)],
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut all: Vec<&(dyn ToSql + Sync)> =
        arrays.iter().map(|a| *a as &(dyn ToSql + Sync)).collect();
    all.extend_from_slice(extra);
    all
}
