//! The `[instances]` section: how several `run` processes share the work
//! (see `service::ownership` for the lease rule).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, invalid, ConfigError};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesConfig {
    /// This process's name among the bridge's instances (leases on the
    /// landlord are held in it); default: host name and process id, so
    /// that a restarted process never mistakes its predecessor's leases
    /// for its own.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// How long a source's lease lasts without a renewal, in seconds: a
    /// dead instance's sources are taken over this long after its last
    /// heartbeat (plus one rebalance interval).
    #[serde(
        rename = "lease_secs",
        default = "default_lease",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub lease: Duration,
    /// Seconds between heartbeats, each of which also moves sources
    /// towards an even spread over the live instances.
    #[serde(
        rename = "rebalance_interval_secs",
        default = "default_rebalance_interval",
        deserialize_with = "duration::secs",
        serialize_with = "duration::as_secs"
    )]
    pub rebalance_interval: Duration,
}

/// The host name (from the kernel, as `hostname` prints it) and the pid.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bridge".to_string());
    format!("{host}-{}", std::process::id())
}
fn default_lease() -> Duration {
    Duration::from_secs(15)
}
fn default_rebalance_interval() -> Duration {
    Duration::from_secs(2)
}

impl Default for InstancesConfig {
    fn default() -> Self {
        InstancesConfig {
            instance_id: default_instance_id(),
            lease: default_lease(),
            rebalance_interval: default_rebalance_interval(),
        }
    }
}

impl InstancesConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.instance_id;
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "instances.instance_id",
                "must be 1 to 128 printable characters, unique among the bridge's processes",
            ));
        }
        if self.rebalance_interval.is_zero() {
            return Err(invalid(
                "instances.rebalance_interval_secs",
                "must be at least 1",
            ));
        }
        // An instance stops streaming two thirds into a lease it could not
        // renew; that needs a few heartbeats' room.
        if self.lease < self.rebalance_interval * 3 {
            return Err(invalid(
                "instances.lease_secs",
                "must be at least 3 times instances.rebalance_interval_secs",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(config: &InstancesConfig) -> Option<String> {
        config.validate().err().map(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_the_id_names_host_and_pid() {
        let config = InstancesConfig::default();
        assert_eq!(problem(&config), None);
        assert!(config
            .instance_id
            .ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn a_bad_id_or_a_lease_too_short_for_its_heartbeats_is_refused_by_key() {
        let empty = InstancesConfig {
            instance_id: String::new(),
            ..InstancesConfig::default()
        };
        assert!(problem(&empty).is_some_and(|p| p.contains("instances.instance_id")));
        let short = InstancesConfig {
            lease: Duration::from_secs(5),
            rebalance_interval: Duration::from_secs(2),
            ..InstancesConfig::default()
        };
        assert!(problem(&short).is_some_and(|p| p.contains("instances.lease_secs")));
        let zero = InstancesConfig {
            rebalance_interval: Duration::ZERO,
            ..InstancesConfig::default()
        };
        assert!(problem(&zero).is_some_and(|p| p.contains("rebalance_interval_secs")));
    }
}
