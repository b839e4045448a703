//! The idempotent producer every adapter publishes through.

use std::time::Duration;

use std::sync::{Arc, RwLock};

use rdkafka::{
    ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::OwnedHeaders,
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
};
use tracing::warn;

use crate::{HeaderInjector, KafkaSettings, Role};

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
    inner: Arc<RwLock<FutureProducer>>,
    config: ClientConfig,
}

impl std::fmt::Debug for RecordProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordProducer").finish_non_exhaustive()
    }
}

/// How long a send may wait for room in the local queue before it fails.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Puts a record on the producer's local queue, waiting (up to
/// `QUEUE_TIMEOUT`) while the queue is full, as `FutureProducer::send` does.
async fn enqueue(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, [u8], [u8]>,
) -> Result<DeliveryFuture, KafkaError> {
    let deadline = tokio::time::Instant::now() + QUEUE_TIMEOUT;
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if tokio::time::Instant::now() < deadline =>
            {
                record = back;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

impl RecordProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        // Defaults a caller may tune through kafka.client or kafka.producer ...
        let mut config = settings.config_with_defaults(
            Role::Producer,
            &[
                // Below the gRPC server timeout (30 s), so a caller gets
                // per-record outcomes rather than a deadline error when
                // Kafka is down.
                ("message.timeout.ms", "20000"),
                ("linger.ms", "2"),
                ("compression.type", "lz4"),
            ],
        );
        // ... and guarantees they may not: no duplicates, no reordering,
        // acknowledged by all in-sync replicas.
        config.set("enable.idempotence", "true").set("acks", "all");
        Ok(Self {
            inner: Arc::new(RwLock::new(config.create()?)),
            config,
        })
    }

    fn current(&self) -> FutureProducer {
        match self.inner.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// An idempotent producer whose session the brokers no longer accept
    /// (fatal error, or a broker that lost its producer state, e.g. after a
    /// restart) refuses every later record. Start a new session instead:
    /// records then may be written twice across the two sessions, which the
    /// showcase absorbs (versions are idempotent).
    fn renew_if_stuck(&self, failed: &FutureProducer, error: &KafkaError) {
        let stuck = failed.client().fatal_error().is_some()
            || matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::OutOfOrderSequenceNumber
                        | RDKafkaErrorCode::UnknownProducerId
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::Fatal
                )
            );
        if !stuck {
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                if let Ok(mut current) = self.inner.write() {
                    // Only replace the session that failed, once.
                    if current.client().native_ptr() == failed.client().native_ptr() {
                        *current = fresh;
                        warn!(%error, "producer session renewed");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot renew the producer session"),
        }
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
        self.send_batch(topic, vec![(key, payload, headers)])
            .await
            .pop()
            .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Sends records to one topic and waits for Kafka's answer on each;
    /// results are in input order. All are queued before any is awaited,
    /// and the current span's trace context goes on every one: the batch
    /// costs one future per record, not one task with a span of its own.
    pub async fn send_batch(
        &self,
        topic: &str,
        records: Vec<(&[u8], &[u8], OwnedHeaders)>,
    ) -> Vec<Result<Delivered, KafkaError>> {
        let trace = HeaderInjector::current();
        let producer = self.current();
        let mut queued = Vec::new();
        for (key, payload, headers) in records {
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(trace.add_to(headers));
            queued.push(enqueue(&producer, record).await);
        }
        let mut results = Vec::with_capacity(queued.len());
        for queued in queued {
            results.push(match queued {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(d)) => Ok(Delivered {
                        partition: d.partition,
                        offset: d.offset,
                    }),
                    Ok(Err((error, _))) => Err(error),
                    Err(_cancelled) => Err(KafkaError::Canceled),
                },
                Err(error) => Err(error),
            });
        }
        // Once per batch: a stuck session fails every record of it.
        let failed = results.iter().filter(|r| r.is_err()).count();
        if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
            warn!(topic, failed, %error, "delivery failed");
            self.renew_if_stuck(&producer, error);
        }
        results
    }

    /// Waits for every queued record to be delivered (used on shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(timeout)
    }
}
