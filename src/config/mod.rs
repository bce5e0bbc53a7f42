//! Configuration: one TOML file, secrets and DSNs overridable from the
//! environment (`env`), validated once at start (`validate`) so that a
//! mistake is reported with the key that holds it. The sections and their
//! defaults are in `sections`; secrets redact themselves (`secret`).

mod duration;
mod env;
mod instances;
mod parse_error;
mod secret;
mod sections;
mod validate;

use std::path::Path;

pub use env::ENV_OVERRIDES;
pub use instances::InstancesConfig;
pub use secret::{ClientSettings, Dsn, Secret, REDACTED};
pub use sections::{
    ApplierConfig, CheckConfig, HttpConfig, KafkaConfig, LandlordConfig, PostgresConfig,
    ReplicationConfig, SyncConfig, TableConfig, TenantsConfig,
};

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    #[serde(default)]
    pub check: CheckConfig,
    #[serde(default)]
    pub instances: InstancesConfig,
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
        let from_files = env::secrets_from_files()?;
        config.apply_env_overrides(|name| {
            from_files
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
        });
        config.validate()?;
        Ok(config)
    }

    /// The file's contents as a configuration; an error never quotes them
    /// (see `parse_error`).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| parse_error::describe(text, &e))
    }

    /// Whether a column carries row data that the applier copies: not a key,
    /// registry-filled, excluded, or one of the bridge's own columns.
    pub fn is_data_column(&self, table: &TableConfig, column: &str) -> bool {
        !table.is_never_synced(column)
            && column != self.sync.source_column
            && column != self.sync.version_column
    }

    /// The whole configuration as TOML, every secret redacted (`check-config`).
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# the configuration cannot be shown: {e}\n"))
    }

    /// The table config by its logical name.
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
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
        let text = r#"
            [landlord]
            dsn = "host=127.0.0.1 dbname=landlord password=hunter2"
            [tenants]
            connection_template = "postgresql://u:tplpw@127.0.0.1/{database_name}"
            [[table]]
            name = "tenant_brandings"
            [kafka]
            brokers = "127.0.0.1:9092"
            [kafka.client]
            "sasl.password" = "saslpw"
            [http]
            token = "t0ken"
        "#;
        let config = Config::parse(text).unwrap();
        let shown = config.redacted_toml();
        let printed = format!("{config:?} {} {shown}", config.landlord.dsn);
        for secret in ["hunter2", "tplpw", "saslpw", "t0ken"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(shown.contains("dbname=landlord"), "{shown}");
    }
}
