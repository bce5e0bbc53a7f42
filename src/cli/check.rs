//! `cdc-bridge check [--tenant ID]... [--format table|json] [--repair]`:
//! are both sides of every tenant the same? Exit code 0 when every tenant
//! is consistent, 1 when one is not, 2 when the check could not run.

use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::consistency::{run_check, CheckOptions};

/// How the result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Format {
    Table,
    Json,
}

pub(super) async fn run(
    config: Arc<Config>,
    options: CheckOptions,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut progress = super::progress::Progress::new("tenants", 0);
    let report = run_check(config, &options, None, &mut |_, done, total| {
        progress.update(done as u64, total as u64)
    })
    .await?;
    progress.finish();
    match format {
        Format::Table => print!("{}", report.table()),
        Format::Json => println!("{}", report.json()),
    }
    Ok(if report.all_consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
