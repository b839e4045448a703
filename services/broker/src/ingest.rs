//! The ingest loop: Kafka record topics → checks → showcase, in batches.
//!
//! Offsets are stored only after the batch's SQL transaction has committed
//! and reached the disk (`ingest_offsets`), and its dead letters were
//! acknowledged, so a crash or a power loss at any point leads to
//! redelivery, never to loss; redelivery is harmless because the showcase
//! ignores versions it already has.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use govbus_core::{Catalog, time::now_micros};
use govbus_kafka::{DEAD_LETTER_TOPIC, KafkaSettings, RecordProducer, Role};
use govbus_store::{Durability, PreparedBatch, Showcase};
use rdkafka::{
    ClientContext, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{Header, OwnedHeaders},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use govbus_security::RecordChecker;

use crate::{
    ingest_batch::{BatchLinks, Checked, Consumed, Pending, check, consumed, drained},
    ingest_offsets::{HeldOffsets, Positions},
};

/// Batches whose checks may run ahead of the writer, besides the one it
/// writes and the one the reader fills.
const BATCHES_AHEAD: usize = 2;

/// When the showcase last held everything the consumer could see on Kafka.
#[derive(Debug, Default)]
pub struct Freshness {
    caught_up_at_us: AtomicI64,
}

impl Freshness {
    /// Microseconds since the epoch, or `None` before the first catch-up.
    pub fn as_of_us(&self) -> Option<i64> {
        match self.caught_up_at_us.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    fn caught_up(&self, at_us: i64) {
        self.caught_up_at_us.fetch_max(at_us, Ordering::AcqRel);
    }
}

/// Logs partition assignments; librdkafka's default handling (with
/// auto-commit of stored offsets on revoke) does the rest without blocking.
pub struct IngestContext;

impl ClientContext for IngestContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        govbus_kafka::consumer_log("ingest", level, fac, message);
    }

    /// librdkafka's periodic statistics carry the lag of every assigned
    /// partition; they become the `govbus_consumer_lag` gauge.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(
                        "govbus_consumer_lag",
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => info!(partitions = tpl.count(), "partitions assigned"),
            Rebalance::Revoke(tpl) => info!(partitions = tpl.count(), "partitions revoked"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

pub struct Ingestor {
    consumer: StreamConsumer<IngestContext>,
    showcase: Showcase,
    checker: RecordChecker,
    dead_letters: RecordProducer,
    freshness: Arc<Freshness>,
    group_id: String,
    batch_max: usize,
    batch_wait: Duration,
}

/// How the ingestor reaches Kafka and what it trusts.
pub struct IngestSettings<'a> {
    pub kafka: &'a KafkaSettings,
    pub group_id: &'a str,
    /// The bus CA: records must be signed by a certificate it issued.
    pub ca_der: Vec<u8>,
    /// Where refused records go (shared with the broker's other producing).
    pub dead_letters: RecordProducer,
    pub batch_max: usize,
    pub batch_wait: Duration,
}

impl Ingestor {
    pub fn new(
        settings: IngestSettings<'_>,
        showcase: Showcase,
        catalog: Arc<Catalog>,
        freshness: Arc<Freshness>,
    ) -> Result<Self, KafkaError> {
        let IngestSettings {
            kafka,
            group_id,
            ca_der,
            dead_letters,
            batch_max,
            batch_wait,
        } = settings;
        // fetch.wait.max.ms bounds how long a new record can sit unfetched
        // on an idle partition; brokers answer early once data arrives.
        let mut config = kafka.config_with_defaults(
            Role::Consumer,
            &[
                ("auto.offset.reset", "earliest"),
                ("auto.commit.interval.ms", "1000"),
                ("fetch.wait.max.ms", "50"),
                ("statistics.interval.ms", "5000"),
            ],
        );
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer<IngestContext> = config.create_with_context(IngestContext)?;
        let topics = catalog.topics();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;
        info!(
            topics = topic_refs.len(),
            group_id, "subscribed to record topics"
        );
        Ok(Self {
            consumer,
            showcase,
            checker: RecordChecker::new(catalog, ca_der),
            dead_letters,
            freshness,
            group_id: group_id.to_string(),
            batch_max,
            batch_wait,
        })
    }

    /// Consumes until `shutdown`; the batch under way is finished first.
    ///
    /// The reader takes batches off Kafka and starts each one's checks (a
    /// task on the blocking pool, `ingest_batch`); the writer awaits those
    /// tasks in the order they were started, sends the refused records to
    /// the dead letters, stores the rest (on the database's connection) and
    /// then the batch's offsets. Up to `BATCHES_AHEAD` batches wait between
    /// the two.
    pub async fn run(self, shutdown: CancellationToken) {
        let (to_writer, mut queued) = tokio::sync::mpsc::channel::<Pending>(BATCHES_AHEAD);
        let this = &self;
        let shutdown = &shutdown;
        let read = async move {
            this.read(to_writer, shutdown).await;
        };
        let write = async move {
            let mut held = HeldOffsets::default();
            while let Some(batch) = queued.recv().await {
                if !this.write(batch, &mut held, shutdown).await {
                    break;
                }
            }
            held
        };
        let ((), mut held) = tokio::join!(read, write);
        // What was committed but not yet synced: synced now, or left for
        // the next owner to read again.
        if held.unsynced() {
            match self.showcase.sync().await {
                Ok(()) => held.synced(),
                Err(e) => {
                    warn!(error = %e, "final sync failed; the next owner re-reads the last batches")
                }
            }
        }
        if let Some(positions) = held.take_storable() {
            self.store_offsets(&positions);
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(error = %e, "final offset commit failed; the next owner re-reads from the last commit")
            }
        }
        info!("ingest stopped");
    }

    /// The first stage: batches off Kafka, handed to the writer with their
    /// checks started. Returns on shutdown, or when the writer has stopped.
    async fn read(
        &self,
        to_writer: tokio::sync::mpsc::Sender<Pending>,
        shutdown: &CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = tokio::time::timeout(Duration::from_millis(200), self.consumer.recv()) => m,
            };
            let first = match first {
                // Nothing arrived for a while: once the writer has stored
                // what came before, the showcase holds all there is.
                Err(_) => {
                    if to_writer.send(drained(now_micros())).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "kafka consumer error");
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            let span = info_span!(
                "ingest_batch",
                otel.name = "process govbus.records",
                otel.kind = "consumer",
                messaging.system = "kafka",
                messaging.operation.type = "process",
                messaging.consumer.group.name = self.group_id.as_str(),
                messaging.batch.message_count = tracing::field::Empty,
                records = tracing::field::Empty
            );
            let mut links = BatchLinks::new(span);
            let mut batch = vec![consumed(&first, &mut links)];
            drop(first);
            let mut drained_at = None;
            let deadline = tokio::time::Instant::now() + self.batch_wait;
            while batch.len() < self.batch_max {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(consumed(&m, &mut links)),
                    Ok(Err(e)) => warn!(error = %e, "kafka consumer error"),
                    Err(_) => {
                        drained_at = Some(now_micros());
                        break;
                    }
                }
            }
            let span = links.into_span();
            span.record("records", batch.len());
            span.record("messaging.batch.message_count", batch.len());
            let pending = check(&self.checker, &self.showcase, batch, drained_at, span);
            if to_writer.send(pending).await.is_err() {
                return;
            }
        }
    }

    /// The second stage: sends a checked batch's refused records to the
    /// dead letters, stores the rest in one transaction, then its offsets
    /// once that commit and every one before it is on disk (`held`).
    /// Returns false when shutdown interrupted it before its records were
    /// stored or synced (they will be redelivered unless the final sync in
    /// `run` makes them durable).
    async fn write(
        &self,
        pending: Pending,
        held: &mut HeldOffsets,
        shutdown: &CancellationToken,
    ) -> bool {
        let checked = match pending.await {
            Ok(checked) => checked,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        };
        // None: the runtime shut down first (see `Pending`).
        let Some(Checked {
            good,
            dead,
            positions,
            drained_at,
            span,
        }) = checked
        else {
            return false;
        };
        let span = span.unwrap_or_else(tracing::Span::none);
        for (message, reason) in &dead {
            if !self
                .dead_letter(message, reason, shutdown)
                .instrument(span.clone())
                .await
            {
                return false;
            }
        }
        let caught_up = drained_at.is_some();
        let committed = match good {
            Some(good) => {
                let durability = held.commit_for(caught_up, Instant::now());
                if !self
                    .store(&good, dead.len(), durability, shutdown)
                    .instrument(span)
                    .await
                {
                    return false;
                }
                Some(durability)
            }
            None => None,
        };
        if held.handled(positions, committed, caught_up, Instant::now()) {
            if !self.sync(shutdown).await {
                return false;
            }
            held.synced();
        }
        if let Some(positions) = held.take_storable() {
            self.store_offsets(&positions);
        }
        if let Some(at) = drained_at {
            self.freshness.caught_up(at);
        }
        true
    }

    /// Stores offsets for the next commit to Kafka.
    fn store_offsets(&self, positions: &Positions) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in positions {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                warn!(topic, partition, error = %e, "cannot record offset");
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.store_offsets(&tpl)
        {
            // After a revoke the partition belongs to another member, which
            // re-reads from the last commit; the showcase ignores the repeats.
            debug!(error = %e, "offsets not stored");
        }
    }

    /// Makes the deferred commits durable, retrying until the database
    /// does. Returns false if shutdown came first.
    async fn sync(&self, shutdown: &CancellationToken) -> bool {
        until_done(shutdown, "showcase sync failed; retrying", || {
            self.showcase.sync()
        })
        .await
        .is_some()
    }

    /// Applies records to the showcase, retrying until the database takes
    /// them. Returns false if shutdown came first.
    async fn store(
        &self,
        good: &PreparedBatch,
        dead: usize,
        durability: Durability,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(stats) = until_done(
            shutdown,
            "showcase write failed; retrying the batch",
            || self.showcase.apply_prepared(good, durability),
        )
        .await
        else {
            return false;
        };
        metrics::counter!("govbus_records_ingested_total", "outcome" => "applied")
            .increment(stats.applied);
        metrics::counter!("govbus_records_ingested_total", "outcome" => "stale")
            .increment(stats.stale);
        debug!(
            applied = stats.applied,
            stale = stats.stale,
            dead,
            "batch stored"
        );
        true
    }

    /// Sends a refused record to the dead-letter topic, retrying until Kafka
    /// takes it. Returns false if shutdown came first.
    async fn dead_letter(
        &self,
        message: &Consumed,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        warn!(
            topic = message.topic,
            partition = message.partition,
            offset = message.offset,
            reason,
            "record refused; sent to dead letters"
        );
        metrics::counter!("govbus_records_dead_lettered_total", "topic" => message.topic.clone())
            .increment(1);
        let partition = message.partition.to_string();
        let offset = message.offset.to_string();
        until_done(shutdown, "dead-letter topic unavailable; retrying", || {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "govbus-reason",
                    value: Some(reason.as_bytes()),
                })
                .insert(Header {
                    key: "govbus-source-topic",
                    value: Some(message.topic.as_bytes()),
                })
                .insert(Header {
                    key: "govbus-source-partition",
                    value: Some(partition.as_bytes()),
                })
                .insert(Header {
                    key: "govbus-source-offset",
                    value: Some(offset.as_bytes()),
                });
            self.dead_letters
                .send(DEAD_LETTER_TOPIC, &message.key, &message.payload, headers)
        })
        .await
        .is_some()
    }
}

/// Runs `attempt` until it succeeds, logging each failure as `failure` and
/// waiting 100 ms, then twice as long each time up to 5 s. `None` if
/// shutdown came first.
async fn until_done<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    shutdown: &CancellationToken,
    failure: &'static str,
    mut attempt: impl FnMut() -> F,
) -> Option<T> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(done) => return Some(done),
            Err(e) => {
                error!(error = %e, "{failure}");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
