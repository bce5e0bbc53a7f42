//! A Kafka outage: the bridge keeps running, reports itself degraded,
//! confirms nothing it has not delivered, and catches up with nothing lost.
//! The broker stopped here is the test's own: stopping the shared one
//! would disturb the tests running in parallel.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{
    confirmed_lsn, current_lsn, eventually, eventually_within, http_request, landlord_color, lsn,
    lsn_text, offset, set_tenant_color, wait_streaming, OwnKafka, TestEnv,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_outage_degrades_health_confirms_nothing_new_and_catches_up() {
    let _heavy = crate::support::HEAVY.lock().await;
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
    // The start-up reconcile may have carried that change too (it reads the
    // tenant's rows, not the topic): a batch proves the consumer got
    // messages from Kafka, so it had joined its group before the outage.
    bridge
        .wait_metric("cdc_applier_batch_size_count", |batches| batches >= 1.0)
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
    bridge.wait_metric("cdc_kafka_up", |up| up == 0.0).await;
    // The reader got the outage writes and reported its position since: if
    // it confirmed what Kafka has not acknowledged, it has by now. The
    // confirmed position only moves forward, so this is the furthest it
    // got during the outage.
    let tenant_db = &env.tenants[0].database;
    let after_writes = current_lsn(&env.tenant(0).await).await;
    env.wait_reader_answered_past(tenant_db, after_writes).await;
    let confirmed_in_outage = confirmed_lsn(&env.tenant(0).await).await.unwrap();

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
    bridge.wait_metric("cdc_kafka_up", |up| up == 1.0).await;

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
        confirmed_in_outage <= lsn(&first_outage_commit),
        "nothing undelivered is confirmed: {} confirmed during the outage, past the first outage commit at {first_outage_commit}",
        lsn_text(confirmed_in_outage)
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
