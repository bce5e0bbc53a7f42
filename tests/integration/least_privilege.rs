//! `run` (and `check --repair`) work as a non-superuser role with exactly
//! the grants that `cdc-bridge grants` prints, once `setup` ran as the
//! tables' owner.

use crate::support::{self, eventually, wait_streaming, TestEnv};

/// A LOGIN REPLICATION role with exactly the printed grants (after `setup`
/// as the owner), and the configuration switched to it.
async fn restricted_role(env: &TestEnv) -> String {
    let role = format!("{}_runner", env.prefix);
    let admin = support::connect("postgres").await;
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN REPLICATION NOSUPERUSER"))
        .await
        .unwrap();
    let (ok, output) = env.bridge_command(&["setup"]);
    assert!(ok, "{output}");
    let (ok, grants) = env.bridge_command(&["grants", "--role", &role]);
    assert!(ok, "{grants}");

    // Run each database's section of the printed GRANTs in that database.
    let mut database = None;
    let mut sql = String::new();
    for line in grants.lines().chain(["-- ===== end database x ====="]) {
        if let Some(rest) = line.strip_prefix("-- ===== ") {
            if let Some(db) = database.take() {
                support::connect(db)
                    .await
                    .batch_execute(&sql)
                    .await
                    .unwrap();
            }
            database = rest.split_whitespace().nth(2);
            sql.clear();
        } else if !line.starts_with("-- ") && !line.starts_with("[") {
            sql.push_str(line);
            sql.push('\n');
        }
    }

    env.replace_in_config("user=postgres", &format!("user={role}"));
    let superuser: bool = env
        .landlord()
        .await
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .get(0);
    assert!(!superuser);
    role
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bridge_runs_as_a_role_with_only_the_documented_grants() {
    let env = TestEnv::new("leastpriv", 1).await;
    restricted_role(&env).await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    env.tenant(0)
        .await
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#5e5e5e')",
            &[],
        )
        .await
        .unwrap();
    eventually("tenant change applied by the restricted role", || async {
        let row = env.landlord_row(0).await?;
        (row.text("primary_color").as_deref() == Some("#5e5e5e")).then_some(())
    })
    .await;
    env.landlord()
        .await
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#6e6e6e' WHERE tenant_db_id = 1",
            &[],
        )
        .await
        .unwrap();
    eventually("landlord change applied by the restricted role", || async {
        let row = env.tenant_row(0).await?;
        (row.text("primary_color").as_deref() == Some("#6e6e6e")).then_some(())
    })
    .await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());

    // The consistency check and its repair need no more than these grants.
    env.landlord()
        .await
        .batch_execute("BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM tenant_brandings; COMMIT;")
        .await
        .unwrap();
    let found = env.bridge_run(&["check"]);
    assert_eq!(found.code, 1, "{}{}", found.stdout, found.stderr);
    assert!(found.stdout.contains("tenant_only"), "{}", found.stdout);
    let repaired = env.bridge_run(&["check", "--repair"]);
    assert_eq!(repaired.code, 0, "{}{}", repaired.stdout, repaired.stderr);
    let row = env
        .landlord_row(0)
        .await
        .expect("repaired by the restricted role");
    assert_eq!(row.text("primary_color").as_deref(), Some("#6e6e6e"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_without_the_grants_fails_at_start_naming_the_fix() {
    let env = TestEnv::new("nogrants", 1).await;
    let role = format!("{}_bare", env.prefix);
    support::connect("postgres")
        .await
        .batch_execute(&format!("CREATE ROLE {role} LOGIN REPLICATION NOSUPERUSER"))
        .await
        .unwrap();
    env.replace_in_config("user=postgres", &format!("user={role}"));
    let (ok, output) = env.bridge_command(&["run"]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("permission denied") && output.contains("cdc-bridge grants --role"),
        "{output}"
    );
}

/// A privilege taken away is a problem of the target, not of the change:
/// nothing goes to the dead-letter topic, and the change arrives once the
/// privilege is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_privilege_delays_changes_without_dead_letters_and_they_arrive_after_the_grant() {
    let env = TestEnv::new("revoked", 1).await;
    let role = restricted_role(&env).await;
    let bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    let tenant = env.tenant(0).await;
    tenant
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#7e0000')",
            &[],
        )
        .await
        .unwrap();
    eventually("the row on the landlord", || async {
        let row = env.landlord_row(0).await?;
        (row.text("primary_color").as_deref() == Some("#7e0000")).then_some(())
    })
    .await;

    let landlord = env.landlord().await;
    landlord
        .batch_execute(&format!("REVOKE UPDATE ON tenant_brandings FROM {role}"))
        .await
        .unwrap();
    tenant
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#7e0001' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    eventually("the applier refused by the landlord", || async {
        bridge
            .log_text()
            .contains("permission denied")
            .then_some(())
    })
    .await;
    landlord
        .batch_execute(&format!("GRANT UPDATE ON tenant_brandings TO {role}"))
        .await
        .unwrap();
    eventually("the change after the grant", || async {
        let row = env.landlord_row(0).await?;
        (row.text("primary_color").as_deref() == Some("#7e0001")).then_some(())
    })
    .await;
    let dead = env.topic.dead_letters().messages();
    assert!(
        dead.is_empty(),
        "nothing dead-lettered: {} messages",
        dead.len()
    );
}
