//! Limits and silent failures: rows larger than a Kafka message, tenant
//! servers that accept connections and never answer, a reader whose Kafka
//! is gone in the middle of a burst.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    eventually, eventually_within, landlord_color, offset, pg_port, set_landlord_color,
    set_tenant_color, tenant_color, wait_streaming, OwnKafka, TestEnv,
};

async fn set_css(client: &tokio_postgres::Client, sql: &str, bytes: i32) {
    client.execute(sql, &[&bytes]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_up_to_the_limit_sync_both_ways_and_larger_ones_are_noted_and_skipped() {
    let env = TestEnv::new("bigrows", 1).await;
    env.set_http("");
    let bridge = env.start_bridge();
    wait_streaming(&bridge, 2).await;
    let tenant = env.tenant(0).await;
    let landlord = env.landlord().await;
    let css_len =
        |row: Option<crate::support::Row>| row.and_then(|r| r.text("custom_css")).map(|c| c.len());

    // 1.5 MB from the tenant, then from the landlord: above Kafka's 1 MB default.
    set_css(
        &tenant,
        "INSERT INTO tenant_brandings (id, primary_color, custom_css) VALUES (1, '#800000', repeat('t', $1))",
        1_500_000,
    )
    .await;
    eventually("1.5 MB of css on the landlord", || async {
        (css_len(env.landlord_row(0).await) == Some(1_500_000)).then_some(())
    })
    .await;
    set_css(
        &landlord,
        "UPDATE tenant_brandings SET custom_css = repeat('l', $1 + 1)",
        1_500_000,
    )
    .await;
    eventually("1.5 MB of css on the tenant", || async {
        (css_len(env.tenant_row(0).await) == Some(1_500_001)).then_some(())
    })
    .await;

    // 20 MB from either side: above the 8 MiB limit, noted, not sent.
    set_css(
        &tenant,
        "UPDATE tenant_brandings SET custom_css = repeat('T', $1)",
        20_000_000,
    )
    .await;
    set_css(
        &landlord,
        "UPDATE tenant_brandings SET custom_css = repeat('L', $1)",
        20_000_000,
    )
    .await;
    let notices = env.topic.dead_letters();
    eventually("two notices of too-large events", || async {
        let found = notices
            .messages()
            .into_iter()
            .filter(|m| {
                m.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("more than kafka.max_message_bytes"))
            })
            .count();
        (found == 2).then_some(())
    })
    .await;
    for notice in notices.messages() {
        assert!(
            notice.payload.len() < 10_000,
            "a notice, not the row: {} bytes",
            notice.payload.len()
        );
    }
    // The slots moved on: a later change that brings the row back under
    // the limit flows, from either side.
    tenant
        .batch_execute(
            "UPDATE tenant_brandings SET custom_css = 'small', primary_color = '#800001'",
        )
        .await
        .unwrap();
    eventually("a later tenant change", || async {
        (landlord_color(&env, 0).await.as_deref() == Some("#800001")).then_some(())
    })
    .await;
    landlord
        .batch_execute("UPDATE tenant_brandings SET custom_css = 'tiny', primary_color = '#800002'")
        .await
        .unwrap();
    eventually("a later landlord change", || async {
        (tenant_color(&env, 0).await.as_deref() == Some("#800002")).then_some(())
    })
    .await;
    let port = bridge.http_port().await;
    let metrics = crate::support::http_request(port, "GET", "/metrics", None, "")
        .await
        .unwrap();
    assert!(
        metrics.contains("cdc_reader_oversized_events_total"),
        "{metrics}"
    );
}

/// Accepts connections and never says a word.
async fn silent_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

/// Forwards to the shared PostgreSQL until frozen; then it keeps every
/// connection open and moves no byte (a server that vanished, or a
/// half-open connection).
async fn freezable_proxy(frozen: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let frozen = Arc::clone(&frozen);
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", pg_port())).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = pump(&mut client_read, &mut server_write, Arc::clone(&frozen));
                let down = pump(&mut server_read, &mut client_write, frozen);
                let _ = tokio::join!(up, down);
            });
        }
    });
    port
}

async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_tenant_servers_never_stall_the_other_tenants() {
    let mut env = TestEnv::new("silent", 2).await;
    let silent = env.add_tenant_database().await;
    let frozen = Arc::new(AtomicBool::new(false));
    let proxy = freezable_proxy(Arc::clone(&frozen)).await;
    let listener = silent_listener().await;
    let landlord = env.landlord().await;
    // Tenant 1 is reached directly, tenant 2 through the proxy, tenant 3
    // at the silent listener.
    landlord
        .batch_execute(&format!(
            "ALTER TABLE tenants ADD COLUMN db_port integer NOT NULL DEFAULT {direct};
             UPDATE tenants SET db_port = {proxy} WHERE id = 2;
             INSERT INTO tenants (id, slug, numeric_id, database_name, db_port)
                  VALUES ({id}, '{slug}', 1003, '{db}', {listener});",
            direct = pg_port(),
            id = silent.id,
            slug = silent.slug,
            db = silent.database,
        ))
        .await
        .unwrap();
    env.replace_in_config(
        &format!("connection_template = \"{}\"", crate::support::dsn("{database_name}")),
        "connection_template = \"host=127.0.0.1 port={db_port} user=postgres dbname={database_name}\"\nregistry_query = \"SELECT id::text AS id, slug, database_name, db_port FROM tenants WHERE status = 'active'\"",
    );
    env.replace_in_config(
        "batch_wait_ms = 10",
        "batch_wait_ms = 10\ntarget_timeout_secs = 1\n[postgres]\nconnect_timeout_secs = 1",
    );
    set_tenant_color(&env, 0, "#900000").await;
    set_tenant_color(&env, 1, "#910000").await;
    let _bridge = env.start_bridge();
    eventually("tenants 1 and 2 on the landlord", || async {
        (landlord_color(&env, 0).await.as_deref() == Some("#900000")
            && landlord_color(&env, 1).await.as_deref() == Some("#910000"))
        .then_some(())
    })
    .await;
    set_landlord_color(&env, 1, "#910001").await;
    eventually(
        "a landlord change on tenant 2 (through the proxy)",
        || async { (tenant_color(&env, 1).await.as_deref() == Some("#910001")).then_some(()) },
    )
    .await;

    // Tenant 2's server goes silent mid-connection; tenant 3's always was.
    frozen.store(true, Ordering::SeqCst);
    for round in 0..3 {
        let color = format!("#9{round}0002");
        let started = Instant::now();
        set_landlord_color(&env, 1, &format!("#9{round}1003")).await;
        set_landlord_color(&env, 2, &format!("#9{round}2003")).await;
        set_landlord_color(&env, 0, &color).await;
        set_tenant_color(&env, 0, &format!("#9{round}0003")).await;
        // The bound: other tenants keep syncing within 2 s.
        eventually_within(
            Duration::from_secs(2),
            "tenant 1 synced both ways beside the silent ones",
            || async {
                (tenant_color(&env, 0).await.as_deref() == Some(format!("#9{round}0003").as_str())
                    && landlord_color(&env, 0).await.as_deref()
                        == Some(format!("#9{round}0003").as_str()))
                .then_some(())
            },
        )
        .await;
        eprintln!("round {round}: tenant 1 synced in {:?}", started.elapsed());
    }
    frozen.store(false, Ordering::SeqCst);
}

/// Waits until the walsender of the database's slot has a status update
/// sent `span` after now, from the very connection streaming now; fails at
/// once if that connection is gone (the server dropped a silent reader).
async fn wait_still_answering(client: &tokio_postgres::Client, span: &str) {
    let sql = "SELECT r.pid, r.reply_time >= $1::text::timestamptz
                 FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid
                WHERE s.database = current_database()";
    let until: String = client
        .query_one(
            "SELECT (clock_timestamp() + $1::text::interval)::text",
            &[&span],
        )
        .await
        .unwrap()
        .get(0);
    let walsender = |row: Option<tokio_postgres::Row>| {
        let row = row.expect("the reader's connection is gone");
        (
            row.get::<_, i32>(0),
            row.get::<_, Option<bool>>(1) == Some(true),
        )
    };
    let (pid, _) = walsender(client.query_opt(sql, &[&until]).await.unwrap());
    eventually_within(
        Duration::from_secs(30),
        &format!("a status update {span} from now"),
        || async {
            let (now_pid, answered) = walsender(client.query_opt(sql, &[&until]).await.unwrap());
            assert_eq!(now_pid, pid, "the reader's connection was replaced");
            answered.then_some(())
        },
    )
    .await;
}

/// Kafka goes away while a burst is streamed: the reader's queue fills and
/// it stops reading, but it keeps confirming to the server (no
/// `wal_sender_timeout` disconnect) and stops within 20 s on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_blocked_by_kafka_stays_connected_and_stops_on_sigterm() {
    let kafka = OwnKafka::new(offset::BLOCKED_KAFKA);
    let env = TestEnv::with_kafka("kafkablocked", 1, kafka.brokers()).await;
    // A small producer queue fills within the burst; a short sender
    // timeout on the server would end a reader that stopped answering.
    env.write_config("[kafka.client]\n\"queue.buffering.max.messages\" = \"1000\"");
    env.replace_in_config(
        &format!(
            "connection_template = \"{}\"",
            crate::support::dsn("{database_name}")
        ),
        &format!(
            "connection_template = \"{} options='-c wal_sender_timeout=3s'\"",
            crate::support::dsn("{database_name}")
        ),
    );
    let mut bridge = env.start_bridge();
    // Both readers stream and a change went through Kafka (a row written
    // before the start would reach the landlord by a reconcile instead).
    wait_streaming(&bridge, 2).await;
    set_tenant_color(&env, 0, "#a00000").await;
    eventually("synced through Kafka", || async {
        (landlord_color(&env, 0).await.as_deref() == Some("#a00000")).then_some(())
    })
    .await;
    kafka.stop();
    env.tenant(0)
        .await
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..5000 LOOP
                 UPDATE tenant_brandings SET login_message = i::text WHERE id = 1;
             END LOOP; END $$;",
        )
        .await
        .unwrap();
    // Twice the sender timeout with the queue full, the same connection
    // still answers.
    wait_still_answering(&env.tenant(0).await, "7 seconds").await;
    let database = &env.tenants[0].database;
    let starts = bridge
        .log_text()
        .lines()
        .filter(|l| l.contains(" streaming ") && l.contains(database.as_str()))
        .count();
    assert_eq!(
        starts,
        1,
        "the reader streamed on, never timed out and restarted:\n{}",
        bridge.log_text()
    );
    let streams: i64 = env
        .tenant(0)
        .await
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND active",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(streams >= 1, "the reader's walsender is still there");
    let started = Instant::now();
    let status = bridge.stop();
    assert!(status.success(), "{}", bridge.log_text());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped in {:?}",
        started.elapsed()
    );
}
