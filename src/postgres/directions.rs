//! The per-tenant direction overrides, kept in the landlord's
//! `cdc_bridge.tenant_directions` (see `model::direction` for the rule).

use tokio_postgres::Client;

use super::bridge_schema::BridgeTables;
use super::DbError;
use crate::config::Config;
use crate::model::direction::Directions;
use crate::model::Direction;

fn table(config: &Config) -> String {
    BridgeTables::new(config).tenant_directions()
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
