//! The Kafka side of the applier: batches in, offsets out (only after the
//! target transactions committed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::{Applier, ApplierError};
use crate::config::{Config, KafkaConfig};
use crate::kafka;
use crate::kafka::lag::{GroupLag, Position};
use crate::kafka::stall::{StallWatch, Standing};
use crate::runtime::metrics::metrics;

impl Applier {
    /// The next messages; empty when none came within the refresh interval
    /// (so registry and direction changes are noticed on an idle topic).
    pub(super) async fn next_batch(&self) -> Result<Vec<OwnedMessage>, ApplierError> {
        let idle = tokio::time::Instant::now() + self.config.tenants.rediscover_interval;
        let first = loop {
            match tokio::time::timeout_at(idle, self.consumer.recv()).await {
                Ok(Ok(message)) => break message.detach(),
                Ok(Err(error)) => consumer_trouble(error).await,
                Err(_) => return Ok(Vec::new()),
            }
        };
        let mut batch = BatchFill::new(&self.config.applier, first);
        // Whatever arrived meanwhile joins at once: under load batches grow
        // by themselves while the previous one is applied, without waiting.
        while batch.has_room() {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(message.detach()),
                Some(Err(_)) | None => break,
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.applier.batch_wait;
        while batch.has_room() {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                // What was received so far is applied; the error shows again.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(batch.messages)
    }

    /// Every `STALL_CHECK_INTERVAL`: replaces the consumer when a partition
    /// it holds had messages waiting at the same position at the last
    /// check too (librdkafka left it without a fetcher, see
    /// `kafka::stall`). The readings block on the broker, off the runtime.
    pub(super) async fn check_for_stall(&mut self) -> Result<(), ApplierError> {
        if self.stall.last.elapsed() < STALL_CHECK_INTERVAL {
            return Ok(());
        }
        self.stall.last = Instant::now();
        let Some(group) = self.stall.group.clone() else {
            return Ok(());
        };
        let positions = match tokio::task::spawn_blocking(move || group.positions()).await {
            Ok(Ok(positions)) => positions,
            Ok(Err(error)) => {
                tracing::debug!(%error, "reading the applier's partitions failed; checked again later");
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        let stalled = self.stall.watch.check(&self.standings(&positions));
        if !stalled.is_empty() {
            warn!(partitions = ?stalled, seconds = STALL_CHECK_INTERVAL.as_secs(), "the Kafka consumer holds partitions with messages waiting and fetched nothing from them between two checks; replacing it");
            self.renew_consumer().await?;
        }
        Ok(())
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

    /// A new consumer in place of the stalled one, which leaves the group
    /// (what was applied is committed first, so little is delivered again).
    async fn renew_consumer(&mut self) -> Result<(), ApplierError> {
        self.flush_offsets();
        let fresh = subscribed_consumer(&self.config)?;
        let stalled = std::mem::replace(&mut self.consumer, fresh);
        self.offsets.next.clear();
        self.stall.watch.reset();
        metrics().consumer_renewals.inc();
        // Leaving the group waits on the broker.
        let _ = tokio::task::spawn_blocking(move || drop(stalled)).await;
        Ok(())
    }

    /// Notes, per partition, the offset after the batch's last message,
    /// and commits the offsets noted so far without waiting for the
    /// broker's answer (a round trip per batch took longer than applying
    /// it), at most every `COMMIT_INTERVAL` (tiny batches would otherwise
    /// queue commits faster than the broker takes them) and whenever the
    /// topic is idle (`batch` empty). `flush_offsets` waits for the broker
    /// at shutdown. A commit that is lost or late only means redelivery,
    /// which the conflict rule makes harmless; an offset is never noted
    /// before its batch is in the databases.
    pub(super) fn commit_offsets(&mut self, batch: &[OwnedMessage]) -> Result<(), ApplierError> {
        for m in batch {
            let entry = self
                .offsets
                .next
                .entry((m.topic().to_string(), m.partition()))
                .or_insert(0);
            *entry = (*entry).max(m.offset() + 1);
            self.offsets.dirty = true;
        }
        let due = self
            .offsets
            .sent
            .is_none_or(|at| at.elapsed() >= COMMIT_INTERVAL);
        if self.offsets.dirty && (due || batch.is_empty()) {
            self.send_offsets(CommitMode::Async)?;
        }
        Ok(())
    }

    /// Commits what is noted and waits for the broker (at shutdown, so a
    /// restart does not redeliver what was applied).
    pub(super) fn flush_offsets(&mut self) {
        if self.offsets.dirty {
            if let Err(error) = self.send_offsets(CommitMode::Sync) {
                warn!(%error, "committing Kafka offsets at shutdown failed; the last batches may be redelivered");
            }
        }
    }

    fn send_offsets(&mut self, mode: CommitMode) -> Result<(), ApplierError> {
        // A partition that moved to another instance is that instance's to
        // commit: an offset noted here before the move would take the
        // group back (the broker does not check who owns a partition).
        if let Ok(assigned) = self.consumer.assignment() {
            let assigned: std::collections::HashSet<(String, i32)> = assigned
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            self.offsets.next.retain(|key, _| assigned.contains(key));
        }
        if self.offsets.next.is_empty() {
            self.offsets.dirty = false;
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.offsets.next {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        if let Err(error) = self.consumer.commit(&list, mode) {
            warn!(%error, "committing Kafka offsets failed; the batches since the last commit may be redelivered");
        }
        self.offsets.dirty = false;
        self.offsets.sent = Some(Instant::now());
        Ok(())
    }
}

/// A batch being filled, within `applier.batch_size` messages and
/// `applier.batch_max_bytes` (the first message always joins).
struct BatchFill {
    messages: Vec<OwnedMessage>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl BatchFill {
    fn new(config: &crate::config::ApplierConfig, first: OwnedMessage) -> Self {
        let mut fill = BatchFill {
            messages: Vec::new(),
            bytes: 0,
            max_messages: config.batch_size,
            max_bytes: config.batch_max_bytes,
        };
        fill.push(first);
        fill
    }

    fn push(&mut self, message: OwnedMessage) {
        self.bytes +=
            message.payload().map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len);
        self.messages.push(message);
    }

    fn has_room(&self) -> bool {
        self.messages.len() < self.max_messages && self.bytes < self.max_bytes
    }
}

/// The applier's consumer, subscribed to the change topic.
pub(super) fn subscribed_consumer(config: &Config) -> Result<StreamConsumer, ApplierError> {
    let consumer = kafka::consumer(&config.kafka)?;
    consumer.subscribe(&[config.kafka.topic.as_str()])?;
    Ok(consumer)
}

/// How often the applier checks that it fetches every partition it holds.
const STALL_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The watch for partitions held and not fetched (see `kafka::stall`).
pub(super) struct StallCheck {
    /// Reads the group's committed offsets and the partitions' ends
    /// (`None` if it could not be made: the check is then off).
    group: Option<Arc<GroupLag>>,
    watch: StallWatch,
    last: Instant,
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
            last: Instant::now(),
        }
    }
}

/// How often the applier commits its offsets at most.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The next offset to commit per partition, and when offsets last went out.
#[derive(Default)]
pub(super) struct Offsets {
    next: BTreeMap<(String, i32), i64>,
    /// Noted since the last commit.
    dirty: bool,
    sent: Option<Instant>,
}

/// A consumer error (Kafka unreachable, a rebalance) is not fatal: librdkafka
/// reconnects by itself, so poll again. The errors of an outage queue up
/// and arrive together afterwards; they are taken as fast as they come (a
/// pause per error would reach the revocation and new assignment that
/// follow a long outage only minutes later), with a short pause only so a
/// steady stream of errors cannot spin.
async fn consumer_trouble(error: rdkafka::error::KafkaError) {
    tracing::debug!(%error, "Kafka consumer error; polling again");
    tokio::time::sleep(CONSUMER_ERROR_PAUSE).await;
}

/// See `consumer_trouble`.
const CONSUMER_ERROR_PAUSE: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use rdkafka::message::OwnedHeaders;
    use rdkafka::Timestamp;

    use super::*;
    use crate::config::ApplierConfig;

    fn message(bytes: usize) -> OwnedMessage {
        OwnedMessage::new(
            Some(vec![b'x'; bytes]),
            Some(b"1".to_vec()),
            "changes".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(OwnedHeaders::new()),
        )
    }

    fn limits(batch_size: usize, batch_max_bytes: usize) -> ApplierConfig {
        ApplierConfig {
            batch_size,
            batch_max_bytes,
            ..ApplierConfig::default()
        }
    }

    #[test]
    fn a_batch_stops_growing_at_its_message_count() {
        let mut fill = BatchFill::new(&limits(3, 1 << 20), message(10));
        fill.push(message(10));
        assert!(fill.has_room());
        fill.push(message(10));
        assert!(!fill.has_room());
    }

    #[test]
    fn a_batch_stops_growing_once_its_messages_hold_the_byte_bound() {
        let mut fill = BatchFill::new(&limits(5_000, 1_000), message(599));
        assert!(fill.has_room(), "600 bytes of 1,000");
        fill.push(message(399));
        assert!(
            !fill.has_room(),
            "key and payload bytes count: 1,000 of 1,000"
        );
    }

    #[test]
    fn a_message_larger_than_the_byte_bound_still_makes_a_batch_of_its_own() {
        let fill = BatchFill::new(&limits(5_000, 100), message(10_000));
        assert_eq!(fill.messages.len(), 1);
        assert!(!fill.has_room());
    }
}
