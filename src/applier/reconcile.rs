//! Reconciling a tenant: each side's current rows and tombstones are
//! applied to the other side, as the tenant's direction allows, through the
//! same writer as every change; the conflict rule keeps the newer version
//! on each side, so the two sides converge.
//!
//! Needed when a tenant joins while the bridge runs, resumes after a pause,
//! changes direction, or its database answers again after an outage: the
//! changes skipped meanwhile are still in the source rows.

use futures::FutureExt;
use tracing::{error, info, warn};

use super::bulk::apply_group;
use super::routing::Target;
use super::tenants::TenantState;
use super::{set_target_up, Applier, ApplierError};
use crate::model::direction::{gate, Gate};
use crate::model::{Envelope, Side, TenantId};

impl Applier {
    /// Reconciles every tenant waiting for it; a failure leaves the tenant
    /// waiting for the next round. An unreachable tenant is first probed
    /// in the background (connecting to a silent server must not hold the
    /// applier) and reconciled once the probe got through; every reconcile
    /// is bounded by `applier.target_timeout_secs`.
    pub(super) async fn reconcile_pending(&mut self) {
        let limit = self.config.applier.target_timeout;
        for id in self.tenants.pending() {
            if self.tenants.state(&id) == TenantState::Unreachable && !self.probe_got_through(&id) {
                continue;
            }
            let reconciled = tokio::time::timeout(limit, self.reconcile_tenant(&id)).await;
            match reconciled {
                Ok(Ok(())) => {
                    if self.tenants.reconciled(&id) == TenantState::Unreachable {
                        info!(tenant = %id, "tenant database reachable again; caught up");
                    }
                    set_target_up(&self.tenants.registry, &id, true);
                }
                Ok(Err(error)) => {
                    crate::runtime::status::status().applier_failed(&id, &error.to_string());
                    warn!(tenant = %id, %error, "reconciling the tenant failed; will retry")
                }
                Err(_) => {
                    warn!(tenant = %id, seconds = limit.as_secs_f64(), "reconciling the tenant took too long; its server counts as unreachable");
                    self.pool.drop_target(&Target::Tenant(id.clone()));
                    self.tenants.mark_unreachable(&id);
                    set_target_up(&self.tenants.registry, &id, false);
                }
            }
        }
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

    async fn reconcile_tenant(&mut self, id: &TenantId) -> Result<(), ApplierError> {
        let Some(tenant) = self.tenants.registry.get(id).cloned() else {
            return Ok(());
        };
        let direction = self.tenants.directions.of(id);
        let tenant_ref = tenant.tenant_ref();
        let registry = &self.tenants.registry;
        let tenant_target = Target::Tenant(id.clone());
        let pool = &self.pool;
        let from_landlord = pool
            .current_state(&Target::Landlord, registry, &tenant_ref)
            .await?;
        let from_tenant = pool
            .current_state(&tenant_target, registry, &tenant_ref)
            .await?;
        let mut rejected = Vec::new();
        let mut gained_columns = Vec::new();
        for (origin, rows, target) in [
            (Side::Tenant, &from_tenant, &Target::Landlord),
            (Side::Landlord, &from_landlord, &tenant_target),
        ] {
            if gate(direction, origin) == Gate::Apply && !rows.is_empty() {
                let envelopes: Vec<&Envelope> = rows.iter().collect();
                let applied = apply_group(pool, registry, target, &envelopes).await?;
                if applied.columns_appeared {
                    gained_columns.push(target.clone());
                }
                rejected.extend(applied.rejected);
            }
        }
        for target in gained_columns {
            self.columns_appeared(&target);
        }
        for (_, reason) in rejected {
            // Nothing to dead-letter: the row stays in its source database.
            error!(tenant = %id, %reason, "a row cannot be reconciled; fix it and it syncs on its next change");
        }
        info!(tenant = %id, direction = direction.as_str(), "tenant reconciled");
        Ok(())
    }
}
