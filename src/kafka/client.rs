//! Kafka adapters: an idempotent `acks=all` producer for the reader, a
//! manually committed consumer for the applier, and topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
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

fn client_error(config: &KafkaConfig) -> impl FnOnce(KafkaError) -> KafkaSetupError + '_ {
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
    // Retried forever: the LSN is not confirmed until Kafka has the event.
    let forced = [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("message.timeout.ms", "0"),
    ];
    client_config(config, &defaults, &forced)
        .create_with_context(KafkaContext)
        .map_err(client_error(config))
}

/// The applier's consumer: offsets are stored and committed by hand, after
/// the target database transaction committed.
pub fn consumer(config: &KafkaConfig) -> Result<StreamConsumer, KafkaSetupError> {
    // A crashed applier's partitions move to a new one after the session
    // timeout; the broker default (45 s) would stall applying that long.
    let defaults = [
        ("session.timeout.ms", "10000"),
        ("auto.offset.reset", "earliest"),
    ];
    let forced = [
        ("group.id", config.consumer_group.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "false"),
    ];
    client_config(config, &defaults, &forced)
        .create()
        .map_err(client_error(config))
}

/// Creates the change topic and the dead-letter topic if they do not
/// exist (idempotent). Dead letters are kept until deleted by hand.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(config).create().map_err(client_error(config))?;
    let retention = config.retention_ms.to_string();
    let dead_letter_topic = config.dead_letter_topic();
    let changes = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", &config.cleanup_policy)
    .set("retention.ms", &retention);
    let dead_letters = NewTopic::new(
        &dead_letter_topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", "delete")
    .set("retention.ms", "-1");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&changes, &dead_letters], &options)
        .await
        .map_err(|e| KafkaSetupError::Topic {
            topic: config.topic.clone(),
            reason: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaSetupError::Topic {
                    topic: name,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Deletes the change topic and the dead-letter topic (`teardown
/// --delete-topics`); a topic that does not exist is no error.
pub async fn delete_topics(config: &KafkaConfig) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(config).create().map_err(client_error(config))?;
    let dead_letter_topic = config.dead_letter_topic();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .delete_topics(
            &[config.topic.as_str(), dead_letter_topic.as_str()],
            &options,
        )
        .await
        .map_err(|e| KafkaSetupError::Topic {
            topic: config.topic.clone(),
            reason: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => {
                return Err(KafkaSetupError::Topic {
                    topic: name,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}
