//! Reconciling a tenant: each side's current rows and tombstones are
//! applied to the other side, as the tenant's direction allows, through the
//! same writer as every change; the conflict rule keeps the newer version
//! on each side, so the two sides converge.
//!
//! Needed when a tenant joins while the bridge runs, resumes after a pause,
//! changes direction, or its database answers again after an outage: the
//! changes skipped meanwhile are still in the source rows.
//!
//! Which tenants wait for a reconcile must outlive the process (their
//! skipped changes' offsets are committed): every batch saves the states
//! that changed to `tenant_sync_state` on the landlord before its offsets
//! go out, and each registry read adopts the states of instances whose
//! heartbeat is gone, so whichever instance applies next finishes them.

use futures::stream::{self, StreamExt};
use futures::FutureExt;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use super::pool::TargetDb;
use super::routing::Target;
use super::tenants::TenantState;
use super::{set_target_up, Applier, ApplierError};
use crate::model::direction::{gate, Gate};
use crate::model::{Envelope, Side, TenantId};
use crate::postgres::leases::SyncStateStore;
use crate::postgres::DbError;
use crate::source::tenant_rows::current_state;

/// Landlord reads and writes of one reconcile round under way at once.
const LANDLORD_STEPS_AT_ONCE: usize = 2;

/// What reconciling one tenant found beyond its rows: the targets that
/// gained a column changes had been carrying.
#[derive(Default)]
struct Reconciled {
    gained_columns: Vec<Target>,
}

/// Why a reconcile did not finish.
enum ReconcileError {
    /// The tenant's own database could not be reached or took too long: it
    /// counts as unreachable (probed in the background rather than tried
    /// again in every round, each try holding the consume loop).
    TenantUnreachable(ApplierError),
    /// Anything else, a slow landlord included: retried next round.
    Failed(ApplierError),
}

impl ReconcileError {
    fn on(target: &Target, error: ApplierError) -> ReconcileError {
        let unreachable = matches!(
            error,
            ApplierError::TargetTimeout { .. }
                | ApplierError::Db(DbError::Connect { .. } | DbError::ConnectTimeout { .. })
        );
        match target {
            Target::Tenant(_) if unreachable => ReconcileError::TenantUnreachable(error),
            _ => ReconcileError::Failed(error),
        }
    }
}

fn state_name(state: TenantState) -> &'static str {
    match state {
        TenantState::Unreachable => "unreachable",
        _ => "reconcile_pending",
    }
}

impl Applier {
    /// Saves the tenant states that changed since the last save (see the
    /// module documentation).
    pub(super) async fn save_states(&mut self) -> Result<(), ApplierError> {
        let now: std::collections::HashMap<TenantId, TenantState> = self
            .tenants
            .not_live()
            .map(|(id, state)| (id.clone(), state))
            .collect();
        let changed: Vec<(String, &'static str)> = now
            .iter()
            .filter(|(id, state)| self.saved_states.get(*id) != Some(*state))
            .map(|(id, state)| (id.as_str().to_string(), state_name(*state)))
            .collect();
        let gone: Vec<String> = self
            .saved_states
            .keys()
            .filter(|id| !now.contains_key(*id))
            .map(|id| id.as_str().to_string())
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let (store, me) = (
            SyncStateStore::new(&self.config),
            &self.config.instances.instance_id,
        );
        self.pool
            .with(&Target::Landlord, &self.tenants.registry, async |db| {
                store.save(&db.client, me, &changed, &gone).await
            })
            .await?;
        self.saved_states = now;
        Ok(())
    }

    /// Takes over the waiting tenants of instances that are gone.
    pub(super) async fn adopt_states(&mut self) -> Result<(), ApplierError> {
        // Renewed on every registry read: three of them may fail first.
        let alive = self.config.tenants.rediscover_interval * 3;
        let (store, me) = (
            SyncStateStore::new(&self.config),
            &self.config.instances.instance_id,
        );
        let adopted = self
            .pool
            .with(&Target::Landlord, &self.tenants.registry, async |db| {
                store.adopt(&db.client, me, alive).await
            })
            .await?;
        for (id, state) in adopted {
            let state = if state == "unreachable" {
                TenantState::Unreachable
            } else {
                TenantState::ReconcilePending
            };
            info!(tenant = %id, "adopting a tenant waiting for a reconcile from an instance that is gone");
            let id = TenantId::from(id.as_str());
            self.tenants.adopt(id.clone(), state);
            self.saved_states.insert(id, state);
        }
        Ok(())
    }

    /// Reconciles every tenant waiting for it, up to
    /// `applier.max_parallel_targets` at once (500 tenants reconciled one
    /// after another held a fresh start for most of a minute); a failure
    /// leaves the tenant waiting for the next round. An unreachable tenant
    /// is first probed in the background (connecting to a silent server
    /// must not hold the applier) and reconciled once the probe got
    /// through. Each step on a target is bounded by
    /// `applier.target_timeout_secs`; waiting for a free connection is not
    /// the tenant's fault and does not count.
    pub(super) async fn reconcile_pending(&mut self) {
        let mut due = Vec::new();
        for id in self.tenants.pending() {
            if self.tenants.state(&id) == TenantState::Unreachable && !self.probe_got_through(&id) {
                continue;
            }
            due.push(id);
        }
        let (this, landlord_turns) = (&*self, Semaphore::new(LANDLORD_STEPS_AT_ONCE));
        let mut outcomes: Vec<_> = stream::iter(due)
            .map(|id| async {
                let outcome = this.reconcile_tenant(&id, &landlord_turns).await;
                (id, outcome)
            })
            .buffer_unordered(self.config.applier.max_parallel_targets)
            .collect()
            .await;
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        // Every outcome first, then the columns that appeared: a tenant
        // reconciled beside the one that found a new column may have
        // written without it, and must stay pending for the next round.
        let mut gained_columns = Vec::new();
        for (id, outcome) in outcomes {
            gained_columns.extend(self.settle_reconcile(&id, outcome));
        }
        for target in gained_columns {
            self.columns_appeared(&target);
        }
    }

    /// Records how one tenant's reconcile went; returns the targets that
    /// gained a column.
    fn settle_reconcile(
        &mut self,
        id: &TenantId,
        outcome: Result<Reconciled, ReconcileError>,
    ) -> Vec<Target> {
        match outcome {
            Ok(reconciled) => {
                if self.tenants.reconciled(id) == TenantState::Unreachable {
                    info!(tenant = %id, "tenant database reachable again; caught up");
                }
                set_target_up(&self.tenants.registry, id, true);
                return reconciled.gained_columns;
            }
            Err(ReconcileError::TenantUnreachable(error)) => {
                warn!(tenant = %id, %error, "reconciling the tenant could not reach its database in time; it counts as unreachable");
                self.pool.drop_target(&Target::Tenant(id.clone()));
                self.tenants.mark_unreachable(id);
                set_target_up(&self.tenants.registry, id, false);
            }
            Err(ReconcileError::Failed(error)) => {
                crate::runtime::status::status().applier_failed(id, &error.to_string());
                warn!(tenant = %id, %error, "reconciling the tenant failed; will retry")
            }
        }
        Vec::new()
    }

    /// `work` on `target` within the target timeout. The landlord's steps
    /// take turns: they are short, and reconciles side by side would each
    /// hold a landlord connection (and load the landlord) otherwise.
    async fn reconcile_step<R>(
        &self,
        target: &Target,
        landlord_turns: &Semaphore,
        work: impl AsyncFnOnce(&mut TargetDb) -> Result<R, ApplierError>,
    ) -> Result<R, ReconcileError> {
        let _turn = match target {
            Target::Landlord => landlord_turns.acquire().await.ok(),
            Target::Tenant(_) => None,
        };
        let result = self.within_timeout(target, work).await;
        result.map_err(|error| ReconcileError::on(target, error))
    }

    /// Whether a background connection attempt to an unreachable tenant
    /// got through; starts one when none is under way.
    fn probe_got_through(&mut self, id: &TenantId) -> bool {
        if let Some(probe) = self.probes.get(id) {
            if !probe.is_finished() {
                return false;
            }
            let finished = self.probes.remove(id);
            let reached = finished
                .and_then(|probe| probe.now_or_never())
                .is_some_and(|result| result.unwrap_or(false));
            if reached {
                return true;
            }
        }
        // The probe's connection counts against the caps like any other
        // (and, once through, is the one the reconcile uses); with no room
        // now, the next round tries again.
        let target = Target::Tenant(id.clone());
        let Ok(Some(mut lease)) = self.pool.try_lease(&target, &self.tenants.registry) else {
            return false;
        };
        let probe = tokio::spawn(async move {
            let reached = lease.db().await.is_ok();
            lease.finish();
            reached
        });
        self.probes.insert(id.clone(), probe);
        false
    }

    /// Applies each side's rows to the other (as the direction lets
    /// through); the targets that gained a synced column are returned for
    /// the caller to reconcile their tenants again.
    async fn reconcile_tenant(
        &self,
        id: &TenantId,
        landlord_turns: &Semaphore,
    ) -> Result<Reconciled, ReconcileError> {
        let mut reconciled = Reconciled::default();
        let Some(tenant) = self.tenants.registry.get(id).cloned() else {
            return Ok(reconciled);
        };
        let direction = self.tenants.directions.of(id);
        let tenant_ref = tenant.tenant_ref();
        let config = &self.config;
        let tenant_target = Target::Tenant(id.clone());
        // Only the sides the direction lets through are read: a paused
        // tenant's rows (all of them, in memory) are not needed.
        let read = async |origin: Side, from: &Target| {
            if gate(direction, origin) != Gate::Apply {
                return Ok(Vec::new());
            }
            self.reconcile_step(from, landlord_turns, async |db| {
                Ok(current_state(&db.client, config, from.side(), &db.label, &tenant_ref).await?)
            })
            .await
        };
        let from_landlord = read(Side::Landlord, &Target::Landlord).await?;
        let from_tenant = read(Side::Tenant, &tenant_target).await?;
        let mut rejected = Vec::new();
        for (origin, rows, target) in [
            (Side::Tenant, &from_tenant, &Target::Landlord),
            (Side::Landlord, &from_landlord, &tenant_target),
        ] {
            if gate(direction, origin) == Gate::Apply && !rows.is_empty() {
                let envelopes: Vec<&Envelope> = rows.iter().collect();
                let write =
                    async |db: &mut TargetDb| self.write_newest(db, target, &envelopes).await;
                let applied = self.reconcile_step(target, landlord_turns, write).await?;
                if applied.columns_appeared {
                    reconciled.gained_columns.push(target.clone());
                }
                rejected.extend(applied.rejected);
            }
        }
        for (_, reason) in rejected {
            // Nothing to dead-letter: the row stays in its source database.
            error!(tenant = %id, %reason, "a row cannot be reconciled; fix it and it syncs on its next change");
        }
        info!(tenant = %id, direction = direction.as_str(), "tenant reconciled");
        Ok(reconciled)
    }
}
