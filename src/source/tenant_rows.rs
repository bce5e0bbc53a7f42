//! Reconciling one tenant: read the current rows (and tombstones) of both
//! sides and turn them into change envelopes, which the applier applies like
//! any other change. The conflict rule keeps the newer version on each side,
//! so applying both sides' state to each other converges them.
//!
//! Used when a tenant resumes after a pause or changes direction (changes
//! skipped meanwhile are still in the source rows), and when a tenant joins
//! the registry while the bridge runs (the landlord's existing row reaches
//! the new tenant).

use std::collections::BTreeMap;

use tokio_postgres::{Client, GenericClient};

use super::capture::{delete_envelope, row_envelope, CapturedTable, SourceDb, Tombstone, TxnInfo};
use crate::config::Config;
use crate::model::Lsn;
use crate::model::{Envelope, Op, Side, TenantRef};
use crate::postgres::bridge_schema::BridgeTables;
use crate::postgres::{quote_ident, quote_qualified, table_columns, DbError};
use crate::source::pgoutput::{TupleData, TupleValue};

/// The tenant's rows and tombstones on one side, as envelopes from that side.
pub async fn current_state(
    client: &Client,
    config: &Config,
    side: Side,
    database: &str,
    tenant: &TenantRef,
) -> Result<Vec<Envelope>, DbError> {
    let source = SourceDb {
        side,
        database: database.to_string(),
    };
    let txn = TxnInfo::snapshot(Lsn::ZERO);
    let mut envelopes = Vec::new();
    for table in &config.tables {
        let name = table.on(side);
        let columns: Vec<(String, String)> = table_columns(client, database, name)
            .await?
            .into_iter()
            .map(|c| (c.name, c.type_name))
            .collect();
        let source_table = CapturedTable::new(config, side, table, columns);
        let tenant_key = table.key_columns(side).remove(0);
        for tuple in read_rows(
            client,
            database,
            name,
            &source_table.columns,
            side,
            &tenant_key,
            &tenant.id,
        )
        .await?
        {
            let envelope = row_envelope(
                &source,
                tenant,
                &source_table,
                &txn,
                Op::Snapshot,
                Some(&tuple),
                None,
            )
            .map_err(|e| DbError::Registry(e.to_string()))?;
            envelopes.push(envelope);
        }
        let only = (side == Side::Landlord).then_some((tenant_key.as_str(), tenant.id.as_str()));
        for tombstone in read_tombstones(client, config, database, &table.name, side, only).await? {
            envelopes.push(delete_envelope(&source, tenant, tombstone, &txn));
        }
    }
    Ok(envelopes)
}

/// A tenant database holds only its own rows; the landlord is filtered by
/// the tenant key.
fn tenant_filter(side: Side, tenant_key: &str) -> String {
    match side {
        Side::Tenant => String::new(),
        Side::Landlord => format!(" WHERE {}::text = $1", quote_ident(tenant_key)),
    }
}

async fn read_rows(
    client: &Client,
    database: &str,
    table: &str,
    columns: &[(String, String)],
    side: Side,
    tenant_key: &str,
    tenant_id: &str,
) -> Result<Vec<TupleData>, DbError> {
    let list: Vec<String> = columns
        .iter()
        .map(|(c, _)| format!("{}::text", quote_ident(c)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}{}",
        list.join(", "),
        quote_qualified(table),
        tenant_filter(side, tenant_key)
    );
    let rows = match side {
        Side::Tenant => client.query(&sql, &[]).await,
        Side::Landlord => client.query(&sql, &[&tenant_id]).await,
    }
    .map_err(|e| DbError::query(database, "read rows to reconcile", e))?;
    Ok(rows
        .iter()
        .map(|row| {
            TupleData(
                (0..columns.len())
                    .map(|i| match row.get::<_, Option<String>>(i) {
                        Some(text) => TupleValue::Text(bytes::Bytes::from(text)),
                        None => TupleValue::Null,
                    })
                    .collect(),
            )
        })
        .collect())
}

/// The deletes this side's application made in `logical` (tombstones the
/// bridge wrote for the other side's deletes are not this side's news),
/// of one tenant (`only`: tenant key column and id) or of all.
pub(crate) async fn read_tombstones(
    client: &impl GenericClient,
    config: &Config,
    database: &str,
    logical: &str,
    side: Side,
    only: Option<(&str, &str)>,
) -> Result<Vec<Tombstone>, DbError> {
    let sql = format!(
        "SELECT row_key::text, version::text, source FROM {}
          WHERE table_name = $1 AND ($2::text IS NULL OR row_key ->> $3 = $2) AND source = $4",
        BridgeTables::new(config).tombstones()
    );
    let (tenant_key, tenant_id) = only.unzip();
    let rows = client
        .query(&sql, &[&logical, &tenant_id, &tenant_key, &side.as_str()])
        .await
        .map_err(|e| DbError::query(database, "read tombstones to reconcile", e))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let key: BTreeMap<String, Option<String>> = serde_json::from_str(row.get(0)).ok()?;
            Some(Tombstone {
                table: logical.to_string(),
                key,
                version: row.get(1),
                side: Side::parse(row.get(2))?,
            })
        })
        .collect())
}
