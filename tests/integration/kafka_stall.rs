//! The applier's watch for partitions it holds and does not fetch
//! (`kafka::stall`), on the real broker: a group with messages waiting and
//! nothing fetched is stalled at the second check; one that consumed and
//! committed is not. (librdkafka's own failure, a partition left without a
//! fetcher after a coordinator moved, cannot be caused on purpose; a
//! paused consumer holds its partitions the same way.)

use std::time::Duration;

use cdc_bridge::config::Config;
use cdc_bridge::kafka::lag::GroupLag;
use cdc_bridge::kafka::stall::{StallWatch, Standing};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};

use crate::support::{kafka_brokers, unique_prefix, Topic};

fn standings(group: &GroupLag, topic: &str) -> Vec<Standing> {
    group
        .positions()
        .expect("positions of the group")
        .into_iter()
        .map(|(partition, position)| Standing {
            partition: (topic.to_string(), partition),
            next: position.read_up_to,
            end: position.end,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_that_holds_waiting_messages_without_fetching_them_is_stalled_at_the_second_check()
{
    let name = unique_prefix("stall");
    let config = Config::parse(&format!(
        "[landlord]\ndsn = \"host=x\"\n[tenants]\nconnection_template = \"dbname={{database_name}}\"\n\
         [[table]]\nname = \"tenant_brandings\"\n\
         [kafka]\nbrokers = \"{}\"\ntopic = \"{name}\"\npartitions = 2\nconsumer_group = \"{name}_group\"\n",
        kafka_brokers()
    ))
    .expect("test configuration");
    cdc_bridge::kafka::ensure_topic(&config.kafka)
        .await
        .expect("topic");
    let topic = Topic::new(&kafka_brokers(), &name);
    for key in ["1", "2", "3", "4"] {
        topic.produce(key, b"{}").await;
    }

    // A member of the group that holds both partitions, paused.
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", &config.kafka.consumer_group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut held = TopicPartitionList::new();
    held.add_partition(&name, 0);
    held.add_partition(&name, 1);
    member.assign(&held).unwrap();
    member.pause(&held).unwrap();

    let group = GroupLag::new(&config.kafka, &name, &config.kafka.consumer_group).unwrap();
    let mut watch = StallWatch::default();
    let first = standings(&group, &name);
    assert_eq!(
        first.iter().map(|s| s.end - s.next).sum::<i64>(),
        4,
        "every message waits: {first:?}"
    );
    assert!(watch.check(&first).is_empty(), "first sight is no stall");
    let mut stalled = watch.check(&standings(&group, &name));
    stalled.sort();
    let waiting: Vec<_> = first
        .iter()
        .filter(|s| s.end > s.next)
        .map(|s| s.partition.clone())
        .collect();
    assert_eq!(stalled, waiting, "the partitions with messages waiting");

    // Fetched, applied and committed: nothing waits any more.
    member.resume(&held).unwrap();
    let mut consumed = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while consumed < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "consumed {consumed} of 4"
        );
        if let Some(message) = member.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            member
                .store_offset(message.topic(), message.partition(), message.offset())
                .ok();
            consumed += 1;
        }
    }
    member.commit_consumer_state(CommitMode::Sync).unwrap();
    let caught_up = standings(&group, &name);
    assert!(caught_up.iter().all(|s| s.next == s.end), "{caught_up:?}");
    assert!(watch.check(&caught_up).is_empty());
    assert!(watch.check(&caught_up).is_empty());
    cdc_bridge::kafka::delete_topics(&config.kafka).await.ok();
}
