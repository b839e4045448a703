//! Subscriptions: an agency system receives, as they are published, the
//! records of other agencies it holds subscription grants for.
//!
//! Each subscription is a Kafka consumer group of its own
//! (`govbus.subscription.<agency>.<system>.<name>`), so its durable cursor
//! is the group's committed offsets, an acknowledgement is a commit, and a
//! slow subscriber holds back nobody but itself. One stream per
//! subscription is open at a time; the newest Subscribe wins.

mod audit;
mod cursor;
mod request;
mod session;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use govbus_core::Catalog;
use govbus_kafka::{KafkaSettings, RecordProducer};
use govbus_policy::PolicyStore;
use govbus_proto::v1::{Delivery, SubscribeRequest};
use govbus_security::{Identity, RecordChecker};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::info;

pub use audit::SubscriptionAudit;
pub use cursor::{Cursor, CursorError};
pub use request::Filter;
use request::check_name;
use session::{Ack, Session, SessionSpec};

/// Why a Subscribe or Acknowledge call failed. One mapping to gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{}", .0.join("; "))]
    Denied(Vec<String>),
    #[error("subscription {0:?} has no open stream on this adapter; Subscribe first")]
    NotOpen(String),
    #[error("the audit trail cannot be written; nothing is released")]
    AuditUnavailable,
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("the adapter is shutting down")]
    Closing,
}

impl From<SubscriptionError> for Status {
    fn from(e: SubscriptionError) -> Self {
        match &e {
            SubscriptionError::Invalid { .. } => Status::invalid_argument(e.to_string()),
            SubscriptionError::Denied(_) => Status::permission_denied(e.to_string()),
            SubscriptionError::NotOpen(_) => Status::failed_precondition(e.to_string()),
            SubscriptionError::AuditUnavailable | SubscriptionError::Closing => {
                Status::unavailable(e.to_string())
            }
            SubscriptionError::Kafka(detail) => {
                tracing::warn!(detail, "subscription kafka error");
                Status::unavailable("the record stream is unavailable; retry")
            }
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SubscriptionError {
    SubscriptionError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Deliveries of one open stream; the receiving end of the gRPC response.
pub type DeliveryReceiver = mpsc::Receiver<Result<Delivery, Status>>;

/// The open stream of one subscription.
struct OpenStream {
    /// Tells this stream apart from a later one of the same subscription.
    generation: u64,
    stop: CancellationToken,
    acks: mpsc::Sender<Ack>,
    /// The session's task: done once its consumer has left the group.
    task: tokio::task::JoinHandle<()>,
}

impl OpenStream {
    async fn stop_and_wait(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The subscriptions served by one adapter.
pub struct Subscriptions {
    identity: Identity,
    catalog: Arc<Catalog>,
    policy: PolicyStore,
    checker: RecordChecker,
    kafka: KafkaSettings,
    audit: SubscriptionAudit,
    buffer: usize,
    open: Mutex<HashMap<String, OpenStream>>,
    next_generation: std::sync::atomic::AtomicU64,
    closing: CancellationToken,
}

/// What the hub needs from the adapter.
pub struct SubscriptionSettings {
    pub identity: Identity,
    pub catalog: Arc<Catalog>,
    pub policy: PolicyStore,
    /// The bus CA: delivered records must be signed by a certificate it issued.
    pub ca_der: Vec<u8>,
    pub kafka: KafkaSettings,
    /// Audit entries go to the `govbus.audit` topic through this producer.
    pub producer: RecordProducer,
    /// Deliveries a stream holds before its consumer pauses.
    pub buffer: usize,
}

impl Subscriptions {
    pub fn new(settings: SubscriptionSettings) -> Self {
        Self {
            audit: SubscriptionAudit::new(settings.producer, settings.identity.to_string()),
            checker: RecordChecker::new(settings.catalog.clone(), settings.ca_der),
            identity: settings.identity,
            catalog: settings.catalog,
            policy: settings.policy,
            kafka: settings.kafka,
            buffer: settings.buffer.max(1),
            open: Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
            closing: CancellationToken::new(),
        }
    }

    pub fn policy(&self) -> &PolicyStore {
        &self.policy
    }

    /// Opens a stream for the adapter's own system. `request_id` ties the
    /// audit entry to the call.
    pub async fn open(
        self: &Arc<Self>,
        request: SubscribeRequest,
        request_id: &str,
    ) -> Result<DeliveryReceiver, SubscriptionError> {
        if self.closing.is_cancelled() {
            return Err(SubscriptionError::Closing);
        }
        let name = request.subscription.clone();
        let caller = self.identity.to_string();
        let (topics, filter) = request::validate(&self.catalog, request)?;
        let policy = self.policy.current();
        let mut denied = Vec::new();
        let mut granted = BTreeMap::new();
        for spec in &topics {
            match policy.authorise_subscription(&self.identity, spec) {
                Ok(fields) => {
                    granted.insert(spec.topic.clone(), (spec.clone(), fields));
                }
                Err(denial) => denied.push((spec.name.clone(), denial.to_string())),
            }
        }
        if !denied.is_empty() {
            for (record_type, reason) in &denied {
                self.audit
                    .record(
                        &caller,
                        &name,
                        record_type,
                        "",
                        "denied",
                        reason,
                        request_id,
                    )
                    .await
                    .map_err(|_| SubscriptionError::AuditUnavailable)?;
            }
            let reasons: Vec<String> = denied.into_iter().map(|(_, reason)| reason).collect();
            info!(
                subscription = name,
                reasons = reasons.join("; "),
                "subscription refused"
            );
            return Err(SubscriptionError::Denied(reasons));
        }
        for (spec, fields) in granted.values() {
            self.audit
                .record(
                    &caller,
                    &name,
                    &spec.name,
                    &audit::field_list(spec, fields.as_deref()),
                    "allowed",
                    "",
                    request_id,
                )
                .await
                .map_err(|_| SubscriptionError::AuditUnavailable)?;
        }

        // The older stream's consumer must leave the group first; the map
        // is not held meanwhile, so other subscriptions carry on.
        let previous = self.open.lock().await.remove(&name);
        if let Some(previous) = previous {
            info!(
                subscription = name,
                "subscription taken over by a newer stream"
            );
            previous.stop_and_wait().await;
        }
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.buffer);
        let (acks_tx, acks_rx) = mpsc::channel(16);
        let stop = self.closing.child_token();
        let session = Session::start(SessionSpec {
            group_id: group_id(&self.identity, &name),
            subscription: name.clone(),
            consumer: self.identity.clone(),
            kafka: &self.kafka,
            topics: granted.keys().cloned().collect(),
            filter,
            checker: self.checker.clone(),
            policy: self.policy.clone(),
            deliveries: tx,
            acks: acks_rx,
            stop: stop.clone(),
            closing: self.closing.clone(),
        })
        .map_err(|e| SubscriptionError::Kafka(e.to_string()))?;
        let hub = Arc::clone(self);
        let subscription = name.clone();
        let task = tokio::spawn(async move {
            session.run().await;
            let mut open = hub.open.lock().await;
            if open
                .get(&subscription)
                .is_some_and(|s| s.generation == generation)
            {
                open.remove(&subscription);
            }
        });
        // A Subscribe racing this one for the same subscription: the newest
        // (this one) wins.
        let racing = self.open.lock().await.insert(
            name,
            OpenStream {
                generation,
                stop,
                acks: acks_tx,
                task,
            },
        );
        if let Some(racing) = racing {
            racing.stop.cancel();
        }
        Ok(rx)
    }

    /// Records that `caller`, which is not this adapter's system, tried to
    /// subscribe through it.
    pub async fn refuse_caller(
        &self,
        caller: &Identity,
        request: &SubscribeRequest,
        reason: &str,
        request_id: &str,
    ) -> Result<(), SubscriptionError> {
        let subscription = govbus_core::text::clipped(&request.subscription, 64);
        let record_types: Vec<String> = request
            .record_types
            .iter()
            .map(|t| govbus_core::text::clipped(t, 64))
            .collect();
        self.audit
            .record(
                &caller.to_string(),
                &subscription,
                &record_types.join(","),
                "",
                "denied",
                reason,
                request_id,
            )
            .await
            .map_err(|_| SubscriptionError::AuditUnavailable)
    }

    /// Commits the cursors of an open stream; returns how many partitions
    /// moved forward.
    pub async fn acknowledge(
        &self,
        subscription: &str,
        cursors: &[String],
    ) -> Result<u32, SubscriptionError> {
        check_name(subscription)?;
        if cursors.is_empty() {
            return Err(invalid("cursors", "at least one cursor is required"));
        }
        let parsed = cursors
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.parse::<Cursor>()
                    .map_err(|e| invalid(format!("cursors[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let acks = {
            let open = self.open.lock().await;
            let stream = open
                .get(subscription)
                .ok_or_else(|| SubscriptionError::NotOpen(subscription.to_string()))?;
            stream.acks.clone()
        };
        let (reply, answer) = oneshot::channel();
        acks.send(Ack {
            cursors: parsed,
            reply,
        })
        .await
        .map_err(|_| SubscriptionError::NotOpen(subscription.to_string()))?;
        match answer.await {
            Ok(Ok(advanced)) => Ok(advanced),
            Ok(Err(CursorError::NotDelivered { index, reason })) => {
                Err(invalid(format!("cursors[{index}]"), reason))
            }
            Ok(Err(CursorError::Commit(e))) => Err(SubscriptionError::Kafka(e)),
            Ok(Err(e @ CursorError::Malformed(_))) => Err(invalid("cursors", e.to_string())),
            Err(_) => Err(SubscriptionError::NotOpen(subscription.to_string())),
        }
    }

    /// Ends every open stream (UNAVAILABLE) and waits for their consumers
    /// to close; later Subscribe calls are refused.
    pub async fn close(&self) {
        self.closing.cancel();
        let streams: Vec<OpenStream> = self.open.lock().await.drain().map(|(_, s)| s).collect();
        for stream in streams {
            stream.stop_and_wait().await;
        }
    }
}

/// The consumer group that holds a subscription's cursor.
pub fn group_id(consumer: &Identity, subscription: &str) -> String {
    format!(
        "govbus.subscription.{}.{}.{subscription}",
        consumer.agency(),
        consumer.system()
    )
}
