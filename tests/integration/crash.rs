//! Crash safety: under a steady write load on both sides, the bridge is
//! killed with SIGKILL at random moments and restarted; afterwards every
//! write is in Kafka and both sides hold, with no manual step, the newest
//! write of every tenant as the conflict rule picks it.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use cdc_bridge::model::Side;

use crate::support::{
    self, eventually, keep_newest, wait_streaming, TestEnv, Write, VERSION_MICROS,
};

const TENANTS: usize = 4;
const KILLS: usize = 10;

const STATE: &str =
    "primary_color::text, (extract(epoch from cdc_version) * 1000000)::bigint, cdc_source";

/// (colour, version µs, source) of a row.
type State = (String, i64, String);

#[tokio::test(flavor = "multi_thread")]
async fn ten_kills_under_load_lose_nothing_and_both_sides_end_at_the_newest_write() {
    let seed: u64 = std::env::var("CDC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("crash test seed: {seed} (replay with CDC_TEST_SEED={seed})");
    let env = TestEnv::new("crash", TENANTS).await;
    for index in 0..TENANTS {
        support::set_tenant_color(&env, index, "#000000").await;
    }
    let mut bridge = env.start_bridge();
    wait_streaming(&bridge, TENANTS + 1).await;

    let stop_at = Instant::now() + Duration::from_secs(20);
    let mut writers = Vec::new();
    for index in 0..TENANTS {
        for side in [Side::Tenant, Side::Landlord] {
            let database = match side {
                Side::Tenant => env.tenants[index].database.clone(),
                Side::Landlord => env.landlord_db.clone(),
            };
            let id = env.tenants[index].id;
            writers.push(tokio::spawn(async move {
                let client = support::connect(&database).await;
                let letter = &side.as_str()[..1];
                let sql = match side {
                    Side::Tenant => format!("UPDATE tenant_brandings SET primary_color = $1 WHERE id = 1 AND $2::bigint IS NOT NULL RETURNING {VERSION_MICROS}"),
                    Side::Landlord => format!("UPDATE tenant_brandings SET primary_color = $1 WHERE tenant_db_id = $2 RETURNING {VERSION_MICROS}"),
                };
                let mut written = Vec::new();
                // The last write this writer committed (autocommit: a
                // returned row is committed).
                let mut last = None;
                let mut n = 0;
                while Instant::now() < stop_at {
                    n += 1;
                    let color = format!("#{letter}{index}{n:04}");
                    if let Some(row) = client.query_opt(&sql, &[&color, &id]).await.unwrap() {
                        last = Some(Write::new(row.get(0), side, Some(color.clone())));
                        written.push(color);
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                (index, written, last)
            }));
        }
    }

    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        bridge.kill();
        bridge = env.start_bridge();
    }
    let mut written = BTreeSet::new();
    let mut newest: HashMap<usize, Option<Write>> = HashMap::new();
    for writer in writers {
        let (index, colors, last) = writer.await.unwrap();
        written.extend(colors);
        if let Some(last) = last {
            keep_newest(newest.entry(index).or_default(), last);
        }
    }

    env.topic
        .wait_colors(&written, &format!("every write in Kafka (seed {seed})"))
        .await;
    let landlord = env.landlord().await;
    for index in 0..TENANTS {
        let tenant = env.tenant(index).await;
        let id = env.tenants[index].id;
        let what = format!("tenant {index} identical on both sides (seed {seed})");
        let state = eventually(&what, || async {
            let t = tenant
                .query_one(
                    &format!("SELECT {STATE} FROM tenant_brandings WHERE id = 1"),
                    &[],
                )
                .await
                .ok()?;
            let l = landlord
                .query_one(
                    &format!("SELECT {STATE} FROM tenant_brandings WHERE tenant_db_id = $1"),
                    &[&id],
                )
                .await
                .ok()?;
            let (t, l): (State, State) = (
                (t.get(0), t.get(1), t.get(2)),
                (l.get(0), l.get(1), l.get(2)),
            );
            (t == l).then_some(t)
        })
        .await;
        // Both sides move only forward, so once they agree they hold the
        // newest write of either side's writer.
        let expected = newest
            .get(&index)
            .and_then(|w| w.as_ref())
            .and_then(Write::expected_row)
            .unwrap_or_else(|| panic!("tenant {index}: no write took effect (seed {seed})"));
        assert_eq!(
            (Some(state.0), state.1, state.2),
            expected,
            "tenant {index}: the newest write by (version, side) on both sides (seed {seed})"
        );
    }
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
