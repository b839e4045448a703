//! What a record taken off Kafka must satisfy before anyone relies on it:
//! the broker before it enters the showcase (live ingestion and replay),
//! an adapter before it delivers it to a subscriber.

use std::sync::Arc;

use govbus_core::{Catalog, RecordLimits, validate_record};
use govbus_proto::v1::Record;
use prost::{Message, bytes::Buf};

/// Adapters enforce their own (configurable) payload limit; the broker takes
/// whatever fits in a Kafka message rather than second-guess them.
const INGEST_LIMITS: RecordLimits = RecordLimits {
    max_payload_bytes: 1024 * 1024,
    max_key_chars: 128,
};

#[derive(Debug, Clone)]
pub struct RecordChecker {
    catalog: Arc<Catalog>,
    /// The bus CA: records must be signed with a certificate it issued.
    verifier: Arc<crate::Verifier>,
}

impl RecordChecker {
    pub fn new(catalog: Arc<Catalog>, ca_der: Vec<u8>) -> Self {
        Self {
            catalog,
            verifier: Arc::new(crate::Verifier::new(ca_der)),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The record, or the reason it is refused (sent to the dead letters).
    /// From a `Bytes` envelope the signature's byte fields are decoded as
    /// slices of it, from a `&[u8]` as copies.
    pub fn check(&self, topic: &str, key: &[u8], envelope: impl Buf) -> Result<Record, String> {
        let spec = self
            .catalog
            .by_topic(topic)
            .ok_or_else(|| format!("topic {topic} carries no known record type"))?;
        let record =
            Record::decode(envelope).map_err(|e| format!("envelope does not decode: {e}"))?;
        if record.record_type != spec.name {
            return Err(format!(
                "record_type {:?} does not belong on topic {topic}",
                record.record_type
            ));
        }
        if key != record.subject_id.as_bytes() {
            return Err("message key is not the record's subject_id".into());
        }
        let verified = self
            .verifier
            .verify(&record)
            .map_err(|e| format!("signature: {e}"))?;
        // The verifier held `signer` to the certificate's identity.
        let signer = record.signature.as_ref().map(|s| s.signer.as_str());
        if signer != Some(spec.owner.as_str()) {
            return Err(format!(
                "signed by {}, which does not own {} (owner: {})",
                verified.signer, spec.name, spec.owner
            ));
        }
        if record.source_agency != verified.signer.agency()
            || record.source_system != verified.signer.system()
        {
            return Err("source_agency/source_system do not match the signer".into());
        }
        let valid = validate_record(&self.catalog, record, &INGEST_LIMITS).map_err(|v| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        Ok(valid.record)
    }
}
