//! Servers of a single test's own. Stopping the shared broker, or starting
//! the shared cluster with other settings, would disturb the tests running
//! in parallel; a test that needs that starts its own server instead.
//!
//! Each one is `scripts/stack.sh` with a private `STACK_DIR` under the temp
//! directory and a private port: the shared stack's port plus a fixed
//! offset (`offset`), so parallel runs of the suite on other ports do not
//! meet either. Dropping the handle stops the server and removes its
//! directory; creating one first clears what an interrupted run left.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::kafka::kafka_brokers;
use super::postgres::{connect_dsn, dsn_at, pg_port};

/// Port offsets of the private servers, from the shared stack's ports. All
/// in one place, so no two tests pick the same port.
pub(crate) mod offset {
    /// `routing`: a tenant on a second PostgreSQL server.
    pub(crate) const SECOND_POSTGRES: u16 = 7;
    /// `cli`: a landlord on a server without logical replication.
    pub(crate) const REPLICA_POSTGRES: u16 = 8;
    /// `tls`: a server that accepts the bridge's role over TLS only.
    pub(crate) const TLS_POSTGRES: u16 = 9;
    /// `routing`: the server a tenant moves to.
    pub(crate) const MOVED_POSTGRES: u16 = 10;
    /// A small server with many tenant databases (`connections`).
    pub(crate) const FLEET_POSTGRES: u16 = 11;
    /// `tls`: a TLS server whose certificate the bridge must refuse.
    pub(crate) const REFUSED_TLS_POSTGRES: u16 = 11;
    /// `kafka_outage`: a broker to stop and start (its controller listens
    /// on the port after it).
    pub(crate) const OUTAGE_KAFKA: u16 = 20;
    /// `limits`: a broker that goes away during a burst.
    pub(crate) const BLOCKED_KAFKA: u16 = 22;
}

/// Runs `scripts/stack.sh command` for the private stack in `dir`; whether
/// it succeeded.
fn stack(dir: &Path, command: &str, env: &[(&str, &str)]) -> bool {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack.sh"))
        .arg(command)
        .env("STACK_DIR", dir)
        .envs(env.iter().copied())
        .status()
        .is_ok_and(|status| status.success())
}

/// `stack`, failing the test if the command fails.
fn stack_or_fail(dir: &Path, command: &str, env: &[(&str, &str)]) {
    assert!(
        stack(dir, command, env),
        "scripts/stack.sh {command} failed for STACK_DIR={}",
        dir.display()
    );
}

/// `stack` when a handle is dropped: never panics, since the test may be
/// unwinding already (a second panic would abort every test in the binary).
fn stack_on_drop(dir: &Path, command: &str, env: &[(&str, &str)]) {
    if !stack(dir, command, env) {
        eprintln!(
            "scripts/stack.sh {command} failed for STACK_DIR={}",
            dir.display()
        );
    }
}

/// Waits until a server could listen on every one of `ports`. These fixed
/// ports lie in the range the kernel hands out to outgoing connections, and
/// the tests open and close many: a closed connection keeps its local port
/// for a minute (TIME_WAIT), and a server cannot listen on it meanwhile.
fn wait_until_free(ports: &[u16]) {
    let deadline = Duration::from_secs(120);
    let start = Instant::now();
    loop {
        let busy: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|port| TcpListener::bind(("127.0.0.1", *port)).is_err())
            .collect();
        if busy.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "ports {busy:?} stayed in use for {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Starts a private server with `commands.0` once its `ports` are free. An
/// outgoing connection may still take one of them before the server
/// listens; then the server fails to start, `commands.1` clears up after
/// it, and it gets one more try.
fn start_server(dir: &Path, commands: (&str, &str), env: &[(&str, &str)], ports: &[u16]) {
    let (start, clear) = commands;
    wait_until_free(ports);
    if stack(dir, start, env) {
        return;
    }
    eprintln!(
        "scripts/stack.sh {start} failed for STACK_DIR={}; once more",
        dir.display()
    );
    stack_or_fail(dir, clear, env);
    wait_until_free(ports);
    stack_or_fail(dir, start, env);
}

/// A PostgreSQL 15 cluster of one test's own (`stack.sh pg-up`).
pub(crate) struct OwnPostgres {
    pub(crate) port: u16,
    /// Its `STACK_DIR`.
    dir: PathBuf,
}

impl OwnPostgres {
    /// The port of the cluster at `offset` (see `offset`).
    pub(crate) fn port_at(offset: u16) -> u16 {
        pg_port() + offset
    }

    /// Starts a fresh cluster on the port at `offset`; `settings` are extra
    /// `stack.sh` variables such as `PG_WAL_LEVEL` or `PG_SSL_DIR`.
    pub(crate) fn start(offset: u16, settings: &[(&str, &str)]) -> OwnPostgres {
        let port = OwnPostgres::port_at(offset);
        let dir = std::env::temp_dir().join(format!("cdc-bridge-own-pg-{port}"));
        stack_or_fail(&dir, "down", &[]);
        let port_text = port.to_string();
        let mut env = vec![("PG_PORT", port_text.as_str()), ("PG_FSYNC", "off")];
        env.extend_from_slice(settings);
        start_server(&dir, ("pg-up", "pg-down"), &env, &[port]);
        OwnPostgres { port, dir }
    }

    pub(crate) fn dsn(&self, database: &str) -> String {
        dsn_at(self.port, database)
    }

    pub(crate) async fn connect(&self, database: &str) -> Client {
        connect_dsn(&self.dsn(database)).await
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        stack_on_drop(&self.dir, "down", &[]);
    }
}

/// A Kafka broker of one test's own (`stack.sh start-kafka`), which the
/// test may stop and start.
pub(crate) struct OwnKafka {
    port: u16,
    /// `port` as `stack.sh` reads it (`KAFKA_PORT`).
    port_text: String,
    /// Its `STACK_DIR`.
    dir: PathBuf,
    brokers: String,
}

impl OwnKafka {
    /// Starts a fresh broker on the shared broker's port plus `offset`.
    pub(crate) fn new(offset: u16) -> OwnKafka {
        let shared = kafka_brokers();
        let shared_port: u16 = shared
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("CDC_TEST_KAFKA={shared} is not host:port"));
        let port = shared_port + offset;
        let kafka = OwnKafka {
            port,
            port_text: port.to_string(),
            dir: std::env::temp_dir().join(format!("cdc-bridge-own-kafka-{port}")),
            brokers: format!("127.0.0.1:{port}"),
        };
        kafka.stop();
        let _ = std::fs::remove_dir_all(&kafka.dir);
        kafka.start();
        kafka
    }

    /// Its bootstrap address.
    pub(crate) fn brokers(&self) -> &str {
        &self.brokers
    }

    fn env(&self) -> [(&str, &str); 1] {
        [("KAFKA_PORT", &self.port_text)]
    }

    /// Starts the broker (and its controller, on the next port) and waits
    /// until it listens.
    pub(crate) fn start(&self) {
        let ports = [self.port, self.port + 1];
        start_server(
            &self.dir,
            ("start-kafka", "stop-kafka"),
            &self.env(),
            &ports,
        );
    }

    /// Stops the broker and waits until it has exited.
    pub(crate) fn stop(&self) {
        stack_or_fail(&self.dir, "stop-kafka", &self.env());
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        stack_on_drop(&self.dir, "stop-kafka", &self.env());
        if std::thread::panicking() {
            eprintln!("kept the broker's logs in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
