//! The applier: consumes the change topic and writes each change to the
//! opposite side: a tenant change to that tenant's landlord row, a landlord
//! change to that tenant's own database.
//!
//! ```text
//!  Kafka ─► batch (≤ batch_size, ≤ batch_wait_ms) ─► group by target database
//!        ─► per target: BEGIN; apply marker (loop_guard); per message:
//!           direction gate ─► SAVEPOINT ─► LWW upsert/delete ─► RELEASE; COMMIT
//!        ─► commit Kafka offsets (only now)
//! ```
//! A crash between a database commit and the offset commit redelivers the
//! batch; the conflict rule makes re-applying a change a no-op (`stale`).
//! Order per tenant holds because a tenant's messages share one partition,
//! a partition's messages are applied in order, and one tenant's changes
//! all go to one target per direction.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres::Client;
use tracing::{error, info, warn};

use crate::config::{Config, Secret, TableConfig};
use crate::dead_letter::{DeadLetterError, DeadLetters};
use crate::direction::{self, gate, Directions, Gate};
use crate::envelope::{Envelope, Op, Side};
use crate::kafka::{self, KafkaSetupError};
use crate::loop_guard::APPLY_TRANSACTION_PREAMBLE;
use crate::metrics::metrics;
use crate::postgres::{connect, table_columns, DbError};
use crate::reconcile::current_state;
use crate::registry::{load_tenants, Tenant};
use crate::setup::side_table;
use crate::shutdown::Shutdown;
use crate::target::{Change, ColumnText, Outcome, TargetError, TargetTable};

/// Version given to a change that carries none (from a table without the
/// bridge's columns): older than any real write.
const NO_VERSION: &str = "1970-01-01 00:00:00+00";

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
}

/// Which database a change is written to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TargetDbKey {
    Landlord,
    /// A tenant database, by tenant id.
    Tenant(String),
}

/// A connection to one target database and the tables known there.
struct TargetDb {
    label: String,
    client: Client,
    tables: HashMap<String, TargetTable>,
    last_used: Instant,
}

/// The applier's state across batches.
pub struct Applier {
    config: Arc<Config>,
    consumer: StreamConsumer,
    pool: HashMap<TargetDbKey, TargetDb>,
    tenants: HashMap<String, Tenant>,
    directions: Directions,
    refreshed: Option<Instant>,
    /// Tenants whose two sides must be reconciled (resumed, direction
    /// changed, or joined while running); retried until it succeeds.
    pending_reconcile: BTreeSet<String>,
    /// Tenants whose database failed; skipped until reconciled.
    unreachable: BTreeSet<String>,
    dead_letters: DeadLetters,
    /// Registry and directions were read at least once (changes are
    /// detected against the previous read from then on).
    loaded: bool,
}

impl Applier {
    pub fn new(config: Arc<Config>) -> Result<Self, ApplierError> {
        let consumer = kafka::consumer(&config.kafka)?;
        let dead_letters_config = config.kafka.clone();
        consumer.subscribe(&[config.kafka.topic.as_str()])?;
        let directions = Directions::new(config.sync.default_direction, HashMap::new());
        Ok(Applier {
            config,
            consumer,
            pool: HashMap::new(),
            tenants: HashMap::new(),
            directions,
            refreshed: None,
            pending_reconcile: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            dead_letters: DeadLetters::new(&dead_letters_config)?,
            loaded: false,
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

    /// The next messages; empty when none came within the refresh interval
    /// (so registry and direction changes are noticed on an idle topic).
    async fn next_batch(&self) -> Result<Vec<OwnedMessage>, ApplierError> {
        let idle = Duration::from_secs(self.config.tenants.rediscover_interval_secs);
        let first = match tokio::time::timeout(idle, self.consumer.recv()).await {
            Ok(Ok(message)) => message.detach(),
            Ok(Err(error)) => return consumer_trouble(error).await,
            Err(_) => return Ok(Vec::new()),
        };
        let mut batch = vec![first];
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.applier.batch_wait_ms);
        while batch.len() < self.config.applier.batch_size {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                // What was received so far is applied; the error shows again.
                Ok(Err(_)) | Err(_) => break,
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
                    self.pool.clear();
                    self.refreshed = None;
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
        if batch.is_empty() {
            return Ok(());
        }
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
            // The batch is in the databases; a lost offset commit only means
            // redelivery, which the conflict rule makes harmless.
            warn!(%error, "committing Kafka offsets failed; the batch may be redelivered");
        }
        Ok(())
    }

    async fn apply_batch(&mut self, batch: &[OwnedMessage]) -> Result<(), ApplierError> {
        self.refresh_if_due(batch.is_empty()).await?;
        let mut decoded: Vec<(&OwnedMessage, Envelope)> = Vec::with_capacity(batch.len());
        for message in batch {
            match Envelope::from_json(message.payload().unwrap_or_default()) {
                Ok(envelope) => decoded.push((message, envelope)),
                Err(error) => self.dead_letters.send(message, &error.to_string()).await?,
            }
        }
        if decoded
            .iter()
            .any(|(_, e)| !self.tenants.contains_key(&e.tenant.id))
        {
            self.refresh_if_due(true).await?;
        }
        let mut groups: BTreeMap<TargetDbKey, Vec<(&OwnedMessage, &Envelope)>> = BTreeMap::new();
        for (message, envelope) in &decoded {
            match gate(
                self.directions.of(&envelope.tenant.id),
                envelope.origin.side,
            ) {
                Gate::Apply => groups
                    .entry(target_of(envelope))
                    .or_default()
                    .push((message, envelope)),
                Gate::Paused => count("paused", 1),
                Gate::DirectionOff => count("direction_off", 1),
            }
        }
        for (target, items) in groups {
            if let TargetDbKey::Tenant(id) = &target {
                if !self.tenants.contains_key(id) {
                    let reason = format!(
                        "tenant {id} is not in the registry (check tenants.registry_query)"
                    );
                    for (message, _) in &items {
                        self.dead_letters.send(message, &reason).await?;
                    }
                    continue;
                }
                if self.unreachable.contains(id) {
                    count("deferred", items.len() as u64);
                    continue;
                }
            }
            let envelopes: Vec<&Envelope> = items.iter().map(|(_, e)| *e).collect();
            match (self.apply_group(target.clone(), &envelopes).await, &target) {
                (Ok(rejected), _) => {
                    for (index, reason) in rejected {
                        self.dead_letters.send(items[index].0, &reason).await?;
                    }
                }
                // Whatever fails on a tenant database as a whole (down,
                // table missing, bridge columns not installed yet) delays
                // that tenant only.
                (Err(error), TargetDbKey::Tenant(id)) => self.defer_tenant(id, items.len(), &error),
                (Err(error), TargetDbKey::Landlord) => return Err(error),
            }
        }
        self.close_idle_connections();
        Ok(())
    }

    /// A tenant database that cannot be reached delays that tenant only: its
    /// changes are skipped (not held in memory) and the tenant is reconciled
    /// from both sides' current state once it answers again, which brings
    /// every skipped change. The landlord is different: its outage fails
    /// the batch, which is retried until the landlord is back.
    fn defer_tenant(&mut self, id: &str, skipped: usize, error: &ApplierError) {
        warn!(tenant = %id, %error, "tenant database unreachable; its changes wait for a reconcile when it is back");
        self.pool.remove(&TargetDbKey::Tenant(id.to_string()));
        self.unreachable.insert(id.to_string());
        self.pending_reconcile.insert(id.to_string());
        set_target_up(&self.tenants, id, false);
        count("deferred", skipped as u64);
    }

    /// Re-reads registry and directions when the interval passed (or
    /// `force`), and reconciles the tenants that need it.
    async fn refresh_if_due(&mut self, force: bool) -> Result<(), ApplierError> {
        let interval = Duration::from_secs(self.config.tenants.rediscover_interval_secs);
        if !force && self.refreshed.is_some_and(|at| at.elapsed() < interval) {
            return Ok(());
        }
        let config = Arc::clone(&self.config);
        let landlord = self.target_db(&TargetDbKey::Landlord).await?;
        let tenants: HashMap<String, Tenant> = load_tenants(&landlord.client, &config)
            .await?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let directions = direction::load(&landlord.client, &config).await?;
        if !self.loaded {
            // Changes skipped while paused (or while this applier was down)
            // are only in the databases: reconcile every tenant once.
            self.pending_reconcile.extend(tenants.keys().cloned());
        } else {
            let joined = tenants.keys().filter(|id| !self.tenants.contains_key(*id));
            let redirected = tenants
                .keys()
                .filter(|id| directions.of(id) != self.directions.of(id));
            let changed: Vec<String> = joined.chain(redirected).cloned().collect();
            if !changed.is_empty() {
                info!(tenants = ?changed, "tenants joined or changed direction; reconciling both sides");
            }
            self.pending_reconcile.extend(changed);
        }
        self.tenants = tenants;
        self.directions = directions;
        self.refreshed = Some(Instant::now());
        self.loaded = true;
        self.reconcile_pending().await;
        Ok(())
    }

    async fn reconcile_pending(&mut self) {
        let pending: Vec<String> = self.pending_reconcile.iter().cloned().collect();
        for id in pending {
            match self.reconcile_tenant(&id).await {
                Ok(()) => {
                    self.pending_reconcile.remove(&id);
                    if self.unreachable.remove(&id) {
                        info!(tenant = %id, "tenant database reachable again; caught up");
                    }
                    set_target_up(&self.tenants, &id, true);
                }
                Err(error) => {
                    warn!(tenant = %id, %error, "reconciling the tenant failed; will retry")
                }
            }
        }
    }

    /// Applies each side's current state to the other, as the tenant's
    /// direction allows; the conflict rule keeps the newer versions.
    async fn reconcile_tenant(&mut self, id: &str) -> Result<(), ApplierError> {
        let Some(tenant) = self.tenants.get(id).cloned() else {
            return Ok(());
        };
        let direction = self.directions.of(id);
        let config = Arc::clone(&self.config);
        let tenant_ref = tenant.tenant_ref();
        let landlord = self.target_db(&TargetDbKey::Landlord).await?;
        let from_landlord = current_state(
            &landlord.client,
            &config,
            Side::Landlord,
            "landlord",
            &tenant_ref,
        )
        .await?;
        let tenant_key = TargetDbKey::Tenant(id.to_string());
        let tenant_db = self.target_db(&tenant_key).await?;
        let from_tenant = current_state(
            &tenant_db.client,
            &config,
            Side::Tenant,
            &tenant.database_name,
            &tenant_ref,
        )
        .await?;
        let mut rejected = Vec::new();
        if gate(direction, Side::Tenant) == Gate::Apply && !from_tenant.is_empty() {
            let envelopes: Vec<&Envelope> = from_tenant.iter().collect();
            rejected.extend(self.apply_group(TargetDbKey::Landlord, &envelopes).await?);
        }
        if gate(direction, Side::Landlord) == Gate::Apply && !from_landlord.is_empty() {
            let envelopes: Vec<&Envelope> = from_landlord.iter().collect();
            rejected.extend(self.apply_group(tenant_key, &envelopes).await?);
        }
        for (_, reason) in rejected {
            // Nothing to dead-letter: the row stays in its source database.
            error!(tenant = %id, %reason, "a row cannot be reconciled; fix it and it syncs on its next change");
        }
        info!(tenant = %id, direction = direction.as_str(), "tenant reconciled");
        Ok(())
    }

    async fn apply_group(
        &mut self,
        target: TargetDbKey,
        envelopes: &[&Envelope],
    ) -> Result<Vec<(usize, String)>, ApplierError> {
        let changes = self.changes_for(&target, envelopes);
        let mut rejected = Vec::new();
        let mut schema_suspect = false;
        let config = Arc::clone(&self.config);
        let db = self.target_db(&target).await?;
        let label = db.label.clone();
        let target_err = |source: TargetError| ApplierError::Target {
            database: label.clone(),
            source,
        };
        let tx = db
            .client
            .transaction()
            .await
            .map_err(|e| target_err(e.into()))?;
        tx.batch_execute(APPLY_TRANSACTION_PREAMBLE)
            .await
            .map_err(|e| target_err(e.into()))?;
        let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
        for (index, (envelope, change)) in envelopes.iter().zip(changes).enumerate() {
            let change = match change {
                Ok(change) => change,
                Err(reason) => {
                    rejected.push((index, reason));
                    continue;
                }
            };
            let Some(table) = config.table(&envelope.table) else {
                rejected.push((
                    index,
                    format!("table {} is not configured on this bridge", envelope.table),
                ));
                continue;
            };
            let side = side_of(&target);
            let mut target_table =
                load_target_table(&mut db.tables, &tx, &config, table, side, &label).await?;
            if note_source_only_columns(&change, target_table, &config, table) {
                // A column only the source had may exist on the target by now.
                db.tables.remove(&table.name);
                target_table =
                    load_target_table(&mut db.tables, &tx, &config, table, side, &label).await?;
            }
            tx.batch_execute("SAVEPOINT change")
                .await
                .map_err(|e| target_err(e.into()))?;
            let change = data_columns_only(change, target_table, &config, table);
            let outcome = match target_table.apply(&tx, &change).await {
                Ok(Outcome::Applied) => "applied",
                Ok(Outcome::Stale) => "stale",
                Err(e) if e.is_transient() => return Err(target_err(e)),
                Err(e) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT change")
                        .await
                        .map_err(|e| target_err(e.into()))?;
                    rejected.push((index, format!("{label}: {e}")));
                    // The table may have changed (a column type, a new
                    // column): read its columns again next time.
                    schema_suspect = true;
                    continue;
                }
            };
            *outcomes.entry(outcome).or_default() += 1;
            tx.batch_execute("RELEASE SAVEPOINT change")
                .await
                .map_err(|e| target_err(e.into()))?;
        }
        tx.commit().await.map_err(|e| target_err(e.into()))?;
        if schema_suspect {
            db.tables.clear();
        }
        for (outcome, n) in outcomes {
            count(outcome, n);
        }
        observe_latency(envelopes);
        Ok(rejected)
    }

    /// Translates envelopes into the target's key and columns; an error
    /// names why one cannot be routed (it goes to the dead-letter topic).
    fn changes_for(
        &self,
        target: &TargetDbKey,
        envelopes: &[&Envelope],
    ) -> Vec<Result<Change, String>> {
        envelopes
            .iter()
            .map(|e| {
                let Some(table) = self.config.table(&e.table) else {
                    return Ok(change_from(e, Vec::new()));
                };
                let unknown = || {
                    format!(
                        "tenant {} is not in the registry (check tenants.registry_query)",
                        e.tenant.id
                    )
                };
                let key = match target {
                    TargetDbKey::Landlord => self.landlord_key(e, table).ok_or_else(unknown)?,
                    TargetDbKey::Tenant(id) => {
                        self.tenants.get(id).ok_or_else(unknown)?;
                        let values = table.tenant_row_key_value.iter().cloned().map(Some);
                        table.tenant_row_key.iter().cloned().zip(values).collect()
                    }
                };
                Ok(change_from(e, key))
            })
            .collect()
    }

    /// Landlord key and registry-filled columns (the latter set on upsert).
    fn landlord_key(&self, envelope: &Envelope, table: &TableConfig) -> Option<Vec<ColumnText>> {
        let mut key = vec![(
            table.landlord_tenant_key.clone(),
            Some(envelope.tenant.id.clone()),
        )];
        let fields = self.tenants.get(&envelope.tenant.id).map(|t| &t.fields);
        for (column, field) in &table.landlord_registry_columns {
            let value = match (fields.and_then(|f| f.get(field)), field.as_str()) {
                (Some(value), _) => value.clone(),
                (None, "id") => Some(envelope.tenant.id.clone()),
                (None, "slug") => Some(envelope.tenant.slug.clone()),
                (None, _) => return None,
            };
            key.push((column.clone(), value));
        }
        Some(key)
    }

    async fn target_db(&mut self, key: &TargetDbKey) -> Result<&mut TargetDb, ApplierError> {
        if self.pool.get(key).is_some_and(|db| db.client.is_closed()) {
            self.pool.remove(key);
        }
        let db = match self.pool.entry(key.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let (label, dsn) = dsn_of(&self.config, &self.tenants, key)?;
                let client = connect(&dsn, &label).await?;
                entry.insert(TargetDb {
                    label,
                    client,
                    tables: HashMap::new(),
                    last_used: Instant::now(),
                })
            }
        };
        db.last_used = Instant::now();
        Ok(db)
    }

    fn close_idle_connections(&mut self) {
        let idle = Duration::from_secs(self.config.applier.idle_connection_secs);
        self.pool
            .retain(|key, db| *key == TargetDbKey::Landlord || db.last_used.elapsed() < idle);
    }
}

/// Label and DSN of a target database.
fn dsn_of(
    config: &Config,
    tenants: &HashMap<String, Tenant>,
    key: &TargetDbKey,
) -> Result<(String, Secret), ApplierError> {
    match key {
        TargetDbKey::Landlord => Ok(("landlord".to_string(), config.landlord.dsn.clone())),
        TargetDbKey::Tenant(id) => {
            let tenant = tenants
                .get(id)
                .ok_or_else(|| DbError::Registry(format!("tenant {id} is not in the registry")))?;
            Ok((
                tenant.database_name.clone(),
                tenant.dsn(&config.tenants.connection_template),
            ))
        }
    }
}

/// The change's key plus its data columns (all of them; the target's
/// columns filter them later).
fn change_from(envelope: &Envelope, key: Vec<ColumnText>) -> Change {
    let columns = envelope
        .columns
        .iter()
        .filter(|(_, value)| !value.unchanged)
        .map(|(name, value)| (name.clone(), value.value.clone()))
        .collect();
    Change {
        key,
        columns,
        version: envelope
            .version
            .clone()
            .unwrap_or_else(|| NO_VERSION.to_string()),
        // The side that wrote the version, which is what the tie-break compares.
        side: envelope
            .source
            .unwrap_or(envelope.origin.side)
            .as_str()
            .to_string(),
        is_delete: envelope.op == Op::Delete,
    }
}

/// Keeps the columns the target has and that carry data. The registry
/// columns of a landlord key move from the key to the columns here.
/// Schema drift: a column only the source has is ignored (with one warning)
/// until the target has it too. Returns true when the target's columns are
/// worth reading again (they were read a while ago).
fn note_source_only_columns(
    change: &Change,
    table: &mut TargetTable,
    config: &Config,
    table_config: &TableConfig,
) -> bool {
    let mut recheck = false;
    for (column, _) in &change.columns {
        if config.is_data_column(table_config, column) && !table.has_column(column) {
            if table.first_time_missing(column) {
                warn!(table = %table_config.name, %column, "column exists only on the source side; ignored until both sides have it");
            }
            recheck |= table.columns_age() > SCHEMA_RECHECK_INTERVAL;
        }
    }
    recheck
}

/// How old the cached columns of a target table may be before a column
/// seen only in the source makes the applier read them again.
const SCHEMA_RECHECK_INTERVAL: Duration = Duration::from_secs(5);

fn data_columns_only(
    mut change: Change,
    table: &TargetTable,
    config: &Config,
    table_config: &TableConfig,
) -> Change {
    let registry: Vec<ColumnText> = change
        .key
        .iter()
        .filter(|(c, _)| table_config.landlord_registry_columns.contains_key(c))
        .cloned()
        .collect();
    change
        .key
        .retain(|(c, _)| !table_config.landlord_registry_columns.contains_key(c));
    change
        .columns
        .retain(|(c, _)| config.is_data_column(table_config, c) && table.has_column(c));
    if !change.is_delete {
        change.columns.extend(registry);
    }
    change
}

fn target_of(envelope: &Envelope) -> TargetDbKey {
    match envelope.origin.side {
        Side::Tenant => TargetDbKey::Landlord,
        Side::Landlord => TargetDbKey::Tenant(envelope.tenant.id.clone()),
    }
}

fn side_of(target: &TargetDbKey) -> Side {
    match target {
        TargetDbKey::Landlord => Side::Landlord,
        TargetDbKey::Tenant(_) => Side::Tenant,
    }
}

async fn load_target_table<'t>(
    tables: &'t mut HashMap<String, TargetTable>,
    client: &impl tokio_postgres::GenericClient,
    config: &Config,
    table: &TableConfig,
    side: Side,
    database: &str,
) -> Result<&'t mut TargetTable, ApplierError> {
    match tables.entry(table.name.clone()) {
        Entry::Occupied(entry) => Ok(entry.into_mut()),
        Entry::Vacant(entry) => {
            let name = side_table(side, table);
            let columns = table_columns(client.client(), database, name).await?;
            Ok(entry.insert(TargetTable::new(config, &table.name, name, columns)))
        }
    }
}

/// A consumer error (Kafka unreachable, a rebalance) is not fatal: librdkafka
/// reconnects by itself, so wait a moment and poll again.
async fn consumer_trouble(
    error: rdkafka::error::KafkaError,
) -> Result<Vec<OwnedMessage>, ApplierError> {
    warn!(%error, "Kafka consumer error; retrying");
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Vec::new())
}

fn set_target_up(tenants: &HashMap<String, Tenant>, id: &str, up: bool) {
    if let Some(tenant) = tenants.get(id) {
        metrics()
            .target_up
            .with_label_values(&[tenant.database_name.as_str()])
            .set(i64::from(up));
    }
}

fn count(outcome: &str, n: u64) {
    metrics()
        .events_applied
        .with_label_values(&[outcome])
        .inc_by(n);
}

fn observe_latency(envelopes: &[&Envelope]) {
    let now = SystemTime::now();
    for envelope in envelopes {
        let committed = envelope
            .origin
            .commit_ts
            .as_deref()
            .and_then(|ts| humantime::parse_rfc3339(ts).ok());
        if let Some(latency) = committed.and_then(|c| now.duration_since(c).ok()) {
            metrics().end_to_end_seconds.observe(latency.as_secs_f64());
        }
    }
}
