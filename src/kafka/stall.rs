//! A consumer that holds partitions without fetching them. librdkafka can
//! leave a freshly assigned partition without a fetcher for good: when the
//! query for its committed offset meets a group coordinator that has just
//! moved or restarted, the answer is a request-level `NOT_COORDINATOR` with
//! no partitions in it, and the partition is never queried again
//! (librdkafka issue 5586, seen here once a broker restarted while the
//! applier was joining). The process looks healthy; the partition's
//! messages wait forever. A new consumer recovers from the committed
//! offsets.
//!
//! ```text
//!  every check interval, between batches:
//!    held partitions with messages waiting past what was applied ─► noted with their position
//!    noted at the last check too, at the same position            ─► stalled: a new consumer
//! ```
//! A partition that is merely behind moves between two checks; one that
//! waits on a failing target is not checked (the batch retries in place).

use std::collections::HashMap;

/// A partition of a topic.
pub type PartitionKey = (String, i32);

/// Where a held partition stands at a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub partition: PartitionKey,
    /// The first offset not applied yet (committed, or applied and about
    /// to be committed, whichever is further).
    pub next: i64,
    /// The partition's high watermark.
    pub end: i64,
}

/// The partitions that had messages waiting at the last check.
#[derive(Debug, Default)]
pub struct StallWatch {
    waiting: HashMap<PartitionKey, i64>,
}

impl StallWatch {
    /// Takes one check's standings; returns the partitions that had
    /// messages waiting at the previous check as well, from the same
    /// position: nothing of theirs was applied for a whole interval.
    pub fn check(&mut self, standings: &[Standing]) -> Vec<PartitionKey> {
        let previous = std::mem::take(&mut self.waiting);
        let mut stalled = Vec::new();
        for standing in standings.iter().filter(|s| s.end > s.next) {
            if previous.get(&standing.partition) == Some(&standing.next) {
                stalled.push(standing.partition.clone());
            }
            self.waiting
                .insert(standing.partition.clone(), standing.next);
        }
        stalled
    }

    /// A new consumer starts with a clean slate.
    pub fn reset(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, next: i64, end: i64) -> Standing {
        Standing {
            partition: ("changes".into(), partition),
            next,
            end,
        }
    }

    #[test]
    fn a_partition_waiting_at_the_same_position_for_two_checks_is_stalled() {
        let mut watch = StallWatch::default();
        assert!(watch.check(&[at(0, 10, 15)]).is_empty(), "first sight");
        assert_eq!(watch.check(&[at(0, 10, 17)]), [("changes".to_string(), 0)]);
    }

    #[test]
    fn a_partition_that_moved_between_checks_is_only_behind() {
        let mut watch = StallWatch::default();
        watch.check(&[at(0, 10, 15)]);
        assert!(watch.check(&[at(0, 12, 40)]).is_empty());
        assert!(watch.check(&[at(0, 40, 80)]).is_empty());
    }

    #[test]
    fn a_partition_with_nothing_waiting_is_never_stalled() {
        let mut watch = StallWatch::default();
        for _ in 0..3 {
            assert!(watch.check(&[at(0, 15, 15), at(1, 0, 0)]).is_empty());
        }
    }

    #[test]
    fn a_partition_must_wait_at_consecutive_checks() {
        let mut watch = StallWatch::default();
        watch.check(&[at(0, 10, 15)]);
        watch.check(&[at(0, 15, 15)]);
        assert!(
            watch.check(&[at(0, 15, 20)]).is_empty(),
            "caught up in between: a new message, not a stall"
        );
    }

    #[test]
    fn only_the_stalled_partitions_are_named_and_a_reset_forgets() {
        let mut watch = StallWatch::default();
        watch.check(&[at(0, 10, 15), at(1, 3, 9)]);
        assert_eq!(
            watch.check(&[at(0, 11, 15), at(1, 3, 9)]),
            [("changes".to_string(), 1)]
        );
        watch.reset();
        assert!(watch.check(&[at(1, 3, 9)]).is_empty());
    }
}
