//! Scale: one bridge process over 10 to 500 tenant databases (on one
//! server): time from start until every tenant is in sync, peak memory,
//! idle CPU, and the bridge's CPU cost per change under a burst of changes
//! on every tenant. The baseline, in the same run, is the smallest fleet:
//! the cost per change at N tenants over the cost at 10 says whether it
//! stays flat. PostgreSQL's own cost grows with the fleet (one walsender
//! per database, each decoding the whole cluster's WAL); it is reported
//! beside the bridge's.
//!
//! Needs the bench stack: `scripts/bench.sh scale` (`CDC_BENCH_FLEETS=10,50`
//! for a shorter curve).
//! Output: `bench-results/scale.json`.

mod common;

use std::time::{Duration, Instant};

use common::fleet::Fleet;
use serde_json::json;

const FLEETS: &[u32] = &[10, 100, 250, 500];
/// Changes per tenant in the burst.
const CHANGES: u32 = 20;

/// User and system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds of every PostgreSQL backend of the cluster (walsenders
/// included), read from /proc.
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_seconds)
        .sum()
}

async fn one_fleet(tenants: u32) -> serde_json::Value {
    let prefix = format!("bench_scale_{}_{tenants}", std::process::id());
    let created = Instant::now();
    let mut fleet = Fleet::create(&prefix, tenants, "").await;
    let setup_seconds = created.elapsed().as_secs_f64();
    let in_sync = fleet.start().await;
    let pid = fleet.pid().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_from = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = (cpu_seconds(pid) - idle_from) / 10.0;

    let (bridge_from, postgres_from) = (cpu_seconds(pid), postgres_cpu_seconds());
    let burst = Instant::now();
    let mut writers = Vec::new();
    for t in 1..=tenants {
        let client = fleet.tenant(t).await;
        writers.push(tokio::spawn(async move {
            for n in 0..CHANGES {
                client
                    .execute(
                        "UPDATE tenant_brandings SET primary_color = $1 WHERE id = 1",
                        &[&format!("#c{n:05x}")],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let newest = format!("#c{:05x}", CHANGES - 1);
    let landlord = fleet.landlord().await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while landlord
        .query_one(
            "SELECT count(*) FROM tenant_brandings WHERE primary_color = $1",
            &[&newest],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        < i64::from(tenants)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let burst_seconds = burst.elapsed().as_secs_f64();
    let changes = f64::from(tenants * CHANGES);
    let bridge_cpu = cpu_seconds(pid) - bridge_from;
    let postgres_cpu = postgres_cpu_seconds() - postgres_from;
    let rss = peak_rss_mib(pid);
    fleet.finish().await;
    json!({
        "tenants": tenants,
        "setup_seconds": setup_seconds,
        "in_sync_seconds_after_start": in_sync.as_secs_f64(),
        "peak_rss_mib": rss,
        "idle_cpu_share_of_a_core": idle_cpu,
        "burst_changes": changes,
        "burst_seconds": burst_seconds,
        "bridge_cpu_us_per_change": bridge_cpu / changes * 1e6,
        "postgres_cpu_us_per_change": postgres_cpu / changes * 1e6,
    })
}

#[tokio::main]
async fn main() {
    if common::only_listing() {
        return;
    }
    let fleets: Vec<u32> = match std::env::var("CDC_BENCH_FLEETS") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) => FLEETS.to_vec(),
    };
    let mut curve = Vec::new();
    for &tenants in &fleets {
        let point = one_fleet(tenants).await;
        println!("scale: {point}");
        curve.push(point);
    }
    let base = curve[0]["bridge_cpu_us_per_change"]
        .as_f64()
        .unwrap_or(f64::NAN);
    for point in &mut curve {
        let cost = point["bridge_cpu_us_per_change"]
            .as_f64()
            .unwrap_or(f64::NAN);
        point["cost_ratio_to_smallest_fleet"] = json!(cost / base);
    }
    common::write_results("scale", json!({ "benchmark": "scale", "curve": curve }));
}
