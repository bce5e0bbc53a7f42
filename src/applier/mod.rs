//! The applier: consumes the change topic and writes each change to the
//! opposite side: a tenant change to that tenant's landlord row, a landlord
//! change to that tenant's own database.
//!
//! ```text
//!  Kafka ─► batch (≤ batch_size, ≤ batch_wait_ms)              (consume)
//!        ─► direction gate, group by target database           (here, routing)
//!        ─► per target: one transaction, LWW per change        (writer, target)
//!        ─► commit Kafka offsets (only now)                    (consume)
//!  between batches: registry, directions, tenant states        (tenants)
//!                   tenants to reconcile                       (reconcile)
//!                   expiring tombstones where safe             (cleanup)
//! ```
//! A crash between a database commit and the offset commit redelivers the
//! batch; the conflict rule makes re-applying a change a no-op (`stale`).
//! Order per tenant holds because a tenant's messages share one partition,
//! a partition's messages are applied in order, and one tenant's changes
//! all go to one target per direction.

mod bulk;
mod cleanup;
mod consume;
pub(crate) mod direct;
mod fanout;
mod pool;
mod reconcile;
mod routing;
mod stall;
mod target;
mod tenants;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message, OwnedMessage};
use tracing::{info, warn};

use crate::config::Config;
use crate::kafka::dead_letter::{DeadLetterError, DeadLetters};
use crate::kafka::KafkaSetupError;
use crate::model::direction::{gate, Gate};
use crate::model::{Envelope, TenantId};
use crate::postgres::registry::{load_tenants, Tenant};
use crate::postgres::{directions, DbError};
use crate::runtime::metrics::{count_events, metrics, EventOutcome};
use crate::runtime::retry::{Backoff, Classify, ErrorClass, FailureLog};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::status::status;
use bulk::apply_group;
pub use pool::TargetPool;
use routing::Target;
use target::TargetError;
use tenants::{TenantState, Tenants};

#[derive(Debug, thiserror::Error)]
pub enum ApplierError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("Kafka consumer failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("writing to {database} failed: {source}")]
    Target {
        database: String,
        source: TargetError,
    },
    #[error("writing to {target} took longer than {seconds} s (applier.target_timeout_secs); its server is silent or overloaded")]
    TargetTimeout { target: String, seconds: f64 },
    #[error("internal: a write was asked of a connection pool opened to read only (no apply key)")]
    ReadOnly,
}

impl Classify for ApplierError {
    fn class(&self) -> ErrorClass {
        match self {
            ApplierError::Setup(_) => ErrorClass::Permanent,
            ApplierError::DeadLetter(_) | ApplierError::Kafka(_) => ErrorClass::Transient,
            ApplierError::Db(e) => e.class(),
            ApplierError::Target { source, .. } => source.class(),
            ApplierError::TargetTimeout { .. } => ErrorClass::Transient,
            ApplierError::ReadOnly => ErrorClass::Permanent,
        }
    }
}

/// Retry waits of a failed batch (see `runtime::retry`).
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The applier's state across batches.
pub struct Applier {
    config: Arc<Config>,
    /// Shared with the blocking reads of the stall check (`stall`).
    consumer: Arc<StreamConsumer>,
    pool: TargetPool,
    tenants: Tenants,
    dead_letters: DeadLetters,
    /// Batch failures, logged once per change of state.
    failures: FailureLog,
    /// When tombstones were last expired (`cleanup`).
    last_cleanup: Option<std::time::Instant>,
    /// Background connection attempts to unreachable tenants (`reconcile`).
    probes: HashMap<TenantId, tokio::task::JoinHandle<bool>>,
    /// Offsets of applied batches, committed without waiting (`consume`).
    offsets: consume::Offsets,
    /// Whether the consumer fetches every partition it holds (`consume`).
    stall: stall::StallCheck,
    /// The tenant states last saved to the landlord (see `reconcile`).
    saved_states: HashMap<TenantId, TenantState>,
}

impl Applier {
    /// An applier writing through `pool` (which must hold the apply key;
    /// the periodic check shares it).
    pub fn new(config: Arc<Config>, pool: TargetPool) -> Result<Self, ApplierError> {
        let consumer = Arc::new(consume::subscribed_consumer(&config)?);
        Ok(Applier {
            pool,
            dead_letters: DeadLetters::new(&config.kafka)?,
            tenants: Tenants::new(config.sync.default_direction),
            config,
            consumer,
            failures: FailureLog::default(),
            last_cleanup: None,
            probes: HashMap::new(),
            offsets: consume::Offsets::default(),
            stall: stall::StallCheck::default(),
            saved_states: HashMap::new(),
        })
    }

    /// Runs until shutdown; transient failures are retried in place.
    pub async fn run(mut self, mut shutdown: Shutdown) -> Result<(), ApplierError> {
        info!(topic = %self.config.kafka.topic, group = %self.config.kafka.consumer_group, "applier started");
        loop {
            let batch = tokio::select! {
                batch = self.next_batch() => batch?,
                _ = shutdown.wait() => break,
            };
            self.apply_until_done(&batch, &mut shutdown).await?;
            if shutdown.is_triggered() {
                break;
            }
            self.check_for_stall().await;
        }
        self.flush_offsets();
        info!("applier stopped cleanly");
        Ok(())
    }

    /// Applies a batch, retrying transient failures with backoff, then
    /// commits the offsets. Returns early (without committing) on shutdown.
    async fn apply_until_done(
        &mut self,
        batch: &[OwnedMessage],
        shutdown: &mut Shutdown,
    ) -> Result<(), ApplierError> {
        let started = std::time::Instant::now();
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            let error = match self.apply_batch(batch).await {
                Ok(()) => break,
                Err(error) => error,
            };
            let class = error.class();
            let wait = backoff.after(class);
            metrics().batch_failures.inc();
            self.stall.start_afresh();
            self.failures
                .failed("applying a batch", class, &error, wait);
            self.pool.clear();
            self.tenants.mark_stale();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => return Ok(()),
            }
        }
        self.failures.recovered("applying a batch");
        let applied = started.elapsed();
        self.commit_offsets(batch)?;
        if !batch.is_empty() {
            let m = &metrics().batches;
            m.size.observe(batch.len() as f64);
            m.apply_seconds.observe(started.elapsed().as_secs_f64());
            tracing::debug!(
                messages = batch.len(),
                applied_ms = applied.as_secs_f64() * 1e3,
                committed_ms = (started.elapsed() - applied).as_secs_f64() * 1e3,
                "batch done"
            );
        }
        Ok(())
    }

    async fn apply_batch(&mut self, batch: &[OwnedMessage]) -> Result<(), ApplierError> {
        self.refresh(batch.is_empty()).await?;
        let mut decoded: Vec<(&OwnedMessage, Envelope)> = Vec::with_capacity(batch.len());
        for message in batch {
            match Envelope::from_json(message.payload().unwrap_or_default()) {
                Ok(envelope) => decoded.push((message, envelope)),
                Err(error) => self.dead_letters.send(message, &error.to_string()).await?,
            }
        }
        let registry = &self.tenants.registry;
        if decoded
            .iter()
            .any(|(_, e)| !registry.contains_key(&e.tenant.id))
        {
            self.refresh(true).await?;
        }
        let mut tenant_groups = Vec::new();
        let started = std::time::Instant::now();
        for (target, items) in self.group_by_target(&decoded) {
            match target {
                Target::Landlord => self.apply_to_landlord(items).await?,
                Target::Tenant(_) => tenant_groups.push((target, items)),
            }
        }
        let landlord = started.elapsed();
        let targets = tenant_groups.len();
        self.apply_to_tenants(tenant_groups).await?;
        if !batch.is_empty() {
            tracing::debug!(
                landlord_ms = landlord.as_secs_f64() * 1e3,
                tenants_ms = (started.elapsed() - landlord).as_secs_f64() * 1e3,
                targets,
                "batch written"
            );
        }
        // Before the offsets of the changes an unreachable tenant skipped
        // are committed, its state is on the landlord.
        self.save_states().await?;
        self.pool.close_idle(self.config.applier.idle_connection);
        self.tenants.publish();
        Ok(())
    }

    /// The changes each target receives, in batch order; changes the
    /// tenant's direction excludes are counted and dropped here.
    fn group_by_target<'m>(
        &self,
        decoded: &'m [(&'m OwnedMessage, Envelope)],
    ) -> BTreeMap<Target, Vec<(&'m OwnedMessage, &'m Envelope)>> {
        let mut groups: BTreeMap<Target, Vec<(&OwnedMessage, &Envelope)>> = BTreeMap::new();
        for (message, envelope) in decoded {
            let direction = self.tenants.directions.of(&envelope.tenant.id);
            match gate(direction, envelope.origin.side) {
                Gate::Apply => groups
                    .entry(Target::of(envelope))
                    .or_default()
                    .push((message, envelope)),
                Gate::Paused => count_events(EventOutcome::Paused, 1),
                Gate::DirectionOff => count_events(EventOutcome::DirectionOff, 1),
            }
        }
        groups
    }

    /// The landlord's share of a batch, in order. Its failure fails the
    /// batch (retried until the landlord is back): every tenant's changes
    /// need it.
    async fn apply_to_landlord(
        &mut self,
        items: Vec<(&OwnedMessage, &Envelope)>,
    ) -> Result<(), ApplierError> {
        let envelopes: Vec<&Envelope> = items.iter().map(|(_, e)| *e).collect();
        let applied = apply_group(
            &self.pool,
            &self.tenants.registry,
            &Target::Landlord,
            &envelopes,
        )
        .await?;
        if applied.columns_appeared {
            self.columns_appeared(&Target::Landlord);
        }
        for (index, reason) in applied.rejected {
            self.dead_letters.send(items[index].0, &reason).await?;
        }
        Ok(())
    }

    /// A tenant database that cannot be reached delays that tenant only: its
    /// changes are skipped (not held in memory) and the tenant is reconciled
    /// from both sides' current state once it answers again, which brings
    /// every skipped change. The landlord is different: its outage fails
    /// the batch, which is retried until the landlord is back.
    fn defer_tenant(&mut self, id: &TenantId, skipped: usize, error: &ApplierError) {
        warn!(tenant = %id, %error, "tenant database unreachable; its changes wait for a reconcile when it is back");
        self.pool.drop_target(&Target::Tenant(id.clone()));
        self.tenants.mark_unreachable(id);
        status().applier_failed(id, &error.to_string());
        set_target_up(&self.tenants.registry, id, false);
        count_events(EventOutcome::Deferred, skipped as u64);
    }

    /// The target gained a column that changes had been carrying: rows
    /// applied before lack its values, so the tenants whose rows live there
    /// are reconciled (the same versions again, now with the new column).
    fn columns_appeared(&mut self, target: &Target) {
        info!(
            ?target,
            "the target gained a synced column; reconciling to carry existing values over"
        );
        match target {
            Target::Landlord => self.tenants.mark_all_pending(),
            Target::Tenant(id) => self.tenants.mark_pending(id),
        }
    }

    /// Re-reads registry and directions when the interval passed (or
    /// `force`), and reconciles the tenants that need it.
    async fn refresh(&mut self, force: bool) -> Result<(), ApplierError> {
        let interval = self.config.tenants.rediscover_interval;
        if !force && !self.tenants.read_due(interval) {
            return Ok(());
        }
        let config = &self.config;
        let (registry, directions) = self
            .pool
            .with(&Target::Landlord, &self.tenants.registry, async |db| {
                let registry = load_tenants(&db.client, config).await?;
                Ok::<_, DbError>((registry, directions::load(&db.client, config).await?))
            })
            .await?;
        let first_read = self.tenants.never_read();
        publish_registry(config, &registry, &directions);
        let changed = self.tenants.update(registry, directions);
        if !changed.is_empty() && !first_read {
            info!(tenants = ?changed, "tenants joined, moved or changed direction; reconciling both sides");
        }
        for id in &changed {
            // A moved tenant's pooled connection points at the old place.
            self.pool.drop_target(&Target::Tenant(id.clone()));
        }
        self.adopt_states().await?;
        self.recheck_missing_columns().await;
        self.reconcile_pending().await;
        self.expire_tombstones_if_due().await;
        Ok(())
    }

    /// A column that changes carried and a target lacked may have been
    /// added there since (and no change may come to notice it): read such
    /// targets' columns again, and reconcile where one appeared.
    async fn recheck_missing_columns(&mut self) {
        for target in self
            .pool
            .with_missing_columns(writer::SCHEMA_RECHECK_INTERVAL)
        {
            let config = &self.config;
            let recheck = self
                .pool
                .with(&target, &self.tenants.registry, async |db| {
                    writer::recheck_missing_columns(db, config, target.side()).await
                })
                .await;
            match recheck {
                Ok(true) => self.columns_appeared(&target),
                Ok(false) => {}
                Err(error) => warn!(?target, %error, "re-reading the target's columns failed"),
            }
        }
    }
}

/// The registry and directions as read, on the status board.
fn publish_registry(
    config: &Config,
    registry: &[Tenant],
    directions: &crate::model::direction::Directions,
) {
    let template = &config.tenants.connection_template;
    status().set_tenants(crate::postgres::registry::status_entries(
        registry, template,
    ));
    status().set_directions(directions);
}

fn set_target_up(registry: &HashMap<TenantId, Tenant>, id: &TenantId, up: bool) {
    if let Some(tenant) = registry.get(id) {
        metrics()
            .target_up
            .with_label_values(&[tenant.database_name.as_str()])
            .set(i64::from(up));
    }
}
