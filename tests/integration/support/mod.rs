//! Shared harness of the integration tests: real PostgreSQL and real Kafka,
//! started by `scripts/test.sh`. Every test gets fresh databases, its own
//! topic, consumer group and slot names, and waits with deadlines, never
//! with fixed sleeps.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn pg_port() -> u16 {
    std::env::var("CDC_TEST_PG_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(56432)
}

pub fn kafka_brokers() -> String {
    std::env::var("CDC_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:59192".into())
}

pub fn dsn(database: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname={database}",
        pg_port()
    )
}

pub async fn connect(database: &str) -> Client {
    connect_dsn(&dsn(database)).await
}

/// A plain connection to any test server (several tests start their own).
pub async fn connect_dsn(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach test PostgreSQL ({dsn}): {e}; run the tests with scripts/test.sh")
        });
    tokio::spawn(connection);
    client
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(DEADLINE, what, check).await
}

/// `eventually` with a deadline of its own (a broker restart is slow).
pub async fn eventually_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let short: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    format!(
        "t{}_{:x}_{:x}",
        short.to_lowercase(),
        std::process::id() & 0xffff,
        nanos & 0xfffff
    )
}

/// A landlord, some tenants, a topic: one test's world.
pub struct TestEnv {
    pub prefix: String,
    pub landlord_db: String,
    pub tenants: Vec<TestTenant>,
    pub topic: String,
    pub config_path: PathBuf,
    pub log_dir: PathBuf,
}

#[derive(Clone, Debug)]
pub struct TestTenant {
    pub id: i64,
    pub slug: String,
    pub database: String,
}

impl TestEnv {
    /// Creates the landlord and `tenant_count` tenant databases with the
    /// seed schema and registry rows (no branding rows yet).
    pub async fn new(test: &str, tenant_count: usize) -> TestEnv {
        let prefix = unique_prefix(test);
        let landlord_db = format!("{prefix}_landlord");
        let admin = connect("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {landlord_db}"))
            .await
            .unwrap();
        let landlord = connect(&landlord_db).await;
        landlord
            .batch_execute(include_str!("../../../scripts/seed/landlord.sql"))
            .await
            .unwrap();
        let log_dir = std::env::temp_dir().join(format!("cdc-bridge-tests/{prefix}"));
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut env = TestEnv {
            topic: format!("{prefix}.changes"),
            config_path: log_dir.join("bridge.toml"),
            prefix,
            landlord_db,
            tenants: Vec::new(),
            log_dir,
        };
        for _ in 0..tenant_count {
            env.add_tenant_database().await;
        }
        env.register_all().await;
        env.write_config("");
        env
    }

    /// Creates one more tenant database (not yet in the registry).
    pub async fn add_tenant_database(&mut self) -> TestTenant {
        let n = self.tenants.len() as i64 + 1;
        let tenant = TestTenant {
            id: n,
            slug: format!("tenant{n}"),
            database: format!("{}_tenant{n}", self.prefix),
        };
        let admin = connect("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", tenant.database))
            .await
            .unwrap();
        connect(&tenant.database)
            .await
            .batch_execute(include_str!("../../../scripts/seed/tenant.sql"))
            .await
            .unwrap();
        self.tenants.push(tenant.clone());
        tenant
    }

    pub async fn register(&self, tenant: &TestTenant) {
        self.landlord()
            .await
            .execute(
                "INSERT INTO tenants (id, slug, numeric_id, database_name) VALUES ($1, $2, $3, $4)",
                &[
                    &tenant.id,
                    &tenant.slug,
                    &(1000 + tenant.id as i32),
                    &tenant.database,
                ],
            )
            .await
            .unwrap();
    }

    async fn register_all(&self) {
        for tenant in &self.tenants {
            self.register(tenant).await;
        }
    }

    /// Writes the bridge configuration; `extra` is appended verbatim.
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            r#"
[landlord]
dsn = "{landlord}"
[tenants]
connection_template = "{template}"
rediscover_interval_secs = 1
[[table]]
name = "tenant_brandings"
[table.landlord_registry_columns]
tenant_slug = "slug"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
partitions = 3
consumer_group = "{prefix}_applier"
[replication]
slot_prefix = "{prefix}"
status_interval_ms = 200
[applier]
batch_wait_ms = 10
[http]
listen = ""
{extra}
"#,
            landlord = dsn(&self.landlord_db),
            template = dsn("{database_name}"),
            brokers = kafka_brokers(),
            topic = self.topic,
            prefix = self.prefix,
        );
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub async fn landlord(&self) -> Client {
        connect(&self.landlord_db).await
    }

    pub async fn tenant(&self, index: usize) -> Client {
        connect(&self.tenants[index].database).await
    }

    /// Starts `cdc-bridge run` with this environment's configuration.
    pub fn start_bridge(&self) -> Bridge {
        Bridge::start(&self.config_path, &self.log_dir)
    }

    /// Runs a bridge subcommand to completion, returning (success, output).
    pub fn bridge_command(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// The landlord row of tenant `index` as (column -> text value).
    pub async fn landlord_row(&self, index: usize) -> Option<Row> {
        let sql = "SELECT to_jsonb(b)::text FROM tenant_brandings b WHERE tenant_db_id = $1";
        let row = self
            .landlord()
            .await
            .query_opt(sql, &[&self.tenants[index].id])
            .await
            .unwrap()?;
        Some(Row::parse(row.get(0)))
    }

    /// The tenant's own branding row.
    pub async fn tenant_row(&self, index: usize) -> Option<Row> {
        let sql = "SELECT to_jsonb(b)::text FROM tenant_brandings b WHERE id = 1";
        let row = self
            .tenant(index)
            .await
            .query_opt(sql, &[])
            .await
            .unwrap()?;
        Some(Row::parse(row.get(0)))
    }
}

/// A row as JSON (so tests compare any column without knowing types).
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub serde_json::Map<String, serde_json::Value>);

impl Row {
    fn parse(json: &str) -> Row {
        Row(serde_json::from_str(json).unwrap())
    }

    pub fn text(&self, column: &str) -> Option<String> {
        match self.0.get(column)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// A running `cdc-bridge run` process; killed when dropped.
pub struct Bridge {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Bridge {
    pub fn start(config: &std::path::Path, log_dir: &std::path::Path) -> Bridge {
        let n = std::fs::read_dir(log_dir).map(|d| d.count()).unwrap_or(0);
        let log = log_dir.join(format!("bridge-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("RUST_LOG", "info,cdc_bridge=debug,rdkafka=warn")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Bridge {
            child: Some(child),
            log,
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                child.kill().ok();
                panic!(
                    "bridge did not stop within 30 s of SIGTERM; log: {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the crash case.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Peak resident memory of the process so far, in KiB (Linux VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A message as read back: payload and the dead-letter reason header.
pub struct RawMessage {
    pub payload: Vec<u8>,
    pub reason: Option<String>,
}

/// Every message in a topic, read from the beginning up to the current end.
pub fn topic_messages(topic: &str) -> Vec<RawMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut ends = std::collections::HashMap::new();
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .unwrap();
        if high > low {
            ends.insert(*p, high);
            list.add_partition_offset(topic, *p, Offset::Offset(low))
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&list).unwrap();
    let start = Instant::now();
    while !ends.is_empty() && start.elapsed() < DEADLINE {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let reason = message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "cdc-bridge-error")
                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            });
            out.push(RawMessage {
                payload: message.payload().unwrap_or_default().to_vec(),
                reason,
            });
            if message.offset() + 1 >= ends[&message.partition()] {
                ends.remove(&message.partition());
            }
        }
    }
    out
}

/// Every envelope in a topic, read from the beginning up to the current end.
pub fn topic_envelopes(topic: &str) -> Vec<serde_json::Value> {
    topic_messages(topic)
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect()
}

/// Produces one message (as a foreign producer would) and waits for Kafka.
pub async fn produce(topic: &str, key: &str, payload: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

/// Change events (not snapshots) in the topic.
pub fn change_events(topic: &str) -> Vec<serde_json::Value> {
    topic_envelopes(topic)
        .into_iter()
        .filter(|e| e["op"] != "snapshot")
        .collect()
}

/// Waits until every one of `colors` is in a change event of the topic.
pub async fn wait_colors_in_kafka(
    topic: &str,
    colors: &std::collections::BTreeSet<String>,
    what: &str,
) {
    eventually(what, || async {
        let seen: std::collections::BTreeSet<String> = change_events(topic)
            .iter()
            .filter_map(|e| {
                e["columns"]["primary_color"]["value"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        colors.is_subset(&seen).then_some(())
    })
    .await;
}

/// Installs a trigger that logs every write to `tenant_brandings` in
/// `write_log`, to count applies.
pub async fn log_writes(client: &Client) {
    client
        .batch_execute(
            "CREATE TABLE write_log (op text, at timestamptz DEFAULT clock_timestamp());
             CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO write_log (op) VALUES (TG_OP); RETURN NULL; END $$;
             CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON tenant_brandings
                 FOR EACH ROW EXECUTE FUNCTION log_write();",
        )
        .await
        .unwrap();
}

pub async fn write_count(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM write_log", &[])
        .await
        .unwrap()
        .get(0)
}

/// Messages in a topic (sum of its partitions' high watermarks).
pub fn topic_size(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum()
}

/// Waits until the bridge log says `streaming` for `sources` databases.
pub async fn wait_streaming(bridge: &Bridge, sources: usize) {
    eventually("readers streaming", || async {
        (bridge.log_text().matches(" streaming").count() >= sources).then_some(())
    })
    .await;
}

/// A minimal HTTP/1.0 request to the bridge's endpoint; the raw response.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// A loopback port for this test process's HTTP endpoint.
pub fn http_port(offset: u16) -> u16 {
    20000 + (std::process::id() % 20000) as u16 + offset
}

/// Sets `[http]` of the written configuration.
pub fn set_http(env: &TestEnv, port: u16, extra: &str) {
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let text = text.replace(
        "listen = \"\"",
        &format!("listen = \"127.0.0.1:{port}\"\n{extra}"),
    );
    std::fs::write(&env.config_path, text).unwrap();
}

/// The landlord row's `primary_color` of tenant `index`.
pub async fn landlord_color(env: &TestEnv, index: usize) -> Option<String> {
    env.landlord_row(index)
        .await
        .and_then(|r| r.text("primary_color"))
}

/// The tenant's own row's `primary_color`.
pub async fn tenant_color(env: &TestEnv, index: usize) -> Option<String> {
    env.tenant_row(index)
        .await
        .and_then(|r| r.text("primary_color"))
}

/// An application write on the tenant side (insert or update).
pub async fn set_tenant_color(env: &TestEnv, index: usize, color: &str) {
    env.tenant(index)
        .await
        .execute(
            "INSERT INTO tenant_brandings (id, primary_color) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET primary_color = EXCLUDED.primary_color",
            &[&color],
        )
        .await
        .unwrap();
}

/// An application write on the landlord side (insert or update).
pub async fn set_landlord_color(env: &TestEnv, index: usize, color: &str) {
    let tenant = &env.tenants[index];
    env.landlord()
        .await
        .execute(
            "INSERT INTO tenant_brandings (tenant_db_id, tenant_slug, primary_color) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_db_id) DO UPDATE SET primary_color = EXCLUDED.primary_color",
            &[&tenant.id, &tenant.slug, &color],
        )
        .await
        .unwrap();
}
