//! `GET /status`: the status board (`runtime::status`) as JSON, one page
//! of tenants at a time, filtered by state (`?state=`) and text (`?q=`).
//! Everything comes from memory: a request does no I/O, so 1,000 tenants
//! answer in milliseconds (`benches/status_endpoint.rs`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::model::Direction;
use crate::runtime::status::{
    ApplierState, ApplierTenant, CheckEntry, ReaderState, ReaderStatus, Snapshot, TenantEntry,
};

/// A tenant's reader counts as lagging from this many seconds of
/// unacknowledged changes (or `LAGGING_BYTES` of unconfirmed WAL).
pub const LAGGING_SECONDS: f64 = 30.0;
pub const LAGGING_BYTES: u64 = 64 * 1024 * 1024;

/// Tenants per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The query string of `/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StatusQuery {
    /// Only tenants in this state: a reader state (`streaming`, `down`, …),
    /// an applier state (`live`, `reconcile_pending`, `unreachable`), a
    /// check state (`consistent`, `differs`, …, or `inconsistent` for any
    /// divergence), `paused`, `lagging` or `error`.
    pub state: Option<String>,
    /// Only tenants whose id, slug or database name contains this text
    /// (case-insensitive).
    pub q: Option<String>,
    /// 1-based page number.
    pub page: Option<usize>,
    pub limit: Option<usize>,
}

/// Figures the global part needs that the board does not hold.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    pub events_in_per_second: f64,
    pub events_out_per_second: f64,
    pub window_seconds: f64,
}

#[derive(Serialize)]
struct Database<'a> {
    host: &'a str,
    port: Option<u16>,
    name: &'a str,
}

#[derive(Serialize)]
struct Reader {
    state: ReaderState,
    slot_lag_bytes: u64,
    slot_lag_seconds: f64,
}

#[derive(Serialize)]
struct Synced {
    to_landlord: Option<String>,
    to_tenant: Option<String>,
}

#[derive(Serialize)]
struct Check<'a> {
    state: &'static str,
    tenant_present: Option<bool>,
    landlord_present: Option<bool>,
    at: String,
    note: Option<&'a str>,
}

/// One tenant's row.
#[derive(Serialize)]
struct TenantStatus<'a> {
    id: &'a str,
    slug: &'a str,
    database: Database<'a>,
    direction: Direction,
    direction_override: bool,
    reader: Reader,
    reader_owner: Option<&'a str>,
    applier_state: ApplierState,
    last_synced: Synced,
    check: Option<Check<'a>>,
    lagging: bool,
    last_error: Option<&'a str>,
}

impl TenantStatus<'_> {
    fn unreachable(&self) -> bool {
        self.applier_state == ApplierState::Unreachable || self.reader.state == ReaderState::Down
    }

    fn consistent(&self) -> bool {
        self.check.as_ref().is_some_and(|c| c.state == "consistent")
    }

    fn inconsistent(&self) -> bool {
        self.check
            .as_ref()
            .is_some_and(|c| matches!(c.state, "differs" | "tenant_only" | "landlord_only"))
    }

    fn in_state(&self, state: &str) -> bool {
        match state {
            "paused" => self.direction == Direction::Paused,
            "lagging" => self.lagging,
            "error" => self.last_error.is_some(),
            "unreachable" => self.unreachable(),
            "inconsistent" => self.inconsistent(),
            _ => {
                self.reader.state.as_str() == state
                    || self.applier_state.as_str() == state
                    || self.check.as_ref().is_some_and(|c| c.state == state)
            }
        }
    }

    fn matches_text(&self, needle: &str) -> bool {
        [self.id, self.slug, self.database.name]
            .iter()
            .any(|field| field.to_lowercase().contains(needle))
    }
}

#[derive(Serialize, Default)]
struct Summary {
    tenants: usize,
    consistent: usize,
    consistent_percent: f64,
    inconsistent: usize,
    lagging: usize,
    unreachable: usize,
    paused: usize,
    readers_down: usize,
}

#[derive(Serialize)]
struct ConsumerLag<'a> {
    partitions: &'a BTreeMap<i32, i64>,
    total: i64,
}

#[derive(Serialize)]
struct Kafka<'a> {
    reachable: bool,
    topic: &'a str,
    consumer_group: &'a str,
    consumer_lag: ConsumerLag<'a>,
}

#[derive(Serialize)]
struct LastCheck<'a> {
    at: String,
    duration_seconds: f64,
    inconsistent_ratio: f64,
    counts: &'a BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
struct EventsPerSecond {
    #[serde(rename = "in")]
    into_kafka: f64,
    #[serde(rename = "out")]
    applied: f64,
    window_seconds: f64,
}

/// The landlord's own reader (its changes go to the tenants).
#[derive(Serialize)]
struct Landlord<'a> {
    database: &'a str,
    reader: Option<Reader>,
    /// The instance streaming it (several instances share the fleet).
    reader_owner: Option<&'a str>,
    last_error: Option<&'a str>,
}

#[derive(Serialize)]
struct Status<'a> {
    version: &'static str,
    uptime_seconds: f64,
    roles: &'a [&'static str],
    instance: Instance<'a>,
    landlord: Landlord<'a>,
    kafka: Kafka<'a>,
    events_per_second: EventsPerSecond,
    /// `null` until the dead-letter topic was read.
    dead_letters_waiting: Option<i64>,
    last_check: Option<LastCheck<'a>>,
    summary: Summary,
    /// Tenants matching the filter, over all pages.
    matching: usize,
    page: usize,
    limit: usize,
    pages: usize,
    tenants: Vec<TenantStatus<'a>>,
}

/// This process among the bridge's instances.
#[derive(Serialize)]
struct Instance<'a> {
    id: &'a str,
    /// Every instance with a current heartbeat, this one included.
    live: &'a [String],
    /// Sources whose lease this one holds.
    sources_owned: usize,
}

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

const LIVE: ApplierTenant = ApplierTenant {
    state: None,
    synced_to_landlord: None,
    synced_to_tenant: None,
    last_error: None,
};

fn tenant_status<'a>(
    config: &Config,
    snapshot: &'a Snapshot,
    tenant: &'a TenantEntry,
    down: &'a ReaderStatus,
) -> TenantStatus<'a> {
    let (host, port) = match tenant.server.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()),
        None => (tenant.server.as_str(), None),
    };
    let (direction, direction_override) = match &snapshot.directions {
        Some(d) => (d.of(&tenant.id), d.is_overridden(&tenant.id)),
        None => (config.sync.default_direction, false),
    };
    let reader = snapshot.readers.get(&tenant.database).unwrap_or(down);
    let applier = snapshot.applier.get(&tenant.id).unwrap_or(&LIVE);
    let check = snapshot
        .checks
        .get(&tenant.id)
        .map(|c: &'a CheckEntry| Check {
            state: c.state,
            tenant_present: c.tenant_present,
            landlord_present: c.landlord_present,
            at: time(c.at),
            note: c.note.as_deref(),
        });
    let last_error = applier
        .last_error
        .as_deref()
        .filter(|_| applier.state.is_some_and(|s| s != ApplierState::Live))
        .or(reader
            .last_error
            .as_deref()
            .filter(|_| reader.state != ReaderState::Streaming));
    TenantStatus {
        id: tenant.id.as_str(),
        slug: &tenant.slug,
        database: Database {
            host,
            port,
            name: &tenant.database,
        },
        direction,
        direction_override,
        reader: Reader {
            state: reader.state,
            slot_lag_bytes: reader.lag_bytes,
            slot_lag_seconds: reader.lag_seconds,
        },
        reader_owner: snapshot
            .instances
            .owners
            .get(&format!("tenant/{}", tenant.id.as_str()))
            .map(String::as_str),
        applier_state: applier.state.unwrap_or(ApplierState::Live),
        last_synced: Synced {
            to_landlord: applier.synced_to_landlord.map(time),
            to_tenant: applier.synced_to_tenant.map(time),
        },
        check,
        lagging: reader.lag_seconds >= LAGGING_SECONDS || reader.lag_bytes >= LAGGING_BYTES,
        last_error,
    }
}

/// The whole answer of `/status` for `query`, as JSON text.
pub fn render(config: &Config, snapshot: &Snapshot, rates: &Rates, query: &StatusQuery) -> String {
    // A reader not heard of yet: not started (reader role elsewhere, or
    // still starting up).
    let unknown = ReaderStatus {
        state: ReaderState::Stopped,
        lag_bytes: 0,
        lag_seconds: 0.0,
        last_error: None,
    };
    let mut all: Vec<TenantStatus<'_>> = snapshot
        .tenants
        .iter()
        .map(|t| tenant_status(config, snapshot, t, &unknown))
        .collect();
    all.sort_by(|a, b| id_order(a.id, b.id));
    let summary = summarize(&all);
    let needle = query
        .q
        .as_deref()
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let state = query.state.as_deref().filter(|s| !s.is_empty());
    all.retain(|t| {
        state.is_none_or(|s| t.in_state(s)) && needle.as_deref().is_none_or(|q| t.matches_text(q))
    });
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let matching = all.len();
    let pages = matching.div_ceil(limit).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let tenants: Vec<TenantStatus<'_>> = all
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    let total_lag = snapshot.consumer_lag.values().sum();
    let landlord_db = crate::postgres::database_name(&config.landlord.dsn).unwrap_or_default();
    let landlord_reader = snapshot.readers.get(&landlord_db);
    let status = Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: snapshot.uptime_seconds,
        roles: &snapshot.roles,
        instance: Instance {
            id: &snapshot.instances.me,
            live: &snapshot.instances.live,
            sources_owned: snapshot
                .instances
                .owners
                .values()
                .filter(|owner| **owner == snapshot.instances.me)
                .count(),
        },
        landlord: Landlord {
            database: &landlord_db,
            reader_owner: snapshot
                .instances
                .owners
                .get("landlord")
                .map(String::as_str),
            reader: landlord_reader.map(|r| Reader {
                state: r.state,
                slot_lag_bytes: r.lag_bytes,
                slot_lag_seconds: r.lag_seconds,
            }),
            last_error: landlord_reader
                .filter(|r| r.state != ReaderState::Streaming)
                .and_then(|r| r.last_error.as_deref()),
        },
        kafka: Kafka {
            reachable: crate::runtime::metrics::metrics().kafka_up.get() == 1,
            topic: &config.kafka.topic,
            consumer_group: &config.kafka.consumer_group,
            consumer_lag: ConsumerLag {
                partitions: &snapshot.consumer_lag,
                total: total_lag,
            },
        },
        events_per_second: EventsPerSecond {
            into_kafka: rates.events_in_per_second,
            applied: rates.events_out_per_second,
            window_seconds: rates.window_seconds,
        },
        dead_letters_waiting: (snapshot.dead_letters_waiting >= 0)
            .then_some(snapshot.dead_letters_waiting),
        last_check: snapshot.last_check.as_ref().map(|run| LastCheck {
            at: time(run.at),
            duration_seconds: run.duration_seconds,
            inconsistent_ratio: run.inconsistent_ratio,
            counts: &run.counts,
        }),
        summary,
        matching,
        page,
        limit,
        pages,
        tenants,
    };
    serde_json::to_string(&status).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn summarize(all: &[TenantStatus<'_>]) -> Summary {
    let count = |f: &dyn Fn(&TenantStatus<'_>) -> bool| all.iter().filter(|t| f(t)).count();
    let consistent = count(&|t| t.consistent());
    let checked = count(&|t| t.check.is_some());
    Summary {
        tenants: all.len(),
        consistent,
        consistent_percent: if checked == 0 {
            0.0
        } else {
            100.0 * consistent as f64 / checked as f64
        },
        inconsistent: count(&|t| t.inconsistent()),
        lagging: count(&|t| t.lagging),
        unreachable: count(&|t| t.unreachable()),
        paused: count(&|t| t.direction == Direction::Paused),
        readers_down: count(&|t| t.reader.state == ReaderState::Down),
    }
}

/// Numeric ids in numeric order, others after them in text order.
fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}
