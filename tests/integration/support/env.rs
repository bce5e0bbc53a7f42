//! One test's world: a landlord, some tenants, a topic and the bridge
//! configuration that connects them.

use std::path::PathBuf;

use tokio_postgres::Client;

use super::bridge::{Bridge, CommandRun};
use super::kafka::{kafka_brokers, Topic};
use super::postgres::{connect, dsn, LANDLORD_SCHEMA, TENANT_SCHEMA};

/// A landlord, some tenants, a topic: one test's world.
pub(crate) struct TestEnv {
    /// Unique per test: names the databases, topic, consumer group and slots.
    pub(crate) prefix: String,
    pub(crate) landlord_db: String,
    pub(crate) tenants: Vec<TestTenant>,
    /// The change topic, on the broker the configuration names.
    pub(crate) topic: Topic,
    pub(crate) config_path: PathBuf,
    /// Holds the configuration and one log file per bridge started.
    log_dir: PathBuf,
}

#[derive(Clone, Debug)]
pub(crate) struct TestTenant {
    pub(crate) id: i64,
    pub(crate) slug: String,
    pub(crate) database: String,
}

/// A name no other test run uses (databases, topics, groups).
pub(crate) fn unique_prefix(test: &str) -> String {
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

impl TestEnv {
    /// Creates the landlord and `tenant_count` tenant databases with the
    /// seed schema and registry rows (no branding rows yet), on the shared
    /// PostgreSQL cluster and Kafka broker.
    pub(crate) async fn new(test: &str, tenant_count: usize) -> TestEnv {
        TestEnv::with_kafka(test, tenant_count, &kafka_brokers()).await
    }

    /// `new`, with the bridge and the topic on the broker at `brokers`.
    pub(crate) async fn with_kafka(test: &str, tenant_count: usize, brokers: &str) -> TestEnv {
        let prefix = unique_prefix(test);
        let landlord_db = format!("{prefix}_landlord");
        let admin = connect("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {landlord_db}"))
            .await
            .unwrap();
        let landlord = connect(&landlord_db).await;
        landlord.batch_execute(LANDLORD_SCHEMA).await.unwrap();
        let log_dir = std::env::temp_dir().join(format!("cdc-bridge-tests/{prefix}"));
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut env = TestEnv {
            topic: Topic::new(brokers, &format!("{prefix}.changes")),
            config_path: log_dir.join("bridge.toml"),
            prefix,
            landlord_db,
            tenants: Vec::new(),
            log_dir,
        };
        for _ in 0..tenant_count {
            env.add_tenant_database().await;
        }
        for tenant in &env.tenants {
            env.register(tenant).await;
        }
        env.write_config("");
        env
    }

    /// Creates one more tenant database (not yet in the registry).
    pub(crate) async fn add_tenant_database(&mut self) -> TestTenant {
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
            .batch_execute(TENANT_SCHEMA)
            .await
            .unwrap();
        self.tenants.push(tenant.clone());
        tenant
    }

    pub(crate) async fn register(&self, tenant: &TestTenant) {
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

    /// Writes the bridge configuration; `extra` is appended verbatim.
    pub(crate) fn write_config(&self, extra: &str) {
        let text = config_text(
            (&dsn(&self.landlord_db), &dsn("{database_name}")),
            &self.topic,
            &self.prefix,
            extra,
        );
        std::fs::write(&self.config_path, text).unwrap();
    }

    /// Replaces every `from` with `to` in the written configuration; fails
    /// if there is none (the test would silently run something else).
    pub(crate) fn replace_in_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        assert!(
            text.contains(from),
            "the configuration has no {from:?}:\n{text}"
        );
        std::fs::write(&self.config_path, text.replace(from, to)).unwrap();
    }

    /// Turns the HTTP endpoint on, on a port the system picks (read it
    /// with `Bridge::http_port`); `extra` goes into the `[http]` section.
    pub(crate) fn set_http(&self, extra: &str) {
        self.replace_in_config(
            "listen = \"\"",
            &format!("listen = \"127.0.0.1:0\"\n{extra}"),
        );
    }

    pub(crate) async fn landlord(&self) -> Client {
        connect(&self.landlord_db).await
    }

    pub(crate) async fn tenant(&self, index: usize) -> Client {
        connect(&self.tenants[index].database).await
    }

    /// Starts `cdc-bridge run` with this environment's configuration.
    pub(crate) fn start_bridge(&self) -> Bridge {
        Bridge::start(&self.config_path, &self.log_dir)
    }

    /// Starts one role (`reader` or `applier`) with this configuration,
    /// `from` replaced by `to` in it (e.g. an `application_name` to tell
    /// its connections apart).
    pub(crate) fn start_role(&self, role: &str, from: &str, to: &str) -> Bridge {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        assert!(text.contains(from), "the configuration has no {from:?}");
        let path = self.log_dir.join(format!("{role}.toml"));
        std::fs::write(&path, text.replace(from, to)).unwrap();
        Bridge::start_role(&path, &self.log_dir, role)
    }

    /// Starts `cdc-bridge run` as instance `id` of several: its own copy of
    /// the configuration with `[instances] instance_id = "id"`, `extra`
    /// appended, and every connection named `inst_ID` (in
    /// `pg_stat_activity.application_name`), its HTTP endpoint on a free
    /// port; `landlord_dsn` replaces the
    /// landlord's DSN when given (a proxy in front of it).
    pub(crate) fn start_instance(
        &self,
        id: &str,
        landlord_dsn: Option<&str>,
        extra: &str,
    ) -> Bridge {
        let named = |dsn: &str| format!("{dsn} application_name=inst_{id}");
        let landlord = landlord_dsn.map_or_else(|| dsn(&self.landlord_db), str::to_string);
        let text = config_text(
            (&named(&landlord), &named(&dsn("{database_name}"))),
            &self.topic,
            &self.prefix,
            &format!("[instances]\ninstance_id = \"{id}\"\n{extra}"),
        );
        // Each on a port of its own (read with `Bridge::http_port`).
        let text = text.replace("listen = \"\"", "listen = \"127.0.0.1:0\"");
        let path = self.log_dir.join(format!("instance-{id}.toml"));
        std::fs::write(&path, text).unwrap();
        Bridge::start(&path, &self.log_dir)
    }

    /// Runs a bridge subcommand to completion, returning (success, output).
    pub(crate) fn bridge_command(&self, args: &[&str]) -> (bool, String) {
        self.bridge_command_with_env(args, &[])
    }

    /// `bridge_command`, with more environment variables.
    pub(crate) fn bridge_command_with_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (bool, String) {
        super::bridge::bridge_command(&self.config_path, args, env)
    }

    /// Runs a bridge subcommand to completion: exit code and both outputs.
    pub(crate) fn bridge_run(&self, args: &[&str]) -> CommandRun {
        super::bridge::bridge_run(&self.config_path, args, &[])
    }
}

/// A test configuration: the landlord DSN and tenant template given, topic,
/// group and slots named after `prefix`, short intervals; `extra` is
/// appended verbatim.
pub(crate) fn config_text(dsns: (&str, &str), topic: &Topic, prefix: &str, extra: &str) -> String {
    let (landlord, template) = dsns;
    format!(
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
        brokers = topic.brokers,
        topic = topic.name,
    )
}
