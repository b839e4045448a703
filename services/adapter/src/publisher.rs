//! Turning agency records into signed envelopes on their Kafka topics.
//! Shared by the gRPC facade and the outbox connector.

use std::{collections::HashMap, sync::Arc};

use futures::future::join_all;
use govbus_core::{Catalog, FieldViolation, RecordLimits, ValidRecord, validate_record};
use govbus_kafka::{Delivered, RecordProducer};
use govbus_proto::v1::{PublishOutcome, PublishResult, Record};
use govbus_security::{Identity, Signer};
use prost::Message;
use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
};
use tracing::{Instrument, debug, info_span};

/// A record ready to go: validated, completed, signed, encoded.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub record_id: String,
    pub topic: String,
    pub key: String,
    pub record_type: String,
    pub envelope: Vec<u8>,
}

/// Why a record cannot be published here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed: the violations name the fields.
    Invalid(Vec<FieldViolation>),
    /// Well-formed, but this system does not own the record type.
    NotOwner { record_type: String, owner: String },
    /// The record could not be signed (an internal fault, not the caller's).
    Unsigned(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(v) => {
                let text: Vec<String> = v.iter().map(ToString::to_string).collect();
                f.write_str(&text.join("; "))
            }
            Self::NotOwner { record_type, owner } => {
                write!(f, "record_type: {record_type} is owned by {owner}")
            }
            Self::Unsigned(e) => write!(f, "signing failed: {e}"),
        }
    }
}

/// Validates, completes and signs records: the adapter's work on a call
/// before anything is produced (the bench times it alone).
#[derive(Debug)]
pub struct Preparer {
    catalog: Arc<Catalog>,
    limits: RecordLimits,
    signer: Signer,
}

/// A `Preparer` and the producer its envelopes go out through.
#[derive(Debug)]
pub struct Publisher {
    preparer: Preparer,
    producer: RecordProducer,
}

impl Publisher {
    pub fn new(
        catalog: Arc<Catalog>,
        producer: RecordProducer,
        limits: RecordLimits,
        signer: Signer,
    ) -> Self {
        Self {
            preparer: Preparer::new(catalog, limits, signer),
            producer,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.preparer.catalog
    }

    pub fn producer(&self) -> &RecordProducer {
        &self.producer
    }

    /// The system this adapter publishes as.
    pub fn identity(&self) -> &Identity {
        self.preparer.signer.identity()
    }

    /// See `Preparer::prepare_all`.
    pub fn prepare_all(&self, records: Vec<Record>) -> Vec<Result<Prepared, Refusal>> {
        self.preparer.prepare_all(records)
    }

    /// Produces every prepared record and waits for Kafka's answer on each.
    /// Results are in input order. Each topic's records go out as one batch
    /// under one producer span (OpenTelemetry messaging: a batch publish,
    /// `messaging.batch.message_count`); every record carries that span's
    /// trace context and its id in a header.
    pub async fn send(&self, batch: Vec<Prepared>) -> Vec<PublishResult> {
        let mut topics: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, p) in batch.iter().enumerate() {
            match topics.iter_mut().find(|(topic, _)| *topic == p.topic) {
                Some((_, members)) => members.push(i),
                None => topics.push((&p.topic, vec![i])),
            }
        }
        let sends = topics.iter().map(|(topic, members)| {
            let span = info_span!(
                "publish_batch",
                otel.name = %format!("publish {topic}"),
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.operation.type = "publish",
                messaging.destination.name = %topic,
                messaging.batch.message_count = members.len(),
            );
            let records: Vec<_> = members
                .iter()
                .map(|&i| {
                    let p = &batch[i];
                    let headers = OwnedHeaders::new_with_capacity(2)
                        .insert(Header {
                            key: "govbus-record-type",
                            value: Some(p.record_type.as_bytes()),
                        })
                        .insert(Header {
                            key: "govbus-record-id",
                            value: Some(p.record_id.as_bytes()),
                        });
                    (p.key.as_bytes(), p.envelope.as_slice(), headers)
                })
                .collect();
            self.producer.send_batch(topic, records).instrument(span)
        });
        let sent: Vec<_> = join_all(sends).await;
        let mut outcomes: Vec<Option<Result<Delivered, KafkaError>>> =
            (0..batch.len()).map(|_| None).collect();
        for ((_, members), results) in topics.iter().zip(sent) {
            for (&i, result) in members.iter().zip(results) {
                outcomes[i] = Some(result);
            }
        }
        let mut counted: HashMap<(&str, &'static str), u64> = HashMap::new();
        let results = batch
            .iter()
            .zip(outcomes)
            .enumerate()
            .map(|(i, (p, sent))| {
                let sent = sent.unwrap_or(Err(KafkaError::Canceled));
                let outcome = if sent.is_ok() { "accepted" } else { "failed" };
                *counted.entry((&p.record_type, outcome)).or_default() += 1;
                let (outcome, partition, offset, error) = match sent {
                    Ok(d) => (
                        PublishOutcome::Accepted,
                        d.partition,
                        d.offset,
                        String::new(),
                    ),
                    Err(e) => (
                        PublishOutcome::Failed,
                        -1,
                        -1,
                        format!("kafka did not accept the record: {e}"),
                    ),
                };
                debug!(record_id = p.record_id, partition, offset, "produced");
                PublishResult {
                    index: i as u32,
                    record_id: p.record_id.clone(),
                    outcome: outcome as i32,
                    topic: p.topic.clone(),
                    partition,
                    offset,
                    error,
                }
            })
            .collect();
        for ((record_type, outcome), n) in counted {
            metrics::counter!(
                "govbus_records_published_total",
                "record_type" => record_type.to_string(),
                "outcome" => outcome
            )
            .increment(n);
        }
        results
    }
}

impl Preparer {
    pub fn new(catalog: Arc<Catalog>, limits: RecordLimits, signer: Signer) -> Self {
        Self {
            catalog,
            limits,
            signer,
        }
    }

    /// Validates each record, checks that this system owns its type, and
    /// completes the envelope: a UUID v7 when it has no id, this system as
    /// the source (whatever the caller wrote there). Then signs all that
    /// passed as one batch (one signature, see `Signer::sign_all`). Results
    /// are in input order.
    pub fn prepare_all(&self, records: Vec<Record>) -> Vec<Result<Prepared, Refusal>> {
        let mut results = Vec::with_capacity(records.len());
        let mut batch = Vec::with_capacity(records.len());
        let mut places = Vec::with_capacity(records.len());
        for (i, record) in records.into_iter().enumerate() {
            match self.complete(record) {
                Ok((record, topic)) => {
                    batch.push(record);
                    places.push((i, topic));
                }
                Err(refusal) => results.push((i, Err(refusal))),
            }
        }
        let signed = self
            .signer
            .sign_all(&mut batch)
            .map_err(|e| Refusal::Unsigned(e.to_string()));
        for ((i, topic), record) in places.into_iter().zip(batch) {
            let prepared = signed.clone().map(|()| Prepared {
                record_id: record.record_id.clone(),
                topic,
                key: record.subject_id.clone(),
                record_type: record.record_type.clone(),
                envelope: record.encode_to_vec(),
            });
            results.push((i, prepared));
        }
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, result)| result).collect()
    }

    /// One record validated and completed, with its topic; not yet signed.
    fn complete(&self, record: Record) -> Result<(Record, String), Refusal> {
        let ValidRecord {
            mut record, spec, ..
        } = validate_record(&self.catalog, record, &self.limits).map_err(Refusal::Invalid)?;
        let identity = self.signer.identity();
        if spec.owner != identity.to_string() {
            return Err(Refusal::NotOwner {
                record_type: spec.name.clone(),
                owner: spec.owner.clone(),
            });
        }
        if record.record_id.is_empty() {
            record.record_id = uuid::Uuid::now_v7().to_string();
        }
        record.source_agency = identity.agency().to_string();
        record.source_system = identity.system().to_string();
        record.content_hash.clear();
        record.signature = None;
        Ok((record, spec.topic.clone()))
    }
}
