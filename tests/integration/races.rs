//! Application writes racing the bridge's, with row locks held across the
//! bridge's write: the last-writer-wins decision must be taken against the
//! row and its tombstone as committed, so both sides end the same.

use tokio_postgres::Client;

use crate::support::{
    eventually, landlord_color, set_tenant_color, tenant_color, wait_streaming, TestEnv,
};

/// Waits until a session other than `app` waits for a lock in `database`
/// (the bridge, blocked behind the application's open transaction).
async fn bridge_waits_for_a_lock(app: &Client, database: &str) {
    let app_pid: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let observer = crate::support::connect(database).await;
    eventually("the bridge waiting for the application's lock", || async {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = $1 AND pid <> $2 AND pid <> pg_backend_pid()
                    AND wait_event_type = 'Lock'",
                &[&database, &app_pid],
            )
            .await
            .unwrap()
            .get(0);
        (waiting > 0).then_some(())
    })
    .await;
}

async fn landlord_has_row(env: &TestEnv) -> bool {
    env.landlord_row(0).await.is_some()
}

async fn tenant_has_row(env: &TestEnv) -> bool {
    env.tenant_row(0).await.is_some()
}

async fn both_sides(env: &TestEnv, present: bool, what: &str) {
    eventually(what, || async {
        (landlord_has_row(env).await == present && tenant_has_row(env).await == present)
            .then_some(())
    })
    .await;
}

/// A landlord tombstone written as the landlord's application would: the
/// landlord's reader sends it as a delete, `offset` from now.
async fn landlord_deletes_at(env: &TestEnv, offset: &str) {
    let key = format!(r#"{{"tenant_db_id": "{}"}}"#, env.tenants[0].id);
    env.landlord()
        .await
        .execute(
            "INSERT INTO cdc_bridge.tombstones (table_name, row_key, version, source)
             VALUES ('tenant_brandings', $1::text::jsonb, clock_timestamp() + $2::text::interval, 'landlord')
             ON CONFLICT (table_name, row_key) DO UPDATE SET version = EXCLUDED.version, source = 'landlord'",
            &[&key, &offset],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_delete_holding_the_row_lock_beats_an_older_change_applied_meanwhile() {
    let env = TestEnv::new("racedelete", 1).await;
    let bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    set_tenant_color(&env, 0, "#100000").await;
    eventually("the row on the landlord", || async {
        (landlord_color(&env, 0).await.as_deref() == Some("#100000")).then_some(())
    })
    .await;

    let app = env.tenant(0).await;
    app.batch_execute("BEGIN; DELETE FROM tenant_brandings WHERE id = 1")
        .await
        .unwrap();
    // An older landlord change (its server's clock an hour behind: the
    // version is the row's previous one plus 1 µs) heads for the tenant.
    env.landlord()
        .await
        .batch_execute(&format!(
            "SET cdc_bridge.clock_offset = '-1 hour';
             UPDATE tenant_brandings SET primary_color = '#200000' WHERE tenant_db_id = {}",
            env.tenants[0].id
        ))
        .await
        .unwrap();
    bridge_waits_for_a_lock(&app, &env.tenants[0].database).await;
    app.batch_execute("COMMIT").await.unwrap();

    both_sides(&env, false, "the delete wins on both sides").await;
    // Nothing comes back afterwards: a later change of the tenant is the
    // marker that everything before it was applied.
    set_tenant_color(&env, 0, "#300000").await;
    eventually("the marker on the landlord", || async {
        (landlord_color(&env, 0).await.as_deref() == Some("#300000")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_delete_arriving_while_an_application_insert_is_open_wins_on_both_sides() {
    let env = TestEnv::new("raceinsertnew", 1).await;
    let bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;

    let app = env.tenant(0).await;
    app.batch_execute(
        "BEGIN; INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#400000')",
    )
    .await
    .unwrap();
    landlord_deletes_at(&env, "5 seconds").await;
    bridge_waits_for_a_lock(&app, &env.tenants[0].database).await;
    app.batch_execute("COMMIT").await.unwrap();

    both_sides(&env, false, "the newer delete wins on both sides").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_delete_arriving_while_a_newer_application_insert_is_open_loses() {
    let env = TestEnv::new("raceinsertold", 1).await;
    let bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;

    let app = env.tenant(0).await;
    app.batch_execute(
        "BEGIN; INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#500000')",
    )
    .await
    .unwrap();
    landlord_deletes_at(&env, "-1 hour").await;
    bridge_waits_for_a_lock(&app, &env.tenants[0].database).await;
    app.batch_execute("COMMIT").await.unwrap();

    eventually("the newer insert on both sides", || async {
        (landlord_color(&env, 0).await.as_deref() == Some("#500000")
            && tenant_color(&env, 0).await.as_deref() == Some("#500000"))
        .then_some(())
    })
    .await;
}
