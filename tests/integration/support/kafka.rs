//! Kafka as the tests see it: a topic on a given broker, read back from
//! the beginning or produced to as a foreign producer would.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::{eventually, DEADLINE};

/// The shared broker of the test stack (`scripts/test.sh` exports it).
pub(crate) fn kafka_brokers() -> String {
    std::env::var("CDC_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:29192".into())
}

/// How long one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A topic, and the broker it lives on (not every test uses the shared one).
#[derive(Clone, Debug)]
pub(crate) struct Topic {
    pub(crate) brokers: String,
    pub(crate) name: String,
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.name, self.brokers)
    }
}

/// A message as read back: payload and the dead-letter reason header.
pub(crate) struct RawMessage {
    pub(crate) payload: Vec<u8>,
    pub(crate) reason: Option<String>,
}

impl Topic {
    pub(crate) fn new(brokers: &str, name: &str) -> Topic {
        Topic {
            brokers: brokers.to_string(),
            name: name.to_string(),
        }
    }

    /// The dead-letter topic that goes with this change topic (the
    /// configured default, `{topic}.dlq`).
    pub(crate) fn dead_letters(&self) -> Topic {
        Topic::new(&self.brokers, &format!("{}.dlq", self.name))
    }

    fn consumer(&self) -> BaseConsumer {
        self.consumer_in("test-reader")
    }

    /// A consumer that never joins `group` (it only reads offsets or is
    /// assigned partitions), so it cannot disturb the group's members.
    fn consumer_in(&self, group: &str) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap()
    }

    /// Whether the broker knows the topic.
    pub(crate) fn exists(&self) -> bool {
        let metadata = self
            .consumer()
            .fetch_metadata(Some(&self.name), REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot read the metadata of topic {self}: {e}"));
        metadata
            .topics()
            .iter()
            .any(|t| t.error().is_none() && !t.partitions().is_empty())
    }

    /// Whether consumer group `group` has committed, on every partition,
    /// the offset the partition ends at now: the group's consumer handled
    /// every message the topic holds.
    pub(crate) fn consumed_to_end_by(&self, group: &str) -> bool {
        let consumer = self.consumer_in(group);
        let mut ends = HashMap::new();
        let mut list = TopicPartitionList::new();
        for partition in self.partitions(&consumer) {
            let (low, high) = self.watermarks(&consumer, partition);
            if high > low {
                ends.insert(partition, high);
                list.add_partition(&self.name, partition);
            }
        }
        if ends.is_empty() {
            return true;
        }
        let committed = consumer
            .committed_offsets(list, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot read the offsets of group {group} on {self}: {e}"));
        committed.elements().iter().all(|element| {
            matches!(element.offset(), Offset::Offset(at) if at >= ends[&element.partition()])
        })
    }

    /// The topic's partition ids; fails if the broker does not know it
    /// (the bridge creates its topics before any reader streams).
    fn partitions(&self, consumer: &BaseConsumer) -> Vec<i32> {
        let metadata = consumer
            .fetch_metadata(Some(&self.name), REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot read the metadata of topic {self}: {e}"));
        let topic = &metadata.topics()[0];
        if let Some(error) = topic.error() {
            panic!(
                "topic {self} is not readable: {}",
                RDKafkaErrorCode::from(error)
            );
        }
        assert!(
            !topic.partitions().is_empty(),
            "topic {self} has no partitions"
        );
        topic.partitions().iter().map(|p| p.id()).collect()
    }

    fn watermarks(&self, consumer: &BaseConsumer, partition: i32) -> (i64, i64) {
        consumer
            .fetch_watermarks(&self.name, partition, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot read the offsets of topic {self}: {e}"))
    }

    /// Every message in the topic, from the beginning up to the end it had
    /// when called. Fails if the topic does not exist or if not every
    /// message arrives within the deadline: a partial answer would let a
    /// test check less than it claims.
    pub(crate) fn messages(&self) -> Vec<RawMessage> {
        let consumer = self.consumer();
        let mut ends = HashMap::new();
        let mut list = TopicPartitionList::new();
        for partition in self.partitions(&consumer) {
            let (low, high) = self.watermarks(&consumer, partition);
            if high > low {
                ends.insert(partition, high);
                list.add_partition_offset(&self.name, partition, Offset::Offset(low))
                    .unwrap();
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return out;
        }
        consumer.assign(&list).unwrap();
        let start = Instant::now();
        while !ends.is_empty() {
            assert!(
                start.elapsed() < DEADLINE,
                "topic {self}: read {} messages in {DEADLINE:?}, but partitions (and end offsets) {ends:?} not to their end",
                out.len()
            );
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.unwrap_or_else(|e| panic!("reading topic {self}: {e}"));
            // Messages that arrived after the call belong to the next read.
            let Some(&end) = ends.get(&message.partition()) else {
                continue;
            };
            if message.offset() < end {
                let reason = message.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "cdc-bridge-error")
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                });
                out.push(RawMessage {
                    payload: message.payload().unwrap_or_default().to_vec(),
                    reason,
                });
            }
            if message.offset() + 1 >= end {
                ends.remove(&message.partition());
            }
        }
        out
    }

    /// Every envelope in the topic (see `messages`).
    pub(crate) fn envelopes(&self) -> Vec<serde_json::Value> {
        self.messages()
            .iter()
            .map(|m| {
                serde_json::from_slice(&m.payload)
                    .unwrap_or_else(|e| panic!("a message of topic {self} is not JSON: {e}"))
            })
            .collect()
    }

    /// Change events (not snapshots) in the topic.
    pub(crate) fn change_events(&self) -> Vec<serde_json::Value> {
        self.envelopes()
            .into_iter()
            .filter(|e| e["op"] != "snapshot")
            .collect()
    }

    /// Waits until every one of `colors` is in a change event of the topic.
    pub(crate) async fn wait_colors(&self, colors: &BTreeSet<String>, what: &str) {
        eventually(what, || async {
            let seen: BTreeSet<String> = self
                .change_events()
                .iter()
                .filter_map(|e| {
                    e["columns"]["primary_color"]["value"]
                        .as_str()
                        .map(String::from)
                })
                .collect();
            colors.is_subset(&seen).then_some(())
        })
        .await;
    }

    /// The offsets `group` has committed on this topic, by partition.
    pub(crate) fn committed(&self, group: &str) -> Vec<(i32, String)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for partition in self.partitions(&consumer) {
            list.add_partition(&self.name, partition);
        }
        let committed = consumer
            .committed_offsets(list, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot read group {group}'s offsets on {self}: {e}"));
        committed
            .elements()
            .iter()
            .map(|e| (e.partition(), format!("{:?}", e.offset())))
            .collect()
    }

    /// Whether `group` has committed every partition up to its end: every
    /// message in the topic now has been applied.
    pub(crate) fn consumed_by(&self, group: &str) -> bool {
        let consumer = self.consumer();
        let ends: Vec<String> = self
            .partitions(&consumer)
            .into_iter()
            .map(|p| match self.watermarks(&consumer, p).1 {
                // A partition without messages has nothing to commit.
                0 => "Invalid".to_string(),
                high => format!("Offset({high})"),
            })
            .collect();
        let committed: Vec<String> = self.committed(group).into_iter().map(|(_, o)| o).collect();
        ends == committed
    }

    /// Messages in the topic (sum of its partitions' high watermarks).
    pub(crate) fn size(&self) -> i64 {
        let consumer = self.consumer();
        self.partitions(&consumer)
            .into_iter()
            .map(|partition| self.watermarks(&consumer, partition).1)
            .sum()
    }

    /// Produces one message (as a foreign producer would) and waits for Kafka.
    pub(crate) async fn produce(&self, key: &str, payload: &[u8]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        producer
            .send(
                FutureRecord::to(&self.name).key(key).payload(payload),
                REQUEST_TIMEOUT,
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("cannot produce to topic {self}: {e}"));
    }
}
