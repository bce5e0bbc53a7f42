//! Per-tenant sync direction: a global default from the configuration, an
//! override for every tenant (`tenant_id = '*'`) and per-tenant overrides,
//! both in the landlord's `cdc_bridge.tenant_directions`, changed with
//! `cdc-bridge direction` while the bridge runs. Cutover and rollback are
//! direction changes.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::config::{Config, Direction};
use crate::envelope::Side;
use crate::postgres::{quote_ident, DbError};

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

    pub fn of(&self, tenant_id: &str) -> Direction {
        self.overrides
            .get(tenant_id)
            .or_else(|| self.overrides.get(ALL_TENANTS))
            .copied()
            .unwrap_or(self.default)
    }
}

fn table(config: &Config) -> String {
    format!(
        "{}.tenant_directions",
        quote_ident(&config.replication.bridge_schema)
    )
}

/// Reads the overrides from the landlord.
pub async fn load(client: &Client, config: &Config) -> Result<Directions, DbError> {
    let rows = client
        .query(
            &format!("SELECT tenant_id, direction FROM {}", table(config)),
            &[],
        )
        .await
        .map_err(|e| DbError::query("landlord", "read tenant directions", e))?;
    let overrides = rows
        .iter()
        .filter_map(|r| Some((r.get::<_, String>(0), Direction::parse(r.get(1))?)))
        .collect();
    Ok(Directions::new(config.sync.default_direction, overrides))
}

/// Sets the direction of one tenant, or of all (`ALL_TENANTS`).
pub async fn set(
    client: &Client,
    config: &Config,
    tenant_id: &str,
    direction: Direction,
) -> Result<(), DbError> {
    let sql = format!(
        "INSERT INTO {} (tenant_id, direction) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET direction = EXCLUDED.direction, updated_at = now()",
        table(config)
    );
    client
        .execute(&sql, &[&tenant_id, &direction.as_str()])
        .await
        .map_err(|e| DbError::query("landlord", "set tenant direction", e))?;
    Ok(())
}

/// Removes a tenant's override (it follows `*` or the default again).
pub async fn clear(client: &Client, config: &Config, tenant_id: &str) -> Result<(), DbError> {
    client
        .execute(
            &format!("DELETE FROM {} WHERE tenant_id = $1", table(config)),
            &[&tenant_id],
        )
        .await
        .map_err(|e| DbError::query("landlord", "clear tenant direction", e))?;
    Ok(())
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
