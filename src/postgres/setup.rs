//! Installing what the bridge needs in a database: the SQL in `migrations/`
//! (rendered with the configured names), for the landlord and for every
//! tenant database (the Kafka topics are `kafka::ensure_topic`'s). Every
//! step is idempotent: `setup` can be run again at any time, and `run`
//! installs it in a database that lacks it.

use tokio_postgres::Client;

use super::bridge_schema::BridgeTables;
use crate::config::{Config, TableConfig};
use crate::model::Side;
use crate::postgres::{quote_ident, quote_literal, quote_qualified, DbError};

/// A migration file, rendered once per database or once per synced table.
struct Migration {
    name: &'static str,
    sql: &'static str,
}

macro_rules! migration {
    ($path:literal) => {
        Migration {
            name: $path,
            sql: include_str!(concat!("../../migrations/", $path)),
        }
    };
}

/// Both sides get the common set; the landlord also keeps the directions.
const COMMON: &[Migration] = &[
    migration!("common/001_bridge_state.sql"),
    migration!("common/002_publish_table.sql"),
    migration!("common/003_sync_columns.sql"),
    migration!("common/004_apply_token.sql"),
];
const LANDLORD_ONLY: &[Migration] = &[
    migration!("landlord/010_tenant_directions.sql"),
    migration!("landlord/011_installed_databases.sql"),
    migration!("landlord/012_apply_token.sql"),
    migration!("landlord/013_instances.sql"),
];
const TEARDOWN: &[Migration] = &[
    migration!("common/teardown.sql"),
    migration!("common/teardown_database.sql"),
];

const GRANTS: &[Migration] = &[
    migration!("common/grants.sql"),
    migration!("common/grants_table.sql"),
];
const LANDLORD_GRANTS: &[Migration] = &[migration!("landlord/grants_registry.sql")];

impl Migration {
    fn is_per_table(&self) -> bool {
        self.sql.contains("{{table}}")
    }
}

fn migrations(side: Side) -> Vec<&'static Migration> {
    let own: &[Migration] = match side {
        Side::Tenant => &[],
        Side::Landlord => LANDLORD_ONLY,
    };
    COMMON.iter().chain(own).collect()
}

/// The `format()` template, as a literal, of the statement the insert
/// trigger runs to wait for the writers of a visible row of the new row's
/// key: `SELECT 1 FROM %s WHERE "id" = ($1)."id" FOR SHARE` (the table
/// comes from `TG_RELID`, the new row is `$1`).
fn visible_row_share_lock(columns: &[String]) -> String {
    let conditions: Vec<String> = columns
        .iter()
        .map(|c| format!("{0} = ($1).{0}", quote_ident(c)))
        .collect();
    // `%` would be a format() directive; doubled, it is a plain percent sign.
    let query = format!(
        "SELECT 1 FROM %s WHERE {} FOR SHARE",
        conditions.join(" AND ").replace('%', "%%")
    );
    quote_literal(&query)
}

/// `jsonb_build_object('id', NEW."id"::text, ...)`: the row key as the
/// tombstones table stores it (text values, so both sides build it alike).
fn row_key_expression(record: &str, columns: &[String]) -> String {
    let pairs: Vec<String> = columns
        .iter()
        .map(|c| format!("{}, {record}.{}::text", quote_literal(c), quote_ident(c)))
        .collect();
    format!("jsonb_build_object({})", pairs.join(", "))
}

fn render(sql: &str, config: &Config, side: Side, table: Option<&TableConfig>) -> String {
    let replication = &config.replication;
    let schema = quote_ident(&replication.bridge_schema);
    let mut out = sql
        .replace(
            "{{tombstones_literal}}",
            &quote_literal(&format!("{schema}.tombstones")),
        )
        .replace("{{schema}}", &schema)
        .replace(
            "{{publication_literal}}",
            &quote_literal(&replication.publication),
        )
        .replace("{{publication}}", &quote_ident(&replication.publication))
        .replace(
            "{{source_column}}",
            &quote_ident(&config.sync.source_column),
        )
        .replace(
            "{{version_column}}",
            &quote_ident(&config.sync.version_column),
        )
        .replace("{{side_literal}}", &quote_literal(side.as_str()));
    if let Some(table) = table {
        let name = table.on(side);
        let keys = table.key_columns(side);
        out = out
            .replace("{{table_literal}}", &quote_literal(&quote_qualified(name)))
            .replace("{{table}}", &quote_qualified(name))
            .replace("{{logical_literal}}", &quote_literal(&table.name))
            .replace(
                "{{stamp_function}}",
                &quote_ident(&format!("stamp_{}", table.name)),
            )
            .replace(
                "{{tombstone_function}}",
                &quote_ident(&format!("tombstone_{}", table.name)),
            )
            .replace(
                "{{lock_function}}",
                &quote_ident(&format!("lock_{}", table.name)),
            )
            .replace("{{visible_row_share_lock}}", &visible_row_share_lock(&keys))
            .replace("{{row_key_new}}", &row_key_expression("NEW", &keys))
            .replace("{{row_key_old}}", &row_key_expression("OLD", &keys));
    }
    out
}

fn render_all(config: &Config, side: Side, files: &[&Migration]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for migration in files {
        if migration.is_per_table() {
            for table in &config.tables {
                let header = format!("{} ({})", migration.name, table.on(side));
                out.push((header, render(migration.sql, config, side, Some(table))));
            }
        } else {
            out.push((
                migration.name.to_string(),
                render(migration.sql, config, side, None),
            ));
        }
    }
    out
}

/// Every statement `setup` runs on one side, with a header per file.
pub fn render_side(config: &Config, side: Side) -> Vec<(String, String)> {
    render_all(config, side, &migrations(side))
}

/// The GRANT statements the role running `run` needs on one side.
pub fn render_grants(
    config: &Config,
    side: Side,
    role: &str,
    database: &str,
) -> Vec<(String, String)> {
    let own: &[Migration] = match side {
        Side::Tenant => &[],
        Side::Landlord => LANDLORD_GRANTS,
    };
    let files: Vec<&Migration> = GRANTS.iter().chain(own).collect();
    render_all(config, side, &files)
        .into_iter()
        .map(|(name, sql)| {
            (
                name,
                sql.replace("{{role}}", &quote_ident(role))
                    .replace("{{database}}", &quote_ident(database)),
            )
        })
        .collect()
}

/// Every statement `teardown` runs on one side.
pub fn render_teardown(config: &Config, side: Side) -> Vec<(String, String)> {
    render_all(config, side, &TEARDOWN.iter().collect::<Vec<_>>())
}

/// Installs one side's migrations in one database, in one transaction.
pub async fn install(
    client: &mut Client,
    config: &Config,
    side: Side,
    database: &str,
) -> Result<(), DbError> {
    run_in_transaction(client, database, render_side(config, side)).await
}

/// Installs the migrations unless they are there already: `run` calls this
/// for every database it starts, and the role `run` uses normally may not
/// alter tables (see README, "Roles and grants").
pub async fn ensure_installed(
    client: &mut Client,
    config: &Config,
    side: Side,
    database: &str,
) -> Result<(), DbError> {
    if is_installed(client, config, side, database).await? {
        return Ok(());
    }
    install(client, config, side, database)
        .await
        .map_err(|e| match e {
            DbError::Query { source, .. }
                if source.code()
                    == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                DbError::Setup {
                    database: database.to_string(),
                    reason: crate::postgres::describe(&source),
                }
            }
            other => other,
        })
}

/// Every synced table has the bridge's triggers and is published, and the
/// bookkeeping tables exist.
async fn is_installed(
    client: &Client,
    config: &Config,
    side: Side,
    database: &str,
) -> Result<bool, DbError> {
    let synced: Vec<String> = config
        .tables
        .iter()
        .map(|t| quote_qualified(t.on(side)))
        .collect();
    let bridge = BridgeTables::new(config);
    // The newest table of each side stands for its set: an older install
    // lacks it and is installed again.
    let newest = match side {
        Side::Landlord => bridge.check_runs(),
        Side::Tenant => bridge.installation(),
    };
    let sql = "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL
                  AND (SELECT count(*) FROM unnest($3::text[]) t
                        WHERE EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(t) AND tgname = 'cdc_bridge_stamp')
                          AND EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                                       WHERE p.pubname = $4 AND r.prrelid = to_regclass(t))) = cardinality($3::text[])";
    let row = client
        .query_one(
            sql,
            &[
                &bridge.installation(),
                &newest,
                &synced,
                &config.replication.publication,
            ],
        )
        .await
        .map_err(|e| DbError::query(database, "check setup", e))?;
    Ok(row.get(0))
}

/// Removes what `install` created (bridge columns and their data included).
pub async fn uninstall(
    client: &mut Client,
    config: &Config,
    side: Side,
    database: &str,
) -> Result<(), DbError> {
    run_in_transaction(client, database, render_teardown(config, side)).await
}

async fn run_in_transaction(
    client: &mut Client,
    database: &str,
    statements: Vec<(String, String)>,
) -> Result<(), DbError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| DbError::query(database, "BEGIN", e))?;
    // Concurrent installs (setup racing a starting reader) queue here.
    tx.batch_execute("SELECT pg_advisory_xact_lock(hashtext('cdc_bridge_setup'))")
        .await
        .map_err(|e| DbError::query(database, "setup lock", e))?;
    for (name, sql) in statements {
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
        assert!(all.contains("jsonb_build_object('id', NEW.\"id\"::text)"));
        assert!(all.contains("NEW.\"cdc_source\" := 'tenant'"));
        assert!(all.contains("jsonb_build_object('id', NEW.\"id\"::text)"));
        assert!(all.contains("NEW.\"cdc_source\" := 'tenant'"));
        assert!(!all.contains("{{"), "every placeholder is filled: {all}");
    }

    #[test]
    fn landlord_side_has_its_own_set() {
        let landlord: Vec<String> = render_side(&config(), Side::Landlord)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            landlord.iter().any(|n| n.starts_with("landlord/")),
            "{landlord:?}"
        );
        let tenant: Vec<String> = render_side(&config(), Side::Tenant)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            !tenant.iter().any(|n| n.starts_with("landlord/")),
            "{tenant:?}"
        );
    }
}
