//! Per-tenant sync direction: a global default from the configuration, an
//! override for every tenant (`tenant_id = '*'`) and per-tenant overrides
//! (kept in the landlord, see `postgres::directions`), changed with
//! `cdc-bridge direction` while the bridge runs. Cutover and rollback are
//! direction changes. Pure: the rule that gates each change lives here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Side;

/// Which way changes of a tenant flow. Cutover and rollback are done by
/// changing it (globally or per tenant) while the bridge runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Both ways (the default during a migration).
    Both,
    /// Only tenant changes are applied (to the landlord).
    ToLandlord,
    /// Only landlord changes are applied (to the tenant).
    ToTenant,
    /// Nothing is applied; on resume both sides are reconciled.
    Paused,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::ToLandlord => "to_landlord",
            Direction::ToTenant => "to_tenant",
            Direction::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        [
            Direction::Both,
            Direction::ToLandlord,
            Direction::ToTenant,
            Direction::Paused,
        ]
        .into_iter()
        .find(|d| d.as_str() == text)
    }
}

/// The id that stands for "every tenant" in the overrides table.
pub const ALL_TENANTS: &str = "*";

/// What the applier does with a change, given the tenant's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Apply,
    /// The direction excludes changes from this side (after a cutover).
    DirectionOff,
    /// The tenant is paused; it is reconciled when resumed.
    Paused,
}

/// Whether a change that originated on `origin` may be applied to the other side.
pub fn gate(direction: Direction, origin: Side) -> Gate {
    match (direction, origin) {
        (Direction::Paused, _) => Gate::Paused,
        (Direction::Both, _)
        | (Direction::ToLandlord, Side::Tenant)
        | (Direction::ToTenant, Side::Landlord) => Gate::Apply,
        _ => Gate::DirectionOff,
    }
}

/// The directions in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directions {
    default: Direction,
    overrides: HashMap<String, Direction>,
}

impl Directions {
    pub fn new(default: Direction, overrides: HashMap<String, Direction>) -> Self {
        Directions { default, overrides }
    }

    /// Whether the tenant's direction comes from an override (its own or
    /// the all-tenants one) rather than the configured default.
    pub fn is_overridden(&self, tenant_id: &str) -> bool {
        self.overrides.contains_key(tenant_id) || self.overrides.contains_key(ALL_TENANTS)
    }

    pub fn of(&self, tenant_id: &str) -> Direction {
        self.overrides
            .get(tenant_id)
            .or_else(|| self.overrides.get(ALL_TENANTS))
            .copied()
            .unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;

    #[test]
    fn gate_follows_the_direction() {
        let cases = [
            (Both, Side::Tenant, Gate::Apply),
            (Both, Side::Landlord, Gate::Apply),
            (ToLandlord, Side::Tenant, Gate::Apply),
            (ToLandlord, Side::Landlord, Gate::DirectionOff),
            (ToTenant, Side::Landlord, Gate::Apply),
            (ToTenant, Side::Tenant, Gate::DirectionOff),
            (Paused, Side::Tenant, Gate::Paused),
            (Paused, Side::Landlord, Gate::Paused),
        ];
        for (direction, origin, expected) in cases {
            assert_eq!(
                gate(direction, origin),
                expected,
                "{direction:?} from {origin:?}"
            );
        }
    }

    #[test]
    fn tenant_override_beats_all_tenants_beats_default() {
        let overrides = HashMap::from([
            ("7".to_string(), Paused),
            (ALL_TENANTS.to_string(), ToTenant),
        ]);
        let directions = Directions::new(Both, overrides);
        assert_eq!(directions.of("7"), Paused);
        assert_eq!(directions.of("8"), ToTenant);
        assert_eq!(Directions::new(Both, HashMap::new()).of("8"), Both);
    }
}
