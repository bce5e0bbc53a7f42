//! The reader role: the landlord's reader plus one supervised reader per
//! registered tenant database, started and stopped as the registry changes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::ownership::{tenant_source, Ownership, LANDLORD_SOURCE};

use crate::config::Config;
use crate::kafka;
use crate::model::Side;
use crate::postgres::bridge_schema::{record_installed, ApplyKey};
use crate::postgres::registry::{load_tenants, status_entries, Tenant, TenantDirectory};
use crate::postgres::{connect, DbError};
use crate::runtime::retry::{Classify, FailureLog};
use crate::runtime::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::runtime::status::{status, Instances};
use crate::source::{slot_name, supervise, RowOwner, SourceSpec};

/// Until when this instance's leases are safe (`Ownership::lease_view`).
type LeaseView = tokio::sync::watch::Receiver<Option<Instant>>;

/// A running reader task.
struct Running {
    /// The registry row it was started from (none: the landlord's).
    tenant: Option<Tenant>,
    trigger: ShutdownTrigger,
    handle: JoinHandle<()>,
}

/// Running reader tasks by source (`ownership::LANDLORD_SOURCE`,
/// `tenant_source(id)`).
type Readers = HashMap<String, Running>;

/// What the reader role knows between heartbeats.
struct Role {
    config: Arc<Config>,
    key: ApplyKey,
    producer: kafka::Producer,
    directory: TenantDirectory,
    ownership: Ownership,
    running: Readers,
    /// The registry's tenants at the last successful read.
    tenants: Option<HashMap<String, Tenant>>,
    last_read: Option<Instant>,
    /// One registry connection for all polls, opened again after a failure.
    registry: Option<tokio_postgres::Client>,
    unrecorded: Vec<Tenant>,
    failures: FailureLog,
    /// Every source's owner at the last listing of the leases.
    owners: HashMap<String, String>,
}

const READ_REGISTRY: &str = "reading the tenant registry (the current tenants keep syncing)";
const HEARTBEAT: &str = "renewing this instance's source leases on the landlord";

/// The reader role: the landlord's reader plus one supervised task per
/// registered tenant, kept in step with the registry on every poll, for
/// the sources this instance holds the lease of (see `ownership`).
pub(super) async fn run(
    config: Arc<Config>,
    key: ApplyKey,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut role = Role {
        producer: kafka::producer(&config.kafka)?,
        ownership: Ownership::new(&config),
        config,
        key,
        directory: TenantDirectory::default(),
        running: HashMap::new(),
        tenants: None,
        last_read: None,
        registry: None,
        unrecorded: Vec::new(),
        failures: FailureLog::default(),
        owners: HashMap::new(),
    };
    let interval = role.config.instances.rebalance_interval;
    loop {
        let deadline = role.ownership.deadline();
        let network = tokio::select! {
            done = role.refresh() => done,
            _ = sleep_until(deadline) => None,
            _ = shutdown.wait() => break,
        };
        match network {
            Some(Ok(())) => {
                // Its landlord queries may hang too: the deadline holds
                // here as well (a reader stopped half-way was triggered,
                // and `stop_all` below takes the rest).
                let (stop, deadline) = (shutdown.clone(), role.ownership.deadline());
                tokio::select! {
                    _ = role.rebalance(&stop) => {}
                    _ = sleep_until(deadline) => {}
                }
            }
            Some(Err(error)) => role
                .failures
                .failed(HEARTBEAT, error.class(), &error, interval),
            None => {
                role.ownership.reconnect();
                let class = crate::runtime::retry::ErrorClass::Transient;
                role.failures.failed(
                    HEARTBEAT,
                    class,
                    &"the landlord did not answer in time",
                    interval,
                )
            }
        }
        if role.ownership.deadline().is_some() && !role.ownership.is_current() {
            role.stop_all("no heartbeat got through for two thirds of a lease; stopping every reader before the lease can pass to another instance").await;
            role.ownership.lost();
        }
        role.publish();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = sleep_until(role.ownership.deadline()) => {}
            _ = shutdown.wait() => break,
        }
    }
    role.stop_all("shutting down").await;
    match tokio::time::timeout(interval, role.ownership.leave()).await {
        Ok(Ok(())) => info!(instance = %role.ownership.me, "source leases handed over"),
        Ok(Err(error)) => {
            warn!(%error, "could not give up the source leases; the others take them when they expire")
        }
        Err(_) => warn!(
            "could not give up the source leases in time; the others take them when they expire"
        ),
    }
    Ok(())
}

/// Resolves at `deadline`, or never.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Role {
    /// This instance's view of the leases, on the board and in metrics.
    fn publish(&self) {
        let metrics = crate::runtime::metrics::metrics();
        metrics
            .sources_owned
            .set(self.ownership.held().len() as i64);
        metrics
            .instances_live
            .set(self.ownership.live().len() as i64);
        status().set_instances(Instances {
            me: self.ownership.me.clone(),
            live: self.ownership.live().to_vec(),
            owners: self.owners.clone(),
            valid_until: self.ownership.deadline(),
        });
    }

    /// The heartbeat, and the registry when its interval has passed, each
    /// within its own time limit (`None`: the heartbeat's passed).
    async fn refresh(&mut self) -> Option<Result<(), DbError>> {
        let limit = self.config.instances.rebalance_interval * 2;
        if let Err(error) = tokio::time::timeout(limit, self.ownership.beat())
            .await
            .ok()?
        {
            return Some(Err(error));
        }
        self.failures.recovered(HEARTBEAT);
        let due = self
            .last_read
            .is_none_or(|at| at.elapsed() >= self.config.tenants.rediscover_interval);
        if due {
            // A slow registry query must not starve the heartbeat's loop
            // forever; it has up to the statement timeout.
            let limit = self.config.postgres.statement_timeout.max(limit);
            let polled =
                tokio::time::timeout(limit, poll_registry(&self.config, &mut self.registry))
                    .await
                    .unwrap_or_else(|_| {
                        let seconds = limit.as_secs();
                        Err(DbError::Registry(format!(
                            "the registry query did not answer within {seconds} s"
                        )))
                    });
            match polled {
                Ok(tenants) => {
                    self.failures.recovered(READ_REGISTRY);
                    self.directory.replace(&tenants);
                    let template = &self.config.tenants.connection_template;
                    status().set_tenants(status_entries(&tenants, template));
                    let by_source = tenants
                        .into_iter()
                        .map(|t| (tenant_source(t.id.as_str()), t))
                        .collect();
                    self.tenants = Some(by_source);
                    self.last_read = Some(Instant::now());
                }
                Err(error) => {
                    let wait = self.config.tenants.rediscover_interval;
                    self.failures
                        .failed(READ_REGISTRY, error.class(), &error, wait)
                }
            }
        }
        Some(Ok(()))
    }

    /// Gives up what the spread says (readers first), takes what it
    /// allows, and starts and stops readers to match.
    async fn rebalance(&mut self, shutdown: &Shutdown) {
        // The landlord reader maps rows to tenants: nothing is wanted
        // before the first registry read.
        let Some(tenants) = &self.tenants else { return };
        let mut wanted: BTreeSet<String> = tenants.keys().cloned().collect();
        wanted.insert(LANDLORD_SOURCE.to_string());
        let plan = self.ownership.plan(&wanted);
        for source in &plan.release {
            self.stop(source, "handing the source to another instance")
                .await;
        }
        if let Err(error) = self.ownership.apply(&plan).await {
            // Readers given up stay stopped until the release gets through.
            return warn!(%error, "could not update the source leases; trying again on the next heartbeat");
        }
        let held = self.ownership.held().clone();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(source, run)| !held.contains(*source) || self.changed(source, run))
            .map(|(source, _)| source.clone())
            .collect();
        for source in stale {
            self.stop(&source, "its lease or registry row changed")
                .await;
        }
        for source in held.intersection(&wanted) {
            if !self.running.contains_key(source) && !shutdown.is_triggered() {
                self.start(source);
            }
        }
        record_streamed(&self.config, self.registry.as_ref(), &mut self.unrecorded).await;
        if let Ok(leases) = self.ownership.leases().await {
            self.owners = leases.into_iter().map(|l| (l.source, l.owner)).collect();
        }
    }

    /// Whether the tenant's registry row is no longer the one its reader
    /// was started from.
    fn changed(&self, source: &str, run: &Running) -> bool {
        let now = self.tenants.as_ref().and_then(|t| t.get(source));
        run.tenant.is_some() && run.tenant.as_ref() != now
    }

    fn start(&mut self, source: &str) {
        let (spec, tenant) = if source == LANDLORD_SOURCE {
            match landlord_spec(
                &self.config,
                &self.directory,
                &self.key,
                self.ownership.lease_view(),
            ) {
                Ok(spec) => (spec, None),
                Err(error) => return warn!(%error, "cannot start the landlord reader"),
            }
        } else {
            let Some(tenant) = self.tenants.as_ref().and_then(|t| t.get(source)) else {
                return;
            };
            info!(tenant = %tenant.id, database = %tenant.database_name, "starting reader");
            (
                tenant_spec(&self.config, &self.key, tenant, self.ownership.lease_view()),
                Some(tenant.clone()),
            )
        };
        let (trigger, shutdown) = shutdown::channel();
        let handle = tokio::spawn(supervise(
            spec,
            Arc::clone(&self.config),
            self.producer.clone(),
            shutdown,
        ));
        self.unrecorded.extend(tenant.clone());
        let run = Running {
            tenant,
            trigger,
            handle,
        };
        self.running.insert(source.to_string(), run);
    }

    async fn stop(&mut self, source: &str, why: &str) {
        let Some(run) = self.running.remove(source) else {
            return;
        };
        info!(source, why, "stopping reader");
        run.trigger.trigger();
        // A reader busy starting (connecting, a snapshot) may not look at
        // its trigger for a while; a lease passes on regardless.
        let mut handle = run.handle;
        let limit = self.config.instances.lease / 4;
        if tokio::time::timeout(limit, &mut handle).await.is_err() {
            warn!(source, "the reader did not stop in time; aborting it");
            handle.abort();
            let _ = handle.await;
        }
        let template = &self.config.tenants.connection_template;
        let now = self.tenants.as_ref().and_then(|t| t.get(source));
        if let (Some(old), Some(now)) = (&run.tenant, now) {
            if now.dsn(template) != old.dsn(template) {
                drop_old_slot(&self.config, old).await;
            }
        }
    }

    async fn stop_all(&mut self, why: &str) {
        let sources: Vec<String> = self.running.keys().cloned().collect();
        for run in self.running.values() {
            run.trigger.trigger();
        }
        for source in sources {
            self.stop(&source, why).await;
        }
    }
}

async fn poll_registry(
    config: &Config,
    registry: &mut Option<tokio_postgres::Client>,
) -> Result<Vec<Tenant>, crate::postgres::DbError> {
    let client = match registry.take().filter(|c| !c.is_closed()) {
        Some(client) => client,
        None => crate::postgres::connect(&config.landlord.dsn, "landlord").await?,
    };
    let tenants = load_tenants(&client, config).await?;
    *registry = Some(client);
    Ok(tenants)
}

fn landlord_spec(
    config: &Config,
    directory: &TenantDirectory,
    key: &ApplyKey,
    lease_until: LeaseView,
) -> anyhow::Result<SourceSpec> {
    Ok(SourceSpec {
        side: Side::Landlord,
        database: crate::postgres::database_name(&config.landlord.dsn)?,
        dsn: config.landlord.dsn.clone(),
        owner: RowOwner::Landlord(directory.clone()),
        apply_marker: key.marker.clone(),
        lease_until: Some(lease_until),
    })
}

/// Notes in the landlord which tenant databases are streamed, so that
/// `teardown` reaches them even after they leave the registry; what cannot
/// be recorded now is tried again on the next poll.
async fn record_streamed(
    config: &Config,
    landlord: Option<&tokio_postgres::Client>,
    unrecorded: &mut Vec<Tenant>,
) {
    let Some(landlord) = landlord else { return };
    while let Some(tenant) = unrecorded.last() {
        if let Err(error) = record_installed(landlord, config, tenant).await {
            tracing::debug!(%error, "cannot record the streamed database yet");
            return;
        }
        unrecorded.pop();
    }
}

/// A tenant that moved (its registry row now points at another database)
/// leaves a slot behind at the old place, which would hold WAL there
/// forever: drop it (its reader has stopped), or say so loudly. The new
/// place gets a slot and a snapshot of its own, and the applier
/// reconciles the two sides.
async fn drop_old_slot(config: &Config, old: &Tenant) {
    let dsn = old.dsn(&config.tenants.connection_template);
    let slot = slot_name(&config.replication.slot_prefix, &old.database_name);
    let dropped = async {
        let client = connect(&dsn, &old.database_name).await?;
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE slot_name = $1 AND NOT active",
                &[&slot.as_str()],
            )
            .await
            .map_err(|e| DbError::query(&old.database_name, "drop the moved tenant's old slot", e))
    };
    match dropped.await {
        Ok(n) => {
            info!(tenant = %old.id, %slot, old_place = %dsn, dropped = n, "tenant moved; its old slot is gone")
        }
        Err(error) => tracing::error!(
            tenant = %old.id, %slot, old_place = %dsn, %error,
            "tenant moved but its old slot could not be dropped; it holds WAL there until you drop it: SELECT pg_drop_replication_slot('{slot}')"
        ),
    }
}

fn tenant_spec(
    config: &Config,
    key: &ApplyKey,
    tenant: &Tenant,
    lease_until: LeaseView,
) -> SourceSpec {
    SourceSpec {
        side: Side::Tenant,
        database: tenant.database_name.clone(),
        dsn: tenant.dsn(&config.tenants.connection_template),
        owner: RowOwner::Tenant(tenant.tenant_ref()),
        apply_marker: key.marker.clone(),
        lease_until: Some(lease_until),
    }
}
