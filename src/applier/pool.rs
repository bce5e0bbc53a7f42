//! The applier's target connections: one per target database, opened on
//! demand, dropped when idle, broken or moved, with the target tables'
//! columns and prepared statements cached per connection.

use std::collections::hash_map::Entry;
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
    last_used: Instant,
}

/// Open target connections by target.
pub(super) struct TargetPool {
    open: HashMap<Target, TargetDb>,
    /// Authorises the bridge's writes to the targets' triggers.
    key: ApplyKey,
}

impl TargetPool {
    pub(super) fn new(key: ApplyKey) -> Self {
        TargetPool {
            open: HashMap::new(),
            key,
        }
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
        let db = match self.open.entry(target.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(open(target, config, tenants, &self.key).await?),
        };
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
