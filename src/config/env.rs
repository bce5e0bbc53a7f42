//! Environment overrides, applied after the file is read: the one table of
//! them (README lists the same). Secrets may also come from a file named by
//! `<VARIABLE>_FILE` (Docker/Kubernetes secrets), so that no secret sits in
//! the environment.

use std::collections::BTreeMap;

use super::{Config, ConfigError, Dsn, Secret};

/// An environment variable that overrides one configuration key.
pub struct EnvOverride {
    pub variable: &'static str,
    pub key: &'static str,
    /// A secret: may also be read from the file named by `<variable>_FILE`.
    pub secret: bool,
    apply: fn(&mut Config, String),
}

/// Every environment override.
pub const ENV_OVERRIDES: &[EnvOverride] = &[
    EnvOverride {
        variable: "CDC_BRIDGE_LANDLORD_DSN",
        key: "landlord.dsn",
        secret: true,
        apply: |c, v| c.landlord.dsn = Dsn::new(v),
    },
    EnvOverride {
        variable: "CDC_BRIDGE_TENANT_DSN_TEMPLATE",
        key: "tenants.connection_template",
        secret: true,
        apply: |c, v| c.tenants.connection_template = Dsn::new(v),
    },
    EnvOverride {
        variable: "CDC_BRIDGE_KAFKA_BROKERS",
        key: "kafka.brokers",
        secret: false,
        apply: |c, v| c.kafka.brokers = v,
    },
    EnvOverride {
        variable: "CDC_BRIDGE_HTTP_LISTEN",
        key: "http.listen",
        secret: false,
        apply: |c, v| c.http.listen = v,
    },
    EnvOverride {
        variable: "CDC_BRIDGE_HTTP_TOKEN",
        key: "http.token",
        secret: true,
        apply: |c, v| c.http.token = Some(Secret::new(v)),
    },
];

impl Config {
    /// Applies every override `get` has a value for.
    pub fn apply_env_overrides(&mut self, get: impl Fn(&str) -> Option<String>) {
        for over in ENV_OVERRIDES {
            if let Some(value) = get(over.variable) {
                (over.apply)(self, value);
            }
        }
    }
}

/// Secret values read from the files named by `<VARIABLE>_FILE`.
pub(super) fn secrets_from_files() -> Result<BTreeMap<String, String>, ConfigError> {
    let mut values = BTreeMap::new();
    for over in ENV_OVERRIDES.iter().filter(|o| o.secret) {
        let Ok(path) = std::env::var(format!("{}_FILE", over.variable)) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        values.insert(
            over.variable.to_string(),
            text.trim_end_matches(['\n', '\r']).to_string(),
        );
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_lists_every_environment_override() {
        let readme = include_str!("../../README.md");
        for over in ENV_OVERRIDES {
            assert!(
                readme.contains(over.variable),
                "README lacks {}",
                over.variable
            );
        }
    }
}
