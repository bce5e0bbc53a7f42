//! Awkward input: schema drift, awkward identifiers, a TRUNCATE.

use crate::support::{eventually, set_tenant_color, wait_streaming, TestEnv};

async fn landlord_text(env: &TestEnv, column: &str) -> Option<String> {
    env.landlord_row(0).await.and_then(|r| r.text(column))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_on_one_side_only_is_ignored_until_both_have_it_and_a_dropped_one_does_not_break()
{
    let env = TestEnv::new("drift", 1).await;
    let tenant = env.tenant(0).await;
    tenant
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#900000')",
            &[],
        )
        .await
        .unwrap();
    let mut bridge = env.start_bridge();
    eventually("synced", || async {
        (landlord_text(&env, "primary_color").await.as_deref() == Some("#900000")).then_some(())
    })
    .await;

    tenant
        .batch_execute("ALTER TABLE tenant_brandings ADD COLUMN tagline text")
        .await
        .unwrap();
    tenant
        .execute(
            "UPDATE tenant_brandings SET tagline = 'hello', primary_color = '#900001' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    eventually("other columns still sync", || async {
        (landlord_text(&env, "primary_color").await.as_deref() == Some("#900001")).then_some(())
    })
    .await;
    assert!(
        bridge
            .log_text()
            .contains("column exists only on the source side"),
        "a warning names it"
    );

    env.landlord()
        .await
        .batch_execute("ALTER TABLE tenant_brandings ADD COLUMN tagline text")
        .await
        .unwrap();
    // The applier reads the landlord's columns again by itself.
    bridge
        .wait_log_lines(&["the target gained a synced column", "Landlord"], 1)
        .await;
    tenant
        .execute(
            "UPDATE tenant_brandings SET tagline = 'hello again' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    eventually("once both sides have it, it syncs", || async {
        (landlord_text(&env, "tagline").await.as_deref() == Some("hello again")).then_some(())
    })
    .await;

    tenant
        .batch_execute("ALTER TABLE tenant_brandings DROP COLUMN favicon_url")
        .await
        .unwrap();
    tenant
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#900002' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    eventually("a dropped column does not break the stream", || async {
        (landlord_text(&env, "primary_color").await.as_deref() == Some("#900002")).then_some(())
    })
    .await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_and_columns_with_awkward_names_sync_both_ways() {
    let env = TestEnv::new("awkward", 1).await;
    let tenant = env.tenant(0).await;
    let landlord = env.landlord().await;
    tenant
        .batch_execute(r#"CREATE TABLE "Tenant ""Brandings""" (id integer PRIMARY KEY DEFAULT 1, "Primary Color" text, "MixedCase" text)"#)
        .await
        .unwrap();
    landlord
        .batch_execute(
            r#"CREATE TABLE "Landlord Brandings" (tenant_db_id bigint PRIMARY KEY, tenant_slug text NOT NULL,
                                                   "Primary Color" text, "MixedCase" text)"#,
        )
        .await
        .unwrap();
    env.replace_in_config(
        "name = \"tenant_brandings\"",
        "name = \"tenant_brandings\"\ntenant_table = 'Tenant \"Brandings\"'\nlandlord_table = 'Landlord Brandings'",
    );
    tenant
        .execute(r#"INSERT INTO "Tenant ""Brandings""" (id, "Primary Color", "MixedCase") VALUES (1, 'it''s red', 'Ünïcode')"#, &[])
        .await
        .unwrap();
    let mut bridge = env.start_bridge();
    let read = |sql: &'static str| {
        let landlord = &landlord;
        async move {
            landlord
                .query_opt(sql, &[])
                .await
                .unwrap()
                .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, Option<String>>(1)))
        }
    };
    eventually("awkward table synced to the landlord", || async {
        read(r#"SELECT "Primary Color", "MixedCase" FROM "Landlord Brandings" WHERE tenant_db_id = 1"#)
            .await
            .filter(|(c, m)| c.as_deref() == Some("it's red") && m.as_deref() == Some("Ünïcode"))
    })
    .await;
    landlord
        .execute(r#"UPDATE "Landlord Brandings" SET "Primary Color" = 'a "quoted" blue' WHERE tenant_db_id = 1"#, &[])
        .await
        .unwrap();
    eventually("and back to the tenant", || async {
        let row = tenant
            .query_opt(r#"SELECT "Primary Color" FROM "Tenant ""Brandings""""#, &[])
            .await
            .unwrap()?;
        (row.get::<_, Option<String>>(0).as_deref() == Some("a \"quoted\" blue")).then_some(())
    })
    .await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncate_of_a_synced_table_is_logged_and_not_replicated() {
    let env = TestEnv::new("truncate", 1).await;
    set_tenant_color(&env, 0, "#f00000").await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    eventually("synced", || async {
        (landlord_text(&env, "primary_color").await.as_deref() == Some("#f00000")).then_some(())
    })
    .await;
    let events = env.topic.change_events().len();

    env.tenant(0)
        .await
        .batch_execute("TRUNCATE tenant_brandings")
        .await
        .unwrap();
    let database = format!("database={}", env.tenants[0].database);
    bridge
        .wait_log_lines(
            &["TRUNCATE of a synced table is not replicated", &database],
            1,
        )
        .await;
    // The reader is past the truncate; whatever it sent is applied by now.
    env.wait_settled().await;
    assert_eq!(
        env.topic.change_events().len(),
        events,
        "no event for the truncate"
    );
    assert_eq!(
        landlord_text(&env, "primary_color").await.as_deref(),
        Some("#f00000"),
        "the landlord row is left alone"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
