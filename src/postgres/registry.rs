//! The tenant registry: which tenant databases exist, how to reach them, and
//! the tenant's id and slug. Read from the landlord with the configured query.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use crate::config::{Config, Dsn};
use crate::model::{TenantId, TenantRef};
use tokio_postgres::Client;

use crate::postgres::DbError;

/// One tenant as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: String,
    pub database_name: String,
    /// Every column the registry query returned, as text (for
    /// `table.landlord_registry_columns`).
    pub fields: BTreeMap<String, Option<String>>,
}

impl Tenant {
    pub fn tenant_ref(&self) -> TenantRef {
        TenantRef {
            id: self.id.clone(),
            slug: self.slug.clone(),
        }
    }

    /// DSN of this tenant's database, from the connection template.
    ///
    /// Every `{field}` is replaced by that registry column, so tenants can
    /// live on several servers (e.g. `host={db_host} port={db_port}`).
    /// The template is read once, left to right: a filled-in value is
    /// never scanned again, so a registry value containing `{slug}` stays
    /// literally that. A `{name}` that is no registry column stays as it is.
    pub fn dsn(&self, template: &Dsn) -> Dsn {
        let template = template.expose();
        let url = template.contains("://");
        let mut dsn = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            dsn.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let field = after.find('}').map(|close| &after[..close]);
            match field.and_then(|f| self.fields.get(f).map(|v| (f, v))) {
                Some((field, value)) => {
                    dsn.push_str(&dsn_value(value.as_deref().unwrap_or(""), url));
                    rest = &after[field.len() + 1..];
                }
                None => {
                    dsn.push('{');
                    rest = after;
                }
            }
        }
        dsn.push_str(rest);
        Dsn::new(dsn)
    }
}

/// A registry value made safe for a DSN, so that it cannot add keys (a
/// database name like `x host=elsewhere` must stay one value).
fn dsn_value(value: &str, url: bool) -> String {
    if url {
        return value
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
    }
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The registered tenants by id, shared between the discovery loop (which
/// refreshes it) and the landlord reader (which maps landlord rows to
/// tenants).
#[derive(Debug, Clone, Default)]
pub struct TenantDirectory(Arc<RwLock<HashMap<TenantId, Tenant>>>);

impl TenantDirectory {
    pub fn replace(&self, tenants: &[Tenant]) {
        let map = tenants.iter().map(|t| (t.id.clone(), t.clone())).collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    pub fn get(&self, id: &str) -> Option<Tenant> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// Reads the registry. Every column is fetched as text so that the query may
/// return ids of any type.
/// The registry's tenants with the ids in `wanted` (in that order), or
/// every tenant when `wanted` is empty; `Err(id)` names an id that is not
/// registered.
pub fn select_tenants(all: Vec<Tenant>, wanted: &[String]) -> Result<Vec<Tenant>, String> {
    if wanted.is_empty() {
        return Ok(all);
    }
    wanted
        .iter()
        .map(|id| {
            all.iter()
                .find(|t| t.id.as_str() == id)
                .cloned()
                .ok_or_else(|| id.clone())
        })
        .collect()
}

pub async fn load_tenants(client: &Client, config: &Config) -> Result<Vec<Tenant>, DbError> {
    let wrapped = format!(
        "SELECT row_to_json(r)::text FROM ({}) r",
        config.tenants.registry_query.trim().trim_end_matches(';')
    );
    let rows = client
        .query(&wrapped, &[])
        .await
        .map_err(|e| DbError::query("landlord", "tenants.registry_query", e))?;
    rows.iter()
        .map(|row| parse_registry_row(row.get::<_, &str>(0)))
        .collect()
}

pub(crate) fn parse_registry_row(json: &str) -> Result<Tenant, DbError> {
    let object: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| DbError::Registry(e.to_string()))?;
    let fields: BTreeMap<String, Option<String>> = object
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s),
                other => Some(other.to_string()),
            };
            (k, text)
        })
        .collect();
    let required = |name: &str| {
        fields.get(name).cloned().flatten().ok_or_else(|| {
            DbError::Registry(format!(
                "the registry query must return a non-null `{name}` column (check tenants.registry_query)"
            ))
        })
    };
    Ok(Tenant {
        id: TenantId::new(required("id")?),
        slug: required("slug")?,
        database_name: required("database_name")?,
        fields,
    })
}

/// The tenants as the status board lists them: where their databases are,
/// without credentials.
pub(crate) fn status_entries(
    tenants: &[Tenant],
    template: &Dsn,
) -> Vec<crate::runtime::status::TenantEntry> {
    tenants
        .iter()
        .map(|t| crate::runtime::status::TenantEntry {
            id: t.id.clone(),
            slug: t.slug.clone(),
            server: t.dsn(template).server(),
            database: t.database_name.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_of_any_type_as_text() {
        let t = parse_registry_row(
            r#"{"id": 7, "slug": "acme", "database_name": "tenant_acme", "numeric_id": 1007}"#,
        )
        .unwrap();
        assert_eq!(t.id.as_str(), "7");
        assert_eq!(t.fields["numeric_id"].as_deref(), Some("1007"));
    }

    #[test]
    fn missing_required_column_names_it() {
        let err = parse_registry_row(r#"{"id": 7, "slug": "acme"}"#).unwrap_err();
        assert!(err.to_string().contains("database_name"), "{err}");
    }

    #[test]
    fn dsn_fills_any_registry_field() {
        let t = parse_registry_row(
            r#"{"id": "1", "slug": "a", "database_name": "t", "db_port": 5433}"#,
        )
        .unwrap();
        let dsn = t.dsn(&Dsn::new("port={db_port} dbname={database_name}"));
        assert_eq!(dsn.expose(), "port=5433 dbname=t");
    }

    #[test]
    fn registry_values_cannot_inject_dsn_keys() {
        let t = parse_registry_row(r#"{"id": "1", "slug": "a", "database_name": "x host=evil"}"#)
            .unwrap();
        let dsn = t.dsn(&Dsn::new("host=h dbname={database_name}"));
        assert_eq!(dsn.expose(), "host=h dbname='x host=evil'");
        let config: tokio_postgres::Config = dsn.expose().parse().unwrap();
        assert_eq!(config.get_dbname(), Some("x host=evil"));
        let url = t.dsn(&Dsn::new("postgres://u@h/{database_name}"));
        assert_eq!(url.expose(), "postgres://u@h/x%20host%3Devil");
    }

    #[test]
    fn the_template_is_filled_in_one_pass() {
        let t = parse_registry_row(
            r#"{"id": "1", "slug": "{database_name}", "database_name": "{slug}x"}"#,
        )
        .unwrap();
        let dsn = t.dsn(&Dsn::new(
            "dbname={database_name} application_name={slug} x={unknown}",
        ));
        assert_eq!(
            dsn.expose(),
            "dbname='{slug}x' application_name='{database_name}' x={unknown}"
        );
    }

    #[test]
    fn dsn_fills_the_database_name() {
        let t =
            parse_registry_row(r#"{"id": "1", "slug": "a", "database_name": "tenant_a"}"#).unwrap();
        let dsn = t.dsn(&Dsn::new("host=h dbname={database_name} password=p"));
        assert_eq!(dsn.expose(), "host=h dbname=tenant_a password=p");
    }
}
