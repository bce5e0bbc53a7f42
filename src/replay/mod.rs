//! Replay and backfill: the change topic as the history of every row.
//!
//! ```text
//!  replay:   topic (from the beginning or a time, to the end at start;
//!            a throwaway consumer, no offsets committed)
//!            ─► filters (--to, --tenant, direction) ─► DirectWriter (LWW)
//!  backfill: one side's current rows ─► topic, as snapshot events
//! ```
//! Replaying goes through the applier's own write path, so it is
//! idempotent and never replaces a newer row.

pub mod backfill;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{Message, OwnedMessage};
use serde::Serialize;
use tracing::warn;

use crate::applier::direct::{DirectWriter, Target, TargetPool};
use crate::config::Config;
use crate::kafka::dead_letter::{DeadLetterError, DeadLetters};
use crate::kafka::range::{StartAt, TopicRange};
use crate::kafka::KafkaSetupError;
use crate::model::direction::{gate, Directions, Gate};
use crate::model::{Envelope, Side, TenantId};
use crate::postgres::bridge_schema::load_apply_key;
use crate::postgres::registry::{load_tenants, select_tenants};
use crate::postgres::{connect, directions, DbError};

/// Messages applied per round (grouped by target database).
const BATCH: usize = 20_000;

/// A stretch that yields nothing for this long has stopped short of the
/// end it had at the start (a broker problem): the replay fails.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Which side receives the replayed changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayTo {
    /// Tenant changes are applied to the landlord.
    Landlord,
    /// Landlord changes are applied to the tenants.
    Tenant,
    Both,
}

impl ReplayTo {
    fn takes(self, origin: Side) -> bool {
        match self {
            ReplayTo::Landlord => origin == Side::Tenant,
            ReplayTo::Tenant => origin == Side::Landlord,
            ReplayTo::Both => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub to: ReplayTo,
    /// Registry ids; empty: every tenant.
    pub tenants: Vec<String>,
    pub start: StartAt,
}

/// What a replay did, message by message.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReplaySummary {
    pub read: u64,
    pub applied: u64,
    /// The target already held this version or a newer one.
    pub stale: u64,
    /// The tenant's direction (or `paused`) excludes the change.
    pub skipped_by_direction: u64,
    /// Another direction or tenant than asked, or a tenant no longer in
    /// the registry.
    pub skipped_by_filter: u64,
    pub dead_lettered: u64,
    /// Changes for tenant databases that could not be written (retry the
    /// replay for those tenants when they are back).
    pub failed: u64,
}

impl ReplaySummary {
    pub fn line(&self) -> String {
        format!(
            "replayed {} messages: applied {}, stale {}, skipped by direction {}, skipped by filter {}, dead-lettered {}, failed {}",
            self.read, self.applied, self.stale, self.skipped_by_direction, self.skipped_by_filter, self.dead_lettered, self.failed
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("reading the change topic failed: {0}")]
    Read(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("tenant {0} is not in the registry (tenants.registry_query)")]
    UnknownTenant(String),
    #[error("the topic yielded nothing for {0} s before reaching the end it had at the start; check the brokers and run the replay again (it is idempotent)")]
    Stalled(u64),
    #[error("writing to the landlord failed: {0}")]
    Landlord(String),
}

/// Replays the topic stretch; `progress` hears (done, total) messages.
pub async fn replay(
    config: Arc<Config>,
    options: &ReplayOptions,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<ReplaySummary, ReplayError> {
    let landlord = connect(&config.landlord.dsn, "landlord").await?;
    let tenants = load_tenants(&landlord, &config).await?;
    let chosen = select_tenants(tenants.clone(), &options.tenants)
        .map_err(ReplayError::UnknownTenant)?
        .into_iter()
        .map(|t| t.id)
        .collect();
    let directions = directions::load(&landlord, &config).await?;
    let key = load_apply_key(&landlord, &config).await?;
    let mut run = Replay {
        writer: DirectWriter::new(TargetPool::new(Arc::clone(&config), Some(key)), &tenants),
        dead_letters: DeadLetters::new(&config.kafka)?,
        chosen,
        directions,
        options: options.clone(),
        summary: ReplaySummary::default(),
    };
    let mut range = TopicRange::open(&config.kafka, &config.kafka.topic, options.start)?;
    let total = range.total;
    let mut last_progress = Instant::now();
    while !range.is_done() {
        let batch = range.next_batch(BATCH, Duration::from_secs(1)).await?;
        if batch.is_empty() {
            if last_progress.elapsed() > STALL_LIMIT {
                return Err(ReplayError::Stalled(STALL_LIMIT.as_secs()));
            }
            continue;
        }
        last_progress = Instant::now();
        run.apply(&batch).await?;
        progress(run.summary.read, total);
    }
    Ok(run.summary)
}

struct Replay {
    writer: DirectWriter,
    dead_letters: DeadLetters,
    /// The tenants asked for (all registered ones by default).
    chosen: HashSet<TenantId>,
    directions: Directions,
    options: ReplayOptions,
    summary: ReplaySummary,
}

impl Replay {
    /// Applies one batch: per target database, in topic order.
    async fn apply(&mut self, batch: &[OwnedMessage]) -> Result<(), ReplayError> {
        let mut groups: BTreeMap<Target, Vec<(&OwnedMessage, Envelope)>> = BTreeMap::new();
        for message in batch {
            self.summary.read += 1;
            let envelope = match Envelope::from_json(message.payload().unwrap_or_default()) {
                Ok(envelope) => envelope,
                Err(error) => {
                    self.dead_letters.send(message, &error.to_string()).await?;
                    self.summary.dead_lettered += 1;
                    continue;
                }
            };
            if self.wanted(&envelope) {
                groups
                    .entry(Target::of(&envelope))
                    .or_default()
                    .push((message, envelope));
            }
        }
        for (target, items) in groups {
            self.write(&target, &items).await?;
        }
        Ok(())
    }

    /// Whether the change is asked for and its tenant's direction carries it.
    fn wanted(&mut self, envelope: &Envelope) -> bool {
        let tenant = &envelope.tenant.id;
        let asked = self.options.to.takes(envelope.origin.side) && self.chosen.contains(tenant);
        if !asked {
            self.summary.skipped_by_filter += 1;
            return false;
        }
        match gate(self.directions.of(tenant), envelope.origin.side) {
            Gate::Apply => true,
            Gate::Paused | Gate::DirectionOff => {
                self.summary.skipped_by_direction += 1;
                false
            }
        }
    }

    async fn write(
        &mut self,
        target: &Target,
        items: &[(&OwnedMessage, Envelope)],
    ) -> Result<(), ReplayError> {
        let envelopes: Vec<&Envelope> = items.iter().map(|(_, e)| e).collect();
        // The writer's pool keeps at most `applier.max_connections` open
        // however many tenants the replay touches.
        let written = self.writer.write(target, &envelopes).await;
        match written {
            Ok(written) => {
                self.summary.applied += written.applied;
                self.summary.stale += written.stale;
                for (index, reason) in written.rejected {
                    self.dead_letters.send(items[index].0, &reason).await?;
                    self.summary.dead_lettered += 1;
                }
                Ok(())
            }
            Err(error) if *target == Target::Landlord => {
                Err(ReplayError::Landlord(error.to_string()))
            }
            Err(error) => {
                warn!(?target, %error, "tenant database could not be written; replay that tenant again when it is back");
                self.summary.failed += items.len() as u64;
                Ok(())
            }
        }
    }
}
