//! The applier's write path for callers outside the consume loop (the
//! consistency repair, replay): the same pooled, authorised connections
//! and the same locked last-writer-wins writer, so a repair or a replay
//! racing a live write can never replace a newer row.

use std::collections::HashMap;
use std::sync::Arc;

use super::bulk::apply_group_bulk;
use super::pool::{Limits, TargetPool};
use super::ApplierError;
use crate::config::Config;
use crate::model::{Envelope, TenantId};
use crate::postgres::bridge_schema::ApplyKey;
use crate::postgres::registry::Tenant;

pub(crate) use super::routing::Target;

/// What writing some changes to one target did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) applied: u64,
    /// The target already held a newer (or the same) version.
    pub(crate) stale: u64,
    /// Changes the target refused: their index and why.
    pub(crate) rejected: Vec<(usize, String)>,
}

/// Writes changes to targets on demand.
pub(crate) struct DirectWriter {
    config: Arc<Config>,
    pool: TargetPool,
    registry: HashMap<TenantId, Tenant>,
}

impl DirectWriter {
    pub(crate) fn new(config: Arc<Config>, key: ApplyKey, tenants: &[Tenant]) -> Self {
        DirectWriter {
            pool: TargetPool::new(key, Limits::of(&config)),
            config,
            registry: tenants.iter().map(|t| (t.id.clone(), t.clone())).collect(),
        }
    }

    /// Applies `envelopes` to `target` in order, under the conflict rule.
    pub(crate) async fn write(
        &mut self,
        target: &Target,
        envelopes: &[&Envelope],
    ) -> Result<Written, ApplierError> {
        let result = apply_group_bulk(
            &mut self.pool,
            &self.config,
            &self.registry,
            target,
            envelopes,
        )
        .await;
        if result.is_err() {
            // The connection may be broken; the next write opens a new one.
            self.pool.drop_target(target);
        }
        let result = result?;
        Ok(Written {
            applied: result.applied,
            stale: result.stale,
            rejected: result.rejected,
        })
    }

    /// Closes the connection to a tenant the caller is done with (a check
    /// of thousands of tenants must not keep thousands open).
    pub(crate) fn release(&mut self, target: &Target) {
        if *target != Target::Landlord {
            self.pool.drop_target(target);
        }
    }
}
