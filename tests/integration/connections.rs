//! The applier's connection budget: with more tenant databases than
//! `applier.max_connections`, it never holds more connections than its
//! caps (sampled from `pg_stat_activity` throughout), closes the least
//! recently used idle ones, queues the rest of a batch for later rounds,
//! and every tenant still syncs both ways.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use crate::support::{
    connect, eventually, http_request, landlord_color, set_tenant_color, tenant_color,
    wait_streaming, TestEnv,
};

const APPLIER: &str = "capped_applier";

/// Samples the applier's connections until `stop`; the most seen.
fn sample_connections(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    let most = Arc::new(AtomicI64::new(0));
    tokio::spawn(async move {
        let client = connect("postgres").await;
        while !stop.load(Ordering::Relaxed) {
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&APPLIER],
                )
                .await
                .unwrap();
            most.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        most.load(Ordering::Relaxed)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_applier_stays_within_its_connection_caps_and_every_tenant_syncs_both_ways() {
    let tenants = 10;
    let env = TestEnv::new("conncap", tenants).await;
    env.write_config("[check]\ninterval_secs = 0");
    env.replace_in_config(
        "batch_wait_ms = 10",
        "batch_wait_ms = 200\nmax_connections = 4\nmax_connections_per_server = 3",
    );
    env.set_http("");
    let reader = env.start_role("reader", "user=postgres", "user=postgres");
    wait_streaming(&reader, tenants + 1).await;
    let applier = env.start_role(
        "applier",
        "user=postgres",
        &format!("user=postgres application_name={APPLIER}"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_connections(Arc::clone(&stop));

    // One landlord transaction for every tenant: one batch, ten databases.
    let values: Vec<String> = env
        .tenants
        .iter()
        .map(|t| format!("({}, '{}', '#c0c0c0')", t.id, t.slug))
        .collect();
    env.landlord()
        .await
        .batch_execute(&format!(
            "INSERT INTO tenant_brandings (tenant_db_id, tenant_slug, primary_color) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    for index in 0..tenants {
        eventually("every tenant has the landlord's row", || async {
            (tenant_color(&env, index).await.as_deref() == Some("#c0c0c0")).then_some(())
        })
        .await;
    }
    for index in 0..tenants {
        set_tenant_color(&env, index, &format!("#c1c1{index:02}")).await;
    }
    for index in 0..tenants {
        eventually("every tenant's change on the landlord", || async {
            let expected = format!("#c1c1{index:02}");
            (landlord_color(&env, index).await == Some(expected)).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let most = sampler.await.unwrap();
    assert!(
        most >= 2,
        "the sampler saw the applier's connections ({most})"
    );
    assert!(
        most <= 4,
        "the applier held {most} connections, more than max_connections = 4"
    );

    let port = applier.http_port().await;
    let metrics = http_request(port, "GET", "/metrics", None, "")
        .await
        .unwrap();
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        sample("cdc_applier_connection_evictions_total") > 0.0,
        "{metrics}"
    );
    assert!(
        sample("cdc_applier_connection_waits_total") > 0.0,
        "{metrics}"
    );
    drop(reader);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_budget_the_server_cannot_hold_is_warned_about_at_start() {
    let env = TestEnv::new("connwarn", 1).await;
    env.replace_in_config(
        "batch_wait_ms = 10",
        "batch_wait_ms = 10\nmax_connections = 100000\nmax_connections_per_server = 100000",
    );
    let mut bridge = env.start_bridge();
    eventually("the start warns about the connection budget", || async {
        let log = bridge.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("may need more connections on this server"))?;
        Some(line.to_string())
    })
    .await;
    wait_streaming(&bridge, 2).await;
    assert!(bridge.stop().success(), "a tight budget still runs");
}
