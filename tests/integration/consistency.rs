//! The consistency check against real databases: divergences made behind
//! the bridge's back are each reported with the right state, `--repair`
//! fixes them through the applier's write path, and the periodic check
//! inside `run` reports (and repairs) them in its metrics.

use std::collections::BTreeMap;

use crate::support::{
    eventually, http_request, landlord_color, set_tenant_color, tenant_color, wait_streaming,
    TestEnv,
};

/// Runs `cdc-bridge check --format json` with `args`: exit code, and each
/// tenant's (state, newer side, repaired) by registry id.
fn check(env: &TestEnv, args: &[&str]) -> (i32, BTreeMap<String, (String, String, bool)>) {
    let mut all = vec!["check", "--format", "json"];
    all.extend(args);
    let run = env.bridge_run(&all);
    let report: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("check printed no JSON ({e}): {}{}", run.stdout, run.stderr));
    let states = report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let text = |k: &str| t[k].as_str().unwrap_or("").to_string();
            (
                text("tenant"),
                (text("state"), text("newer"), t["repaired"] == true),
            )
        })
        .collect();
    (run.code, states)
}

/// Runs SQL with the bridge's triggers off: a write the bridge never sees
/// as the application's (no version bump, no tombstone).
async fn behind_the_bridges_back(client: &tokio_postgres::Client, sql: &str) {
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL session_replication_role = replica; {sql}; COMMIT;"
        ))
        .await
        .unwrap();
}

fn state(name: &str, newer: &str, repaired: bool) -> (String, String, bool) {
    (name.to_string(), newer.to_string(), repaired)
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_each_divergence_and_repair_makes_every_tenant_consistent() {
    let env = TestEnv::new("check", 4).await;
    for index in 0..4 {
        set_tenant_color(&env, index, &format!("#00000{index}")).await;
    }
    let mut bridge = env.start_bridge();
    for index in 0..4 {
        eventually("every tenant's row on the landlord", || async {
            (landlord_color(&env, index).await == tenant_color(&env, index).await).then_some(())
        })
        .await;
    }
    assert!(bridge.stop().success());
    let id = |index: usize| env.tenants[index].id.to_string();
    let (code, states) = check(&env, &[]);
    assert_eq!(code, 0, "all consistent after syncing: {states:?}");

    let landlord = env.landlord().await;
    let where_tenant = |index: usize| format!("WHERE tenant_db_id = {}", id(index));
    behind_the_bridges_back(
        &landlord,
        &format!("DELETE FROM tenant_brandings {}", where_tenant(0)),
    )
    .await;
    behind_the_bridges_back(&env.tenant(1).await, "DELETE FROM tenant_brandings").await;
    behind_the_bridges_back(
        &landlord,
        &format!(
            "UPDATE tenant_brandings SET primary_color = '#bad000' {}",
            where_tenant(2)
        ),
    )
    .await;
    let (ok, output) = env.bridge_command(&["direction", "set", &id(3), "paused"]);
    assert!(ok, "{output}");
    set_tenant_color(&env, 3, "#0000ff").await;
    landlord
        .execute(
            "INSERT INTO tenants (id, slug, numeric_id, database_name) VALUES (99, 'ghost', 1099, 'no_such_database')",
            &[],
        )
        .await
        .unwrap();

    let (code, states) = check(&env, &[]);
    assert_eq!(code, 1, "{states:?}");
    assert_eq!(states[&id(0)], state("tenant_only", "", false));
    assert_eq!(states[&id(1)], state("landlord_only", "", false));
    // The bypassing write kept the tenant's version: the tenant's data wins.
    assert_eq!(states[&id(2)], state("differs", "tenant", false));
    assert_eq!(states[&id(3)], state("paused", "", false));
    assert_eq!(states["99"], state("unreachable", "", false));

    let (ok, output) = env.bridge_command(&["direction", "set", &id(3), "both"]);
    assert!(ok, "{output}");
    let (_, states) = check(&env, &["--tenant", &id(3)]);
    assert_eq!(states[&id(3)], state("differs", "tenant", false));

    let real: Vec<String> = (0..4).map(id).collect();
    let mut only_real = Vec::new();
    for tenant in &real {
        only_real.extend(["--tenant", tenant.as_str()]);
    }
    let mut repair = only_real.clone();
    repair.push("--repair");
    let (code, states) = check(&env, &repair);
    assert_eq!(code, 0, "{states:?}");
    for tenant in &real {
        assert_eq!(states[tenant], state("consistent", "", true), "{tenant}");
    }
    let (code, _) = check(&env, &only_real);
    assert_eq!(code, 0, "a second check finds nothing");
    for (index, color) in [
        (0, "#000000"),
        (1, "#000001"),
        (2, "#000002"),
        (3, "#0000ff"),
    ] {
        assert_eq!(landlord_color(&env, index).await.as_deref(), Some(color));
        assert_eq!(tenant_color(&env, index).await.as_deref(), Some(color));
    }

    let run = env.bridge_run(&["check", "--tenant", "424242"]);
    assert_eq!(run.code, 2, "a check that cannot run: {}", run.stderr);
    assert!(run.stderr.contains("424242"), "{}", run.stderr);
}

/// Reads one sample of the bridge's metrics, e.g. `cdc_check_tenants{state="consistent"}`.
async fn metric(port: u16, sample: &str) -> Option<f64> {
    let text = http_request(port, "GET", "/metrics", None, "").await?;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_periodic_check_reports_a_divergence_in_metrics_and_repairs_it_when_told() {
    let env = TestEnv::new("periodic", 1).await;
    env.write_config("[check]\ninterval_secs = 1\nrepair = false");
    env.set_http("");
    set_tenant_color(&env, 0, "#0a0a0a").await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    // Every event so far applied (the start's reconcile may bring the row
    // before its events): none can bring the row back after the delete.
    let group = format!("{}_applier", env.prefix);
    eventually(
        "the row on the landlord and every event applied",
        || async {
            let there = landlord_color(&env, 0).await.is_some();
            (there && env.topic.consumed_by(&group)).then_some(())
        },
    )
    .await;
    behind_the_bridges_back(&env.landlord().await, "DELETE FROM tenant_brandings").await;
    let port = bridge.http_port().await;
    eventually("the check reports the tenant_only tenant", || async {
        let only = metric(port, "cdc_check_tenants{state=\"tenant_only\"}").await?;
        let ratio = metric(port, "cdc_check_inconsistent_ratio").await?;
        (only == 1.0 && ratio == 1.0).then_some(())
    })
    .await;
    assert!(metric(port, "cdc_check_last_run_timestamp_seconds").await > Some(0.0));
    assert_eq!(landlord_color(&env, 0).await, None, "no repair unless told");
    assert!(bridge.stop().success());

    // A restarted applier reconciles every tenant once (which brings the
    // row back by itself): the divergence to repair is made after that.
    env.replace_in_config("repair = false", "repair = true");
    let bridge = env.start_bridge();
    let port = bridge.http_port().await;
    eventually(
        "a first check after the start finds all consistent",
        || async {
            let consistent = metric(port, "cdc_check_tenants{state=\"consistent\"}").await?;
            (consistent == 1.0).then_some(())
        },
    )
    .await;
    behind_the_bridges_back(&env.landlord().await, "DELETE FROM tenant_brandings").await;
    eventually("the check repairs the tenant", || async {
        let repairs = metric(port, "cdc_check_repairs_total").await?;
        let consistent = metric(port, "cdc_check_tenants{state=\"consistent\"}").await?;
        (repairs >= 1.0 && consistent == 1.0).then_some(())
    })
    .await;
    assert_eq!(landlord_color(&env, 0).await.as_deref(), Some("#0a0a0a"));
    assert!(bridge.log_text().contains("tenant repaired"));
}
