//! End-to-end latency: an application commit on one side to the row
//! committed on the other, through the whole bridge (reader, Kafka with
//! acks=all, applier), over 50 tenants at 1,000 and 5,000 commits/s, both
//! directions. Open-loop load: every tenant's connection commits on its
//! own schedule, whatever the bridge does.
//!
//! Where the time goes: the Kafka timestamp of each event (the broker's
//! append time: the bench sets the topic to `LogAppendTime`) splits the
//! latency into the reader's share (commit → in Kafka) and the applier's
//! (in Kafka → row landed).
//! Baseline, in the same run: the same load written a second time by the
//! application itself to a plain landlord table right after each commit
//! (a hand-written dual write), whose latency is one more commit.
//!
//! Needs the bench stack: `scripts/bench.sh end_to_end_latency`
//! (`CDC_BENCH_RATES=1000` for one rate only).
//! Output: `bench-results/end_to_end_latency.json`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fleet::{percentiles, Fleet};
use common::{brokers, median};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use tokio_postgres::Client;

const TENANTS: u32 = 50;

/// `CDC_BENCH_TENANTS` (to see how the fleet's size weighs), else `TENANTS`.
fn tenants() -> u32 {
    std::env::var("CDC_BENCH_TENANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(TENANTS)
}
const RATES: &[u32] = &[1_000, 5_000];
/// Rounds of load, each way at the first rate, before anything is
/// measured: a fresh stack answers slowly at first (the broker's JVM
/// compiles its hot paths, PostgreSQL creates its first WAL segments). In
/// a run without them the reader's share fell from 88 ms to 4 ms over the
/// first seven runs. Warming stops once a round (the third or later)
/// improves the reader share by less than a tenth, after at most this many
/// rounds.
const WARM_UP_ROUNDS: u32 = 10;
const WARM_UP_MIN_ROUNDS: u32 = 3;
const SECONDS: u32 = 8;
const RUNS: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Way {
    ToLandlord,
    ToTenant,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::ToLandlord => "tenant_to_landlord",
            Way::ToTenant => "landlord_to_tenant",
        }
    }
}

/// One commit of the load: which tenant, its unique color, when the
/// application's commit returned (µs since the epoch).
struct Sent {
    tenant: u32,
    color: String,
    committed_us: i64,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Commits `rate` per second over every tenant for `SECONDS`, each tenant
/// on its own connection and schedule; with `twin`, each commit is
/// followed by the same write to a plain landlord table (the baseline).
async fn load(fleet: &Fleet, way: Way, rate: u32, tag: u32, twin: bool) -> Vec<Sent> {
    let per_tenant = rate / tenants();
    let period = Duration::from_secs_f64(1.0 / f64::from(per_tenant));
    let mut tasks = Vec::new();
    for t in 1..=tenants() {
        let source = match way {
            Way::ToLandlord => fleet.tenant(t).await,
            Way::ToTenant => fleet.landlord().await,
        };
        let twin_db = match twin {
            true => Some(fleet.landlord().await),
            false => None,
        };
        let sql = match way {
            Way::ToLandlord => {
                "UPDATE tenant_brandings SET primary_color = $1 WHERE id = 1 AND $2::bigint > 0"
            }
            Way::ToTenant => {
                "UPDATE tenant_brandings SET primary_color = $1 WHERE tenant_db_id = $2"
            }
        };
        tasks.push(tokio::spawn(async move {
            let statement = source.prepare(sql).await.unwrap();
            let mut ticks = tokio::time::interval(period);
            // Start the tenants spread over one period, not all at once.
            tokio::time::sleep(period.mul_f64(f64::from(t) / f64::from(tenants()))).await;
            let mut sent = Vec::new();
            for seq in 0..per_tenant * SECONDS {
                ticks.tick().await;
                let color = format!("#{tag:02x}{seq:04x}");
                source
                    .execute(&statement, &[&color, &i64::from(t)])
                    .await
                    .unwrap();
                let committed_us = now_us();
                if let Some(twin) = &twin_db {
                    twin.execute(
                        "INSERT INTO bench_twin VALUES ($1, $2, clock_timestamp())",
                        &[&i64::from(t), &color],
                    )
                    .await
                    .unwrap();
                }
                sent.push(Sent {
                    tenant: t,
                    color,
                    committed_us,
                });
            }
            sent
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// When each version landed on the receiving side (µs), by tenant and
/// color, once every tenant's last version has (the applier writes only
/// the newest of a row's versions in one batch), or a minute passed.
async fn arrivals(
    fleet: &Fleet,
    way: Way,
    tag: u32,
    last: &[(u32, String)],
) -> HashMap<(u32, String), i64> {
    let pattern = format!("#{tag:02x}%");
    let sql = "SELECT tenant, color, (extract(epoch FROM at) * 1e6)::bigint FROM bench_arrivals WHERE color LIKE $1";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut landed = HashMap::new();
        let sources: Vec<Client> = match way {
            Way::ToLandlord => vec![fleet.landlord().await],
            Way::ToTenant => {
                let mut all = Vec::new();
                for t in 1..=tenants() {
                    all.push(fleet.tenant(t).await);
                }
                all
            }
        };
        for client in &sources {
            for row in client.query(sql, &[&pattern]).await.unwrap() {
                let tenant: i64 = row.get(0);
                let at: i64 = row.get(2);
                let key = (tenant as u32, row.get::<_, String>(1));
                landed
                    .entry(key)
                    .and_modify(|a: &mut i64| *a = (*a).min(at))
                    .or_insert(at);
            }
        }
        if last.iter().all(|key| landed.contains_key(key)) || Instant::now() > deadline {
            return landed;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Makes the broker stamp every event with its append time.
async fn log_append_time(topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic))
        .set("message.timestamp.type", "LogAppendTime");
    let results = admin
        .alter_configs(&[change], &AdminOptions::new())
        .await
        .unwrap();
    for result in results {
        result.expect("topic set to LogAppendTime");
    }
}

/// Kafka timestamps (µs) of this run's events from `way`'s source side.
fn kafka_times(fleet: &Fleet, way: Way, tag: u32) -> HashMap<(u32, String), i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{}_bench_{tag}", fleet.prefix))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topic = format!("{}.changes", fleet.prefix);
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in 0..6 {
        list.add_partition_offset(&topic, partition, Offset::Beginning)
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .unwrap();
        ends.insert(partition, high);
    }
    consumer.assign(&list).unwrap();
    let origin = match way {
        Way::ToLandlord => "tenant",
        Way::ToTenant => "landlord",
    };
    let prefix = format!("#{tag:02x}");
    let mut times = HashMap::new();
    let mut done: HashMap<i32, bool> = ends.iter().map(|(p, h)| (*p, *h == 0)).collect();
    while done.values().any(|d| !d) {
        let Some(Ok(message)) = consumer.poll(Duration::from_secs(5)) else {
            break;
        };
        if message.offset() + 1 >= ends[&message.partition()] {
            done.insert(message.partition(), true);
        }
        let Some(payload) = message.payload() else {
            continue;
        };
        let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(payload) else {
            continue;
        };
        let color = envelope["columns"]["primary_color"]["value"].as_str();
        if envelope["origin"]["side"] != origin || !color.is_some_and(|c| c.starts_with(&prefix)) {
            continue;
        }
        let tenant: u32 = envelope["tenant"]["id"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let at = message.timestamp().to_millis().unwrap_or(0) * 1000;
        times.insert((tenant, color.unwrap_or_default().to_string()), at);
    }
    times
}

/// Latency of every sent version: when it, or a newer version of the same
/// tenant that superseded it, landed; `None` for a version that never did.
fn latencies(sent: &[Sent], landed: &HashMap<(u32, String), i64>) -> Vec<Option<f64>> {
    let mut first_landing_from: HashMap<u32, i64> = HashMap::new();
    let mut out = vec![None; sent.len()];
    for (index, s) in sent.iter().enumerate().rev() {
        let own = landed.get(&(s.tenant, s.color.clone())).copied();
        let later = first_landing_from.get(&s.tenant).copied();
        let at = match (own, later) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = at {
            first_landing_from.insert(s.tenant, at);
            out[index] = Some((at - s.committed_us) as f64 / 1000.0);
        }
    }
    out
}

/// The applier's batches since `before` (a `/metrics` text): how many,
/// their mean size and mean time to apply.
fn batches(fleet: &Fleet, before: &str) -> serde_json::Value {
    let after = fleet.metrics();
    let delta = |name: &str| fleet.metric(&after, name) - fleet.metric(before, name);
    let count = delta("cdc_applier_batch_size_count");
    json!({
        "batches": count,
        "mean_size": delta("cdc_applier_batch_size_sum") / count,
        "mean_apply_ms": delta("cdc_applier_apply_duration_seconds_sum") / count * 1000.0,
    })
}

async fn one_run(fleet: &Fleet, way: Way, rate: u32, tag: u32) -> serde_json::Value {
    let before = fleet.metrics();
    let mut sent = load(fleet, way, rate, tag, false).await;
    // Each tenant's versions in commit order (for `latencies`).
    sent.sort_by_key(|s| (s.tenant, s.committed_us));
    let mut last: HashMap<u32, String> = HashMap::new();
    for s in &sent {
        last.insert(s.tenant, s.color.clone());
    }
    let last: Vec<(u32, String)> = last.into_iter().collect();
    let landed = arrivals(fleet, way, tag, &last).await;
    let kafka = kafka_times(fleet, way, tag);
    let all = latencies(&sent, &landed);
    let lost = all.iter().filter(|l| l.is_none()).count();
    // The applier's share ends where the latency does (a version a newer
    // one superseded in a batch landed with it), so the shares add up.
    let mut reader = Vec::new();
    let mut applier = Vec::new();
    for (s, latency) in sent.iter().zip(&all) {
        let key = (s.tenant, s.color.clone());
        if let (Some(k), Some(ms)) = (kafka.get(&key), latency) {
            let reader_ms = (k - s.committed_us) as f64 / 1000.0;
            reader.push(reader_ms);
            applier.push(ms - reader_ms);
        }
    }
    let total: Vec<f64> = all.into_iter().flatten().collect();
    let first = sent.iter().map(|s| s.committed_us).min().unwrap_or(0);
    let end = sent.iter().map(|s| s.committed_us).max().unwrap_or(0);
    let achieved = sent.len() as f64 / ((end - first).max(1) as f64 / 1e6);
    json!({
        "applier_batches": batches(fleet, &before),
        "sent": sent.len(),
        "achieved_commits_per_second": achieved,
        "lost": lost,
        "end_to_end": percentiles(total),
        "reader_share": if reader.is_empty() { json!(null) } else { percentiles(reader) },
        "applier_share": if applier.is_empty() { json!(null) } else { percentiles(applier) },
    })
}

/// The dual write's extra commit, at the same rate.
async fn baseline_run(fleet: &Fleet, rate: u32, tag: u32) -> serde_json::Value {
    let sent = load(fleet, Way::ToLandlord, rate, tag, true).await;
    let landlord = fleet.landlord().await;
    let rows = landlord
        .query(
            "SELECT tenant, color, (extract(epoch FROM at) * 1e6)::bigint FROM bench_twin WHERE color LIKE $1",
            &[&format!("#{tag:02x}%")],
        )
        .await
        .unwrap();
    let landed: HashMap<(u32, String), i64> = rows
        .iter()
        .map(|r| ((r.get::<_, i64>(0) as u32, r.get(1)), r.get(2)))
        .collect();
    let ms: Vec<f64> = sent
        .iter()
        .filter_map(|s| {
            let at = landed.get(&(s.tenant, s.color.clone()))?;
            Some((at - s.committed_us) as f64 / 1000.0)
        })
        .collect();
    percentiles(ms)
}

/// At most `CDC_BENCH_WARM_UP` rounds (0 to measure a cold stack), else `WARM_UP_ROUNDS`.
fn warm_up_rounds() -> u32 {
    std::env::var("CDC_BENCH_WARM_UP")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(WARM_UP_ROUNDS)
}

/// Load that is not measured (see `WARM_UP_ROUNDS`).
async fn warm_up(fleet: &Fleet, rate: u32, tag: &mut u32) {
    let mut previous = f64::INFINITY;
    for round in 0..warm_up_rounds() {
        let mut shares = Vec::new();
        for way in [Way::ToLandlord, Way::ToTenant] {
            *tag += 1;
            let run = one_run(fleet, way, rate, *tag).await;
            let share = run["reader_share"]["p50_ms"].as_f64().unwrap_or(f64::NAN);
            println!(
                "end_to_end_latency: warm-up {round} {}: reader share p50 {share:.1} ms",
                way.name()
            );
            shares.push(share);
        }
        let share = shares.iter().sum::<f64>() / shares.len() as f64;
        if round + 1 >= WARM_UP_MIN_ROUNDS && share >= previous * 0.9 {
            break;
        }
        previous = share;
    }
}

/// `CDC_BENCH_RUNS` (for a quick look by hand), else `RUNS`.
fn runs_wanted() -> usize {
    std::env::var("CDC_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(RUNS)
}

fn p(value: &serde_json::Value, field: &str) -> f64 {
    value["end_to_end"][field].as_f64().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    if common::only_listing() {
        return;
    }
    let prefix = format!("bench_e2e_{}", std::process::id());
    let mut fleet = Fleet::create(&prefix, tenants(), &common::extra_settings()).await;
    fleet.record_arrivals().await;
    fleet
        .landlord()
        .await
        .batch_execute("CREATE TABLE bench_twin (tenant bigint, color text, at timestamptz)")
        .await
        .unwrap();
    let first_sync = fleet.start().await.in_sync();
    log_append_time(&format!("{prefix}.changes")).await;
    println!(
        "end_to_end_latency: {} tenants in sync {:.1} s after start",
        tenants(),
        first_sync.as_secs_f64()
    );
    let mut results = Vec::new();
    let mut tag = 0;
    let rates: Vec<u32> = match std::env::var("CDC_BENCH_RATES") {
        Ok(list) => list
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect(),
        Err(_) => RATES.to_vec(),
    };
    warm_up(&fleet, rates[0], &mut tag).await;
    for &rate in &rates {
        for way in [Way::ToLandlord, Way::ToTenant] {
            let mut runs = Vec::new();
            let mut baselines = Vec::new();
            for _ in 0..runs_wanted() {
                tag += 1;
                runs.push(one_run(&fleet, way, rate, tag).await);
                if way == Way::ToLandlord {
                    tag += 1;
                    baselines.push(baseline_run(&fleet, rate, tag).await);
                }
            }
            for run in &runs {
                println!("end_to_end_latency:   run: {}", run["applier_batches"]);
            }
            let p50 = median(runs.iter().map(|r| p(r, "p50_ms")).collect());
            let p99 = median(runs.iter().map(|r| p(r, "p99_ms")).collect());
            let lost: u64 = runs.iter().map(|r| r["lost"].as_u64().unwrap_or(0)).sum();
            let reader_p50 = median(
                runs.iter()
                    .map(|r| r["reader_share"]["p50_ms"].as_f64().unwrap_or(f64::NAN))
                    .collect(),
            );
            let applier_p50 = median(
                runs.iter()
                    .map(|r| r["applier_share"]["p50_ms"].as_f64().unwrap_or(f64::NAN))
                    .collect(),
            );
            let base_p50 = (!baselines.is_empty()).then(|| {
                median(
                    baselines
                        .iter()
                        .map(|b| b["p50_ms"].as_f64().unwrap_or(f64::NAN))
                        .collect(),
                )
            });
            println!(
                "end_to_end_latency: {} at {rate} commits/s: p50 {p50:.1} ms, p99 {p99:.1} ms (median of {} runs); reader share p50 {reader_p50:.1} ms, applier share p50 {applier_p50:.1} ms; lost {lost}{}",
                way.name(),
                runs.len(),
                base_p50.map_or(String::new(), |b| format!("; dual-write baseline p50 {b:.2} ms, ratio {:.1}", p50 / b)),
            );
            results.push(json!({
                "direction": way.name(),
                "rate_commits_per_second": rate,
                "tenants": tenants(),
                "seconds": SECONDS,
                "runs": runs,
                "baselines_dual_write": baselines,
                "p50_ms_median": p50,
                "p99_ms_median": p99,
                "reader_share_p50_ms_median": reader_p50,
                "applier_share_p50_ms_median": applier_p50,
                "baseline_p50_ms_median": base_p50,
                "ratio_p50_to_baseline": base_p50.map(|b| p50 / b),
                "lost": lost,
            }));
        }
    }
    fleet.finish().await;
    common::write_results(
        "end_to_end_latency",
        json!({ "benchmark": "end_to_end_latency", "results": results }),
    );
}
