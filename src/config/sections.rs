//! The sections of the configuration file, with their documented defaults.
//! Every field's doc comment is user documentation (README, "Configuration").

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, ClientSettings, Dsn, Secret};
use crate::model::{Direction, Side};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LandlordConfig {
    /// libpq-style DSN of the landlord database (`host=... dbname=...` or a
    /// `postgres://` URL). Override: `CDC_BRIDGE_LANDLORD_DSN`.
    pub dsn: Dsn,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    /// Query run on the landlord that lists the tenants to sync. It must
    /// return the text columns `id` (stable tenant id), `slug` and
    /// `database_name`; any further column is available to
    /// `table.landlord_registry_columns`.
    #[serde(default = "default_registry_query")]
    pub registry_query: String,
    /// DSN of a tenant database; `{database_name}` is replaced by the value
    /// from the registry. Override: `CDC_BRIDGE_TENANT_DSN_TEMPLATE`.
    pub connection_template: Dsn,
    /// How often the registry is read again, in seconds.
    #[serde(
        rename = "rediscover_interval_secs",
        default = "default_rediscover",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub rediscover_interval: Duration,
}

fn default_registry_query() -> String {
    "SELECT id::text AS id, slug, database_name FROM tenants WHERE status = 'active' ORDER BY id"
        .to_string()
}

fn default_rediscover() -> Duration {
    Duration::from_secs(10)
}

/// One synced table and how its rows map between the two sides.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Logical name, used in the Kafka envelope (`table`).
    pub name: String,
    /// Schema-qualified or plain table name on the tenant side (default: `name`).
    #[serde(default)]
    pub tenant_table: Option<String>,
    /// Table name on the landlord side (default: `name`).
    #[serde(default)]
    pub landlord_table: Option<String>,
    /// Row key columns on the tenant side.
    #[serde(default = "default_tenant_row_key")]
    pub tenant_row_key: Vec<String>,
    /// Values of `tenant_row_key` for the tenant's row when a landlord change
    /// is applied to a tenant database (single-row tables).
    #[serde(default = "default_tenant_row_key_value")]
    pub tenant_row_key_value: Vec<String>,
    /// Landlord column holding the tenant's stable id (the upsert key).
    #[serde(default = "default_landlord_tenant_key")]
    pub landlord_tenant_key: String,
    /// Landlord columns filled from the registry, `column = "registry field"`.
    #[serde(default)]
    pub landlord_registry_columns: BTreeMap<String, String>,
    /// Columns never synced even when both sides have them.
    #[serde(default)]
    pub exclude_columns: Vec<String>,
}

fn default_tenant_row_key() -> Vec<String> {
    vec!["id".to_string()]
}

fn default_tenant_row_key_value() -> Vec<String> {
    vec!["1".to_string()]
}

fn default_landlord_tenant_key() -> String {
    "tenant_db_id".to_string()
}

impl TableConfig {
    pub fn tenant_table(&self) -> &str {
        self.tenant_table.as_deref().unwrap_or(&self.name)
    }

    pub fn landlord_table(&self) -> &str {
        self.landlord_table.as_deref().unwrap_or(&self.name)
    }

    /// The table's name on one side.
    pub fn on(&self, side: Side) -> &str {
        match side {
            Side::Tenant => self.tenant_table(),
            Side::Landlord => self.landlord_table(),
        }
    }

    /// The row key columns on one side; the first is the tenant key.
    pub fn key_columns(&self, side: Side) -> Vec<String> {
        match side {
            Side::Tenant => self.tenant_row_key.clone(),
            Side::Landlord => vec![self.landlord_tenant_key.clone()],
        }
    }

    /// Columns that are bookkeeping of one side and never copied as data.
    pub fn is_never_synced(&self, column: &str) -> bool {
        self.exclude_columns.iter().any(|c| c == column)
            || self.tenant_row_key.iter().any(|c| c == column)
            || self.landlord_tenant_key == column
            || self.landlord_registry_columns.contains_key(column)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`. Override: `CDC_BRIDGE_KAFKA_BROKERS`.
    pub brokers: String,
    /// The change topic.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Partitions of the topic when the bridge creates it.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of the topic when the bridge creates it.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// `cleanup.policy` of the topic when the bridge creates it.
    #[serde(default = "default_cleanup_policy")]
    pub cleanup_policy: String,
    /// `retention.ms` of the topic when the bridge creates it (-1 = forever).
    #[serde(default = "default_retention_ms")]
    pub retention_ms: i64,
    /// Dead-letter topic (default: `{topic}.dlq`).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Consumer group of the applier.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    /// Largest change event (a row as JSON) the bridge sends, in bytes. A
    /// row above it is not sent: a notice (key, position, size, reason; not
    /// the row) goes to the dead-letter topic and the slot moves on. The
    /// producer, the consumer and both topics are set up to carry it.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// librdkafka settings passed through to producer and consumer
    /// (`security.protocol`, `sasl.*`, `ssl.*`, `compression.type`, ...).
    #[serde(default)]
    pub client: ClientSettings,
}

fn default_topic() -> String {
    "cdc_bridge.changes".to_string()
}
fn default_partitions() -> i32 {
    12
}
fn default_replication_factor() -> i32 {
    1
}
/// `delete` with unlimited retention keeps every change: both sides and all
/// rows of a tenant share its key, so compaction would keep only the last
/// message of a tenant, which is not always its newest version.
fn default_cleanup_policy() -> String {
    "delete".to_string()
}
fn default_retention_ms() -> i64 {
    -1
}
fn default_max_message_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_consumer_group() -> String {
    "cdc-bridge-applier".to_string()
}

/// Settings of every PostgreSQL connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// PEM file with the CA that signed the servers' certificates. Needed
    /// for DSNs with `sslmode=require`; the certificate and host name are
    /// verified.
    #[serde(default)]
    pub tls_root_cert: Option<std::path::PathBuf>,
    /// Longest wait for a server to accept a connection and answer the
    /// startup, in seconds (a host that accepts TCP and stays silent fails
    /// after this).
    #[serde(
        rename = "connect_timeout_secs",
        default = "default_connect_timeout",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub connect_timeout: Duration,
    /// Longest a statement of the bridge may run, in seconds (0 = no
    /// limit); the initial snapshot is exempt.
    #[serde(
        rename = "statement_timeout_secs",
        default = "default_statement_timeout",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub statement_timeout: Duration,
    /// Idle time before TCP keepalive probes, in seconds: a half-open
    /// connection (a server that vanished) is noticed within about this
    /// plus three probe intervals.
    #[serde(
        rename = "tcp_keepalive_secs",
        default = "default_tcp_keepalive",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub tcp_keepalive: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_tcp_keepalive() -> Duration {
    Duration::from_secs(30)
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            tls_root_cert: None,
            connect_timeout: default_connect_timeout(),
            statement_timeout: default_statement_timeout(),
            tcp_keepalive: default_tcp_keepalive(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Replication slot names are `{slot_prefix}_{database}`; slots are
    /// cluster-wide, so the database name keeps them apart.
    #[serde(default = "default_slot_prefix")]
    pub slot_prefix: String,
    /// Publication created in every synced database.
    #[serde(default = "default_publication")]
    pub publication: String,
    /// Schema holding the bridge's own bookkeeping tables.
    #[serde(default = "default_bridge_schema")]
    pub bridge_schema: String,
    /// Maximum interval between standby status updates, in milliseconds.
    #[serde(
        rename = "status_interval_ms",
        default = "default_status_interval",
        deserialize_with = "duration::millis",
        serialize_with = "duration::as_millis"
    )]
    pub status_interval: Duration,
}

fn default_slot_prefix() -> String {
    "cdc_bridge".to_string()
}
fn default_publication() -> String {
    "cdc_bridge_pub".to_string()
}
fn default_bridge_schema() -> String {
    "cdc_bridge".to_string()
}
fn default_status_interval() -> Duration {
    Duration::from_millis(1000)
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            slot_prefix: default_slot_prefix(),
            publication: default_publication(),
            bridge_schema: default_bridge_schema(),
            status_interval: default_status_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApplierConfig {
    /// Most Kafka messages in one batch. Under load batches grow while the
    /// previous one is applied; a large bound lets the applier catch up
    /// (a tenant database written once per batch, whatever the number of
    /// its changes in it) where a small one would fall further behind.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A batch stops growing once its messages hold this many bytes (the
    /// memory bound when rows are large).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// How long a batch waits for more messages after taking those that
    /// had arrived, in milliseconds.
    #[serde(
        rename = "batch_wait_ms",
        default = "default_batch_wait",
        deserialize_with = "duration::millis",
        serialize_with = "duration::as_millis"
    )]
    pub batch_wait: Duration,
    /// A target connection unused this long is closed, in seconds.
    /// Longest time one tenant database may take to take a batch's changes
    /// (connecting included), in seconds; then it counts as unreachable and
    /// is reconciled when it answers, so it never holds the others.
    #[serde(
        rename = "target_timeout_secs",
        default = "default_target_timeout",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub target_timeout: Duration,
    /// Most tenant databases written at the same time.
    #[serde(default = "default_max_parallel_targets")]
    pub max_parallel_targets: usize,
    /// Most connections the applier holds open at once, landlord included;
    /// the least recently used idle one is closed to make room.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most of them to one PostgreSQL server (host and port).
    #[serde(default = "default_max_connections_per_server")]
    pub max_connections_per_server: usize,
    #[serde(
        rename = "idle_connection_secs",
        default = "default_idle_connection",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub idle_connection: Duration,
}

fn default_batch_size() -> usize {
    5_000
}
fn default_batch_max_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_batch_wait() -> Duration {
    // Messages that arrived while the last batch was applied join the next
    // one anyway; waiting for more only adds latency.
    Duration::ZERO
}
fn default_target_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_parallel_targets() -> usize {
    32
}
fn default_max_connections() -> usize {
    64
}
fn default_max_connections_per_server() -> usize {
    32
}
fn default_idle_connection() -> Duration {
    Duration::from_secs(300)
}

impl Default for ApplierConfig {
    fn default() -> Self {
        ApplierConfig {
            batch_size: default_batch_size(),
            batch_max_bytes: default_batch_max_bytes(),
            batch_wait: default_batch_wait(),
            idle_connection: default_idle_connection(),
            target_timeout: default_target_timeout(),
            max_parallel_targets: default_max_parallel_targets(),
            max_connections: default_max_connections(),
            max_connections_per_server: default_max_connections_per_server(),
        }
    }
}

/// The periodic consistency check inside `run` (`cdc-bridge check` is
/// the same check on demand).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Seconds between the end of one check and the start of the next;
    /// 0 turns the periodic check off.
    #[serde(
        rename = "interval_secs",
        default = "default_check_interval",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub interval: Duration,
    /// Most tenants checked per second (0: no limit), so that a check of
    /// thousands of tenants does not load production.
    #[serde(default = "default_check_rate")]
    pub rate: f64,
    /// Repair divergent tenants (newest wins) instead of only reporting.
    #[serde(default)]
    pub repair: bool,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_check_rate() -> f64 {
    50.0
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            interval: default_check_interval(),
            rate: default_check_rate(),
            repair: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP endpoint (`/metrics`, `/health`, direction
    /// changes); empty disables it.
    /// Override: `CDC_BRIDGE_HTTP_LISTEN`.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Bearer token required by state-changing endpoints (which are off
    /// without it). Override: `CDC_BRIDGE_HTTP_TOKEN` (or `_FILE`).
    #[serde(default)]
    pub token: Option<Secret>,
    /// Also require the token for `/metrics` and `/health`.
    #[serde(default)]
    pub protect_read_endpoints: bool,
}

fn default_http_listen() -> String {
    "127.0.0.1:9187".to_string()
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            token: None,
            protect_read_endpoints: false,
        }
    }
}

/// Loop prevention and conflict resolution settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Bridge-managed column: which side wrote the current row version
    /// (`landlord` or `tenant`).
    #[serde(default = "default_source_column")]
    pub source_column: String,
    /// Bridge-managed column: the row's version timestamp (monotonic per row).
    #[serde(default = "default_version_column")]
    pub version_column: String,
    /// Tombstones of deleted rows are kept this many days, then removed.
    #[serde(default = "default_tombstone_retention_days")]
    pub tombstone_retention_days: u32,
    /// Direction of tenants without an override (`cdc-bridge direction`).
    #[serde(default = "default_direction")]
    pub default_direction: Direction,
    /// A change whose version is further than this in the future (or
    /// `infinity`) is refused to the dead-letter topic, in seconds: it would
    /// pin the row so the other side could never win again.
    #[serde(
        rename = "max_clock_skew_secs",
        default = "default_max_clock_skew",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub max_clock_skew: Duration,
}

fn default_max_clock_skew() -> Duration {
    Duration::from_secs(300)
}

fn default_source_column() -> String {
    "cdc_source".to_string()
}
fn default_version_column() -> String {
    "cdc_version".to_string()
}
fn default_tombstone_retention_days() -> u32 {
    30
}
fn default_direction() -> Direction {
    Direction::Both
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            source_column: default_source_column(),
            version_column: default_version_column(),
            tombstone_retention_days: default_tombstone_retention_days(),
            default_direction: default_direction(),
            max_clock_skew: default_max_clock_skew(),
        }
    }
}

impl KafkaConfig {
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }
}
