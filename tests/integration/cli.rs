//! The command line: setup is idempotent, dry-run touches nothing, bad
//! configuration fails at start naming the key.

use tokio_postgres::Client;

use crate::support::{dsn, offset, pg_port, wait_streaming, OwnPostgres, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn setup_is_idempotent_and_installs_the_publication() {
    let env = TestEnv::new("setup", 1).await;
    for _ in 0..2 {
        let (ok, output) = env.bridge_command(&["setup"]);
        assert!(ok, "setup failed: {output}");
    }
    let tenant = env.tenant(0).await;
    let row = tenant
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'cdc_bridge_pub' AND tablename = 'tenant_brandings'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    let identity = tenant
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'tenant_brandings'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(identity.get::<_, String>(0), "f", "replica identity full");
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_dry_run_prints_the_sql_and_changes_nothing() {
    let env = TestEnv::new("dryrun", 1).await;
    let (ok, output) = env.bridge_command(&["setup", "--dry-run"]);
    assert!(ok, "{output}");
    let (landlord_sql, tenant_sql) = output
        .split_once("-- ===== every tenant database =====")
        .unwrap_or_else(|| panic!("no tenant section: {output}"));
    for landlord_only in ["tenant_directions", "installed_databases", "('apply_token'"] {
        assert!(
            landlord_sql.contains(landlord_only) && !tenant_sql.contains(landlord_only),
            "{landlord_only} is set up in the landlord only: {output}"
        );
    }
    for both in [
        "CREATE PUBLICATION \"cdc_bridge_pub\"",
        "REPLICA IDENTITY FULL",
    ] {
        assert!(
            landlord_sql.contains(both) && tenant_sql.contains(both),
            "{both} on both sides: {output}"
        );
    }
    let dead_letters = env.topic.dead_letters();
    for topic in [&env.topic, &dead_letters] {
        assert!(
            output.contains(&format!("create topic {} ", topic.name)),
            "{output}"
        );
    }

    for client in [env.tenant(0).await, env.landlord().await] {
        assert_eq!(bridge_objects(&client).await, 0, "nothing installed");
    }
    for topic in [&env.topic, &dead_letters] {
        assert!(!topic.exists(), "topic {topic} not created");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_configuration_key_fails_at_start_naming_it() {
    let env = TestEnv::new("badkey", 0).await;
    env.write_config("[bogus]\nsurprise = 1");
    let (ok, output) = env.bridge_command(&["run"]);
    assert!(!ok, "must fail: {output}");
    assert!(output.contains("bogus"), "names the key: {output}");
}

/// What the bridge installed (or left) in a database: publications, its
/// schema, triggers, its columns, a replica identity other than the
/// default, replication slots.
async fn bridge_objects(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_publication)
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'cdc_bridge')
                  + (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'cdc_bridge%')
                  + (SELECT count(*) FROM information_schema.columns WHERE column_name IN ('cdc_source', 'cdc_version'))
                  + (SELECT count(*) FROM pg_class WHERE relname = 'tenant_brandings' AND relreplident <> 'd')
                  + (SELECT count(*) FROM pg_replication_slots WHERE database = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn teardown_after_a_run_leaves_nothing_in_any_database_also_of_an_inactive_tenant() {
    let env = TestEnv::new("teardown", 2).await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 3).await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
    env.landlord()
        .await
        .execute("UPDATE tenants SET status = 'inactive' WHERE id = 2", &[])
        .await
        .unwrap();
    let clients = [
        env.tenant(0).await,
        env.tenant(1).await,
        env.landlord().await,
    ];
    for client in &clients {
        assert!(bridge_objects(client).await >= 6, "installed and streamed");
    }

    let (ok, output) = env.bridge_command(&["teardown", "--drop-slots"]);
    assert!(ok, "teardown failed: {output}");
    for client in &clients {
        assert_eq!(
            bridge_objects(client).await,
            0,
            "nothing of the bridge is left"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_type_or_missing_key_fails_at_start_naming_it() {
    let env = TestEnv::new("badtype", 0).await;
    env.replace_in_config("partitions = 3", "partitions = \"three\"");
    let (ok, output) = env.bridge_command(&["run"]);
    assert!(!ok && output.contains("partitions"), "{output}");

    env.replace_in_config("partitions = \"three\"", "partitions = 3");
    env.replace_in_config(&format!("brokers = \"{}\"", env.topic.brokers), "");
    let (ok, output) = env.bridge_command(&["run"]);
    assert!(!ok && output.contains("brokers"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_landlord_or_kafka_fails_at_start_with_advice() {
    let env = TestEnv::new("unreachable", 0).await;
    env.replace_in_config(
        &format!("dsn = \"host=127.0.0.1 port={}", pg_port()),
        "dsn = \"host=127.0.0.1 port=1",
    );
    let (ok, output) = env.bridge_command(&["run"]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("cannot connect to database landlord") && output.contains("check the DSN"),
        "{output}"
    );

    env.write_config("");
    env.replace_in_config(
        &format!("brokers = \"{}\"", env.topic.brokers),
        "brokers = \"127.0.0.1:1\"",
    );
    let (ok, output) = env.bridge_command(&["run"]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("Kafka brokers 127.0.0.1:1 did not answer"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_landlord_without_logical_replication_fails_at_start_naming_wal_level() {
    let replica = OwnPostgres::start(offset::REPLICA_POSTGRES, &[("PG_WAL_LEVEL", "replica")]);
    let env = TestEnv::new("wallevel", 0).await;
    replica
        .connect("postgres")
        .await
        .batch_execute("CREATE DATABASE landlord_replica")
        .await
        .unwrap();
    env.replace_in_config(
        &format!("dsn = \"{}\"", dsn(&env.landlord_db)),
        &format!("dsn = \"{}\"", replica.dsn("landlord_replica")),
    );
    let (ok, output) = env.bridge_command(&["run"]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("wal_level = replica") && output.contains("set wal_level = logical"),
        "{output}"
    );
}
