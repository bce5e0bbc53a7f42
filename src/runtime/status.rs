//! The status board: what the running parts publish about themselves for
//! `GET /status` and the dashboard (`service::status`), in one process-wide
//! place like the metrics.
//!
//! ```text
//!  service::readers / applier ──► registry (tenants, directions)
//!  source::supervisor, stream ──► reader state, slot lag (per database)
//!  applier (per batch)        ──► tenant states, last synced, consumer lag
//!  consistency check          ──► presence and consistency (per tenant)
//!  service::http              ◄── snapshot()
//! ```
//! Writers publish where a state changes or once per batch or status tick,
//! never per event: every map sits behind a short `RwLock`, the per-event
//! counters are atomics. Error texts are redacted on the way in.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::config::REDACTED;
use crate::model::direction::Directions;
use crate::model::{Side, TenantId};

/// What the reader of one database is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderState {
    /// Connecting, installing, preparing the slot.
    Starting,
    /// Sending the initial snapshot of a new slot.
    Snapshotting,
    Streaming,
    /// Failed; the supervisor tries again after a backoff.
    Down,
    /// Stopped on purpose (shutdown, tenant gone).
    Stopped,
}

impl ReaderState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderState::Starting => "starting",
            ReaderState::Snapshotting => "snapshotting",
            ReaderState::Streaming => "streaming",
            ReaderState::Down => "down",
            ReaderState::Stopped => "stopped",
        }
    }
}

/// The applier's state of one tenant (mirrors `applier::tenants`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplierState {
    Live,
    ReconcilePending,
    Unreachable,
}

impl ApplierState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplierState::Live => "live",
            ApplierState::ReconcilePending => "reconcile_pending",
            ApplierState::Unreachable => "unreachable",
        }
    }
}

/// One source database's reader.
#[derive(Debug, Clone)]
pub struct ReaderStatus {
    pub state: ReaderState,
    /// WAL between the server's position and the confirmed LSN.
    pub lag_bytes: u64,
    /// Age of the oldest change read from the slot and not yet
    /// acknowledged by Kafka (0 when everything is acknowledged).
    pub lag_seconds: f64,
    /// The last failure, redacted; kept after recovery for the operator.
    pub last_error: Option<String>,
}

/// A registered tenant as the bridge last read the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantEntry {
    pub id: TenantId,
    pub slug: String,
    /// `host:port` of its database server (no credentials).
    pub server: String,
    pub database: String,
}

/// One tenant's result in the latest consistency check.
#[derive(Debug, Clone)]
pub struct CheckEntry {
    /// `consistency::compare::State::name`.
    pub state: &'static str,
    pub tenant_present: Option<bool>,
    pub landlord_present: Option<bool>,
    pub at: SystemTime,
    /// Why it is as it is (redacted).
    pub note: Option<String>,
}

/// The latest completed check of every tenant.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub at: SystemTime,
    pub duration_seconds: f64,
    pub inconsistent_ratio: f64,
    pub counts: BTreeMap<&'static str, usize>,
}

/// Per-tenant facts of the applier.
#[derive(Debug, Clone, Default)]
pub struct ApplierTenant {
    /// Absent: live.
    pub state: Option<ApplierState>,
    /// Last commit of a change into the landlord (tenant → landlord).
    pub synced_to_landlord: Option<SystemTime>,
    /// Last commit of a change into the tenant database.
    pub synced_to_tenant: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// Who streams which source when several instances share the fleet (the
/// reader role's view at its last heartbeat).
#[derive(Debug, Clone, Default)]
pub struct Instances {
    pub me: String,
    pub live: Vec<String>,
    /// Source (`landlord`, `tenant/ID`) to the instance holding its lease.
    pub owners: HashMap<String, String>,
    /// Until when this instance's leases are safe without a heartbeat.
    pub valid_until: Option<Instant>,
}

/// Everything published, as one consistent copy.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uptime_seconds: f64,
    pub roles: Vec<&'static str>,
    pub tenants: Arc<Vec<TenantEntry>>,
    pub directions: Option<Directions>,
    pub readers: HashMap<String, ReaderStatus>,
    pub applier: HashMap<TenantId, ApplierTenant>,
    pub checks: HashMap<TenantId, CheckEntry>,
    pub last_check: Option<CheckRun>,
    pub consumer_lag: BTreeMap<i32, i64>,
    /// -1 until counted.
    pub dead_letters_waiting: i64,
    pub instances: Arc<Instances>,
}

/// See the module documentation.
pub struct StatusBoard {
    started: Instant,
    roles: RwLock<Vec<&'static str>>,
    tenants: RwLock<Arc<Vec<TenantEntry>>>,
    directions: RwLock<Option<Directions>>,
    readers: RwLock<HashMap<String, ReaderStatus>>,
    applier: RwLock<HashMap<TenantId, ApplierTenant>>,
    checks: RwLock<HashMap<TenantId, CheckEntry>>,
    last_check: RwLock<Option<CheckRun>>,
    consumer_lag: RwLock<BTreeMap<i32, i64>>,
    /// Events applied, by the side written: `[landlord, tenant]`.
    applied: [AtomicU64; 2],
    dead_letters_waiting: AtomicI64,
    instances: RwLock<Arc<Instances>>,
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Landlord => 0,
        Side::Tenant => 1,
    }
}

impl StatusBoard {
    fn new() -> Self {
        StatusBoard {
            started: Instant::now(),
            roles: RwLock::default(),
            tenants: RwLock::default(),
            directions: RwLock::default(),
            readers: RwLock::default(),
            applier: RwLock::default(),
            checks: RwLock::default(),
            last_check: RwLock::default(),
            consumer_lag: RwLock::default(),
            applied: [AtomicU64::new(0), AtomicU64::new(0)],
            dead_letters_waiting: AtomicI64::new(-1),
            instances: RwLock::default(),
        }
    }

    pub fn set_instances(&self, instances: Instances) {
        *write(&self.instances) = Arc::new(instances);
    }

    pub fn role_started(&self, role: &'static str) {
        let mut roles = write(&self.roles);
        if !roles.contains(&role) {
            roles.push(role);
        }
    }

    /// A fresh read of the registry (replaces the previous one); check
    /// results of tenants no longer registered are forgotten.
    pub fn set_tenants(&self, tenants: Vec<TenantEntry>) {
        let mut current = write(&self.tenants);
        if **current != tenants {
            let ids: std::collections::HashSet<&TenantId> = tenants.iter().map(|t| &t.id).collect();
            write(&self.checks).retain(|id, _| ids.contains(id));
            drop(ids);
            *current = Arc::new(tenants);
        }
    }

    pub fn set_directions(&self, directions: &Directions) {
        let mut current = write(&self.directions);
        if current.as_ref() != Some(directions) {
            *current = Some(directions.clone());
        }
    }

    pub fn set_reader_state(&self, database: &str, state: ReaderState) {
        let mut readers = write(&self.readers);
        let entry = readers
            .entry(database.to_string())
            .or_insert_with(|| ReaderStatus {
                state,
                lag_bytes: 0,
                lag_seconds: 0.0,
                last_error: None,
            });
        entry.state = state;
    }

    /// The reader of `database` failed with `error`.
    pub fn reader_failed(&self, database: &str, error: &str) {
        self.set_reader_state(database, ReaderState::Down);
        if let Some(entry) = write(&self.readers).get_mut(database) {
            entry.last_error = Some(redact(error));
        }
    }

    /// The slot lag, from the reader's status tick.
    pub fn set_reader_lag(&self, database: &str, bytes: u64, seconds: f64) {
        if let Some(entry) = write(&self.readers).get_mut(database) {
            entry.lag_bytes = bytes;
            entry.lag_seconds = seconds;
        }
    }

    /// The applier's tenant states (tenants not listed are live); tenants
    /// no longer registered are forgotten.
    pub fn set_applier_states(
        &self,
        registered: impl Fn(&TenantId) -> bool,
        states: &[(TenantId, ApplierState)],
    ) {
        let mut applier = write(&self.applier);
        applier.retain(|id, _| registered(id));
        for entry in applier.values_mut() {
            entry.state = None;
        }
        for (id, state) in states {
            applier.entry(id.clone()).or_default().state = Some(*state);
        }
    }

    /// A tenant's changes could not be written: why (redacted).
    pub fn applier_failed(&self, tenant: &TenantId, error: &str) {
        write(&self.applier)
            .entry(tenant.clone())
            .or_default()
            .last_error = Some(redact(error));
    }

    /// Changes of `tenants` were committed into `side`; `applied` of them
    /// were written (the rest were stale).
    pub fn synced(&self, side: Side, tenants: &[&TenantId], applied: u64) {
        self.applied[side_index(side)].fetch_add(applied, Ordering::Relaxed);
        if tenants.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let mut applier = write(&self.applier);
        for id in tenants {
            let entry = applier.entry((*id).clone()).or_default();
            match side {
                Side::Landlord => entry.synced_to_landlord = Some(now),
                Side::Tenant => entry.synced_to_tenant = Some(now),
            }
        }
    }

    /// Events applied into `side` since start.
    pub fn applied(&self, side: Side) -> u64 {
        self.applied[side_index(side)].load(Ordering::Relaxed)
    }

    pub fn set_check(&self, tenant: &TenantId, mut entry: CheckEntry) {
        entry.note = entry.note.map(|n| redact(&n));
        write(&self.checks).insert(tenant.clone(), entry);
    }

    pub fn set_check_run(&self, run: CheckRun) {
        *write(&self.last_check) = Some(run);
    }

    pub fn set_consumer_lag(&self, lag: BTreeMap<i32, i64>) {
        *write(&self.consumer_lag) = lag;
    }

    pub fn set_dead_letters_waiting(&self, count: i64) {
        self.dead_letters_waiting.store(count, Ordering::Relaxed);
    }

    /// Everything, copied.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            roles: read(&self.roles).clone(),
            tenants: Arc::clone(&read(&self.tenants)),
            directions: read(&self.directions).clone(),
            readers: read(&self.readers).clone(),
            applier: read(&self.applier).clone(),
            checks: read(&self.checks).clone(),
            last_check: read(&self.last_check).clone(),
            consumer_lag: read(&self.consumer_lag).clone(),
            dead_letters_waiting: self.dead_letters_waiting.load(Ordering::Relaxed),
            instances: Arc::clone(&read(&self.instances)),
        }
    }
}

/// Error text with anything that looks like a credential masked: the
/// errors published here come from our own messages, which never carry a
/// password, but a driver's text might echo a connection string.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let lower = word.to_ascii_lowercase();
        if let Some(at) = lower.find("password=") {
            out.push_str(&word[..at + "password=".len()]);
            out.push_str(REDACTED);
        } else if let (Some(scheme), Some(at)) = (word.find("://"), word.rfind('@')) {
            // postgres://user:secret@host: keep the scheme and the host.
            out.push_str(&word[..scheme + 3]);
            out.push_str(REDACTED);
            out.push_str(&word[at..]);
        } else {
            out.push_str(word);
        }
    }
    out
}

/// The process-wide status board.
pub fn status() -> &'static StatusBoard {
    static STATUS: OnceLock<StatusBoard> = OnceLock::new();
    STATUS.get_or_init(StatusBoard::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_passwords_in_key_value_and_url_forms() {
        assert_eq!(
            redact("connect host=db password=hunter2 failed"),
            "connect host=db password=*** failed"
        );
        assert_eq!(
            redact("at postgres://app:hunter2@db:5432/x refused"),
            "at postgres://***@db:5432/x refused"
        );
        assert_eq!(redact("plain error"), "plain error");
    }

    #[test]
    fn applier_states_reset_to_live_and_forget_unregistered_tenants() {
        let board = StatusBoard::new();
        let (one, two) = (TenantId::from("1"), TenantId::from("2"));
        board.set_applier_states(|_| true, &[(one.clone(), ApplierState::Unreachable)]);
        board.synced(Side::Landlord, &[&two], 3);
        board.set_applier_states(|id| *id == one, &[]);
        let snapshot = board.snapshot();
        assert_eq!(snapshot.applier[&one].state, None);
        assert!(!snapshot.applier.contains_key(&two));
        assert_eq!(board.applied(Side::Landlord), 3);
    }
}
