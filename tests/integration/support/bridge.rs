//! A `cdc-bridge run` process, what its log says, and its HTTP endpoint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::eventually;

/// A running `cdc-bridge run` process; killed when dropped.
pub(crate) struct Bridge {
    child: Option<Child>,
    /// Its stdout and stderr, in plain text (`NO_COLOR`) for matching.
    pub(crate) log: PathBuf,
}

impl Bridge {
    /// Starts `cdc-bridge run` with `config`; the log goes to a new file in
    /// `log_dir`.
    pub(crate) fn start(config: &Path, log_dir: &Path) -> Bridge {
        Bridge::start_role(config, log_dir, "all")
    }

    /// `start` with `run --role ROLE`.
    pub(crate) fn start_role(config: &Path, log_dir: &Path, role: &str) -> Bridge {
        let n = std::fs::read_dir(log_dir).map(|d| d.count()).unwrap_or(0);
        let log = log_dir.join(format!("bridge-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
            .arg("--config")
            .arg(config)
            .args(["run", "--role", role])
            .env("RUST_LOG", "info,cdc_bridge=debug,rdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Bridge {
            child: Some(child),
            log,
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                child.kill().ok();
                panic!(
                    "bridge did not stop within 30 s of SIGTERM; log: {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the crash case.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Peak resident memory of the process so far, in KiB (Linux VmHWM).
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines that contain every one of `fragments`.
    pub(crate) fn log_lines_with(&self, fragments: &[&str]) -> usize {
        self.log_text()
            .lines()
            .filter(|line| fragments.iter().all(|f| line.contains(f)))
            .count()
    }

    /// Waits until at least `count` log lines contain every one of
    /// `fragments` (count the lines before an action, wait for one more).
    pub(crate) async fn wait_log_lines(&self, fragments: &[&str], count: usize) {
        let what = format!(
            "{count} log lines with {fragments:?} (log: {})",
            self.log.display()
        );
        eventually(&what, || async {
            (self.log_lines_with(fragments) >= count).then_some(())
        })
        .await;
    }

    /// The `/metrics` text (the endpoint must be on: `TestEnv::set_http`).
    pub(crate) async fn metrics(&self) -> String {
        let port = self.http_port().await;
        http_request(port, "GET", "/metrics", None, "")
            .await
            .unwrap_or_else(|| panic!("/metrics did not answer (log: {})", self.log.display()))
    }

    /// Waits until sample `series` of `/metrics` (see `sample`) has a value
    /// that `accept` takes; returns it.
    pub(crate) async fn wait_metric(&self, series: &str, accept: impl Fn(f64) -> bool) -> f64 {
        let what = format!("metric {series} (log: {})", self.log.display());
        let accept = &accept;
        eventually(&what, || async move {
            sample(&self.metrics().await, series).filter(|value| accept(*value))
        })
        .await
    }

    /// The databases whose reader has logged `streaming` so far. The reader
    /// logs `streaming database="…" slot=… start=…` (src/reader.rs) each
    /// time it starts streaming, so a reader that restarted appears once.
    pub(crate) fn streaming_databases(&self) -> BTreeSet<String> {
        self.log_text()
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "streaming")?;
                let database = words.next()?.strip_prefix("database=")?;
                Some(database.trim_matches('"').to_string())
            })
            .collect()
    }

    /// The port of the HTTP endpoint, once it listens (the configuration
    /// asks for any free port, see `TestEnv::set_http`; the bridge logs
    /// `HTTP endpoint listening listen=127.0.0.1:…`).
    pub(crate) async fn http_port(&self) -> u16 {
        let what = format!("HTTP endpoint listening (log: {})", self.log.display());
        eventually(&what, || async {
            self.log_text().lines().find_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "listening")?;
                let address = words.next()?.strip_prefix("listen=")?;
                address
                    .parse::<std::net::SocketAddr>()
                    .ok()
                    .map(|a| a.port())
            })
        })
        .await
    }
}

/// Runs `cdc-bridge --config <config> <args>` to completion, returning
/// (success, stdout and stderr).
/// A finished bridge subcommand.
pub(crate) struct CommandRun {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs a bridge subcommand with `config` to completion: (success, output).
pub(crate) fn bridge_command(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let run = bridge_run(config, args, env);
    (run.code == 0, format!("{}{}", run.stdout, run.stderr))
}

/// Runs a bridge subcommand with `config` to completion.
pub(crate) fn bridge_run(config: &Path, args: &[&str], env: &[(&str, &str)]) -> CommandRun {
    let output = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    CommandRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until readers of `databases` different databases stream (a
/// reader that restarts logs `streaming` again, which must not count twice).
pub(crate) async fn wait_streaming(bridge: &Bridge, databases: usize) {
    let what = format!(
        "readers of {databases} databases streaming (log: {})",
        bridge.log.display()
    );
    eventually(&what, || async {
        (bridge.streaming_databases().len() >= databases).then_some(())
    })
    .await;
}

/// A minimal HTTP/1.0 request to the bridge's endpoint; the raw response.
pub(crate) async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// The value of `series` in Prometheus text: a metric name with its labels
/// as the endpoint prints them, e.g. `cdc_kafka_up` or
/// `cdc_source_up{database="x"}`; `None` while the series does not exist.
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}
