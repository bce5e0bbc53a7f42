//! What the benchmarks share: the stack `scripts/bench.sh` started, a
//! fresh database on it, and the median of several runs. Not every
//! benchmark uses all of it.
#![allow(dead_code)]

use std::path::PathBuf;

use tokio_postgres::{Client, NoTls};

pub mod fleet;

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

/// Settings appended to the bridge's config, for trying settings by hand:
/// `CDC_BENCH_EXTRA=$'[applier]\nbatch_wait_ms = 0'`.
pub fn extra_settings() -> String {
    std::env::var("CDC_BENCH_EXTRA").unwrap_or_default()
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

/// Writes `bench-results/{name}.json` and says where.
pub fn write_results(name: &str, json: serde_json::Value) {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("{name}: results written to {}", path.display());
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
