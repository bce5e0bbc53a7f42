//! The Kafka side of the applier: batches in, offsets out (only after the
//! target transactions committed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::{Applier, ApplierError};
use crate::config::Config;
use crate::kafka;

impl Applier {
    /// The next messages; empty when none came within the refresh interval
    /// (so registry and direction changes are noticed on an idle topic).
    pub(super) async fn next_batch(&mut self) -> Result<Vec<OwnedMessage>, ApplierError> {
        let idle = tokio::time::Instant::now() + self.config.tenants.rediscover_interval;
        let first = loop {
            match tokio::time::timeout_at(idle, self.consumer.recv()).await {
                Ok(Ok(message)) => break message.detach(),
                Ok(Err(error)) => consumer_trouble(error).await,
                Err(_) => {
                    self.stall.drained();
                    return Ok(Vec::new());
                }
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
        if batch.has_room() {
            self.stall.drained();
        }
        Ok(batch.messages)
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

    pub(super) fn send_offsets(&mut self, mode: CommitMode) -> Result<(), ApplierError> {
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

/// How often the applier commits its offsets at most.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The next offset to commit per partition, and when offsets last went out.
#[derive(Default)]
pub(super) struct Offsets {
    pub(super) next: BTreeMap<(String, i32), i64>,
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
