//! One open subscription stream: a Kafka consumer of its own group, the
//! checks and minimisation of each record, the bounded hand-over to the
//! gRPC stream, and the commits that acknowledgements make.
//!
//! Flow control: the stream's channel holds `buffer` deliveries. When it is
//! full the consumer pauses its partitions (librdkafka stops fetching) and
//! waits for room, still serving acknowledgements; it resumes once the
//! subscriber reads again. Nothing else shares this consumer, so a
//! subscriber that stops reading holds back only itself.

use std::{collections::HashMap, sync::Arc, time::Duration};

use govbus_kafka::{HeaderExtractor, KafkaSettings};
use govbus_policy::PolicyStore;
use govbus_proto::v1::{Delivery, Record};
use govbus_security::{Identity, RecordChecker};
use rdkafka::{
    ClientContext, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer},
    error::KafkaError,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    Filter,
    cursor::{Cursor, CursorError},
};

/// How long a full stream may stay full before its consumer pauses.
const PAUSE_AFTER: Duration = Duration::from_millis(100);

/// How often a stream reports its lag.
const LAG_EVERY: Duration = Duration::from_secs(2);

/// An acknowledgement on its way to the session that delivered it.
pub struct Ack {
    pub cursors: Vec<Cursor>,
    pub reply: oneshot::Sender<Result<u32, CursorError>>,
}

/// Logs rebalances of a subscription's group (normally one member).
pub struct SessionContext;

impl ClientContext for SessionContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        govbus_kafka::consumer_log("subscription", level, fac, message);
    }
}

impl ConsumerContext for SessionContext {}

pub struct SessionSpec<'a> {
    pub group_id: String,
    pub subscription: String,
    pub consumer: Identity,
    pub kafka: &'a KafkaSettings,
    pub topics: Vec<String>,
    pub filter: Filter,
    pub checker: RecordChecker,
    pub policy: PolicyStore,
    pub deliveries: mpsc::Sender<Result<Delivery, Status>>,
    pub acks: mpsc::Receiver<Ack>,
    /// Cancelled when this stream must end.
    pub stop: CancellationToken,
    /// Cancelled when the adapter shuts down (`stop` is its child).
    pub closing: CancellationToken,
}

pub struct Session {
    consumer: Arc<StreamConsumer<SessionContext>>,
    subscription: String,
    group_id: String,
    identity: Identity,
    filter: Filter,
    checker: RecordChecker,
    policy: PolicyStore,
    deliveries: mpsc::Sender<Result<Delivery, Status>>,
    acks: mpsc::Receiver<Ack>,
    stop: CancellationToken,
    closing: CancellationToken,
    /// Highest offset delivered per (topic, partition) on this stream.
    delivered: HashMap<(String, i32), i64>,
    /// Highest offset acknowledged per (topic, partition) on this stream.
    acknowledged: HashMap<(String, i32), i64>,
}

/// How a session ended, sent to the subscriber as the stream's last item.
enum End {
    /// The subscriber went away, or a newer stream took over.
    Quiet,
    Status(Status),
}

impl Session {
    pub fn start(spec: SessionSpec<'_>) -> Result<Self, KafkaError> {
        let mut config = spec.kafka.config_with_defaults(
            govbus_kafka::Role::Consumer,
            &[
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "50"),
                // Bounds what librdkafka prefetches while the stream is paused.
                ("queued.max.messages.kbytes", "1024"),
                // A subscriber may legitimately read nothing for a long time.
                ("max.poll.interval.ms", "86400000"),
            ],
        );
        config
            .set("group.id", &spec.group_id)
            // The cursor moves only by Acknowledge.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer<SessionContext> =
            config.create_with_context(SessionContext)?;
        let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        info!(
            subscription = spec.subscription,
            group_id = spec.group_id,
            topics = topics.join(","),
            "subscription stream opened"
        );
        Ok(Self {
            consumer: Arc::new(consumer),
            subscription: spec.subscription,
            group_id: spec.group_id,
            identity: spec.consumer,
            filter: spec.filter,
            checker: spec.checker,
            policy: spec.policy,
            deliveries: spec.deliveries,
            acks: spec.acks,
            stop: spec.stop,
            closing: spec.closing,
            delivered: HashMap::new(),
            acknowledged: HashMap::new(),
        })
    }

    pub async fn run(mut self) {
        let end = self.serve().await;
        if let End::Status(status) = end {
            info!(subscription = self.subscription, code = ?status.code(), message = status.message(), "subscription stream ended");
            // A stalled subscriber may never make room; do not wait long.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.deliveries.send(Err(status)))
                .await;
        } else {
            info!(
                subscription = self.subscription,
                "subscription stream closed"
            );
        }
        metrics::gauge!("govbus_subscription_paused", "subscription" => self.subscription.clone())
            .set(0.0);
        // Leaving the group blocks while librdkafka says goodbye.
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    }

    async fn serve(&mut self) -> End {
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        loop {
            let message = tokio::select! {
                _ = self.stop.cancelled() => return self.stopped(),
                _ = lag_tick.tick() => {
                    self.report_lag().await;
                    continue;
                }
                _ = self.deliveries.closed() => return End::Quiet,
                Some(ack) = self.acks.recv() => {
                    self.acknowledge(ack).await;
                    continue;
                }
                m = self.consumer.recv() => m,
            };
            let m = match message {
                Err(e) => {
                    warn!(subscription = self.subscription, error = %e, "subscription consumer error");
                    continue;
                }
                Ok(m) => m,
            };
            let cursor = Cursor {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
            };
            // One span per record, linked to the publisher's: a trace
            // answers "did system S receive record X, and when".
            let span = info_span!(
                "deliver",
                otel.name = format!("process {}", cursor.topic),
                otel.kind = "consumer",
                messaging.system = "kafka",
                messaging.operation.type = "process",
                messaging.consumer.group.name = self.group_id.as_str(),
                subscription = self.subscription.as_str(),
                cursor = %cursor,
            );
            if let Some(headers) = m.headers() {
                govbus_telemetry::link_from(&span, &HeaderExtractor(headers));
            }
            let prepared = span.in_scope(|| {
                self.prepare(
                    &cursor,
                    m.key().unwrap_or_default(),
                    m.payload().unwrap_or_default(),
                )
            });
            drop(m);
            let delivery = match prepared {
                Ok(Some(delivery)) => delivery,
                Ok(None) => continue,
                Err(end) => return end,
            };
            if let Some(record) = &delivery.record {
                debug!(parent: &span, subscription = self.subscription, record_id = record.record_id, version = record.version, %cursor, "delivering");
            }
            if let Some(end) = self.deliver(&cursor, delivery).instrument(span).await {
                return end;
            }
        }
    }

    fn stopped(&self) -> End {
        End::Status(if self.closing.is_cancelled() {
            Status::unavailable("the adapter is shutting down; subscribe again")
        } else {
            Status::aborted("a newer Subscribe took over this subscription")
        })
    }

    /// The delivery for one Kafka message, `None` when it is passed over.
    fn prepare(
        &self,
        cursor: &Cursor,
        key: &[u8],
        payload: &[u8],
    ) -> Result<Option<Delivery>, End> {
        let mut record: Record = match self.checker.check(&cursor.topic, key, payload) {
            Ok(record) => record,
            Err(reason) => {
                // The broker dead-letters it; a subscriber never sees it.
                warn!(subscription = self.subscription, %cursor, reason, "record refused, not delivered");
                metrics::counter!("govbus_subscription_refused_total", "subscription" => self.subscription.clone())
                    .increment(1);
                return Ok(None);
            }
        };
        if !self.filter.admits(&record) {
            return Ok(None);
        }
        // The policy in force now: a withdrawn grant ends the stream, a
        // narrowed one applies from the next record.
        let spec = self
            .checker
            .catalog()
            .get(&record.record_type)
            .cloned()
            .ok_or_else(|| End::Status(Status::internal("record type left the catalog")))?;
        let fields = self
            .policy
            .current()
            .authorise_subscription(&self.identity, &spec)
            .map_err(|denial| End::Status(Status::permission_denied(denial.to_string())))?;
        if let Some(keep) = fields
            && let Err(e) = govbus_core::minimise(&mut record, &keep)
        {
            warn!(subscription = self.subscription, %cursor, error = %e, "record cannot be minimised, not delivered");
            return Ok(None);
        }
        Ok(Some(Delivery {
            record: Some(record),
            cursor: cursor.to_string(),
        }))
    }

    /// Hands one delivery to the stream, pausing the consumer while the
    /// stream is full. `Some` when the session must end.
    async fn deliver(&mut self, cursor: &Cursor, delivery: Delivery) -> Option<End> {
        // The permit borrows the sender; a clone leaves `self` free for
        // acknowledgements while waiting for room.
        let deliveries = self.deliveries.clone();
        let ready = match deliveries.try_reserve() {
            Ok(permit) => Ok(permit),
            Err(mpsc::error::TrySendError::Closed(())) => return Some(End::Quiet),
            // A reading subscriber frees room at once; pausing (which drops
            // librdkafka's prefetched records) is for one that does not.
            Err(mpsc::error::TrySendError::Full(())) => {
                match tokio::time::timeout(PAUSE_AFTER, deliveries.reserve()).await {
                    Ok(Ok(permit)) => Ok(permit),
                    Ok(Err(_)) => return Some(End::Quiet),
                    Err(_) => Err(()),
                }
            }
        };
        let permit = match ready {
            Ok(permit) => permit,
            Err(()) => {
                let assignment = self.consumer.assignment().ok();
                if let Some(assignment) = &assignment
                    && let Err(e) = self.consumer.pause(assignment)
                {
                    warn!(subscription = self.subscription, error = %e, "cannot pause partitions");
                }
                let paused = metrics::gauge!("govbus_subscription_paused", "subscription" => self.subscription.clone());
                paused.set(1.0);
                metrics::counter!("govbus_subscription_pauses_total", "subscription" => self.subscription.clone())
                    .increment(1);
                debug!(
                    subscription = self.subscription,
                    "subscriber is slow: partitions paused"
                );
                let mut lag_tick = tokio::time::interval(LAG_EVERY);
                let permit = loop {
                    tokio::select! {
                        _ = self.stop.cancelled() => return Some(self.stopped()),
                        _ = lag_tick.tick() => self.report_lag().await,
                        Some(ack) = self.acks.recv() => self.acknowledge(ack).await,
                        permit = deliveries.reserve() => match permit {
                            Ok(permit) => break permit,
                            Err(_) => return Some(End::Quiet),
                        },
                    }
                };
                if let Some(assignment) = &assignment
                    && let Err(e) = self.consumer.resume(assignment)
                {
                    warn!(subscription = self.subscription, error = %e, "cannot resume partitions");
                }
                paused.set(0.0);
                debug!(
                    subscription = self.subscription,
                    "subscriber reads again: partitions resumed"
                );
                permit
            }
        };
        permit.send(Ok(delivery));
        self.delivered
            .insert((cursor.topic.clone(), cursor.partition), cursor.offset);
        metrics::counter!("govbus_subscription_delivered_total", "subscription" => self.subscription.clone())
            .increment(1);
        None
    }

    /// Sets `govbus_subscription_lag` per partition: records published
    /// and not yet acknowledged. Asks the broker for the high watermarks
    /// (a paused consumer's cached ones go stale).
    async fn report_lag(&self) {
        let consumer = self.consumer.clone();
        let acknowledged = self.acknowledged.clone();
        let lags = tokio::task::spawn_blocking(move || {
            let Ok(assignment) = consumer.assignment() else {
                return Vec::new();
            };
            assignment
                .elements()
                .iter()
                .filter_map(|e| {
                    let (low, high) = consumer
                        .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                        .ok()?;
                    let next = acknowledged
                        .get(&(e.topic().to_string(), e.partition()))
                        .map_or(low, |offset| (offset + 1).max(low));
                    Some((e.topic().to_string(), e.partition(), (high - next).max(0)))
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        for (topic, partition, lag) in lags {
            metrics::gauge!(
                "govbus_subscription_lag",
                "subscription" => self.subscription.clone(),
                "topic" => topic,
                "partition" => partition.to_string()
            )
            .set(lag as f64);
        }
    }

    /// Commits the acknowledged positions (offset + 1: the next record to
    /// deliver) and answers the Acknowledge call once Kafka has them.
    async fn acknowledge(&mut self, ack: Ack) {
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for (index, cursor) in ack.cursors.iter().enumerate() {
            let key = (cursor.topic.clone(), cursor.partition);
            match self.delivered.get(&key) {
                Some(&last) if cursor.offset <= last => {}
                _ => {
                    let _ = ack.reply.send(Err(CursorError::NotDelivered {
                        index,
                        reason: format!("cursor {cursor} was not delivered on this stream"),
                    }));
                    return;
                }
            }
            let best = next.entry(key).or_insert(cursor.offset);
            *best = (*best).max(cursor.offset);
        }
        // A late acknowledgement of an earlier record must not move the
        // cursor back.
        next.retain(|key, offset| {
            self.acknowledged
                .get(key)
                .is_none_or(|done| *offset > *done)
        });
        if next.is_empty() {
            let _ = ack.reply.send(Ok(0));
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))
            {
                let _ = ack.reply.send(Err(CursorError::Commit(e.to_string())));
                return;
            }
        }
        let consumer = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        let outcome = match committed {
            Ok(Ok(())) => {
                let advanced = next.len() as u32;
                self.acknowledged.extend(next);
                Ok(advanced)
            }
            Ok(Err(e)) => Err(CursorError::Commit(e.to_string())),
            Err(e) => Err(CursorError::Commit(e.to_string())),
        };
        let _ = ack.reply.send(outcome);
    }
}
