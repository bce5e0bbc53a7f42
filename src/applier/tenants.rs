//! What the applier knows about tenants between batches: the registry, the
//! directions, and one state per tenant.
//!
//! ```text
//!            joined / direction changed / first start
//!   Live ───────────────────────────────────────────► ReconcilePending
//!    ▲  ▲                                                  │   │
//!    │  └──────────────── reconcile succeeded ─────────────┘   │ its database failed
//!    │                                                         ▼
//!    └──────────────────── reconcile succeeded ──────────── Unreachable
//! ```
//! An unreachable tenant's changes are skipped (not held in memory): the
//! reconcile that ends the state reads both sides' current rows, which
//! carries every change skipped meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::direction::Directions;
use crate::model::{Direction, TenantId};
use crate::postgres::registry::Tenant;
use crate::runtime::status::{status, ApplierState};

/// One tenant's state in the applier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TenantState {
    /// Changes are applied as they come.
    Live,
    /// The two sides must be reconciled; changes are still applied.
    ReconcilePending,
    /// Its database failed: changes are skipped until a reconcile succeeds.
    Unreachable,
}

/// When the registry was last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegistryRead {
    /// Not yet: the first read reconciles every tenant.
    Never,
    At(Instant),
    /// A batch failed: read again before the next one.
    Stale,
}

pub(super) struct Tenants {
    pub(super) registry: HashMap<TenantId, Tenant>,
    pub(super) directions: Directions,
    /// Tenants not `Live`; a tenant absent here is live.
    states: HashMap<TenantId, TenantState>,
    read: RegistryRead,
}

impl Tenants {
    pub(super) fn new(default_direction: Direction) -> Self {
        Tenants {
            registry: HashMap::new(),
            directions: Directions::new(default_direction, HashMap::new()),
            states: HashMap::new(),
            read: RegistryRead::Never,
        }
    }

    /// Whether the registry should be read again now.
    pub(super) fn read_due(&self, interval: Duration) -> bool {
        match self.read {
            RegistryRead::At(at) => at.elapsed() >= interval,
            RegistryRead::Never | RegistryRead::Stale => true,
        }
    }

    pub(super) fn never_read(&self) -> bool {
        self.read == RegistryRead::Never
    }

    pub(super) fn mark_stale(&mut self) {
        if self.read != RegistryRead::Never {
            self.read = RegistryRead::Stale;
        }
    }

    /// Takes a fresh read of registry and directions. Tenants that joined,
    /// moved (their registry row changed) or changed direction (every
    /// tenant, on the first read: changes
    /// skipped while this applier was down are only in the databases)
    /// become pending a reconcile; returns them in id order.
    pub(super) fn update(
        &mut self,
        registry: Vec<Tenant>,
        directions: Directions,
    ) -> Vec<TenantId> {
        let registry: HashMap<TenantId, Tenant> =
            registry.into_iter().map(|t| (t.id.clone(), t)).collect();
        let mut changed: Vec<TenantId> = match self.read {
            RegistryRead::Never => registry.keys().cloned().collect(),
            _ => registry
                .iter()
                .filter(|(id, tenant)| {
                    self.registry.get(*id) != Some(*tenant)
                        || directions.of(id) != self.directions.of(id)
                })
                .map(|(id, _)| id.clone())
                .collect(),
        };
        changed.sort();
        self.states.retain(|id, _| registry.contains_key(id));
        for id in &changed {
            self.states
                .entry(id.clone())
                .or_insert(TenantState::ReconcilePending);
        }
        self.registry = registry;
        self.directions = directions;
        self.read = RegistryRead::At(Instant::now());
        changed
    }

    /// Neither waiting for a reconcile nor unreachable.
    pub(super) fn is_live(&self, id: &str) -> bool {
        self.state(id) == TenantState::Live
    }

    pub(super) fn state(&self, id: &str) -> TenantState {
        self.states.get(id).copied().unwrap_or(TenantState::Live)
    }

    /// The tenant needs a reconcile (an unreachable one stays unreachable).
    pub(super) fn mark_pending(&mut self, id: &TenantId) {
        self.states
            .entry(id.clone())
            .or_insert(TenantState::ReconcilePending);
    }

    pub(super) fn mark_all_pending(&mut self) {
        let ids: Vec<TenantId> = self.registry.keys().cloned().collect();
        for id in &ids {
            self.mark_pending(id);
        }
    }

    pub(super) fn mark_unreachable(&mut self, id: &TenantId) {
        self.states.insert(id.clone(), TenantState::Unreachable);
    }

    /// Tenants waiting for a reconcile (unreachable ones included), in id order.
    pub(super) fn pending(&self) -> Vec<TenantId> {
        let mut ids: Vec<TenantId> = self.states.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Publishes every tenant's state on the status board (once a batch).
    pub(super) fn publish(&self) {
        let states: Vec<(TenantId, ApplierState)> = self
            .states
            .iter()
            .map(|(id, state)| {
                let published = match state {
                    TenantState::Live => ApplierState::Live,
                    TenantState::ReconcilePending => ApplierState::ReconcilePending,
                    TenantState::Unreachable => ApplierState::Unreachable,
                };
                (id.clone(), published)
            })
            .collect();
        status().set_applier_states(|id| self.registry.contains_key(id), &states);
    }

    /// Every tenant not live, with its state.
    pub(super) fn not_live(&self) -> impl Iterator<Item = (&TenantId, TenantState)> {
        self.states.iter().map(|(id, state)| (id, *state))
    }

    /// A state another instance left behind (see `reconcile`); a registered
    /// tenant only, and an unreachable one stays so.
    pub(super) fn adopt(&mut self, id: TenantId, state: TenantState) {
        if !self.registry.contains_key(&id) {
            return;
        }
        let current = self.states.entry(id).or_insert(state);
        if state == TenantState::Unreachable {
            *current = state;
        }
    }

    /// A reconcile succeeded; returns the state the tenant left.
    pub(super) fn reconciled(&mut self, id: &str) -> TenantState {
        self.states.remove(id).unwrap_or(TenantState::Live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tenant(id: &str) -> Tenant {
        Tenant {
            id: id.into(),
            slug: format!("t{id}"),
            database_name: format!("db{id}"),
            fields: BTreeMap::new(),
        }
    }

    fn directions(overrides: &[(&str, Direction)]) -> Directions {
        let map = overrides
            .iter()
            .map(|(id, d)| (id.to_string(), *d))
            .collect();
        Directions::new(Direction::Both, map)
    }

    #[test]
    fn the_first_read_reconciles_everyone_later_reads_only_what_changed() {
        let mut tenants = Tenants::new(Direction::Both);
        assert!(tenants.read_due(Duration::from_secs(3600)));
        let first = tenants.update(vec![tenant("1"), tenant("2")], directions(&[]));
        assert_eq!(first.len(), 2);
        assert_eq!(tenants.state("1"), TenantState::ReconcilePending);
        tenants.reconciled("1");
        tenants.reconciled("2");
        let later = tenants.update(
            vec![tenant("1"), tenant("2"), tenant("3")],
            directions(&[("2", Direction::Paused)]),
        );
        assert_eq!(later, vec![TenantId::from("2"), TenantId::from("3")]);
        assert_eq!(tenants.pending(), later);
        assert_eq!(tenants.state("1"), TenantState::Live);
        assert!(!tenants.read_due(Duration::from_secs(3600)));
    }

    #[test]
    fn an_unreachable_tenant_stays_so_until_reconciled_and_leaves_with_the_registry() {
        let mut tenants = Tenants::new(Direction::Both);
        tenants.update(vec![tenant("1")], directions(&[]));
        tenants.mark_unreachable(&"1".into());
        tenants.update(vec![tenant("1")], directions(&[]));
        assert_eq!(
            tenants.state("1"),
            TenantState::Unreachable,
            "a registry read does not forget it"
        );
        assert_eq!(tenants.reconciled("1"), TenantState::Unreachable);
        assert_eq!(tenants.state("1"), TenantState::Live);
        tenants.mark_unreachable(&"1".into());
        tenants.update(vec![], directions(&[]));
        assert!(tenants.pending().is_empty(), "gone from the registry");
    }

    #[test]
    fn a_failed_batch_makes_the_registry_stale() {
        let mut tenants = Tenants::new(Direction::Both);
        tenants.update(vec![tenant("1")], directions(&[]));
        assert!(!tenants.read_due(Duration::from_secs(3600)));
        tenants.mark_stale();
        assert!(tenants.read_due(Duration::from_secs(3600)));
        tenants.reconciled("1");
        assert!(
            tenants
                .update(vec![tenant("1")], directions(&[]))
                .is_empty(),
            "a stale read is not a first read"
        );
    }
}
