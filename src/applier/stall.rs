//! Whether the applier's consumer fetches every partition it holds (see
//! `kafka::stall` for why it may not). Every `CHECK_INTERVAL`, between
//! batches, the consumer itself reads its group's committed offsets and
//! the held partitions' ends, off the runtime; a held partition with
//! messages waiting at the same position at two checks in a row gets the
//! consumer replaced.
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
use rdkafka::TopicPartitionList;
use tracing::{debug, warn};

use super::consume::subscribed_consumer;
use super::Applier;
use crate::kafka::lag::{positions_in, Position};
use crate::kafka::stall::{StallWatch, Standing};
use crate::runtime::metrics::metrics;

/// How often the applier checks that it fetches every partition it holds.
const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Longest wait for one reading of the group's positions.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The watch for partitions held and not fetched.
#[derive(Default)]
pub(super) struct StallCheck {
    watch: StallWatch,
    /// When the last check ran, and when the watch last took a reading.
    last_check: Option<Instant>,
    last_reading: Option<Instant>,
    /// The consumer had nothing more to give at some point since then.
    drained: bool,
}

impl StallCheck {
    /// The consumer's local queue was empty when a batch was taken.
    pub(super) fn drained(&mut self) {
        self.drained = true;
    }

    /// Forget the readings so far (a failed batch, a failed reading).
    pub(super) fn start_afresh(&mut self) {
        self.watch.reset();
        self.last_reading = None;
    }

    /// Whether a check is due now (and the readings so far still count).
    fn due(&mut self) -> bool {
        let now = Instant::now();
        let last = *self.last_check.get_or_insert(now);
        if now - last < CHECK_INTERVAL {
            return false;
        }
        self.last_check = Some(now);
        let drained = std::mem::take(&mut self.drained);
        if !comparable(drained, self.last_reading.map(|at| at.elapsed())) {
            self.start_afresh();
        }
        true
    }
}

/// Whether the last reading may be set against the next one: the consumer
/// drained its queue in between, and the reading is recent.
fn comparable(drained: bool, last_reading_age: Option<Duration>) -> bool {
    drained && last_reading_age.is_none_or(|age| age <= 2 * CHECK_INTERVAL)
}

impl Applier {
    /// Replaces the consumer when a partition it holds had messages waiting
    /// at the same position at the last check too (see the module doc).
    pub(super) async fn check_for_stall(&mut self) {
        if !self.stall.due() {
            return;
        }
        let topic = self.config.kafka.topic.clone();
        let mut held = TopicPartitionList::new();
        for element in self.consumer.assignment().unwrap_or_default().elements() {
            if element.topic() == topic {
                held.add_partition(&topic, element.partition());
            }
        }
        if held.count() == 0 {
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let reading = tokio::task::spawn_blocking(move || positions_in(&*consumer, &topic, held));
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

    /// The held partitions read: the first offset not applied (committed,
    /// or applied and not yet committed) and the end.
    fn standings(&self, positions: &BTreeMap<i32, Position>) -> Vec<Standing> {
        let topic = &self.config.kafka.topic;
        positions
            .iter()
            .map(|(&partition, position)| {
                let key = (topic.clone(), partition);
                let applied = self.offsets.next.get(&key).copied().unwrap_or(0);
                Standing {
                    next: position.read_up_to.max(applied),
                    end: position.end,
                    partition: key,
                }
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
        let stalled = std::mem::replace(&mut self.consumer, Arc::new(fresh));
        self.offsets.next.clear();
        self.stall.start_afresh();
        metrics().consumer_renewals.inc();
        tokio::task::spawn_blocking(move || drop(stalled));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_compared_only_across_a_drained_queue_and_a_recent_reading() {
        let cases = [
            (true, None, true),
            (true, Some(CHECK_INTERVAL), true),
            (true, Some(2 * CHECK_INTERVAL), true),
            (
                true,
                Some(2 * CHECK_INTERVAL + Duration::from_secs(1)),
                false,
            ),
            (false, Some(CHECK_INTERVAL), false),
            (false, None, false),
        ];
        for (drained, age, expected) in cases {
            assert_eq!(
                comparable(drained, age),
                expected,
                "drained {drained}, age {age:?}"
            );
        }
    }
}
