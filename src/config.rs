//! Configuration: one TOML file, secrets and DSNs overridable from the
//! environment, validated once at start so that a mistake is reported with
//! the key that holds it.
//!
//! Environment overrides (applied after the file is read):
//!
//! | variable                          | key                           |
//! |-----------------------------------|-------------------------------|
//! | `CDC_BRIDGE_LANDLORD_DSN`         | `landlord.dsn`                |
//! | `CDC_BRIDGE_TENANT_DSN_TEMPLATE`  | `tenants.connection_template` |
//! | `CDC_BRIDGE_KAFKA_BROKERS`        | `kafka.brokers`               |
//! | `CDC_BRIDGE_HTTP_LISTEN`          | `http.listen`                 |

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// A value that must never reach a log line or a status page (DSNs carry
/// passwords). `Debug` and `Display` print a redacted form.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for handing to a client library and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_dsn(&self.0))
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_dsn(&self.0))
    }
}

/// Replaces the password in a key=value or URL style DSN by `***`.
pub fn redact_dsn(dsn: &str) -> String {
    if let Some((scheme, rest)) = dsn.split_once("://") {
        if let Some((credentials, host)) = rest.split_once('@') {
            let user = credentials.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}:***@{host}");
        }
        return dsn.to_string();
    }
    dsn.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub landlord: LandlordConfig,
    pub tenants: TenantsConfig,
    /// The synced tables; `tenant_brandings` is the first.
    #[serde(rename = "table")]
    pub tables: Vec<TableConfig>,
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub postgres: PostgresConfig,
    #[serde(default)]
    pub replication: ReplicationConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub applier: ApplierConfig,
    #[serde(default)]
    pub http: HttpConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlordConfig {
    /// libpq-style DSN of the landlord database (`host=... dbname=...` or a
    /// `postgres://` URL). Override: `CDC_BRIDGE_LANDLORD_DSN`.
    pub dsn: Secret,
}

#[derive(Debug, Clone, Deserialize)]
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
    pub connection_template: Secret,
    /// How often the registry is read again, in seconds.
    #[serde(default = "default_rediscover_secs")]
    pub rediscover_interval_secs: u64,
}

fn default_registry_query() -> String {
    "SELECT id::text AS id, slug, database_name FROM tenants WHERE status = 'active' ORDER BY id"
        .to_string()
}

fn default_rediscover_secs() -> u64 {
    10
}

/// One synced table and how its rows map between the two sides.
#[derive(Debug, Clone, Deserialize)]
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

    /// Columns that are bookkeeping of one side and never copied as data.
    pub fn is_never_synced(&self, column: &str) -> bool {
        self.exclude_columns.iter().any(|c| c == column)
            || self.tenant_row_key.iter().any(|c| c == column)
            || self.landlord_tenant_key == column
            || self.landlord_registry_columns.contains_key(column)
    }
}

#[derive(Debug, Clone, Deserialize)]
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
    /// librdkafka settings passed through to producer and consumer
    /// (`security.protocol`, `sasl.*`, `ssl.*`, `compression.type`, ...).
    #[serde(default)]
    pub client: BTreeMap<String, String>,
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
fn default_consumer_group() -> String {
    "cdc-bridge-applier".to_string()
}

/// Settings of every PostgreSQL connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// PEM file with the CA that signed the servers' certificates. Needed
    /// for DSNs with `sslmode=require`; the certificate and host name are
    /// verified.
    #[serde(default)]
    pub tls_root_cert: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
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
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
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
fn default_status_interval_ms() -> u64 {
    1000
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            slot_prefix: default_slot_prefix(),
            publication: default_publication(),
            bridge_schema: default_bridge_schema(),
            status_interval_ms: default_status_interval_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplierConfig {
    /// Most Kafka messages applied in one target transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a batch waits to fill up, in milliseconds.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// A target connection unused this long is closed, in seconds.
    #[serde(default = "default_idle_secs")]
    pub idle_connection_secs: u64,
}

fn default_batch_size() -> usize {
    500
}
fn default_batch_wait_ms() -> u64 {
    20
}
fn default_idle_secs() -> u64 {
    300
}

impl Default for ApplierConfig {
    fn default() -> Self {
        ApplierConfig {
            batch_size: default_batch_size(),
            batch_wait_ms: default_batch_wait_ms(),
            idle_connection_secs: default_idle_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the metrics/status endpoint; empty disables it.
    /// Override: `CDC_BRIDGE_HTTP_LISTEN`.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Bearer token required by state-changing endpoints (which are off
    /// without it). Override: `CDC_BRIDGE_HTTP_TOKEN` (or `_FILE`).
    #[serde(default)]
    pub token: Option<Secret>,
    /// Also require the token for `/metrics`, `/health` and `/status`.
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

/// Which way changes of a tenant flow. Cutover and rollback are done by
/// changing it (globally or per tenant) while the bridge runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Both ways (the default during a migration).
    Both,
    /// Only tenant changes are applied (to the landlord).
    ToLandlord,
    /// Only landlord changes are applied (to the tenant).
    ToTenant,
    /// Nothing is applied; on resume both sides are reconciled.
    Paused,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::ToLandlord => "to_landlord",
            Direction::ToTenant => "to_tenant",
            Direction::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        [
            Direction::Both,
            Direction::ToLandlord,
            Direction::ToTenant,
            Direction::Paused,
        ]
        .into_iter()
        .find(|d| d.as_str() == text)
    }
}

/// Loop prevention and conflict resolution settings.
#[derive(Debug, Clone, Deserialize)]
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
        }
    }
}

/// A configuration problem, naming the key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("configuration file {path} is invalid: {message}")]
    Parse { path: String, message: String },
    #[error("configuration key `{key}` {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl KafkaConfig {
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }
}

impl Config {
    /// Reads, overrides from the environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })?;
        let from_files = secrets_from_files()?;
        config.apply_env_overrides(|name| {
            from_files
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
        });
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn apply_env_overrides(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("CDC_BRIDGE_LANDLORD_DSN") {
            self.landlord.dsn = Secret(v);
        }
        if let Some(v) = get("CDC_BRIDGE_TENANT_DSN_TEMPLATE") {
            self.tenants.connection_template = Secret(v);
        }
        if let Some(v) = get("CDC_BRIDGE_KAFKA_BROKERS") {
            self.kafka.brokers = v;
        }
        if let Some(v) = get("CDC_BRIDGE_HTTP_LISTEN") {
            self.http.listen = v;
        }
        if let Some(v) = get("CDC_BRIDGE_HTTP_TOKEN") {
            self.http.token = Some(Secret(v));
        }
    }

    /// Checks every constraint the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.landlord.dsn.expose().trim().is_empty() {
            return Err(invalid(
                "landlord.dsn",
                "is empty: set the landlord database DSN",
            ));
        }
        if !self
            .tenants
            .connection_template
            .expose()
            .contains("{database_name}")
        {
            return Err(invalid(
                "tenants.connection_template",
                "must contain the placeholder {database_name}",
            ));
        }
        if self.tenants.rediscover_interval_secs == 0 {
            return Err(invalid(
                "tenants.rediscover_interval_secs",
                "must be at least 1",
            ));
        }
        self.validate_tables()?;
        self.validate_kafka()?;
        validate_identifier("replication.slot_prefix", &self.replication.slot_prefix, 40)?;
        validate_identifier("replication.publication", &self.replication.publication, 63)?;
        if self.sync.source_column == self.sync.version_column
            || self.sync.source_column.is_empty()
            || self.sync.version_column.is_empty()
        {
            return Err(invalid(
                "sync.source_column",
                "and sync.version_column must be two different non-empty names",
            ));
        }
        for (key, dsn) in [
            ("landlord.dsn", &self.landlord.dsn),
            (
                "tenants.connection_template",
                &self.tenants.connection_template,
            ),
        ] {
            let requires_tls = dsn.expose().contains("sslmode=require");
            if requires_tls && self.postgres.tls_root_cert.is_none() {
                return Err(invalid(
                    "postgres.tls_root_cert",
                    format!("is required because {key} says sslmode=require: set it to the CA certificate (PEM)"),
                ));
            }
        }
        if self.applier.batch_size == 0 {
            return Err(invalid("applier.batch_size", "must be at least 1"));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen",
                "must be host:port, like 127.0.0.1:9187, or empty",
            ));
        }
        Ok(())
    }

    fn validate_tables(&self) -> Result<(), ConfigError> {
        if self.tables.is_empty() {
            return Err(invalid("table", "needs at least one [[table]] entry"));
        }
        for (i, table) in self.tables.iter().enumerate() {
            if table.name.trim().is_empty() {
                return Err(invalid(format!("table[{i}].name"), "is empty"));
            }
            if table.tenant_row_key.is_empty() {
                return Err(invalid(
                    format!("table[{i}].tenant_row_key"),
                    "needs at least one column",
                ));
            }
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid(
                "kafka.brokers",
                "is empty: set host:port of a broker",
            ));
        }
        if self.kafka.topic.trim().is_empty() {
            return Err(invalid("kafka.topic", "is empty"));
        }
        if self.kafka.partitions < 1 {
            return Err(invalid("kafka.partitions", "must be at least 1"));
        }
        if self.kafka.replication_factor < 1 {
            return Err(invalid("kafka.replication_factor", "must be at least 1"));
        }
        if !["compact", "delete", "compact,delete"].contains(&self.kafka.cleanup_policy.as_str()) {
            return Err(invalid(
                "kafka.cleanup_policy",
                "must be one of compact, delete, compact,delete",
            ));
        }
        Ok(())
    }

    /// Whether a column carries row data that the applier copies: not a key,
    /// registry-filled, excluded, or one of the bridge's own columns.
    pub fn is_data_column(&self, table: &TableConfig, column: &str) -> bool {
        !table.is_never_synced(column)
            && column != self.sync.source_column
            && column != self.sync.version_column
    }

    /// The table config by its logical name.
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// Variables whose value may also come from a file named by `NAME_FILE`
/// (Docker/Kubernetes secrets), so that no secret sits in the environment.
const SECRET_VARIABLES: [&str; 3] = [
    "CDC_BRIDGE_LANDLORD_DSN",
    "CDC_BRIDGE_TENANT_DSN_TEMPLATE",
    "CDC_BRIDGE_HTTP_TOKEN",
];

fn secrets_from_files() -> Result<BTreeMap<String, String>, ConfigError> {
    let mut values = BTreeMap::new();
    for name in SECRET_VARIABLES {
        let Ok(path) = std::env::var(format!("{name}_FILE")) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        values.insert(
            name.to_string(),
            text.trim_end_matches(['\n', '\r']).to_string(),
        );
    }
    Ok(values)
}

/// Slot and publication names go into replication commands unquoted in
/// places, so they are limited to lower-case letters, digits and `_`.
fn validate_identifier(key: &str, value: &str, max_len: usize) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= max_len
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be 1 to {max_len} characters of a-z, 0-9 and _ (got {value:?})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [landlord]
        dsn = "host=127.0.0.1 dbname=landlord password=hunter2"
        [tenants]
        connection_template = "host=127.0.0.1 dbname={database_name}"
        [[table]]
        name = "tenant_brandings"
        [kafka]
        brokers = "127.0.0.1:9092"
    "#;

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        config.validate().unwrap();
        assert_eq!(config.kafka.topic, "cdc_bridge.changes");
        assert_eq!(config.tables[0].tenant_row_key, vec!["id"]);
        assert_eq!(config.tables[0].landlord_tenant_key, "tenant_db_id");
        assert_eq!(config.replication.publication, "cdc_bridge_pub");
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let text = MINIMAL.replace("[kafka]", "[kafka]\nbrokerz = \"x\"");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let text = MINIMAL.replace("brokers = \"127.0.0.1:9092\"", "");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.contains("brokers"), "{err}");
    }

    #[test]
    fn template_without_placeholder_names_the_key() {
        let text = MINIMAL.replace("dbname={database_name}", "dbname=x");
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert!(
            err.to_string().contains("tenants.connection_template"),
            "{err}"
        );
    }

    #[test]
    fn bad_slot_prefix_names_the_key() {
        let text = format!("{MINIMAL}\n[replication]\nslot_prefix = \"Bad-Name\"");
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("replication.slot_prefix"), "{err}");
    }

    #[test]
    fn sslmode_require_without_a_root_certificate_names_the_key() {
        let text = MINIMAL.replace("dbname=landlord", "dbname=landlord sslmode=require");
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("postgres.tls_root_cert"), "{err}");
    }

    #[test]
    fn environment_overrides_the_dsn() {
        let mut config = Config::parse(MINIMAL).unwrap();
        config.apply_env_overrides(|name| {
            (name == "CDC_BRIDGE_LANDLORD_DSN").then(|| "host=elsewhere".to_string())
        });
        assert_eq!(config.landlord.dsn.expose(), "host=elsewhere");
    }

    #[test]
    fn secrets_never_print_their_password() {
        let config = Config::parse(MINIMAL).unwrap();
        let printed = format!("{config:?} {}", config.landlord.dsn);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(
            redact_dsn("postgres://bridge:s3cret@db:5432/landlord"),
            "postgres://bridge:***@db:5432/landlord"
        );
    }
}
