//! Writing a batch's changes to the tenant databases side by side: each
//! tenant target is written on its own connection, at most
//! `applier.max_parallel_targets` at once, each within
//! `applier.target_timeout_secs`. A slow, silent or vanished tenant server
//! costs its own tenant that timeout once (it is then unreachable, and
//! reconciled when it answers again); it never holds the others.
//!
//! ```text
//!  batch ─► landlord group (in order, in this task)
//!        └► tenant groups ─► ┬ tenant 1: connection ─► transaction ─► ok
//!                            ├ tenant 2: …                           ─► ok
//!                            └ tenant 3: silent ─► timeout ─► unreachable (changes deferred)
//! ```

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use rdkafka::message::OwnedMessage;

use super::pool::{open, Limits, TargetDb, TargetPool};
use super::routing::{unknown_tenant, Target};
use super::tenants::TenantState;
use super::writer::{apply_on, GroupResult};
use super::{Applier, ApplierError};
use crate::model::Envelope;
use crate::runtime::metrics::{count_events, metrics, EventOutcome};

/// One tenant target's share of a batch.
pub(super) type TenantGroup<'m> = (Target, Vec<(&'m OwnedMessage, &'m Envelope)>);

/// One tenant target to write: its pooled connection, if any, and its
/// share of the batch.
type Job<'m> = (
    Target,
    Option<TargetDb>,
    Vec<(&'m OwnedMessage, &'m Envelope)>,
);

/// What came back from writing one tenant target.
struct Written<'m> {
    target: Target,
    items: Vec<(&'m OwnedMessage, &'m Envelope)>,
    /// The connection, when it is still good to keep.
    db: Option<TargetDb>,
    result: Result<GroupResult, ApplierError>,
}

impl Applier {
    /// Writes every tenant group (see the module doc); only a failure to
    /// record a dead letter fails the batch.
    pub(super) async fn apply_to_tenants(
        &mut self,
        groups: Vec<TenantGroup<'_>>,
    ) -> Result<(), ApplierError> {
        let mut runnable = Vec::new();
        for (target, items) in groups {
            let Target::Tenant(id) = &target else {
                continue;
            };
            if !self.tenants.registry.contains_key(id) {
                let reason = unknown_tenant(id);
                for (message, _) in &items {
                    self.dead_letters.send(message, &reason).await?;
                }
            } else if self.tenants.state(id) == TenantState::Unreachable {
                count_events(EventOutcome::Deferred, items.len() as u64);
            } else {
                let server = TargetPool::server_of(&self.config, &self.tenants.registry, &target);
                runnable.push((target, items, server));
            }
        }
        let parallel = self.config.applier.max_parallel_targets;
        for round in rounds(runnable, self.pool.limits(), parallel) {
            let mut demand: HashMap<String, usize> = HashMap::new();
            let mut jobs = Vec::with_capacity(round.len());
            for (target, items, server) in round {
                *demand.entry(server).or_default() += 1;
                let db = self.pool.take(&target);
                jobs.push((target, db, items));
            }
            self.pool.make_room(&demand);
            let written = self.write_side_by_side(jobs).await;
            for done in written {
                self.settle(done).await?;
            }
        }
        Ok(())
    }

    async fn write_side_by_side<'m>(&self, jobs: Vec<Job<'m>>) -> Vec<Written<'m>> {
        let writes: Vec<_> = jobs
            .into_iter()
            .map(|(target, db, items)| self.write_one(target, db, items))
            .collect();
        stream::iter(writes)
            .buffer_unordered(self.config.applier.max_parallel_targets)
            .collect()
            .await
    }

    /// One tenant target's changes, on its connection (opened if needed),
    /// within the target timeout.
    async fn write_one<'m>(
        &self,
        target: Target,
        db: Option<TargetDb>,
        items: Vec<(&'m OwnedMessage, &'m Envelope)>,
    ) -> Written<'m> {
        let (config, registry, key) = (&self.config, &self.tenants.registry, self.pool.key());
        let limit = config.applier.target_timeout;
        let envelopes: Vec<&Envelope> = items.iter().map(|(_, e)| *e).collect();
        let work = async {
            let mut db = match db {
                Some(db) => db,
                None => open(&target, config, registry, key).await?,
            };
            let result = apply_on(&mut db, config, registry, (&target, key), &envelopes).await;
            Ok::<_, ApplierError>((db, result))
        };
        let (db, result) = match tokio::time::timeout(limit, work).await {
            Ok(Ok((db, Ok(applied)))) => (Some(db), Ok(applied)),
            Ok(Ok((_, Err(error)))) | Ok(Err(error)) => (None, Err(error)),
            Err(_) => (None, Err(timed_out(&target, limit))),
        };
        Written {
            target,
            items,
            db,
            result,
        }
    }

    /// Returns the connection, dead-letters what the target refused, and
    /// defers a tenant whose database failed as a whole.
    async fn settle(&mut self, done: Written<'_>) -> Result<(), ApplierError> {
        let Written {
            target,
            items,
            db,
            result,
        } = done;
        if let Some(db) = db {
            self.pool.put(target.clone(), db);
        }
        match (result, &target) {
            (Ok(applied), _) => {
                if applied.columns_appeared {
                    self.columns_appeared(&target);
                }
                for (index, reason) in applied.rejected {
                    self.dead_letters.send(items[index].0, &reason).await?;
                }
            }
            (Err(error), Target::Tenant(id)) => self.defer_tenant(id, items.len(), &error),
            (Err(error), Target::Landlord) => return Err(error),
        }
        Ok(())
    }
}

/// A tenant target's share of a batch with the server it lives on.
type Placed<'m> = (Target, Vec<(&'m OwnedMessage, &'m Envelope)>, String);

/// Splits the targets into rounds that each fit the connection limits
/// (one connection left for the landlord, overall and on every server) and
/// `parallel`; a target that does not fit waits for a later round, in
/// order. Usually everything fits in one.
fn rounds(mut pending: Vec<Placed<'_>>, limits: Limits, parallel: usize) -> Vec<Vec<Placed<'_>>> {
    let width = parallel.min(limits.total - 1).max(1);
    let per_server = (limits.per_server - 1).max(1);
    let mut rounds = Vec::new();
    while !pending.is_empty() {
        let mut round = Vec::new();
        let mut later = Vec::new();
        let mut on_server: HashMap<String, usize> = HashMap::new();
        for placed in pending {
            let used = on_server.entry(placed.2.clone()).or_default();
            if round.len() < width && *used < per_server {
                *used += 1;
                round.push(placed);
            } else {
                later.push(placed);
            }
        }
        if !later.is_empty() {
            metrics().connection_waits.inc_by(later.len() as u64);
        }
        rounds.push(round);
        pending = later;
    }
    rounds
}

fn timed_out(target: &Target, limit: Duration) -> ApplierError {
    ApplierError::TargetTimeout {
        target: format!("{target:?}"),
        seconds: limit.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(id: &str, server: &str) -> Placed<'static> {
        (Target::Tenant(id.into()), Vec::new(), server.to_string())
    }

    fn ids(rounds: &[Vec<Placed<'_>>]) -> Vec<Vec<String>> {
        rounds
            .iter()
            .map(|round| {
                round
                    .iter()
                    .map(|(target, _, _)| match target {
                        Target::Tenant(id) => id.to_string(),
                        Target::Landlord => "landlord".into(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn targets_beyond_the_limits_wait_for_later_rounds_in_order() {
        let limits = Limits {
            total: 4,
            per_server: 3,
        };
        let pending = vec![
            placed("1", "a:5432"),
            placed("2", "a:5432"),
            placed("3", "a:5432"),
            placed("4", "b:5432"),
            placed("5", "a:5432"),
        ];
        // Three at a time (one connection stays for the landlord), at most
        // two per server.
        assert_eq!(
            ids(&rounds(pending, limits, 16)),
            [vec!["1", "2", "4"], vec!["3", "5"]]
        );
    }

    #[test]
    fn everything_fits_in_one_round_within_the_limits() {
        let limits = Limits {
            total: 32,
            per_server: 8,
        };
        let pending = (0..5).map(|i| placed(&i.to_string(), "a:1")).collect();
        assert_eq!(rounds(pending, limits, 16).len(), 1);
        let pending: Vec<_> = (0..5).map(|i| placed(&i.to_string(), "a:1")).collect();
        assert_eq!(rounds(pending, limits, 2).len(), 3, "parallel limits too");
    }
}
