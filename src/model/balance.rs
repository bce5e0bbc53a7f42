//! How sources are spread over the live instances: a pure plan from what
//! one instance sees (the live instances, the sources, what it holds), so
//! that every instance, deciding alone, moves towards the same spread.
//!
//! The instances, in id order, get `n / k` sources each and the first
//! `n % k` one more: quotas that add up to `n`, so once every instance
//! sees the same set of instances, each source has exactly one taker.

use std::collections::BTreeSet;

/// What one instance should do on this heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Held sources to give up (after their readers stopped): no longer
    /// wanted, or beyond this instance's quota.
    pub release: Vec<String>,
    /// Sources it may take if they are free, and how many at most.
    pub candidates: Vec<String>,
    pub take: usize,
}

/// This instance's share of `sources` among `live` (sorted ids; `me` is
/// counted even if missing, as it just beat).
pub fn quota(me: &str, live: &[String], sources: usize) -> usize {
    let mut live: Vec<&str> = live.iter().map(String::as_str).collect();
    if !live.contains(&me) {
        live.push(me);
        live.sort_unstable();
    }
    let k = live.len();
    let index = live.iter().position(|id| *id == me).unwrap_or(0);
    sources / k + usize::from(index < sources % k)
}

/// The plan for `me`, holding `held`, when `wanted` are the sources.
pub fn plan(me: &str, live: &[String], wanted: &BTreeSet<String>, held: &BTreeSet<String>) -> Plan {
    let share = quota(me, live, wanted.len());
    let mut release: Vec<String> = held.difference(wanted).cloned().collect();
    let kept: Vec<&String> = held.intersection(wanted).collect();
    if kept.len() > share {
        // The ones sorted last go, so repeated plans agree on which.
        release.extend(kept[share..].iter().map(|s| (*s).clone()));
        return Plan {
            release,
            ..Plan::default()
        };
    }
    Plan {
        release,
        candidates: wanted.difference(held).cloned().collect(),
        take: share - kept.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quotas_add_up_to_the_sources_and_differ_by_at_most_one() {
        for k in 1..7 {
            let live: Vec<String> = (0..k).map(|i| format!("i{i}")).collect();
            for n in 0..40 {
                let quotas: Vec<usize> = live.iter().map(|me| quota(me, &live, n)).collect();
                assert_eq!(quotas.iter().sum::<usize>(), n, "k={k} n={n}");
                let (min, max) = (quotas.iter().min(), quotas.iter().max());
                assert!(max.unwrap() - min.unwrap() <= 1, "k={k} n={n}: {quotas:?}");
            }
        }
    }

    #[test]
    fn an_instance_missing_from_the_list_counts_itself() {
        assert_eq!(quota("b", &ids(&["a"]), 4), 2);
        assert_eq!(quota("a", &ids(&[]), 3), 3);
    }

    #[test]
    fn a_lone_instance_takes_everything() {
        let wanted = set(&["s1", "s2", "s3"]);
        let p = plan("a", &ids(&["a"]), &wanted, &set(&[]));
        assert_eq!(p.take, 3);
        assert_eq!(p.candidates, ids(&["s1", "s2", "s3"]));
        assert!(p.release.is_empty());
    }

    #[test]
    fn a_joining_instance_makes_the_holder_give_up_its_excess() {
        let wanted = set(&["s1", "s2", "s3", "s4"]);
        let live = ids(&["a", "b"]);
        let holder = plan("a", &live, &wanted, &wanted);
        assert_eq!(holder.release, ids(&["s3", "s4"]));
        assert_eq!(holder.take, 0);
        let joiner = plan("b", &live, &wanted, &set(&[]));
        assert_eq!(joiner.take, 2);
    }

    #[test]
    fn sources_no_longer_wanted_are_released_and_do_not_count() {
        let wanted = set(&["s1", "s2"]);
        let p = plan("a", &ids(&["a"]), &wanted, &set(&["s1", "gone"]));
        assert_eq!(p.release, ids(&["gone"]));
        assert_eq!(p.take, 1);
        assert_eq!(p.candidates, ids(&["s2"]));
    }

    #[test]
    fn every_source_ends_with_exactly_one_owner_when_instances_agree() {
        // Rounds of plans with a free-for-all taking order, as leases do.
        let wanted: BTreeSet<String> = (0..30).map(|i| format!("s{i:02}")).collect();
        let live = ids(&["a", "b", "c"]);
        let mut held: Vec<BTreeSet<String>> = vec![wanted.clone(), set(&[]), set(&[])];
        for _ in 0..3 {
            for (i, me) in live.iter().enumerate() {
                let p = plan(me, &live, &wanted, &held[i]);
                for s in &p.release {
                    held[i].remove(s);
                }
                let taken: BTreeSet<String> = held.iter().flatten().cloned().collect();
                let free: Vec<String> = p
                    .candidates
                    .into_iter()
                    .filter(|s| !taken.contains(s))
                    .take(p.take)
                    .collect();
                held[i].extend(free);
            }
        }
        let all: Vec<&String> = held.iter().flatten().collect();
        assert_eq!(all.len(), 30);
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 30);
        assert!(held.iter().all(|h| h.len() == 10), "{held:?}");
    }
}
