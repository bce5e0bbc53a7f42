//! Stopping and crashing the bridge during a stream of writes loses nothing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{self, eventually, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn stopping_and_killing_the_bridge_during_writes_loses_no_write() {
    let env = TestEnv::new("restart", 1).await;
    support::set_tenant_color(&env, 0, "#000000").await;
    let mut bridge = env.start_bridge();
    // Writes made before the slot exists are covered by the snapshot (latest
    // value only); this test is about writes made while the bridge runs.
    support::wait_streaming(&bridge, 2).await;

    let writes = 600u32;
    let done = Arc::new(AtomicU32::new(0));
    let database = env.tenants[0].database.clone();
    let writer = tokio::spawn({
        let done = Arc::clone(&done);
        async move {
            let client = support::connect(&database).await;
            for i in 1..=writes {
                let color = format!("#{i:06}");
                client
                    .execute(
                        "UPDATE tenant_brandings SET primary_color = $1 WHERE id = 1",
                        &[&color],
                    )
                    .await
                    .unwrap();
                done.store(i, Ordering::SeqCst);
                // A steady stream, not a burst.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let after_write = |n: u32| {
        let done = Arc::clone(&done);
        async move {
            eventually(&format!("write {n} made"), || async {
                (done.load(Ordering::SeqCst) >= n).then_some(())
            })
            .await
        }
    };

    // A clean stop and a crash, each followed by a restart, while writes
    // go on (also while the bridge is down).
    after_write(100).await;
    assert!(
        bridge.stop().success(),
        "clean stop failed: {}",
        bridge.log_text()
    );
    after_write(150).await;
    bridge = env.start_bridge();
    after_write(300).await;
    bridge.kill();
    after_write(350).await;
    bridge = env.start_bridge();
    writer.await.unwrap();

    // Kafka is the durable history: every write must be in the topic.
    let expected: BTreeSet<String> = (1..=writes).map(|i| format!("#{i:06}")).collect();
    env.topic
        .wait_colors(&expected, "every write in the Kafka topic")
        .await;
    // And the landlord ends at the last write. Intermediate versions may be
    // skipped as stale when a restarted applier catches up from the tenant's
    // current row, which is the conflict rule working, not a loss.
    let landlord = env.landlord().await;
    eventually("the last write applied", || async {
        let row = landlord
            .query_opt("SELECT primary_color::text FROM tenant_brandings", &[])
            .await
            .unwrap()?;
        (row.get::<_, Option<String>>(0) == Some(format!("#{writes:06}"))).then_some(())
    })
    .await;
    let last = env.landlord_row(0).await.unwrap();
    assert_eq!(last.text("primary_color"), Some(format!("#{writes:06}")));
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

/// The `origin.lsn` (commit position) of the change event that carries
/// `color`.
fn commit_of(env: &TestEnv, color: &str) -> u64 {
    let events = env.topic.change_events();
    let event = events
        .iter()
        .find(|e| e["columns"]["primary_color"]["value"] == color)
        .unwrap_or_else(|| panic!("no change event with {color}: {events:#?}"));
    support::lsn(event["origin"]["lsn"].as_str().expect("origin.lsn"))
}

/// Status updates are a minute apart here, so only the stop itself can
/// confirm the last changes.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_confirms_the_last_changes_and_leaves_no_offset_uncommitted() {
    let env = TestEnv::new("sigterm", 1).await;
    env.replace_in_config("status_interval_ms = 200", "status_interval_ms = 60000");
    let mut bridge = env.start_bridge();
    support::wait_streaming(&bridge, 2).await;
    support::set_tenant_color(&env, 0, "#e00001").await;
    eventually("the tenant change on the landlord", || async {
        (support::landlord_color(&env, 0).await.as_deref() == Some("#e00001")).then_some(())
    })
    .await;
    support::set_landlord_color(&env, 0, "#e00002").await;
    eventually("the landlord change on the tenant", || async {
        (support::tenant_color(&env, 0).await.as_deref() == Some("#e00002")).then_some(())
    })
    .await;
    let slots = [
        (env.tenant(0).await, commit_of(&env, "#e00001")),
        (env.landlord().await, commit_of(&env, "#e00002")),
    ];
    for (client, commit) in &slots {
        let confirmed = support::confirmed_lsn(client).await.unwrap();
        assert!(
            confirmed <= *commit,
            "confirmed before the stop ({} past {}): the test would prove nothing",
            support::lsn_text(confirmed),
            support::lsn_text(*commit)
        );
    }

    let status = bridge.stop();
    assert!(status.success(), "{}", bridge.log_text());
    assert_eq!(
        bridge.log_lines_with(&["reader stopped cleanly"]),
        2,
        "{}",
        bridge.log_text()
    );
    for (client, commit) in &slots {
        let confirmed = support::confirmed_lsn(client).await.unwrap();
        assert!(
            confirmed > *commit,
            "the stop confirmed the last change: {} confirmed, its commit at {}",
            support::lsn_text(confirmed),
            support::lsn_text(*commit)
        );
    }
    assert!(
        env.topic.consumed_to_end_by(&env.consumer_group()),
        "every applied offset committed"
    );
}
