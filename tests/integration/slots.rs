//! Replication slots: a lost slot is detected and recovered, an idle slot
//! does not hold WAL, and a huge transaction flows with bounded memory.

use crate::support::{eventually, wait_streaming, TestEnv};

async fn slot_state(env: &TestEnv) -> (i64, String) {
    let row = env
        .tenant(0)
        .await
        .query_one(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, confirmed_flush_lsn::text
               FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_slot_is_detected_and_recovered_by_a_fresh_snapshot() {
    let env = TestEnv::new("lostslot", 1).await;
    let tenant = env.tenant(0).await;
    tenant
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#700000')",
            &[],
        )
        .await
        .unwrap();
    let mut bridge = env.start_bridge();
    eventually("synced", || async {
        env.landlord_row(0)
            .await
            .filter(|r| r.text("primary_color").as_deref() == Some("#700000"))
    })
    .await;
    assert!(bridge.stop().success());

    tenant
        .batch_execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()")
        .await
        .unwrap();
    tenant
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#700001' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();

    let mut bridge = env.start_bridge();
    eventually(
        "the change made without a slot arrives through the new snapshot",
        || async {
            env.landlord_row(0)
                .await
                .filter(|r| r.text("primary_color").as_deref() == Some("#700001"))
        },
    )
    .await;
    assert!(
        bridge
            .log_text()
            .contains("replication slot no longer exists"),
        "the loss is reported"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_slot_does_not_retain_wal_while_other_tables_write() {
    let env = TestEnv::new("idleslot", 1).await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    let tenant = env.tenant(0).await;
    tenant
        .batch_execute("CREATE TABLE noise (id serial PRIMARY KEY, payload text)")
        .await
        .unwrap();
    let (_, before) = slot_state(&env).await;
    for _ in 0..20 {
        tenant
            .batch_execute("INSERT INTO noise (payload) SELECT repeat('x', 200) FROM generate_series(1, 10000)")
            .await
            .unwrap();
    }
    // About 50 MB of WAL went by; none of it is ours, so the slot follows.
    let (retained, after) = eventually(
        "the idle slot's confirmed position follows the WAL",
        || async {
            let (retained, confirmed) = slot_state(&env).await;
            (retained < 1_000_000).then_some((retained, confirmed))
        },
    )
    .await;
    println!("idle slot: confirmed {before} -> {after}, retained {retained} bytes");
    assert_ne!(before, after);
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_of_100k_rows_flows_through_with_bounded_memory() {
    let env = TestEnv::new("bigtxn", 1).await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    let before = env.topic.size();
    let tenant = env.tenant(0).await;
    tenant
        .batch_execute(
            "INSERT INTO tenant_brandings (id, primary_color, custom_css)
             SELECT i, '#800000', repeat('a', 100) FROM generate_series(2, 100001) i",
        )
        .await
        .unwrap();
    let commit: String = tenant
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    eventually(
        "every row of the transaction is in Kafka and the LSN confirmed",
        || async {
            let (retained, _) = slot_state(&env).await;
            let in_kafka = env.topic.size() - before;
            (in_kafka >= 100_000 && retained < 1_000_000).then_some(())
        },
    )
    .await;
    let peak_mib = bridge.peak_rss_kib() / 1024;
    println!("100k-row transaction ({commit}): bridge peak RSS {peak_mib} MiB");
    assert!(peak_mib < 1024, "memory stays bounded: {peak_mib} MiB");
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
