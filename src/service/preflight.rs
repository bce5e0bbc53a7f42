//! Checks run before `run` starts: a misconfiguration is reported at once,
//! naming the problem and the fix, instead of as a stream of retries.
//! Tenant databases are not checked here: one tenant being down must not
//! stop the others (the reader retries it and reports it per tenant).

use std::time::Duration;

use crate::config::Config;
use tokio_postgres::error::SqlState;

use crate::model::Side;
use crate::postgres::bridge_schema::{load_apply_key, ApplyKey};
use crate::postgres::registry::{load_tenants, Tenant};
use crate::postgres::setup::ensure_installed;
use crate::postgres::{connect, DbError};

/// A problem that makes running pointless until an operator fixes it.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{0}")]
    Landlord(String),
    #[error("the landlord database has wal_level = {0}; set wal_level = logical in postgresql.conf and restart PostgreSQL")]
    WalLevel(String),
    #[error("the Kafka brokers {brokers} did not answer within {seconds} s ({reason}); check kafka.brokers and that Kafka is up")]
    Kafka {
        brokers: String,
        seconds: u64,
        reason: String,
    },
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// What the checks found that the start needs.
pub struct Preflight {
    /// The installation's apply token, which the roles need.
    pub key: ApplyKey,
    /// The registry as read now (for the connection budget).
    pub tenants: Vec<Tenant>,
}

/// Landlord reachable, logical replication on, registry readable, Kafka up.
pub async fn check(config: &Config) -> Result<Preflight, PreflightError> {
    let mut landlord = connect(&config.landlord.dsn, "landlord")
        .await
        .map_err(|e| PreflightError::Landlord(e.to_string()))?;
    let wal_level: String = landlord
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(|e| {
            PreflightError::Landlord(format!("cannot read wal_level on the landlord: {e}"))
        })?
        .get(0);
    if wal_level != "logical" {
        return Err(PreflightError::WalLevel(wal_level));
    }
    let tenants = load_tenants(&landlord, config).await.map_err(|e| {
        let advice = match &e {
            DbError::Query { source, .. } if source.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                "the bridge's role lacks privileges: apply what `cdc-bridge grants --role <role>` prints"
            }
            _ => "check tenants.registry_query",
        };
        PreflightError::Landlord(format!("{e}; {advice}"))
    })?;
    // A landlord not set up yet is set up now if this role may (as every
    // database a reader starts is); the token only exists from then on.
    ensure_installed(&mut landlord, config, Side::Landlord, "landlord")
        .await
        .map_err(|e| PreflightError::Landlord(e.to_string()))?;
    let key = load_apply_key(&landlord, config)
        .await
        .map_err(|e| PreflightError::Landlord(e.to_string()))?;
    check_kafka(config).await?;
    Ok(Preflight { key, tenants })
}

async fn check_kafka(config: &Config) -> Result<(), PreflightError> {
    let kafka = config.kafka.clone();
    let result = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = crate::kafka::base_config(&kafka)
            .create()
            .map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(None, KAFKA_TIMEOUT)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    result.map_err(|reason| PreflightError::Kafka {
        brokers: config.kafka.brokers.clone(),
        seconds: KAFKA_TIMEOUT.as_secs(),
        reason,
    })
}
