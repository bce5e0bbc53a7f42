//! The applier's target connections: one per target database, opened on
//! demand, dropped when idle, broken or moved, with the target tables'
//! columns and prepared statements cached per connection. At most
//! `applier.max_connections` are open (in the pool and in use together),
//! at most `applier.max_connections_per_server` to one server: to make
//! room, the least recently used idle connection is closed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Statement};

use super::routing::Target;
use super::target::TargetTable;
use crate::config::{Config, Dsn};
use crate::model::TenantId;
use crate::postgres::bridge_schema::{authorise_writes, ApplyKey};
use crate::postgres::registry::Tenant;
use crate::postgres::{connect, DbError};
use crate::runtime::metrics::metrics;

/// Marks the transaction as the bridge's own, for the triggers (the token
/// in a transaction-local setting, bound as a parameter so it shows in no
/// statement text) and for the reader (the marker message, first in the
/// transaction): `$1` token, `$2` prefix, `$3` mark.
const APPLY_PREAMBLE: &str =
    "SELECT set_config('cdc_bridge.applying', $1, true), pg_logical_emit_message(true, $2, $3)";

/// A connection to one target database and the tables known there.
pub(super) struct TargetDb {
    /// Database name for logs and errors.
    pub(super) label: String,
    pub(super) client: Client,
    /// The first statement of every apply transaction (see `writer`).
    pub(super) preamble: Statement,
    /// Target tables by logical name (columns and statements).
    pub(super) tables: HashMap<String, TargetTable>,
    /// `host:port`, for the per-server limit.
    server: String,
    last_used: Instant,
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

/// Open target connections by target.
pub(super) struct TargetPool {
    open: HashMap<Target, TargetDb>,
    /// Authorises the bridge's writes to the targets' triggers.
    key: ApplyKey,
    limits: Limits,
}

impl TargetPool {
    pub(super) fn new(key: ApplyKey, limits: Limits) -> Self {
        TargetPool {
            open: HashMap::new(),
            key,
            limits,
        }
    }

    pub(super) fn limits(&self) -> Limits {
        self.limits
    }

    /// Closes least recently used connections of the pool until the
    /// connections about to be in use outside it (`demand`, by server)
    /// fit the limits beside what stays.
    pub(super) fn make_room(&mut self, demand: &HashMap<String, usize>) {
        let in_use: usize = demand.values().sum();
        while self.open.len() + in_use > self.limits.total && self.evict_oldest(None) {}
        for (server, wanted) in demand {
            while self.open_on(server) + wanted > self.limits.per_server
                && self.evict_oldest(Some(server))
            {}
        }
        self.publish_counts();
    }

    fn open_on(&self, server: &str) -> usize {
        self.open.values().filter(|db| db.server == server).count()
    }

    /// Closes the least recently used connection (of `server`, if given);
    /// false when there is none.
    fn evict_oldest(&mut self, server: Option<&str>) -> bool {
        let oldest = self
            .open
            .iter()
            .filter(|(_, db)| server.is_none_or(|s| db.server == s))
            .min_by_key(|(_, db)| db.last_used)
            .map(|(target, _)| target.clone());
        let Some(target) = oldest else {
            return false;
        };
        self.open.remove(&target);
        metrics().connection_evictions.inc();
        true
    }

    /// Open connections per server, for `cdc_applier_connections`.
    fn publish_counts(&self) {
        let gauge = &metrics().connections;
        gauge.reset();
        for db in self.open.values() {
            gauge.with_label_values(&[db.server.as_str()]).inc();
        }
    }

    /// The server (`host:port`) `target` lives on.
    pub(super) fn server_of(
        config: &Config,
        tenants: &HashMap<TenantId, Tenant>,
        target: &Target,
    ) -> String {
        dsn_of(config, tenants, target)
            .map_or_else(|_| "<unknown>".to_string(), |(_, dsn)| dsn.server())
    }

    pub(super) fn key(&self) -> &ApplyKey {
        &self.key
    }

    /// The connection to `target`, opened now if there is none (or the one
    /// there broke).
    pub(super) async fn get(
        &mut self,
        target: &Target,
        config: &Config,
        tenants: &HashMap<TenantId, Tenant>,
    ) -> Result<&mut TargetDb, DbError> {
        if self
            .open
            .get(target)
            .is_some_and(|db| db.client.is_closed())
        {
            self.open.remove(target);
        }
        if !self.open.contains_key(target) {
            let server = Self::server_of(config, tenants, target);
            self.make_room(&HashMap::from([(server, 1)]));
            let db = open(target, config, tenants, &self.key).await?;
            self.open.insert(target.clone(), db);
            self.publish_counts();
        }
        let db = self
            .open
            .get_mut(target)
            .ok_or_else(|| DbError::Registry(format!("no connection to {target:?}")))?;
        db.last_used = Instant::now();
        Ok(db)
    }

    /// Takes the open connection to `target` out of the pool (to use it
    /// beside others); `put` returns it.
    pub(super) fn take(&mut self, target: &Target) -> Option<TargetDb> {
        self.open.remove(target).filter(|db| !db.client.is_closed())
    }

    pub(super) fn put(&mut self, target: Target, mut db: TargetDb) {
        db.last_used = Instant::now();
        self.open.insert(target, db);
    }

    /// Targets with a cached table that lacked a column changes carried,
    /// read at least `age` ago: worth reading again (the column may exist
    /// there by now).
    pub(super) fn with_missing_columns(&self, age: Duration) -> Vec<Target> {
        self.open
            .iter()
            .filter(|(_, db)| {
                db.tables
                    .values()
                    .any(|t| t.missing_columns().next().is_some() && t.columns_age() >= age)
            })
            .map(|(target, _)| target.clone())
            .collect()
    }

    pub(super) fn drop_target(&mut self, target: &Target) {
        self.open.remove(target);
    }

    pub(super) fn clear(&mut self) {
        self.open.clear();
    }

    /// Closes tenant connections unused for `idle` (the landlord's stays).
    pub(super) fn close_idle(&mut self, idle: Duration) {
        self.open
            .retain(|target, db| *target == Target::Landlord || db.last_used.elapsed() < idle);
    }
}

/// Opens a connection to `target`, authorised to write as the bridge.
pub(super) async fn open(
    target: &Target,
    config: &Config,
    tenants: &HashMap<TenantId, Tenant>,
    key: &ApplyKey,
) -> Result<TargetDb, DbError> {
    let (label, dsn) = dsn_of(config, tenants, target)?;
    let client = connect(&dsn, &label).await?;
    authorise_writes(&client, config, key, &label).await?;
    let preamble = client
        .prepare(APPLY_PREAMBLE)
        .await
        .map_err(|e| DbError::query(&label, "prepare the apply preamble", e))?;
    Ok(TargetDb {
        label,
        client,
        preamble,
        tables: HashMap::new(),
        server: dsn.server(),
        last_used: Instant::now(),
    })
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
