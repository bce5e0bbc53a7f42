//! Every upsert-only group (a batch's share of one target, a replay, a
//! repair) written many rows per statement: the newest change of each row
//! only (the older ones could only lose to it), then up to a few thousand
//! rows per transaction with `TargetTable::prepare_many`, each transaction
//! sent in one round trip. A chunk the target refuses as a whole is written
//! again one change at a time (`writer`), which finds the change at fault.

use std::collections::{BTreeMap, HashMap};

use super::pool::{TargetDb, TargetPool};
use super::routing::{data_columns_only, Target};
use super::target::{Change, TargetError};
use super::writer::{
    apply_in_one_round_trip, apply_on, load_target_table, note_source_only_columns,
    observe_latency, publish_synced, routed, GroupResult,
};
use super::ApplierError;
use crate::config::Config;
use crate::model::conflict::Version;
use crate::model::{Envelope, Op, TenantId};
use crate::postgres::bridge_schema::ApplyKey;
use crate::postgres::registry::Tenant;
use crate::runtime::metrics::{count_events, EventOutcome};

/// Rows per statement and transaction: large enough to spread the round
/// trips, small enough that taking the rows' locks stays short. A chunk's
/// lock statements wait up to the lock timeout on each row an application
/// transaction holds; the fewer rows, the less likely the time from its
/// first lock to its last wait reaches `deadlock_timeout` (where the
/// application, not the bridge, could be the deadlock's victim).
const CHUNK_ROWS: usize = 500;

/// One change ready to write, with its index in the group.
struct Prepared {
    index: usize,
    table: String,
    change: Change,
}

/// Applies `envelopes` to `target` on a pooled connection (see
/// `apply_newest`).
pub(super) async fn apply_group(
    pool: &TargetPool,
    registry: &HashMap<TenantId, Tenant>,
    target: &Target,
    envelopes: &[&Envelope],
) -> Result<GroupResult, ApplierError> {
    let key = pool.key().ok_or(ApplierError::ReadOnly)?;
    let config = pool.config();
    pool.with(target, registry, async |db| {
        apply_newest(db, config, registry, (target, key), envelopes).await
    })
    .await
}

/// Applies one target's share of a batch: a row changed several times in
/// it is written once, at its newest version (the conflict rule would
/// make the older ones stale anyway), many rows per statement, each
/// transaction in one round trip. Groups with a delete, and a column that
/// appeared, take the usual path of one change at a time.
pub(super) async fn apply_newest(
    db: &mut TargetDb,
    config: &Config,
    registry: &HashMap<TenantId, Tenant>,
    (target, key): (&Target, &ApplyKey),
    envelopes: &[&Envelope],
) -> Result<GroupResult, ApplierError> {
    if envelopes.iter().any(|e| e.op == Op::Delete) {
        return apply_on(db, config, registry, (target, key), envelopes).await;
    }
    bulk_on(db, config, registry, (target, key), envelopes).await
}

async fn bulk_on(
    db: &mut TargetDb,
    config: &Config,
    registry: &HashMap<TenantId, Tenant>,
    (target, key): (&Target, &ApplyKey),
    envelopes: &[&Envelope],
) -> Result<GroupResult, ApplierError> {
    let mut result = GroupResult::default();
    // Written by the bulk statements (the one-by-one retries publish theirs).
    let mut written_in_bulk = 0;
    let (newest, superseded) = newest_per_row(envelopes);
    result.stale += superseded;
    let Some(prepared) = prepare(db, config, registry, target, &newest, &mut result).await? else {
        return apply_on(db, config, registry, (target, key), envelopes).await;
    };
    for chunk in chunks(&prepared) {
        let label = db.label.clone();
        let written = write_chunk(db, key, &chunk).await;
        match written {
            Ok(applied) => {
                written_in_bulk += applied;
                result.applied += applied;
                result.stale += chunk.len() as u64 - applied;
            }
            Err(e) if e.is_about_the_change() => {
                let subset: Vec<&Envelope> = chunk.iter().map(|p| envelopes[p.index]).collect();
                let one_by_one = apply_on(db, config, registry, (target, key), &subset).await?;
                result.applied += one_by_one.applied;
                result.stale += one_by_one.stale;
                let rejected = one_by_one.rejected.into_iter();
                result
                    .rejected
                    .extend(rejected.map(|(i, reason)| (chunk[i].index, reason)));
            }
            Err(source) => {
                return Err(ApplierError::Target {
                    database: label,
                    source,
                })
            }
        }
    }
    count_events(EventOutcome::Applied, result.applied);
    count_events(EventOutcome::Stale, result.stale);
    observe_latency(envelopes);
    publish_synced(target.side(), envelopes, written_in_bulk);
    Ok(result)
}

/// Each envelope as a change in the target's terms (refused ones go to
/// `result.rejected`); `None` when a column only the source had may have
/// appeared on the target, which the usual path handles.
async fn prepare(
    db: &mut TargetDb,
    config: &Config,
    registry: &HashMap<TenantId, Tenant>,
    target: &Target,
    chosen: &[(usize, &Envelope)],
    result: &mut GroupResult,
) -> Result<Option<Vec<Prepared>>, ApplierError> {
    let mut prepared = Vec::with_capacity(chosen.len());
    for &(index, envelope) in chosen {
        let (change, table) = match routed(config, registry, target, envelope) {
            Ok(routed) => routed,
            Err(reason) => {
                result.rejected.push((index, reason));
                continue;
            }
        };
        let label = db.label.clone();
        let target_table = load_target_table(
            &mut db.tables,
            &db.client,
            config,
            table,
            target.side(),
            &label,
        )
        .await?;
        if note_source_only_columns(&change, target_table, config, table) {
            return Ok(None);
        }
        let change = data_columns_only(change, |c| target_table.has_column(c), config, table);
        prepared.push(Prepared {
            index,
            table: table.name.clone(),
            change,
        });
    }
    Ok(Some(prepared))
}

/// The newest change of each row, by the conflict rule, with its index
/// in the group, and how many older ones it supersedes. A tenant has one
/// row per table on either side, so (table, tenant) names the target row.
/// A change whose version cannot be read stays, to be refused on its own.
fn newest_per_row<'e>(envelopes: &[&'e Envelope]) -> (Vec<(usize, &'e Envelope)>, u64) {
    let mut kept: Vec<(usize, &Envelope)> = Vec::with_capacity(envelopes.len());
    let mut rows: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, envelope) in envelopes.iter().enumerate() {
        let Some(version) = Version::of(envelope) else {
            kept.push((index, envelope));
            continue;
        };
        let row = (envelope.table.as_str(), envelope.tenant.id.as_str());
        match rows.get(&row) {
            // On an equal version the later change wins, as it would
            // applied one after the other.
            Some(&at) if Version::of(kept[at].1) > Some(version) => {}
            Some(&at) => kept[at] = (index, envelope),
            None => {
                rows.insert(row, kept.len());
                kept.push((index, envelope));
            }
        }
    }
    let superseded = (envelopes.len() - kept.len()) as u64;
    (kept, superseded)
}

/// Chunks of at most `CHUNK_ROWS` changes of one table and one column set.
fn chunks(changes: &[Prepared]) -> Vec<Vec<&Prepared>> {
    let mut by_shape: BTreeMap<(&str, Vec<&str>), Vec<&Prepared>> = BTreeMap::new();
    for item in changes {
        let columns = item.change.key.iter().chain(&item.change.columns);
        let shape = (
            item.table.as_str(),
            columns.map(|(c, _)| c.as_str()).collect(),
        );
        by_shape.entry(shape).or_default().push(item);
    }
    by_shape
        .into_values()
        .flat_map(|items| {
            items
                .chunks(CHUNK_ROWS)
                .map(<[&Prepared]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One transaction, in one round trip: the apply marker, then the chunk
/// in three statements (prepared first, on a new connection).
async fn write_chunk(
    db: &mut TargetDb,
    key: &crate::postgres::bridge_schema::ApplyKey,
    chunk: &[&Prepared],
) -> Result<u64, TargetError> {
    let Some(table) = db.tables.get_mut(&chunk[0].table) else {
        return Ok(0);
    };
    let changes: Vec<&Change> = chunk.iter().map(|p| &p.change).collect();
    let Some(upserts) = table.prepare_many(&db.client, &changes).await? else {
        return Ok(0);
    };
    apply_in_one_round_trip((&db.client, &db.preamble), key, &upserts).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::envelope::{Origin, ENVELOPE_VERSION};
    use crate::model::{Side, TenantRef};

    fn change(tenant: &str, second: u32, side: Side) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            op: Op::Upsert,
            table: "tenant_brandings".into(),
            tenant: TenantRef {
                id: tenant.into(),
                slug: tenant.into(),
            },
            origin: Origin {
                side,
                database: "db".into(),
                lsn: "0/0".into(),
                commit_ts: None,
                xid: None,
            },
            version: Some(format!("2026-01-01 00:00:{second:02}+00")),
            source: None,
            key: BTreeMap::new(),
            columns: BTreeMap::new(),
        }
    }

    #[test]
    fn only_the_newest_change_of_each_row_is_kept_under_the_conflict_rule() {
        let group = [
            change("1", 3, Side::Tenant),
            change("2", 1, Side::Tenant),
            change("1", 5, Side::Tenant),
            change("1", 4, Side::Tenant),
            // Equal version: the tenant side wins the tie.
            change("2", 1, Side::Landlord),
        ];
        let refs: Vec<&Envelope> = group.iter().collect();
        let (kept, superseded) = newest_per_row(&refs);
        let indices: Vec<usize> = kept.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, [2, 1]);
        assert_eq!(superseded, 3);
    }

    #[test]
    fn a_change_without_a_readable_version_is_kept_to_be_refused_alone() {
        let mut broken = change("1", 9, Side::Tenant);
        broken.version = Some("soon".into());
        let group = [change("1", 3, Side::Tenant), broken];
        let refs: Vec<&Envelope> = group.iter().collect();
        let (kept, superseded) = newest_per_row(&refs);
        assert_eq!(kept.len(), 2);
        assert_eq!(superseded, 0);
    }
}
