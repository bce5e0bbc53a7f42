//! Both directions, loop prevention and last-writer-wins, on real
//! PostgreSQL and real Kafka.

use std::collections::BTreeSet;

use crate::support::{
    self, eventually, log_writes, sample, wait_streaming, write_count, Bridge, TestEnv,
};

async fn landlord_has(env: &TestEnv, color: Option<&str>) {
    let what = format!("landlord row is {color:?}");
    eventually(&what, || async {
        let row = env.landlord_row(0).await;
        (row.and_then(|r| r.text("primary_color")).as_deref() == color).then_some(())
    })
    .await;
}

async fn tenant_has(env: &TestEnv, color: Option<&str>) {
    let what = format!("tenant row is {color:?}");
    eventually(&what, || async {
        let row = env.tenant_row(0).await;
        (row.and_then(|r| r.text("primary_color")).as_deref() == color).then_some(())
    })
    .await;
}

async fn landlord_exists(env: &TestEnv, exists: bool) {
    eventually("landlord row presence", || async {
        (env.landlord_row(0).await.is_some() == exists).then_some(())
    })
    .await;
}

async fn tenant_exists(env: &TestEnv, exists: bool) {
    eventually("tenant row presence", || async {
        (env.tenant_row(0).await.is_some() == exists).then_some(())
    })
    .await;
}

/// The series counting the echoes the reader of `database` dropped.
fn echoes_of(database: &str) -> String {
    format!("cdc_reader_echo_suppressed_total{{database=\"{database}\"}}")
}

/// Echoes dropped so far by the reader of `database`.
async fn echo_count(bridge: &Bridge, database: &str) -> f64 {
    sample(&bridge.metrics().await, &echoes_of(database)).unwrap_or(0.0)
}

/// What a step of the conversation must leave once it settled.
struct Quiet<'a> {
    /// Where the applier wrote the step's change: its reader must drop the
    /// echo (one more than `echoes_before`).
    applied_to: &'a str,
    echoes_before: f64,
    /// Change events in the topic, and rows in the two write logs.
    events: usize,
    landlord_writes: i64,
    tenant_writes: i64,
}

/// The echo of the apply was dropped, and once everything settled (an
/// echo would have reached the topic and been applied by now, see
/// `TestEnv::wait_settled`) the counts are exactly the expected ones.
async fn quiet_with(env: &TestEnv, bridge: &Bridge, expected: Quiet<'_>) {
    let before = expected.echoes_before;
    bridge
        .wait_metric(&echoes_of(expected.applied_to), |n| n > before)
        .await;
    env.wait_settled().await;
    let seen = env.topic.change_events();
    assert_eq!(
        seen.len(),
        expected.events,
        "exactly one event per application write: {seen:#?}"
    );
    assert_eq!(
        write_count(&env.landlord().await).await,
        expected.landlord_writes,
        "landlord writes"
    );
    assert_eq!(
        write_count(&env.tenant(0).await).await,
        expected.tenant_writes,
        "tenant writes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_write_on_either_side_is_one_event_and_one_apply_and_then_quiet() {
    let env = TestEnv::new("loopfree", 1).await;
    env.set_http("");
    let (landlord, tenant) = (env.landlord().await, env.tenant(0).await);
    env.bridge_command(&["setup"]);
    log_writes(&landlord).await;
    log_writes(&tenant).await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    let (landlord_db, tenant_db) = (env.landlord_db.as_str(), env.tenants[0].database.as_str());
    let step = |applied_to, echoes_before, n| Quiet {
        applied_to,
        echoes_before,
        events: n,
        landlord_writes: n as i64,
        tenant_writes: n as i64,
    };

    let echoes = echo_count(&bridge, landlord_db).await;
    tenant
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#000001')",
            &[],
        )
        .await
        .unwrap();
    landlord_has(&env, Some("#000001")).await;
    quiet_with(&env, &bridge, step(landlord_db, echoes, 1)).await;

    let echoes = echo_count(&bridge, tenant_db).await;
    landlord
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#000002' WHERE tenant_db_id = 1",
            &[],
        )
        .await
        .unwrap();
    tenant_has(&env, Some("#000002")).await;
    quiet_with(&env, &bridge, step(tenant_db, echoes, 2)).await;

    let echoes = echo_count(&bridge, landlord_db).await;
    tenant
        .execute("DELETE FROM tenant_brandings WHERE id = 1", &[])
        .await
        .unwrap();
    landlord_exists(&env, false).await;
    quiet_with(&env, &bridge, step(landlord_db, echoes, 3)).await;

    let echoes = echo_count(&bridge, tenant_db).await;
    landlord
        .execute("INSERT INTO tenant_brandings (tenant_db_id, tenant_slug, primary_color) VALUES (1, 'tenant1', '#000004')", &[])
        .await
        .unwrap();
    tenant_has(&env, Some("#000004")).await;
    quiet_with(&env, &bridge, step(tenant_db, echoes, 4)).await;

    let echoes = echo_count(&bridge, tenant_db).await;
    landlord
        .execute("DELETE FROM tenant_brandings WHERE tenant_db_id = 1", &[])
        .await
        .unwrap();
    tenant_exists(&env, false).await;
    quiet_with(&env, &bridge, step(tenant_db, echoes, 5)).await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_write_to_a_row_the_bridge_wrote_last_is_synced() {
    let env = TestEnv::new("appwins", 1).await;
    let (landlord, tenant) = (env.landlord().await, env.tenant(0).await);
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    tenant
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#aaaaaa')",
            &[],
        )
        .await
        .unwrap();
    landlord_has(&env, Some("#aaaaaa")).await;
    let row = env.landlord_row(0).await.unwrap();
    assert_eq!(
        row.text("cdc_source").as_deref(),
        Some("tenant"),
        "the bridge wrote it on behalf of the tenant"
    );

    landlord
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#bbbbbb' WHERE tenant_db_id = 1",
            &[],
        )
        .await
        .unwrap();
    tenant_has(&env, Some("#bbbbbb")).await;
    assert_eq!(
        env.tenant_row(0)
            .await
            .unwrap()
            .text("cdc_source")
            .as_deref(),
        Some("landlord")
    );

    landlord
        .execute("DELETE FROM tenant_brandings WHERE tenant_db_id = 1", &[])
        .await
        .unwrap();
    tenant_exists(&env, false).await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_whose_clock_is_behind_still_wins_with_a_later_local_write() {
    let env = TestEnv::new("clockbehind", 1).await;
    let admin = support::connect("postgres").await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET cdc_bridge.clock_offset = '-1 hour'",
            env.tenants[0].database
        ))
        .await
        .unwrap();
    let landlord = env.landlord().await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    landlord
        .execute("INSERT INTO tenant_brandings (tenant_db_id, tenant_slug, primary_color) VALUES (1, 'tenant1', '#111111')", &[])
        .await
        .unwrap();
    tenant_has(&env, Some("#111111")).await;

    // The tenant's clock is an hour behind the landlord's version, yet its
    // later write gets a higher version and wins on both sides.
    let tenant = env.tenant(0).await;
    tenant
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#222222' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    landlord_has(&env, Some("#222222")).await;
    // Nothing flips it back: not an echo, not the older landlord version.
    env.wait_settled().await;
    let (l, t) = (
        env.landlord_row(0).await.unwrap(),
        env.tenant_row(0).await.unwrap(),
    );
    assert_eq!(t.text("primary_color").as_deref(), Some("#222222"));
    assert_eq!(l.text("cdc_version"), t.text("cdc_version"));
    assert_eq!(l.text("cdc_source").as_deref(), Some("tenant"));
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tombstones_older_than_the_retention_are_removed() {
    let env = TestEnv::new("tombexpiry", 1).await;
    let (ok, output) = env.bridge_command(&["setup"]);
    assert!(ok, "{output}");
    let tenant = env.tenant(0).await;
    tenant
        .batch_execute(
            "INSERT INTO cdc_bridge.tombstones (table_name, row_key, version, source, deleted_at)
             VALUES ('tenant_brandings', '{\"id\": \"7\"}', now() - interval '40 days', 'tenant', now() - interval '40 days'),
                    ('tenant_brandings', '{\"id\": \"8\"}', now() - interval '1 day', 'tenant', now() - interval '1 day')",
        )
        .await
        .unwrap();
    let mut bridge = env.start_bridge();
    eventually(
        "the 40-day-old tombstone is gone, the recent one kept",
        || async {
            let keys: Vec<String> = tenant
                .query(
                    "SELECT row_key->>'id' FROM cdc_bridge.tombstones ORDER BY 1",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            (keys == ["8"]).then_some(())
        },
    )
    .await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

/// Both sides change the row while the bridge is stopped, each in a session
/// whose clock is a century behind: the triggers then stamp the row's
/// previous version plus 1 µs, so both changes carry the same version, and
/// only the tie-break (tenant over landlord) decides.
#[tokio::test(flavor = "multi_thread")]
async fn changes_of_equal_version_from_both_sides_resolve_to_the_tenants_on_both() {
    let env = TestEnv::new("tiebreak", 1).await;
    support::set_tenant_color(&env, 0, "#a10000").await;
    let mut bridge = env.start_bridge();
    landlord_has(&env, Some("#a10000")).await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());

    let behind = "SET cdc_bridge.clock_offset = '-100 years';";
    env.tenant(0)
        .await
        .batch_execute(&format!(
            "{behind} UPDATE tenant_brandings SET primary_color = '#a1000t' WHERE id = 1"
        ))
        .await
        .unwrap();
    env.landlord()
        .await
        .batch_execute(&format!(
            "{behind} UPDATE tenant_brandings SET primary_color = '#a1000l' WHERE tenant_db_id = 1"
        ))
        .await
        .unwrap();
    let (t, l) = (
        env.tenant_row(0).await.unwrap(),
        env.landlord_row(0).await.unwrap(),
    );
    let version = t.text("cdc_version");
    assert_eq!(version, l.text("cdc_version"), "a tie: {t:?} {l:?}");

    let mut bridge = env.start_bridge();
    let both: BTreeSet<String> = ["#a1000t", "#a1000l"].map(String::from).into();
    env.topic.wait_colors(&both, "both changes in Kafka").await;
    env.wait_settled().await;
    for (side, row) in [
        ("tenant", env.tenant_row(0).await),
        ("landlord", env.landlord_row(0).await),
    ] {
        let row = row.unwrap_or_else(|| panic!("the {side} row is gone"));
        assert_eq!(
            (row.text("primary_color"), row.text("cdc_source")),
            (Some("#a1000t".to_string()), Some("tenant".to_string())),
            "the tenant's change wins the tie on the {side} side: {row:?}"
        );
        assert_eq!(row.text("cdc_version"), version, "with the tied version");
    }
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
