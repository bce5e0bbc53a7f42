//! The command line: setup is idempotent, dry-run touches nothing, bad
//! configuration fails at start naming the key.

mod common;

use common::TestEnv;

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
    assert!(
        output.contains("CREATE PUBLICATION \"cdc_bridge_pub\""),
        "{output}"
    );
    assert!(output.contains("REPLICA IDENTITY FULL"), "{output}");
    let publications = env
        .tenant(0)
        .await
        .query_one("SELECT count(*) FROM pg_publication", &[])
        .await
        .unwrap();
    assert_eq!(publications.get::<_, i64>(0), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_configuration_key_fails_at_start_naming_it() {
    let env = TestEnv::new("badkey", 0).await;
    env.write_config("[bogus]\nsurprise = 1");
    let (ok, output) = env.bridge_command(&["run"]);
    assert!(!ok, "must fail: {output}");
    assert!(output.contains("bogus"), "names the key: {output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn teardown_removes_everything_setup_installed() {
    let env = TestEnv::new("teardown", 1).await;
    let (ok, output) = env.bridge_command(&["setup"]);
    assert!(ok, "{output}");
    let (ok, output) = env.bridge_command(&["teardown", "--drop-slots"]);
    assert!(ok, "teardown failed: {output}");
    for client in [env.tenant(0).await, env.landlord().await] {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM pg_publication)
                      + (SELECT count(*) FROM pg_namespace WHERE nspname = 'cdc_bridge')
                      + (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'cdc_bridge%')
                      + (SELECT count(*) FROM information_schema.columns WHERE column_name IN ('cdc_source', 'cdc_version'))",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 0, "nothing of the bridge is left");
    }
}
