//! Several `run` processes over one fleet: sources spread by leases on the
//! landlord, taken over after a kill -9, handed over on SIGTERM, moved to
//! a joining instance, and given up by an instance cut off from the
//! landlord before anyone else can take them; both sides identical after
//! writes on both sides all along.
//!
//! A watcher samples the landlord throughout: every slot that streams must
//! be streamed by the instance holding its source's unexpired lease (one
//! query reads the slots, their walsenders' `application_name` and the
//! leases at one instant). A walsender ends a moment after its reader let
//! go, so a mismatch counts only when the same walsender shows it in two
//! samples in a row.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    eventually_within, landlord_color, pg_port, set_landlord_color, set_tenant_color, tenant_color,
    TestEnv,
};

const TENANTS: usize = 30;
const SOURCES: usize = TENANTS + 1;

/// The slots' databases and their sources' lease names, in one order.
#[derive(Clone)]
struct Sources {
    databases: Vec<String>,
    names: Vec<String>,
    slot_prefix: String,
}

impl Sources {
    fn of(env: &TestEnv) -> Sources {
        let mut databases = vec![env.landlord_db.clone()];
        let mut names = vec!["landlord".to_string()];
        for t in &env.tenants {
            databases.push(t.database.clone());
            names.push(format!("tenant/{}", t.id));
        }
        Sources {
            databases,
            names,
            slot_prefix: env.prefix.clone(),
        }
    }

    /// Per streaming slot, at one instant: its database, the instance
    /// whose walsender streams it, that walsender's pid, and the lease of
    /// its source (owner, unexpired).
    async fn streaming(&self, landlord: &tokio_postgres::Client) -> Vec<Streaming> {
        let rows = landlord
            .query(
                "SELECT s.database::text, a.application_name, s.active_pid, l.owner,
                        coalesce(l.expires_at > now(), false),
                        coalesce(i.expires_at > now(), false)
                   FROM pg_replication_slots s
                   JOIN pg_stat_activity a ON a.pid = s.active_pid
                   JOIN unnest($1::text[], $2::text[]) AS m(database, source) ON m.database = s.database
                   LEFT JOIN cdc_bridge.source_leases l ON l.source = m.source
                   LEFT JOIN cdc_bridge.instances i ON 'inst_' || i.instance_id = a.application_name
                  WHERE s.slot_name LIKE $3 || '%'",
                &[&self.databases, &self.names, &self.slot_prefix],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                let app: String = r.get(1);
                Streaming {
                    database: r.get(0),
                    streamer: app.strip_prefix("inst_").map(str::to_string),
                    pid: r.get(2),
                    owner: r.get(3),
                    lease_current: r.get(4),
                    streamer_alive: r.get(5),
                }
            })
            .collect()
    }

    /// Which instance streams each source's slot now, by instance.
    async fn streamers(&self, landlord: &tokio_postgres::Client) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for s in self.streaming(landlord).await {
            *by.entry(s.streamer.unwrap_or_default()).or_insert(0) += 1;
        }
        by
    }
}

/// A slot's walsender at one instant, and its source's lease.
struct Streaming {
    database: String,
    /// The instance it belongs to (from its `application_name`).
    streamer: Option<String>,
    pid: i32,
    owner: Option<String>,
    lease_current: bool,
    /// Whether that instance's heartbeat is current.
    streamer_alive: bool,
}

/// How long a walsender of an instance the landlord counts as gone may
/// stay on a slot it lost (the new owner ends it on its first attempt).
const LEFTOVER: Duration = Duration::from_secs(10);

/// Samples until finished; fails on a walsender of a live instance seen
/// streaming without its lease in two samples in a row, or one of a gone
/// instance staying longer than `LEFTOVER`.
struct Watcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<String>, usize)>,
}

impl Watcher {
    async fn start(env: &TestEnv) -> Watcher {
        let landlord = env.landlord().await;
        let sources = Sources::of(env);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut violations, mut samples) = (Vec::new(), 0);
            let mut suspects: HashMap<(String, i32), Instant> = HashMap::new();
            while !stopped.load(Ordering::Relaxed) {
                let mut next = HashMap::new();
                for s in sources.streaming(&landlord).await {
                    if s.streamer.is_some() && s.streamer == s.owner && s.lease_current {
                        continue;
                    }
                    let key = (s.database.clone(), s.pid);
                    let since = suspects.get(&key).copied();
                    let too_long =
                        since.is_some_and(|at| !s.streamer_alive && at.elapsed() > LEFTOVER);
                    if (since.is_some() && s.streamer_alive) || too_long {
                        violations.push(format!(
                            "{} streamed by {:?} (pid {}, instance live: {}), lease held by {:?}, unexpired: {}",
                            s.database, s.streamer, s.pid, s.streamer_alive, s.owner, s.lease_current
                        ));
                    }
                    next.insert(key, since.unwrap_or_else(Instant::now));
                }
                suspects = next;
                samples += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            (violations, samples)
        });
        Watcher { stop, task }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (violations, samples) = self.task.await.unwrap();
        assert!(samples > 20, "the watcher took only {samples} samples");
        assert!(
            violations.is_empty(),
            "sources streamed without their lease:\n{}",
            violations.join("\n")
        );
    }
}

/// Application writes on both sides, one after another, until stopped;
/// returns the last color written per tenant (the newest version wins).
struct Writers {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Option<String>>>,
}

impl Writers {
    fn start(env: &Arc<TestEnv>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let (stopped, env) = (Arc::clone(&stop), Arc::clone(env));
        let task = tokio::spawn(async move {
            let mut last = vec![None; env.tenants.len()];
            let mut n = 0usize;
            while !stopped.load(Ordering::Relaxed) {
                let index = n % env.tenants.len();
                let color = format!("#{n:06x}");
                if n % 3 == 0 {
                    set_landlord_color(&env, index, &color).await;
                } else {
                    set_tenant_color(&env, index, &color).await;
                }
                last[index] = Some(color);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            last
        });
        Writers { stop, task }
    }

    /// Stops, then waits until both sides of every tenant hold its last
    /// write.
    async fn finish_and_converge(self, env: &TestEnv) {
        self.stop.store(true, Ordering::Relaxed);
        let last = self.task.await.unwrap();
        for (index, expected) in last.iter().enumerate() {
            let Some(expected) = expected else { continue };
            let what = format!("tenant {index} holding {expected} on both sides");
            eventually_within(Duration::from_secs(90), &what, || async {
                let tenant = tenant_color(env, index).await;
                let landlord = landlord_color(env, index).await;
                (tenant.as_deref() == Some(expected) && landlord.as_deref() == Some(expected))
                    .then_some(())
            })
            .await;
        }
    }
}

/// Waits until every source streams and no instance streams more than
/// `most`, nor fewer than `least`, of them; returns who streams how many.
async fn spread(
    env: &TestEnv,
    instances: &[&str],
    (least, most): (usize, usize),
) -> BTreeMap<String, usize> {
    let (landlord, sources) = (env.landlord().await, Sources::of(env));
    let what = format!("{SOURCES} sources streamed by {instances:?}, {least} to {most} each");
    eventually_within(Duration::from_secs(90), &what, || async {
        let by = sources.streamers(&landlord).await;
        let ok = by.values().sum::<usize>() == SOURCES
            && by.keys().all(|k| instances.contains(&k.as_str()))
            && instances.iter().all(|i| {
                let n = by.get(*i).copied().unwrap_or(0);
                (least..=most).contains(&n)
            });
        ok.then_some(by)
    })
    .await
}

/// Seconds from `since` until no slot is streamed by `gone` and every
/// source streams again.
async fn taken_over(env: &TestEnv, gone: &str, since: Instant) -> f64 {
    let (landlord, sources) = (env.landlord().await, Sources::of(env));
    let what = format!("the sources of {gone} streamed by the others");
    eventually_within(Duration::from_secs(90), &what, || async {
        let by = sources.streamers(&landlord).await;
        (by.values().sum::<usize>() == SOURCES && !by.contains_key(gone)).then_some(())
    })
    .await;
    since.elapsed().as_secs_f64()
}

async fn fleet(test: &str) -> Arc<TestEnv> {
    let env = TestEnv::new(test, TENANTS).await;
    env.write_config("");
    // The leases table exists before any instance starts (the watcher
    // reads it from the first moment).
    let (ok, output) = env.bridge_command(&["setup"]);
    assert!(ok, "setup failed: {output}");
    for index in 0..TENANTS {
        set_tenant_color(&env, index, "#000001").await;
    }
    Arc::new(env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_the_fleet_take_over_after_kill_and_sigterm_and_share_with_a_newcomer(
) {
    let env = fleet("instances_share").await;
    let mut a = env.start_instance("a", None, "");
    let mut b = env.start_instance("b", None, "");
    let mut c = env.start_instance("c", None, "");
    // 31 sources over 3 instances: 11, 10, 10.
    let by = spread(&env, &["a", "b", "c"], (10, 11)).await;
    println!("spread over three instances: {by:?}");
    let watcher = Watcher::start(&env).await;
    let writers = Writers::start(&env);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let killed = Instant::now();
    a.kill();
    let takeover = taken_over(&env, "a", killed).await;
    println!("kill -9: sources taken over in {takeover:.1} s");
    assert!(takeover <= 30.0, "takeover took {takeover:.1} s");
    spread(&env, &["b", "c"], (15, 16)).await;

    let mut d = env.start_instance("d", None, "");
    let by = spread(&env, &["b", "c", "d"], (10, 11)).await;
    println!("after d joined: {by:?}");

    let stopped = Instant::now();
    assert!(
        b.stop().success(),
        "b did not stop cleanly; log: {}",
        b.log.display()
    );
    let handover = taken_over(&env, "b", stopped).await;
    println!("SIGTERM: sources handed over in {handover:.1} s");
    assert!(handover < 5.0, "SIGTERM handover took {handover:.1} s");

    writers.finish_and_converge(&env).await;
    watcher.finish().await;
    for bridge in [&mut c, &mut d] {
        assert!(bridge.stop().success(), "log: {}", bridge.log.display());
    }
}

/// A TCP proxy to the test cluster that can be cut: a cut proxy keeps its
/// connections open and forwards nothing (a network partition, not a
/// refused connection; new connections hang in the startup).
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let is_cut = Arc::clone(&cut);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let is_cut = Arc::clone(&is_cut);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", pg_port())).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, &is_cut), pipe(sr, cw, &is_cut));
                });
            }
        });
        Proxy { port, cut }
    }
}

/// Copies `from` to `to` until either ends; while cut, what it read waits
/// (as TCP retransmits it). A walsender behind a cut proxy whose reader
/// let go stays active, as in a real partition until
/// `wal_sender_timeout`: the new owner has to end it.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: &AtomicBool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        while cut.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_cut_off_from_the_landlord_stops_streaming_before_its_lease_can_be_taken() {
    let env = fleet("instances_cut").await;
    let proxy = Proxy::start().await;
    let landlord_via_proxy = format!(
        "host=127.0.0.1 port={} user=postgres dbname={}",
        proxy.port, env.landlord_db
    );
    let mut p = env.start_instance("p", Some(&landlord_via_proxy), "");
    let mut q = env.start_instance("q", None, "");
    let by = spread(&env, &["p", "q"], (15, 16)).await;
    println!("spread over two instances: {by:?}");
    let watcher = Watcher::start(&env).await;
    let writers = Writers::start(&env);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let p_port = p.http_port().await;
    let ready = |port| async move {
        crate::support::http_request(port, "GET", "/ready", None, "")
            .await
            .unwrap_or_default()
    };
    assert!(
        ready(p_port).await.contains("200 OK"),
        "p not ready before the cut"
    );
    let cut = Instant::now();
    proxy.cut.store(true, Ordering::Relaxed);
    // p's tenant walsenders (not behind the proxy) must be gone while its
    // leases have not yet expired on the landlord's clock.
    let landlord = env.landlord().await;
    let (fenced_with_lease_left, fenced_after) = eventually_within(
        Duration::from_secs(60),
        "p's tenant walsenders gone",
        || async {
            let row = landlord
                .query_one(
                    "SELECT (SELECT count(*) FROM pg_stat_replication
                              WHERE application_name = 'inst_p' AND client_port IS NOT NULL
                                AND pid IN (SELECT active_pid FROM pg_replication_slots WHERE database <> current_database())),
                            (SELECT extract(epoch FROM min(expires_at) - now())::float8
                               FROM cdc_bridge.source_leases WHERE owner = 'p')",
                    &[],
                )
                .await
                .unwrap();
            let (walsenders, left): (i64, Option<f64>) = (row.get(0), row.get(1));
            (walsenders == 0).then(|| (left, cut.elapsed().as_secs_f64()))
        },
    )
    .await;
    println!("p stopped streaming {fenced_after:.1} s after the cut, its leases then had {fenced_with_lease_left:?} s left");
    assert!(
        fenced_with_lease_left.is_some_and(|left| left > 0.0),
        "p's walsenders outlived its leases ({fenced_with_lease_left:?} s left); log: {}",
        p.log.display()
    );
    let takeover = taken_over(&env, "p", cut).await;
    println!("cut off from the landlord: sources taken over in {takeover:.1} s");
    let answer = ready(p_port).await;
    assert!(
        answer.contains("503") && answer.contains("no current heartbeat"),
        "p cut off from the landlord still says it is ready: {answer}"
    );
    assert!(
        p.log_text()
            .contains("stopping every reader before the lease can pass"),
        "p never stopped its readers for want of a heartbeat; log: {}",
        p.log.display()
    );

    proxy.cut.store(false, Ordering::Relaxed);
    let by = spread(&env, &["p", "q"], (15, 16)).await;
    println!("after the landlord came back: {by:?}");
    writers.finish_and_converge(&env).await;
    watcher.finish().await;
    for bridge in [&mut p, &mut q] {
        assert!(bridge.stop().success(), "log: {}", bridge.log.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_waiting_for_a_reconcile_when_its_instance_dies_is_reconciled_by_another() {
    let env = TestEnv::new("instances_adopt", 3).await;
    env.write_config("");
    let (ok, output) = env.bridge_command(&["setup"]);
    assert!(ok, "setup failed: {output}");
    for index in 0..3 {
        set_tenant_color(&env, index, "#000001").await;
    }
    // No periodic check: it would repair the tenant on its own.
    let no_check = "[check]\ninterval_secs = 0\n";
    let mut a = env.start_instance("a", None, no_check);
    let mut b = env.start_instance("b", None, no_check);
    for index in 0..3 {
        eventually_within(Duration::from_secs(90), "the first sync", || async {
            (landlord_color(&env, index).await.as_deref() == Some("#000001")).then_some(())
        })
        .await;
    }
    // Each instance's applier reconciles every tenant once at its start: a
    // reconcile still pending in the survivor would hide the adoption.
    for bridge in [&a, &b] {
        for id in ["tenant=1 ", "tenant=2 ", "tenant=3 "] {
            bridge.wait_log_lines(&["tenant reconciled", id], 1).await;
        }
    }
    let database = env.tenants[0].database.clone();
    let admin = crate::support::connect("postgres").await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        ))
        .await
        .unwrap();
    set_landlord_color(&env, 0, "#abcdef").await;
    let landlord = env.landlord().await;
    let saved_owner = || async {
        let row = landlord
            .query_opt(
                "SELECT owner FROM cdc_bridge.tenant_sync_state WHERE tenant_id = '1' AND state = 'unreachable'",
                &[],
            )
            .await
            .unwrap();
        row.map(|r| r.get::<_, String>(0))
    };
    eventually_within(
        Duration::from_secs(60),
        "tenant 1 saved as unreachable",
        saved_owner,
    )
    .await;
    // The skipped change's offset committed: the owner cannot change any
    // more (a rebalance under way may have refused the first commit, and
    // the partition's next owner then skipped and saved it again).
    env.wait_applier_caught_up().await;
    let owner = saved_owner()
        .await
        .expect("tenant 1 still saved as unreachable");
    let (dead, survivor) = if owner == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.kill();
    admin
        .batch_execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    eventually_within(
        Duration::from_secs(90),
        "the survivor reconciling tenant 1",
        || async { (tenant_color(&env, 0).await.as_deref() == Some("#abcdef")).then_some(()) },
    )
    .await;
    assert!(
        survivor
            .log_text()
            .contains("adopting a tenant waiting for a reconcile"),
        "log: {}",
        survivor.log.display()
    );
    let left: i64 = landlord
        .query_one("SELECT count(*) FROM cdc_bridge.tenant_sync_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "every waiting tenant reconciled and forgotten");
    assert!(survivor.stop().success(), "log: {}", survivor.log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_periodic_check_runs_on_one_instance_per_interval_and_every_instance_shows_its_result()
{
    let env = TestEnv::new("instances_check", 2).await;
    env.write_config("");
    for index in 0..2 {
        set_tenant_color(&env, index, "#000001").await;
    }
    let every_two_seconds = "[check]\ninterval_secs = 2\nrate = 0\n";
    let a = env.start_instance("a", None, every_two_seconds);
    let b = env.start_instance("b", None, every_two_seconds);
    let runs = || {
        a.log_lines_with(&["consistency check done"])
            + b.log_lines_with(&["consistency check done"])
    };
    eventually_within(Duration::from_secs(60), "a first check", || async {
        (runs() > 0).then_some(())
    })
    .await;
    let (first, started) = (runs(), Instant::now());
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (done, seconds) = (runs() - first, started.elapsed().as_secs_f64());
    println!("{done} checks in {seconds:.1} s over two instances with an interval of 2 s");
    // One instance per interval: about seconds / 2; each on its own would
    // make it twice that.
    assert!(
        done >= 3,
        "the check stopped running: {done} in {seconds:.1} s"
    );
    assert!(
        (done as f64) <= seconds / 2.0 + 2.0,
        "both instances run the check: {done} in {seconds:.1} s"
    );
    for bridge in [&a, &b] {
        let port = bridge.http_port().await;
        let status = crate::support::http_request(port, "GET", "/status", None, "")
            .await
            .unwrap_or_default();
        assert!(
            status.contains("\"last_check\":{"),
            "no last check in /status of {}: {status}",
            bridge.log.display()
        );
    }
}
