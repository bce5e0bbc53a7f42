//! The applier's target connections: one per target database, opened on
//! demand, dropped when idle, broken or moved, with the target tables'
//! columns and prepared statements cached per connection.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::routing::Target;
use super::target::TargetTable;
use crate::config::{Config, Dsn};
use crate::model::TenantId;
use crate::postgres::registry::Tenant;
use crate::postgres::{connect, DbError};

/// A connection to one target database and the tables known there.
pub(super) struct TargetDb {
    /// Database name for logs and errors.
    pub(super) label: String,
    pub(super) client: Client,
    /// Target tables by logical name (columns and statements).
    pub(super) tables: HashMap<String, TargetTable>,
    last_used: Instant,
}

/// Open target connections by target.
#[derive(Default)]
pub(super) struct TargetPool {
    open: HashMap<Target, TargetDb>,
}

impl TargetPool {
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
            Entry::Vacant(entry) => {
                let (label, dsn) = dsn_of(config, tenants, target)?;
                let client = connect(&dsn, &label).await?;
                entry.insert(TargetDb {
                    label,
                    client,
                    tables: HashMap::new(),
                    last_used: Instant::now(),
                })
            }
        };
        db.last_used = Instant::now();
        Ok(db)
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
