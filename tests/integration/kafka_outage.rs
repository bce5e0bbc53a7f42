//! A Kafka outage: the bridge keeps running, reports itself degraded,
//! confirms nothing it has not delivered, and catches up with nothing lost.
//! (Its own test binary: stopping the broker would disturb parallel tests.)

use crate::support;
use std::time::Duration;

use crate::support::{eventually, landlord_color, set_tenant_color, TestEnv};

/// Stops or starts the test stack's Kafka broker (scripts/test.sh exports
/// STACK_DIR and KAFKA_PORT for this).
fn kafka(command: &str) {
    let stack_dir = std::env::var("STACK_DIR").expect("STACK_DIR is set by scripts/test.sh");
    let status =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack.sh"))
            .arg(command)
            .env("STACK_DIR", stack_dir)
            .status()
            .unwrap();
    assert!(status.success(), "stack.sh {command}");
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
    let env = TestEnv::new("kafkadown", 1).await;
    let port = support::http_port(0);
    support::set_http(&env, port, "");
    set_tenant_color(&env, 0, "#400000").await;
    let mut bridge = env.start_bridge();
    eventually("tenant on the landlord", || async {
        (landlord_color(&env, 0).await.is_some()).then_some(())
    })
    .await;
    eventually("healthy", || async {
        support::http_request(port, "GET", "/health", None, "")
            .await
            .filter(|r| r.contains(" 200 "))
    })
    .await;

    kafka("stop-kafka");
    let before = confirmed_lsn(&env).await;
    for i in 1..=20 {
        set_tenant_color(&env, 0, &format!("#4{i:05}")).await;
    }
    eventually("health reports Kafka down", || async {
        support::http_request(port, "GET", "/health", None, "")
            .await
            .filter(|r| r.contains(" 503 ") && r.contains("Kafka unreachable"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        confirmed_lsn(&env).await,
        before,
        "nothing undelivered is confirmed"
    );

    kafka("start-kafka");
    // The restarted broker reloads its coordinators first; allow for it.
    let catch_up = Duration::from_secs(180);
    support::eventually_within(
        catch_up,
        "every write applied after Kafka is back",
        || async { (landlord_color(&env, 0).await.as_deref() == Some("#400020")).then_some(()) },
    )
    .await;
    support::eventually_within(catch_up, "healthy again", || async {
        support::http_request(port, "GET", "/health", None, "")
            .await
            .filter(|r| r.contains(" 200 "))
    })
    .await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
