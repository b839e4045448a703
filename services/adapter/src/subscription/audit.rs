//! Audit entries for subscription decisions, on the `govbus.audit` topic
//! beside the broker's copies of its evidence trail.
//!
//! The adapter has no database of its own to chain entries in, so each
//! decision is one Kafka record, acknowledged before the caller hears the
//! answer: a decision that cannot be recorded is not given (UNAVAILABLE).
//! Entries carry `"kind": "subscription"` and the adapter's identity as
//! `chain`; they are not part of the broker's hash chain.

use govbus_core::{RecordTypeSpec, time::now_micros};
use govbus_kafka::{AUDIT_TOPIC, RecordProducer};
use rdkafka::{error::KafkaError, message::OwnedHeaders};

#[derive(Clone)]
pub struct SubscriptionAudit {
    producer: RecordProducer,
    adapter: String,
}

impl SubscriptionAudit {
    pub fn new(producer: RecordProducer, adapter: String) -> Self {
        Self { producer, adapter }
    }

    /// Writes one decision and waits for Kafka's acknowledgement.
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        caller: &str,
        subscription: &str,
        record_type: &str,
        fields: &str,
        decision: &str,
        reason: &str,
        request_id: &str,
    ) -> Result<(), KafkaError> {
        let body = serde_json::json!({
            "kind": "subscription",
            "chain": self.adapter,
            "at_us": now_micros(),
            "caller": caller,
            "subscription": subscription,
            "record_type": record_type,
            "fields": fields,
            "decision": decision,
            "reason": reason,
            "request_id": request_id,
            "trace_id": govbus_telemetry::current_trace_id(),
        })
        .to_string();
        self.producer
            .send(
                AUDIT_TOPIC,
                self.adapter.as_bytes(),
                body.as_bytes(),
                OwnedHeaders::new(),
            )
            .await
            .map(|_| ())
            .inspect_err(|e| tracing::error!(error = %e, "subscription audit entry not written"))
    }
}

/// Field names as the broker's audit entries list them: `*` for all.
pub fn field_list(spec: &RecordTypeSpec, numbers: Option<&[u32]>) -> String {
    match numbers {
        None => "*".into(),
        Some(numbers) => spec
            .message
            .fields()
            .filter(|f| numbers.contains(&f.number()))
            .map(|f| f.name().to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}
