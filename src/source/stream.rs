//! The streaming phase of one source: read the replication connection,
//! hand logical messages to `changes`, wait for Kafka, confirm.
//!
//! ```text
//!  XLogData  ─► pgoutput decode ─► changes ─► Delivery (Kafka, tracked)
//!  keepalive ─► nothing in flight? confirm wal_end · reply at once when asked
//!  Kafka ack ─► the tracker may move the confirmable LSN
//!  tick      ─► standby status with the confirmable LSN, when it moved or reading is
//!               held back (else every 10 s)
//! ```
//! Reading stops while too many events wait for Kafka (memory stays bounded).

use std::time::Duration;

use tracing::{info, warn};

use super::capture::SourceDb;
use super::catalog::Catalog;
use super::changes::Changes;
use super::pgoutput::LogicalMessage;
use super::replication::{ReplicationConnection, StreamMessage};
use super::{ReaderError, RowOwner};
use crate::config::Config;
use crate::kafka::delivery::Delivery;
use crate::model::{Lsn, SlotName};
use crate::runtime::metrics::metrics;
use crate::runtime::shutdown::Shutdown;

/// How often an event parked on a full producer queue is tried again (also
/// after every acknowledgement).
const PARKED_RETRY: Duration = Duration::from_millis(50);

/// Longest time between two status updates that confirm the same position
/// (an idle slot's reader would otherwise write one every tick; the server
/// asks for one when it needs it sooner, and a reader that reads answers
/// at once).
const UNCHANGED_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// How long a stopping reader waits for Kafka to acknowledge what it sent.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) struct ChangeStream<'a> {
    config: &'a Config,
    source: SourceDb,
    slot: SlotName,
    /// Type names of new relations (an ordinary connection while needed).
    catalog: Catalog,
    conn: ReplicationConnection,
    delivery: Delivery,
    changes: Changes<'a>,
    /// Latest WAL end the server told us about (for the lag metric).
    server_position: Lsn,
    /// The position last confirmed to the server, and when.
    last_status: Option<(Lsn, std::time::Instant)>,
    /// Stop once this position is confirmable (benchmark drains).
    pub(crate) stop_at: Option<Lsn>,
}

impl<'a> ChangeStream<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: &'a Config,
        source: SourceDb,
        owner: RowOwner,
        slot: SlotName,
        catalog: Catalog,
        conn: ReplicationConnection,
        delivery: Delivery,
        start: Lsn,
        apply_marker: String,
    ) -> Self {
        ChangeStream {
            config,
            changes: Changes::new(config, source.clone(), owner, apply_marker),
            source,
            slot,
            catalog,
            conn,
            delivery,
            server_position: start,
            last_status: None,
            stop_at: None,
        }
    }

    pub(crate) async fn run(&mut self, mut shutdown: Shutdown) -> Result<(), ReaderError> {
        let interval = self.config.replication.status_interval;
        let mut tick = tokio::time::interval(interval);
        let mut retry = tokio::time::interval(PARKED_RETRY);
        loop {
            // A full Kafka queue stops reading, nothing else: acks,
            // status updates and shutdown go on being served.
            let may_read = self.delivery.has_room();
            tokio::select! {
                message = self.conn.next_message(), if may_read => {
                    let message = message.map_err(ReaderError::replication(&self.source.database))?;
                    self.on_message(message).await?;
                }
                acked = self.delivery.poll(), if self.delivery.in_flight() > 0 => {
                    acked?;
                    self.delivery.retry_parked()?;
                }
                _ = retry.tick(), if self.delivery.is_parked() => self.delivery.retry_parked()?,
                _ = tick.tick() => {
                    self.catalog.close_if_idle();
                    // A reader that does not read cannot see the server ask
                    // for a status: it sends one every tick instead.
                    self.report(!may_read).await?
                }
                _ = shutdown.wait() => break,
            }
            self.count_acknowledged();
            if self
                .stop_at
                .is_some_and(|end| self.delivery.confirmable() >= end)
            {
                break;
            }
        }
        self.finish().await
    }

    /// Drains what Kafka still has to acknowledge (bounded: with Kafka down
    /// it would never end), confirms it, and closes the stream. Whatever is
    /// not acknowledged is not confirmed either, so it is sent again.
    async fn finish(&mut self) -> Result<(), ReaderError> {
        match tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, self.delivery.drain()).await {
            Ok(drained) => drained?,
            Err(_) => {
                warn!(database = %self.source.database, in_flight = self.delivery.in_flight(), "Kafka did not acknowledge in time; unconfirmed events will be sent again on restart")
            }
        }
        self.count_acknowledged();
        self.report(true).await?;
        self.conn.close().await;
        info!(database = %self.source.database, confirmed = %self.delivery.confirmable(), "reader stopped cleanly");
        Ok(())
    }

    async fn on_message(&mut self, message: StreamMessage) -> Result<(), ReaderError> {
        match message {
            StreamMessage::XLogData { wal_end, data, .. } => {
                self.server_position = self.server_position.max(wal_end);
                self.changes
                    .on_logical(
                        LogicalMessage::decode(data)?,
                        &mut self.delivery,
                        &mut self.catalog,
                    )
                    .await
            }
            StreamMessage::Keepalive {
                wal_end,
                reply_requested,
            } => {
                self.server_position = self.server_position.max(wal_end);
                self.delivery.tracker().idle_advance(wal_end);
                if reply_requested {
                    self.report(true).await?;
                }
                Ok(())
            }
        }
    }

    fn count_acknowledged(&mut self) {
        let acked = self.delivery.take_acknowledged();
        if acked > 0 {
            metrics()
                .events_produced
                .with_label_values(&[self.source.database.as_str()])
                .inc_by(acked);
        }
    }

    /// Sends a standby status update with the confirmable position (also the
    /// periodic heartbeat, and the answer to a keepalive that asks, which
    /// `now` forces): at once when the position moved, else at most every
    /// `UNCHANGED_STATUS_INTERVAL`. The lag metrics are refreshed each time.
    async fn report(&mut self, now: bool) -> Result<(), ReaderError> {
        let confirmed = self.delivery.confirmable();
        let due = now
            || self.last_status.is_none_or(|(sent, at)| {
                sent != confirmed || at.elapsed() >= UNCHANGED_STATUS_INTERVAL
            });
        if due {
            self.conn
                .send_status(confirmed)
                .await
                .map_err(ReaderError::replication(&self.source.database))?;
            self.last_status = Some((confirmed, std::time::Instant::now()));
        }
        let m = metrics();
        m.confirmed_lsn
            .with_label_values(&[self.slot.as_str()])
            .set(confirmed.0 as i64);
        let lag = self.server_position.0.saturating_sub(confirmed.0);
        m.replication_lag_bytes
            .with_label_values(&[self.slot.as_str()])
            .set(lag as i64);
        let seconds = self.delivery.tracker().oldest_pending_age().as_secs_f64();
        m.replication_lag_seconds
            .with_label_values(&[self.slot.as_str()])
            .set(seconds);
        crate::runtime::status::status().set_reader_lag(&self.source.database, lag, seconds);
        Ok(())
    }
}
