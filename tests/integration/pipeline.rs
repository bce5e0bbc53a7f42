//! The tenant → landlord pipeline on real PostgreSQL and real Kafka.

use crate::support::{self, eventually, wait_streaming, TestEnv};

async fn insert_branding(env: &TestEnv, index: usize, color: &str) {
    env.tenant(index)
        .await
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color, logo_url, font_family) VALUES (1, $1, 'https://x/logo.svg', 'Inter')",
            &[&color],
        )
        .await
        .unwrap();
}

async fn landlord_color_is(env: &TestEnv, index: usize, expected: &str) {
    let what = format!("landlord row of tenant {index} has primary_color {expected}");
    eventually(&what, || async {
        let row = env.landlord_row(index).await?;
        (row.text("primary_color").as_deref() == Some(expected)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_that_existed_before_the_bridge_arrive_through_the_snapshot() {
    let env = TestEnv::new("snapshot", 2).await;
    insert_branding(&env, 0, "#000001").await;
    insert_branding(&env, 1, "#000002").await;
    let mut bridge = env.start_bridge();
    landlord_color_is(&env, 0, "#000001").await;
    landlord_color_is(&env, 1, "#000002").await;
    let row = env.landlord_row(0).await.unwrap();
    assert_eq!(row.text("tenant_slug").as_deref(), Some("tenant1"));
    assert_eq!(row.text("logo_url").as_deref(), Some("https://x/logo.svg"));
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn inserts_and_updates_made_while_running_arrive_on_the_landlord() {
    let env = TestEnv::new("stream", 1).await;
    let mut bridge = env.start_bridge();
    // Wait until the readers stream (snapshot of an empty table done).
    wait_streaming(&bridge, 2).await;
    insert_branding(&env, 0, "#111111").await;
    landlord_color_is(&env, 0, "#111111").await;
    let tenant = env.tenant(0).await;
    tenant
        .execute("UPDATE tenant_brandings SET primary_color = '#222222', font_family = 'Roboto' WHERE id = 1", &[])
        .await
        .unwrap();
    landlord_color_is(&env, 0, "#222222").await;
    let row = env.landlord_row(0).await.unwrap();
    assert_eq!(row.text("font_family").as_deref(), Some("Roboto"));
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn nulls_unicode_and_a_large_css_survive_an_update_of_another_column() {
    let env = TestEnv::new("toast", 1).await;
    let mut bridge = env.start_bridge();
    // 100 kB of poorly compressible CSS, so PostgreSQL stores it out of line (TOAST).
    let css: String = (0..100_000u32)
        .map(|i| char::from(b'a' + ((i.wrapping_mul(2_654_435_761) >> 13) % 26) as u8))
        .collect();
    let tenant = env.tenant(0).await;
    tenant
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color, logo_url, font_family, custom_css, login_message)
             VALUES (1, '#abcdef', NULL, 'Noto Sans 日本語', $1, 'Grüße, 世界 🎨')",
            &[&css],
        )
        .await
        .unwrap();
    landlord_color_is(&env, 0, "#abcdef").await;
    let row = env.landlord_row(0).await.unwrap();
    assert_eq!(row.text("logo_url"), None);
    assert_eq!(row.text("font_family").as_deref(), Some("Noto Sans 日本語"));
    assert_eq!(row.text("login_message").as_deref(), Some("Grüße, 世界 🎨"));
    assert_eq!(row.text("custom_css").as_deref(), Some(css.as_str()));

    // An update that leaves custom_css alone: PostgreSQL does not resend it.
    tenant
        .execute(
            "UPDATE tenant_brandings SET primary_color = '#fedcba' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    landlord_color_is(&env, 0, "#fedcba").await;
    let row = env.landlord_row(0).await.unwrap();
    assert_eq!(
        row.text("custom_css").as_deref(),
        Some(css.as_str()),
        "large value kept intact"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tenants_written_concurrently_stay_separate() {
    let env = TestEnv::new("separate", 2).await;
    insert_branding(&env, 0, "#a00000").await;
    insert_branding(&env, 1, "#b00000").await;
    let mut bridge = env.start_bridge();
    let writes = 200;
    let writer = |index: usize, letter: char| {
        let database = env.tenants[index].database.clone();
        tokio::spawn(async move {
            let client = support::connect(&database).await;
            for i in 0..writes {
                let color = format!("#{letter}{i:05}");
                client
                    .execute(
                        "UPDATE tenant_brandings SET primary_color = $1 WHERE id = 1",
                        &[&color],
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let (a, b) = (writer(0, 'a'), writer(1, 'b'));
    a.await.unwrap();
    b.await.unwrap();
    landlord_color_is(&env, 0, &format!("#a{:05}", writes - 1)).await;
    landlord_color_is(&env, 1, &format!("#b{:05}", writes - 1)).await;
    assert_eq!(
        env.landlord_row(0)
            .await
            .unwrap()
            .text("tenant_slug")
            .as_deref(),
        Some("tenant1")
    );
    assert_eq!(
        env.landlord_row(1)
            .await
            .unwrap()
            .text("tenant_slug")
            .as_deref(),
        Some("tenant2")
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_tenant_row_deletes_the_landlord_row() {
    let env = TestEnv::new("delete", 1).await;
    insert_branding(&env, 0, "#0d0d0d").await;
    let mut bridge = env.start_bridge();
    landlord_color_is(&env, 0, "#0d0d0d").await;
    env.tenant(0)
        .await
        .execute("DELETE FROM tenant_brandings WHERE id = 1", &[])
        .await
        .unwrap();
    eventually("landlord row deleted", || async {
        env.landlord_row(0).await.is_none().then_some(())
    })
    .await;
    // And a new row after the delete arrives again.
    insert_branding(&env, 0, "#0e0e0e").await;
    landlord_color_is(&env, 0, "#0e0e0e").await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
