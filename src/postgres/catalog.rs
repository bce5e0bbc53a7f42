//! Reading the catalogs: a table's columns and type names.

use tokio_postgres::Client;

use super::{quote_qualified, DbError};

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type()` text with the modifier, e.g. `character varying(7)`.
    pub type_name: String,
    /// The type without modifier, e.g. `character varying`: casting to it and
    /// letting the assignment apply the modifier makes a too-long value an
    /// error instead of silently truncating it.
    pub base_type: String,
}

/// Columns of a table, in order; `MissingTable` when it does not exist.
pub async fn table_columns(
    client: &Client,
    database: &str,
    table: &str,
) -> Result<Vec<ColumnInfo>, DbError> {
    let sql = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL)
                 FROM pg_attribute a
                WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                ORDER BY a.attnum";
    // Typed: one round trip (no prepare), on every new target connection.
    let name = quote_qualified(table);
    let rows = client
        .query_typed(sql, &[(&name, tokio_postgres::types::Type::TEXT)])
        .await
        .map_err(|e| DbError::query(database, "read table columns", e))?;
    if rows.is_empty() {
        return Err(DbError::MissingTable {
            database: database.to_string(),
            table: table.to_string(),
        });
    }
    Ok(rows
        .iter()
        .map(|r| ColumnInfo {
            name: r.get(0),
            type_name: r.get(1),
            base_type: r.get(2),
        })
        .collect())
}

/// `format_type(oid, typmod)` for a type the decoder only knows by oid.
pub async fn type_name(
    client: &Client,
    database: &str,
    oid: u32,
    modifier: i32,
) -> Result<String, DbError> {
    let row = client
        .query_one("SELECT format_type($1::oid, $2)", &[&oid, &modifier])
        .await
        .map_err(|e| DbError::query(database, "format_type", e))?;
    Ok(row.get(0))
}
