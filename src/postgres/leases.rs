//! The instances' heartbeats and source leases on the landlord (tables in
//! `bridge_schema`); the rule that uses them is `service::ownership`'s.
//! Times are the landlord's clock (`now()`), never a process's.

use std::time::Duration;

use tokio_postgres::Client;

use super::bridge_schema::BridgeTables;
use super::DbError;
use crate::config::Config;

/// One source's lease as the landlord has it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceLease {
    pub source: String,
    pub owner: String,
    /// How many times the source changed owner.
    pub fence: i64,
    /// Seconds until it expires (negative: expired, free to take).
    pub expires_in_secs: f64,
}

/// The queries, named once for one configuration.
pub(crate) struct LeaseStore {
    instances: String,
    leases: String,
}

fn failed(what: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
    move |e| DbError::query("landlord", what, e)
}

impl LeaseStore {
    pub(crate) fn new(config: &Config) -> Self {
        let tables = BridgeTables::new(config);
        LeaseStore {
            instances: tables.instances(),
            leases: tables.source_leases(),
        }
    }

    /// Records `me` as alive for `lease` and renews every lease it holds;
    /// returns the sources it holds. Instances silent for ten leases are
    /// forgotten.
    pub(crate) async fn heartbeat(
        &self,
        client: &Client,
        me: &str,
        lease: Duration,
    ) -> Result<Vec<String>, DbError> {
        let (instances, leases) = (&self.instances, &self.leases);
        let sql = format!(
            "WITH beat AS (
                 INSERT INTO {instances} (instance_id, expires_at)
                 VALUES ($1, now() + make_interval(secs => $2))
                 ON CONFLICT (instance_id) DO UPDATE
                    SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at),
             forgotten AS (
                 DELETE FROM {instances}
                  WHERE greatest(expires_at, applies_until) < now() - make_interval(secs => $2 * 10)
                    AND instance_id <> $1)
             UPDATE {leases} SET expires_at = now() + make_interval(secs => $2)
              WHERE owner = $1 AND expires_at > now() RETURNING source"
        );
        let rows = client
            .query(&sql, &[&me, &lease.as_secs_f64()])
            .await
            .map_err(failed("renew this instance's leases"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The instances whose heartbeat has not expired, in id order.
    pub(crate) async fn live_instances(&self, client: &Client) -> Result<Vec<String>, DbError> {
        let sql = format!(
            "SELECT instance_id FROM {} WHERE expires_at > now() ORDER BY instance_id",
            self.instances
        );
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(failed("list the live instances"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Takes up to `limit` of `candidates` that nobody holds or whose lease
    /// expired; returns those taken. Two instances racing for one source
    /// serialise on its row: the second sees the first's fresh lease.
    pub(crate) async fn acquire(
        &self,
        client: &Client,
        me: &str,
        candidates: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<String>, DbError> {
        if limit == 0 || candidates.is_empty() {
            return Ok(Vec::new());
        }
        let leases = &self.leases;
        let sql = format!(
            "WITH free AS (
                 SELECT s FROM unnest($2::text[]) s
                  WHERE NOT EXISTS (SELECT 1 FROM {leases} l WHERE l.source = s AND l.expires_at > now())
                  ORDER BY s LIMIT $3)
             INSERT INTO {leases} AS l (source, owner, expires_at)
             SELECT s, $1, now() + make_interval(secs => $4) FROM free
             ON CONFLICT (source) DO UPDATE
                SET owner = EXCLUDED.owner, fence = l.fence + 1,
                    acquired_at = now(), expires_at = EXCLUDED.expires_at
              WHERE l.expires_at <= now()
             RETURNING source"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&sql, &[&me, &candidates, &limit, &lease.as_secs_f64()])
            .await
            .map_err(failed("take source leases"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Gives up leases `me` holds (their readers have stopped).
    pub(crate) async fn release(
        &self,
        client: &Client,
        me: &str,
        sources: &[String],
    ) -> Result<(), DbError> {
        let sql = format!(
            "DELETE FROM {} WHERE owner = $1 AND source = ANY($2)",
            self.leases
        );
        client
            .execute(&sql, &[&me, &sources])
            .await
            .map_err(failed("release source leases"))?;
        Ok(())
    }

    /// Gives up every lease and the heartbeat (graceful stop): the others
    /// take the sources on their next heartbeat instead of after a lease.
    pub(crate) async fn leave(&self, client: &Client, me: &str) -> Result<(), DbError> {
        let sql = format!(
            "WITH gone AS (DELETE FROM {} WHERE owner = $1)
             DELETE FROM {} WHERE instance_id = $1",
            self.leases, self.instances
        );
        client
            .execute(&sql, &[&me])
            .await
            .map_err(failed("leave the instances"))?;
        Ok(())
    }

    /// Every source's lease, by source.
    pub(crate) async fn all(&self, client: &Client) -> Result<Vec<SourceLease>, DbError> {
        let sql = format!(
            "SELECT source, owner, fence, extract(epoch FROM expires_at - now())::float8
               FROM {} ORDER BY source",
            self.leases
        );
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(failed("read the source leases"))?;
        Ok(rows
            .iter()
            .map(|r| SourceLease {
                source: r.get(0),
                owner: r.get(1),
                fence: r.get(2),
                expires_in_secs: r.get(3),
            })
            .collect())
    }
}

/// The applier's per-tenant states that must outlive a process
/// (`tenant_sync_state`): written before the offsets of any change they
/// stand for are committed, removed by their owner once reconciled, and
/// adopted by another instance when their owner's heartbeat is gone.
pub(crate) struct SyncStateStore {
    table: String,
    instances: String,
}

impl SyncStateStore {
    pub(crate) fn new(config: &Config) -> Self {
        let tables = BridgeTables::new(config);
        SyncStateStore {
            table: tables.tenant_sync_state(),
            instances: tables.instances(),
        }
    }

    /// Records `states` (tenant id, `reconcile_pending` or `unreachable`)
    /// as `me`'s, and removes `me`'s rows of `gone` (reconciled tenants).
    pub(crate) async fn save(
        &self,
        client: &Client,
        me: &str,
        states: &[(String, &'static str)],
        gone: &[String],
    ) -> Result<(), DbError> {
        let (ids, names): (Vec<&str>, Vec<&str>) =
            states.iter().map(|(id, s)| (id.as_str(), *s)).unzip();
        let table = &self.table;
        let sql = format!(
            "WITH saved AS (
                 INSERT INTO {table} (tenant_id, state, owner)
                 SELECT id, state, $1 FROM unnest($2::text[], $3::text[]) AS s(id, state)
                 ON CONFLICT (tenant_id, owner) DO UPDATE SET state = EXCLUDED.state, since = now())
             DELETE FROM {table} WHERE owner = $1 AND tenant_id = ANY($4) AND tenant_id <> ALL($2)"
        );
        client
            .execute(&sql, &[&me, &ids, &names, &gone])
            .await
            .map_err(failed("save the tenants' sync states"))?;
        Ok(())
    }

    /// Renews `me`'s applier heartbeat for `alive`, then takes over the
    /// rows of instances with neither heartbeat current (merged into
    /// `me`'s: unreachable wins); returns them (tenant id, state).
    pub(crate) async fn adopt(
        &self,
        client: &Client,
        me: &str,
        alive: Duration,
    ) -> Result<Vec<(String, String)>, DbError> {
        let (table, instances) = (&self.table, &self.instances);
        let beat = format!(
            "INSERT INTO {instances} (instance_id, expires_at, applies_until)
             VALUES ($1, '-infinity', now() + make_interval(secs => $2))
             ON CONFLICT (instance_id) DO UPDATE SET applies_until = EXCLUDED.applies_until"
        );
        client
            .execute(&beat, &[&me, &alive.as_secs_f64()])
            .await
            .map_err(failed("renew this instance's applier heartbeat"))?;
        // 'unreachable' > 'reconcile_pending', so max() keeps it.
        let sql = format!(
            "WITH gone AS (
                 DELETE FROM {table} t WHERE owner <> $1
                    AND NOT EXISTS (SELECT 1 FROM {instances} i WHERE i.instance_id = t.owner
                                     AND greatest(i.expires_at, i.applies_until) > now())
                 RETURNING tenant_id, state)
             INSERT INTO {table} AS c (tenant_id, state, owner)
             SELECT tenant_id, max(state), $1 FROM gone GROUP BY tenant_id
             ON CONFLICT (tenant_id, owner) DO UPDATE SET state = greatest(c.state, EXCLUDED.state)
             RETURNING tenant_id, state"
        );
        let rows = client
            .query(&sql, &[&me])
            .await
            .map_err(failed("adopt the tenants' sync states of gone instances"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// The last periodic check, as the landlord keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedCheck {
    pub finished_at: std::time::SystemTime,
    pub counts: std::collections::BTreeMap<String, usize>,
    pub inconsistent_ratio: f64,
    pub duration_seconds: f64,
}

/// The periodic check's claim and last result (`check_runs`): one
/// instance runs it per interval, every instance publishes its result.
pub(crate) struct CheckRunStore {
    table: String,
}

const PERIODIC: &str = "periodic";

impl CheckRunStore {
    pub(crate) fn new(config: &Config) -> Self {
        CheckRunStore {
            table: BridgeTables::new(config).check_runs(),
        }
    }

    /// Claims the next run for `me` for `hold`, unless one finished less
    /// than `interval` ago or another instance holds a claim.
    pub(crate) async fn claim(
        &self,
        client: &Client,
        me: &str,
        interval: Duration,
        hold: Duration,
    ) -> Result<bool, DbError> {
        let table = &self.table;
        let sql = format!(
            "INSERT INTO {table} AS c (name, owner, claimed_until)
             VALUES ($1, $2, now() + make_interval(secs => $4))
             ON CONFLICT (name) DO UPDATE SET owner = $2, claimed_until = EXCLUDED.claimed_until
              WHERE (c.claimed_until IS NULL OR c.claimed_until < now())
                AND (c.finished_at IS NULL OR c.finished_at < now() - make_interval(secs => $3))
             RETURNING 1"
        );
        // A little less than the interval, so a run every interval is due
        // when the instance that ran the last one wakes.
        let due = interval.as_secs_f64() * 0.9;
        let rows = client
            .query(&sql, &[&PERIODIC, &me, &due, &hold.as_secs_f64()])
            .await
            .map_err(failed("claim the periodic check"))?;
        Ok(!rows.is_empty())
    }

    /// Records `me`'s finished run and gives up the claim.
    pub(crate) async fn finish(
        &self,
        client: &Client,
        me: &str,
        check: &SharedCheck,
    ) -> Result<(), DbError> {
        let counts = serde_json::to_string(&check.counts).unwrap_or_default();
        let sql = format!(
            "UPDATE {} SET finished_at = now(), claimed_until = NULL, counts = $3::text::jsonb,
                    inconsistent_ratio = $4, duration_seconds = $5
              WHERE name = $1 AND owner = $2",
            self.table
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &PERIODIC,
            &me,
            &counts,
            &check.inconsistent_ratio,
            &check.duration_seconds,
        ];
        client
            .execute(&sql, &params)
            .await
            .map_err(failed("record the periodic check"))?;
        Ok(())
    }

    /// The last finished run, if any.
    pub(crate) async fn last(&self, client: &Client) -> Result<Option<SharedCheck>, DbError> {
        let sql = format!(
            "SELECT finished_at, counts::text, inconsistent_ratio, duration_seconds FROM {}
              WHERE name = $1 AND finished_at IS NOT NULL",
            self.table
        );
        let row = client
            .query_opt(&sql, &[&PERIODIC])
            .await
            .map_err(failed("read the last periodic check"))?;
        Ok(row.map(|r| SharedCheck {
            finished_at: r.get(0),
            counts: serde_json::from_str(r.get::<_, &str>(1)).unwrap_or_default(),
            inconsistent_ratio: r.get(2),
            duration_seconds: r.get(3),
        }))
    }
}
