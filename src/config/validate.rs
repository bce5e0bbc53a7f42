//! The constraints the types cannot express, checked once at start; each
//! failure names the key and what to do.

use super::{invalid, Config, ConfigError};

impl Config {
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
        if self.tenants.rediscover_interval.is_zero() {
            return Err(invalid(
                "tenants.rediscover_interval_secs",
                "must be at least 1",
            ));
        }
        self.validate_tables()?;
        self.instances.validate()?;
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
        if self.postgres.connect_timeout.is_zero() || self.postgres.tcp_keepalive.is_zero() {
            return Err(invalid(
                "postgres.connect_timeout_secs",
                "and postgres.tcp_keepalive_secs must be at least 1",
            ));
        }
        if self.applier.max_parallel_targets == 0 || self.applier.target_timeout.is_zero() {
            return Err(invalid(
                "applier.max_parallel_targets",
                "and applier.target_timeout_secs must be at least 1",
            ));
        }
        if !(self.check.rate.is_finite() && self.check.rate >= 0.0) {
            return Err(invalid(
                "check.rate",
                "must be a number of tenants per second, 0 or more (0: no limit)",
            ));
        }
        if self.applier.max_connections < 2 || self.applier.max_connections_per_server < 2 {
            return Err(invalid(
                "applier.max_connections",
                "and applier.max_connections_per_server must be at least 2 (the landlord's connection and one tenant's)",
            ));
        }
        if self.applier.batch_size == 0 {
            return Err(invalid("applier.batch_size", "must be at least 1"));
        }
        if self.applier.batch_max_bytes == 0 {
            return Err(invalid(
                "applier.batch_max_bytes",
                "must be at least 1 (a batch always takes its first message, however large)",
            ));
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
        if !(1024..=512 * 1024 * 1024).contains(&self.kafka.max_message_bytes) {
            return Err(invalid(
                "kafka.max_message_bytes",
                "must be between 1024 and 536870912 (512 MiB)",
            ));
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
