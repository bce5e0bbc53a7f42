//! Running one source: connect, install, prepare the slot, stream; and the
//! supervisor that restarts it after a failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::capture::SourceContext;
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
use crate::runtime::shutdown::{self, Shutdown};
use crate::source::replication::ReplicationConnection;

/// Runs one source until shutdown, restarting after failures with backoff.
pub(crate) async fn supervise(
    spec: SourceSpec,
    config: Arc<Config>,
    producer: Producer,
    mut shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_triggered() {
        let started = Instant::now();
        match stream_source(&spec, &config, producer.clone(), shutdown.clone(), None).await {
            Ok(()) => break,
            Err(error) => {
                metrics()
                    .source_up
                    .with_label_values(&[spec.database.as_str()])
                    .set(0);
                warn!(database = %spec.database, %error, retry_in = ?backoff, "reader stopped; restarting");
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    metrics()
        .source_up
        .with_label_values(&[spec.database.as_str()])
        .set(0);
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
    let mut client = connect(&spec.dsn, db).await?;
    ensure_installed(&mut client, config, spec.side, db).await?;
    let slot = slot_name(&config.replication.slot_prefix, db);
    let mut conn = ReplicationConnection::connect(spec.dsn.expose())
        .await
        .map_err(ReaderError::replication(db))?;
    let source = SourceContext {
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
    conn.start_replication(&slot, start, &config.replication.publication)
        .await
        .map_err(ReaderError::replication(db))?;
    info!(database = db, %slot, %start, "streaming");
    metrics().source_up.with_label_values(&[db]).set(1);
    let delivery = Delivery::new(producer, config.kafka.topic.clone(), start);
    let mut stream = ChangeStream::new(
        config,
        source,
        spec.owner.clone(),
        slot,
        client,
        conn,
        delivery,
        start,
    );
    stream.stop_at = stop_at;
    stream.run(shutdown).await
}
