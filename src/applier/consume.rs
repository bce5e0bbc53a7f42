//! The Kafka side of the applier: batches in, offsets out (only after the
//! target transactions committed).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::{Applier, ApplierError};

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
        let mut batch = vec![first];
        let limit = self.config.applier.batch_size;
        // Whatever arrived meanwhile joins at once: under load batches grow
        // by themselves while the previous one is applied, without waiting.
        while batch.len() < limit {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(message.detach()),
                Some(Err(_)) | None => break,
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.applier.batch_wait;
        while batch.len() < limit {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                // What was received so far is applied; the error shows again.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Commits, per partition, the offset after the batch's last message.
    pub(super) fn commit_offsets(&self, batch: &[OwnedMessage]) -> Result<(), ApplierError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in batch {
            let entry = next
                .entry((m.topic().to_string(), m.partition()))
                .or_insert(0);
            *entry = (*entry).max(m.offset() + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            list.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Sync) {
            // The batch is in the databases; a lost offset commit only means
            // redelivery, which the conflict rule makes harmless.
            warn!(%error, "committing Kafka offsets failed; the batch may be redelivered");
        }
        Ok(())
    }
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
