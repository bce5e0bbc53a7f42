//! How far a consumer group is behind a topic: per partition, the high
//! watermark minus the group's committed offset (minus the low watermark
//! where the group has committed nothing: all of it is still to read).
//! The applier's group on the change topic is the sync backlog; the
//! redrive group on the dead-letter topic is the dead letters waiting.
//!
//! The calls block on the broker: run them in `spawn_blocking`.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{base_config, client_error};
use super::KafkaSetupError;
use crate::config::KafkaConfig;

/// How long one broker call may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Reads one group's lag on one topic; the client is kept between reads.
pub struct GroupLag {
    consumer: BaseConsumer,
    topic: String,
    brokers: String,
}

impl GroupLag {
    /// A reader of `group`'s position on `topic`; it never joins the group.
    pub fn new(config: &KafkaConfig, topic: &str, group: &str) -> Result<Self, KafkaSetupError> {
        let mut client = base_config(config);
        client
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        Ok(GroupLag {
            consumer: client.create().map_err(client_error(config))?,
            topic: topic.to_string(),
            brokers: config.brokers.clone(),
        })
    }

    /// Messages not yet consumed, by partition.
    pub fn read(&self) -> Result<BTreeMap<i32, i64>, KafkaSetupError> {
        Ok(self
            .positions()?
            .into_iter()
            .map(|(partition, p)| (partition, (p.end - p.read_up_to).max(0)))
            .collect())
    }

    /// Where the group stands in each partition of the topic.
    pub fn positions(&self) -> Result<BTreeMap<i32, Position>, KafkaSetupError> {
        let failed = |source| KafkaSetupError::Client {
            brokers: self.brokers.clone(),
            source,
        };
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), TIMEOUT)
            .map_err(failed)?;
        let mut partitions = TopicPartitionList::new();
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                partitions.add_partition(&self.topic, partition.id());
            }
        }
        positions_in(&self.consumer, &self.topic, partitions).map_err(failed)
    }
}

/// Where `consumer`'s group stands in `partitions` (of `topic`): its
/// committed offsets and the partitions' ends, from the broker.
pub fn positions_in<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    topic: &str,
    partitions: TopicPartitionList,
) -> KafkaResult<BTreeMap<i32, Position>> {
    let committed = consumer.committed_offsets(partitions, TIMEOUT)?;
    let mut positions = BTreeMap::new();
    for element in committed.elements() {
        let (low, end) = consumer.fetch_watermarks(topic, element.partition(), TIMEOUT)?;
        let read_up_to = match element.offset() {
            Offset::Offset(offset) => offset.max(low),
            _ => low,
        };
        positions.insert(element.partition(), Position { read_up_to, end });
    }
    Ok(positions)
}

/// A group's place in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The first offset the group has not committed (the partition's
    /// start where it has committed nothing).
    pub read_up_to: i64,
    /// The partition's high watermark: the offset its next message gets.
    pub end: i64,
}
