//! What the benchmarks share: the stack `scripts/bench.sh` started, a
//! fresh database on it, and the median of several runs.

use tokio_postgres::{Client, NoTls};

pub fn pg_port() -> u16 {
    std::env::var("CDC_TEST_PG_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(56432)
}

pub fn brokers() -> String {
    std::env::var("CDC_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:59192".into())
}

pub fn dsn(db: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        pg_port()
    )
}

pub async fn connect(db: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(&dsn(db), NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL on port {}: {e}; run scripts/bench.sh",
                pg_port()
            )
        });
    tokio::spawn(connection);
    client
}

/// Creates database `db` and returns a connection to it.
pub async fn fresh_database(db: &str) -> Client {
    connect("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    connect(db).await
}

/// `cargo test --benches` asks the harness-less benchmarks for a list:
/// there are no unit benches to run.
pub fn only_listing() -> bool {
    std::env::args().any(|a| a == "--list")
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
