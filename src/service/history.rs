//! The last hour in memory, for the dashboard's plots (`GET
//! /status/history`) and the event rates of `/status`: every
//! `SAMPLE_INTERVAL` one point is taken from the metrics and the status
//! board into a ring of `POINTS` points. No Prometheus needed.
//!
//! ```text
//!  every 10 s: counters now − counters at the previous point ─► rates
//!              latency histogram buckets now − previous        ─► p50, p99
//!              max slot lag, total consumer lag                ─► as they are
//!  ring: 360 points (one hour); the oldest falls out
//! ```

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Metric};
use serde::Serialize;

use crate::model::Side;
use crate::runtime::metrics::metrics;
use crate::runtime::status::{status, Snapshot};
use crate::service::status::Rates;

pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
pub(crate) const POINTS: usize = 360;
/// The window of the event rates in `/status`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    /// Unix time, seconds.
    t: f64,
    /// Change events acknowledged by Kafka per second (into the topic).
    events_in: f64,
    /// Events applied per second into the landlord (tenant → landlord)…
    to_landlord: f64,
    /// … and into tenant databases (landlord → tenant).
    to_tenant: f64,
    /// The largest slot lag, bytes and seconds.
    replication_lag_bytes: u64,
    replication_lag_seconds: f64,
    /// Messages of the change topic not applied yet.
    consumer_lag: i64,
    /// End-to-end latency since the previous point (`null`: no events).
    latency_p50: Option<f64>,
    latency_p99: Option<f64>,
}

/// Cumulative counters at a point, to difference against the next one.
#[derive(Debug, Clone)]
struct Totals {
    at: Instant,
    produced: u64,
    to_landlord: u64,
    to_tenant: u64,
    /// (upper bound, cumulative count) of the latency histogram.
    latency: Vec<(f64, u64)>,
}

impl Totals {
    fn now() -> Totals {
        let histogram = metrics().end_to_end_seconds.metric();
        let latency = histogram
            .get_histogram()
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        let produced = metrics()
            .events_produced
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum();
        Totals {
            at: Instant::now(),
            produced,
            to_landlord: status().applied(Side::Landlord),
            to_tenant: status().applied(Side::Tenant),
            latency,
        }
    }
}

#[derive(Default)]
struct Ring {
    points: VecDeque<Point>,
    /// The totals of each point, same order.
    totals: VecDeque<Totals>,
}

/// The ring, shared by the sampler and the HTTP handlers.
#[derive(Default)]
pub(crate) struct History {
    ring: Mutex<Ring>,
}

fn per_second(now: u64, before: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        0.0
    } else {
        now.saturating_sub(before) as f64 / seconds
    }
}

/// The `q` quantile of the observations between two cumulative bucket
/// lists, interpolated inside the bucket as Prometheus'
/// `histogram_quantile` does; `None` without observations.
fn quantile(q: f64, now: &[(f64, u64)], before: &[(f64, u64)]) -> Option<f64> {
    let counts: Vec<(f64, u64)> = now
        .iter()
        .enumerate()
        .map(|(i, (bound, c))| (*bound, c.saturating_sub(before.get(i).map_or(0, |b| b.1))))
        .collect();
    let total = counts.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for (bound, cumulative) in counts {
        if cumulative as f64 >= rank {
            let inside = (cumulative - below) as f64;
            let fraction = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        (lower, below) = (bound, cumulative);
    }
    // Beyond the last finite bucket: its bound is the best estimate.
    Some(lower)
}

impl History {
    /// Takes one point.
    pub(crate) fn sample(&self) {
        let totals = Totals::now();
        let snapshot = status().snapshot();
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let point = match ring.totals.back() {
            Some(before) => point_between(&snapshot, before, &totals),
            None => point_between(&snapshot, &totals, &totals),
        };
        if ring.points.len() == POINTS {
            ring.points.pop_front();
            ring.totals.pop_front();
        }
        ring.points.push_back(point);
        ring.totals.push_back(totals);
    }

    /// Every point, oldest first, as JSON.
    pub(crate) fn json(&self) -> String {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let body = serde_json::json!({
            "interval_seconds": SAMPLE_INTERVAL.as_secs(),
            "points": ring.points,
        });
        body.to_string()
    }

    /// Events in and out per second over about the last minute: now against
    /// the newest point at least a minute old (or the oldest there is).
    pub(crate) fn rates(&self) -> Rates {
        let now = Totals::now();
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let before = ring
            .totals
            .iter()
            .rev()
            .find(|t| now.at.duration_since(t.at) >= RATE_WINDOW)
            .or(ring.totals.front());
        let Some(before) = before else {
            return Rates::default();
        };
        let seconds = now.at.duration_since(before.at).as_secs_f64();
        let out_now = now.to_landlord + now.to_tenant;
        Rates {
            events_in_per_second: per_second(now.produced, before.produced, seconds),
            events_out_per_second: per_second(
                out_now,
                before.to_landlord + before.to_tenant,
                seconds,
            ),
            window_seconds: seconds,
        }
    }
}

fn point_between(snapshot: &Snapshot, before: &Totals, now: &Totals) -> Point {
    let seconds = now.at.duration_since(before.at).as_secs_f64();
    let lag_bytes = snapshot.readers.values().map(|r| r.lag_bytes).max();
    let lag_seconds = snapshot.readers.values().map(|r| r.lag_seconds);
    Point {
        t: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        events_in: per_second(now.produced, before.produced, seconds),
        to_landlord: per_second(now.to_landlord, before.to_landlord, seconds),
        to_tenant: per_second(now.to_tenant, before.to_tenant, seconds),
        replication_lag_bytes: lag_bytes.unwrap_or(0),
        replication_lag_seconds: lag_seconds.fold(0.0, f64::max),
        consumer_lag: snapshot.consumer_lag.values().sum(),
        latency_p50: quantile(0.5, &now.latency, &before.latency),
        latency_p99: quantile(0.99, &now.latency, &before.latency),
    }
}

/// Samples until `shutdown`.
pub(crate) async fn run(
    history: std::sync::Arc<History>,
    mut shutdown: crate::runtime::shutdown::Shutdown,
) {
    loop {
        history.sample();
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
            _ = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_of_the_new_observations() {
        let before = [(0.1, 10), (1.0, 10), (10.0, 10)];
        // Since `before`: 10 observations, all between 0.1 and 1 s.
        let now = [(0.1, 10), (1.0, 20), (10.0, 20)];
        let p50 = quantile(0.5, &now, &before).unwrap();
        assert!((p50 - 0.55).abs() < 1e-9, "{p50}");
        assert_eq!(quantile(0.5, &before, &before), None);
    }

    #[test]
    fn rates_are_differences_over_time() {
        assert_eq!(per_second(30, 10, 10.0), 2.0);
        assert_eq!(per_second(5, 10, 10.0), 0.0);
        assert_eq!(per_second(5, 0, 0.0), 0.0);
    }
}
