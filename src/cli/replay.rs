//! `cdc-bridge replay` and `cdc-bridge backfill`: the change topic applied
//! again, or refilled from one side's current rows. Exit code 0 when
//! everything went through, 1 when some changes or tenants did not (the
//! summary says which), 2 when the command could not run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Config;
use crate::kafka::range::StartAt;
use crate::model::Side;
use crate::replay::backfill::backfill;
use crate::replay::{replay, ReplayOptions, ReplayTo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum To {
    Landlord,
    Tenant,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum From {
    Tenant,
    Landlord,
}

/// `--since`: an RFC 3339 time (`2026-12-01T10:00:00Z`) or a duration
/// ago (`90m`, `2h`, `1day`).
pub(super) fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        format!("`{text}` is neither a time like 2026-12-01T10:00:00Z nor a duration like 2h")
    })?;
    SystemTime::now()
        .checked_sub(ago)
        .ok_or_else(|| format!("`{text}` reaches before 1970"))
}

pub(super) async fn run_replay(
    config: Arc<Config>,
    to: To,
    tenants: Vec<String>,
    since: Option<SystemTime>,
) -> anyhow::Result<ExitCode> {
    let options = ReplayOptions {
        to: match to {
            To::Landlord => ReplayTo::Landlord,
            To::Tenant => ReplayTo::Tenant,
            To::Both => ReplayTo::Both,
        },
        tenants,
        start: since.map_or(StartAt::Beginning, StartAt::Since),
    };
    let mut progress = super::progress::Progress::new("events", 0);
    let summary = replay(config, &options, &mut |done, total| {
        progress.update(done, total)
    })
    .await?;
    progress.finish();
    println!("{}", summary.line());
    Ok(exit_code(summary.dead_lettered + summary.failed == 0))
}

pub(super) async fn run_backfill(
    config: Arc<Config>,
    from: From,
    tenants: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let side = match from {
        From::Tenant => Side::Tenant,
        From::Landlord => Side::Landlord,
    };
    let mut progress = super::progress::Progress::new("tenants", 0);
    let summary = backfill(config, side, &tenants, &mut |done, total| {
        progress.update(done, total)
    })
    .await?;
    progress.finish();
    println!("{}", summary.line());
    Ok(exit_code(summary.unreachable.is_empty()))
}

fn exit_code(complete: bool) -> ExitCode {
    if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
