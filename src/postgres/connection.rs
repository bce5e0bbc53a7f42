//! Ordinary (non-replication) connections: connecting with or without TLS,
//! and what a failure means.

use tokio_postgres::{Client, NoTls};

use crate::config::Dsn;
use crate::runtime::retry::{Classify, ErrorClass};

/// A failure talking to one database, naming which one.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "cannot connect to database {database} ({dsn}): {}; {}",
        describe(source),
        connect_advice(source)
    )]
    Connect {
        database: String,
        dsn: String,
        source: tokio_postgres::Error,
    },
    #[error("database {database} did not complete the connection within {seconds} s (server silent or overloaded); check that it is up and reachable")]
    ConnectTimeout { database: String, seconds: u64 },
    #[error("the connection string of database {database} is invalid ({reason}); fix the DSN in the configuration")]
    BadDsn { database: String, reason: String },
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
}

impl Classify for DbError {
    fn class(&self) -> ErrorClass {
        match self {
            DbError::Connect { source, .. } | DbError::Query { source, .. } => class_of_pg(source),
            DbError::ConnectTimeout { .. } => ErrorClass::Transient,
            DbError::BadDsn { .. }
            | DbError::Registry(_)
            | DbError::MissingTable { .. }
            | DbError::Setup { .. } => ErrorClass::Permanent,
        }
    }
}

/// The server's own message (and SQLSTATE) of an error; tokio-postgres
/// prints only "db error" for those. Any other error is printed with its
/// causes, which tokio-postgres leaves out ("error performing TLS
/// handshake" alone does not say that the certificate was refused).
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        text.push_str(&format!(": {error}"));
        cause = error.source();
    }
    text
}

/// What to check when a connection failed: the TLS settings when the
/// server's certificate was refused, else the DSN and the server.
fn connect_advice(error: &tokio_postgres::Error) -> &'static str {
    if refused_by_tls(error) {
        "check postgres.tls_root_cert (the CA that signed the server's certificate) and that the DSN's host is a name the certificate carries"
    } else {
        "check the DSN and that the server is up"
    }
}

/// Whether a TLS error is among the causes (rustls hands it over inside an
/// I/O error, whose `source` skips it).
fn refused_by_tls(error: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        let tls = error.downcast_ref::<rustls::Error>().is_some()
            || inner.is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        if tls {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Whether retrying can help, from the SQLSTATE (never the message text);
/// an error without one is I/O (connection refused, reset, closed).
pub(crate) fn class_of_pg(error: &tokio_postgres::Error) -> ErrorClass {
    error
        .code()
        .map_or(ErrorClass::Transient, |code| class_of_sqlstate(code.code()))
}

/// Transient: 08 connection, 40 serialization failure or deadlock, 53
/// insufficient resources (too many connections, disk full), 57 operator
/// intervention (shutdown, starting up), 58 system I/O, 55P03 lock not
/// available, 55006 object in use (a slot another process streams).
/// Everything else (28 credentials, 3D missing database, 42 privilege or
/// missing object, 55000 `wal_level`, 22/23 data) needs an operator.
pub(crate) fn class_of_sqlstate(code: &str) -> ErrorClass {
    let transient = matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58"))
        || code == "55P03"
        || code == "55006";
    if transient {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// Opens a connection (with TLS when the DSN asks for it and a root
/// certificate is configured) and drives it in the background.
pub async fn connect(dsn: &Dsn, database: &str) -> Result<Client, DbError> {
    let connect_error = |source| DbError::Connect {
        database: database.to_string(),
        dsn: dsn.to_string(),
        source,
    };
    let mut parsed = parse_dsn(dsn, database)?;
    super::session::apply(&mut parsed);
    let name = database.to_string();
    let log_end = move |result: Result<(), tokio_postgres::Error>| {
        if let Err(e) = result {
            tracing::debug!(database = %name, error = %e, "database connection ended");
        }
    };
    let wants_tls = parsed.get_ssl_mode() != tokio_postgres::config::SslMode::Disable;
    // tokio-postgres bounds only the TCP connect; a server that accepts and
    // then stays silent would hold the startup forever.
    let limit = parsed
        .get_connect_timeout()
        .copied()
        .unwrap_or(super::session::settings().connect_timeout);
    let timed_out = || DbError::ConnectTimeout {
        database: database.to_string(),
        seconds: limit.as_secs(),
    };
    match crate::postgres::tls::client_config().filter(|_| wants_tls) {
        Some(tls) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
            let (client, connection) = tokio::time::timeout(limit, parsed.connect(tls))
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_error)?;
            tokio::spawn(async move { log_end(connection.await) });
            Ok(client)
        }
        None => {
            let (client, connection) = tokio::time::timeout(limit, parsed.connect(NoTls))
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_error)?;
            tokio::spawn(async move { log_end(connection.await) });
            Ok(client)
        }
    }
}

fn parse_dsn(dsn: &Dsn, database: &str) -> Result<tokio_postgres::Config, DbError> {
    dsn.expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::BadDsn {
            database: database.to_string(),
            reason: e.to_string(),
        })
}

/// The database a DSN names (libpq's default: the user name).
pub fn database_name(dsn: &Dsn) -> Result<String, DbError> {
    let parsed = parse_dsn(dsn, "?")?;
    Ok(parsed
        .get_dbname()
        .or(parsed.get_user())
        .unwrap_or("postgres")
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes_decide_whether_retrying_helps() {
        for code in [
            "08006", "40001", "40P01", "53300", "57P01", "57P03", "55P03", "55006",
        ] {
            assert_eq!(class_of_sqlstate(code), ErrorClass::Transient, "{code}");
        }
        for code in [
            "28P01", "3D000", "42501", "42P01", "55000", "22P02", "23505",
        ] {
            assert_eq!(class_of_sqlstate(code), ErrorClass::Permanent, "{code}");
        }
    }
}
