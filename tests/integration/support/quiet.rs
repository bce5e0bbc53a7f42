//! Markers for "nothing (more) is on its way": a check that something did
//! not happen counts only once these say it would have happened by now.
//!
//! * The readers confirmed a position taken after the action: every change
//!   up to it (echoes included) was read and acknowledged by Kafka, or
//!   dropped.
//! * The applier's consumer group committed the end of the change topic:
//!   every message there was applied, skipped or dead-lettered (offsets
//!   are committed only after the target transaction).

use super::env::TestEnv;
use super::eventually;
use super::postgres::{confirmed_lsn, current_lsn, lsn, lsn_text};

impl TestEnv {
    /// The applier's consumer group (see `write_config`).
    pub(crate) fn consumer_group(&self) -> String {
        format!("{}_applier", self.prefix)
    }

    /// Waits until the applier handled every message the change topic
    /// holds at the time of each check.
    pub(crate) async fn wait_applier_caught_up(&self) {
        let group = self.consumer_group();
        let what = format!("the applier (group {group}) at the end of {}", self.topic);
        eventually(&what, || async {
            self.topic.consumed_to_end_by(&group).then_some(())
        })
        .await;
    }

    /// Waits until the slot of `database` confirmed the WAL position the
    /// server is at now.
    pub(crate) async fn wait_confirmed_now(&self, database: &str) {
        let client = super::connect(database).await;
        let target = current_lsn(&client).await;
        let what = format!("the slot of {database} confirmed past {}", lsn_text(target));
        eventually(&what, || async {
            confirmed_lsn(&client)
                .await
                .filter(|confirmed| *confirmed >= target)
        })
        .await;
    }

    /// Waits until everything done so far went the whole way: the applier
    /// applied what the topic holds, every reader confirmed past those
    /// applies (so an echo would be in the topic), and the applier handled
    /// that too.
    pub(crate) async fn wait_settled(&self) {
        self.wait_applier_caught_up().await;
        let mut databases = vec![self.landlord_db.clone()];
        databases.extend(self.tenants.iter().map(|t| t.database.clone()));
        for database in &databases {
            self.wait_confirmed_now(database).await;
        }
        self.wait_applier_caught_up().await;
    }
}

impl TestEnv {
    /// Waits until the server sent the reader of `database` the WAL up to
    /// `upto` and the reader answered with two status updates since: they
    /// carry what it confirms, so a position it would wrongly confirm (say,
    /// while Kafka is down) is confirmed by then.
    pub(crate) async fn wait_reader_answered_past(&self, database: &str, upto: u64) {
        let client = super::connect(database).await;
        let status = || async {
            let row = client
                .query_opt(
                    "SELECT r.sent_lsn::text, r.reply_time::text
                       FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid
                      WHERE s.database = current_database()",
                    &[],
                )
                .await
                .unwrap()?;
            let sent: Option<String> = row.get(0);
            Some((sent.map(|s| lsn(&s))?, row.get::<_, Option<String>>(1)))
        };
        let what = format!(
            "the server sent the reader of {database} the WAL up to {}",
            lsn_text(upto)
        );
        let mut reply = eventually(&what, || async {
            status()
                .await
                .filter(|(sent, _)| *sent >= upto)
                .map(|(_, reply)| reply)
        })
        .await;
        for _ in 0..2 {
            let previous = reply.clone();
            let what = format!("a status update of the reader of {database}");
            reply = eventually(&what, || async {
                status()
                    .await
                    .map(|(_, reply)| reply)
                    .filter(|reply| *reply != previous)
            })
            .await;
        }
    }
}
