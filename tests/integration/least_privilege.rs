//! `run` works as a non-superuser role with exactly the grants that
//! `cdc-bridge grants` prints, once `setup` ran as the tables' owner.

use crate::support::{self, eventually, wait_streaming, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn the_bridge_runs_as_a_role_with_only_the_documented_grants() {
    let env = TestEnv::new("leastpriv", 1).await;
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
