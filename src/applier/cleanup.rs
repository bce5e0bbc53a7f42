//! Expiring tombstones, only where it is safe: a tombstone is kept until
//! the other side has surely had its delete, so it is removed (after
//! `sync.tombstone_retention_days`) only for tenants that are live and sync
//! both ways. A tenant paused, one-way, unreachable or waiting for a
//! reconcile keeps every tombstone, however long that lasts, so that its
//! reconcile cannot bring back a row deleted meanwhile.
//!
//! ```text
//!  landlord: tombstones of live both-way tenants ─► expired
//!  tenant DB (live, both ways): its tombstones   ─► expired
//!  anyone else                                   ─► kept
//! ```

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::routing::Target;
use super::Applier;
use crate::model::{Direction, TenantId};
use crate::postgres::bridge_schema::{expire_tombstones, TenantsOnly};

/// How often tombstones are expired (the first round right after start).
pub(super) const CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);

impl Applier {
    /// Runs a cleanup round when one is due; a failure is logged and the
    /// round tried again next time.
    pub(super) async fn expire_tombstones_if_due(&mut self) {
        if self
            .last_cleanup
            .is_some_and(|at| at.elapsed() < CLEANUP_INTERVAL)
        {
            return;
        }
        self.last_cleanup = Some(Instant::now());
        let live = self.live_both_ways();
        if let Err(error) = self.expire_on_landlord(&live).await {
            warn!(%error, "expiring tombstones on the landlord failed; next round in an hour");
        }
        let limit = self.config.applier.target_timeout;
        let expired_for = live.len();
        for id in live {
            let target = Target::Tenant(id.clone());
            match tokio::time::timeout(limit, self.expire_on(&target)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => info!(tenant = %id, removed, "expired tombstones removed"),
                Ok(Err(error)) => {
                    warn!(tenant = %id, %error, "expiring tombstones failed; next round in an hour")
                }
                Err(_) => {
                    warn!(tenant = %id, "expiring tombstones took too long; next round in an hour");
                    self.pool.drop_target(&target);
                }
            }
        }
        let kept_for = self.tenants.registry.len() - expired_for;
        info!(
            expired_for,
            kept_for, "tombstone cleanup round done (tenants not live both ways keep theirs)"
        );
    }

    /// Tenants whose tombstones may expire: live and syncing both ways.
    fn live_both_ways(&self) -> Vec<TenantId> {
        let mut ids: Vec<TenantId> = self
            .tenants
            .registry
            .keys()
            .filter(|id| self.tenants.is_live(id))
            .filter(|id| self.tenants.directions.of(id) == Direction::Both)
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    async fn expire_on_landlord(&mut self, live: &[TenantId]) -> Result<(), super::ApplierError> {
        let keys: Vec<(String, String)> = self
            .config
            .tables
            .iter()
            .map(|t| (t.name.clone(), t.landlord_tenant_key.clone()))
            .collect();
        let ids: Vec<&str> = live.iter().map(TenantId::as_str).collect();
        let only = TenantsOnly {
            key_columns: &keys,
            ids: &ids,
        };
        let config = &self.config;
        let removed = self
            .pool
            .with(&Target::Landlord, &self.tenants.registry, async |db| {
                expire_tombstones(&db.client, config, "landlord", Some(only)).await
            })
            .await?;
        if removed > 0 {
            info!(removed, "expired landlord tombstones removed");
        }
        Ok(())
    }

    async fn expire_on(&mut self, target: &Target) -> Result<u64, super::ApplierError> {
        let config = &self.config;
        let removed = self
            .pool
            .with(target, &self.tenants.registry, async |db| {
                expire_tombstones(&db.client, config, &db.label, None).await
            })
            .await?;
        Ok(removed)
    }
}
