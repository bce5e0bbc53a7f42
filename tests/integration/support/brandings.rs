//! The synced rows (`tenant_brandings`) on either side: read them back,
//! write them as an application would, count the writes that reach them.

use tokio_postgres::Client;

use super::env::TestEnv;

/// A row as JSON (so tests compare any column without knowing types).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(serde_json::Map<String, serde_json::Value>);

impl Row {
    fn parse(json: &str) -> Row {
        Row(serde_json::from_str(json).unwrap())
    }

    pub(crate) fn text(&self, column: &str) -> Option<String> {
        match self.0.get(column)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

impl TestEnv {
    /// The landlord row of tenant `index`.
    pub(crate) async fn landlord_row(&self, index: usize) -> Option<Row> {
        let sql = "SELECT to_jsonb(b)::text FROM tenant_brandings b WHERE tenant_db_id = $1";
        let row = self
            .landlord()
            .await
            .query_opt(sql, &[&self.tenants[index].id])
            .await
            .unwrap()?;
        Some(Row::parse(row.get(0)))
    }

    /// The tenant's own branding row.
    pub(crate) async fn tenant_row(&self, index: usize) -> Option<Row> {
        let sql = "SELECT to_jsonb(b)::text FROM tenant_brandings b WHERE id = 1";
        let row = self
            .tenant(index)
            .await
            .query_opt(sql, &[])
            .await
            .unwrap()?;
        Some(Row::parse(row.get(0)))
    }
}

/// The landlord row's `primary_color` of tenant `index`.
pub(crate) async fn landlord_color(env: &TestEnv, index: usize) -> Option<String> {
    env.landlord_row(index)
        .await
        .and_then(|r| r.text("primary_color"))
}

/// The tenant's own row's `primary_color`.
pub(crate) async fn tenant_color(env: &TestEnv, index: usize) -> Option<String> {
    env.tenant_row(index)
        .await
        .and_then(|r| r.text("primary_color"))
}

/// An application write on the tenant side (insert or update).
pub(crate) async fn set_tenant_color(env: &TestEnv, index: usize, color: &str) {
    env.tenant(index)
        .await
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET primary_color = EXCLUDED.primary_color",
            &[&color],
        )
        .await
        .unwrap();
}

/// An application write on the landlord side (insert or update).
pub(crate) async fn set_landlord_color(env: &TestEnv, index: usize, color: &str) {
    let tenant = &env.tenants[index];
    env.landlord()
        .await
        .execute(
            "INSERT INTO tenant_brandings (tenant_db_id, tenant_slug, primary_color) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_db_id) DO UPDATE SET primary_color = EXCLUDED.primary_color",
            &[&tenant.id, &tenant.slug, &color],
        )
        .await
        .unwrap();
}

/// Installs a trigger that logs every write to `tenant_brandings` in
/// `write_log`, to count applies.
pub(crate) async fn log_writes(client: &Client) {
    client
        .batch_execute(
            "CREATE TABLE write_log (op text, at timestamptz DEFAULT clock_timestamp());
             CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO write_log (op) VALUES (TG_OP); RETURN NULL; END $$;
             CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON tenant_brandings
                 FOR EACH ROW EXECUTE FUNCTION log_write();",
        )
        .await
        .unwrap();
}

/// Rows in `write_log` (see `log_writes`).
pub(crate) async fn write_count(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM write_log", &[])
        .await
        .unwrap()
        .get(0)
}
