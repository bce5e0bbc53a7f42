//! Randomised conflicts: many tenants written concurrently on both sides,
//! with deletes and re-inserts, some holding their row locks a while so the
//! bridge's writes queue behind them, converge to the write the production
//! conflict rule (`model::conflict`) picks. Set CDC_TEST_SEED to replay a
//! failing run.

use std::collections::HashMap;
use std::time::Duration;

use cdc_bridge::model::Side;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::support::{
    self, eventually, keep_newest, wait_streaming, Bridge, TestEnv, Write, VERSION_MICROS,
};

const TENANTS: usize = 20;
const ROUNDS: usize = 12;

async fn tenant_write(
    client: &Client,
    rng_value: u32,
    color: &str,
    hold: Duration,
) -> Option<Write> {
    let sql = match rng_value % 4 {
        0 => "DELETE FROM tenant_brandings WHERE id = 1 RETURNING NULL::bigint".to_string(),
        1 => format!(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET primary_color = EXCLUDED.primary_color RETURNING {VERSION_MICROS}"
        ),
        _ => format!("UPDATE tenant_brandings SET primary_color = $1 WHERE id = 1 RETURNING {VERSION_MICROS}"),
    };
    let key = r#"{"id": "1"}"#;
    write(
        client,
        &sql,
        (rng_value % 4 == 0, hold),
        color,
        Side::Tenant,
        key,
    )
    .await
}

async fn landlord_write(
    client: &Client,
    tenant_id: i64,
    rng_value: u32,
    color: &str,
    hold: Duration,
) -> Option<Write> {
    let sql = match rng_value % 4 {
        0 => format!("DELETE FROM tenant_brandings WHERE tenant_db_id = {tenant_id} RETURNING NULL::bigint"),
        1 => format!(
            "INSERT INTO tenant_brandings (tenant_db_id, tenant_slug, primary_color) VALUES ({tenant_id}, 'tenant{tenant_id}', $1)
             ON CONFLICT (tenant_db_id) DO UPDATE SET primary_color = EXCLUDED.primary_color RETURNING {VERSION_MICROS}"
        ),
        _ => format!("UPDATE tenant_brandings SET primary_color = $1 WHERE tenant_db_id = {tenant_id} RETURNING {VERSION_MICROS}"),
    };
    let key = format!(r#"{{"tenant_db_id": "{tenant_id}"}}"#);
    write(
        client,
        &sql,
        (rng_value % 4 == 0, hold),
        color,
        Side::Landlord,
        &key,
    )
    .await
}

/// Runs one application write in a transaction, holding its row lock for
/// `hold` before it commits, and returns its version (for a delete: the
/// tombstone the trigger wrote); `None` if it touched no row.
async fn write(
    client: &Client,
    sql: &str,
    (is_delete, hold): (bool, Duration),
    color: &str,
    side: Side,
    key: &str,
) -> Option<Write> {
    let table = "tenant_brandings";
    client.batch_execute("BEGIN").await.unwrap();
    let rows = if is_delete {
        client.query(sql, &[]).await.unwrap()
    } else {
        client.query(sql, &[&color]).await.unwrap()
    };
    let result = if rows.is_empty() {
        None
    } else if is_delete {
        let row = client
            .query_one(
                "SELECT (extract(epoch from version) * 1000000)::bigint FROM cdc_bridge.tombstones
                  WHERE table_name = $1 AND row_key = $2::text::jsonb",
                &[&table, &key],
            )
            .await
            .unwrap();
        Some((row.get::<_, i64>(0), None))
    } else {
        Some((rows[0].get::<_, i64>(0), Some(color.to_string())))
    };
    tokio::time::sleep(hold).await;
    client.batch_execute("COMMIT").await.unwrap();
    result.map(|(micros, color)| Write::new(micros, side, color))
}

/// (present, color, version µs, source) of a row.
type State = Option<(Option<String>, i64, String)>;

async fn state(client: &Client, sql: &str) -> State {
    let row = client.query_opt(sql, &[]).await.unwrap()?;
    Some((row.get(0), row.get(1), row.get(2)))
}

/// The seed of this run's random writes (CDC_TEST_SEED replays one).
fn seed() -> u64 {
    let seed = std::env::var("CDC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("convergence test seed: {seed} (replay with CDC_TEST_SEED={seed})");
    seed
}

/// The newest application write of each tenant (by index) so far.
type Winners = HashMap<usize, Option<Write>>;

/// Rounds of random application writes on both sides of most tenants at
/// once, some holding their row locks a while (longer than the bridge's
/// lock timeout, too); each round's colors are unique.
async fn write_rounds(
    env: &TestEnv,
    rng: &mut StdRng,
    rounds: std::ops::Range<usize>,
    winners: &mut Winners,
) {
    for round in rounds {
        let mut tasks = Vec::new();
        for index in 0..env.tenants.len() {
            if !rng.random_bool(0.6) {
                continue;
            }
            let (a, b) = (rng.random::<u32>(), rng.random::<u32>());
            let mut hold = || Duration::from_millis([0, 0, 30, 120, 350][rng.random_range(0..5)]);
            let (tenant_hold, landlord_hold) = (hold(), hold());
            let tenant_color = format!("#t{round:02}{index:03}");
            let landlord_color = format!("#l{round:02}{index:03}");
            let tenant_db = env.tenants[index].database.clone();
            let landlord_db = env.landlord_db.clone();
            let id = env.tenants[index].id;
            tasks.push(tokio::spawn(async move {
                let (t, l) = (
                    support::connect(&tenant_db).await,
                    support::connect(&landlord_db).await,
                );
                let (tw, lw) = tokio::join!(
                    tenant_write(&t, a, &tenant_color, tenant_hold),
                    landlord_write(&l, id, b, &landlord_color, landlord_hold)
                );
                (index, tw, lw)
            }));
        }
        for task in tasks {
            let (index, tw, lw) = task.await.unwrap();
            for w in [tw, lw].into_iter().flatten() {
                keep_newest(winners.entry(index).or_default(), w);
            }
        }
    }
}

/// Waits until every tenant is identical on both sides, and checks that
/// what they agree on is the write the conflict rule picks.
async fn assert_converged(env: &TestEnv, winners: &Winners, seed: u64) {
    let landlord = env.landlord().await;
    let tenants: Vec<Client> = futures_join(env).await;
    for (index, tenant) in tenants.iter().enumerate() {
        let id = env.tenants[index].id;
        let tenant_sql = format!("SELECT primary_color::text, {VERSION_MICROS}, cdc_source FROM tenant_brandings WHERE id = 1");
        let landlord_sql = format!("SELECT primary_color::text, {VERSION_MICROS}, cdc_source FROM tenant_brandings WHERE tenant_db_id = {id}");
        let what = format!("tenant {index} identical on both sides (seed {seed})");
        let converged = eventually(&what, || async {
            let (t, l) = (
                state(tenant, &tenant_sql).await,
                state(&landlord, &landlord_sql).await,
            );
            (t == l).then_some(t)
        })
        .await;
        let Some(Some(winner)) = winners.get(&index) else {
            continue;
        };
        let expected = winner.expected_row();
        assert_eq!(
            converged, expected,
            "tenant {index}: the newest (version, side) wins (seed {seed})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_on_both_sides_converge_to_the_newest_version() {
    let seed = seed();
    let env = TestEnv::new("converge", TENANTS).await;
    let (ok, output) = env.bridge_command(&["setup"]);
    assert!(ok, "{output}");
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, TENANTS + 1).await;

    let (mut rng, mut winners) = (StdRng::seed_from_u64(seed), Winners::new());
    write_rounds(&env, &mut rng, 0..ROUNDS, &mut winners).await;
    assert_converged(&env, &winners, seed).await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

/// Resuming every paused tenant at once reconciles them side by side
/// (4 at a time, on a pool of 6 connections, so reconciles also wait for
/// connections) while the application keeps writing both sides, before,
/// during and after the reconciles: what each side missed while paused and
/// what is written meanwhile converge to the newest write.
#[tokio::test(flavor = "multi_thread")]
async fn tenants_reconciled_together_while_writes_go_on_converge_to_the_newest_version() {
    let seed = seed();
    let env = TestEnv::new("reconcile_all", TENANTS).await;
    env.replace_in_config(
        "batch_wait_ms = 10",
        "batch_wait_ms = 10\nmax_parallel_targets = 4\nmax_connections = 6\nmax_connections_per_server = 6",
    );
    let (ok, output) = env.bridge_command(&["setup"]);
    assert!(ok, "{output}");
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, TENANTS + 1).await;
    let set_direction = |to: &str| {
        let (ok, output) = env.bridge_command(&["direction", "set", "all", to]);
        assert!(ok, "{output}");
        reconciled_lines(&bridge, to)
    };

    let paused_before = set_direction("paused");
    wait_reconciled(&bridge, "paused", paused_before + TENANTS).await;
    let (mut rng, mut winners) = (StdRng::seed_from_u64(seed), Winners::new());
    write_rounds(&env, &mut rng, 0..ROUNDS, &mut winners).await;

    let both_before = set_direction("both");
    let mut round = ROUNDS;
    while reconciled_lines(&bridge, "both") < both_before + TENANTS {
        assert!(round < 40 * ROUNDS, "the tenants were not reconciled");
        write_rounds(&env, &mut rng, round..round + 1, &mut winners).await;
        round += 1;
    }
    println!(
        "{} rounds of writes while the tenants were reconciled",
        round - ROUNDS
    );
    write_rounds(&env, &mut rng, round..round + 2, &mut winners).await;
    assert_converged(&env, &winners, seed).await;
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}

/// How many tenants the bridge reconciled in `direction` so far.
fn reconciled_lines(bridge: &Bridge, direction: &str) -> usize {
    bridge.log_lines_with(&["tenant reconciled", &format!("direction=\"{direction}\"")])
}

async fn wait_reconciled(bridge: &Bridge, direction: &str, count: usize) {
    let direction = format!("direction=\"{direction}\"");
    bridge
        .wait_log_lines(&["tenant reconciled", &direction], count)
        .await;
}

async fn futures_join(env: &TestEnv) -> Vec<Client> {
    let mut clients = Vec::new();
    for index in 0..env.tenants.len() {
        clients.push(env.tenant(index).await);
    }
    clients
}
