//! The ingest loop: Kafka record topics → checks → showcase, in batches.
//!
//! Offsets are stored only after the batch's SQL transaction has committed
//! (and its dead letters were acknowledged), so a crash at any point leads
//! to redelivery, never to loss; redelivery is harmless because the showcase
//! ignores versions it already has.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use govbus_core::{Catalog, time::now_micros};
use govbus_kafka::{DEAD_LETTER_TOPIC, HeaderExtractor, KafkaSettings, RecordProducer};
use govbus_store::{IngestedRecord, Showcase};
use rdkafka::{
    ClientContext, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Header, OwnedHeaders},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use govbus_security::RecordChecker;

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

/// A batch checked by the reader, for the writer. An empty one (no records,
/// no positions) only says when the consumer found nothing more to read.
#[derive(Default)]
struct Checked {
    good: Vec<IngestedRecord>,
    /// Records refused and already in the dead letters.
    dead: usize,
    /// Per partition, the offset after the batch's last message.
    positions: BTreeMap<(String, i32), i64>,
    /// When the consumer found nothing more after this batch.
    drained_at: Option<i64>,
    span: Option<tracing::Span>,
}

/// A message taken off Kafka, owned so the consumer can move on.
struct Consumed {
    topic: String,
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    payload: Vec<u8>,
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
        let mut config = kafka.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false");
        // fetch.wait.max.ms bounds how long a new record can sit unfetched
        // on an idle partition; brokers answer early once data arrives.
        for (key, value) in [
            ("auto.offset.reset", "earliest"),
            ("auto.commit.interval.ms", "1000"),
            ("fetch.wait.max.ms", "50"),
            ("statistics.interval.ms", "5000"),
        ] {
            if !kafka.sets(key) {
                config.set(key, value);
            }
        }
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
    /// Two stages joined by a queue of one batch: the reader takes batch
    /// n+1 off Kafka and checks it (on the blocking pool) while the writer
    /// stores batch n (on the database's connection). Batches are written,
    /// and their offsets stored, in the order they were read.
    pub async fn run(self, shutdown: CancellationToken) {
        let (to_writer, mut queued) = tokio::sync::mpsc::channel::<Checked>(1);
        let this = &self;
        let shutdown = &shutdown;
        let read = async move {
            this.read(to_writer, shutdown).await;
        };
        let write = async move {
            while let Some(batch) = queued.recv().await {
                if !this.write(batch, shutdown).await {
                    break;
                }
            }
        };
        tokio::join!(read, write);
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(error = %e, "final offset commit failed; the next owner re-reads from the last commit")
            }
        }
        info!("ingest stopped");
    }

    /// The first stage: batches off Kafka, checked, refused records sent to
    /// the dead letters, then handed to the writer. Returns on shutdown, or
    /// when the writer has stopped.
    async fn read(
        &self,
        to_writer: tokio::sync::mpsc::Sender<Checked>,
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
                    let idle = Checked {
                        drained_at: Some(now_micros()),
                        ..Checked::default()
                    };
                    if to_writer.send(idle).await.is_err() {
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
            let mut batch = vec![consumed(&first, &span)];
            drop(first);
            let mut drained_at = None;
            let deadline = tokio::time::Instant::now() + self.batch_wait;
            while batch.len() < self.batch_max {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(consumed(&m, &span)),
                    Ok(Err(e)) => warn!(error = %e, "kafka consumer error"),
                    Err(_) => {
                        drained_at = Some(now_micros());
                        break;
                    }
                }
            }
            span.record("records", batch.len());
            span.record("messaging.batch.message_count", batch.len());
            let checked = self
                .check(batch, drained_at, &span, shutdown)
                .instrument(span.clone())
                .await;
            // None: shutdown came first; nothing of the batch is stored or
            // acknowledged, so it is read again after the restart.
            let Some(checked) = checked else { return };
            if to_writer.send(checked).await.is_err() {
                return;
            }
        }
    }

    /// Checks a batch and sends its refused records to the dead letters.
    /// `None` when shutdown interrupted it.
    async fn check(
        &self,
        batch: Vec<Consumed>,
        drained_at: Option<i64>,
        span: &tracing::Span,
        shutdown: &CancellationToken,
    ) -> Option<Checked> {
        let now = now_micros();
        let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for message in &batch {
            let next = positions
                .entry((message.topic.clone(), message.partition))
                .or_insert(message.offset + 1);
            *next = (*next).max(message.offset + 1);
        }
        let mut good = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for (message, checked) in check_on_all_cores(&self.checker, batch).await? {
            match checked {
                Ok(record) => good.push(IngestedRecord {
                    record,
                    envelope: message.payload,
                    topic: message.topic,
                    partition: message.partition,
                    offset: message.offset,
                    ingested_at_us: now,
                }),
                Err(reason) => dead.push((message, reason)),
            }
        }
        for (message, reason) in &dead {
            if !self.dead_letter(message, reason, shutdown).await {
                return None;
            }
        }
        Some(Checked {
            good,
            dead: dead.len(),
            positions,
            drained_at,
            span: Some(span.clone()),
        })
    }

    /// The second stage: stores a checked batch in one transaction, then
    /// its offsets. Returns false when shutdown interrupted it before its
    /// offsets were stored (it will be redelivered).
    async fn write(&self, batch: Checked, shutdown: &CancellationToken) -> bool {
        let Checked {
            good,
            dead,
            positions,
            drained_at,
            span,
        } = batch;
        if !good.is_empty() {
            let span = span.unwrap_or_else(tracing::Span::none);
            if !self.store(&good, dead, shutdown).instrument(span).await {
                return false;
            }
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &positions {
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
        if let Some(at) = drained_at {
            self.freshness.caught_up(at);
        }
        true
    }

    /// Applies records to the showcase, retrying until the database takes
    /// them. Returns false if shutdown came first.
    async fn store(
        &self,
        good: &[IngestedRecord],
        dead: usize,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.showcase.apply(good).await {
                Ok(stats) => {
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
                    return true;
                }
                Err(e) => {
                    error!(error = %e, "showcase write failed; retrying the batch");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
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
        let mut backoff = Duration::from_millis(100);
        loop {
            let partition = message.partition.to_string();
            let offset = message.offset.to_string();
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
            match self
                .dead_letters
                .send(DEAD_LETTER_TOPIC, &message.key, &message.payload, headers)
                .await
            {
                Ok(_) => return true,
                Err(e) => {
                    error!(error = %e, "dead-letter topic unavailable; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Checks a batch (signature verification is most of the broker's ingest
/// CPU) in
/// slices on the blocking pool, one per core, so that it neither holds a
/// Tokio worker nor leaves the other cores idle. Results are in batch order.
async fn check_on_all_cores(
    checker: &RecordChecker,
    batch: Vec<Consumed>,
) -> Option<Vec<(Consumed, Result<govbus_proto::v1::Record, String>)>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_slice = batch.len().div_ceil(cores).max(1);
    let mut slices = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        let tail = rest.split_off(per_slice.min(rest.len()));
        slices.push(std::mem::replace(&mut rest, tail));
    }
    let tasks: Vec<_> = slices
        .into_iter()
        .map(|slice| {
            let checker = checker.clone();
            tokio::task::spawn_blocking(move || {
                slice
                    .into_iter()
                    .map(|m| {
                        let checked = checker.check(&m.topic, &m.key, &m.payload);
                        (m, checked)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut checked = Vec::new();
    for task in tasks {
        match task.await {
            Ok(slice) => checked.extend(slice),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: nothing of the batch is stored
            // or acknowledged, so it is read again after the restart.
            Err(_) => return None,
        }
    }
    Some(checked)
}

/// Copies a message out of the consumer, linking the batch span to the
/// trace that published it.
fn consumed(message: &BorrowedMessage<'_>, batch_span: &tracing::Span) -> Consumed {
    if let Some(headers) = message.headers()
        && let Some(trace_id) = govbus_telemetry::link_from(batch_span, &HeaderExtractor(headers))
    {
        debug!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            trace_id,
            "consumed"
        );
    }
    Consumed {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().unwrap_or_default().to_vec(),
        payload: message.payload().unwrap_or_default().to_vec(),
    }
}
