//! The pool's bookkeeping: open connections, idle and leased, against the
//! caps, and which idle one to close to make room. Pure (generic over the
//! connection) so that it is tested without databases.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Limits;
use crate::applier::routing::Target;
use crate::runtime::metrics::metrics;

/// An idle connection with what the caps and the eviction order need.
pub(super) struct Idle<C> {
    pub(super) identity: String,
    pub(super) server: String,
    pub(super) last_used: Instant,
    pub(super) conn: C,
}

/// Open connections, idle and leased, against the caps.
pub(super) struct Counts<C> {
    limits: Limits,
    /// The landlord's identity: its idle connection is evicted last and
    /// never closed for idleness.
    pub(super) landlord: String,
    pub(super) idle: Vec<Idle<C>>,
    pub(super) leased: HashMap<String, usize>,
    /// Where each target was last leased (for `drop_target`).
    pub(super) routes: HashMap<Target, String>,
}

impl<C> Counts<C> {
    pub(super) fn new(limits: Limits, landlord: String) -> Self {
        Counts {
            limits,
            landlord,
            idle: Vec::new(),
            leased: HashMap::new(),
            routes: HashMap::new(),
        }
    }

    /// A lease for `identity` on `server`: `Some(Some(idle connection))`,
    /// `Some(None)` for room to open one, `None` when neither is there.
    pub(super) fn lease(&mut self, identity: &str, server: &str) -> Option<Option<C>> {
        let reuse = self
            .idle
            .iter()
            .enumerate()
            .filter(|(_, idle)| idle.identity == identity)
            .max_by_key(|(_, idle)| idle.last_used)
            .map(|(index, _)| index);
        let conn = match reuse {
            Some(index) => Some(self.idle.swap_remove(index).conn),
            None => {
                if !self.make_room(server) {
                    return None;
                }
                None
            }
        };
        *self.leased.entry(server.to_string()).or_default() += 1;
        Some(conn)
    }

    /// Closes idle connections until one more fits on `server`.
    fn make_room(&mut self, server: &str) -> bool {
        while self.open() >= self.limits.total {
            if !self.evict(None) {
                return false;
            }
        }
        while self.open_on(server) >= self.limits.per_server {
            if !self.evict(Some(server)) {
                return false;
            }
        }
        true
    }

    /// Closes the least recently used idle connection (on `server`, if
    /// given), the landlord's only when there is no other.
    fn evict(&mut self, server: Option<&str>) -> bool {
        let victim = self
            .idle
            .iter()
            .enumerate()
            .filter(|(_, idle)| server.is_none_or(|s| idle.server == s))
            .min_by_key(|(_, idle)| (idle.identity == self.landlord, idle.last_used))
            .map(|(index, _)| index);
        let Some(index) = victim else {
            return false;
        };
        self.idle.swap_remove(index);
        metrics().connection_evictions.inc();
        true
    }

    pub(super) fn end_lease(&mut self, identity: &str, server: &str, back: Option<C>) {
        if let Some(count) = self.leased.get_mut(server) {
            *count = count.saturating_sub(1);
        }
        if let Some(conn) = back {
            self.idle.push(Idle {
                identity: identity.to_string(),
                server: server.to_string(),
                last_used: Instant::now(),
                conn,
            });
        }
    }

    /// Whether a connection to `identity` waits idle (a lease of it would
    /// not open one, nor close another's).
    pub(super) fn has_idle(&self, identity: &str) -> bool {
        self.idle.iter().any(|idle| idle.identity == identity)
    }

    pub(super) fn open(&self) -> usize {
        self.idle.len() + self.leased.values().sum::<usize>()
    }

    pub(super) fn open_on(&self, server: &str) -> usize {
        let idle = self.idle.iter().filter(|i| i.server == server).count();
        idle + self.leased.get(server).copied().unwrap_or(0)
    }

    /// Closes connections idle for `idle`, but for the landlord's most
    /// recently used one (a burst of reconciles or checks may have opened
    /// more to it, which would otherwise stay and crowd out tenants').
    pub(super) fn close_idle(&mut self, idle: Duration) {
        let landlord = &self.landlord;
        let newest_landlord = self
            .idle
            .iter()
            .filter(|c| &c.identity == landlord)
            .map(|c| c.last_used)
            .max();
        self.idle.retain(|c| {
            let kept_landlord = &c.identity == landlord && Some(c.last_used) == newest_landlord;
            kept_landlord || c.last_used.elapsed() < idle
        });
    }

    /// Open connections per server, for `cdc_applier_connections`.
    pub(super) fn publish(&self) {
        let gauge = &metrics().connections;
        gauge.reset();
        for idle in &self.idle {
            gauge.with_label_values(&[idle.server.as_str()]).inc();
        }
        for (server, leased) in &self.leased {
            if *leased > 0 {
                gauge
                    .with_label_values(&[server.as_str()])
                    .add(*leased as i64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: usize, per_server: usize) -> Counts<&'static str> {
        Counts::new(Limits { total, per_server }, "landlord".to_string())
    }

    /// Leases `identity` on `server` and gives `name` back as its idle
    /// connection.
    fn use_once(
        counts: &mut Counts<&'static str>,
        identity: &str,
        server: &str,
        name: &'static str,
    ) {
        counts.lease(identity, server).expect("room");
        counts.end_lease(identity, server, Some(name));
    }

    #[test]
    fn only_a_connection_given_back_waits_idle() {
        let mut counts = counts(4, 4);
        assert!(!counts.has_idle("t|db1"));
        let leased = counts.lease("t|db1", "a:1").expect("room");
        assert!(!counts.has_idle("t|db1"), "leased, not idle");
        counts.end_lease("t|db1", "a:1", leased.or(Some("c1")));
        assert!(counts.has_idle("t|db1"));
        assert!(!counts.has_idle("t|db2"));
    }

    #[test]
    fn tenants_of_one_database_share_its_connection() {
        let mut counts = counts(4, 4);
        use_once(&mut counts, "t|db1", "a:1", "c1");
        assert_eq!(counts.lease("t|db1", "a:1"), Some(Some("c1")));
        assert_eq!(counts.open(), 1);
    }

    #[test]
    fn the_least_recently_used_idle_connection_makes_room_the_landlord_last() {
        let mut counts = counts(3, 3);
        use_once(&mut counts, "landlord", "a:1", "landlord");
        std::thread::sleep(Duration::from_millis(2));
        use_once(&mut counts, "t|db1", "a:1", "c1");
        std::thread::sleep(Duration::from_millis(2));
        use_once(&mut counts, "t|db2", "a:1", "c2");
        // Full: a new database evicts db1 (older than db2, and the
        // landlord, though oldest, goes last).
        assert_eq!(counts.lease("t|db3", "a:1"), Some(None));
        let idle: Vec<_> = counts.idle.iter().map(|i| i.conn).collect();
        assert!(
            idle.contains(&"landlord") && idle.contains(&"c2"),
            "{idle:?}"
        );
        assert_eq!(counts.open(), 3);
    }

    #[test]
    fn a_lease_waits_when_every_connection_is_leased() {
        let mut counts = counts(2, 2);
        assert!(counts.lease("t|db1", "a:1").is_some());
        assert!(counts.lease("t|db2", "a:1").is_some());
        assert_eq!(counts.lease("t|db3", "a:1"), None, "nothing to evict");
        counts.end_lease("t|db1", "a:1", None);
        assert_eq!(
            counts.lease("t|db3", "a:1"),
            Some(None),
            "room after a lease ends"
        );
    }

    #[test]
    fn the_per_server_cap_evicts_only_on_that_server() {
        let mut counts = counts(10, 2);
        use_once(&mut counts, "t|b1", "b:1", "b1");
        use_once(&mut counts, "t|a1", "a:1", "a1");
        use_once(&mut counts, "t|a2", "a:1", "a2");
        assert_eq!(counts.lease("t|a3", "a:1"), Some(None));
        let idle: Vec<_> = counts.idle.iter().map(|i| i.conn).collect();
        assert!(idle.contains(&"b1"), "other servers keep theirs: {idle:?}");
        assert_eq!(counts.open_on("a:1"), 2);
    }

    #[test]
    fn idle_connections_close_but_the_landlords_newest() {
        let mut counts = counts(10, 10);
        use_once(&mut counts, "landlord", "a:1", "l1");
        std::thread::sleep(Duration::from_millis(2));
        use_once(&mut counts, "landlord", "a:1", "l2");
        use_once(&mut counts, "t|db1", "a:1", "c1");
        std::thread::sleep(Duration::from_millis(300));
        use_once(&mut counts, "t|db2", "a:1", "c2");
        counts.close_idle(Duration::from_millis(250));
        let idle: Vec<_> = counts.idle.iter().map(|i| i.conn).collect();
        assert_eq!(idle, ["l2", "c2"], "db1 and the older landlord one closed");
    }
}
