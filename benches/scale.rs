//! Scale: one bridge process over 10 to 500 tenant databases (on one
//! server): time from start until every tenant's row is on the landlord
//! and every reader streams, peak memory,
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
/// Changes per tenant in one round of the burst.
const CHANGES: u32 = 20;
/// Fewest changes over all rounds of the burst.
const MIN_CHANGES: u32 = 5_000;
/// Wait after the first sync before idle CPU is read, and how long it is read.
const IDLE_SETTLE: Duration = Duration::from_secs(10);
const IDLE_WINDOW: Duration = Duration::from_secs(30);

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

/// Every tenant makes `CHANGES` changes (each tenant on its connection,
/// all at once); returns once every tenant's last one is on the landlord.
async fn burst_round(fleet: &Fleet, tenants: u32, round: u32) {
    let mut writers = Vec::new();
    for t in 1..=tenants {
        let client = fleet.tenant(t).await;
        writers.push(tokio::spawn(async move {
            for n in 0..CHANGES {
                client
                    .execute(
                        "UPDATE tenant_brandings SET primary_color = $1 WHERE id = 1",
                        &[&format!("#{round:02x}{n:04x}")],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let newest = format!("#{round:02x}{:04x}", CHANGES - 1);
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
    {
        assert!(
            Instant::now() < deadline,
            "round {round} did not land in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one_fleet(tenants: u32) -> serde_json::Value {
    let prefix = format!("bench_scale_{}_{tenants}", std::process::id());
    let created = Instant::now();
    let mut fleet = Fleet::create(&prefix, tenants, "").await;
    let setup_seconds = created.elapsed().as_secs_f64();
    let started = fleet.start().await;
    let pid = fleet.pid().unwrap();
    // Idle is the steady state: the first sync's tail (snapshots being
    // confirmed, the start-up reconcile) is over after a few seconds.
    tokio::time::sleep(IDLE_SETTLE).await;
    let idle_from = cpu_seconds(pid);
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu = (cpu_seconds(pid) - idle_from) / IDLE_WINDOW.as_secs_f64();

    // Rounds of the burst until enough changes were made for the CPU
    // readings (10 ms ticks) to mean something on a small fleet; each
    // round waits until every tenant's newest change landed, so the work
    // has the same shape whatever the fleet's size.
    let rounds = MIN_CHANGES.div_ceil(tenants * CHANGES).max(1);
    let (bridge_from, postgres_from) = (cpu_seconds(pid), postgres_cpu_seconds());
    let burst = Instant::now();
    for round in 0..rounds {
        burst_round(&fleet, tenants, round).await;
    }
    let burst_seconds = burst.elapsed().as_secs_f64();
    let changes = f64::from(tenants * CHANGES * rounds);
    let bridge_cpu = cpu_seconds(pid) - bridge_from;
    let postgres_cpu = postgres_cpu_seconds() - postgres_from;
    // What the bridge spends anyway (idle) is not the changes' cost.
    let above_idle = (bridge_cpu - idle_cpu * burst_seconds).max(0.0);
    let rss = peak_rss_mib(pid);
    fleet.finish().await;
    json!({
        "tenants": tenants,
        "setup_seconds": setup_seconds,
        "in_sync_seconds_after_start": started.in_sync().as_secs_f64(),
        "rows_in_sync_seconds_after_start": started.rows_in_sync.as_secs_f64(),
        "all_streaming_seconds_after_start": started.all_streaming.as_secs_f64(),
        "peak_rss_mib": rss,
        "idle_cpu_share_of_a_core": idle_cpu,
        "burst_changes": changes,
        "burst_rounds": rounds,
        "burst_seconds": burst_seconds,
        "bridge_cpu_us_per_change": bridge_cpu / changes * 1e6,
        "bridge_cpu_above_idle_us_per_change": above_idle / changes * 1e6,
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
    for field in [
        "bridge_cpu_us_per_change",
        "bridge_cpu_above_idle_us_per_change",
    ] {
        let base = curve[0][field].as_f64().unwrap_or(f64::NAN);
        for point in &mut curve {
            let cost = point[field].as_f64().unwrap_or(f64::NAN);
            point[format!("{field}_ratio_to_smallest_fleet")] = json!(cost / base);
        }
    }
    common::write_results("scale", json!({ "benchmark": "scale", "curve": curve }));
}
