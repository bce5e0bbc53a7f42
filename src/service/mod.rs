//! The `run` command: the reader role (`readers`: one supervised task per
//! source database, tenants re-discovered from the registry on an
//! interval), the applier role, and the HTTP endpoint (`http`), all stopped
//! by one shutdown signal; `preflight` checks the basics first. The
//! periodic consistency check runs beside the applier.

mod actions;
mod auth;
mod budget;
mod dashboard;
mod history;
pub(crate) mod http;
mod monitor;
mod ownership;
mod preflight;
mod readers;
pub mod status;

use std::sync::Arc;

use crate::applier::{Applier, TargetPool};
use crate::config::Config;
use crate::consistency;
use crate::kafka;
use crate::runtime::shutdown::ShutdownTrigger;
use crate::runtime::status::status;

/// Which parts of the bridge this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Reader and applier.
    All,
    /// Stream databases into Kafka.
    Reader,
    /// Apply Kafka to the databases.
    Applier,
}

/// Runs the selected roles until `shutdown` fires; returns after every task
/// has drained and stopped.
/// The process's target connection pool, once the applier role made it:
/// the HTTP actions (check and repair one tenant) use it too, so they count
/// against the same caps. A process without the applier has none.
pub type SharedPool = Arc<std::sync::OnceLock<TargetPool>>;

pub async fn run(
    config: Arc<Config>,
    role: Role,
    trigger: ShutdownTrigger,
    shared: SharedPool,
) -> anyhow::Result<()> {
    let preflight::Preflight { key, tenants } = preflight::check(&config).await?;
    budget::check_connection_budget(&config, &tenants).await;
    kafka::ensure_topic(&config.kafka).await?;
    let mut tasks: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    let lag = monitor::run(Arc::clone(&config), trigger.subscribe());
    tasks.spawn(async move {
        lag.await;
        Ok(())
    });
    if role != Role::Applier {
        status().role_started("reader");
        let config = Arc::clone(&config);
        let shutdown = trigger.subscribe();
        let key = key.clone();
        tasks.spawn(async move { readers::run(config, key, shutdown).await });
    }
    if role != Role::Reader {
        status().role_started("applier");
        // One pool, so the check and its repairs count against the same
        // connection caps as the applier.
        let pool = TargetPool::new(Arc::clone(&config), Some(key));
        let _ = shared.set(pool.clone());
        let applier = Applier::new(Arc::clone(&config), pool.clone())?;
        let shutdown = trigger.subscribe();
        tasks.spawn(async move { Ok(applier.run(shutdown).await?) });
        // The check repairs through the applier's write path, so it runs
        // where the applier runs.
        let check = consistency::periodic::run(Arc::clone(&config), pool, trigger.subscribe());
        tasks.spawn(async move {
            check.await;
            Ok(())
        });
    }
    let mut first_error = None;
    // Whichever role ends first with an error stops the others: a process
    // that silently runs only half of the bridge would look healthy.
    while let Some(result) = tasks.join_next().await {
        let result = result.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = result {
            trigger.trigger();
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}
