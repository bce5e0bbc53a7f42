//! Tenant discovery at runtime, several PostgreSQL servers, and per-tenant
//! direction (cutover, rollback, pause and resume).

use crate::support::{
    confirmed_lsn, current_lsn, dsn, eventually, landlord_color, lsn_text, offset, pg_port,
    set_landlord_color, set_tenant_color, tenant_color, wait_streaming, Bridge, OwnPostgres,
    TestEnv, TENANT_SCHEMA,
};

async fn wait_landlord(env: &TestEnv, index: usize, color: &str) {
    eventually(&format!("landlord row {index} = {color}"), || async {
        (landlord_color(env, index).await.as_deref() == Some(color)).then_some(())
    })
    .await;
}

async fn wait_tenant(env: &TestEnv, index: usize, color: &str) {
    eventually(&format!("tenant row {index} = {color}"), || async {
        (tenant_color(env, index).await.as_deref() == Some(color)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_added_while_running_is_synced_with_its_existing_rows_both_ways() {
    let mut env = TestEnv::new("discover", 1).await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;

    // A new tenant with a row of its own.
    let second = env.add_tenant_database().await;
    set_tenant_color(&env, 1, "#200000").await;
    env.register(&second).await;
    wait_landlord(&env, 1, "#200000").await;

    // A new tenant whose landlord row exists before it is registered.
    let third = env.add_tenant_database().await;
    let landlord = env.landlord().await;
    landlord
        .execute(
            "INSERT INTO tenants (id, slug, numeric_id, database_name, status) VALUES ($1, $2, $3, $4, 'pending')",
            &[&third.id, &third.slug, &(1000 + third.id as i32), &third.database],
        )
        .await
        .unwrap();
    set_landlord_color(&env, 2, "#300000").await;
    landlord
        .execute(
            "UPDATE tenants SET status = 'active' WHERE id = $1",
            &[&third.id],
        )
        .await
        .unwrap();
    wait_tenant(&env, 2, "#300000").await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deactivated_tenant_stops_syncing_and_keeps_its_slot() {
    let mut env = TestEnv::new("deactivate", 2).await;
    set_tenant_color(&env, 0, "#0a0000").await;
    set_tenant_color(&env, 1, "#0b0000").await;
    let mut bridge = env.start_bridge();
    wait_landlord(&env, 0, "#0a0000").await;
    wait_landlord(&env, 1, "#0b0000").await;

    env.landlord()
        .await
        .execute("UPDATE tenants SET status = 'inactive' WHERE id = 2", &[])
        .await
        .unwrap();
    // Stopped, not only told to stop: a reader still taking its snapshot
    // would pick up the next write.
    let stopped = format!(
        "reader stopped cleanly database={} ",
        env.tenants[1].database
    );
    eventually("reader of the deactivated tenant stopped", || async {
        bridge.log_text().contains(&stopped).then_some(())
    })
    .await;
    let inactive = env.tenant(1).await;
    let before_write = current_lsn(&inactive).await;
    set_tenant_color(&env, 1, "#0b0001").await;
    set_tenant_color(&env, 0, "#0a0001").await;
    wait_landlord(&env, 0, "#0a0001").await;

    // Markers: a tenant registered after the write starts streaming (the
    // registry was read again, and did not restart the inactive one), and
    // the applier handled everything in the topic.
    let third = env.add_tenant_database().await;
    env.register(&third).await;
    wait_streaming(&bridge, 4).await;
    env.wait_applier_caught_up().await;
    let slot: (i64, bool) = {
        let row = inactive
            .query_one(
                "SELECT count(*), coalesce(bool_or(active), false) FROM pg_replication_slots
                  WHERE database = current_database()",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(slot, (1, false), "the slot is kept, and nobody streams it");
    let confirmed = confirmed_lsn(&inactive).await.unwrap();
    assert!(
        confirmed <= before_write,
        "the write made after the stop was never read: {} confirmed, the write after {}",
        lsn_text(confirmed),
        lsn_text(before_write)
    );
    assert_eq!(
        landlord_color(&env, 1).await.as_deref(),
        Some("#0b0000"),
        "inactive tenant not synced"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_on_a_second_postgres_server_is_synced() {
    let second = OwnPostgres::start(offset::SECOND_POSTGRES, &[]);
    let env = TestEnv::new("secondpg", 1).await;
    let remote_db = format!("{}_remote", env.prefix);
    second
        .connect("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {remote_db}"))
        .await
        .unwrap();
    let remote = second.connect(&remote_db).await;
    remote.batch_execute(TENANT_SCHEMA).await.unwrap();
    remote
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#e0e0e0')",
            &[],
        )
        .await
        .unwrap();

    let landlord = env.landlord().await;
    landlord
        .batch_execute(&format!(
            "ALTER TABLE tenants ADD COLUMN db_port integer NOT NULL DEFAULT {};
             INSERT INTO tenants (id, slug, numeric_id, database_name, db_port) VALUES (9, 'remote', 1009, '{remote_db}', {});",
            pg_port(),
            second.port,
        ))
        .await
        .unwrap();
    env.replace_in_config(
        &format!("connection_template = \"{}\"", dsn("{database_name}")),
        "connection_template = \"host=127.0.0.1 port={db_port} user=postgres dbname={database_name}\"\nregistry_query = \"SELECT id::text AS id, slug, database_name, db_port FROM tenants WHERE status = 'active'\"",
    );

    let mut bridge = env.start_bridge();
    eventually("remote tenant's row on the landlord", || async {
        let row = landlord
            .query_opt(
                "SELECT primary_color::text FROM tenant_brandings WHERE tenant_db_id = 9",
                &[],
            )
            .await
            .unwrap()?;
        (row.get::<_, Option<String>>(0).as_deref() == Some("#e0e0e0")).then_some(())
    })
    .await;
    landlord
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#e1e1e1' WHERE tenant_db_id = 9",
            &[],
        )
        .await
        .unwrap();
    eventually("landlord change on the remote tenant", || async {
        let row = remote
            .query_opt(
                "SELECT primary_color::text FROM tenant_brandings WHERE id = 1",
                &[],
            )
            .await
            .unwrap()?;
        (row.get::<_, Option<String>>(0).as_deref() == Some("#e1e1e1")).then_some(())
    })
    .await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn direction_switches_pause_and_resume_at_runtime_lose_nothing() {
    let env = TestEnv::new("direction", 1).await;
    set_tenant_color(&env, 0, "#d00000").await;
    let mut bridge = env.start_bridge();
    wait_landlord(&env, 0, "#d00000").await;
    let direction = |args: &[&str]| {
        let mut all = vec!["direction"];
        all.extend_from_slice(args);
        let (ok, output) = env.bridge_command(&all);
        assert!(ok, "{output}");
    };

    // Cutover to tenant → landlord only: landlord edits stay on the landlord.
    let seen = reconciled(&bridge, "to_landlord");
    direction(&["set", "1", "to-landlord"]);
    wait_reconciled(&bridge, "to_landlord", seen).await;
    set_tenant_color(&env, 0, "#d00001").await;
    wait_landlord(&env, 0, "#d00001").await;
    set_landlord_color(&env, 0, "#d00002").await;
    env.wait_settled().await;
    assert_eq!(
        tenant_color(&env, 0).await.as_deref(),
        Some("#d00001"),
        "landlord change not applied after cutover"
    );

    // Rollback to both: the landlord's newer edit reaches the tenant.
    direction(&["clear", "1"]);
    wait_tenant(&env, 0, "#d00002").await;

    // Pause every tenant, write on the tenant, resume: it catches up.
    let seen = reconciled(&bridge, "paused");
    direction(&["set", "all", "paused"]);
    wait_reconciled(&bridge, "paused", seen).await;
    set_tenant_color(&env, 0, "#d00003").await;
    env.wait_settled().await;
    assert_eq!(
        landlord_color(&env, 0).await.as_deref(),
        Some("#d00002"),
        "paused tenant not applied"
    );
    direction(&["set", "all", "both"]);
    wait_landlord(&env, 0, "#d00003").await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_set_to_tenant_receives_landlord_changes_and_sends_none() {
    let env = TestEnv::new("totenant", 1).await;
    for command in [&["setup"][..], &["direction", "set", "1", "to-tenant"]] {
        let (ok, output) = env.bridge_command(command);
        assert!(ok, "{output}");
    }
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    set_landlord_color(&env, 0, "#c00001").await;
    wait_tenant(&env, 0, "#c00001").await;

    set_tenant_color(&env, 0, "#c00002").await;
    // Marker: the tenant's change is in the topic and the applier has
    // handled everything there.
    let change = ["#c00002".to_string()].into();
    env.topic
        .wait_colors(&change, "the tenant's change in Kafka")
        .await;
    env.wait_applier_caught_up().await;
    assert_eq!(
        landlord_color(&env, 0).await.as_deref(),
        Some("#c00001"),
        "a tenant change does not reach the landlord in to_tenant"
    );
    // Landlord changes keep arriving.
    set_landlord_color(&env, 0, "#c00003").await;
    wait_tenant(&env, 0, "#c00003").await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

/// Log lines saying the applier reconciled tenant 1 in `direction` (it
/// does on every direction change it picks up).
fn reconciled_lines(direction: &str) -> [String; 3] {
    [
        "tenant reconciled".to_string(),
        "tenant=1".to_string(),
        format!("direction=\"{direction}\""),
    ]
}

fn reconciled(bridge: &Bridge, direction: &str) -> usize {
    let lines = reconciled_lines(direction);
    bridge.log_lines_with(&lines.each_ref().map(String::as_str))
}

/// Waits for one more such line than the `seen` counted before the change.
async fn wait_reconciled(bridge: &Bridge, direction: &str, seen: usize) {
    let lines = reconciled_lines(direction);
    bridge
        .wait_log_lines(&lines.each_ref().map(String::as_str), seen + 1)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_that_moves_to_another_server_syncs_there_and_leaves_no_slot_behind() {
    let new_home = OwnPostgres::start(offset::MOVED_POSTGRES, &[]);
    let env = TestEnv::new("moves", 1).await;
    let landlord = env.landlord().await;
    landlord
        .batch_execute(&format!(
            "ALTER TABLE tenants ADD COLUMN db_port integer NOT NULL DEFAULT {}",
            pg_port()
        ))
        .await
        .unwrap();
    env.replace_in_config(
        &format!("connection_template = \"{}\"", dsn("{database_name}")),
        "connection_template = \"host=127.0.0.1 port={db_port} user=postgres dbname={database_name}\"\nregistry_query = \"SELECT id::text AS id, slug, database_name, db_port FROM tenants WHERE status = 'active'\"",
    );
    set_tenant_color(&env, 0, "#b00000").await;
    let mut bridge = env.start_bridge();
    wait_landlord(&env, 0, "#b00000").await;

    // The tenant's database is copied to the new server (as a dump and
    // restore would), with a newer write there, and the registry follows.
    let moved_db = format!("{}_moved", env.prefix);
    new_home
        .connect("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {moved_db}"))
        .await
        .unwrap();
    let moved = new_home.connect(&moved_db).await;
    moved.batch_execute(TENANT_SCHEMA).await.unwrap();
    moved
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#b00001')",
            &[],
        )
        .await
        .unwrap();
    landlord
        .execute(
            "UPDATE tenants SET database_name = $1, db_port = $2 WHERE id = 1",
            &[&moved_db, &(new_home.port as i32)],
        )
        .await
        .unwrap();

    wait_landlord(&env, 0, "#b00001").await;
    // The applier reads the registry on its own interval: until it has
    // seen the move, a landlord change still goes to the old place.
    eventually("the applier knows of the move", || async {
        bridge
            .log_text()
            .contains("tenants joined, moved or changed direction")
            .then_some(())
    })
    .await;
    eventually("the old slot is gone", || async {
        let slots: i64 = env
            .tenant(0)
            .await
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (slots == 0).then_some(())
    })
    .await;
    // Both ways at the new place; the old place hears nothing more.
    landlord
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#b00002' WHERE tenant_db_id = 1",
            &[],
        )
        .await
        .unwrap();
    eventually("a landlord change at the new place", || async {
        let row = moved
            .query_opt(
                "SELECT primary_color::text FROM tenant_brandings WHERE id = 1",
                &[],
            )
            .await
            .unwrap()?;
        (row.get::<_, Option<String>>(0).as_deref() == Some("#b00002")).then_some(())
    })
    .await;
    moved
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#b00003' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    wait_landlord(&env, 0, "#b00003").await;
    assert_eq!(
        tenant_color(&env, 0).await.as_deref(),
        Some("#b00000"),
        "the old place is left alone"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
