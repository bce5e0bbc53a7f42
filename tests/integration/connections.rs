//! The applier's connection budget: with more tenant databases than
//! `applier.max_connections`, it never holds more connections than its
//! caps (sampled from `pg_stat_activity` throughout), closes the least
//! recently used idle ones, queues the rest of a batch for later rounds,
//! and every tenant still syncs both ways. The periodic consistency check
//! runs all along on the same pool, inside the same caps.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use crate::support::{
    bridge_command, config_text, connect, eventually, eventually_within, http_request,
    kafka_brokers, landlord_color, offset, set_tenant_color, tenant_color, wait_streaming, Bridge,
    OwnPostgres, TestEnv, Topic, LANDLORD_SCHEMA, TENANT_SCHEMA,
};

const APPLIER: &str = "capped_applier";

/// Samples the applier's connections (every 10 ms) until `stop`; the most
/// seen that were still there 50 ms later. A connection the bridge has
/// closed shows in `pg_stat_activity` until its backend has exited, a
/// moment after its replacement may have opened; one it holds stays.
fn sample_connections(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let client = connect("postgres").await;
        let mut recent: std::collections::VecDeque<std::collections::BTreeSet<i32>> =
            std::collections::VecDeque::new();
        let mut most = 0;
        while !stop.load(Ordering::Relaxed) {
            let pids: std::collections::BTreeSet<i32> = client
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                    &[&APPLIER],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            if recent.len() == 5 {
                let earlier = recent.pop_front().unwrap_or_default();
                most = most.max(earlier.intersection(&pids).count() as i64);
            }
            recent.push_back(pids);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        most
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_applier_stays_within_its_connection_caps_and_every_tenant_syncs_both_ways() {
    let tenants = 10;
    let env = TestEnv::new("conncap", tenants).await;
    // A check every second, as fast as it goes: its reads overlap the
    // applier's writes throughout.
    env.write_config("[check]\ninterval_secs = 1\nrate = 0");
    env.replace_in_config(
        "batch_wait_ms = 10",
        "batch_wait_ms = 200\nmax_connections = 4\nmax_connections_per_server = 3",
    );
    env.set_http("");
    let reader = env.start_role("reader", "user=postgres", "user=postgres");
    wait_streaming(&reader, tenants + 1).await;
    let applier = env.start_role(
        "applier",
        "user=postgres",
        &format!("user=postgres application_name={APPLIER}"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_connections(Arc::clone(&stop));

    // One landlord transaction for every tenant: one batch, ten databases.
    let values: Vec<String> = env
        .tenants
        .iter()
        .map(|t| format!("({}, '{}', '#c0c0c0')", t.id, t.slug))
        .collect();
    env.landlord()
        .await
        .batch_execute(&format!(
            "INSERT INTO tenant_brandings (tenant_db_id, tenant_slug, primary_color) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    for index in 0..tenants {
        eventually("every tenant has the landlord's row", || async {
            (tenant_color(&env, index).await.as_deref() == Some("#c0c0c0")).then_some(())
        })
        .await;
    }
    for index in 0..tenants {
        set_tenant_color(&env, index, &format!("#c1c1{index:02}")).await;
    }
    for index in 0..tenants {
        eventually("every tenant's change on the landlord", || async {
            let expected = format!("#c1c1{index:02}");
            (landlord_color(&env, index).await == Some(expected)).then_some(())
        })
        .await;
    }
    let port = applier.http_port().await;
    let sample = |metrics: &str, name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    eventually(
        "a check after the changes finds every tenant consistent",
        || async {
            let metrics = http_request(port, "GET", "/metrics", None, "").await?;
            let consistent = sample(&metrics, "cdc_check_tenants{state=\"consistent\"}");
            (consistent == tenants as f64).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let most = sampler.await.unwrap();
    assert!(
        most >= 2,
        "the sampler saw the applier's connections ({most})"
    );
    assert!(
        most <= 4,
        "the applier and the check held {most} connections, more than max_connections = 4"
    );

    let metrics = http_request(port, "GET", "/metrics", None, "")
        .await
        .unwrap();
    assert!(
        sample(&metrics, "cdc_applier_connection_evictions_total") > 0.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "cdc_applier_connection_waits_total") > 0.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "cdc_check_last_run_timestamp_seconds") > 0.0,
        "the check ran: {metrics}"
    );
    let opened = sample(&metrics, "cdc_applier_connection_open_seconds_count");
    assert!(
        opened > (tenants + 1) as f64,
        "connections were opened again after evictions ({opened}): {metrics}"
    );
    // Every one of those connections checked the stored token hash; none
    // but the first wrote it (no row lock: no transaction id, no commit
    // for every walsender of the cluster to wake up for).
    for index in 0..tenants {
        let locked: String = env
            .tenant(index)
            .await
            .query_one(
                "SELECT xmax::text FROM cdc_bridge.installation WHERE name = 'apply_token_sha256'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(locked, "0", "tenant {index}'s stored token hash was locked");
    }
    drop(reader);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_budget_the_server_cannot_hold_is_warned_about_at_start() {
    let env = TestEnv::new("connwarn", 1).await;
    env.replace_in_config(
        "batch_wait_ms = 10",
        "batch_wait_ms = 10\nmax_connections = 100000\nmax_connections_per_server = 100000",
    );
    let mut bridge = env.start_bridge();
    eventually("the start warns about the connection budget", || async {
        let log = bridge.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("may need more connections on this server"))?;
        Some(line.to_string())
    })
    .await;
    wait_streaming(&bridge, 2).await;
    assert!(bridge.stop().success(), "a tight budget still runs");
}

/// Tenant databases on the small server of the fleet test (300;
/// `CDC_TEST_FLEET=1000` measures a larger fleet by hand).
fn fleet() -> usize {
    std::env::var("CDC_TEST_FLEET")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

/// The fleet test's configuration: landlord and tenants on `server`.
fn fleet_config(server: &OwnPostgres, prefix: &str) -> String {
    let text = config_text(
        (
            &server.dsn(&format!("{prefix}_landlord")),
            &server.dsn("{database_name}"),
        ),
        &Topic::new(&kafka_brokers(), &format!("{prefix}.changes")),
        prefix,
        // The check runs all along, on the applier's pool: 50 tenants a
        // second, a new round 5 s after the last.
        "[check]\ninterval_secs = 5\nrate = 50",
    );
    text.replace(
        "batch_wait_ms = 10",
        "batch_wait_ms = 10\nmax_connections = 16\nmax_connections_per_server = 8",
    )
}

/// Creates the landlord and `fleet()` tenant databases (from a template),
/// each tenant with its branding row.
async fn create_fleet(server: &OwnPostgres, prefix: &str) {
    let admin = server.connect("postgres").await;
    for name in ["landlord", "template"] {
        admin
            .batch_execute(&format!("CREATE DATABASE {prefix}_{name}"))
            .await
            .unwrap();
    }
    let landlord = server.connect(&format!("{prefix}_landlord")).await;
    landlord.batch_execute(LANDLORD_SCHEMA).await.unwrap();
    landlord
        .batch_execute(&format!(
            "INSERT INTO tenants (id, slug, numeric_id, database_name)
               SELECT t, 'tenant' || t, 1000 + t, '{prefix}_t' || t FROM generate_series(1, {}) t",
            fleet()
        ))
        .await
        .unwrap();
    let template = server.connect(&format!("{prefix}_template")).await;
    template.batch_execute(TENANT_SCHEMA).await.unwrap();
    template
        .batch_execute("INSERT INTO tenant_brandings (id, primary_color) VALUES (1, '#f00000')")
        .await
        .unwrap();
    drop(template);
    for t in 1..=fleet() {
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {prefix}_t{t} TEMPLATE {prefix}_template"
            ))
            .await
            .unwrap();
    }
}

/// Tenants whose landlord row has `color`.
async fn landlord_rows_with(landlord: &tokio_postgres::Client, color: &str) -> i64 {
    landlord
        .query_one(
            "SELECT count(*) FROM tenant_brandings WHERE primary_color = $1",
            &[&color],
        )
        .await
        .unwrap()
        .get(0)
}

/// Connects as an application role every few milliseconds until `stop`;
/// the number of refused connections.
fn application_connections(
    server_port: u16,
    database: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let dsn = format!("host=127.0.0.1 port={server_port} user=fleet_app dbname={database}");
        let mut refused = 0;
        while !stop.load(Ordering::Relaxed) {
            match tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    client.simple_query("SELECT 1").await.unwrap();
                }
                Err(e) => {
                    eprintln!("application connection refused: {e}");
                    refused += 1;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        refused
    })
}

/// 300 tenant databases on one server with `max_connections = 60`: the
/// bridge (readers and applier) syncs every tenant both ways, never holds
/// more ordinary connections than its budget, and an application can
/// always connect meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_tenants_on_a_server_with_sixty_connections_sync_both_ways() {
    let _heavy = crate::support::HEAVY.lock().await;
    let slots = (fleet() + 20).to_string();
    let server = OwnPostgres::start(
        offset::FLEET_POSTGRES,
        &[("PG_MAX_CONNECTIONS", "60"), ("PG_MAX_SLOTS", &slots)],
    );
    let prefix = format!("fleet{}", std::process::id());
    create_fleet(&server, &prefix).await;
    server
        .connect("postgres")
        .await
        .batch_execute("CREATE ROLE fleet_app LOGIN NOSUPERUSER")
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("cdc-bridge-tests/{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bridge.toml");
    std::fs::write(&config, fleet_config(&server, &prefix)).unwrap();
    let (ok, output) = bridge_command(&config, &["setup"], &[]);
    assert!(ok, "{output}");

    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (stop, most) = (Arc::clone(&stop), Arc::clone(&most));
        let monitor = server.connect("postgres").await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let row = monitor
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                          WHERE backend_type = 'client backend' AND usename = 'postgres'
                            AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await
                    .unwrap();
                most.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let application =
        application_connections(server.port, format!("{prefix}_t1"), Arc::clone(&stop));
    let mut bridge = Bridge::start(&config, &dir);
    let minutes = std::time::Duration::from_secs(240);
    eventually_within(minutes, "every reader streaming", || async {
        (bridge.streaming_databases().len() > fleet()).then_some(())
    })
    .await;
    let landlord = server.connect(&format!("{prefix}_landlord")).await;
    for t in 1..=fleet() {
        server
            .connect(&format!("{prefix}_t{t}"))
            .await
            .batch_execute("UPDATE tenant_brandings SET primary_color = '#f22222'")
            .await
            .unwrap();
    }
    eventually_within(minutes, "every tenant's change on the landlord", || async {
        (landlord_rows_with(&landlord, "#f22222").await == fleet() as i64).then_some(())
    })
    .await;
    landlord
        .batch_execute("UPDATE tenant_brandings SET primary_color = '#f11111'")
        .await
        .unwrap();
    eventually_within(
        minutes,
        "the landlord's change in every tenant database",
        || async {
            for t in 1..=fleet() {
                let tenant = server.connect(&format!("{prefix}_t{t}")).await;
                let row = tenant
                    .query_one("SELECT primary_color FROM tenant_brandings", &[])
                    .await
                    .unwrap();
                if row.get::<_, Option<String>>(0).as_deref() != Some("#f11111") {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let refused = application.await.unwrap();
    assert!(bridge.stop().success(), "{}", bridge.log_text());
    let most = most.load(Ordering::Relaxed);
    eprintln!("fleet: peak ordinary connections of the bridge (and the test's checks): {most}");
    // The README's budget: readers 4 (starting and catalog look-ups), the
    // registry poll 1, the target pool 8 (applier and check together),
    // plus this test's own 2, and room for 4 closed connections whose
    // backends have not exited yet.
    assert!(
        most <= 4 + 1 + 8 + 2 + 4,
        "the bridge held {most} ordinary connections"
    );
    assert_eq!(refused, 0, "an application connection was refused");
}
