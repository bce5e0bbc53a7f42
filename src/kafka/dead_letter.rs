//! The dead-letter topic: a message that can never be applied (not JSON, an
//! unknown envelope version, a tenant the registry does not know, a value
//! the target type rejects) is copied there with its reason and original
//! bytes, counted, and skipped, so it does not block its partition. After a
//! fix, `cdc-bridge dead-letters redrive` sends them back to the change topic.

use std::sync::OnceLock;
use std::time::Duration;

use crate::kafka::Producer;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use tracing::error;

use crate::config::KafkaConfig;
use crate::kafka::{self, KafkaSetupError};
use crate::runtime::metrics::{count_events, EventOutcome};

/// Header carrying the reason a message was dead-lettered.
pub const REASON_HEADER: &str = "cdc-bridge-error";
/// Header carrying `topic/partition/offset` of the original message (or
/// `reader/<database>/<lsn>` for a notice).
pub const SOURCE_HEADER: &str = "cdc-bridge-source";
/// Header marking a dead letter that holds no message to re-drive.
pub const KIND_HEADER: &str = "cdc-bridge-kind";
/// `KIND_HEADER` of a notice about an event too large to send.
pub const KIND_OVERSIZED: &str = "oversized";

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("Kafka did not take the dead letter for {topic}: {source}")]
    Produce {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
}

/// Writes dead letters (and waits until Kafka has them, so that skipping
/// the original loses nothing).
pub struct DeadLetters {
    /// Made at the first dead letter: an idle producer is not free (its
    /// polling thread wakes ten times a second, and spins through the last
    /// millisecond of each wait), and most processes never need this one.
    producer: OnceLock<Producer>,
    config: KafkaConfig,
    topic: String,
}

impl DeadLetters {
    /// The producer comes with the first dead letter (its settings are
    /// those of the process's other Kafka clients, made at start).
    pub fn new(config: &KafkaConfig) -> Result<Self, DeadLetterError> {
        Ok(DeadLetters {
            producer: OnceLock::new(),
            config: config.clone(),
            topic: config.dead_letter_topic(),
        })
    }

    fn producer(&self) -> Result<&Producer, DeadLetterError> {
        if let Some(producer) = self.producer.get() {
            return Ok(producer);
        }
        let producer = kafka::producer(&self.config)?;
        Ok(self.producer.get_or_init(|| producer))
    }

    pub async fn send(&self, message: &OwnedMessage, reason: &str) -> Result<(), DeadLetterError> {
        let source = format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        error!(%source, %reason, dead_letter_topic = %self.topic, "message cannot be applied; sent to the dead-letter topic");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: REASON_HEADER,
                value: Some(reason),
            })
            .insert(Header {
                key: SOURCE_HEADER,
                value: Some(&source),
            });
        let mut record = FutureRecord::to(&self.topic)
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.producer()?
            .send(record, Duration::from_secs(0))
            .await
            .map_err(|(source, _)| DeadLetterError::Produce {
                topic: self.topic.clone(),
                source,
            })?;
        count_events(EventOutcome::DeadLetter, 1);
        Ok(())
    }
}

/// Sends every dead letter not re-driven yet back to the change topic.
/// Returns how many were re-driven.
pub async fn redrive(config: &KafkaConfig) -> Result<u64, DeadLetterError> {
    let producer = kafka::producer(config)?;
    let config = config.clone();
    let letters = tokio::task::spawn_blocking(move || read_pending(&config))
        .await
        .map_err(|e| {
            DeadLetterError::Setup(KafkaSetupError::Topic {
                topic: "dead letters".into(),
                reason: e.to_string(),
            })
        })??;
    let mut count = 0;
    for (consumer_commit, message) in &letters.messages {
        if is_notice(message) {
            // A notice about an event too large to send holds no event:
            // nothing to re-drive (the row syncs again once it is smaller,
            // or the limit larger, through `check --repair` or a new write).
            letters
                .consumer
                .commit(consumer_commit, CommitMode::Sync)
                .map_err(|source| DeadLetterError::Produce {
                    topic: letters.dead_letter_topic.clone(),
                    source,
                })?;
            continue;
        }
        let mut record =
            FutureRecord::to(&letters.change_topic).payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        producer
            .send(record, Duration::from_secs(0))
            .await
            .map_err(|(source, _)| DeadLetterError::Produce {
                topic: letters.change_topic.clone(),
                source,
            })?;
        letters
            .consumer
            .commit(consumer_commit, CommitMode::Sync)
            .map_err(|source| DeadLetterError::Produce {
                topic: letters.dead_letter_topic.clone(),
                source,
            })?;
        count += 1;
    }
    Ok(count)
}

fn is_notice(message: &OwnedMessage) -> bool {
    use rdkafka::message::Headers;
    message.headers().is_some_and(|headers| {
        headers
            .iter()
            .any(|h| h.key == KIND_HEADER && h.value == Some(KIND_OVERSIZED.as_bytes()))
    })
}

struct Pending {
    consumer: BaseConsumer,
    change_topic: String,
    dead_letter_topic: String,
    messages: Vec<(TopicPartitionList, OwnedMessage)>,
}

/// Reads the dead-letter topic from the redrive group's position to its end.
fn read_pending(config: &KafkaConfig) -> Result<Pending, DeadLetterError> {
    let topic = config.dead_letter_topic();
    let setup_error = |e: rdkafka::error::KafkaError| {
        DeadLetterError::Setup(KafkaSetupError::Client {
            brokers: config.brokers.clone(),
            source: e,
        })
    };
    let mut client = kafka::base_config(config);
    client
        .set("group.id", format!("{}.redrive", config.consumer_group))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = client.create().map_err(setup_error)?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(&topic), timeout)
        .map_err(setup_error)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for partition in partitions {
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition, timeout)
            .map_err(setup_error)?;
        ends.insert(partition, high);
        assignment.add_partition(&topic, partition);
    }
    let committed = consumer
        .committed_offsets(assignment, timeout)
        .map_err(setup_error)?;
    let mut start = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        start
            .add_partition_offset(&topic, element.partition(), offset)
            .map_err(setup_error)?;
        if let Offset::Offset(o) = offset {
            if o >= ends[&element.partition()] {
                ends.remove(&element.partition());
            }
        }
    }
    ends.retain(|_, high| *high > 0);
    consumer.assign(&start).map_err(setup_error)?;
    let mut messages = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = result.map_err(setup_error)?.detach();
        let mut commit = TopicPartitionList::new();
        commit
            .add_partition_offset(
                &topic,
                message.partition(),
                Offset::Offset(message.offset() + 1),
            )
            .map_err(setup_error)?;
        if message.offset() + 1 >= ends.get(&message.partition()).copied().unwrap_or(0) {
            ends.remove(&message.partition());
        }
        messages.push((commit, message));
    }
    Ok(Pending {
        consumer,
        change_topic: config.topic.clone(),
        dead_letter_topic: topic,
        messages,
    })
}
