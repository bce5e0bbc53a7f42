//! Writing a group of changes into one target database: one transaction,
//! the apply marker first (loop prevention), a savepoint per change so one
//! bad change does not undo the others, then commit.
//!
//! ```text
//!  BEGIN; apply marker; per change: SAVEPOINT ─► LWW upsert/delete ─► RELEASE
//!                                   (rejected ─► ROLLBACK TO SAVEPOINT, reported)
//!  COMMIT
//! ```

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

use super::pool::TargetDb;
use super::routing::{change_for, data_columns_only, Target};
use super::target::{Change, ManyUpserts, Outcome, TargetError, TargetTable};
use super::ApplierError;
use crate::config::{Config, TableConfig};
use crate::model::conflict::parse_version;
use crate::model::loop_guard::APPLY_MARKER_PREFIX;
use crate::model::{Envelope, Side, TenantId};
use crate::postgres::bridge_schema::ApplyKey;
use crate::postgres::registry::Tenant;
use crate::postgres::table_columns;
use crate::runtime::metrics::{count_events, metrics, EventOutcome};

/// How old the cached columns of a target table may be before a column
/// seen only in the source makes the applier read them again.
pub(super) const SCHEMA_RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// A change that cannot be applied as it stands: its index in the group
/// and why (it goes to the dead-letter topic, or the log for reconciles).
pub(super) type Rejected = (usize, String);

/// The applier waits at most this long for a lock; then it gives way and
/// retries later. Shorter than PostgreSQL's `deadlock_timeout` (1 s by
/// default) so that in a lock cycle with an application transaction it is
/// the bridge that fails, never the application.
const LOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// A target transaction is committed once it has been open this long (and
/// the rest of the group continues in a new one): the time from its first
/// lock to its last lock wait stays under `deadlock_timeout - LOCK_TIMEOUT`,
/// which is what keeps the application out of the deadlock victim's place.
const TRANSACTION_BUDGET: Duration = Duration::from_millis(400);

/// Opens an apply transaction: the marker, the token and the lock timeout
/// in one statement (`pool`'s preamble).
pub(super) async fn begin_apply<'c>(
    (client, preamble): (&'c mut tokio_postgres::Client, &tokio_postgres::Statement),
    key: &ApplyKey,
) -> Result<tokio_postgres::Transaction<'c>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    mark_apply(&tx, preamble, key).await?;
    Ok(tx)
}

/// Runs the preamble in the open transaction: the marker, the token and
/// the lock timeout.
async fn mark_apply(
    client: &impl tokio_postgres::GenericClient,
    preamble: &tokio_postgres::Statement,
    key: &ApplyKey,
) -> Result<u64, tokio_postgres::Error> {
    let lock_timeout = format!("{}ms", LOCK_TIMEOUT.as_millis());
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
        &key.token(),
        &APPLY_MARKER_PREFIX,
        &key.marker,
        &lock_timeout,
    ];
    client.execute(preamble, &params).await
}

/// An apply transaction sent whole: BEGIN, the preamble, the upserts and
/// COMMIT go out together and come back in one round trip, where awaiting
/// each would wait its turn on a busy server four times. Requests run in
/// the order their futures are first polled, and every one of these sends
/// on its first poll (the upserts' statements are prepared beforehand).
/// `try_join!` polls in that order and stops at the first error in it: a
/// request that fails before it is sent keeps the later ones from being
/// sent (no write without the marker or its locks; the open transaction
/// dies with the connection, which an error keeps out of the pool), and a
/// statement the server refuses aborts the transaction, so the COMMIT
/// already sent rolls it back. Dropped half-way, the transaction still
/// ends on the server as a whole, committed or not.
pub(super) async fn apply_in_one_round_trip(
    (client, preamble): (&tokio_postgres::Client, &tokio_postgres::Statement),
    key: &ApplyKey,
    upserts: &ManyUpserts<'_>,
) -> Result<u64, TargetError> {
    let begin = async { Ok::<_, TargetError>(client.batch_execute("BEGIN").await?) };
    let mark = async { Ok::<_, TargetError>(mark_apply(client, preamble, key).await?) };
    let commit = async { Ok::<_, TargetError>(client.batch_execute("COMMIT").await?) };
    let ((), _, written, ()) = futures::try_join!(begin, mark, upserts.send(client), commit)?;
    Ok(written)
}

/// What applying a group produced.
#[derive(Default)]
pub(super) struct GroupResult {
    /// Changes the target refused.
    pub(super) rejected: Vec<Rejected>,
    /// The target gained a column the source had been sending: rows
    /// applied before lack its values there (a reconcile carries them).
    pub(super) columns_appeared: bool,
    /// Changes written, and changes older than what the target held.
    pub(super) applied: u64,
    pub(super) stale: u64,
    outcomes: HashMap<EventOutcome, u64>,
    schema_suspect: bool,
}

/// Applies `envelopes` to `target` one change at a time, in as few
/// transactions as the time budget allows. Transient failures (and
/// failures of the database as a whole) fail the group; a change the
/// target refuses is rejected alone.
pub(super) async fn apply_on(
    db: &mut TargetDb,
    config: &Config,
    registry: &HashMap<TenantId, Tenant>,
    (target, key): (&Target, &ApplyKey),
    envelopes: &[&Envelope],
) -> Result<GroupResult, ApplierError> {
    let mut result = GroupResult::default();
    let mut next = 0;
    while next < envelopes.len() {
        next = apply_in_transaction(
            db,
            config,
            registry,
            (target, key),
            &envelopes[next..],
            next,
            &mut result,
        )
        .await?;
    }
    if result.schema_suspect {
        db.tables.clear();
    }
    for (outcome, n) in result.outcomes.drain() {
        match outcome {
            EventOutcome::Applied => result.applied += n,
            EventOutcome::Stale => result.stale += n,
            _ => {}
        }
        count_events(outcome, n);
    }
    observe_latency(envelopes);
    publish_synced(target.side(), envelopes, result.applied);
    Ok(result)
}

/// Applies changes from the front of `envelopes` in one transaction until
/// they are done or the budget is spent; returns the index (in the whole
/// group, `offset` being the first one's) of the first change not applied.
async fn apply_in_transaction(
    db: &mut TargetDb,
    config: &Config,
    registry: &HashMap<TenantId, Tenant>,
    (target, key): (&Target, &ApplyKey),
    envelopes: &[&Envelope],
    offset: usize,
    result: &mut GroupResult,
) -> Result<usize, ApplierError> {
    let label = db.label.clone();
    let target_err = |source: TargetError| ApplierError::Target {
        database: label.clone(),
        source,
    };
    let started = Instant::now();
    let tx = begin_apply((&mut db.client, &db.preamble), key)
        .await
        .map_err(|e| target_err(e.into()))?;
    for (position, envelope) in envelopes.iter().enumerate() {
        let index = offset + position;
        if position > 0 && started.elapsed() > TRANSACTION_BUDGET {
            tx.commit().await.map_err(|e| target_err(e.into()))?;
            return Ok(index);
        }
        let (change, table) = match routed(config, registry, target, envelope) {
            Ok(routed) => routed,
            Err(reason) => {
                result.rejected.push((index, reason));
                continue;
            }
        };
        let side = target.side();
        let mut target_table =
            load_target_table(&mut db.tables, &tx, config, table, side, &label).await?;
        if note_source_only_columns(&change, target_table, config, table) {
            // A column only the source had may exist on the target by now;
            // if it does, rows sent before lack its values there.
            let missing: Vec<String> = target_table.missing_columns().cloned().collect();
            db.tables.remove(&table.name);
            target_table =
                load_target_table(&mut db.tables, &tx, config, table, side, &label).await?;
            result.columns_appeared |= missing.iter().any(|c| target_table.has_column(c));
        }
        // A change alone in its transaction needs no savepoint: if it is
        // refused, the transaction is rolled back instead.
        let lone = envelopes.len() == 1;
        if !lone {
            tx.batch_execute("SAVEPOINT change")
                .await
                .map_err(|e| target_err(e.into()))?;
        }
        let change = data_columns_only(change, |c| target_table.has_column(c), config, table);
        let outcome = match target_table.apply(&tx, &change).await {
            Ok(Outcome::Applied) => EventOutcome::Applied,
            Ok(Outcome::Stale) => EventOutcome::Stale,
            Err(e) if !e.is_about_the_change() => return Err(target_err(e)),
            Err(e) => {
                result.rejected.push((index, format!("{label}: {e}")));
                // The table may have changed (a column type, a new
                // column): read its columns again next time.
                result.schema_suspect = true;
                if lone {
                    tx.rollback().await.map_err(|e| target_err(e.into()))?;
                    return Ok(index + 1);
                }
                tx.batch_execute("ROLLBACK TO SAVEPOINT change")
                    .await
                    .map_err(|e| target_err(e.into()))?;
                continue;
            }
        };
        *result.outcomes.entry(outcome).or_default() += 1;
        if !lone {
            tx.batch_execute("RELEASE SAVEPOINT change")
                .await
                .map_err(|e| target_err(e.into()))?;
        }
    }
    tx.commit().await.map_err(|e| target_err(e.into()))?;
    Ok(offset + envelopes.len())
}

/// The change in the target's terms and its table's configuration, or
/// why it cannot be applied (it is rejected alone).
pub(super) fn routed<'c>(
    config: &'c Config,
    registry: &HashMap<TenantId, Tenant>,
    target: &Target,
    envelope: &Envelope,
) -> Result<(Change, &'c TableConfig), String> {
    let change = change_for(config, registry, target, envelope)
        .and_then(|change| plausible_version(change, config))?;
    let table = config
        .table(&envelope.table)
        .ok_or_else(|| format!("table {} is not configured on this bridge", envelope.table))?;
    Ok((change, table))
}

/// Refuses a version far in the future (or `infinity`): applied, it would
/// pin the row so that no later write of the other side could win again.
fn plausible_version(change: Change, config: &Config) -> Result<Change, String> {
    let bound = config.sync.max_clock_skew;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let limit = now.saturating_add(bound.as_micros() as i64);
    match parse_version(&change.version) {
        Some(micros) if micros <= limit => Ok(change),
        parsed => {
            metrics().rejected_versions.inc();
            let what = if parsed.is_some() {
                format!("is more than {} s in the future", bound.as_secs())
            } else {
                "cannot be read as a timestamp".to_string()
            };
            Err(format!(
                "version {} {what} (a clock far ahead, or a forged version); fix the source row's {} or raise sync.max_clock_skew_secs",
                change.version, config.sync.version_column
            ))
        }
    }
}

/// Schema drift: a column only the source has is ignored (with one
/// warning) until the target has it too. Returns true when the target's
/// columns are worth reading again (they were read a while ago).
pub(super) fn note_source_only_columns(
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

/// Reads again the columns of `db`'s cached tables that lacked a column
/// changes carried; true when one of those columns exists now.
pub(super) async fn recheck_missing_columns(
    db: &mut TargetDb,
    config: &Config,
    side: Side,
) -> Result<bool, ApplierError> {
    let mut appeared = false;
    let stale: Vec<String> = db
        .tables
        .iter()
        .filter(|(_, t)| t.missing_columns().next().is_some())
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        let Some(table) = config.table(&name) else {
            continue;
        };
        let missing: Vec<String> = db.tables[&name].missing_columns().cloned().collect();
        db.tables.remove(&name);
        let label = db.label.clone();
        let reloaded =
            load_target_table(&mut db.tables, &db.client, config, table, side, &label).await?;
        appeared |= missing.iter().any(|c| reloaded.has_column(c));
        let still_missing: Vec<&String> =
            missing.iter().filter(|c| !reloaded.has_column(c)).collect();
        for column in still_missing {
            // Still missing: keep remembering it (without warning again).
            reloaded.first_time_missing(column);
        }
    }
    Ok(appeared)
}

pub(super) async fn load_target_table<'t>(
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
            let name = table.on(side);
            let columns = table_columns(client.client(), database, name).await?;
            Ok(entry.insert(TargetTable::new(config, &table.name, name, columns)))
        }
    }
}

pub(super) fn observe_latency(envelopes: &[&Envelope]) {
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

/// The tenants whose changes just committed into `side`, on the status board.
pub(super) fn publish_synced(side: crate::model::Side, envelopes: &[&Envelope], applied: u64) {
    let mut tenants: Vec<&TenantId> = envelopes.iter().map(|e| &e.tenant.id).collect();
    tenants.sort_unstable();
    tenants.dedup();
    crate::runtime::status::status().synced(side, &tenants, applied);
}
