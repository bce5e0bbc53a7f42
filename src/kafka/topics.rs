//! The bridge's topics: the change topic and the dead-letter topic,
//! created by `setup` (and `run`) if missing, checked to carry the largest
//! event the bridge may send, and deleted by `teardown --delete-topics`.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::client::{base_config, client_error, request_limit, KafkaSetupError};
use crate::config::KafkaConfig;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

fn admin(config: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, KafkaSetupError> {
    base_config(config).create().map_err(client_error(config))
}

fn topic_error(topic: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaSetupError + '_ {
    move |e| KafkaSetupError::Topic {
        topic: topic.to_string(),
        reason: e.to_string(),
    }
}

/// Creates the change topic and the dead-letter topic if they do not exist
/// (idempotent; dead letters are kept until deleted by hand), then checks
/// that both take events of `kafka.max_message_bytes`.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<(), KafkaSetupError> {
    let admin = admin(config)?;
    let retention = config.retention_ms.to_string();
    let max_message = request_limit(config).to_string();
    let dead_letter_topic = config.dead_letter_topic();
    let changes = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", &config.cleanup_policy)
    .set("retention.ms", &retention)
    .set("max.message.bytes", &max_message);
    let dead_letters = NewTopic::new(
        &dead_letter_topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", "delete")
    .set("retention.ms", "-1")
    .set("max.message.bytes", &max_message);
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics([&changes, &dead_letters], &options)
        .await
        .map_err(topic_error(&config.topic))?;
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
    for topic in [config.topic.as_str(), dead_letter_topic.as_str()] {
        check_message_size(&admin, config, topic).await?;
    }
    Ok(())
}

/// A topic made before (by hand, or by an older bridge) may refuse large
/// events; the bridge would then stall on the first one. Fail at start
/// instead, saying what to change. (The bridge does not alter the topic
/// itself: Kafka's AlterConfigs replaces every other override too.)
async fn check_message_size(
    admin: &AdminClient<DefaultClientContext>,
    config: &KafkaConfig,
    topic: &str,
) -> Result<(), KafkaSetupError> {
    let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .map_err(topic_error(topic))?;
    let needed = request_limit(config);
    for resource in described.into_iter().flatten() {
        let accepted = resource
            .entry_map()
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(accepted) = accepted.filter(|a| *a < needed) {
            return Err(KafkaSetupError::Topic {
                topic: topic.to_string(),
                reason: format!(
                    "it takes messages up to {accepted} bytes but kafka.max_message_bytes = {} needs {needed}; \
                     raise it (kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config max.message.bytes={needed}) \
                     or lower kafka.max_message_bytes",
                    config.max_message_bytes
                ),
            });
        }
    }
    Ok(())
}

/// Deletes the change topic and the dead-letter topic (`teardown
/// --delete-topics`); a topic that does not exist is no error.
pub async fn delete_topics(config: &KafkaConfig) -> Result<(), KafkaSetupError> {
    let admin = admin(config)?;
    let dead_letter_topic = config.dead_letter_topic();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .delete_topics(
            &[config.topic.as_str(), dead_letter_topic.as_str()],
            &options,
        )
        .await
        .map_err(topic_error(&config.topic))?;
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
