//! Writing one change envelope into a target table. Values travel as text
//! and are cast to the target column's type in SQL, so any type whose text
//! form both sides share (everything PostgreSQL can print) is lossless.
//! Identifiers are always quoted; values are always bound parameters.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::{GenericClient, Statement};

use crate::config::TableConfig;
use crate::envelope::{Envelope, Op};
use crate::postgres::{quote_ident, quote_qualified, ColumnInfo};

/// The target table's columns and the SQL built for it.
#[derive(Debug)]
pub struct TargetTable {
    /// Qualified, quoted table name.
    quoted: String,
    /// Column name to `format_type()` name.
    columns: HashMap<String, String>,
    /// Prepared statements by SQL text (the column set varies per message).
    statements: HashMap<String, Statement>,
}

/// A write that cannot succeed as the message stands.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target table {table} has no column {column}, which the mapping needs; add it or fix the configuration")]
    MissingColumn { table: String, column: String },
    #[error("tenant {tenant}: registry field `{field}` for landlord column {column} is unknown; is the tenant in the registry?")]
    MissingRegistryField {
        tenant: String,
        field: String,
        column: String,
    },
    #[error("database rejected the write: {0}")]
    Database(#[from] tokio_postgres::Error),
}

impl TargetError {
    /// Transient errors (connection, serialisation) are retried with the
    /// whole batch; anything else is a problem with this one message.
    pub fn is_transient(&self) -> bool {
        match self {
            TargetError::Database(e) => crate::postgres::is_transient_pg(e),
            _ => false,
        }
    }
}

/// A landlord-side upsert: tenant key plus registry-filled columns plus data.
pub struct LandlordRow<'a> {
    pub table: &'a TableConfig,
    pub envelope: &'a Envelope,
    /// Registry fields of the tenant (`slug`, `numeric_id`, ...).
    pub registry: &'a BTreeMap<String, Option<String>>,
}

impl TargetTable {
    pub fn new(table_name: &str, columns: Vec<ColumnInfo>) -> Self {
        TargetTable {
            quoted: quote_qualified(table_name),
            columns: columns.into_iter().map(|c| (c.name, c.type_name)).collect(),
            statements: HashMap::new(),
        }
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

    /// Applies the envelope to the landlord row of its tenant.
    pub async fn apply_landlord<C: GenericClient>(
        &mut self,
        client: &C,
        row: &LandlordRow<'_>,
    ) -> Result<(), TargetError> {
        match row.envelope.op {
            Op::Delete => {
                self.delete_by(
                    client,
                    &row.table.landlord_tenant_key,
                    &row.envelope.tenant.id,
                )
                .await
            }
            Op::Upsert | Op::Snapshot => self.upsert_landlord(client, row).await,
        }
    }

    async fn delete_by<C: GenericClient>(
        &mut self,
        client: &C,
        key: &str,
        value: &str,
    ) -> Result<(), TargetError> {
        let sql = format!(
            "DELETE FROM {} WHERE {} = {}",
            self.quoted,
            quote_ident(key),
            self.cast(key, 1)?
        );
        let statement = self.prepare(client, sql).await?;
        client.execute(&statement, &[&value]).await?;
        Ok(())
    }

    async fn upsert_landlord<C: GenericClient>(
        &mut self,
        client: &C,
        row: &LandlordRow<'_>,
    ) -> Result<(), TargetError> {
        let mut names: Vec<&str> = vec![&row.table.landlord_tenant_key];
        let mut values: Vec<Option<&str>> = vec![Some(&row.envelope.tenant.id)];
        for (column, field) in &row.table.landlord_registry_columns {
            names.push(column);
            values.push(registry_value(row, column, field)?);
        }
        for (column, value) in &row.envelope.columns {
            // Columns only one side has are not synced; unchanged values are left alone.
            if value.unchanged
                || row.table.is_never_synced(column)
                || !self.columns.contains_key(column)
            {
                continue;
            }
            names.push(column);
            values.push(value.value.as_deref());
        }
        let sql = self.upsert_sql(&names)?;
        let statement = self.prepare(client, sql).await?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        client.execute(&statement, &params).await?;
        Ok(())
    }

    fn upsert_sql(&self, names: &[&str]) -> Result<String, TargetError> {
        let quoted: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
        let casts = names
            .iter()
            .enumerate()
            .map(|(i, n)| self.cast(n, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        let updates: Vec<String> = quoted[1..]
            .iter()
            .map(|q| format!("{q} = EXCLUDED.{q}"))
            .collect();
        let on_conflict = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        Ok(format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
            self.quoted,
            quoted.join(", "),
            casts.join(", "),
            quoted[0],
        ))
    }

    async fn prepare<C: GenericClient>(
        &mut self,
        client: &C,
        sql: String,
    ) -> Result<Statement, TargetError> {
        if let Some(statement) = self.statements.get(&sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(&sql).await?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

fn registry_value<'a>(
    row: &'a LandlordRow<'_>,
    column: &str,
    field: &str,
) -> Result<Option<&'a str>, TargetError> {
    if let Some(value) = row.registry.get(field) {
        return Ok(value.as_deref());
    }
    // The envelope itself carries id and slug, so those work even for a
    // tenant the registry no longer lists.
    match field {
        "id" => Ok(Some(&row.envelope.tenant.id)),
        "slug" => Ok(Some(&row.envelope.tenant.slug)),
        _ => Err(TargetError::MissingRegistryField {
            tenant: row.envelope.tenant.id.clone(),
            field: field.to_string(),
            column: column.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TargetTable {
        TargetTable::new(
            "tenant_brandings",
            vec![
                ColumnInfo {
                    name: "tenant_db_id".into(),
                    type_name: "bigint".into(),
                },
                ColumnInfo {
                    name: "tenant_slug".into(),
                    type_name: "text".into(),
                },
                ColumnInfo {
                    name: "primary_color".into(),
                    type_name: "character varying(7)".into(),
                },
            ],
        )
    }

    #[test]
    fn upsert_casts_text_parameters_to_target_types() {
        let sql = table()
            .upsert_sql(&["tenant_db_id", "tenant_slug", "primary_color"])
            .unwrap();
        assert_eq!(
            sql,
            "INSERT INTO \"tenant_brandings\" (\"tenant_db_id\", \"tenant_slug\", \"primary_color\") \
             VALUES (CAST($1::text AS bigint), CAST($2::text AS text), CAST($3::text AS character varying(7))) \
             ON CONFLICT (\"tenant_db_id\") DO UPDATE SET \"tenant_slug\" = EXCLUDED.\"tenant_slug\", \
             \"primary_color\" = EXCLUDED.\"primary_color\""
        );
    }

    #[test]
    fn a_column_the_target_lacks_is_named() {
        let err = table().upsert_sql(&["tenant_db_id", "nope"]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
