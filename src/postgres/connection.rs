//! Ordinary (non-replication) connections: connecting with or without TLS,
//! and what a failure means.

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
    match crate::postgres::tls::client_config().filter(|_| wants_tls) {
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
