//! Installing what the bridge needs: the SQL in `migrations/` (rendered with
//! the configured names) in the landlord and every tenant database, and the
//! Kafka topic. Every step is idempotent, so `run` repeats it for each
//! tenant it starts and `setup` can be run again at any time.

use tokio_postgres::Client;

use crate::config::{Config, TableConfig};
use crate::envelope::Side;
use crate::postgres::{quote_ident, quote_literal, quote_qualified, DbError};

/// A migration file, rendered once per database or once per synced table.
struct Migration {
    name: &'static str,
    sql: &'static str,
}

const TENANT_MIGRATIONS: &[Migration] = &[
    Migration {
        name: "tenant/001_bridge_state.sql",
        sql: include_str!("../migrations/tenant/001_bridge_state.sql"),
    },
    Migration {
        name: "tenant/002_publish_table.sql",
        sql: include_str!("../migrations/tenant/002_publish_table.sql"),
    },
];

const LANDLORD_MIGRATIONS: &[Migration] = &[Migration {
    name: "landlord/001_bridge_state.sql",
    sql: include_str!("../migrations/landlord/001_bridge_state.sql"),
}];

impl Migration {
    fn is_per_table(&self) -> bool {
        self.sql.contains("{{table}}")
    }
}

fn migrations(side: Side) -> &'static [Migration] {
    match side {
        Side::Tenant => TENANT_MIGRATIONS,
        Side::Landlord => LANDLORD_MIGRATIONS,
    }
}

fn table_name(side: Side, table: &TableConfig) -> &str {
    match side {
        Side::Tenant => table.tenant_table(),
        Side::Landlord => table.landlord_table(),
    }
}

fn render(sql: &str, config: &Config, table: Option<&str>) -> String {
    let replication = &config.replication;
    let mut out = sql
        .replace("{{schema}}", &quote_ident(&replication.bridge_schema))
        .replace(
            "{{publication_literal}}",
            &quote_literal(&replication.publication),
        )
        .replace("{{publication}}", &quote_ident(&replication.publication));
    if let Some(table) = table {
        out = out
            .replace("{{table_literal}}", &quote_literal(&quote_qualified(table)))
            .replace("{{table}}", &quote_qualified(table));
    }
    out
}

/// Every statement `setup` runs on one side, with a header per file.
pub fn render_side(config: &Config, side: Side) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for migration in migrations(side) {
        if migration.is_per_table() {
            for table in &config.tables {
                let name = table_name(side, table);
                out.push((
                    format!("{} ({name})", migration.name),
                    render(migration.sql, config, Some(name)),
                ));
            }
        } else {
            out.push((
                migration.name.to_string(),
                render(migration.sql, config, None),
            ));
        }
    }
    out
}

/// Installs one side's migrations in one database, in one transaction.
pub async fn install(
    client: &mut Client,
    config: &Config,
    side: Side,
    database: &str,
) -> Result<(), DbError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| DbError::query(database, "BEGIN", e))?;
    // Concurrent installs (setup racing a starting reader) queue here.
    tx.batch_execute("SELECT pg_advisory_xact_lock(hashtext('cdc_bridge_setup'))")
        .await
        .map_err(|e| DbError::query(database, "setup lock", e))?;
    for (name, sql) in render_side(config, side) {
        tx.batch_execute(&sql)
            .await
            .map_err(|e| DbError::query(database, &format!("migration {name}"), e))?;
    }
    tx.commit()
        .await
        .map_err(|e| DbError::query(database, "COMMIT", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            r#"
            [landlord]
            dsn = "host=x dbname=landlord"
            [tenants]
            connection_template = "host=x dbname={database_name}"
            [[table]]
            name = "Tenant Brandings"
            [kafka]
            brokers = "x:9092"
        "#,
        )
        .unwrap()
    }

    #[test]
    fn renders_quoted_names_for_every_table() {
        let rendered = render_side(&config(), Side::Tenant);
        let all: String = rendered.iter().map(|(_, sql)| sql.as_str()).collect();
        assert!(all.contains("ALTER TABLE \"Tenant Brandings\" REPLICA IDENTITY FULL"));
        assert!(all.contains("CREATE PUBLICATION \"cdc_bridge_pub\""));
        assert!(all.contains("'\"Tenant Brandings\"'::regclass"));
        assert!(!all.contains("{{"), "every placeholder is filled: {all}");
    }

    #[test]
    fn landlord_side_has_its_own_set() {
        let rendered = render_side(&config(), Side::Landlord);
        assert!(rendered
            .iter()
            .all(|(name, _)| name.starts_with("landlord/")));
    }
}
