//! Kafka adapters: an idempotent `acks=all` producer for the reader, a
//! manually committed consumer for the applier, and topic creation.

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::runtime::retry::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot create Kafka client for {brokers}: {source}; check kafka.brokers and kafka.client settings")]
    Client { brokers: String, source: KafkaError },
    #[error(
        "cannot create topic {topic}: {reason}; create it by hand or check broker permissions"
    )]
    Topic { topic: String, reason: String },
}

/// Whether retrying can help, from librdkafka's error code: broker,
/// network and timeout trouble pass; a message the broker can never take,
/// missing authorisation or a bad configuration need an operator.
pub(crate) fn class_of_kafka(error: &KafkaError) -> ErrorClass {
    use RDKafkaErrorCode::*;
    match error.rdkafka_error_code() {
        Some(
            MessageSizeTooLarge
            | InvalidMessageSize
            | MessageBatchTooLarge
            | InvalidRecord
            | TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed
            | SaslAuthenticationFailed
            | Authentication
            | InvalidConfig
            | InvalidTopic
            | UnknownTopic,
        ) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

/// Client settings in three layers: our tunable defaults, then the user's
/// `kafka.client` pass-through, then the settings correctness depends on,
/// which the user cannot override.
fn client_config(
    config: &KafkaConfig,
    defaults: &[(&str, &str)],
    forced: &[(&str, &str)],
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (key, value) in defaults {
        client.set(*key, *value);
    }
    for (key, value) in config.client.expose() {
        client.set(key, value);
    }
    for (key, value) in forced {
        client.set(*key, *value);
    }
    client
}

/// Brokers plus the user's `kafka.client` settings, for any other client.
pub(crate) fn base_config(config: &KafkaConfig) -> ClientConfig {
    client_config(config, &[], &[])
}

pub(super) fn client_error(
    config: &KafkaConfig,
) -> impl FnOnce(KafkaError) -> KafkaSetupError + '_ {
    move |source| KafkaSetupError::Client {
        brokers: config.brokers.clone(),
        source,
    }
}

/// Client context that turns librdkafka's connection errors into the
/// `cdc_kafka_up` metric (and so the health endpoint); a successful
/// delivery sets it back (see `delivery`).
#[derive(Clone, Default)]
pub struct KafkaContext;

impl ClientContext for KafkaContext {
    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode::{AllBrokersDown, BrokerTransportFailure};
        if matches!(
            error.rdkafka_error_code(),
            Some(AllBrokersDown | BrokerTransportFailure)
        ) {
            crate::runtime::metrics::metrics().kafka_up.set(0);
        }
        tracing::warn!(%error, reason, "Kafka client error");
    }
}

/// The producer type used everywhere.
pub type Producer = FutureProducer<KafkaContext>;

/// The reader's producer: idempotent, every write acknowledged by all
/// in-sync replicas, retried forever (the LSN is not confirmed until then).
pub fn producer(config: &KafkaConfig) -> Result<Producer, KafkaSetupError> {
    let defaults = [
        ("linger.ms", "5"),
        ("compression.type", "lz4"),
        ("queue.buffering.max.messages", "200000"),
    ];
    let max_request = request_limit(config).to_string();
    // Retried forever: the LSN is not confirmed until Kafka has the event.
    let forced = [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("message.timeout.ms", "0"),
        ("message.max.bytes", max_request.as_str()),
    ];
    client_config(config, &defaults, &forced)
        .create_with_context(KafkaContext)
        .map_err(client_error(config))
}

/// Room for the largest event plus the protocol's framing, for the
/// producer's requests and the topics' batches.
pub(crate) fn request_limit(config: &KafkaConfig) -> usize {
    config.max_message_bytes + 64 * 1024
}

/// The applier's consumer: offsets are stored and committed by hand, after
/// the target database transaction committed.
pub fn consumer(config: &KafkaConfig) -> Result<StreamConsumer, KafkaSetupError> {
    consumer_in_group(config, &config.consumer_group)
}

/// A consumer with the applier's settings in consumer group `group`
/// (replay uses a throwaway one).
pub(super) fn consumer_in_group(
    config: &KafkaConfig,
    group: &str,
) -> Result<StreamConsumer, KafkaSetupError> {
    // A crashed applier's partitions move to a new one after the session
    // timeout; the broker default (45 s) would stall applying that long.
    let fetch_max = (request_limit(config).max(52_428_800)).to_string();
    let receive_max = (request_limit(config).max(52_428_800) + 1024 * 1024).to_string();
    let defaults = [
        ("session.timeout.ms", "10000"),
        // Several instances share the topic: a joining or leaving one moves
        // only the partitions that change hands, the others keep applying.
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("auto.offset.reset", "earliest"),
        ("fetch.max.bytes", fetch_max.as_str()),
        ("receive.message.max.bytes", receive_max.as_str()),
    ];
    let forced = [
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "false"),
    ];
    client_config(config, &defaults, &forced)
        .create()
        .map_err(client_error(config))
}
