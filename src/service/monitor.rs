//! The Kafka side of the status: every few seconds, how far the applier's
//! consumer group is behind the change topic (per partition) and how many
//! dead letters wait for a redrive, as metrics and on the status board.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::config::Config;
use crate::kafka::lag::GroupLag;
use crate::runtime::metrics::metrics;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::status::status;

/// How often the lag is read (two small broker round trips per partition).
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

/// Reads until shutdown; a failed read (Kafka down) keeps the last values.
pub(super) async fn run(config: Arc<Config>, mut shutdown: Shutdown) {
    let kafka = &config.kafka;
    let readers = GroupLag::new(kafka, &kafka.topic, &kafka.consumer_group).and_then(|sync| {
        let redrive_group = format!("{}.redrive", kafka.consumer_group);
        Ok((
            sync,
            GroupLag::new(kafka, &kafka.dead_letter_topic(), &redrive_group)?,
        ))
    });
    let readers = match readers {
        Ok(readers) => Arc::new(readers),
        Err(error) => {
            tracing::warn!(%error, "cannot read the consumer lag; /status and cdc_applier_consumer_lag stay empty");
            return;
        }
    };
    loop {
        let task = Arc::clone(&readers);
        let read = tokio::task::spawn_blocking(move || (task.0.read(), task.1.read())).await;
        if let Ok((sync, dead)) = read {
            match sync {
                Ok(lag) => publish_consumer_lag(lag),
                Err(error) => debug!(%error, "reading the consumer lag failed"),
            }
            match dead {
                Ok(waiting) => {
                    let total: i64 = waiting.values().sum();
                    metrics().dead_letters_waiting.set(total);
                    status().set_dead_letters_waiting(total);
                }
                Err(error) => debug!(%error, "counting the dead letters failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.wait() => return,
        }
    }
}

fn publish_consumer_lag(lag: BTreeMap<i32, i64>) {
    let gauge = &metrics().consumer_lag;
    for (partition, messages) in &lag {
        gauge
            .with_label_values(&[partition.to_string().as_str()])
            .set(*messages);
    }
    status().set_consumer_lag(lag);
}
