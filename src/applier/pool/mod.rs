//! The bridge's target connections, one pool per process shared by every
//! part that writes or reads a target (the consume loop, reconcile, the
//! tombstone cleanup, the consistency check and its repair): connections
//! are keyed by database identity (side, user, host, port, database), so
//! tenants living in one database share them. At most
//! `applier.max_connections` are open (idle and leased together), at most
//! `applier.max_connections_per_server` to one server; to make room the
//! least recently used idle connection is closed, the landlord's last.
//!
//! ```text
//!  lease(target) ─► idle connection of that identity? ─► leased
//!                   room under the caps (evict LRU)?  ─► leased, opened on first use
//!                   else wait until a lease ends       (queued, never dropped)
//!  lease.finish() ─► back to idle      drop(lease) ─► closed (broken, timed out)
//! ```
//!
//! No caller waits while it holds a lease (they finish one before asking
//! for the next, and the fan-out only waits holding none), so leases can
//! never deadlock whatever the caps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{Client, Statement};

use super::routing::Target;
use super::target::TargetTable;
use crate::config::{Config, Dsn};
use crate::model::{Envelope, TenantId, TenantRef};
use crate::postgres::bridge_schema::{authorise_writes, ApplyKey};
use crate::postgres::registry::Tenant;
use crate::postgres::{connect, table_columns, DbError};
use crate::runtime::metrics::metrics;
use crate::source::tenant_rows::current_state;
use counts::Counts;

mod counts;

/// Marks the transaction as the bridge's own, for the triggers (the token
/// in a transaction-local setting, bound as a parameter so it shows in no
/// statement text) and for the reader (the marker message, first in the
/// transaction), and sets its lock timeout: `$1` token, `$2` prefix, `$3`
/// mark, `$4` lock timeout (see `writer::begin_apply`).
const APPLY_PREAMBLE: &str = "SELECT set_config('cdc_bridge.applying', $1, true), \
     set_config('lock_timeout', $4, true), pg_logical_emit_message(true, $2, $3)";

/// A connection to one target database and the tables known there.
pub(crate) struct TargetDb {
    /// Database name for logs and errors.
    pub(crate) label: String,
    pub(crate) client: Client,
    /// The first statement of every apply transaction (see `writer`).
    pub(super) preamble: Statement,
    /// Target tables by logical name (columns and statements).
    pub(super) tables: HashMap<String, TargetTable>,
    /// The target it was last used for (to re-read its columns).
    target: Target,
}

/// How many connections may be open.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) total: usize,
    pub(super) per_server: usize,
}

impl Limits {
    pub(super) fn of(config: &Config) -> Limits {
        Limits {
            total: config.applier.max_connections,
            per_server: config.applier.max_connections_per_server,
        }
    }
}

/// Where a target lives: what the pool keys and counts connections by.
#[derive(Clone)]
struct Place {
    target: Target,
    label: String,
    dsn: Dsn,
    /// Side, user, host, port and database: connections to one identity
    /// are interchangeable.
    identity: String,
    /// `host:port`, for the per-server cap.
    server: String,
}

/// The shared pool; clones share the connections and the caps.
#[derive(Clone)]
pub struct TargetPool {
    shared: Arc<Shared>,
}

struct Shared {
    config: Arc<Config>,
    /// Authorises the bridge's writes to the targets' triggers; `None`
    /// for a pool that only reads (a check without repair).
    key: Option<ApplyKey>,
    counts: Mutex<Counts<TargetDb>>,
    /// Woken when a lease ends (a connection may be free).
    freed: Notify,
}

impl TargetPool {
    pub(crate) fn new(config: Arc<Config>, key: Option<ApplyKey>) -> Self {
        let limits = Limits::of(&config);
        let landlord = identity(Target::Landlord.side(), &config.landlord.dsn);
        TargetPool {
            shared: Arc::new(Shared {
                config,
                key,
                counts: Mutex::new(Counts::new(limits, landlord)),
                freed: Notify::new(),
            }),
        }
    }

    /// The token writes are authorised with; `None` for a read-only pool.
    pub(super) fn key(&self) -> Option<&ApplyKey> {
        self.shared.key.as_ref()
    }

    pub(super) fn config(&self) -> &Arc<Config> {
        &self.shared.config
    }

    /// A connection to `target`, waiting (queued) while the caps are used
    /// by leases of others.
    pub(crate) async fn lease(
        &self,
        target: &Target,
        registry: &HashMap<TenantId, Tenant>,
    ) -> Result<Lease, DbError> {
        let place = self.place(target, registry)?;
        let mut waited = false;
        loop {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(lease) = self.lease_now(&place) {
                return Ok(lease);
            }
            if !waited {
                metrics().connection_waits.inc();
                waited = true;
            }
            freed.await;
        }
    }

    /// Runs `work` on a leased connection to `target`; the connection goes
    /// back to the pool when `work` succeeds, and is closed when it fails.
    pub(crate) async fn with<R, E: From<DbError>>(
        &self,
        target: &Target,
        registry: &HashMap<TenantId, Tenant>,
        work: impl AsyncFnOnce(&mut TargetDb) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut lease = self.lease(target, registry).await?;
        let result = work(lease.db().await?).await;
        if result.is_ok() {
            lease.finish();
        }
        result
    }

    /// The tenant's current rows and tombstones on `target` (what a
    /// reconcile or a check compares).
    pub(crate) async fn current_state(
        &self,
        target: &Target,
        registry: &HashMap<TenantId, Tenant>,
        tenant: &TenantRef,
    ) -> Result<Vec<Envelope>, DbError> {
        let config = &self.shared.config;
        self.with(target, registry, async |db| {
            current_state(&db.client, config, target.side(), &db.label, tenant).await
        })
        .await
    }

    /// Whether a connection to `target` waits idle in the pool.
    pub(super) fn has_idle(&self, target: &Target, registry: &HashMap<TenantId, Tenant>) -> bool {
        self.place(target, registry)
            .is_ok_and(|place| self.counts().has_idle(&place.identity))
    }

    /// A connection to `target` if one is idle or fits the caps now.
    pub(super) fn try_lease(
        &self,
        target: &Target,
        registry: &HashMap<TenantId, Tenant>,
    ) -> Result<Option<Lease>, DbError> {
        let place = self.place(target, registry)?;
        Ok(self.lease_now(&place))
    }

    fn lease_now(&self, place: &Place) -> Option<Lease> {
        let mut counts = self.counts();
        let db = counts.lease(&place.identity, &place.server)?;
        counts.publish();
        Some(Lease {
            pool: self.clone(),
            place: place.clone(),
            db,
            keep: false,
        })
    }

    fn place(
        &self,
        target: &Target,
        registry: &HashMap<TenantId, Tenant>,
    ) -> Result<Place, DbError> {
        let (label, dsn) = dsn_of(&self.shared.config, registry, target)?;
        let place = Place {
            target: target.clone(),
            identity: identity(target.side(), &dsn),
            server: dsn.server(),
            label,
            dsn,
        };
        self.counts()
            .routes
            .insert(target.clone(), place.identity.clone());
        Ok(place)
    }

    fn counts(&self) -> MutexGuard<'_, Counts<TargetDb>> {
        // A panic elsewhere cannot leave the counts half-updated: every
        // change is a few plain assignments.
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Targets with a cached table that lacked a column changes carried,
    /// read at least `age` ago: worth reading again (the column may exist
    /// there by now).
    pub(super) fn with_missing_columns(&self, age: Duration) -> Vec<Target> {
        self.counts()
            .idle
            .iter()
            .filter(|idle| {
                idle.conn
                    .tables
                    .values()
                    .any(|t| t.missing_columns().next().is_some() && t.columns_age() >= age)
            })
            .map(|idle| idle.conn.target.clone())
            .collect()
    }

    /// Closes the idle connections to where `target` was last leased (it
    /// broke, moved or stopped answering).
    pub(super) fn drop_target(&self, target: &Target) {
        let mut counts = self.counts();
        if let Some(identity) = counts.routes.get(target).cloned() {
            counts.idle.retain(|idle| idle.identity != identity);
            counts.publish();
        }
    }

    /// Closes every idle connection.
    pub(super) fn clear(&self) {
        let mut counts = self.counts();
        counts.idle.clear();
        counts.publish();
    }

    /// Closes connections idle for `idle`, but one to the landlord.
    pub(super) fn close_idle(&self, idle: Duration) {
        let mut counts = self.counts();
        counts.close_idle(idle);
        counts.publish();
    }
}

/// One caller's use of a connection. Ended with `finish` the connection
/// goes back to the pool; dropped (an error, a timeout) it is closed.
pub(crate) struct Lease {
    pool: TargetPool,
    place: Place,
    db: Option<TargetDb>,
    keep: bool,
}

impl Lease {
    /// The connection, opened now if the lease came without one.
    pub(crate) async fn db(&mut self) -> Result<&mut TargetDb, DbError> {
        if self.db.as_ref().is_some_and(|db| db.client.is_closed()) {
            self.db = None;
        }
        if self.db.is_none() {
            let shared = &self.pool.shared;
            let started = std::time::Instant::now();
            let db = open(&self.place, &shared.config, shared.key.as_ref()).await?;
            let seconds = started.elapsed().as_secs_f64();
            metrics().batches.connection_open_seconds.observe(seconds);
            self.db = Some(db);
        }
        self.db
            .as_mut()
            .ok_or_else(|| DbError::Registry("no connection".to_string()))
    }

    /// Gives a working connection back for reuse.
    pub(crate) fn finish(mut self) {
        self.keep = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let db = self
            .db
            .take()
            .filter(|db| self.keep && !db.client.is_closed());
        let mut counts = self.pool.counts();
        let back = db.map(|mut db| {
            db.target = self.place.target.clone();
            db
        });
        counts.end_lease(&self.place.identity, &self.place.server, back);
        counts.publish();
        drop(counts);
        self.pool.shared.freed.notify_waiters();
    }
}

/// Connections to one identity are interchangeable; the side keeps a
/// landlord and a tenant in one database apart (their tables differ).
fn identity(side: crate::model::Side, dsn: &Dsn) -> String {
    format!("{side}|{}", dsn.identity())
}

/// Opens a connection to `place`, authorised to write as the bridge when
/// the pool has the key.
async fn open(place: &Place, config: &Config, key: Option<&ApplyKey>) -> Result<TargetDb, DbError> {
    let label = &place.label;
    let client = connect(&place.dsn, label).await?;
    let authorise = async {
        match key {
            Some(key) => authorise_writes(&client, config, key, label).await,
            None => Ok(()),
        }
    };
    let prepare = async {
        client
            .prepare(APPLY_PREAMBLE)
            .await
            .map_err(|e| DbError::query(label, "prepare the apply preamble", e))
    };
    let tables = async {
        match key {
            Some(_) => Ok(read_tables(&client, config, place.target.side(), label).await),
            None => Ok(HashMap::new()),
        }
    };
    // One round trip for the three (a new connection per tenant database
    // adds up when a batch reaches more databases than the caps hold open,
    // each round trip waiting its turn on a busy server).
    let ((), preamble, tables) = futures::try_join!(authorise, prepare, tables)?;
    Ok(TargetDb {
        label: label.clone(),
        client,
        preamble,
        tables,
        target: place.target.clone(),
    })
}

/// The configured tables' columns on a connection that will write, read
/// ahead of its first write. A table that cannot be read is left out: the
/// first write into it reads it again and reports why.
async fn read_tables(
    client: &Client,
    config: &Config,
    side: crate::model::Side,
    label: &str,
) -> HashMap<String, TargetTable> {
    let reads = config.tables.iter().map(|table| async move {
        let name = table.on(side);
        let columns = table_columns(client, label, name).await.ok()?;
        Some((
            table.name.clone(),
            TargetTable::new(config, &table.name, name, columns),
        ))
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Label and DSN of a target database.
fn dsn_of(
    config: &Config,
    tenants: &HashMap<TenantId, Tenant>,
    target: &Target,
) -> Result<(String, Dsn), DbError> {
    match target {
        Target::Landlord => Ok(("landlord".to_string(), config.landlord.dsn.clone())),
        Target::Tenant(id) => {
            let tenant = tenants
                .get(id)
                .ok_or_else(|| DbError::Registry(format!("tenant {id} is not in the registry")))?;
            Ok((
                tenant.database_name.clone(),
                tenant.dsn(&config.tenants.connection_template),
            ))
        }
    }
}
