//! Handing change events to Kafka and tracking their acknowledgements; the
//! tracker inside decides what LSN may be confirmed.
//!
//! ```text
//!  event ─► too large? ─ yes ─► notice on the dead-letter topic (key, position, size; not the row)
//!              │ no                       │
//!              ▼                          ▼
//!         producer queue ─► ack ─► tracker (the slot moves on either way)
//!              │ full
//!              ▼
//!         parked (one event): the stream stops reading but keeps
//!         confirming and answering the server until there is room
//! ```
//! A full producer queue is backpressure, not an error, and never blocks
//! the stream's loop: it parks the event ([`Delivery::offer`]); the
//! snapshot, which has no loop to keep alive, waits ([`Delivery::send`]).
//! A delivery failure is returned to the reader, which restarts from the
//! last confirmed LSN (Kafka may then hold a duplicate, which the applier
//! tolerates) — except an event too large for the broker, which becomes a
//! notice like one too large for the configured limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::kafka::class_of_kafka;
use crate::kafka::dead_letter::{KIND_HEADER, KIND_OVERSIZED, REASON_HEADER, SOURCE_HEADER};
use crate::kafka::progress::{AckTracker, TxnSeq};
use crate::kafka::Producer;
use crate::model::{Envelope, Lsn};
use crate::runtime::metrics::metrics;
use crate::runtime::retry::{Classify, ErrorClass};

/// Kafka did not take or did not acknowledge an event.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("Kafka rejected a change event for topic {topic}: {source}")]
    Rejected { topic: String, source: KafkaError },
    #[error("the Kafka producer was dropped before acknowledging an event")]
    Canceled,
}

impl Classify for DeliveryError {
    fn class(&self) -> ErrorClass {
        match self {
            DeliveryError::Rejected { source, .. } => class_of_kafka(source),
            DeliveryError::Canceled => ErrorClass::Transient,
        }
    }
}

type Acked = (
    TxnSeq,
    Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
);

fn tagged(seq: TxnSeq, future: rdkafka::producer::DeliveryFuture) -> impl Future<Output = Acked> {
    future.map(move |result| (seq, result))
}

/// Most events handed to Kafka and not yet acknowledged before the reader
/// stops reading the slot; bounds memory during Kafka outages.
pub const MAX_IN_FLIGHT: usize = 100_000;

/// One record, ready to produce (owned, so it can wait for room).
struct Outgoing {
    seq: TxnSeq,
    topic: Arc<str>,
    key: String,
    payload: Vec<u8>,
    /// Dead-letter headers of a notice: (reason, source).
    notice: Option<(String, String)>,
}

/// One source's events on their way to Kafka.
pub struct Delivery {
    producer: Producer,
    topic: Arc<str>,
    dead_letter_topic: Arc<str>,
    /// The source database, for notices and metrics.
    database: String,
    max_message_bytes: usize,
    tracker: AckTracker,
    in_flight: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Acked> + Send>>>,
    /// An event the producer had no room for; nothing else is sent before it.
    parked: Option<Outgoing>,
    acknowledged: u64,
}

impl Delivery {
    pub fn new(producer: Producer, config: &KafkaConfig, database: &str, start: Lsn) -> Self {
        Delivery {
            producer,
            topic: config.topic.as_str().into(),
            dead_letter_topic: config.dead_letter_topic().into(),
            database: database.to_string(),
            max_message_bytes: config.max_message_bytes,
            tracker: AckTracker::new(start),
            in_flight: FuturesUnordered::new(),
            parked: None,
            acknowledged: 0,
        }
    }

    pub fn tracker(&mut self) -> &mut AckTracker {
        &mut self.tracker
    }

    pub fn confirmable(&self) -> Lsn {
        self.tracker.confirmable()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the stream may hand over another event now.
    pub fn has_room(&self) -> bool {
        self.parked.is_none() && self.in_flight.len() < MAX_IN_FLIGHT
    }

    pub fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// Events acknowledged since the last call (for metrics).
    pub fn take_acknowledged(&mut self) -> u64 {
        std::mem::take(&mut self.acknowledged)
    }

    /// Hands one event of transaction `seq` over without waiting: if the
    /// producer's queue is full it is parked, and `has_room` stays false
    /// until [`Delivery::retry_parked`] got it through.
    pub fn offer(&mut self, seq: TxnSeq, envelope: &Envelope) -> Result<(), DeliveryError> {
        let outgoing = self.outgoing(seq, envelope);
        self.tracker.sent(seq);
        self.produce(outgoing)
    }

    /// Like `offer`, but waits for room (the snapshot, which has no loop
    /// to keep alive meanwhile).
    pub async fn send(&mut self, seq: TxnSeq, envelope: &Envelope) -> Result<(), DeliveryError> {
        self.offer(seq, envelope)?;
        while self.is_parked() {
            self.wait_for_room().await?;
            self.retry_parked()?;
        }
        Ok(())
    }

    /// Tries the parked event again.
    pub fn retry_parked(&mut self) -> Result<(), DeliveryError> {
        match self.parked.take() {
            Some(outgoing) => self.produce(outgoing),
            None => Ok(()),
        }
    }

    /// The record for an event: the event itself, or a notice when it is
    /// larger than `kafka.max_message_bytes`.
    fn outgoing(&self, seq: TxnSeq, envelope: &Envelope) -> Outgoing {
        let payload = envelope.to_json();
        if payload.len() <= self.max_message_bytes {
            return Outgoing {
                seq,
                topic: Arc::clone(&self.topic),
                key: envelope.kafka_key().to_string(),
                payload,
                notice: None,
            };
        }
        let reason = format!(
            "the change event is {} bytes, more than kafka.max_message_bytes ({}); it was not sent: \
             raise the limit (and the topics' max.message.bytes), then make the row sync again (check --repair or a new write)",
            payload.len(),
            self.max_message_bytes
        );
        self.notice(seq, envelope, payload.len(), reason)
    }

    /// A notice on the dead-letter topic instead of an event: what, where
    /// and how large, not the row (it may be huge and hold anything).
    fn notice(&self, seq: TxnSeq, envelope: &Envelope, size: usize, reason: String) -> Outgoing {
        metrics()
            .oversized_events
            .with_label_values(&[self.database.as_str()])
            .inc();
        tracing::error!(database = %self.database, tenant = %envelope.tenant.id, lsn = %envelope.origin.lsn, size, "{reason}");
        let body = serde_json::json!({
            "reason": reason,
            "size": size,
            "limit": self.max_message_bytes,
            "op": envelope.op,
            "table": envelope.table,
            "tenant": envelope.tenant,
            "origin": envelope.origin,
            "version": envelope.version,
            "key": envelope.key,
        });
        Outgoing {
            seq,
            topic: Arc::clone(&self.dead_letter_topic),
            key: envelope.kafka_key().to_string(),
            payload: body.to_string().into_bytes(),
            notice: Some((
                reason,
                format!("reader/{}/{}", self.database, envelope.origin.lsn),
            )),
        }
    }

    fn produce(&mut self, outgoing: Outgoing) -> Result<(), DeliveryError> {
        let mut record = FutureRecord::to(&outgoing.topic)
            .key(&outgoing.key)
            .payload(&outgoing.payload);
        if let Some((reason, source)) = &outgoing.notice {
            record = record.headers(notice_headers(reason, source));
        }
        match self.producer.send_result(record) {
            Ok(future) => {
                self.in_flight.push(Box::pin(tagged(outgoing.seq, future)));
                Ok(())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                self.parked = Some(outgoing);
                Ok(())
            }
            Err((source, _)) => Err(DeliveryError::Rejected {
                topic: outgoing.topic.to_string(),
                source,
            }),
        }
    }

    async fn wait_for_room(&mut self) -> Result<(), DeliveryError> {
        if self.in_flight.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Ok(());
        }
        self.poll().await
    }

    /// Waits for the next acknowledgement and records it. Returns at once
    /// (pending forever) when nothing is in flight, so it can sit in a
    /// `select!` guarded by `in_flight() > 0`.
    pub async fn poll(&mut self) -> Result<(), DeliveryError> {
        let Some((seq, result)) = self.in_flight.next().await else {
            return std::future::pending().await;
        };
        self.record(seq, result)?;
        // Take whatever else is already done without waiting.
        while let Some(Some((seq, result))) = self.in_flight.next().now_or_never() {
            self.record(seq, result)?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        seq: TxnSeq,
        result: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
    ) -> Result<(), DeliveryError> {
        match result {
            Ok(Ok(_)) => {
                metrics().kafka_up.set(1);
                self.tracker.acked(seq);
                self.acknowledged += 1;
                Ok(())
            }
            Ok(Err((source, message)))
                if source.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                // The broker refuses what the limit let through (a topic
                // set up by hand with a smaller max.message.bytes).
                let size = message.payload().map_or(0, <[u8]>::len);
                let envelope = message.payload().and_then(|p| Envelope::from_json(p).ok());
                let Some(envelope) = envelope else {
                    return Err(DeliveryError::Rejected {
                        topic: self.topic.to_string(),
                        source,
                    });
                };
                let reason = format!(
                    "Kafka refused the change event of {size} bytes as too large ({source}); \
                     raise the topic's max.message.bytes or lower kafka.max_message_bytes"
                );
                let notice = self.notice(seq, &envelope, size, reason);
                self.produce(notice)
            }
            Ok(Err((source, _))) => Err(DeliveryError::Rejected {
                topic: self.topic.to_string(),
                source,
            }),
            Err(_) => Err(DeliveryError::Canceled),
        }
    }

    /// Waits until every queued event is acknowledged.
    pub async fn drain(&mut self) -> Result<(), DeliveryError> {
        loop {
            self.retry_parked()?;
            if self.in_flight.is_empty() && self.parked.is_none() {
                return Ok(());
            }
            self.wait_for_room().await?;
        }
    }
}

fn notice_headers(reason: &str, source: &str) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: REASON_HEADER,
            value: Some(reason),
        })
        .insert(Header {
            key: SOURCE_HEADER,
            value: Some(source),
        })
        .insert(Header {
            key: KIND_HEADER,
            value: Some(KIND_OVERSIZED),
        })
}
