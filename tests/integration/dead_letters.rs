//! Bad messages go to the dead-letter topic with their reason and original
//! bytes, do not block their partition, and can be re-driven after a fix.

use crate::support::{eventually, wait_streaming, TestEnv};

/// A version newer than anything the test wrote, and plausible (not in the
/// future beyond the bridge's clock-skew bound).
fn now_version() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

fn envelope(tenant: &str, side: &str, color: &str) -> String {
    serde_json::json!({
        "v": 1, "op": "upsert", "table": "tenant_brandings",
        "tenant": {"id": tenant, "slug": "x"},
        "origin": {"side": side, "database": "elsewhere", "lsn": "0/1", "commit_ts": null, "xid": null},
        "version": now_version(),
        "key": {"id": "1"},
        "columns": {
            "primary_color": {"type": "character varying(7)", "value": color},
            "no_such_column": {"type": "text", "value": "ignored"}
        }
    })
    .to_string()
}

async fn dead_letter_with(env: &TestEnv, fragment: &str) -> Vec<u8> {
    let dead_letters = env.topic.dead_letters();
    eventually(&format!("a dead letter saying {fragment:?}"), || async {
        dead_letters
            .messages()
            .into_iter()
            .find(|m| m.reason.as_deref().is_some_and(|r| r.contains(fragment)))
            .map(|m| m.payload)
    })
    .await
}

async fn landlord_color(env: &TestEnv) -> Option<String> {
    env.landlord_row(0)
        .await
        .and_then(|r| r.text("primary_color"))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_messages_go_to_the_dead_letter_topic_and_do_not_block_the_partition() {
    let env = TestEnv::new("deadletter", 1).await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;

    env.topic.produce("1", b"{not json").await;
    assert_eq!(
        dead_letter_with(&env, "not a valid change envelope").await,
        b"{not json"
    );

    env.topic.produce("1", br#"{"v": 99}"#).await;
    assert_eq!(dead_letter_with(&env, "version 99").await, br#"{"v": 99}"#);

    let unknown = envelope("999", "landlord", "#123456");
    env.topic.produce("999", unknown.as_bytes()).await;
    assert_eq!(
        dead_letter_with(&env, "tenant 999 is not in the registry").await,
        unknown.as_bytes()
    );

    let too_long = envelope("1", "tenant", "#toolong!");
    env.topic.produce("1", too_long.as_bytes()).await;
    assert_eq!(
        dead_letter_with(&env, "value too long").await,
        too_long.as_bytes()
    );

    // The partition is not blocked: a good message behind them applies, and
    // a column the target lacks is ignored (schema drift), not fatal.
    env.topic
        .produce("1", envelope("1", "tenant", "#0k0k0k").as_bytes())
        .await;
    eventually("a good message after the bad ones applies", || async {
        (landlord_color(&env).await.as_deref() == Some("#0k0k0k")).then_some(())
    })
    .await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_redriven_after_the_cause_is_fixed() {
    let env = TestEnv::new("redrive", 1).await;
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    let too_long = envelope("1", "tenant", "#toolong!");
    env.topic.produce("1", too_long.as_bytes()).await;
    dead_letter_with(&env, "value too long").await;

    env.landlord()
        .await
        .batch_execute("ALTER TABLE tenant_brandings ALTER COLUMN primary_color TYPE text")
        .await
        .unwrap();
    let (ok, output) = env.bridge_command(&["dead-letters", "redrive"]);
    assert!(ok && output.contains("re-drove 1 dead letters"), "{output}");
    eventually("the re-driven change applies", || async {
        (landlord_color(&env).await.as_deref() == Some("#toolong!")).then_some(())
    })
    .await;
    let (ok, output) = env.bridge_command(&["dead-letters", "redrive"]);
    assert!(
        ok && output.contains("re-drove 0 dead letters"),
        "nothing twice: {output}"
    );
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
