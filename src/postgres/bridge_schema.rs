//! The bridge's own bookkeeping tables, in schema `replication.bridge_schema`
//! of every synced database (created by `migrations/`): one place that
//! names them, so no query spells a table by hand.
//!
//! | table | where | what |
//! |---|---|---|
//! | `slot_state` | every database | slots whose initial snapshot reached Kafka |
//! | `tombstones` | every database | deleted rows' keys and delete versions (published) |
//! | `tenant_directions` | landlord | per-tenant direction overrides |
//! | `installed_databases` | landlord | every tenant database set up or streamed (for teardown) |

use tokio_postgres::Client;

use super::registry::{parse_registry_row, Tenant};
use super::{quote_ident, DbError};
use crate::config::Config;

/// Name of the tombstones table (as the replication stream names it).
pub(crate) const TOMBSTONES: &str = "tombstones";

/// Quoted, schema-qualified names of the bridge's tables.
#[derive(Debug, Clone)]
pub(crate) struct BridgeTables {
    schema: String,
}

impl BridgeTables {
    pub(crate) fn new(config: &Config) -> Self {
        BridgeTables {
            schema: quote_ident(&config.replication.bridge_schema),
        }
    }

    pub(crate) fn slot_state(&self) -> String {
        format!("{}.slot_state", self.schema)
    }

    pub(crate) fn tombstones(&self) -> String {
        format!("{}.{TOMBSTONES}", self.schema)
    }

    pub(crate) fn tenant_directions(&self) -> String {
        format!("{}.tenant_directions", self.schema)
    }

    pub(crate) fn installed_databases(&self) -> String {
        format!("{}.installed_databases", self.schema)
    }
}

/// Removes tombstones older than the retention; returns how many. Their
/// deletion is not replicated (deletes of the tombstones table are ignored).
pub(crate) async fn expire_tombstones(
    client: &Client,
    config: &Config,
    database: &str,
) -> Result<u64, DbError> {
    let sql = format!(
        "DELETE FROM {} WHERE deleted_at < now() - make_interval(days => $1)",
        BridgeTables::new(config).tombstones()
    );
    let days = i32::try_from(config.sync.tombstone_retention_days).unwrap_or(i32::MAX);
    client
        .execute(&sql, &[&days])
        .await
        .map_err(|e| DbError::query(database, "expire tombstones", e))
}

/// Records (in the landlord) that the bridge set up or streams this
/// tenant's database, reached through this registry row.
pub(crate) async fn record_installed(
    landlord: &Client,
    config: &Config,
    tenant: &Tenant,
) -> Result<(), DbError> {
    let sql = format!(
        "INSERT INTO {} (tenant_id, database_name, registry_fields) VALUES ($1, $2, $3::text::jsonb)
         ON CONFLICT (tenant_id, registry_fields) DO UPDATE SET last_seen_at = now()",
        BridgeTables::new(config).installed_databases()
    );
    let fields = serde_json::to_string(&tenant.fields).unwrap_or_else(|_| "{}".to_string());
    landlord
        .execute(&sql, &[&tenant.id.as_str(), &tenant.database_name, &fields])
        .await
        .map_err(|e| DbError::query("landlord", "record installed database", e))?;
    Ok(())
}

/// Every tenant database recorded by [`record_installed`], as the tenant
/// it was (id, slug and database from the recorded registry row).
pub(crate) async fn installed_tenants(
    landlord: &Client,
    config: &Config,
) -> Result<Vec<Tenant>, DbError> {
    let sql = format!(
        "SELECT registry_fields::text FROM {} ORDER BY tenant_id, first_seen_at",
        BridgeTables::new(config).installed_databases()
    );
    let rows = landlord
        .query(&sql, &[])
        .await
        .map_err(|e| DbError::query("landlord", "read installed databases", e))?;
    rows.iter()
        .map(|row| parse_registry_row(row.get::<_, &str>(0)))
        .collect()
}

/// Forgets one recorded place of a tenant (after its teardown).
pub(crate) async fn forget_installed(
    landlord: &Client,
    config: &Config,
    tenant: &Tenant,
) -> Result<(), DbError> {
    let sql = format!(
        "DELETE FROM {} WHERE tenant_id = $1 AND registry_fields = $2::text::jsonb",
        BridgeTables::new(config).installed_databases()
    );
    let fields = serde_json::to_string(&tenant.fields).unwrap_or_else(|_| "{}".to_string());
    landlord
        .execute(&sql, &[&tenant.id.as_str(), &fields])
        .await
        .map_err(|e| DbError::query("landlord", "forget installed database", e))?;
    Ok(())
}
