//! Outages of a tenant database, the landlord and Kafka: nothing is lost,
//! other tenants keep syncing, everything catches up.

use crate::support::{
    self, eventually, landlord_color, set_landlord_color, set_tenant_color, tenant_color,
    wait_streaming, Bridge, TestEnv,
};

async fn set_reachable(database: &str, reachable: bool) {
    let admin = support::connect("postgres").await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS {reachable}"
        ))
        .await
        .unwrap();
    if !reachable {
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&database],
            )
            .await
            .unwrap();
    }
}

/// Waits until both metrics of `database`'s reachability, for reading
/// (`cdc_source_up`) and for applying (`cdc_applier_target_up`), say `up`.
async fn wait_reported_up(bridge: &Bridge, database: &str, up: bool) {
    let expected = f64::from(u8::from(up));
    for metric in ["cdc_source_up", "cdc_applier_target_up"] {
        let series = format!("{metric}{{database=\"{database}\"}}");
        bridge.wait_metric(&series, |value| value == expected).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_database_outage_delays_only_that_tenant_and_catches_up() {
    let env = TestEnv::new("tenantdown", 2).await;
    env.set_http("");
    set_tenant_color(&env, 0, "#100000").await;
    set_tenant_color(&env, 1, "#200000").await;
    let mut bridge = env.start_bridge();
    eventually("both tenants on the landlord", || async {
        (landlord_color(&env, 1).await.as_deref() == Some("#200000")
            && landlord_color(&env, 0).await.is_some())
        .then_some(())
    })
    .await;
    let down = &env.tenants[1].database;
    wait_reported_up(&bridge, down, true).await;

    set_reachable(down, false).await;
    set_landlord_color(&env, 1, "#200001").await;
    set_landlord_color(&env, 0, "#100001").await;
    eventually("the healthy tenant keeps syncing", || async {
        (tenant_color(&env, 0).await.as_deref() == Some("#100001")).then_some(())
    })
    .await;
    wait_reported_up(&bridge, down, false).await;
    set_tenant_color(&env, 0, "#100002").await;
    eventually(
        "the healthy tenant keeps syncing to the landlord",
        || async { (landlord_color(&env, 0).await.as_deref() == Some("#100002")).then_some(()) },
    )
    .await;

    set_reachable(down, true).await;
    eventually(
        "the recovered tenant received the landlord change",
        || async { (tenant_color(&env, 1).await.as_deref() == Some("#200001")).then_some(()) },
    )
    .await;
    wait_reported_up(&bridge, down, true).await;
    set_tenant_color(&env, 1, "#200002").await;
    eventually("and syncs again", || async {
        (landlord_color(&env, 1).await.as_deref() == Some("#200002")).then_some(())
    })
    .await;
    assert!(
        bridge.log_text().contains("unreachable"),
        "the outage is reported"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_landlord_outage_pauses_applying_while_tenants_keep_streaming_to_kafka() {
    let env = TestEnv::new("landlorddown", 1).await;
    set_tenant_color(&env, 0, "#300000").await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    eventually("tenant on the landlord", || async {
        (landlord_color(&env, 0).await.is_some()).then_some(())
    })
    .await;

    set_reachable(&env.landlord_db, false).await;
    let before = env.topic.change_events().len();
    set_tenant_color(&env, 0, "#300001").await;
    eventually(
        "the tenant change reached Kafka during the outage",
        || async { (env.topic.change_events().len() > before).then_some(()) },
    )
    .await;
    // The applier tried and failed (and keeps the change for its retry).
    bridge
        .wait_log_lines(&["failed", "what=applying a batch"], 1)
        .await;
    set_reachable(&env.landlord_db, true).await;
    eventually("applied once the landlord is back", || async {
        (landlord_color(&env, 0).await.as_deref() == Some("#300001")).then_some(())
    })
    .await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
