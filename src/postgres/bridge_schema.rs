//! The bridge's own bookkeeping tables, in schema `replication.bridge_schema`
//! of every synced database (created by `migrations/`): one place that
//! names them, so no query spells a table by hand.
//!
//! | table | where | what |
//! |---|---|---|
//! | `slot_state` | every database | slots whose initial snapshot reached Kafka |
//! | `tombstones` | every database | deleted rows' keys and delete versions (published) |
//! | `tenant_directions` | landlord | per-tenant direction overrides |

use tokio_postgres::Client;

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
