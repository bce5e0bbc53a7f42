//! Where a change goes and what it becomes there: pure translation of an
//! envelope from one side into a [`Change`] in the other side's terms
//! (target database, key columns, data columns, version, side).
//!
//! ```text
//!  tenant change   (key id=1)        ─► landlord: tenant_db_id = tenant id,
//!                                        registry columns (tenant_slug, ...) set
//!  landlord change (key tenant_db_id) ─► that tenant's database: id = 1
//!                                        (table.tenant_row_key_value)
//! ```

use std::collections::{BTreeMap, HashMap};

use super::target::{Change, ColumnText};
use crate::config::{Config, TableConfig};
use crate::model::{Envelope, Op, Side, TenantId};
use crate::postgres::registry::Tenant;

/// Version given to a change that carries none (from a table without the
/// bridge's columns): older than any real write.
const NO_VERSION: &str = "1970-01-01 00:00:00+00";

/// Which database a change is written to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Target {
    Landlord,
    /// A tenant database, by tenant id.
    Tenant(TenantId),
}

impl Target {
    /// The opposite side of where the change was made.
    pub(crate) fn of(envelope: &Envelope) -> Target {
        match envelope.origin.side {
            Side::Tenant => Target::Landlord,
            Side::Landlord => Target::Tenant(envelope.tenant.id.clone()),
        }
    }

    pub(crate) fn side(&self) -> Side {
        match self {
            Target::Landlord => Side::Landlord,
            Target::Tenant(_) => Side::Tenant,
        }
    }
}

/// Why a change cannot be routed (it goes to the dead-letter topic).
pub(crate) fn unknown_tenant(id: &TenantId) -> String {
    format!("tenant {id} is not in the registry (check tenants.registry_query)")
}

/// The change in the target's terms, or why it cannot be routed.
pub(crate) fn change_for(
    config: &Config,
    tenants: &HashMap<TenantId, Tenant>,
    target: &Target,
    envelope: &Envelope,
) -> Result<Change, String> {
    let Some(table) = config.table(&envelope.table) else {
        return Ok(change_from(envelope, Vec::new()));
    };
    let key = match target {
        Target::Landlord => landlord_key(envelope, table, tenants.get(&envelope.tenant.id))
            .ok_or_else(|| unknown_tenant(&envelope.tenant.id))?,
        Target::Tenant(id) => {
            tenants.get(id).ok_or_else(|| unknown_tenant(id))?;
            let values = table.tenant_row_key_value.iter().cloned().map(Some);
            table.tenant_row_key.iter().cloned().zip(values).collect()
        }
    };
    Ok(change_from(envelope, key))
}

/// Landlord key and registry-filled columns (the latter set on upsert).
/// `None` when a registry column is needed and the tenant is unknown.
fn landlord_key(
    envelope: &Envelope,
    table: &TableConfig,
    tenant: Option<&Tenant>,
) -> Option<Vec<ColumnText>> {
    let mut key = vec![(
        table.landlord_tenant_key.clone(),
        Some(envelope.tenant.id.to_string()),
    )];
    let fields: Option<&BTreeMap<String, Option<String>>> = tenant.map(|t| &t.fields);
    for (column, field) in &table.landlord_registry_columns {
        let value = match (fields.and_then(|f| f.get(field)), field.as_str()) {
            (Some(value), _) => value.clone(),
            (None, "id") => Some(envelope.tenant.id.to_string()),
            (None, "slug") => Some(envelope.tenant.slug.clone()),
            (None, _) => return None,
        };
        key.push((column.clone(), value));
    }
    Some(key)
}

/// The change's key plus its data columns (all of them; the target's
/// columns filter them later).
fn change_from(envelope: &Envelope, key: Vec<ColumnText>) -> Change {
    let columns = envelope
        .columns
        .iter()
        .filter(|(_, value)| !value.unchanged)
        .map(|(name, value)| (name.clone(), value.value.clone()))
        .collect();
    Change {
        key,
        columns,
        version: envelope
            .version
            .clone()
            .unwrap_or_else(|| NO_VERSION.to_string()),
        // The side that wrote the version, which is what the tie-break compares.
        side: envelope.source.unwrap_or(envelope.origin.side),
        is_delete: envelope.op == Op::Delete,
    }
}

/// Keeps the columns the target has and that carry data. The registry
/// columns of a landlord key move from the key to the columns here.
pub(crate) fn data_columns_only(
    mut change: Change,
    has_column: impl Fn(&str) -> bool,
    config: &Config,
    table: &TableConfig,
) -> Change {
    let registry: Vec<ColumnText> = change
        .key
        .iter()
        .filter(|(c, _)| table.landlord_registry_columns.contains_key(c))
        .cloned()
        .collect();
    change
        .key
        .retain(|(c, _)| !table.landlord_registry_columns.contains_key(c));
    change
        .columns
        .retain(|(c, _)| config.is_data_column(table, c) && has_column(c));
    if !change.is_delete {
        change.columns.extend(registry);
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::envelope::{ColumnValue, Origin, ENVELOPE_VERSION};
    use crate::model::TenantRef;

    fn config() -> Config {
        Config::parse(
            r#"
            [landlord]
            dsn = "host=x dbname=landlord"
            [tenants]
            connection_template = "host=x dbname={database_name}"
            [[table]]
            name = "tenant_brandings"
            exclude_columns = ["internal_note"]
            [table.landlord_registry_columns]
            tenant_slug = "slug"
            region = "region"
            [kafka]
            brokers = "x:9092"
        "#,
        )
        .unwrap()
    }

    fn envelope(side: Side, op: Op) -> Envelope {
        let columns = BTreeMap::from([
            (
                "primary_color".to_string(),
                ColumnValue::text("text", Some("#fff".into())),
            ),
            ("custom_css".to_string(), ColumnValue::unchanged("text")),
            (
                "internal_note".to_string(),
                ColumnValue::text("text", Some("x".into())),
            ),
        ]);
        Envelope {
            v: ENVELOPE_VERSION,
            op,
            table: "tenant_brandings".into(),
            tenant: TenantRef {
                id: "7".into(),
                slug: "acme".into(),
            },
            origin: Origin {
                side,
                database: "db".into(),
                lsn: "0/1".into(),
                commit_ts: None,
                xid: None,
            },
            version: Some("2026-01-01 00:00:00+00".into()),
            source: None,
            key: BTreeMap::new(),
            columns,
        }
    }

    fn tenants() -> HashMap<TenantId, Tenant> {
        let tenant = Tenant {
            id: "7".into(),
            slug: "acme".into(),
            database_name: "tenant_acme".into(),
            fields: BTreeMap::from([
                ("slug".to_string(), Some("acme".to_string())),
                ("region".to_string(), Some("eu".to_string())),
            ]),
        };
        HashMap::from([(TenantId::from("7"), tenant)])
    }

    #[test]
    fn a_change_goes_to_the_opposite_side() {
        assert_eq!(
            Target::of(&envelope(Side::Tenant, Op::Upsert)),
            Target::Landlord
        );
        assert_eq!(
            Target::of(&envelope(Side::Landlord, Op::Upsert)),
            Target::Tenant("7".into())
        );
        assert_eq!(Target::Landlord.side(), Side::Landlord);
    }

    #[test]
    fn a_tenant_change_is_keyed_by_tenant_id_with_registry_columns_on_the_landlord() {
        let config = config();
        let change = change_for(
            &config,
            &tenants(),
            &Target::Landlord,
            &envelope(Side::Tenant, Op::Upsert),
        )
        .unwrap();
        let table = config.table("tenant_brandings").unwrap();
        let change = data_columns_only(change, |_| true, &config, table);
        assert_eq!(change.key, vec![("tenant_db_id".into(), Some("7".into()))]);
        assert!(change
            .columns
            .contains(&("tenant_slug".into(), Some("acme".into()))));
        assert!(change
            .columns
            .contains(&("region".into(), Some("eu".into()))));
        assert!(
            !change.columns.iter().any(|(c, _)| c == "custom_css"),
            "unchanged TOAST is left alone"
        );
        assert!(
            !change.columns.iter().any(|(c, _)| c == "internal_note"),
            "excluded"
        );
        assert_eq!(change.side, Side::Tenant);
    }

    #[test]
    fn a_landlord_change_is_keyed_by_the_tenant_row_key() {
        let config = config();
        let change = change_for(
            &config,
            &tenants(),
            &Target::Tenant("7".into()),
            &envelope(Side::Landlord, Op::Upsert),
        )
        .unwrap();
        assert_eq!(change.key, vec![("id".into(), Some("1".into()))]);
    }

    #[test]
    fn an_unknown_tenant_cannot_be_routed_when_registry_columns_are_needed() {
        let config = config();
        let err = change_for(
            &config,
            &HashMap::new(),
            &Target::Landlord,
            &envelope(Side::Tenant, Op::Upsert),
        )
        .unwrap_err();
        assert!(err.contains("tenant 7 is not in the registry"), "{err}");
        let err = change_for(
            &config,
            &HashMap::new(),
            &Target::Tenant("7".into()),
            &envelope(Side::Landlord, Op::Upsert),
        )
        .unwrap_err();
        assert!(err.contains("tenant 7"), "{err}");
    }

    #[test]
    fn a_delete_keeps_only_the_key_and_its_version_side_comes_from_source() {
        let config = config();
        let mut deleted = envelope(Side::Landlord, Op::Snapshot);
        deleted.op = Op::Delete;
        deleted.source = Some(Side::Tenant);
        let change =
            change_for(&config, &tenants(), &Target::Tenant("7".into()), &deleted).unwrap();
        let table = config.table("tenant_brandings").unwrap();
        let change = data_columns_only(change, |c| c != "primary_color", &config, table);
        assert!(change.is_delete);
        assert!(change.columns.is_empty(), "{:?}", change.columns);
        assert_eq!(change.side, Side::Tenant, "the side that wrote the version");
    }

    #[test]
    fn a_change_without_a_version_is_older_than_any_write() {
        let config = config();
        let mut old = envelope(Side::Tenant, Op::Upsert);
        old.version = None;
        let change = change_for(&config, &tenants(), &Target::Landlord, &old).unwrap();
        assert_eq!(change.version, NO_VERSION);
    }
}
