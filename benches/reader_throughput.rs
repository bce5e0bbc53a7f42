//! Reader throughput: how fast the bridge drains a slot into Kafka
//! (acks=all, every event acknowledged before the LSN is confirmed) compared
//! with `pg_recvlogical` draining the same workload from a twin slot, in the
//! same run. Reports the median of several runs as a ratio.
//!
//! Needs the test stack: `scripts/bench.sh` starts it and runs this.
//! Output: `bench-results/reader_throughput.json` and one line per workload.

mod common;

use std::process::Command;
use std::time::Instant;

use cdc_bridge::config::{Config, Dsn};
use cdc_bridge::kafka;
use cdc_bridge::model::{Lsn, Side, TenantRef};
use cdc_bridge::postgres::setup;
use cdc_bridge::source::{drain_source_to, slot_name, RowOwner, SourceSpec};
use common::{brokers, connect, dsn, fresh_database, median, pg_port};
use tokio_postgres::Client;

const RUNS: usize = 3;

struct Workload {
    name: &'static str,
    transactions: u32,
    rows_per_transaction: u32,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "100k single-row transactions",
        transactions: 100_000,
        rows_per_transaction: 1,
    },
    Workload {
        name: "200 transactions of 1,000 rows",
        transactions: 200,
        rows_per_transaction: 1_000,
    },
];

fn config(db: &str, topic: &str) -> Config {
    let brokers = brokers();
    let text = format!(
        r#"
        [landlord]
        dsn = "{landlord}"
        [tenants]
        connection_template = "{template}"
        [[table]]
        name = "tenant_brandings"
        [kafka]
        brokers = "{brokers}"
        topic = "{topic}"
        partitions = 6
        [replication]
        slot_prefix = "bench"
    "#,
        landlord = dsn(db),
        template = dsn("{database_name}"),
    );
    let config = Config::parse(&text).expect("bench config");
    config.validate().expect("valid bench config");
    config
}

/// Writes the workload; returns the WAL position after it.
async fn write_workload(client: &Client, w: &Workload, run: usize) -> Lsn {
    let base = (run as u32 + 1) * 10_000_000;
    client
        .batch_execute(&format!(
            "CALL bench_write({base}, {}, {})",
            w.transactions, w.rows_per_transaction
        ))
        .await
        .unwrap();
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap();
    row.get::<_, String>(0).parse().unwrap()
}

const PROCEDURE: &str = "
CREATE OR REPLACE PROCEDURE bench_write(base int, txns int, rows_per_txn int) LANGUAGE plpgsql AS $$
BEGIN
  FOR t IN 0 .. txns - 1 LOOP
    INSERT INTO tenant_brandings (id, primary_color, secondary_color, logo_url, font_family, custom_css)
    SELECT base + t * rows_per_txn + r, '#10a0f0', '#ffffff', 'https://cdn.example.com/logo.svg', 'Inter',
           'body { color: #333; }'
      FROM generate_series(0, rows_per_txn - 1) r;
    COMMIT;
  END LOOP;
END $$;";

fn pg_recvlogical(db: &str, slot: &str, end: Lsn) -> f64 {
    let started = Instant::now();
    let status = Command::new("pg_recvlogical")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg_port().to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .args(["--slot", slot, "--start", "--no-loop", "-f", "/dev/null"])
        .args(["--endpos", &end.to_string()])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=cdc_bridge_pub",
        ])
        .status()
        .expect("pg_recvlogical runs (PostgreSQL client tools installed)");
    assert!(status.success(), "pg_recvlogical failed");
    started.elapsed().as_secs_f64()
}

async fn bridge_reader(config: &Config, db: &str, end: Lsn) -> f64 {
    let spec = SourceSpec {
        side: Side::Tenant,
        database: db.to_string(),
        dsn: Dsn::new(dsn(db)),
        owner: RowOwner::Tenant(TenantRef {
            id: "1".into(),
            slug: "bench".into(),
        }),
        // The workload holds no applier transactions.
        apply_marker: String::new(),
        lease_until: None,
    };
    let producer = kafka::producer(&config.kafka).unwrap();
    let started = Instant::now();
    drain_source_to(&spec, config, producer, end).await.unwrap();
    started.elapsed().as_secs_f64()
}

/// Drops a slot, waiting for its walsender to exit (it lingers briefly after
/// the client disconnects).
async fn drop_slot(client: &Client, slot: &str) {
    for _ in 0..100 {
        match client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
        {
            Ok(_) => return,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    panic!("slot {slot} stayed active for 10 s");
}

#[tokio::main]
async fn main() {
    if common::only_listing() {
        return;
    }
    let db = format!("bench_{}", std::process::id());
    let client = fresh_database(&db).await;
    client
        .batch_execute(include_str!("../scripts/seed/tenant.sql"))
        .await
        .unwrap();
    client.batch_execute(PROCEDURE).await.unwrap();
    let config = config(&db, &format!("{db}.changes"));
    let mut setup_client = connect(&db).await;
    setup::install(&mut setup_client, &config, Side::Tenant, &db)
        .await
        .unwrap();
    kafka::ensure_topic(&config.kafka).await.unwrap();
    let bridge_slot = slot_name(&config.replication.slot_prefix, &db).to_string();
    let twin_slot = format!("{bridge_slot}_recv");

    let mut results = Vec::new();
    for (w_index, w) in WORKLOADS.iter().enumerate() {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for run in 0..RUNS {
            for slot in [&bridge_slot, &twin_slot] {
                client
                    .execute(
                        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                        &[slot],
                    )
                    .await
                    .unwrap();
            }
            // Mark the bridge slot's (empty) snapshot as done so the reader resumes it.
            client
                .execute(
                    "INSERT INTO cdc_bridge.slot_state (slot_name, snapshot_lsn) VALUES ($1, '0/0')",
                    &[&bridge_slot],
                )
                .await
                .unwrap();
            let end = write_workload(&client, w, w_index * RUNS + run).await;
            // Alternate who goes first so neither always finds the WAL cached.
            if run % 2 == 0 {
                theirs.push(pg_recvlogical(&db, &twin_slot, end));
                ours.push(bridge_reader(&config, &db, end).await);
            } else {
                ours.push(bridge_reader(&config, &db, end).await);
                theirs.push(pg_recvlogical(&db, &twin_slot, end));
            }
            for slot in [&bridge_slot, &twin_slot] {
                drop_slot(&client, slot).await;
            }
            client
                .batch_execute("TRUNCATE tenant_brandings; TRUNCATE cdc_bridge.slot_state")
                .await
                .unwrap();
        }
        let events = f64::from(w.transactions * w.rows_per_transaction);
        let (ours_s, theirs_s) = (median(ours.clone()), median(theirs.clone()));
        let ratio = theirs_s / ours_s;
        println!(
            "reader_throughput: {:<32} bridge {:>9.0} events/s, pg_recvlogical {:>9.0} events/s, ratio {:.2} (median of {RUNS})",
            w.name,
            events / ours_s,
            events / theirs_s,
            ratio
        );
        results.push(serde_json::json!({
            "workload": w.name,
            "transactions": w.transactions,
            "rows_per_transaction": w.rows_per_transaction,
            "runs": RUNS,
            "bridge_seconds": ours,
            "pg_recvlogical_seconds": theirs,
            "bridge_events_per_second_median": events / ours_s,
            "pg_recvlogical_events_per_second_median": events / theirs_s,
            "ratio_bridge_to_pg_recvlogical": ratio,
        }));
    }
    let json = serde_json::json!({ "benchmark": "reader_throughput", "kafka_acks": "all", "results": results });
    common::write_results("reader_throughput", json);
}
