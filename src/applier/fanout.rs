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

use super::pool::Lease;
use super::routing::{unknown_tenant, Target};
use super::tenants::TenantState;
use super::writer::{apply_on, GroupResult};
use super::{Applier, ApplierError};
use crate::model::Envelope;
use crate::runtime::metrics::{count_events, metrics, EventOutcome};

/// One tenant target's share of a batch.
pub(super) type TenantGroup<'m> = (Target, Vec<(&'m OwnedMessage, &'m Envelope)>);

/// One tenant target to write: its leased connection and its share of the
/// batch.
type Job<'m> = (Target, Lease, Vec<(&'m OwnedMessage, &'m Envelope)>);

/// What came back from writing one tenant target.
struct Written<'m> {
    target: Target,
    items: Vec<(&'m OwnedMessage, &'m Envelope)>,
    /// The connection, when it is still good to keep.
    lease: Option<Lease>,
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
        while !pending.is_empty() {
            let (jobs, later) = self.lease_round(pending).await?;
            let written = self.write_side_by_side(jobs).await;
            for done in written {
                self.settle(done).await?;
            }
            pending = later;
        }
        Ok(())
    }

    /// Connections for as many of the `pending` targets as fit the caps
    /// now (and `applier.max_parallel_targets`), in order; the others wait
    /// for a later round. When none fits, waits for the first one (holding
    /// no lease, so nothing can deadlock).
    async fn lease_round<'m>(
        &self,
        pending: Vec<TenantGroup<'m>>,
    ) -> Result<(Vec<Job<'m>>, Vec<TenantGroup<'m>>), ApplierError> {
        let (registry, parallel) = (
            &self.tenants.registry,
            self.config.applier.max_parallel_targets,
        );
        let mut jobs = Vec::new();
        let mut later = Vec::new();
        for (target, items) in pending {
            let lease = match jobs.len() < parallel {
                true => self.pool.try_lease(&target, registry)?,
                false => None,
            };
            match lease {
                Some(lease) => jobs.push((target, lease, items)),
                None => later.push((target, items)),
            }
        }
        if jobs.is_empty() && !later.is_empty() {
            let (target, items) = later.remove(0);
            let lease = self.pool.lease(&target, registry).await?;
            jobs.push((target, lease, items));
        }
        if !later.is_empty() {
            metrics().connection_waits.inc_by(later.len() as u64);
        }
        Ok((jobs, later))
    }

    async fn write_side_by_side<'m>(&self, jobs: Vec<Job<'m>>) -> Vec<Written<'m>> {
        let writes: Vec<_> = jobs
            .into_iter()
            .map(|(target, lease, items)| self.write_one(target, lease, items))
            .collect();
        stream::iter(writes)
            .buffer_unordered(self.config.applier.max_parallel_targets)
            .collect()
            .await
    }

    /// One tenant target's changes, on its connection (opened if needed),
    /// within the target timeout.
    async fn write_one<'m>(
        &self,
        target: Target,
        mut lease: Lease,
        items: Vec<(&'m OwnedMessage, &'m Envelope)>,
    ) -> Written<'m> {
        let (config, registry) = (&self.config, &self.tenants.registry);
        let limit = config.applier.target_timeout;
        let envelopes: Vec<&Envelope> = items.iter().map(|(_, e)| *e).collect();
        let work = async {
            let key = self.pool.key().ok_or(ApplierError::ReadOnly)?;
            let db = lease.db().await?;
            apply_on(db, config, registry, (&target, key), &envelopes).await
        };
        let result = match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(&target, limit)),
        };
        Written {
            lease: result.is_ok().then_some(lease),
            target,
            items,
            result,
        }
    }

    /// Returns the connection, dead-letters what the target refused, and
    /// defers a tenant whose database failed as a whole.
    async fn settle(&mut self, done: Written<'_>) -> Result<(), ApplierError> {
        let Written {
            target,
            items,
            lease,
            result,
        } = done;
        if let Some(lease) = lease {
            lease.finish();
        }
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

fn timed_out(target: &Target, limit: Duration) -> ApplierError {
    ApplierError::TargetTimeout {
        target: format!("{target:?}"),
        seconds: limit.as_secs_f64(),
    }
}
