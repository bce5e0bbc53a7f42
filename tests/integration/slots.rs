//! Replication slots: a lost slot is detected and recovered, an idle slot
//! does not hold WAL, and a huge transaction flows with bounded memory.

use std::time::{Duration, Instant};

use crate::support::{
    confirmed_lsn, current_lsn, eventually, eventually_within, wait_streaming, TestEnv,
};

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

/// Rows of the big transaction, and the bytes of CSS in each: more than
/// the reader's in-flight cap (`kafka::delivery::MAX_IN_FLIGHT`), and
/// change events of about 2.3 kB, some 280 MB in all, so a bridge that held
/// the transaction (rather than its events in flight) would break the
/// bound. (A million rows took about two minutes here with the debug
/// build, four with the triggers on; the healthy local broker acknowledges
/// as fast as the reader sends, so no size makes the cap itself bind.)
const BIG_TRANSACTION_ROWS: i64 = 120_000;
const CSS_BYTES: i64 = 1_500;

/// Peak resident memory the bridge may reach meanwhile.
const PEAK_RSS_MIB: u64 = 200;

/// The tenant is paused, so the applier reads every event and skips it:
/// every one of the rows would go to the same landlord row (one row per
/// tenant there), and that many applies of one row would make this the
/// slowest test without testing more. The rows are loaded past the
/// bridge's triggers (`session_replication_role`): their per-row key lock
/// and probe make a bulk insert of this size take minutes, and what is
/// measured here is the bridge.
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_of_120k_large_rows_flows_through_with_bounded_memory() {
    let env = TestEnv::new("bigtxn", 1).await;
    for command in [&["setup"][..], &["direction", "set", "1", "paused"]] {
        let (ok, output) = env.bridge_command(command);
        assert!(ok, "{output}");
    }
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    let before = env.topic.size();
    let tenant = env.tenant(0).await;
    let started = Instant::now();
    tenant
        .batch_execute(&format!(
            "BEGIN; SET LOCAL session_replication_role = replica;
             INSERT INTO tenant_brandings (id, primary_color, custom_css)
             SELECT i, '#800000', repeat('a', {CSS_BYTES}) FROM generate_series(2, {BIG_TRANSACTION_ROWS} + 1) i;
             COMMIT;"
        ))
        .await
        .unwrap();
    let inserted = started.elapsed();
    let end = current_lsn(&tenant).await;
    eventually_within(
        Duration::from_secs(300),
        "every row of the transaction in Kafka and the transaction confirmed",
        || async {
            let in_kafka = env.topic.size() - before;
            let confirmed = confirmed_lsn(&tenant).await.unwrap_or(0);
            (in_kafka >= BIG_TRANSACTION_ROWS && confirmed >= end).then_some(())
        },
    )
    .await;
    env.wait_applier_caught_up().await;
    let peak_mib = bridge.peak_rss_kib() / 1024;
    println!(
        "{BIG_TRANSACTION_ROWS}-row transaction: inserted in {inserted:?}, in Kafka and read by the applier {:?} later; bridge peak RSS {peak_mib} MiB",
        started.elapsed() - inserted
    );
    assert!(
        peak_mib <= PEAK_RSS_MIB,
        "memory stays bounded: {peak_mib} MiB"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
