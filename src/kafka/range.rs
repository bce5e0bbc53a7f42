//! Reading a stretch of the change topic with a throwaway consumer: from
//! the beginning or a point in time up to the high watermarks taken at
//! the start, never committing anything (so the applier group's offsets
//! stay where they are). What `replay` reads.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{client_error, consumer_in_group, KafkaSetupError};
use crate::config::KafkaConfig;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where reading starts.
#[derive(Debug, Clone, Copy)]
pub enum StartAt {
    Beginning,
    /// The first message at or after this time (the broker's timestamps).
    Since(SystemTime),
}

/// A stretch of a topic being read.
pub struct TopicRange {
    consumer: StreamConsumer,
    /// Partition to its end (the high watermark at the start); a partition
    /// leaves when its last message was read.
    remaining: HashMap<i32, i64>,
    /// Messages in the stretch, for progress.
    pub total: u64,
}

impl TopicRange {
    /// Assigns every partition of `topic` from `start` to its current end.
    pub fn open(
        config: &KafkaConfig,
        topic: &str,
        start: StartAt,
    ) -> Result<TopicRange, KafkaSetupError> {
        let to_error = |e| client_error(config)(e);
        let consumer = throwaway_consumer(config)?;
        let partitions =
            tokio::task::block_in_place(|| partitions_of(&consumer, topic)).map_err(|reason| {
                KafkaSetupError::Topic {
                    topic: topic.to_string(),
                    reason,
                }
            })?;
        let mut ends = HashMap::new();
        let mut starts = TopicPartitionList::new();
        for partition in partitions {
            let (low, high) = tokio::task::block_in_place(|| {
                consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            })
            .map_err(&to_error)?;
            ends.insert(partition, (low, high));
            let offset = match start {
                StartAt::Beginning => Offset::Beginning,
                StartAt::Since(time) => Offset::Offset(unix_millis(time)),
            };
            starts
                .add_partition_offset(topic, partition, offset)
                .map_err(&to_error)?;
        }
        if let StartAt::Since(_) = start {
            starts = tokio::task::block_in_place(|| {
                consumer.offsets_for_times(starts, METADATA_TIMEOUT)
            })
            .map_err(&to_error)?;
        }
        let mut remaining = HashMap::new();
        let mut total = 0;
        for element in starts.elements() {
            let (low, high) = ends[&element.partition()];
            let first = match element.offset() {
                Offset::Offset(offset) => offset.max(low),
                Offset::Beginning => low,
                _ => high, // nothing at or after the time
            };
            if first < high {
                remaining.insert(element.partition(), high);
                total += (high - first) as u64;
            }
        }
        consumer.assign(&starts).map_err(&to_error)?;
        Ok(TopicRange {
            consumer,
            remaining,
            total,
        })
    }

    /// Up to `max` next messages (fewer when the end is near or nothing
    /// came within `wait`); empty once the stretch is read.
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OwnedMessage>, rdkafka::error::KafkaError> {
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while !self.remaining.is_empty() && batch.len() < max {
            let received = tokio::time::timeout_at(deadline, self.consumer.recv()).await;
            let Ok(message) = received else {
                break;
            };
            let message = message?.detach();
            let Some(end) = self.remaining.get(&message.partition()).copied() else {
                continue; // a partition already read to its end
            };
            if message.offset() + 1 >= end {
                self.remaining.remove(&message.partition());
            }
            if message.offset() < end {
                batch.push(message);
            }
        }
        Ok(batch)
    }

    pub fn is_done(&self) -> bool {
        self.remaining.is_empty()
    }
}

/// A consumer of a group of its own, which nothing else uses and which
/// never commits.
fn throwaway_consumer(config: &KafkaConfig) -> Result<StreamConsumer, KafkaSetupError> {
    let group = format!(
        "{}.replay.{}.{}",
        config.consumer_group,
        std::process::id(),
        unix_millis(SystemTime::now())
    );
    consumer_in_group(config, &group)
}

fn partitions_of(consumer: &StreamConsumer, topic: &str) -> Result<Vec<i32>, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err("the topic does not exist or has no partitions; check kafka.topic".into());
    }
    Ok(partitions)
}

fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
