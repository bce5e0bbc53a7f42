//! Crash safety: under a steady write load on both sides, the bridge is
//! killed with SIGKILL at random moments and restarted; afterwards every
//! write is in Kafka and both sides are identical, with no manual step.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{self, eventually, wait_streaming, TestEnv};

const TENANTS: usize = 4;
const KILLS: usize = 10;

const STATE: &str =
    "primary_color::text, (extract(epoch from cdc_version) * 1000000)::bigint, cdc_source";

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_bridge_ten_times_under_load_loses_nothing_and_converges() {
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
        for side in ["tenant", "landlord"] {
            let database = if side == "tenant" {
                env.tenants[index].database.clone()
            } else {
                env.landlord_db.clone()
            };
            let id = env.tenants[index].id;
            writers.push(tokio::spawn(async move {
                let client = support::connect(&database).await;
                let mut written = Vec::new();
                let mut n = 0;
                while Instant::now() < stop_at {
                    n += 1;
                    let color = format!("#{}{index}{n:04}", &side[..1]);
                    let sql = if side == "tenant" {
                        "UPDATE tenant_brandings SET primary_color = $1 WHERE id = 1 AND $2::bigint IS NOT NULL"
                    } else {
                        "UPDATE tenant_brandings SET primary_color = $1 WHERE tenant_db_id = $2"
                    };
                    if client.execute(sql, &[&color, &id]).await.unwrap() == 1 {
                        written.push(color);
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                written
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
    for writer in writers {
        written.extend(writer.await.unwrap());
    }

    env.topic
        .wait_colors(&written, &format!("every write in Kafka (seed {seed})"))
        .await;
    let landlord = env.landlord().await;
    let mut finals = HashMap::new();
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
            let (t, l): ((String, i64, String), (String, i64, String)) = (
                (t.get(0), t.get(1), t.get(2)),
                (l.get(0), l.get(1), l.get(2)),
            );
            (t == l).then_some(t)
        })
        .await;
        finals.insert(index, state);
    }
    assert_eq!(finals.len(), TENANTS);
    assert!(bridge.stop().success(), "{}", bridge.log_text());
}
