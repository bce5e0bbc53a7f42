//! Kafka: the client settings and topics, delivering change events with
//! their acknowledgements tracked per transaction, and the dead-letter topic.

mod client;
pub(crate) mod dead_letter;
pub(crate) mod delivery;
pub mod lag;
pub(crate) mod progress;
pub(crate) mod range;
pub mod stall;
mod topics;

pub(crate) use client::{base_config, class_of_kafka, consumer};
pub use client::{producer, KafkaSetupError, Producer};
pub use topics::{delete_topics, ensure_topic};
