//! Shared harness of the integration tests: real PostgreSQL and real Kafka,
//! started by `scripts/test.sh`. Every test gets fresh databases, its own
//! topic, consumer group and slot names, and waits with deadlines, never
//! with fixed sleeps.
//!
//! All tests share one process and run in parallel threads, so none may
//! change a server the others use: a test that stops a server, or needs one
//! configured differently, starts one of its own on a private port
//! (`stack`).
//!
//! Layout:
//!
//! * `postgres`: the shared cluster, its DSNs and connections.
//! * `env`: [`TestEnv`], one test's landlord, tenants, topic and bridge
//!   configuration.
//! * `brandings`: reading and writing the synced rows on either side.
//! * `bridge`: the `cdc-bridge run` process, its log and HTTP endpoint.
//! * `kafka`: a `Topic` on a given broker, read back or produced to.
//! * `oracle`: the production conflict rule, deciding which write a test
//!   must find on both sides.
//! * `stack`: servers of a single test's own ([`OwnKafka`], [`OwnPostgres`]).
//! * `quiet`: markers that nothing more is on its way (slots confirmed,
//!   the applier at the end of the topic), for checks that something did
//!   not happen.

mod brandings;
mod bridge;
mod env;
mod kafka;
mod oracle;
mod postgres;
mod quiet;
mod stack;

use std::time::{Duration, Instant};

pub(crate) use brandings::Row;
pub(crate) use brandings::{
    landlord_color, log_writes, set_landlord_color, set_tenant_color, tenant_color, write_count,
};
pub(crate) use bridge::{bridge_command, http_request, sample, wait_streaming, Bridge};
pub(crate) use env::{config_text, unique_prefix, TestEnv};
pub(crate) use kafka::{kafka_brokers, Topic};
pub(crate) use oracle::{keep_newest, Write, VERSION_MICROS};
pub(crate) use postgres::{
    confirmed_lsn, connect, current_lsn, dsn, lsn, lsn_text, pg_port, LANDLORD_SCHEMA,
    TENANT_SCHEMA,
};
pub(crate) use stack::{offset, OwnKafka, OwnPostgres};

/// How long a test waits for anything before it fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// Held by the two heaviest tests (the Kafka outage, whose broker restart
/// is slow under load, and the 300-database fleet) so that they never run
/// at the same time on a 2-core machine.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Polls `check` until it returns `Some` or the deadline passes.
pub(crate) async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(DEADLINE, what, check).await
}

/// `eventually` with a deadline of its own (a broker restart is slow).
pub(crate) async fn eventually_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
