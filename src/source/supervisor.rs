//! Running one source: connect, install, prepare the slot, stream; and the
//! supervisor that restarts it after a failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::capture::SourceDb;
use super::catalog::{server_permit, Catalog};
use super::slot::{prepare_slot, slot_name};
use super::stream::ChangeStream;
use super::{ReaderError, SourceSpec};
use crate::config::Config;
use crate::kafka::delivery::Delivery;
use crate::kafka::Producer;
use crate::model::Lsn;
use crate::postgres::connect;
use crate::postgres::setup::ensure_installed;
use crate::runtime::metrics::metrics;
use crate::runtime::retry::{Backoff, Classify, FailureLog};
use crate::runtime::shutdown::{self, Shutdown};
use crate::runtime::status::{status, ReaderState};
use crate::source::replication::ReplicationConnection;

/// Restart waits: from `RESTART_MIN`, doubling to `RESTART_MAX` (where a
/// permanent error waits at once).
const RESTART_MIN: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(30);

/// A run this long counts as healthy: the next failure starts the backoff
/// from the beginning.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs one source until shutdown, restarting after failures with backoff
/// (see `runtime::retry`).
pub(crate) async fn supervise(
    spec: SourceSpec,
    config: Arc<Config>,
    producer: Producer,
    mut shutdown: Shutdown,
) {
    let what = format!("reader of database {}", spec.database);
    let mut backoff = Backoff::new(RESTART_MIN, RESTART_MAX);
    let mut failures = FailureLog::default();
    while !shutdown.is_triggered() {
        let started = Instant::now();
        status().set_reader_state(&spec.database, ReaderState::Starting);
        let error =
            match stream_source(&spec, &config, producer.clone(), shutdown.clone(), None).await {
                Ok(()) => break,
                Err(error) => error,
            };
        set_source_up(&spec.database, false);
        status().reader_failed(&spec.database, &error.to_string());
        if started.elapsed() > HEALTHY_RUN {
            backoff.reset();
            failures.forget();
        }
        let class = error.class();
        let wait = backoff.after(class);
        failures.failed(&what, class, &error, wait);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => break,
        }
    }
    set_source_up(&spec.database, false);
    status().set_reader_state(&spec.database, ReaderState::Stopped);
}

fn set_source_up(database: &str, up: bool) {
    metrics()
        .source_up
        .with_label_values(&[database])
        .set(i64::from(up));
}

/// Streams until every change up to `end` is acknowledged by Kafka, then
/// returns (used by the benchmark to drain a prepared workload).
pub async fn drain_source_to(
    spec: &SourceSpec,
    config: &Config,
    producer: Producer,
    end: Lsn,
) -> Result<(), ReaderError> {
    let (_trigger, shutdown) = shutdown::channel();
    stream_source(spec, config, producer, shutdown, Some(end)).await
}

/// Streams one source database into Kafka until shutdown, an error, or
/// (benchmarks) until `stop_at` is confirmable.
async fn stream_source(
    spec: &SourceSpec,
    config: &Config,
    producer: Producer,
    shutdown: Shutdown,
    stop_at: Option<Lsn>,
) -> Result<(), ReaderError> {
    let db = spec.database.as_str();
    // Starting holds an ordinary connection (setup, slot, snapshot): a few
    // readers per server at a time, so that hundreds starting together do
    // not take a small server's every connection.
    let (mut stopping, server) = (shutdown.clone(), spec.dsn.server());
    let permit = tokio::select! {
        permit = server_permit(&server) => permit,
        _ = stopping.wait() => return Ok(()),
    };
    let mut client = connect(&spec.dsn, db).await?;
    ensure_installed(&mut client, config, spec.side, db).await?;
    let slot = slot_name(&config.replication.slot_prefix, db);
    let mut conn = ReplicationConnection::connect(spec.dsn.expose())
        .await
        .map_err(ReaderError::replication(db))?;
    let source = SourceDb {
        side: spec.side,
        database: spec.database.clone(),
    };
    let start = prepare_slot(
        &mut client,
        &mut conn,
        config,
        &slot,
        (&source, &spec.owner),
        producer.clone(),
    )
    .await?;
    let started = conn
        .start_replication(slot.as_str(), start, &config.replication.publication)
        .await;
    if let Err(error) = started {
        let leased = spec
            .lease_until
            .as_ref()
            .is_some_and(|until| until.borrow().is_some_and(|at| at > Instant::now()));
        if leased {
            end_stale_walsender(&client, slot.as_str(), db).await;
        }
        return Err(ReaderError::replication(db)(error));
    }
    info!(database = db, %slot, %start, "streaming");
    set_source_up(db, true);
    status().set_reader_state(db, ReaderState::Streaming);
    let delivery = Delivery::new(producer, &config.kafka, db, start);
    // Streaming needs no ordinary connection: give it and the permit back.
    drop((client, permit));
    let catalog = Catalog::new(spec.dsn.clone(), db);
    let mut stream = ChangeStream::new(
        config,
        source,
        spec.owner.clone(),
        slot,
        catalog,
        conn,
        delivery,
        start,
        spec.apply_marker.clone(),
    );
    stream.stop_at = stop_at;
    stream.run(shutdown).await
}

/// A slot still streaming to another walsender when this reader holds the
/// source's lease: that walsender belongs to an instance that has stopped
/// (its lease ran out, so by the lease rule its reader is gone) but whose
/// connection the server has not noticed is dead (a network partition
/// lasts until `wal_sender_timeout`). Ending it lets the retry stream now.
async fn end_stale_walsender(client: &tokio_postgres::Client, slot: &str, db: &str) {
    let ended = client
        .query_opt(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
              WHERE slot_name = $1 AND active AND active_pid <> pg_backend_pid()",
            &[&slot],
        )
        .await;
    if let Ok(Some(_)) = ended {
        tracing::warn!(database = db, slot, "the slot was still streaming to a walsender of an instance that lost its lease; ended it");
    }
}
