//! Fan-out: one landlord transaction changing the row of each of 200
//! tenants, until every tenant database has its row (per-tenant latency,
//! p50/p99/max), through the whole bridge with its default connection
//! caps. Baseline, in the same run: the application writing the same 200
//! rows itself, all at once over 200 open connections (the floor a
//! hand-written fan-out could reach); and the same writes on a new
//! connection each, at most 32 at a time (the bridge's default cap per
//! server): the floor of any fan-out that may hold only 32 connections to
//! a server of 200 databases, where PostgreSQL starts a backend per write.
//!
//! Needs the bench stack: `scripts/bench.sh fanout`.
//! Output: `bench-results/fanout.json`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fleet::{percentiles, Fleet};
use common::median;
use serde_json::json;

const TENANTS: u32 = 200;
const RUNS: usize = 5;
/// The default `applier.max_connections_per_server`.
const CAPPED: usize = 32;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// When each tenant's database got `color` (µs), once all did.
async fn landings(clients: &[tokio_postgres::Client], color: &str) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut at = Vec::new();
        for client in clients {
            let row = client
                .query_opt(
                    "SELECT (extract(epoch FROM min(at)) * 1e6)::bigint FROM bench_arrivals WHERE color = $1",
                    &[&color],
                )
                .await
                .unwrap();
            if let Some(Some(us)) = row.map(|r| r.get::<_, Option<i64>>(0)) {
                at.push(us);
            }
        }
        if at.len() == clients.len() || Instant::now() > deadline {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn bridge_run(
    fleet: &Fleet,
    tenants: &[tokio_postgres::Client],
    run: usize,
) -> serde_json::Value {
    let color = format!("#b{run:05x}");
    let landlord = fleet.landlord().await;
    landlord
        .execute("UPDATE tenant_brandings SET primary_color = $1", &[&color])
        .await
        .unwrap();
    let committed = now_us();
    let at = landings(tenants, &color).await;
    let missing = tenants.len() - at.len();
    let mut result = percentiles(at.iter().map(|a| (a - committed) as f64 / 1000.0).collect());
    result["missing"] = json!(missing);
    result
}

async fn baseline_run(tenants: &[tokio_postgres::Client], run: usize) -> serde_json::Value {
    let color = format!("#a{run:05x}");
    let started = now_us();
    let writes = tenants.iter().map(|client| {
        let color = color.clone();
        async move {
            client
                .execute(
                    "INSERT INTO bench_twin VALUES ($1, clock_timestamp())",
                    &[&color],
                )
                .await
                .unwrap();
        }
    });
    futures::future::join_all(writes).await;
    let mut at = Vec::new();
    for client in tenants {
        let row = client
            .query_one(
                "SELECT (extract(epoch FROM at) * 1e6)::bigint FROM bench_twin WHERE color = $1",
                &[&color],
            )
            .await
            .unwrap();
        at.push(row.get::<_, i64>(0));
    }
    percentiles(at.iter().map(|a| (a - started) as f64 / 1000.0).collect())
}

/// The same writes, each on a connection opened for it and closed after,
/// at most `CAPPED` at once.
async fn capped_baseline_run(fleet: &Fleet, run: usize) -> serde_json::Value {
    use futures::stream::StreamExt;
    let color = format!("#d{run:05x}");
    let started = now_us();
    let writes = (1..=TENANTS).map(|t| {
        let color = color.clone();
        async move {
            let client = fleet.tenant(t).await;
            client
                .query_one(
                    "INSERT INTO bench_twin VALUES ($1, clock_timestamp())
                     RETURNING (extract(epoch FROM at) * 1e6)::bigint",
                    &[&color],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    });
    let at: Vec<i64> = futures::stream::iter(writes)
        .buffer_unordered(CAPPED)
        .collect()
        .await;
    percentiles(at.iter().map(|a| (a - started) as f64 / 1000.0).collect())
}

#[tokio::main]
async fn main() {
    if common::only_listing() {
        return;
    }
    let prefix = format!("bench_fanout_{}", std::process::id());
    let mut fleet = Fleet::create(&prefix, TENANTS, &common::extra_settings()).await;
    fleet.record_arrivals().await;
    let mut tenants = Vec::new();
    for t in 1..=TENANTS {
        let client = fleet.tenant(t).await;
        client
            .batch_execute("CREATE TABLE bench_twin (color text, at timestamptz)")
            .await
            .unwrap();
        tenants.push(client);
    }
    let first_sync = fleet.start().await.in_sync();
    let (mut ours, mut theirs, mut capped) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        ours.push(bridge_run(&fleet, &tenants, run).await);
        theirs.push(baseline_run(&tenants, run).await);
        capped.push(capped_baseline_run(&fleet, run).await);
    }
    fleet.finish().await;
    let field = |runs: &[serde_json::Value], f: &str| {
        median(
            runs.iter()
                .map(|r| r[f].as_f64().unwrap_or(f64::NAN))
                .collect(),
        )
    };
    let (p50, p99, max) = (
        field(&ours, "p50_ms"),
        field(&ours, "p99_ms"),
        field(&ours, "max_ms"),
    );
    let base_p99 = field(&theirs, "p99_ms");
    let capped_p99 = field(&capped, "p99_ms");
    println!(
        "fanout: one landlord change for each of {TENANTS} tenants: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms (median of {RUNS}); direct parallel writes p99 {base_p99:.0} ms, ratio {:.1}; direct writes on a new connection each, {CAPPED} at a time, p99 {capped_p99:.0} ms, ratio {:.2}; first sync {:.1} s",
        p99 / base_p99,
        p99 / capped_p99,
        first_sync.as_secs_f64()
    );
    common::write_results(
        "fanout",
        json!({
            "benchmark": "fanout",
            "tenants": TENANTS,
            "runs": RUNS,
            "bridge": ours,
            "baseline_direct_parallel_writes": theirs,
            "p50_ms_median": p50,
            "p99_ms_median": p99,
            "max_ms_median": max,
            "baseline_p99_ms_median": base_p99,
            "ratio_p99_to_baseline": p99 / base_p99,
            "baseline_new_connection_each_capped": capped,
            "capped_connections": CAPPED,
            "capped_baseline_p99_ms_median": capped_p99,
            "ratio_p99_to_capped_baseline": p99 / capped_p99,
            "first_sync_seconds": first_sync.as_secs_f64(),
        }),
    );
}
