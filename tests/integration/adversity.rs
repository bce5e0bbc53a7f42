//! Convergence under adversity: a slot lost while running, a column one
//! side gains late, a pause longer than the tombstone retention, forged
//! loop signals and impossible versions, databases with other date and time
//! settings, registry values that look like placeholders.

use crate::support::{
    connect, eventually, landlord_color, set_landlord_color, set_tenant_color, tenant_color,
    wait_streaming, TestEnv,
};

async fn wait_landlord(env: &TestEnv, color: &str) {
    eventually(&format!("{color} on the landlord"), || async {
        (landlord_color(env, 0).await.as_deref() == Some(color)).then_some(())
    })
    .await;
}

async fn wait_tenant(env: &TestEnv, color: &str) {
    eventually(&format!("{color} on the tenant"), || async {
        (tenant_color(env, 0).await.as_deref() == Some(color)).then_some(())
    })
    .await;
}

/// The tenant's slot is dropped under the running bridge (its walsender
/// ended first, as `pg_drop_replication_slot` needs), and the row deleted
/// before the reader made the slot again.
#[tokio::test(flavor = "multi_thread")]
async fn deletes_made_while_a_slot_was_gone_reach_the_other_side_without_a_restart() {
    let env = TestEnv::new("slotgone", 1).await;
    set_tenant_color(&env, 0, "#010000").await;
    let bridge = env.start_bridge();
    wait_landlord(&env, "#010000").await;

    let tenant = env.tenant(0).await;
    // The walsender exits a moment after it is terminated (and the reader
    // may take the slot again meanwhile): try until the drop gets it free.
    eventually("the slot dropped under the running bridge", || async {
        tenant
            .batch_execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
                  WHERE database = current_database() AND active_pid IS NOT NULL;
                 SELECT pg_sleep(0.05);
                 SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE database = current_database();",
            )
            .await
            .ok()
    })
    .await;
    tenant
        .batch_execute("DELETE FROM tenant_brandings WHERE id = 1")
        .await
        .unwrap();
    eventually(
        "the delete made without a slot reaches the landlord",
        || async { env.landlord_row(0).await.is_none().then_some(()) },
    )
    .await;
    assert!(
        bridge
            .log_text()
            .contains("replication slot no longer exists"),
        "the loss is reported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_one_side_gains_late_carries_the_values_written_before() {
    let env = TestEnv::new("latecolumn", 1).await;
    let tenant = env.tenant(0).await;
    tenant
        .batch_execute("ALTER TABLE tenant_brandings ADD COLUMN tagline text")
        .await
        .unwrap();
    tenant
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color, tagline) VALUES (1, '#020000', 'written before')",
            &[],
        )
        .await
        .unwrap();
    let bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    wait_landlord(&env, "#020000").await;

    env.landlord()
        .await
        .batch_execute("ALTER TABLE tenant_brandings ADD COLUMN tagline text")
        .await
        .unwrap();
    // Any later change lets the applier see the landlord's new column.
    set_tenant_color(&env, 0, "#020001").await;
    eventually(
        "the value written before the landlord had the column",
        || async {
            let row = env.landlord_row(0).await?;
            (row.text("tagline").as_deref() == Some("written before")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_paused_longer_than_the_tombstone_retention_does_not_resurrect_deleted_rows() {
    let env = TestEnv::new("longpause", 1).await;
    set_tenant_color(&env, 0, "#030000").await;
    let mut bridge = env.start_bridge();
    wait_landlord(&env, "#030000").await;
    let (ok, output) = env.bridge_command(&["direction", "set", "1", "paused"]);
    assert!(ok, "{output}");
    assert!(bridge.stop().success(), "{}", bridge.log_text());

    // Deleted while paused, and (backdated) older than the retention.
    let tenant = env.tenant(0).await;
    tenant
        .batch_execute(
            "DELETE FROM tenant_brandings WHERE id = 1;
             UPDATE cdc_bridge.tombstones SET deleted_at = now() - interval '40 days'",
        )
        .await
        .unwrap();
    // A start runs a tombstone cleanup round at once.
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    eventually("a tombstone cleanup round ran", || async {
        bridge
            .log_text()
            .contains("tombstone cleanup round done")
            .then_some(())
    })
    .await;
    let kept: i64 = tenant
        .query_one("SELECT count(*) FROM cdc_bridge.tombstones", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "a paused tenant keeps its tombstones");

    let (ok, output) = env.bridge_command(&["direction", "clear", "1"]);
    assert!(ok, "{output}");
    eventually("the delete reaches the landlord on resume", || async {
        env.landlord_row(0).await.is_none().then_some(())
    })
    .await;
    assert!(env.tenant_row(0).await.is_none(), "nothing resurrected");
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

/// An application that knows the bridge's prefix and setting names, but
/// not its apply token, tries to hide a write and to pin the row.
#[tokio::test(flavor = "multi_thread")]
async fn an_application_cannot_hide_its_writes_or_pin_a_row_with_the_bridges_signals() {
    let env = TestEnv::new("forged", 1).await;
    set_tenant_color(&env, 0, "#040000").await;
    let bridge = env.start_bridge();
    wait_landlord(&env, "#040000").await;

    env.tenant(0)
        .await
        .batch_execute(
            "BEGIN;
             SET LOCAL cdc_bridge.applying = 'on';
             SELECT pg_logical_emit_message(true, 'cdc_bridge.apply', '');
             UPDATE tenant_brandings SET primary_color = '#040001', cdc_version = 'infinity', cdc_source = 'landlord' WHERE id = 1;
             COMMIT;",
        )
        .await
        .unwrap();
    wait_landlord(&env, "#040001").await;
    let version: String = env
        .tenant(0)
        .await
        .query_one(
            "SELECT cdc_version::text FROM tenant_brandings WHERE id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(version, "infinity", "the trigger stamped the write");
    // The other side can still win.
    set_landlord_color(&env, 0, "#040002").await;
    wait_tenant(&env, "#040002").await;
    assert!(bridge.log_text().contains("streaming"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_far_in_the_future_goes_to_the_dead_letter_topic_counted() {
    let env = TestEnv::new("futurever", 1).await;
    env.set_http("");
    let bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    let envelope = serde_json::json!({
        "v": 1, "op": "upsert", "table": "tenant_brandings",
        "tenant": {"id": "1", "slug": "tenant1"},
        "origin": {"side": "tenant", "database": "elsewhere", "lsn": "0/1", "commit_ts": null, "xid": null},
        "version": "2999-01-01 00:00:00+00",
        "key": {"id": "1"},
        "columns": {"primary_color": {"type": "character varying(7)", "value": "#050000"}}
    })
    .to_string();
    env.topic.produce("1", envelope.as_bytes()).await;
    let dead_letters = env.topic.dead_letters();
    eventually("the change in the dead-letter topic", || async {
        dead_letters.messages().into_iter().find(|m| {
            m.reason
                .as_deref()
                .is_some_and(|r| r.contains("in the future"))
        })
    })
    .await;
    assert!(env.landlord_row(0).await.is_none(), "not applied");
    let port = bridge.http_port().await;
    let metrics = crate::support::http_request(port, "GET", "/metrics", None, "")
        .await
        .unwrap();
    assert!(
        metrics.contains("cdc_applier_rejected_versions_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_with_other_date_and_time_settings_syncs_the_same_values() {
    let env = TestEnv::new("datestyle", 1).await;
    connect("postgres")
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {db} SET DateStyle = 'SQL, DMY';
             ALTER DATABASE {db} SET TimeZone = 'America/New_York';
             ALTER DATABASE {db} SET IntervalStyle = 'sql_standard';
             ALTER DATABASE {db} SET extra_float_digits = 0",
            db = env.tenants[0].database
        ))
        .await
        .unwrap();
    env.tenant(0)
        .await
        .batch_execute(
            "INSERT INTO tenant_brandings (id, primary_color, updated_at)
             VALUES (1, '#060000', '2026-02-03 04:05:06.789+00')",
        )
        .await
        .unwrap();
    let bridge = env.start_bridge();
    wait_landlord(&env, "#060000").await;
    let same: bool = env
        .landlord()
        .await
        .query_one(
            "SELECT updated_at = '2026-02-03 04:05:06.789+00' FROM tenant_brandings",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same, "the timestamp arrived as written");
    // And the version compares right on the landlord (not read as DMY).
    set_landlord_color(&env, 0, "#060001").await;
    wait_tenant(&env, "#060001").await;
    assert!(bridge.log_text().contains("streaming"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_value_that_looks_like_a_placeholder_is_not_expanded_again() {
    let mut env = TestEnv::new("braces", 0).await;
    let tenant = env.add_tenant_database().await;
    // A slug holding `{database_name}`: filled into application_name, it
    // must stay literally that (a second pass would put the database name
    // there, and one holding `{slug}` would loop back).
    env.landlord()
        .await
        .execute(
            "INSERT INTO tenants (id, slug, numeric_id, database_name) VALUES ($1, '{database_name}', 1001, $2)",
            &[&tenant.id, &tenant.database],
        )
        .await
        .unwrap();
    env.replace_in_config(
        "dbname={database_name}\"",
        "dbname={database_name} application_name={slug}\"",
    );
    set_tenant_color(&env, 0, "#070000").await;
    let bridge = env.start_bridge();
    wait_landlord(&env, "#070000").await;
    let names: Vec<String> = connect("postgres")
        .await
        .query(
            "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = $1",
            &[&tenant.database],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        names.iter().any(|n| n == "{database_name}"),
        "the slug went in literally: {names:?}"
    );
    assert!(bridge.log_text().contains("streaming"));
}
