//! Ordinary (non-replication) PostgreSQL access: connecting, quoting, and
//! reading the catalogs to learn a table's columns.

use tokio_postgres::{Client, NoTls};

use crate::config::Secret;

/// A failure talking to one database, naming which one.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to database {database} ({dsn}): {}; check the DSN and that the server is up", describe(source))]
    Connect {
        database: String,
        dsn: String,
        source: tokio_postgres::Error,
    },
    #[error("query `{what}` failed on database {database}: {}", describe(source))]
    Query {
        database: String,
        what: String,
        source: tokio_postgres::Error,
    },
    #[error("database {database} is not set up for the bridge and this role may not set it up ({reason}); run `cdc-bridge setup` as the table owner")]
    Setup { database: String, reason: String },
    #[error("tenant registry: {0}")]
    Registry(String),
    #[error("table {table} does not exist in database {database}; run `cdc-bridge setup` after creating it, or fix the table name in the configuration")]
    MissingTable { database: String, table: String },
}

impl DbError {
    pub fn query(database: &str, what: &str, source: tokio_postgres::Error) -> Self {
        DbError::Query {
            database: database.to_string(),
            what: what.to_string(),
            source,
        }
    }

    /// Connection problems, lost connections and serialisation failures go
    /// away on retry; errors in our SQL or the schema do not.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connect { .. } => true,
            DbError::Query { source, .. } => is_transient_pg(source),
            DbError::Registry(_) | DbError::MissingTable { .. } | DbError::Setup { .. } => false,
        }
    }
}

/// The server's own message (and SQLSTATE) of an error; tokio-postgres
/// prints only "db error" for those.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Classifies by SQLSTATE class, never by message text.
pub fn is_transient_pg(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true, // I/O: connection closed or reset
        Some(code) => {
            let class = &code.code()[..2];
            // 08 connection, 40 rollback (serialization/deadlock), 53 resources, 57 operator intervention
            matches!(class, "08" | "40" | "53" | "57")
        }
    }
}

/// Opens a connection (with TLS when the DSN asks for it and a root
/// certificate is configured) and drives it in the background.
pub async fn connect(dsn: &Secret, database: &str) -> Result<Client, DbError> {
    let connect_error = |source| DbError::Connect {
        database: database.to_string(),
        dsn: dsn.to_string(),
        source,
    };
    let parsed: tokio_postgres::Config = dsn.expose().parse().map_err(connect_error)?;
    let name = database.to_string();
    let log_end = move |result: Result<(), tokio_postgres::Error>| {
        if let Err(e) = result {
            tracing::debug!(database = %name, error = %e, "database connection ended");
        }
    };
    let wants_tls = parsed.get_ssl_mode() != tokio_postgres::config::SslMode::Disable;
    match crate::tls::client_config().filter(|_| wants_tls) {
        Some(tls) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
            let (client, connection) = parsed.connect(tls).await.map_err(connect_error)?;
            tokio::spawn(async move { log_end(connection.await) });
            Ok(client)
        }
        None => {
            let (client, connection) = parsed.connect(NoTls).await.map_err(connect_error)?;
            tokio::spawn(async move { log_end(connection.await) });
            Ok(client)
        }
    }
}

/// The database a DSN names (libpq's default: the user name).
pub fn database_name(dsn: &Secret) -> Result<String, DbError> {
    let parsed: tokio_postgres::Config =
        dsn.expose().parse().map_err(|source| DbError::Connect {
            database: "?".to_string(),
            dsn: dsn.to_string(),
            source,
        })?;
    Ok(parsed
        .get_dbname()
        .or(parsed.get_user())
        .unwrap_or("postgres")
        .to_string())
}

/// Quotes an identifier for SQL (`"my ""table"""`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a possibly schema-qualified name given as `schema.table` or `table`.
pub fn quote_qualified(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, table)) if !name.starts_with('"') => {
            format!("{}.{}", quote_ident(schema), quote_ident(table))
        }
        _ => quote_ident(name),
    }
}

/// Quotes a string literal (for the few places where a parameter cannot be bound).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

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
    let rows = client
        .query(sql, &[&quote_qualified(table)])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_awkward_identifiers() {
        assert_eq!(quote_ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            quote_qualified("public.tenant_brandings"),
            "\"public\".\"tenant_brandings\""
        );
        assert_eq!(quote_qualified("tenant_brandings"), "\"tenant_brandings\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
