//! The shared PostgreSQL cluster of the test stack, and connections to it
//! or to any other test server.

use tokio_postgres::{Client, NoTls};

/// The landlord's seed schema (registry and branding table).
pub(crate) const LANDLORD_SCHEMA: &str = include_str!("../../../scripts/seed/landlord.sql");

/// A tenant database's seed schema.
pub(crate) const TENANT_SCHEMA: &str = include_str!("../../../scripts/seed/tenant.sql");

/// Port of the shared cluster (`scripts/test.sh` exports it).
pub(crate) fn pg_port() -> u16 {
    std::env::var("CDC_TEST_PG_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(25432)
}

/// DSN of `database` on a server of the test stack, as superuser.
pub(crate) fn dsn_at(port: u16, database: &str) -> String {
    format!("host=127.0.0.1 port={port} user=postgres dbname={database}")
}

/// DSN of `database` on the shared cluster.
pub(crate) fn dsn(database: &str) -> String {
    dsn_at(pg_port(), database)
}

/// A connection to `database` on the shared cluster.
pub(crate) async fn connect(database: &str) -> Client {
    connect_dsn(&dsn(database)).await
}

/// A plain connection to any test server (several tests start their own).
pub(crate) async fn connect_dsn(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach test PostgreSQL ({dsn}): {e}; run the tests with scripts/test.sh")
        });
    tokio::spawn(connection);
    client
}

/// An LSN as a number, from PostgreSQL's `X/X` text form.
pub(crate) fn lsn(text: &str) -> u64 {
    let (high, low) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("{text} is not an LSN (X/X)"));
    let part = |hex: &str| {
        u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{text} is not an LSN: {e}"))
    };
    (part(high) << 32) | part(low)
}

/// The server's current WAL position (cluster-wide).
pub(crate) async fn current_lsn(client: &Client) -> u64 {
    let text: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    lsn(&text)
}

/// The confirmed position of the database's bridge slot (every test
/// database has at most one), if there is a slot.
pub(crate) async fn confirmed_lsn(client: &Client) -> Option<u64> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()?;
    row.get::<_, Option<String>>(0).map(|text| lsn(&text))
}

/// An LSN in PostgreSQL's `X/X` text form, for messages.
pub(crate) fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}
