//! A landlord and many tenant databases on the bench stack, set up for the
//! bridge, with the bridge itself run as a child process (the release
//! binary cargo built for the bench), and arrival recorders: a trigger on
//! each side's table that notes when every row version landed there
//! (`clock_timestamp()` inside the writing transaction, on the same clock
//! as the load generator's). Not every benchmark uses all of it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{brokers, connect, dsn};

/// Records `(tenant, primary_color, at)` for every row written to
/// `tenant_brandings`; `{tenant}` is the tenant column or a constant.
const ARRIVALS: &str = "
CREATE TABLE bench_arrivals (tenant bigint, color text, at timestamptz);
CREATE FUNCTION bench_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_arrivals VALUES ({tenant}, NEW.primary_color, clock_timestamp());
    RETURN NEW;
END $$;
CREATE TRIGGER bench_arrival AFTER INSERT OR UPDATE ON tenant_brandings
    FOR EACH ROW EXECUTE FUNCTION bench_arrival();";

/// How long after its start the bridge had every tenant's row on the
/// landlord, and every reader streaming.
pub struct Started {
    pub rows_in_sync: Duration,
    pub all_streaming: Duration,
}

impl Started {
    /// Both: the first sync is done.
    pub fn in_sync(&self) -> Duration {
        self.rows_in_sync.max(self.all_streaming)
    }
}

pub struct Fleet {
    pub prefix: String,
    pub tenants: u32,
    /// The bridge's HTTP port (`/metrics`).
    pub http_port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    bridge: Option<Child>,
}

impl Fleet {
    /// Creates the databases (tenant `t` is `{prefix}_t{t}`, with its row)
    /// and installs the bridge; `extra` is appended to the configuration.
    pub async fn create(prefix: &str, tenants: u32, extra: &str) -> Fleet {
        let admin = connect("postgres").await;
        let template = format!("{prefix}_template");
        let landlord = format!("{prefix}_landlord");
        for db in [&template, &landlord] {
            admin
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await
                .unwrap();
        }
        connect(&template)
            .await
            .batch_execute(include_str!("../../scripts/seed/tenant.sql"))
            .await
            .unwrap();
        for t in 1..=tenants {
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE {prefix}_t{t} TEMPLATE {template}"
                ))
                .await
                .unwrap();
        }
        let client = connect(&landlord).await;
        client
            .batch_execute(include_str!("../../scripts/seed/landlord.sql"))
            .await
            .unwrap();
        client
            .batch_execute(&format!(
                "INSERT INTO tenants (id, slug, numeric_id, database_name)
                   SELECT t, 't' || t, 1000 + t, '{prefix}_t' || t FROM generate_series(1, {tenants}) t"
            ))
            .await
            .unwrap();
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let fleet = Fleet {
            prefix: prefix.to_string(),
            tenants,
            http_port,
            config_path: std::env::temp_dir().join(format!("{prefix}.toml")),
            log_path: std::env::temp_dir().join(format!("{prefix}.log")),
            bridge: None,
        };
        std::fs::write(&fleet.config_path, config_text(prefix, http_port, extra)).unwrap();
        fleet.cli(&["setup"]);
        for t in 1..=tenants {
            fleet
                .tenant(t)
                .await
                .batch_execute(
                    "INSERT INTO tenant_brandings (id, primary_color, secondary_color, font_family)
                     VALUES (1, '#000000', '#ffffff', 'Inter')",
                )
                .await
                .unwrap();
        }
        fleet
    }

    pub async fn landlord(&self) -> Client {
        connect(&format!("{}_landlord", self.prefix)).await
    }

    pub async fn tenant(&self, t: u32) -> Client {
        connect(&format!("{}_t{t}", self.prefix)).await
    }

    /// Adds the arrival recorders on the landlord and every tenant.
    pub async fn record_arrivals(&self) {
        self.landlord()
            .await
            .batch_execute(&ARRIVALS.replace("{tenant}", "NEW.tenant_db_id"))
            .await
            .unwrap();
        for t in 1..=self.tenants {
            self.tenant(t)
                .await
                .batch_execute(&ARRIVALS.replace("{tenant}", &t.to_string()))
                .await
                .unwrap();
        }
    }

    /// Runs a command of the bridge to its end.
    pub fn cli(&self, args: &[&str]) {
        let output = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cdc-bridge {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts `cdc-bridge run` and waits until every tenant's row reached
    /// the landlord and every reader streams (the first sync is done: a
    /// reconcile can bring the rows over before the readers of a large
    /// fleet have all made their slots).
    pub async fn start(&mut self) -> Started {
        let log = std::fs::File::create(&self.log_path).unwrap();
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env(
                "RUST_LOG",
                std::env::var("CDC_BENCH_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.bridge = Some(child);
        let landlord = self.landlord().await;
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut rows_in_sync, mut all_streaming) = (None, None);
        loop {
            if rows_in_sync.is_none() {
                let row = landlord
                    .query_one("SELECT count(*) FROM tenant_brandings", &[])
                    .await
                    .unwrap();
                let rows: i64 = row.get(0);
                rows_in_sync = (rows == i64::from(self.tenants)).then(|| started.elapsed());
            }
            if all_streaming.is_none() && self.sources_up() == self.tenants + 1 {
                all_streaming = Some(started.elapsed());
            }
            if let (Some(rows_in_sync), Some(all_streaming)) = (rows_in_sync, all_streaming) {
                return Started {
                    rows_in_sync,
                    all_streaming,
                };
            }
            assert!(
                Instant::now() < deadline,
                "the first sync did not finish; see {}",
                self.log_path.display()
            );
            // Each look renders /metrics, hundreds of databases' worth.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Readers streaming (`cdc_source_up` samples at 1).
    fn sources_up(&self) -> u32 {
        let up = self
            .metrics()
            .lines()
            .filter(|l| l.starts_with("cdc_source_up{") && l.ends_with(" 1"))
            .count();
        up as u32
    }

    /// The bridge's metrics (Prometheus text).
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return String::new();
        };
        let request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        let mut text = String::new();
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read_to_string(&mut text);
        }
        text
    }

    /// The value of the metric sample `name` (with its labels, if any).
    pub fn metric(&self, text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    /// The bridge's process id (for memory and CPU readings).
    pub fn pid(&self) -> Option<u32> {
        self.bridge.as_ref().map(Child::id)
    }

    /// Stops the bridge (SIGTERM, then its clean exit).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.bridge.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Stops the bridge and drops its slots (they would hold WAL for the
    /// benchmarks after this one).
    pub async fn finish(mut self) {
        self.stop();
        connect("postgres")
            .await
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE slot_name LIKE $1 || '%' AND NOT active",
                &[&self.prefix],
            )
            .await
            .unwrap();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(mut child) = self.bridge.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn config_text(prefix: &str, http_port: u16, extra: &str) -> String {
    format!(
        r#"
[landlord]
dsn = "{landlord}"
[tenants]
connection_template = "{template}"
[[table]]
name = "tenant_brandings"
[table.landlord_registry_columns]
tenant_slug = "slug"
[kafka]
brokers = "{brokers}"
topic = "{prefix}.changes"
partitions = 6
consumer_group = "{prefix}_applier"
[replication]
slot_prefix = "{prefix}"
[check]
interval_secs = 0
[http]
listen = "127.0.0.1:{http_port}"
{extra}
"#,
        landlord = dsn(&format!("{prefix}_landlord")),
        template = dsn("{database_name}"),
        brokers = brokers(),
    )
}

/// Latency percentiles in milliseconds.
pub fn percentiles(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({ "count": ms.len(), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0) })
}
