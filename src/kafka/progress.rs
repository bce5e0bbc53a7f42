//! Acknowledgement tracking: which source position may be confirmed to
//! PostgreSQL. A transaction's end LSN becomes confirmable only when every
//! event of it, and of every transaction before it, has been acknowledged by
//! Kafka. Nothing else moves a slot.
//!
//! ```text
//!   txn 1 [ev ev ev] committed, all acked   ──► confirmable = end_lsn(1)
//!   txn 2 [ev ev]    committed, 1 pending   ──► stop here
//!   txn 3 [ev]       committed, all acked   ──► waits for txn 2
//! ```

use std::collections::VecDeque;

use crate::model::Lsn;

/// Identifies a transaction inside one tracker (a running counter).
pub type TxnSeq = u64;

#[derive(Debug)]
struct PendingTxn {
    seq: TxnSeq,
    outstanding: usize,
    /// Set at Commit; until then more events may still arrive.
    end_lsn: Option<Lsn>,
    /// When it was read (for the lag in seconds).
    began: std::time::Instant,
}

/// Per-slot record of unacknowledged work.
#[derive(Debug, Default)]
pub struct AckTracker {
    pending: VecDeque<PendingTxn>,
    next_seq: TxnSeq,
    confirmable: Lsn,
}

impl AckTracker {
    pub fn new(start: Lsn) -> Self {
        AckTracker {
            pending: VecDeque::new(),
            next_seq: 0,
            confirmable: start,
        }
    }

    /// A transaction started (Begin, or a snapshot batch).
    pub fn begin(&mut self) -> TxnSeq {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(PendingTxn {
            seq,
            outstanding: 0,
            end_lsn: None,
            began: std::time::Instant::now(),
        });
        seq
    }

    /// An event of transaction `seq` was handed to Kafka.
    pub fn sent(&mut self, seq: TxnSeq) {
        if let Some(txn) = self.find(seq) {
            txn.outstanding += 1;
        }
    }

    /// Kafka acknowledged one event of transaction `seq`.
    pub fn acked(&mut self, seq: TxnSeq) {
        if let Some(txn) = self.find(seq) {
            txn.outstanding = txn.outstanding.saturating_sub(1);
        }
        self.advance();
    }

    /// The transaction committed at `end_lsn`; no more events will come.
    pub fn commit(&mut self, seq: TxnSeq, end_lsn: Lsn) {
        if let Some(txn) = self.find(seq) {
            txn.end_lsn = Some(end_lsn);
        }
        self.advance();
    }

    /// Highest position whose every event Kafka has acknowledged.
    pub fn confirmable(&self) -> Lsn {
        self.confirmable
    }

    /// How long ago the oldest transaction still waiting for Kafka was
    /// read; zero when none waits.
    pub fn oldest_pending_age(&self) -> std::time::Duration {
        self.pending
            .front()
            .map_or(std::time::Duration::ZERO, |txn| txn.began.elapsed())
    }

    /// True when no event is waiting for Kafka and no transaction is open.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// With nothing pending, a position the server reports (keepalive
    /// `wal_end`) holds no change of ours and can be confirmed, so that an
    /// idle slot does not retain WAL.
    pub fn idle_advance(&mut self, server_position: Lsn) {
        if self.is_idle() && server_position > self.confirmable {
            self.confirmable = server_position;
        }
    }

    fn find(&mut self, seq: TxnSeq) -> Option<&mut PendingTxn> {
        // Sequences are increasing, so the front is the oldest.
        let front = self.pending.front()?.seq;
        let index = usize::try_from(seq.checked_sub(front)?).ok()?;
        self.pending.get_mut(index)
    }

    fn advance(&mut self) {
        while let Some(txn) = self.pending.front() {
            match txn.end_lsn {
                Some(end) if txn.outstanding == 0 => {
                    self.confirmable = self.confirmable.max(end);
                    self.pending.pop_front();
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_a_transaction_only_after_all_its_events_are_acked() {
        let mut t = AckTracker::new(Lsn(10));
        let a = t.begin();
        t.sent(a);
        t.sent(a);
        t.commit(a, Lsn(100));
        assert_eq!(t.confirmable(), Lsn(10));
        t.acked(a);
        assert_eq!(t.confirmable(), Lsn(10));
        t.acked(a);
        assert_eq!(t.confirmable(), Lsn(100));
        assert!(t.is_idle());
    }

    #[test]
    fn a_later_acked_transaction_waits_for_an_earlier_one() {
        let mut t = AckTracker::new(Lsn(0));
        let a = t.begin();
        t.sent(a);
        t.commit(a, Lsn(100));
        let b = t.begin();
        t.sent(b);
        t.commit(b, Lsn(200));
        t.acked(b);
        assert_eq!(t.confirmable(), Lsn(0));
        t.acked(a);
        assert_eq!(t.confirmable(), Lsn(200));
    }

    #[test]
    fn an_open_transaction_is_never_confirmed_even_when_acked() {
        let mut t = AckTracker::new(Lsn(0));
        let a = t.begin();
        t.sent(a);
        t.acked(a);
        assert_eq!(t.confirmable(), Lsn(0));
        assert!(!t.is_idle());
        t.commit(a, Lsn(50));
        assert_eq!(t.confirmable(), Lsn(50));
    }

    #[test]
    fn an_empty_committed_transaction_is_confirmed_at_once() {
        let mut t = AckTracker::new(Lsn(0));
        let a = t.begin();
        t.commit(a, Lsn(70));
        assert_eq!(t.confirmable(), Lsn(70));
    }

    #[test]
    fn keepalive_position_is_confirmed_only_when_idle() {
        let mut t = AckTracker::new(Lsn(0));
        let a = t.begin();
        t.sent(a);
        t.idle_advance(Lsn(500));
        assert_eq!(t.confirmable(), Lsn(0));
        t.commit(a, Lsn(100));
        t.acked(a);
        t.idle_advance(Lsn(500));
        assert_eq!(t.confirmable(), Lsn(500));
        t.idle_advance(Lsn(400));
        assert_eq!(t.confirmable(), Lsn(500), "never moves backwards");
    }
}
