//! The consistency check inside `run`: every `check.interval_secs` it
//! checks every tenant (throttled to `check.rate`), repairs when
//! `check.repair` is on, and publishes the result as metrics, which is what
//! the alert rules and dashboards read.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::check::{run_check, CheckOptions};
use super::compare::State;
use super::report::Report;
use crate::applier::TargetPool;
use crate::config::Config;
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
                info!(summary = %report.summary(), "consistency check done");
            }
            Err(error) => warn!(%error, "consistency check failed; trying again next interval"),
        }
    }
}

fn publish(report: &Report) {
    let m = &metrics().check;
    for state in State::ALL {
        let count = report.counts.get(state.name()).copied().unwrap_or(0);
        m.tenants
            .with_label_values(&[state.name()])
            .set(count as i64);
    }
    m.inconsistent_ratio.set(report.inconsistent_ratio);
    m.duration_seconds.set(report.duration_seconds);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    m.last_run.set(now);
    report.publish_tenants();
    status().set_check_run(CheckRun {
        at: SystemTime::now(),
        duration_seconds: report.duration_seconds,
        inconsistent_ratio: report.inconsistent_ratio,
        counts: report.counts.clone(),
    });
}
