//! Whether the applier's consumer fetches every partition it holds (see
//! `kafka::stall` for why it may not). Every `CHECK_INTERVAL`, between
//! batches, the group's committed offsets and the partitions' ends are
//! read off the runtime; a held partition with messages waiting at the
//! same position at two checks in a row gets the consumer replaced.
//!
//! A check counts only when the consumer had nothing more to give since
//! the last one (a batch ended with room, or the topic was idle): a busy
//! applier that never drains its queue could otherwise look stalled on a
//! partition whose turn has not come yet. A reading that failed, or one
//! older than two intervals (a long batch, a retried one), starts afresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use tracing::{debug, warn};

use super::consume::subscribed_consumer;
use super::Applier;
use crate::config::KafkaConfig;
use crate::kafka::lag::{GroupLag, Position};
use crate::kafka::stall::{StallWatch, Standing};
use crate::runtime::metrics::metrics;

/// How often the applier checks that it fetches every partition it holds.
const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Longest wait for one reading of the group's positions.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The watch for partitions held and not fetched.
pub(super) struct StallCheck {
    /// Reads the group's committed offsets and the partitions' ends
    /// (`None` if it could not be made: the check is then off).
    group: Option<Arc<GroupLag>>,
    watch: StallWatch,
    /// When the last check ran, and when the watch last took a reading.
    last_check: Instant,
    last_reading: Option<Instant>,
    /// The consumer had nothing more to give at some point since then.
    drained: bool,
}

impl StallCheck {
    pub(super) fn new(config: &KafkaConfig) -> Self {
        let group = GroupLag::new(config, &config.topic, &config.consumer_group)
            .inspect_err(|error| warn!(%error, "cannot watch the applier's partitions for a stalled consumer"))
            .ok()
            .map(Arc::new);
        StallCheck {
            group,
            watch: StallWatch::default(),
            last_check: Instant::now(),
            last_reading: None,
            drained: false,
        }
    }

    /// The consumer's local queue was empty when a batch was taken.
    pub(super) fn drained(&mut self) {
        self.drained = true;
    }

    /// Forget the readings so far (a failed batch, a failed reading).
    pub(super) fn start_afresh(&mut self) {
        self.watch.reset();
        self.last_reading = None;
    }

    /// Whether a check is due now, and with which reader.
    fn due(&mut self) -> Option<Arc<GroupLag>> {
        if self.last_check.elapsed() < CHECK_INTERVAL {
            return None;
        }
        self.last_check = Instant::now();
        if !std::mem::take(&mut self.drained)
            || self
                .last_reading
                .is_some_and(|at| at.elapsed() > 2 * CHECK_INTERVAL)
        {
            self.start_afresh();
        }
        self.group.clone()
    }
}

impl Applier {
    /// Replaces the consumer when a partition it holds had messages waiting
    /// at the same position at the last check too (see the module doc).
    pub(super) async fn check_for_stall(&mut self) {
        let Some(group) = self.stall.due() else {
            return;
        };
        let reading = tokio::task::spawn_blocking(move || group.positions());
        let positions = match tokio::time::timeout(READ_TIMEOUT, reading).await {
            Ok(Ok(Ok(positions))) => positions,
            Ok(Ok(Err(error))) => {
                debug!(%error, "reading the applier's partitions failed; checked again later");
                self.stall.start_afresh();
                return;
            }
            Ok(Err(_)) | Err(_) => {
                self.stall.start_afresh();
                return;
            }
        };
        self.stall.last_reading = Some(Instant::now());
        let stalled = self.stall.watch.check(&self.standings(&positions));
        if !stalled.is_empty() {
            warn!(partitions = ?stalled, seconds = CHECK_INTERVAL.as_secs(), "the Kafka consumer holds partitions with messages waiting and fetched nothing from them between two checks; replacing it");
            self.renew_consumer();
        }
    }

    /// The held partitions of the change topic: the first offset not
    /// applied (committed, or applied and not yet committed) and the end.
    fn standings(&self, positions: &BTreeMap<i32, Position>) -> Vec<Standing> {
        let topic = self.config.kafka.topic.as_str();
        let Ok(held) = self.consumer.assignment() else {
            return Vec::new();
        };
        held.elements()
            .iter()
            .filter(|e| e.topic() == topic)
            .filter_map(|e| {
                let position = positions.get(&e.partition())?;
                let key = (topic.to_string(), e.partition());
                let applied = self.offsets.next.get(&key).copied().unwrap_or(0);
                Some(Standing {
                    next: position.read_up_to.max(applied),
                    end: position.end,
                    partition: key,
                })
            })
            .collect()
    }

    /// A new consumer in place of the stalled one. What was applied is
    /// committed first, without waiting (little is delivered again; what
    /// is, the conflict rule makes harmless). The old consumer leaves the
    /// group in the background: closing waits on the broker, unbounded.
    fn renew_consumer(&mut self) {
        let fresh = match subscribed_consumer(&self.config) {
            Ok(fresh) => fresh,
            Err(error) => {
                warn!(%error, "cannot make a new Kafka consumer; keeping the stalled one and checking again later");
                return;
            }
        };
        if let Err(error) = self.send_offsets(CommitMode::Async) {
            debug!(%error, "committing offsets before replacing the consumer failed");
        }
        let stalled = std::mem::replace(&mut self.consumer, fresh);
        self.offsets.next.clear();
        self.stall.start_afresh();
        metrics().consumer_renewals.inc();
        tokio::task::spawn_blocking(move || drop(stalled));
    }
}
