//! A Kafka outage: the bridge keeps running, reports itself degraded,
//! confirms nothing it has not delivered, and catches up with nothing lost.
//! The broker stopped here is the test's own: stopping the shared one
//! would disturb the tests running in parallel.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{
    eventually, eventually_within, http_request, landlord_color, offset, set_tenant_color,
    wait_streaming, OwnKafka, TestEnv,
};

/// An LSN as a number, from PostgreSQL's `X/X` text form.
fn lsn(text: &str) -> u64 {
    let (high, low) = text.split_once('/').expect("an LSN is X/X");
    (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
}

async fn confirmed_lsn(env: &TestEnv) -> String {
    env.tenant(0)
        .await
        .query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE database = current_database()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_outage_degrades_health_confirms_nothing_new_and_catches_up() {
    let kafka = OwnKafka::new(offset::OUTAGE_KAFKA);
    let env = TestEnv::with_kafka("kafkadown", 1, kafka.brokers()).await;
    env.set_http("");
    set_tenant_color(&env, 0, "#400000").await;
    let mut bridge = env.start_bridge();
    let port = bridge.http_port().await;
    // The outage must find both halves working. A row that existed before
    // the start proves nothing (the applier reconciles it straight from the
    // databases, without the topic); a change made now has to pass through
    // Kafka and the applier's consumer.
    wait_streaming(&bridge, 2).await;
    set_tenant_color(&env, 0, "#4fffff").await;
    eventually("a change through Kafka on the landlord", || async {
        (landlord_color(&env, 0).await.as_deref() == Some("#4fffff")).then_some(())
    })
    .await;
    eventually("healthy", || async {
        http_request(port, "GET", "/health", None, "")
            .await
            .filter(|r| r.contains(" 200 "))
    })
    .await;

    kafka.stop();
    let outage_writes: Vec<String> = (1..=20).map(|i| format!("#4{i:05}")).collect();
    for color in &outage_writes {
        set_tenant_color(&env, 0, color).await;
    }
    eventually("health reports Kafka down", || async {
        http_request(port, "GET", "/health", None, "")
            .await
            .filter(|r| r.contains(" 503 ") && r.contains("Kafka unreachable"))
    })
    .await;
    // Time to confirm what it must not, if it would. The confirmed position
    // only moves forward, so this is the furthest it got during the outage.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let confirmed_in_outage = confirmed_lsn(&env).await;

    kafka.start();
    // The restarted broker reloads its coordinators first; allow for it.
    let catch_up = Duration::from_secs(180);
    eventually_within(
        catch_up,
        "every write applied after Kafka is back",
        || async { (landlord_color(&env, 0).await.as_deref() == Some("#400020")).then_some(()) },
    )
    .await;
    eventually_within(catch_up, "healthy again", || async {
        http_request(port, "GET", "/health", None, "")
            .await
            .filter(|r| r.contains(" 200 "))
    })
    .await;

    // Nothing undelivered was confirmed: the slot stayed at or before the
    // first outage write's commit. (Other tests write to the same server
    // meanwhile, so the slot may well have moved up to it, as idle slots do.)
    let outage_writes: BTreeSet<String> = outage_writes.into_iter().collect();
    env.topic
        .wait_colors(&outage_writes, "every outage write in Kafka")
        .await;
    let first_outage_commit = env
        .topic
        .change_events()
        .iter()
        .filter(|e| {
            e["columns"]["primary_color"]["value"]
                .as_str()
                .is_some_and(|color| outage_writes.contains(color))
        })
        .map(|e| e["origin"]["lsn"].as_str().expect("origin.lsn").to_string())
        .min_by_key(|commit| lsn(commit))
        .unwrap();
    assert!(
        lsn(&confirmed_in_outage) <= lsn(&first_outage_commit),
        "nothing undelivered is confirmed: {confirmed_in_outage} confirmed during the outage, past the first outage commit at {first_outage_commit}"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
