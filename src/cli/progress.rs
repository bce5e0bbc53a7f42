//! Progress of a long command: a bar on a terminal (done / total, rate,
//! ETA), a log line every few seconds otherwise (cron, CI, `| tee`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

/// Log lines are at most this frequent when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    /// `what` names the unit counted ("tenants", "events").
    pub(super) fn new(what: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let template = format!("{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}} ETA {{eta}}");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            what,
            bar,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    pub(super) fn update(&mut self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        if self.last_log.elapsed() >= LOG_EVERY || done == total {
            self.last_log = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64().max(0.001);
            info!(
                done,
                total,
                per_second = format!("{:.0}", done as f64 / seconds),
                "{} done",
                self.what
            );
        }
    }

    pub(super) fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
