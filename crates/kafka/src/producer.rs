//! The idempotent producer every adapter publishes through.

use std::time::Duration;

use rdkafka::{
    error::KafkaError,
    message::OwnedHeaders,
    producer::{FutureProducer, FutureRecord, Producer},
};
use tracing::warn;

use crate::{HeaderInjector, KafkaSettings};

/// Where Kafka put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// An idempotent, acks=all producer. Each send resolves only once the record
/// is acknowledged by the partition leader and its in-sync replicas.
#[derive(Clone)]
pub struct RecordProducer {
    inner: FutureProducer,
}

impl std::fmt::Debug for RecordProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordProducer").finish_non_exhaustive()
    }
}

/// How long a send may wait for room in the local queue before it fails.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

impl RecordProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let mut config = settings.client_config();
        // Defaults a caller may tune through kafka.client ...
        for (key, value) in [
            // Below the gRPC server timeout (30 s), so a caller gets per-record
            // outcomes rather than a deadline error when Kafka is down.
            ("message.timeout.ms", "20000"),
            ("linger.ms", "2"),
            ("compression.type", "lz4"),
        ] {
            if !settings.sets(key) {
                config.set(key, value);
            }
        }
        // ... and guarantees they may not: no duplicates, no reordering,
        // acknowledged by all in-sync replicas.
        config.set("enable.idempotence", "true").set("acks", "all");
        Ok(Self {
            inner: config.create()?,
        })
    }

    /// Sends one record and waits for its acknowledgement. The current span's
    /// W3C trace context travels in the headers.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Delivered, KafkaError> {
        let headers = HeaderInjector::current().into_headers(headers);
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        match self.inner.send(record, QUEUE_TIMEOUT).await {
            Ok(delivery) => Ok(Delivered {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((error, _)) => {
                warn!(topic, %error, "delivery failed");
                Err(error)
            }
        }
    }

    /// Waits for every queued record to be delivered (used on shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(timeout)
    }
}
