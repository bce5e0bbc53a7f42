//! Writing a batch's changes to the tenant databases side by side: each
//! tenant target is written on its own connection, at most
//! `applier.max_parallel_targets` at once, each within
//! `applier.target_timeout_secs`. A slow, silent or vanished tenant server
//! costs its own tenant that timeout once (it is then unreachable, and
//! reconciled when it answers again); it never holds the others.
//!
//! ```text
//!  batch ─► landlord group (in order, in this task)
//!        └► tenant groups ─► ┬ tenant 1: connection ─► transaction ─► ok
//!                            ├ tenant 2: …                           ─► ok
//!                            └ tenant 3: silent ─► timeout ─► unreachable (changes deferred)
//! ```

use std::time::Duration;

use futures::stream::{self, StreamExt};
use rdkafka::message::OwnedMessage;

use super::bulk::apply_newest;
use super::pool::{Lease, TargetDb};
use super::routing::{unknown_tenant, Target};
use super::tenants::TenantState;
use super::writer::GroupResult;
use super::{Applier, ApplierError};
use crate::model::Envelope;
use crate::runtime::metrics::{count_events, metrics, EventOutcome};

/// One tenant target's share of a batch.
pub(super) type TenantGroup<'m> = (Target, Vec<(&'m OwnedMessage, &'m Envelope)>);

/// What came back from writing one tenant target.
struct Written<'m> {
    target: Target,
    items: Vec<(&'m OwnedMessage, &'m Envelope)>,
    result: Result<GroupResult, ApplierError>,
}

impl Applier {
    /// Writes every tenant group (see the module doc); only a failure to
    /// record a dead letter fails the batch.
    pub(super) async fn apply_to_tenants(
        &mut self,
        groups: Vec<TenantGroup<'_>>,
    ) -> Result<(), ApplierError> {
        let mut pending = Vec::new();
        for (target, items) in groups {
            let Target::Tenant(id) = &target else {
                continue;
            };
            if !self.tenants.registry.contains_key(id) {
                let reason = unknown_tenant(id);
                for (message, _) in &items {
                    self.dead_letters.send(message, &reason).await?;
                }
            } else if self.tenants.state(id) == TenantState::Unreachable {
                count_events(EventOutcome::Deferred, items.len() as u64);
            } else {
                pending.push((target, items));
            }
        }
        // Databases with an idle connection first: they are written at
        // once, and the ones that need a new connection then close the
        // least recently used idle ones, which are not this batch's. In
        // batch order, when more databases are busy than the caps hold,
        // each new connection would close one a later database of the same
        // batch was about to use, and every batch would reconnect them all.
        let registry = &self.tenants.registry;
        pending.sort_by_key(|(target, _)| !self.pool.has_idle(target, registry));
        let written = self.write_side_by_side(pending).await;
        for done in written {
            self.settle(done).await?;
        }
        Ok(())
    }

    /// Writes the groups at most `applier.max_parallel_targets` at a time,
    /// each as soon as the pool has a connection for it (the caps bound
    /// the rest: a group waits for a connection, holding none).
    async fn write_side_by_side<'m>(&self, groups: Vec<TenantGroup<'m>>) -> Vec<Written<'m>> {
        let writes: Vec<_> = groups
            .into_iter()
            .map(|(target, items)| self.write_one(target, items))
            .collect();
        stream::iter(writes)
            .buffer_unordered(self.config.applier.max_parallel_targets)
            .collect()
            .await
    }

    /// One tenant target's changes, on a leased connection (opened if
    /// needed), within the target timeout.
    async fn write_one<'m>(
        &self,
        target: Target,
        items: Vec<(&'m OwnedMessage, &'m Envelope)>,
    ) -> Written<'m> {
        let envelopes: Vec<&Envelope> = items.iter().map(|(_, e)| *e).collect();
        let result = match self.pool.lease(&target, &self.tenants.registry).await {
            Ok(lease) => {
                let _in_flight = InFlight::start();
                let write =
                    async |db: &mut TargetDb| self.write_newest(db, &target, &envelopes).await;
                self.on_lease(&target, lease, write).await
            }
            Err(error) => Err(error.into()),
        };
        Written {
            target,
            items,
            result,
        }
    }

    /// `envelopes` written to `target` on `db` (see `bulk::apply_newest`).
    pub(super) async fn write_newest(
        &self,
        db: &mut TargetDb,
        target: &Target,
        envelopes: &[&Envelope],
    ) -> Result<GroupResult, ApplierError> {
        let key = self.pool.key().ok_or(ApplierError::ReadOnly)?;
        let registry = &self.tenants.registry;
        apply_newest(db, &self.config, registry, (target, key), envelopes).await
    }

    /// `work` on a connection to `target` within the target timeout.
    /// Waiting for a free connection is not the target's fault and does
    /// not count against it.
    pub(super) async fn within_timeout<R>(
        &self,
        target: &Target,
        work: impl AsyncFnOnce(&mut TargetDb) -> Result<R, ApplierError>,
    ) -> Result<R, ApplierError> {
        let lease = self.pool.lease(target, &self.tenants.registry).await?;
        self.on_lease(target, lease, work).await
    }

    /// `work` on `lease`'s connection (opened if needed) within the target
    /// timeout; the connection goes back to the pool only if it succeeded.
    async fn on_lease<R>(
        &self,
        target: &Target,
        mut lease: Lease,
        work: impl AsyncFnOnce(&mut TargetDb) -> Result<R, ApplierError>,
    ) -> Result<R, ApplierError> {
        let limit = self.config.applier.target_timeout;
        let result = tokio::time::timeout(limit, async { work(lease.db().await?).await }).await;
        let result = result.unwrap_or_else(|_| Err(timed_out(target, limit)));
        if result.is_ok() {
            lease.finish();
        }
        result
    }

    /// Dead-letters what the target refused, and defers a tenant whose
    /// database failed as a whole.
    async fn settle(&mut self, done: Written<'_>) -> Result<(), ApplierError> {
        let Written {
            target,
            items,
            result,
        } = done;
        match (result, &target) {
            (Ok(applied), _) => {
                if applied.columns_appeared {
                    self.columns_appeared(&target);
                }
                for (index, reason) in applied.rejected {
                    self.dead_letters.send(items[index].0, &reason).await?;
                }
            }
            (Err(error), Target::Tenant(id)) => self.defer_tenant(id, items.len(), &error),
            (Err(error), Target::Landlord) => return Err(error),
        }
        Ok(())
    }
}

/// Counts a tenant database being written in `cdc_applier_targets_in_flight`
/// for as long as it lives (a cancelled write included).
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        metrics().batches.targets_in_flight.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().batches.targets_in_flight.dec();
    }
}

fn timed_out(target: &Target, limit: Duration) -> ApplierError {
    ApplierError::TargetTimeout {
        target: format!("{target:?}"),
        seconds: limit.as_secs_f64(),
    }
}
