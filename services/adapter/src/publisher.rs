//! Turning agency records into signed-off envelopes on their Kafka topics.
//! Shared by the gRPC facade and the outbox connector.

use std::sync::Arc;

use futures::future::join_all;
use govbus_core::{
    Catalog, FieldViolation, RecordLimits, ValidRecord, content_hash, validate_record,
};
use govbus_kafka::RecordProducer;
use govbus_proto::v1::{PublishOutcome, PublishResult, Record};
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use tracing::{Instrument, debug, info_span};

/// A record ready to go: validated, completed by the adapter, encoded.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub record_id: String,
    pub topic: String,
    pub key: String,
    pub record_type: String,
    pub envelope: Vec<u8>,
}

#[derive(Debug)]
pub struct Publisher {
    catalog: Arc<Catalog>,
    producer: RecordProducer,
    limits: RecordLimits,
    agency: String,
    system: String,
}

impl Publisher {
    pub fn new(
        catalog: Arc<Catalog>,
        producer: RecordProducer,
        limits: RecordLimits,
        agency: String,
        system: String,
    ) -> Self {
        Self {
            catalog,
            producer,
            limits,
            agency,
            system,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn producer(&self) -> &RecordProducer {
        &self.producer
    }

    /// Validates `record` and completes the envelope: a UUID v7 when it has
    /// no id, this adapter's agency and system as the source (whatever the
    /// caller wrote there), and the content hash.
    pub fn prepare(&self, record: Record) -> Result<Prepared, Vec<FieldViolation>> {
        let ValidRecord {
            mut record, spec, ..
        } = validate_record(&self.catalog, record, &self.limits)?;
        if record.record_id.is_empty() {
            record.record_id = uuid::Uuid::now_v7().to_string();
        }
        record.source_agency.clone_from(&self.agency);
        record.source_system.clone_from(&self.system);
        record.content_hash = content_hash(&record);
        Ok(Prepared {
            record_id: record.record_id.clone(),
            topic: spec.topic.clone(),
            key: record.subject_id.clone(),
            record_type: record.record_type.clone(),
            envelope: record.encode_to_vec(),
        })
    }

    /// Produces every prepared record and waits for Kafka's answer on each.
    /// Results are in input order, with `index` counting from `first_index`.
    pub async fn send(&self, batch: Vec<Prepared>, first_index: u32) -> Vec<PublishResult> {
        let sends = batch.into_iter().enumerate().map(|(i, p)| {
            let span = info_span!(
                "publish_record",
                record_type = %p.record_type,
                record_id = %p.record_id,
                topic = %p.topic
            );
            async move {
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "govbus-record-type",
                        value: Some(p.record_type.as_bytes()),
                    })
                    .insert(Header {
                        key: "govbus-record-id",
                        value: Some(p.record_id.as_bytes()),
                    });
                let index = first_index + i as u32;
                let sent = self
                    .producer
                    .send(&p.topic, p.key.as_bytes(), &p.envelope, headers)
                    .await;
                match sent {
                    Ok(d) => {
                        debug!(partition = d.partition, offset = d.offset, "delivered");
                        PublishResult {
                            index,
                            record_id: p.record_id,
                            outcome: PublishOutcome::Accepted as i32,
                            topic: p.topic,
                            partition: d.partition,
                            offset: d.offset,
                            error: String::new(),
                        }
                    }
                    Err(e) => PublishResult {
                        index,
                        record_id: p.record_id,
                        outcome: PublishOutcome::Failed as i32,
                        topic: p.topic,
                        partition: -1,
                        offset: -1,
                        error: format!("kafka did not accept the record: {e}"),
                    },
                }
            }
            .instrument(span)
        });
        join_all(sends).await
    }
}
