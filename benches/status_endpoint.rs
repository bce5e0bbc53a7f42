//! `GET /status` with 1,000 tenants: the real HTTP endpoint in process,
//! its status board filled with 1,000 tenants in mixed states, asked for
//! every tenant at once, one default page, and a filtered page. Baseline,
//! in the same run and over the same server and connections: `GET
//! /health`, the endpoint's floor (accept, route, answer), and, in
//! process, `serde_json` writing a plain value with the same 1,000
//! tenants' fields. The median of `RUNS` requests each; the goal is under
//! 100 ms for every shape.
//!
//! Output: `bench-results/status_endpoint.json` and one summary line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cdc_bridge::bench_support::{
    serve, shutdown_channel, status, ApplierState, CheckEntry, ReaderState, TenantEntry,
};
use cdc_bridge::config::Config;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TENANTS: usize = 1000;
const RUNS: usize = 51;

fn config() -> Config {
    Config::parse(
        r#"
[landlord]
dsn = "host=127.0.0.1 user=postgres dbname=landlord"
[tenants]
connection_template = "host=127.0.0.1 user=postgres dbname={database_name}"
[[table]]
name = "tenant_brandings"
[kafka]
brokers = "127.0.0.1:9"
topic = "bench.changes"
[http]
listen = "127.0.0.1:0"
"#,
    )
    .expect("bench configuration")
}

/// 1,000 tenants: most streaming and consistent, some down, snapshotting,
/// unreachable, lagging or divergent.
fn fill_status_board() {
    let board = status();
    board.role_started("reader");
    board.role_started("applier");
    let tenants: Vec<TenantEntry> = (1..=TENANTS)
        .map(|n| TenantEntry {
            id: n.to_string().as_str().into(),
            slug: format!("tenant-{n}"),
            server: format!("db{}.internal:5432", n % 7),
            database: format!("tenant_{n:04}"),
        })
        .collect();
    let mut unreachable = Vec::new();
    for tenant in &tenants {
        let n: usize = tenant.id.as_str().parse().unwrap();
        let state = match n % 50 {
            0 => ReaderState::Down,
            1 => ReaderState::Snapshotting,
            _ => ReaderState::Streaming,
        };
        board.set_reader_state(&tenant.database, state);
        if state == ReaderState::Down {
            board.reader_failed(
                &tenant.database,
                "cannot connect to database: connection refused",
            );
            unreachable.push((tenant.id.clone(), ApplierState::Unreachable));
        }
        board.set_reader_lag(&tenant.database, (n * 977 % 65_536) as u64, (n % 40) as f64);
        let check = if n % 97 == 0 { "differs" } else { "consistent" };
        board.set_check(
            &tenant.id,
            CheckEntry {
                state: check,
                tenant_present: Some(true),
                landlord_present: Some(n % 97 != 0),
                at: SystemTime::now(),
                note: None,
            },
        );
        board.synced(cdc_bridge::model::Side::Landlord, &[&tenant.id], 1);
    }
    board.set_applier_states(|_| true, &unreachable);
    board.set_tenants(tenants);
}

/// One HTTP/1.0 request; the whole response's length.
async fn get(port: u16, path: &str) -> usize {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("bench endpoint");
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    assert!(response.starts_with(b"HTTP/1.0 200"), "{path}");
    response.len()
}

/// Median milliseconds of `RUNS` requests of `path`, and the body size.
async fn time_requests(port: u16, path: &str) -> (f64, usize) {
    let mut times = Vec::with_capacity(RUNS);
    let mut size = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        size = get(port, path).await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    (median(times), size)
}

/// The in-process floor: serde_json writing the same tenants' fields.
fn time_plain_serialization() -> f64 {
    let value: Vec<serde_json::Value> = (1..=TENANTS)
        .map(|n| {
            json!({
                "id": n.to_string(), "slug": format!("tenant-{n}"),
                "database": {"host": format!("db{}.internal", n % 7), "port": 5432, "name": format!("tenant_{n:04}")},
                "direction": "both", "direction_override": false,
                "reader": {"state": "streaming", "slot_lag_bytes": n * 977 % 65_536, "slot_lag_seconds": (n % 40) as f64},
                "applier_state": "live",
                "last_synced": {"to_landlord": "2026-12-02T07:00:00Z", "to_tenant": null},
                "check": {"state": "consistent", "tenant_present": true, "landlord_present": true, "at": "2026-12-02T07:00:00Z", "note": null},
                "lagging": false, "last_error": null,
            })
        })
        .collect();
    let times = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(serde_json::to_string(&value).unwrap());
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    median(times)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    fill_status_board();
    let port = free_port();
    let (trigger, shutdown) = shutdown_channel();
    let listen = format!("127.0.0.1:{port}").parse().unwrap();
    let server = tokio::spawn(serve(
        Arc::new(config()),
        listen,
        shutdown,
        Default::default(),
    ));
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "endpoint did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm up: the first requests pay for allocation and page faults.
    for _ in 0..5 {
        get(port, "/status?limit=1000").await;
    }
    let (health_ms, _) = time_requests(port, "/health").await;
    let serialize_ms = time_plain_serialization();
    let mut results = Vec::new();
    for (name, path) in [
        ("all_1000", "/status?limit=1000"),
        ("default_page", "/status"),
        ("filtered", "/status?state=streaming&q=tenant-9&limit=1000"),
    ] {
        let (ms, bytes) = time_requests(port, path).await;
        println!(
            "status_endpoint: {name} ({path}): {ms:.2} ms median of {RUNS}, {bytes} bytes; /health {health_ms:.2} ms, plain serde_json of 1,000 tenants {serialize_ms:.2} ms; ratio to /health {:.1}, to plain serialization {:.2}; goal < 100 ms: {}",
            ms / health_ms,
            ms / serialize_ms,
            if ms < 100.0 { "met" } else { "MISSED" }
        );
        results.push(json!({
            "shape": name,
            "path": path,
            "tenants": TENANTS,
            "runs": RUNS,
            "median_ms": ms,
            "response_bytes": bytes,
            "baseline_health_median_ms": health_ms,
            "baseline_plain_serialization_median_ms": serialize_ms,
            "ratio_to_health": ms / health_ms,
            "ratio_to_plain_serialization": ms / serialize_ms,
            "goal_ms": 100.0,
        }));
    }
    trigger.trigger();
    let _ = server.await;
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("status_endpoint.json");
    let json = json!({ "benchmark": "status_endpoint", "results": results });
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("status_endpoint: results written to {}", path.display());
}
