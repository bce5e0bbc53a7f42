//! The consistency check inside `run`: every `check.interval_secs` it
//! checks every tenant (throttled to `check.rate`), repairs when
//! `check.repair` is on, and publishes the result as metrics, which is what
//! the alert rules and dashboards read. With several instances, one runs
//! each interval's check (a claim in `check_runs` on the landlord) and the
//! others publish the result it recorded there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::check::{run_check, CheckOptions};
use super::compare::State;
use super::report::Report;
use crate::applier::direct::Target;
use crate::applier::TargetPool;
use crate::config::Config;
use crate::postgres::leases::{CheckRunStore, SharedCheck};
use crate::runtime::metrics::metrics;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::status::{status, CheckRun};

/// Checks until shutdown; a check that fails is logged and tried again at
/// the next interval (the last-run metric then stays old, which alerts).
pub async fn run(config: Arc<Config>, pool: TargetPool, mut shutdown: Shutdown) {
    let interval = config.check.interval;
    if interval.is_zero() {
        return;
    }
    let options = CheckOptions {
        tenants: Vec::new(),
        repair: config.check.repair,
        rate: config.check.rate,
    };
    info!(
        seconds = interval.as_secs(),
        repair = options.repair,
        "periodic consistency check on"
    );
    let mut quiet = |_: &_, _, _| {};
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
        // One instance runs each interval's check; the others publish its
        // result (several instances share the fleet).
        match claim(&config, &pool).await {
            Ok(true) => {}
            Ok(false) => {
                publish_shared(&config, &pool).await;
                continue;
            }
            Err(error) => {
                warn!(%error, "cannot claim the periodic check on the landlord; trying again next interval");
                continue;
            }
        }
        let check = run_check(
            Arc::clone(&config),
            &options,
            Some(pool.clone()),
            &mut quiet,
        );
        let result = tokio::select! {
            result = check => result,
            _ = shutdown.wait() => return,
        };
        match result {
            Ok(report) => {
                publish(&report);
                record(&config, &pool, &report).await;
                info!(summary = %report.summary(), "consistency check done");
            }
            Err(error) => warn!(%error, "consistency check failed; trying again next interval"),
        }
    }
}

/// How long a claimed check may run before another instance may run one:
/// a claimer that died mid-check delays the next by this much at most.
const CLAIM_HOLD: std::time::Duration = std::time::Duration::from_secs(1800);

async fn claim(config: &Config, pool: &TargetPool) -> Result<bool, crate::postgres::DbError> {
    let store = CheckRunStore::new(config);
    let (me, interval) = (&config.instances.instance_id, config.check.interval);
    pool.with(&Target::Landlord, &HashMap::new(), async |db| {
        store
            .claim(&db.client, me, interval, CLAIM_HOLD + interval)
            .await
    })
    .await
}

async fn record(config: &Config, pool: &TargetPool, report: &Report) {
    let store = CheckRunStore::new(config);
    let me = &config.instances.instance_id;
    let shared = SharedCheck {
        finished_at: SystemTime::now(),
        counts: report
            .counts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        inconsistent_ratio: report.inconsistent_ratio,
        duration_seconds: report.duration_seconds,
    };
    let recorded = pool
        .with(&Target::Landlord, &HashMap::new(), async |db| {
            store.finish(&db.client, me, &shared).await
        })
        .await;
    if let Err(error) = recorded {
        warn!(%error, "cannot record the check's result on the landlord; the next interval checks again");
    }
}

/// Publishes the last check another instance ran, as if it were ours.
async fn publish_shared(config: &Config, pool: &TargetPool) {
    let store = CheckRunStore::new(config);
    let last = pool
        .with(&Target::Landlord, &HashMap::new(), async |db| {
            store.last(&db.client).await
        })
        .await;
    let Ok(Some(last)) = last else { return };
    let counts: std::collections::BTreeMap<&'static str, usize> = State::ALL
        .iter()
        .map(|s| (s.name(), last.counts.get(s.name()).copied().unwrap_or(0)))
        .collect();
    publish_run(CheckRun {
        at: last.finished_at,
        duration_seconds: last.duration_seconds,
        inconsistent_ratio: last.inconsistent_ratio,
        counts,
    });
}

fn publish(report: &Report) {
    report.publish_tenants();
    publish_run(CheckRun {
        at: SystemTime::now(),
        duration_seconds: report.duration_seconds,
        inconsistent_ratio: report.inconsistent_ratio,
        counts: report.counts.clone(),
    });
}

/// A check's result as metrics (what the alerts read) and on the board.
fn publish_run(run: CheckRun) {
    let m = &metrics().check;
    for state in State::ALL {
        let count = run.counts.get(state.name()).copied().unwrap_or(0);
        m.tenants
            .with_label_values(&[state.name()])
            .set(count as i64);
    }
    m.inconsistent_ratio.set(run.inconsistent_ratio);
    m.duration_seconds.set(run.duration_seconds);
    let at = run
        .at
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    m.last_run.set(at);
    status().set_check_run(run);
}
