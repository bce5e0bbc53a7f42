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
//! | `installation` | every database | the apply token (landlord) and its hash (every database) |
//! | `instances`, `source_leases` | landlord | live bridge processes and which one streams each source |
//! | `check_runs` | landlord | the periodic check's claim and last result, shared by the instances |
//! | `tenant_sync_state` | landlord | tenants waiting for a reconcile or unreachable, and which instance owns that |

use tokio_postgres::Client;

use super::registry::{parse_registry_row, Tenant};
use super::{quote_ident, DbError};
use crate::config::{Config, Secret};

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

    pub(crate) fn installation(&self) -> String {
        format!("{}.installation", self.schema)
    }

    pub(crate) fn installed_databases(&self) -> String {
        format!("{}.installed_databases", self.schema)
    }

    pub(crate) fn instances(&self) -> String {
        format!("{}.instances", self.schema)
    }

    pub(crate) fn source_leases(&self) -> String {
        format!("{}.source_leases", self.schema)
    }

    pub(crate) fn tenant_sync_state(&self) -> String {
        format!("{}.tenant_sync_state", self.schema)
    }

    pub(crate) fn check_runs(&self) -> String {
        format!("{}.check_runs", self.schema)
    }
}

/// Some tenants' tombstones: the tenant key column of each logical table,
/// and the tenant ids.
pub(crate) struct TenantsOnly<'a> {
    pub(crate) key_columns: &'a [(String, String)],
    pub(crate) ids: &'a [&'a str],
}

/// Removes tombstones older than the retention, of every tenant or of some;
/// returns how many. Their deletion is not replicated (deletes of the
/// tombstones table are ignored by the reader).
pub(crate) async fn expire_tombstones(
    client: &Client,
    config: &Config,
    database: &str,
    only: Option<TenantsOnly<'_>>,
) -> Result<u64, DbError> {
    let tombstones = BridgeTables::new(config).tombstones();
    let days = i32::try_from(config.sync.tombstone_retention_days).unwrap_or(i32::MAX);
    let expire = |e| DbError::query(database, "expire tombstones", e);
    let Some(TenantsOnly { key_columns, ids }) = only else {
        let sql = format!(
            "DELETE FROM {tombstones} WHERE deleted_at < now() - make_interval(days => $1)"
        );
        return client.execute(&sql, &[&days]).await.map_err(expire);
    };
    let sql = format!(
        "DELETE FROM {tombstones} WHERE deleted_at < now() - make_interval(days => $1)
            AND table_name = $2 AND row_key ->> $3 = ANY($4::text[])"
    );
    let mut removed = 0;
    for (table, key) in key_columns {
        removed += client
            .execute(&sql, &[&days, table, key, &ids])
            .await
            .map_err(expire)?;
    }
    Ok(removed)
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

/// The installation's apply token (see `migrations/common/004`) and the
/// mark its transactions carry in the WAL.
#[derive(Clone)]
pub(crate) struct ApplyKey {
    token: Secret,
    /// Hex SHA-256 of `token:marker`: safe to appear in the WAL.
    pub(crate) marker: String,
}

impl std::fmt::Debug for ApplyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApplyKey(***)")
    }
}

impl ApplyKey {
    /// For handing to `set_config` as a bound parameter and nowhere else.
    pub(crate) fn token(&self) -> &str {
        self.token.expose()
    }
}

/// Reads the apply token from the landlord (made by `setup`).
pub(crate) async fn load_apply_key(
    landlord: &Client,
    config: &Config,
) -> Result<ApplyKey, DbError> {
    let sql = format!(
        "SELECT value, encode(sha256(convert_to(value || ':marker', 'UTF8')), 'hex') FROM {} WHERE name = 'apply_token'",
        BridgeTables::new(config).installation()
    );
    let row = landlord
        .query_opt(&sql, &[])
        .await
        .map_err(|e| DbError::query("landlord", "read the apply token", e))?;
    let row = row.ok_or_else(|| DbError::Setup {
        database: "landlord".to_string(),
        reason: "it has no apply token".to_string(),
    })?;
    Ok(ApplyKey {
        token: Secret::new(row.get::<_, String>(0)),
        marker: row.get(1),
    })
}

/// Stores the token's hash in this database, so that its triggers accept
/// the bridge's writes; done before the first write on a connection.
pub(crate) async fn authorise_writes(
    client: &Client,
    config: &Config,
    key: &ApplyKey,
    database: &str,
) -> Result<(), DbError> {
    // Read before writing: `ON CONFLICT DO UPDATE … WHERE` would lock the
    // stored row even when it matches, a transaction id and a commit per
    // new connection, which wakes every walsender of the cluster.
    let sql = format!(
        "INSERT INTO {table} (name, value)
         SELECT 'apply_token_sha256', wanted.hash
         FROM (SELECT encode(sha256(convert_to($1::text, 'UTF8')), 'hex') AS hash) AS wanted
         WHERE NOT EXISTS (
             SELECT 1 FROM {table} WHERE name = 'apply_token_sha256' AND value = wanted.hash)
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        table = BridgeTables::new(config).installation()
    );
    client
        .execute_typed(&sql, &[(&key.token(), tokio_postgres::types::Type::TEXT)])
        .await
        .map_err(|e| DbError::query(database, "store the apply token's hash", e))?;
    Ok(())
}
