//! Stopping and crashing the bridge during a stream of writes loses nothing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{eventually, TestEnv};

/// Records every version the applier writes to the landlord, so the test
/// can check that each source write arrived (not only the last one).
const APPLIED_LOG: &str = "
    CREATE TABLE applied_log (tenant_db_id bigint, primary_color text);
    CREATE FUNCTION log_applied() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO applied_log VALUES (NEW.tenant_db_id, NEW.primary_color); RETURN NEW; END $$;
    CREATE TRIGGER log_applied AFTER INSERT OR UPDATE ON tenant_brandings
        FOR EACH ROW EXECUTE FUNCTION log_applied();";

#[tokio::test(flavor = "multi_thread")]
async fn stopping_and_killing_the_bridge_during_writes_loses_no_write() {
    let env = TestEnv::new("restart", 1).await;
    env.landlord()
        .await
        .batch_execute(APPLIED_LOG)
        .await
        .unwrap();
    env.tenant(0)
        .await
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#000000')",
            &[],
        )
        .await
        .unwrap();
    let mut bridge = env.start_bridge();
    // Writes made before the slot exists are covered by the snapshot (latest
    // value only); this test is about writes made while the bridge runs.
    eventually("reader streaming", || async {
        bridge.log_text().contains("streaming").then_some(())
    })
    .await;

    let writes = 600u32;
    let database = env.tenants[0].database.clone();
    let writer = tokio::spawn(async move {
        let client = common::connect(&database).await;
        for i in 1..=writes {
            let color = format!("#{i:06}");
            client
                .execute(
                    "UPDATE tenant_brandings SET primary_color = $1 WHERE id = 1",
                    &[&color],
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    // A clean stop and a crash, each followed by a restart, while writes go on.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        bridge.stop().success(),
        "clean stop failed: {}",
        bridge.log_text()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    bridge = env.start_bridge();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    bridge.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    bridge = env.start_bridge();
    writer.await.unwrap();

    let expected: BTreeSet<String> = (1..=writes).map(|i| format!("#{i:06}")).collect();
    let landlord = env.landlord().await;
    eventually("every write applied to the landlord", || async {
        let rows = landlord
            .query("SELECT DISTINCT primary_color FROM applied_log", &[])
            .await
            .unwrap();
        let seen: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
        expected.is_subset(&seen).then_some(())
    })
    .await;
    let last = env.landlord_row(0).await.unwrap();
    assert_eq!(last.text("primary_color"), Some(format!("#{writes:06}")));
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
