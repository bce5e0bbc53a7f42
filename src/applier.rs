//! The applier: consumes the change topic and writes each change to the
//! opposite side (today: tenant changes to the tenant's landlord row).
//!
//! ```text
//!  Kafka ─► batch (≤ batch_size, ≤ batch_wait_ms) ─► BEGIN on the target
//!        ─► per message: SAVEPOINT, upsert/delete, RELEASE (a message that
//!           can never apply is rolled back alone, logged and counted)
//!        ─► COMMIT ─► commit Kafka offsets (only now)
//! ```
//! A crash between the database commit and the offset commit redelivers the
//! batch; re-applying a change the target already has is harmless. Order
//! per tenant holds because a tenant's messages share one partition and a
//! partition's messages are applied in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres::Client;
use tracing::{error, info, warn};

use crate::config::{Config, TableConfig};
use crate::envelope::{Envelope, Side};
use crate::kafka::{self, KafkaSetupError};
use crate::metrics::metrics;
use crate::postgres::{connect, table_columns, DbError};
use crate::registry::{load_tenants, Tenant};
use crate::shutdown::Shutdown;
use crate::target::{LandlordRow, TargetError, TargetTable};

#[derive(Debug, thiserror::Error)]
pub enum ApplierError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("Kafka consumer failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("writing to {database} failed: {source}")]
    Target {
        database: String,
        source: TargetError,
    },
}

/// A connection to one target database and the tables known there.
struct TargetDb {
    client: Client,
    tables: HashMap<String, TargetTable>,
    last_used: Instant,
}

/// The applier's state across batches.
pub struct Applier {
    config: Arc<Config>,
    consumer: StreamConsumer,
    landlord: Option<TargetDb>,
    tenants: HashMap<String, Tenant>,
    registry_loaded: Option<Instant>,
}

impl Applier {
    pub fn new(config: Arc<Config>) -> Result<Self, ApplierError> {
        let consumer = kafka::consumer(&config.kafka)?;
        consumer.subscribe(&[config.kafka.topic.as_str()])?;
        Ok(Applier {
            config,
            consumer,
            landlord: None,
            tenants: HashMap::new(),
            registry_loaded: None,
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
        }
        info!("applier stopped cleanly");
        Ok(())
    }

    async fn next_batch(&self) -> Result<Vec<OwnedMessage>, ApplierError> {
        let first = self.consumer.recv().await?.detach();
        let mut batch = vec![first];
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.applier.batch_wait_ms);
        while batch.len() < self.config.applier.batch_size {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(message) => batch.push(message?.detach()),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Applies a batch, retrying transient failures with backoff, then
    /// commits the offsets. Returns early (without committing) on shutdown.
    async fn apply_until_done(
        &mut self,
        batch: &[OwnedMessage],
        shutdown: &mut Shutdown,
    ) -> Result<(), ApplierError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.apply_batch(batch).await {
                Ok(()) => break,
                Err(error) => {
                    warn!(%error, retry_in = ?backoff, "applying a batch failed; retrying");
                    self.landlord = None;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        self.commit_offsets(batch)
    }

    fn commit_offsets(&self, batch: &[OwnedMessage]) -> Result<(), ApplierError> {
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in batch {
            let entry = next
                .entry((m.topic().to_string(), m.partition()))
                .or_insert(0);
            *entry = (*entry).max(m.offset() + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            list.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Sync) {
            // The batch is in the database; a lost offset commit only means
            // redelivery after a rebalance, which is harmless.
            warn!(%error, "committing Kafka offsets failed; the batch may be redelivered");
        }
        Ok(())
    }

    async fn apply_batch(&mut self, batch: &[OwnedMessage]) -> Result<(), ApplierError> {
        let envelopes: Vec<(usize, Envelope)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, m)| decode(m).map(|e| (i, e)))
            .collect();
        let for_landlord: Vec<&Envelope> = envelopes
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.origin.side == Side::Tenant)
            .collect();
        let skipped = envelopes.len() - for_landlord.len();
        metrics()
            .events_applied
            .with_label_values(&["skipped"])
            .inc_by(skipped as u64);
        if for_landlord.is_empty() {
            return Ok(());
        }
        self.refresh_registry_if_needed(&for_landlord).await?;
        self.apply_to_landlord(&for_landlord).await
    }

    async fn refresh_registry_if_needed(
        &mut self,
        envelopes: &[&Envelope],
    ) -> Result<(), ApplierError> {
        let stale = self.registry_loaded.is_none_or(|at| {
            at.elapsed() > Duration::from_secs(self.config.tenants.rediscover_interval_secs)
        });
        let unknown = envelopes
            .iter()
            .any(|e| !self.tenants.contains_key(&e.tenant.id));
        if stale || unknown {
            self.tenants = load_tenants(&self.config)
                .await?
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect();
            self.registry_loaded = Some(Instant::now());
        }
        Ok(())
    }

    async fn landlord(&mut self) -> Result<&mut TargetDb, ApplierError> {
        let idle = Duration::from_secs(self.config.applier.idle_connection_secs);
        if self
            .landlord
            .as_ref()
            .is_some_and(|db| db.client.is_closed() || db.last_used.elapsed() > idle)
        {
            self.landlord = None;
        }
        if self.landlord.is_none() {
            let client = connect(&self.config.landlord.dsn, "landlord").await?;
            self.landlord = Some(TargetDb {
                client,
                tables: HashMap::new(),
                last_used: Instant::now(),
            });
        }
        let db = self.landlord.as_mut().expect("just set");
        db.last_used = Instant::now();
        Ok(db)
    }

    async fn apply_to_landlord(&mut self, envelopes: &[&Envelope]) -> Result<(), ApplierError> {
        let config = Arc::clone(&self.config);
        let empty = BTreeMap::new();
        let registries: Vec<BTreeMap<String, Option<String>>> = envelopes
            .iter()
            .map(|e| {
                self.tenants
                    .get(&e.tenant.id)
                    .map(|t| t.fields.clone())
                    .unwrap_or_else(|| empty.clone())
            })
            .collect();
        let db = self.landlord().await?;
        let target_err = |source| ApplierError::Target {
            database: "landlord".into(),
            source,
        };
        let tx = db
            .client
            .transaction()
            .await
            .map_err(|e| target_err(e.into()))?;
        let mut applied = 0u64;
        let mut failed = 0u64;
        for (envelope, registry) in envelopes.iter().zip(&registries) {
            let Some(table) = config.table(&envelope.table) else {
                warn!(table = %envelope.table, "message for a table that is not configured; skipped");
                continue;
            };
            let target = target_table(&mut db.tables, &tx, table).await?;
            tx.batch_execute("SAVEPOINT change")
                .await
                .map_err(|e| target_err(e.into()))?;
            let row = LandlordRow {
                table,
                envelope,
                registry,
            };
            match target.apply_landlord(&tx, &row).await {
                Ok(()) => applied += 1,
                Err(e) if e.is_transient() => return Err(target_err(e)),
                Err(e) => {
                    failed += 1;
                    error!(tenant = %envelope.tenant.id, table = %envelope.table, error = %e, "change cannot be applied; skipped");
                    tx.batch_execute("ROLLBACK TO SAVEPOINT change")
                        .await
                        .map_err(|e| target_err(e.into()))?;
                    continue;
                }
            }
            tx.batch_execute("RELEASE SAVEPOINT change")
                .await
                .map_err(|e| target_err(e.into()))?;
        }
        tx.commit().await.map_err(|e| target_err(e.into()))?;
        record_applied(envelopes, applied, failed);
        Ok(())
    }
}

async fn target_table<'t>(
    tables: &'t mut HashMap<String, TargetTable>,
    client: &impl tokio_postgres::GenericClient,
    table: &TableConfig,
) -> Result<&'t mut TargetTable, ApplierError> {
    let name = table.landlord_table();
    if !tables.contains_key(name) {
        let columns = table_columns(client.client(), "landlord", name).await?;
        tables.insert(name.to_string(), TargetTable::new(name, columns));
    }
    Ok(tables.get_mut(name).expect("just inserted"))
}

fn decode(message: &OwnedMessage) -> Option<Envelope> {
    let payload = message.payload().unwrap_or_default();
    match Envelope::from_json(payload) {
        Ok(envelope) => Some(envelope),
        Err(error) => {
            metrics()
                .events_applied
                .with_label_values(&["failed"])
                .inc();
            error!(partition = message.partition(), offset = message.offset(), %error, "undecodable message skipped");
            None
        }
    }
}

fn record_applied(envelopes: &[&Envelope], applied: u64, failed: u64) {
    let m = metrics();
    m.events_applied
        .with_label_values(&["applied"])
        .inc_by(applied);
    m.events_applied
        .with_label_values(&["failed"])
        .inc_by(failed);
    let now = SystemTime::now();
    for envelope in envelopes {
        let committed = envelope
            .origin
            .commit_ts
            .as_deref()
            .and_then(|ts| humantime::parse_rfc3339(ts).ok());
        if let Some(latency) = committed.and_then(|c| now.duration_since(c).ok()) {
            m.end_to_end_seconds.observe(latency.as_secs_f64());
        }
    }
}
