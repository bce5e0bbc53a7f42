//! Replay throughput: `cdc-bridge replay --to landlord --from-beginning`
//! of a topic of 200k change events into an emptied landlord, against a
//! server-side `INSERT … ON CONFLICT … WHERE newer` of the same rows (one
//! statement per round of every tenant's next version) into a plain twin
//! table, in the same run. Two workloads: 1,000 tenants with 200 versions
//! each (a batch holds many versions of a row, only the newest is written)
//! and 20,000 tenants with 10 each (nearly every event is written).
//! Reports the median of several runs and the ratio. The live applier
//! (`run --role applier`) takes the first workload's topic too, timed from
//! its first row to the last.
//!
//! Needs the test stack: `scripts/bench.sh` starts it and runs this.
//! Output: `bench-results/replay_throughput.json`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use cdc_bridge::config::Config;
use cdc_bridge::kafka;
use cdc_bridge::model::envelope::format_unix_micros;
use cdc_bridge::model::envelope::{ColumnValue, Origin, ENVELOPE_VERSION};
use cdc_bridge::model::{Envelope, Op, Side, TenantRef};
use cdc_bridge::postgres::setup;
use common::{brokers, connect, dsn, fresh_database, median};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio_postgres::Client;

const RUNS: usize = 3;

struct Workload {
    tenants: u32,
    versions: u32,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        tenants: 1_000,
        versions: 200,
    },
    Workload {
        tenants: 20_000,
        versions: 10,
    },
];

fn config_text(db: &str) -> String {
    format!(
        r#"
[landlord]
dsn = "{landlord}"
[tenants]
connection_template = "{template}"
[[table]]
name = "tenant_brandings"
[table.landlord_registry_columns]
tenant_slug = "slug"
[kafka]
brokers = "{brokers}"
topic = "{db}.changes"
partitions = 6
consumer_group = "{db}_applier"
[replication]
slot_prefix = "{db}"
[http]
listen = ""
"#,
        landlord = dsn(db),
        template = dsn("{database_name}"),
        brokers = brokers(),
    )
}

/// The version of round `round` of every tenant: an hour ago plus `round` ms.
fn version(round: u32) -> String {
    let base = SystemTime::now() - Duration::from_secs(3600);
    let micros = base
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    format_unix_micros(micros + i64::from(round) * 1000)
}

fn envelope(tenant: u32, round: u32, version: &str) -> Envelope {
    let text = |t: &str, v: String| ColumnValue::text(t, Some(v));
    let columns = BTreeMap::from([
        ("id".to_string(), text("integer", "1".into())),
        (
            "primary_color".to_string(),
            text("character varying(7)", format!("#{:06x}", round)),
        ),
        (
            "secondary_color".to_string(),
            text("character varying(7)", "#ffffff".into()),
        ),
        (
            "logo_url".to_string(),
            text("text", format!("https://cdn.example.com/{tenant}.svg")),
        ),
        ("font_family".to_string(), text("text", "Inter".into())),
        (
            "custom_css".to_string(),
            text("text", "body { color: #333; }".into()),
        ),
    ]);
    Envelope {
        v: ENVELOPE_VERSION,
        op: Op::Upsert,
        table: "tenant_brandings".into(),
        tenant: TenantRef {
            id: tenant.to_string().into(),
            slug: format!("t{tenant}"),
        },
        origin: Origin {
            side: Side::Tenant,
            database: format!("tdb{tenant}"),
            lsn: "0/1".into(),
            commit_ts: None,
            xid: None,
        },
        version: Some(version.to_string()),
        source: Some(Side::Tenant),
        key: BTreeMap::from([("id".to_string(), Some("1".to_string()))]),
        columns,
    }
}

/// Fills the topic and the baseline's staging table with the same rows.
async fn prepare(client: &Client, topic: &str, w: &Workload) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .unwrap();
    let mut pending = Vec::new();
    for round in 0..w.versions {
        let version = version(round);
        for tenant in 1..=w.tenants {
            let payload = envelope(tenant, round, &version).to_json();
            let key = tenant.to_string();
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queued"),
            );
            if pending.len() >= 50_000 {
                for delivery in futures::future::join_all(pending.drain(..)).await {
                    delivery.expect("delivered").expect("acknowledged");
                }
            }
        }
        client
            .execute(
                "INSERT INTO staging SELECT $1::int, t, '#' || lpad(to_hex($1::int), 6, '0'), $2::text::timestamptz
                   FROM generate_series(1, $3::int) t",
                &[&(round as i32), &version, &(w.tenants as i32)],
            )
            .await
            .unwrap();
    }
    for delivery in futures::future::join_all(pending).await {
        delivery.expect("delivered").expect("acknowledged");
    }
}

const BASELINE_SQL: &str = "
INSERT INTO baseline AS cur (tenant_db_id, tenant_slug, primary_color, secondary_color, logo_url,
                             font_family, custom_css, cdc_version, cdc_source)
SELECT s.tenant, 't' || s.tenant, s.color, '#ffffff', 'https://cdn.example.com/' || s.tenant || '.svg',
       'Inter', 'body { color: #333; }', s.version, 'tenant'
  FROM staging s WHERE s.round = $1
ON CONFLICT (tenant_db_id) DO UPDATE SET primary_color = EXCLUDED.primary_color,
       secondary_color = EXCLUDED.secondary_color, logo_url = EXCLUDED.logo_url,
       font_family = EXCLUDED.font_family, custom_css = EXCLUDED.custom_css,
       cdc_version = EXCLUDED.cdc_version, cdc_source = EXCLUDED.cdc_source
 WHERE (cur.cdc_version, cur.cdc_source) < (EXCLUDED.cdc_version, EXCLUDED.cdc_source)";

async fn baseline(client: &Client, w: &Workload) -> f64 {
    client.batch_execute("TRUNCATE baseline").await.unwrap();
    let statement = client.prepare(BASELINE_SQL).await.unwrap();
    let started = Instant::now();
    for round in 0..w.versions {
        client
            .execute(&statement, &[&(round as i32)])
            .await
            .unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// Landlord rows, and those at the workload's newest version.
async fn landed(client: &Client, w: &Workload) -> (i64, i64) {
    let newest = format!("#{:06x}", w.versions - 1);
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE primary_color = $1) FROM tenant_brandings",
            &[&newest],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn replay(client: &Client, config_path: &PathBuf, w: &Workload) -> f64 {
    client
        .batch_execute("TRUNCATE tenant_brandings; TRUNCATE cdc_bridge.tombstones")
        .await
        .unwrap();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
        .arg("--config")
        .arg(config_path)
        .args(["replay", "--to", "landlord", "--from-beginning"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "replay failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let (rows, newest_rows) = landed(client, w).await;
    assert_eq!(
        (rows, newest_rows),
        (i64::from(w.tenants), i64::from(w.tenants)),
        "every tenant at its newest version"
    );
    seconds
}

/// The live applier (`cdc-bridge run --role applier`, a fresh consumer
/// group) taking the same topic into an emptied landlord: seconds from its
/// first row landing until every tenant is at its newest version (its
/// start, including a first reconcile of every tenant, is left out).
async fn live_applier(client: &Client, config_path: &PathBuf, w: &Workload, run: usize) -> f64 {
    client
        .batch_execute("TRUNCATE tenant_brandings; TRUNCATE cdc_bridge.tombstones")
        .await
        .unwrap();
    let text = std::fs::read_to_string(config_path).unwrap();
    let live_path = config_path.with_extension(format!("live{run}.toml"));
    let text = text
        .replace("_applier\"", &format!("_live{run}\""))
        .replace(
            "[tenants]\n",
            "[tenants]\nrediscover_interval_secs = 3600\n",
        );
    std::fs::write(&live_path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
        .arg("--config")
        .arg(&live_path)
        .args(["run", "--role", "applier"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let count = || landed(client, w);
    let deadline = Instant::now() + Duration::from_secs(600);
    while count().await.0 == 0 {
        assert!(Instant::now() < deadline, "the live applier wrote nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    while count().await.1 < i64::from(w.tenants) {
        assert!(Instant::now() < deadline, "the live applier did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    child.kill().ok();
    child.wait().ok();
    seconds
}

/// Landlord database, registry, topic and staging rows of one workload;
/// returns the database's client and the bridge configuration file.
async fn prepare_workload(w: &Workload, index: usize) -> (Client, PathBuf) {
    let db = format!("bench_replay_{}_{index}", std::process::id());
    let client = fresh_database(&db).await;
    client
        .batch_execute(include_str!("../scripts/seed/landlord.sql"))
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO tenants (id, slug, numeric_id, database_name)
               SELECT t, 't' || t, 1000 + t, 'tdb' || t FROM generate_series(1, {}) t;
             CREATE TABLE staging (round int, tenant bigint, color text, version timestamptz);",
            w.tenants
        ))
        .await
        .unwrap();
    let text = config_text(&db);
    let config = Config::parse(&text).expect("bench config");
    let mut setup_client = connect(&db).await;
    setup::install(&mut setup_client, &config, Side::Landlord, &db)
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE baseline (LIKE tenant_brandings INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
             CREATE INDEX ON staging (round);",
        )
        .await
        .unwrap();
    kafka::ensure_topic(&config.kafka).await.unwrap();
    prepare(&client, &config.kafka.topic, w).await;
    let config_path = std::env::temp_dir().join(format!("{db}.toml"));
    std::fs::write(&config_path, &text).unwrap();
    (client, config_path)
}

#[tokio::main]
async fn main() {
    if common::only_listing() {
        return;
    }
    let mut results = Vec::new();
    for (index, w) in WORKLOADS.iter().enumerate() {
        let (client, config_path) = prepare_workload(w, index).await;
        let events = f64::from(w.tenants * w.versions);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 0..RUNS {
            // Alternate who goes first so neither always finds the pages cached.
            if run % 2 == 0 {
                theirs.push(baseline(&client, w).await);
                ours.push(replay(&client, &config_path, w).await);
            } else {
                ours.push(replay(&client, &config_path, w).await);
                theirs.push(baseline(&client, w).await);
            }
        }
        // The live applier on the workload of many versions per tenant
        // (the issue's 1,000 tenants), once per run.
        let mut live = Vec::new();
        if index == 0 {
            for run in 0..RUNS {
                live.push(live_applier(&client, &config_path, w, run).await);
            }
            let live_s = median(live.clone());
            println!(
                "replay_throughput: live applier over {} tenants: {:.0} events/s (median of {RUNS}), {:.2} of the server-side baseline",
                w.tenants,
                events / live_s,
                median(theirs.clone()) / live_s
            );
        }
        let (ours_s, theirs_s) = (median(ours.clone()), median(theirs.clone()));
        let ratio = theirs_s / ours_s;
        println!(
            "replay_throughput: {events} events over {} tenants ({} versions each): replay {:.0} events/s, server-side INSERT … ON CONFLICT {:.0} rows/s, ratio {:.2} (median of {RUNS})",
            w.tenants,
            w.versions,
            events / ours_s,
            events / theirs_s,
            ratio
        );
        results.push(serde_json::json!({
            "events": events,
            "tenants": w.tenants,
            "versions_per_tenant": w.versions,
            "runs": RUNS,
            "replay_seconds": ours,
            "baseline_seconds": theirs,
            "replay_events_per_second_median": events / ours_s,
            "baseline_rows_per_second_median": events / theirs_s,
            "ratio_replay_to_baseline": ratio,
            "live_applier_seconds": live,
            "live_applier_events_per_second_median": (!live.is_empty()).then(|| events / median(live.clone())),
        }));
    }
    let json = serde_json::json!({ "benchmark": "replay_throughput", "results": results });
    common::write_results("replay_throughput", json);
}
