//! Validation of a wire record, and its canonical content hash.

use std::{fmt, sync::Arc};

use govbus_proto::v1::{Record, RecordStatus};
use prost_reflect::{DynamicMessage, Value};

use crate::{Catalog, RecordTypeSpec, SubjectId};

/// Size limits a record must respect before it is put on the bus.
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    pub max_payload_bytes: usize,
    pub max_key_chars: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            // Well under Kafka's default message.max.bytes (1 MiB) with room
            // for the envelope and headers.
            max_payload_bytes: 512 * 1024,
            max_key_chars: 128,
        }
    }
}

/// One thing wrong with one field, reported to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub reason: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// A record that passed validation, with its type resolved.
#[derive(Debug, Clone)]
pub struct ValidRecord {
    pub record: Record,
    pub subject: SubjectId,
    pub spec: Arc<RecordTypeSpec>,
}

/// Checks every field of `record` against the catalog and the limits.
/// Returns all violations at once, so the caller can fix them in one go.
pub fn validate_record(
    catalog: &Catalog,
    record: Record,
    limits: &RecordLimits,
) -> Result<ValidRecord, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut bad = |field: &str, reason: String| violations.push(FieldViolation::new(field, reason));

    if !record.record_id.is_empty() {
        match uuid::Uuid::parse_str(&record.record_id) {
            Ok(id) if id.get_version_num() == 7 => {}
            Ok(id) => bad(
                "record_id",
                format!(
                    "must be a UUID v7 (time-ordered), got version {}; leave it empty to have one assigned",
                    id.get_version_num()
                ),
            ),
            Err(e) => bad("record_id", format!("is not a UUID: {e}")),
        }
    }

    let spec = if record.record_type.is_empty() {
        bad("record_type", "is required".into());
        None
    } else {
        let spec = catalog.get(&record.record_type);
        if spec.is_none() {
            bad(
                "record_type",
                format!(
                    "unknown record type {:?}; known types: {}",
                    record.record_type,
                    catalog.names().join(", ")
                ),
            );
        }
        spec
    };

    let subject = SubjectId::parse(&record.subject_id)
        .map_err(|e| bad("subject_id", e.to_string()))
        .ok();

    let key_chars = record.record_key.chars().count();
    if key_chars == 0 {
        bad(
            "record_key",
            "is required (e.g. the certificate number)".into(),
        );
    } else if key_chars > limits.max_key_chars {
        bad(
            "record_key",
            format!(
                "has {key_chars} characters; at most {} allowed",
                limits.max_key_chars
            ),
        );
    } else if crate::text::has_control(&record.record_key) {
        bad("record_key", "must not contain control characters".into());
    }

    if record.version == 0 || record.version > i64::MAX as u64 {
        bad(
            "version",
            format!("must be between 1 and {}, got {}", i64::MAX, record.version),
        );
    }

    match RecordStatus::try_from(record.status) {
        Ok(RecordStatus::Active | RecordStatus::Revoked) => {}
        _ => bad(
            "status",
            format!(
                "must be RECORD_STATUS_ACTIVE or RECORD_STATUS_REVOKED, got {}",
                record.status
            ),
        ),
    }

    match &record.issued_at {
        None => bad("issued_at", "is required".into()),
        Some(ts) if !(0..1_000_000_000).contains(&ts.nanos) => {
            bad("issued_at", "nanos must be between 0 and 999999999".into())
        }
        Some(_) => {}
    }
    for (field, ts) in [
        ("valid_from", &record.valid_from),
        ("valid_until", &record.valid_until),
    ] {
        if let Some(ts) = ts
            && !(0..1_000_000_000).contains(&ts.nanos)
        {
            bad(field, "nanos must be between 0 and 999999999".into());
        }
    }
    if let (Some(from), Some(until)) = (&record.valid_from, &record.valid_until)
        && (until.seconds, until.nanos) < (from.seconds, from.nanos)
    {
        bad("valid_until", "is before valid_from".into());
    }

    match (&record.payload, spec) {
        (None, _) => bad("payload", "is required".into()),
        (Some(_), None) => {}
        (Some(any), Some(spec)) => {
            if !spec.carries(&any.type_url) {
                bad(
                    "payload",
                    format!(
                        "has type {:?} but record type {:?} carries {:?}",
                        any.type_url,
                        spec.name,
                        spec.type_url()
                    ),
                );
            } else if any.value.len() > limits.max_payload_bytes {
                bad(
                    "payload",
                    format!(
                        "is {} bytes; at most {} allowed",
                        any.value.len(),
                        limits.max_payload_bytes
                    ),
                );
            } else if !spec.payload_shape().conforms(&any.value) {
                // Most payloads are vouched for by the walk; the rest get
                // the decode's verdict and message.
                match DynamicMessage::decode(spec.message.clone(), any.value.as_slice()) {
                    Err(e) => bad(
                        "payload",
                        format!("does not decode as {}: {e}", spec.message.full_name()),
                    ),
                    Ok(msg) => {
                        if let Some(path) = first_unknown_field(&msg) {
                            bad(
                                "payload",
                                format!(
                                    "has a field that {} does not define (at {path}); is it a payload of another type?",
                                    spec.message.full_name()
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    match (violations.is_empty(), subject, spec) {
        (true, Some(subject), Some(spec)) => Ok(ValidRecord {
            record,
            subject,
            spec: spec.clone(),
        }),
        _ => Err(violations),
    }
}

/// The path of the first field, at any depth, that the schema does not know.
fn first_unknown_field(msg: &DynamicMessage) -> Option<String> {
    if let Some(field) = msg.unknown_fields().next() {
        return Some(format!("field number {}", field.number()));
    }
    for (field, value) in msg.fields() {
        let nested: Vec<&DynamicMessage> = match value {
            Value::Message(m) => vec![m],
            Value::List(items) => items.iter().filter_map(Value::as_message).collect(),
            Value::Map(entries) => entries.values().filter_map(Value::as_message).collect(),
            _ => Vec::new(),
        };
        for m in nested {
            if let Some(path) = first_unknown_field(m) {
                return Some(format!("{}.{path}", field.name()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use govbus_proto::records::{BirthCertificate, MarriageCertificate, PersonName};
    use prost::Message;
    use prost_types::{Any, Timestamp};

    use super::*;

    fn birth() -> Record {
        let payload = BirthCertificate {
            certificate_number: "I-TN 0412345".into(),
            child: Some(PersonName {
                pinfl: "51505151234567".into(),
                first_name: "Aziz".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Record {
            record_type: "birth_certificate".into(),
            subject_id: "51505151234567".into(),
            record_key: "I-TN 0412345".into(),
            version: 1,
            status: RecordStatus::Active as i32,
            issued_at: Some(Timestamp {
                seconds: 1_431_648_000,
                nanos: 0,
            }),
            payload: Some(Any {
                type_url: govbus_proto::type_url("govbus.records.v1.BirthCertificate"),
                value: payload.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    fn violations(record: Record) -> Vec<FieldViolation> {
        validate_record(&Catalog::builtin(), record, &RecordLimits::default()).unwrap_err()
    }

    #[test]
    fn accepts_a_well_formed_record() {
        let valid =
            validate_record(&Catalog::builtin(), birth(), &RecordLimits::default()).unwrap();
        assert_eq!(valid.spec.name, "birth_certificate");
        assert_eq!(valid.subject.as_str(), "51505151234567");
    }

    #[test]
    fn names_every_bad_field() {
        let mut r = birth();
        r.subject_id = "123".into();
        r.version = 0;
        r.status = 0;
        r.record_key.clear();
        let fields: Vec<String> = violations(r).into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["subject_id", "record_key", "version", "status"]);
    }

    #[test]
    fn rejects_unknown_type_and_foreign_payload() {
        let mut r = birth();
        r.record_type = "pension".into();
        let v = violations(r);
        assert_eq!(v[0].field, "record_type");
        assert!(
            v[0].reason.contains("known types: address_registration"),
            "{}",
            v[0].reason
        );

        let mut r = birth();
        r.payload.as_mut().unwrap().type_url =
            govbus_proto::type_url("govbus.records.v1.MarriageCertificate");
        assert_eq!(violations(r)[0].field, "payload");

        // A payload carrying a field the schema does not define (field 20).
        let mut r = birth();
        r.payload
            .as_mut()
            .unwrap()
            .value
            .extend_from_slice(&[0xa0, 0x01, 0x01]);
        let v = violations(r);
        assert_eq!(v[0].field, "payload");
        assert!(v[0].reason.contains("field number 20"), "{}", v[0].reason);

        // A marriage certificate under the birth certificate's type url does not decode.
        let marriage = MarriageCertificate {
            certificate_number: "I-TN 1".into(),
            spouse_two_surname_after: "Karimova".into(),
            ..Default::default()
        };
        let mut r = birth();
        r.payload.as_mut().unwrap().value = marriage.encode_to_vec();
        assert_eq!(violations(r)[0].field, "payload");

        let mut r = birth();
        r.payload.as_mut().unwrap().value = vec![0xff, 0xff, 0xff];
        assert!(violations(r)[0].reason.contains("does not decode"));
    }

    #[test]
    fn enforces_limits_and_id_format() {
        let mut r = birth();
        r.payload.as_mut().unwrap().value = vec![0; 600 * 1024];
        assert!(violations(r)[0].reason.contains("bytes; at most"));

        let mut r = birth();
        r.record_id = uuid::Uuid::nil().to_string();
        assert!(violations(r)[0].reason.contains("UUID v7"));

        let mut r = birth();
        r.version = u64::MAX;
        assert_eq!(violations(r)[0].field, "version");
    }
}
