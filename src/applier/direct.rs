//! The applier's write path for callers outside the consume loop (the
//! consistency repair, replay): the same pooled, authorised connections
//! (the applier's own pool inside `run`) and the same locked
//! last-writer-wins writer, so a repair or a replay racing a live write can
//! never replace a newer row.

use std::collections::HashMap;

use super::bulk::apply_group;
use super::ApplierError;
use crate::model::{Envelope, TenantId};
use crate::postgres::registry::Tenant;

pub(crate) use super::pool::TargetPool;
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
    pool: TargetPool,
    registry: HashMap<TenantId, Tenant>,
}

impl DirectWriter {
    /// Writes through `pool`, which must hold the apply key.
    pub(crate) fn new(pool: TargetPool, tenants: &[Tenant]) -> Self {
        DirectWriter {
            pool,
            registry: tenants.iter().map(|t| (t.id.clone(), t.clone())).collect(),
        }
    }

    /// Applies `envelopes` to `target` in order, under the conflict rule.
    pub(crate) async fn write(
        &mut self,
        target: &Target,
        envelopes: &[&Envelope],
    ) -> Result<Written, ApplierError> {
        let result = apply_group(&self.pool, &self.registry, target, envelopes).await?;
        Ok(Written {
            applied: result.applied,
            stale: result.stale,
            rejected: result.rejected,
        })
    }
}
