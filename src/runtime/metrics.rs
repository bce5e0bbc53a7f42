//! Prometheus metrics. Names live here, in one place; label values are
//! database or tenant names and outcomes, never row values.

use std::sync::OnceLock;

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

pub const EVENTS_PRODUCED: &str = "cdc_reader_events_produced_total";
pub const CONFIRMED_LSN: &str = "cdc_reader_confirmed_lsn";
pub const REPLICATION_LAG_BYTES: &str = "cdc_replication_lag_bytes";
pub const SOURCE_UP: &str = "cdc_source_up";
pub const ECHO_SUPPRESSED: &str = "cdc_reader_echo_suppressed_total";
pub const TARGET_UP: &str = "cdc_applier_target_up";
pub const KAFKA_UP: &str = "cdc_kafka_up";
pub const SOURCES_OWNED: &str = "cdc_sources_owned";
pub const INSTANCES_LIVE: &str = "cdc_instances_live";
pub const SLOT_RECREATED: &str = "cdc_reader_slot_recreated_total";
pub const EVENTS_APPLIED: &str = "cdc_applier_events_total";
pub const END_TO_END_SECONDS: &str = "cdc_end_to_end_latency_seconds";
pub const REJECTED_VERSIONS: &str = "cdc_applier_rejected_versions_total";
pub const OVERSIZED_EVENTS: &str = "cdc_reader_oversized_events_total";
pub const CONNECTIONS: &str = "cdc_applier_connections";
pub const CONNECTION_EVICTIONS: &str = "cdc_applier_connection_evictions_total";
pub const CONNECTION_WAITS: &str = "cdc_applier_connection_waits_total";
pub const BATCH_SIZE: &str = "cdc_applier_batch_size";
pub const APPLY_SECONDS: &str = "cdc_applier_apply_duration_seconds";
pub const TARGETS_IN_FLIGHT: &str = "cdc_applier_targets_in_flight";
pub const CONNECTION_OPEN_SECONDS: &str = "cdc_applier_connection_open_seconds";
pub const CHECK_TENANTS: &str = "cdc_check_tenants";
pub const CHECK_INCONSISTENT_RATIO: &str = "cdc_check_inconsistent_ratio";
pub const CHECK_LAST_RUN: &str = "cdc_check_last_run_timestamp_seconds";
pub const CHECK_DURATION: &str = "cdc_check_last_run_duration_seconds";
pub const CHECK_REPAIRS: &str = "cdc_check_repairs_total";
pub const CONSUMER_LAG: &str = "cdc_applier_consumer_lag";
pub const REPLICATION_LAG_SECONDS: &str = "cdc_replication_lag_seconds";
pub const DEAD_LETTERS_WAITING: &str = "cdc_dead_letters_waiting";
pub const ADMIN_ACTIONS: &str = "cdc_admin_actions_total";
pub const BATCH_FAILURES: &str = "cdc_applier_batch_failures_total";
pub const CONSUMER_RENEWALS: &str = "cdc_applier_consumer_renewals_total";

/// What the applier did with a Kafka event (the `outcome` label of
/// `cdc_applier_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventOutcome {
    /// Written to the target.
    Applied,
    /// The target already held this version or a newer one.
    Stale,
    /// The tenant is paused.
    Paused,
    /// The tenant's direction excludes changes from this side.
    DirectionOff,
    /// The target database is unreachable; a reconcile brings it later.
    Deferred,
    /// Sent to the dead-letter topic.
    DeadLetter,
}

impl EventOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Applied => "applied",
            EventOutcome::Stale => "stale",
            EventOutcome::Paused => "paused",
            EventOutcome::DirectionOff => "direction_off",
            EventOutcome::Deferred => "deferred",
            EventOutcome::DeadLetter => "dead_letter",
        }
    }
}

/// Counts `n` applier events with one outcome.
pub(crate) fn count_events(outcome: EventOutcome, n: u64) {
    metrics()
        .events_applied
        .with_label_values(&[outcome.as_str()])
        .inc_by(n);
}

/// Every metric of the process.
pub struct Metrics {
    pub registry: Registry,
    /// Events handed to Kafka and acknowledged, by source database.
    pub events_produced: IntCounterVec,
    /// Last LSN confirmed to PostgreSQL, by slot.
    pub confirmed_lsn: IntGaugeVec,
    /// Bytes of WAL between the server's position and the confirmed LSN, by slot.
    pub replication_lag_bytes: IntGaugeVec,
    /// 1 while the reader of a database is streaming, by database.
    pub source_up: IntGaugeVec,
    /// Slots found dropped or invalidated and created again (with a snapshot).
    pub slot_recreated: IntCounterVec,
    /// 0 after the producer lost every broker, 1 again after a delivery.
    pub kafka_up: prometheus::IntGauge,
    /// Sources whose lease this instance holds.
    pub sources_owned: prometheus::IntGauge,
    /// Instances with a current heartbeat, as this one saw at its last.
    pub instances_live: prometheus::IntGauge,
    /// 0 while the applier cannot reach a tenant database, by database.
    pub target_up: IntGaugeVec,
    /// Row events dropped because the applier wrote them (loop prevention).
    pub echo_suppressed: IntCounterVec,
    /// Applied Kafka events by [`EventOutcome`].
    pub events_applied: IntCounterVec,
    /// Source commit to target commit.
    pub end_to_end_seconds: Histogram,
    /// Changes refused for a version in the future beyond the skew bound.
    pub rejected_versions: prometheus::IntCounter,
    /// Change events too large to send (noted on the dead-letter topic), by
    /// source database.
    pub oversized_events: IntCounterVec,
    /// The last consistency check's result.
    pub check: CheckMetrics,
    /// Batches: how big, how long to apply, how many targets at once.
    pub batches: BatchMetrics,
    /// Open target connections (idle in the pool and leased) by server.
    pub connections: IntGaugeVec,
    /// Idle connections closed to stay within the connection limits.
    pub connection_evictions: prometheus::IntCounter,
    /// Leases of a target connection that waited because the connection
    /// limits were reached.
    pub connection_waits: prometheus::IntCounter,
    /// High watermark minus the applier's committed offset, by partition.
    pub consumer_lag: IntGaugeVec,
    /// Age of the oldest change read and not yet acknowledged by Kafka, by slot.
    pub replication_lag_seconds: GaugeVec,
    /// Dead letters not re-driven yet (all partitions of `<topic>.dlq`).
    pub dead_letters_waiting: prometheus::IntGauge,
    /// Dashboard and HTTP actions by action and outcome (`service::actions`).
    pub admin_actions: IntCounterVec,
    /// Applier batches that failed and were retried.
    pub batch_failures: prometheus::IntCounter,
    /// Applier consumers replaced because they held partitions they did
    /// not fetch (`kafka::stall`).
    pub consumer_renewals: prometheus::IntCounter,
}

/// The applier's batches (`applier::consume`, `applier::fanout`).
pub struct BatchMetrics {
    /// Kafka messages per applied batch.
    pub size: Histogram,
    /// From a batch received to its offsets committed (retries included).
    pub apply_seconds: Histogram,
    /// Tenant databases being written at this moment.
    pub targets_in_flight: prometheus::IntGauge,
    /// Opening a target connection (connect, authorise, prepare): what a
    /// batch pays per database beyond the caps' open connections.
    pub connection_open_seconds: Histogram,
}

impl BatchMetrics {
    fn new(r: &Registrar<'_>) -> BatchMetrics {
        let sizes = vec![
            1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
        ];
        let seconds = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ];
        BatchMetrics {
            size: r.histogram(BATCH_SIZE, "Kafka messages per applied batch", sizes),
            apply_seconds: r.histogram(
                APPLY_SECONDS,
                "Time to apply a batch and commit its offsets",
                seconds.clone(),
            ),
            targets_in_flight: r.gauge(
                TARGETS_IN_FLIGHT,
                "Tenant databases the applier is writing at this moment",
            ),
            connection_open_seconds: r.histogram(
                CONNECTION_OPEN_SECONDS,
                "Time to open a target connection (connect, authorise the bridge's writes, prepare)",
                seconds,
            ),
        }
    }
}

/// The periodic consistency check's metrics (`consistency::periodic`).
pub struct CheckMetrics {
    /// Tenants per state of the last completed check.
    pub tenants: IntGaugeVec,
    /// Divergent tenants / tenants whose sides were compared.
    pub inconsistent_ratio: prometheus::Gauge,
    /// Unix time the last check completed; stays put while checks fail.
    pub last_run: prometheus::Gauge,
    pub duration_seconds: prometheus::Gauge,
    /// Tenants made consistent by a repair.
    pub repairs: prometheus::IntCounter,
}

/// Registers a metric built from this file's constant names and help
/// texts: a failure is a programming error, which the first test that
/// touches the metrics reports.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

/// Builds and registers the metrics of one registry.
struct Registrar<'r>(&'r Registry);

impl Registrar<'_> {
    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        registered(self.0, IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        registered(self.0, IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn counter(&self, name: &str, help: &str) -> prometheus::IntCounter {
        registered(self.0, prometheus::IntCounter::new(name, help))
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::IntGauge {
        registered(self.0, prometheus::IntGauge::new(name, help))
    }

    fn float(&self, name: &str, help: &str) -> prometheus::Gauge {
        registered(self.0, prometheus::Gauge::new(name, help))
    }

    fn floats(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        registered(self.0, GaugeVec::new(Opts::new(name, help), labels))
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        registered(
            self.0,
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
        )
    }
}

impl CheckMetrics {
    fn new(r: &Registrar<'_>) -> CheckMetrics {
        CheckMetrics {
            tenants: r.gauges(
                CHECK_TENANTS,
                "Tenants per state in the last consistency check",
                &["state"],
            ),
            inconsistent_ratio: r.float(
                CHECK_INCONSISTENT_RATIO,
                "Divergent tenants over compared tenants in the last consistency check",
            ),
            last_run: r.float(
                CHECK_LAST_RUN,
                "Unix time the last consistency check completed",
            ),
            duration_seconds: r.float(CHECK_DURATION, "How long the last consistency check took"),
            repairs: r.counter(
                CHECK_REPAIRS,
                "Tenants made consistent by a repair of the consistency check",
            ),
        }
    }
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let kafka_up = r.gauge(KAFKA_UP, "0 while Kafka is unreachable");
        kafka_up.set(1);
        let end_to_end_seconds = r.histogram(
            END_TO_END_SECONDS,
            "Source commit to target commit",
            vec![
                0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0,
            ],
        );
        Metrics {
            events_produced: r.counters(
                EVENTS_PRODUCED,
                "Change events acknowledged by Kafka",
                &["database"],
            ),
            confirmed_lsn: r.gauges(CONFIRMED_LSN, "LSN confirmed to PostgreSQL", &["slot"]),
            replication_lag_bytes: r.gauges(
                REPLICATION_LAG_BYTES,
                "WAL bytes not yet confirmed",
                &["slot"],
            ),
            source_up: r.gauges(
                SOURCE_UP,
                "1 while the database is streaming",
                &["database"],
            ),
            slot_recreated: r.counters(
                SLOT_RECREATED,
                "Replication slots lost and created again",
                &["database"],
            ),
            kafka_up,
            sources_owned: r.gauge(SOURCES_OWNED, "Sources this instance streams (holds the lease of)"),
            instances_live: r.gauge(INSTANCES_LIVE, "Bridge instances with a current heartbeat"),
            target_up: r.gauges(
                TARGET_UP,
                "0 while the applier cannot reach the database",
                &["database"],
            ),
            echo_suppressed: r.counters(
                ECHO_SUPPRESSED,
                "Row events of the applier's own transactions, not re-sent",
                &["database"],
            ),
            events_applied: r.counters(
                EVENTS_APPLIED,
                "Kafka events handled by the applier",
                &["outcome"],
            ),
            end_to_end_seconds,
            rejected_versions: r.counter(
                REJECTED_VERSIONS,
                "Changes refused because their version lies too far in the future",
            ),
            oversized_events: r.counters(
                OVERSIZED_EVENTS,
                "Change events larger than kafka.max_message_bytes, noted on the dead-letter topic instead",
                &["database"],
            ),
            connections: r.gauges(
                CONNECTIONS,
                "Connections the applier keeps open, by server",
                &["server"],
            ),
            connection_evictions: r.counter(
                CONNECTION_EVICTIONS,
                "Idle applier connections closed to stay within applier.max_connections(_per_server)",
            ),
            connection_waits: r.counter(
                CONNECTION_WAITS,
                "Leases of a target connection that waited for a free one (the caps were reached)",
            ),
            consumer_lag: r.gauges(
                CONSUMER_LAG,
                "Messages of the change topic not yet applied (high watermark minus committed offset), by partition",
                &["partition"],
            ),
            replication_lag_seconds: r.floats(
                REPLICATION_LAG_SECONDS,
                "Seconds since the oldest change read from the slot and not yet acknowledged by Kafka",
                &["slot"],
            ),
            dead_letters_waiting: r.gauge(
                DEAD_LETTERS_WAITING,
                "Dead letters not re-driven yet",
            ),
            admin_actions: r.counters(
                ADMIN_ACTIONS,
                "Actions taken through the HTTP endpoint or dashboard, by action and outcome",
                &["action", "outcome"],
            ),
            batch_failures: r.counter(
                BATCH_FAILURES,
                "Applier batches that failed (retried with backoff)",
            ),
            consumer_renewals: r.counter(
                CONSUMER_RENEWALS,
                "Applier Kafka consumers replaced because partitions with messages waiting were not fetched",
            ),
            check: CheckMetrics::new(&r),
            batches: BatchMetrics::new(&r),
            registry,
        }
    }

    /// Text exposition for `/metrics`.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
