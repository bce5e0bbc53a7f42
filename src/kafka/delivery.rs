//! Handing change events to Kafka and tracking their acknowledgements. The
//! reader calls [`Delivery::send`] for every event and [`Delivery::poll`]
//! in its loop; the tracker inside decides what LSN may be confirmed.
//!
//! A full producer queue is backpressure, not an error: `send` waits for
//! acknowledgements to make room. A delivery failure is returned to the
//! reader, which restarts from the last confirmed LSN (Kafka may then hold a
//! duplicate, which the applier tolerates).

use std::future::Future;
use std::time::Duration;

use crate::kafka::Producer;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::class_of_kafka;
use crate::kafka::progress::{AckTracker, TxnSeq};
use crate::model::Lsn;
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

/// One source's events on their way to Kafka.
pub struct Delivery {
    producer: Producer,
    topic: std::sync::Arc<str>,
    tracker: AckTracker,
    in_flight: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Acked> + Send>>>,
    acknowledged: u64,
}

impl Delivery {
    pub fn new(producer: Producer, topic: String, start: Lsn) -> Self {
        Delivery {
            producer,
            topic: topic.into(),
            tracker: AckTracker::new(start),
            in_flight: FuturesUnordered::new(),
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

    /// Events acknowledged since the last call (for metrics).
    pub fn take_acknowledged(&mut self) -> u64 {
        std::mem::take(&mut self.acknowledged)
    }

    /// Queues one event of transaction `seq`.
    pub async fn send(
        &mut self,
        seq: TxnSeq,
        key: &str,
        payload: &[u8],
    ) -> Result<(), DeliveryError> {
        let topic = std::sync::Arc::clone(&self.topic);
        let mut record = FutureRecord::to(&topic).key(key).payload(payload);
        loop {
            match self.producer.send_result(record) {
                Ok(future) => {
                    self.tracker.sent(seq);
                    self.in_flight.push(Box::pin(tagged(seq, future)));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.wait_for_room().await?;
                }
                Err((source, _)) => {
                    return Err(DeliveryError::Rejected {
                        topic: self.topic.to_string(),
                        source,
                    })
                }
            }
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
                crate::runtime::metrics::metrics().kafka_up.set(1);
                self.tracker.acked(seq);
                self.acknowledged += 1;
                Ok(())
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
        while !self.in_flight.is_empty() {
            self.poll().await?;
        }
        Ok(())
    }
}
