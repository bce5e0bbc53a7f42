//! Running a check over the registry's tenants: read, compare, read the
//! divergent ones again once changes in flight had time to land, repair
//! on request, and report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::compare::{compare, Held, State, Verdict};
use super::report::{Report, TableReport, TenantReport};
use crate::applier::direct::{DirectWriter, Target, TargetPool};
use crate::config::Config;
use crate::model::direction::{gate, Directions, Gate};
use crate::model::{Direction, Envelope, Op, Side, TenantId};
use crate::postgres::bridge_schema::load_apply_key;
use crate::postgres::registry::{load_tenants, select_tenants, Tenant};
use crate::postgres::{connect, directions, DbError};
use crate::runtime::metrics::metrics;
use crate::source::tenant_rows::current_state;

/// A divergence seen once is read again after this long: a change that
/// was on its way through Kafka has arrived by then.
const SETTLE: Duration = Duration::from_secs(2);

/// What to check and how.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Registry ids; empty: every registered tenant.
    pub tenants: Vec<String>,
    pub repair: bool,
    /// Most tenants per second (0: as fast as it goes).
    pub rate: f64,
}

/// Why the check as a whole could not run (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Landlord(#[from] DbError),
    #[error("tenant {0} is not in the registry (tenants.registry_query)")]
    UnknownTenant(String),
}

/// Checks the chosen tenants over `pool` (inside `run`, the applier's:
/// the check counts against the same connection caps), or over a pool of
/// its own; `progress` hears of each tenant as it is done.
pub async fn run_check(
    config: Arc<Config>,
    options: &CheckOptions,
    pool: Option<TargetPool>,
    progress: &mut (dyn FnMut(&TenantReport, usize, usize) + Send),
) -> Result<Report, CheckError> {
    let started = Instant::now();
    let pool = match pool {
        Some(pool) => pool,
        None => own_pool(&config, options.repair).await?,
    };
    let (registered, directions) = pool
        .with(&Target::Landlord, &HashMap::new(), async |db| {
            let registered = load_tenants(&db.client, &config).await?;
            Ok::<_, DbError>((registered, directions::load(&db.client, &config).await?))
        })
        .await?;
    let tenants =
        select_tenants(registered, &options.tenants).map_err(CheckError::UnknownTenant)?;
    let writer = options
        .repair
        .then(|| DirectWriter::new(pool.clone(), &tenants));
    let mut checker = Checker {
        config,
        registry: tenants.iter().map(|t| (t.id.clone(), t.clone())).collect(),
        pool,
        directions,
        writer,
    };
    let mut reports = Vec::with_capacity(tenants.len());
    let mut second_look = Vec::new();
    for (index, tenant) in tenants.iter().enumerate() {
        throttle(started, index, options.rate).await;
        let report = checker.check(tenant).await?;
        if report.state.is_divergent() {
            second_look.push((index, Instant::now()));
        } else {
            progress(
                &report,
                reports.len() + 1 - second_look.len(),
                tenants.len(),
            );
        }
        reports.push(report);
    }
    for (index, first_seen) in second_look {
        tokio::time::sleep(SETTLE.saturating_sub(first_seen.elapsed())).await;
        let tenant = &tenants[index];
        let report = match checker.read(tenant).await? {
            Ok(sides) => {
                let mut report = checker.assess(tenant, &sides);
                if report.state.is_divergent() && checker.writer.is_some() {
                    checker.repair(tenant, &sides, &mut report).await?;
                }
                report
            }
            Err(reason) => unreachable_report(tenant, reason),
        };
        reports[index] = report;
        progress(&reports[index], index + 1, tenants.len());
    }
    Ok(Report::new(reports, started.elapsed()))
}

/// Waits until tenant `index` may start under `rate` tenants per second.
async fn throttle(started: Instant, index: usize, rate: f64) {
    if rate > 0.0 {
        let due = started + Duration::from_secs_f64(index as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Both sides of one tenant, read at one moment.
struct Sides {
    tenant: Vec<Envelope>,
    landlord: Vec<Envelope>,
}

/// A pool for a check run on its own (the `check` command): it writes
/// only when it repairs.
async fn own_pool(config: &Arc<Config>, repair: bool) -> Result<TargetPool, DbError> {
    let key = match repair {
        true => {
            let landlord = connect(&config.landlord.dsn, "landlord").await?;
            Some(load_apply_key(&landlord, config).await?)
        }
        false => None,
    };
    Ok(TargetPool::new(Arc::clone(config), key))
}

struct Checker {
    config: Arc<Config>,
    pool: TargetPool,
    registry: HashMap<TenantId, Tenant>,
    directions: Directions,
    writer: Option<DirectWriter>,
}

impl Checker {
    /// One tenant's state. Only a failing landlord fails the whole check.
    async fn check(&mut self, tenant: &Tenant) -> Result<TenantReport, CheckError> {
        Ok(match self.read(tenant).await? {
            Ok(sides) => self.assess(tenant, &sides),
            Err(reason) => unreachable_report(tenant, reason),
        })
    }

    /// The tenant's state from both sides as read.
    fn assess(&self, tenant: &Tenant, sides: &Sides) -> TenantReport {
        let verdicts = self.compare(sides);
        let mut state = worst(&verdicts);
        let direction = self.directions.of(&tenant.id);
        if direction == Direction::Paused {
            state = State::Paused;
        }
        let mut report = TenantReport::new(tenant, state, table_reports(&verdicts));
        let holds_row = |rows: &[Envelope]| rows.iter().any(|e| e.op != Op::Delete);
        report.tenant_present = Some(holds_row(&sides.tenant));
        report.landlord_present = Some(holds_row(&sides.landlord));
        report
    }

    /// Both sides' rows and tombstones; `Err(reason)` when the tenant's
    /// database cannot be read (the landlord failing is an error).
    async fn read(&mut self, tenant: &Tenant) -> Result<Result<Sides, String>, CheckError> {
        let tenant_ref = tenant.tenant_ref();
        let landlord = self
            .pool
            .current_state(&Target::Landlord, &self.registry, &tenant_ref)
            .await?;
        let limit = self.config.applier.target_timeout;
        // Waiting for a free connection is not the tenant's fault: only
        // connecting and reading count against the timeout.
        let mut lease = self
            .pool
            .lease(&Target::Tenant(tenant.id.clone()), &self.registry)
            .await?;
        let read = async {
            let db = lease.db().await?;
            current_state(
                &db.client,
                &self.config,
                Side::Tenant,
                &db.label,
                &tenant_ref,
            )
            .await
        };
        let read = tokio::time::timeout(limit, read).await;
        if matches!(read, Ok(Ok(_))) {
            lease.finish();
        }
        Ok(match read {
            Ok(Ok(rows)) => Ok(Sides {
                tenant: rows,
                landlord,
            }),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "database {} did not answer within {} s (applier.target_timeout_secs)",
                tenant.database_name,
                limit.as_secs_f64()
            )),
        })
    }

    fn compare<'s>(&self, sides: &'s Sides) -> Vec<Verdict<'s>> {
        self.config
            .tables
            .iter()
            .map(|table| {
                compare(
                    &self.config,
                    table,
                    Held::of(&table.name, &sides.tenant),
                    Held::of(&table.name, &sides.landlord),
                )
            })
            .collect()
    }

    /// Copies the newer side's row (or tombstone) of every divergent table
    /// to the other side, one row per transaction, as far as the tenant's
    /// direction carries changes from that side; then reads both sides
    /// again for the final state.
    async fn repair(
        &mut self,
        tenant: &Tenant,
        sides: &Sides,
        report: &mut TenantReport,
    ) -> Result<(), CheckError> {
        let direction = self.directions.of(&tenant.id);
        let mut notes = Vec::new();
        let verdicts = self.compare(sides);
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        for verdict in verdicts.iter().filter(|v| v.state.is_divergent()) {
            let Some(envelope) = verdict.repair else {
                continue;
            };
            let from = envelope.origin.side;
            if gate(direction, from) != Gate::Apply {
                notes.push(format!(
                    "{}: not repaired, direction {} does not carry changes from the {from}",
                    verdict.table,
                    direction.as_str()
                ));
                continue;
            }
            let target = match from {
                Side::Tenant => Target::Landlord,
                Side::Landlord => Target::Tenant(tenant.id.clone()),
            };
            match writer.write(&target, &[envelope]).await {
                Ok(written) => notes.extend(written.rejected.into_iter().map(|(_, reason)| {
                    format!("{}: the repair was refused: {reason}", verdict.table)
                })),
                Err(error) => notes.push(format!("{}: repair failed: {error}", verdict.table)),
            }
        }
        let after = self.check(tenant).await?;
        report.tables = after.tables;
        report.tenant_present = after.tenant_present;
        report.landlord_present = after.landlord_present;
        report.repaired = after.state == State::Consistent;
        report.set_state(after.state);
        if report.repaired {
            info!(tenant = %tenant.id, "tenant repaired: both sides consistent");
            metrics().check.repairs.inc();
        } else {
            warn!(tenant = %tenant.id, notes = ?notes, "tenant still inconsistent after a repair");
        }
        report.note = (!notes.is_empty()).then(|| notes.join("; "));
        Ok(())
    }
}

/// A tenant whose database could not be read, and why.
fn unreachable_report(tenant: &Tenant, reason: String) -> TenantReport {
    let mut report = TenantReport::new(tenant, State::Unreachable, Vec::new());
    report.note = Some(reason);
    report
}

/// The tenant's state: the first divergent table's, else consistent.
fn worst(verdicts: &[Verdict<'_>]) -> State {
    verdicts
        .iter()
        .map(|v| v.state)
        .find(|s| s.is_divergent())
        .unwrap_or(State::Consistent)
}

fn table_reports(verdicts: &[Verdict<'_>]) -> Vec<TableReport> {
    verdicts
        .iter()
        .map(|v| TableReport {
            table: v.table.clone(),
            state: v.state.name(),
            detail: v.detail.clone(),
        })
        .collect()
}
