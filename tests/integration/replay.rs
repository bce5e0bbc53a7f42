//! Replay and backfill against real PostgreSQL and Kafka: an emptied
//! landlord is restored from the topic (newest version of every row), a
//! second replay changes nothing, the applier group's offsets never move,
//! and backfill publishes one snapshot event per row.

use crate::support::{
    eventually, landlord_color, set_landlord_color, set_tenant_color, tenant_color, TestEnv,
};

fn check_code(env: &TestEnv) -> (i32, String) {
    let run = env.bridge_run(&["check"]);
    (run.code, format!("{}{}", run.stdout, run.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_restores_a_truncated_landlord_and_is_a_no_op_on_a_consistent_one() {
    let env = TestEnv::new("replay", 3).await;
    for index in 0..3 {
        set_tenant_color(&env, index, &format!("#10000{index}")).await;
    }
    let mut bridge = env.start_bridge();
    // Two versions of tenant 0's row in the topic: the replay must end at
    // the newer one.
    eventually("the first version on the landlord", || async {
        (landlord_color(&env, 0).await.as_deref() == Some("#100000")).then_some(())
    })
    .await;
    set_tenant_color(&env, 0, "#1000ff").await;
    for index in 0..3 {
        eventually("every tenant's newest row on the landlord", || async {
            let newest = tenant_color(&env, index).await;
            (landlord_color(&env, index).await == newest).then_some(())
        })
        .await;
    }
    assert!(bridge.stop().success());
    let group = format!("{}_applier", env.prefix);
    let offsets_before = env.topic.committed(&group);

    env.landlord()
        .await
        .batch_execute("TRUNCATE tenant_brandings")
        .await
        .unwrap();
    let (code, output) = check_code(&env);
    assert_eq!(code, 1, "the truncate is found: {output}");
    assert!(output.contains("tenant_only 3"), "{output}");

    let run = env.bridge_run(&["replay", "--to", "landlord", "--from-beginning"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("dead-lettered 0"), "{}", run.stdout);
    for index in 0..3 {
        assert_eq!(
            landlord_color(&env, index).await,
            tenant_color(&env, index).await,
            "tenant {index} restored with its newest row"
        );
    }
    assert_eq!(landlord_color(&env, 0).await.as_deref(), Some("#1000ff"));
    let (code, output) = check_code(&env);
    assert_eq!(code, 0, "consistent after the replay: {output}");

    let again = env.bridge_run(&["replay", "--to", "landlord", "--from-beginning"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains(" applied 0,"),
        "a second replay writes nothing: {}",
        again.stdout
    );
    assert_eq!(
        env.topic.committed(&group),
        offsets_before,
        "the applier group's offsets did not move"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_since_a_time_and_to_the_tenants_only_applies_the_landlords_later_changes() {
    let env = TestEnv::new("replaysince", 2).await;
    set_landlord_color(&env, 0, "#200000").await;
    set_landlord_color(&env, 1, "#200001").await;
    let mut bridge = env.start_bridge();
    for index in 0..2 {
        eventually("the landlord rows on the tenants", || async {
            tenant_color(&env, index).await.map(|_| ())
        })
        .await;
    }
    assert!(bridge.stop().success());
    env.tenant(1)
        .await
        .batch_execute("BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM tenant_brandings; COMMIT;")
        .await
        .unwrap();
    let id = env.tenants[1].id.to_string();
    let run = env.bridge_run(&["replay", "--to", "tenant", "--tenant", &id, "--since", "1h"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(tenant_color(&env, 1).await.as_deref(), Some("#200001"));
    let future = env.bridge_run(&["replay", "--to", "both", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(future.code, 0, "{}", future.stderr);
    assert!(
        future.stdout.contains("replayed 0 messages"),
        "{}",
        future.stdout
    );
    let bad = env.bridge_run(&["replay", "--to", "tenant", "--since", "yesterday-ish"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("yesterday-ish"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_publishes_one_snapshot_event_per_row_of_the_chosen_side() {
    let env = TestEnv::new("backfill", 3).await;
    let (ok, output) = env.bridge_command(&["setup"]);
    assert!(ok, "{output}");
    for index in 0..3 {
        set_tenant_color(&env, index, &format!("#30000{index}")).await;
    }
    set_landlord_color(&env, 0, "#3000ff").await;

    let run = env.bridge_run(&["backfill", "--from", "tenant"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("published 3 snapshot events of 3 tenants"),
        "{}",
        run.stdout
    );
    let events = env.topic.envelopes();
    assert_eq!(events.len(), 3, "{events:?}");
    let mut colors: Vec<&str> = events
        .iter()
        .map(|e| {
            assert_eq!(e["op"], "snapshot");
            assert_eq!(e["origin"]["side"], "tenant");
            e["columns"]["primary_color"]["value"].as_str().unwrap()
        })
        .collect();
    colors.sort();
    assert_eq!(colors, ["#300000", "#300001", "#300002"]);

    let id = env.tenants[0].id.to_string();
    let run = env.bridge_run(&["backfill", "--from", "landlord", "--tenant", &id]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let events = env.topic.envelopes();
    assert_eq!(events.len(), 4);
    assert!(events.iter().any(|e| e["origin"]["side"] == "landlord"
        && e["columns"]["primary_color"]["value"] == "#3000ff"));
}

/// A tenant change as the reader would publish it.
fn tenant_change(env: &TestEnv, index: usize, color: &str, micros: i64) -> serde_json::Value {
    let tenant = &env.tenants[index];
    let seconds = micros / 1_000_000;
    let version = format!(
        "{}.{:06}+00",
        humantime::format_rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds as u64)
        )
        .to_string()
        .trim_end_matches('Z')
        .replace('T', " "),
        micros % 1_000_000
    );
    serde_json::json!({
        "v": 1, "op": "upsert", "table": "tenant_brandings",
        "tenant": {"id": tenant.id.to_string(), "slug": tenant.slug},
        "origin": {"side": "tenant", "database": tenant.database, "lsn": "0/1", "commit_ts": null, "xid": null},
        "version": version, "source": "tenant", "key": {"id": "1"},
        "columns": {"id": {"type": "integer", "value": "1"},
                    "primary_color": {"type": "character varying(7)", "value": color}}
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_replay_writes_in_bulk_and_dead_letters_only_the_row_the_target_refuses() {
    let env = TestEnv::new("bulkreplay", 2).await;
    let (ok, output) = env.bridge_command(&["setup"]);
    assert!(ok, "{output}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
        - 60_000_000;
    // 40 versions of each tenant's row (enough for the bulk path); the
    // last one of tenant 1 does not fit its varchar(7) column.
    for round in 0..40 {
        for index in 0..2 {
            let color = if index == 1 && round == 39 {
                "#toolong-color".to_string()
            } else {
                format!("#2{index}00{round:02}")
            };
            let change = tenant_change(&env, index, &color, now + round * 1000);
            let key = env.tenants[index].id.to_string();
            env.topic.produce(&key, change.to_string().as_bytes()).await;
        }
    }
    let run = env.bridge_run(&["replay", "--to", "landlord", "--from-beginning"]);
    assert_eq!(
        run.code, 1,
        "a dead letter makes exit code 1: {}{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("replayed 80 messages"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("dead-lettered 1"), "{}", run.stdout);
    assert_eq!(landlord_color(&env, 0).await.as_deref(), Some("#200039"));
    let letters = env.topic.dead_letters().messages();
    assert_eq!(letters.len(), 1);
    assert!(String::from_utf8_lossy(&letters[0].payload).contains("#toolong-color"));
}
