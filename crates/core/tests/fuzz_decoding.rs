//! Property tests over hostile input: whatever bytes arrive — as an
//! envelope off Kafka, as a payload, as a subject id — decoding and
//! validation answer with a value or an error, never a panic, and the
//! wire-level tools keep their invariants.

use govbus_core::{Catalog, RecordLimits, SubjectId, validate_record, wire};
use govbus_proto::v1::Record;
use proptest::prelude::*;
use prost::Message;

fn catalog() -> &'static Catalog {
    static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    CATALOG.get_or_init(Catalog::builtin)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_envelopes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(record) = Record::decode(bytes.as_slice()) {
            let _ = validate_record(catalog(), record, &RecordLimits::default());
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        record_type in prop_oneof![
            Just("birth_certificate"), Just("marriage_certificate"),
            Just("address_registration"), Just("property_title"),
        ],
    ) {
        let spec = catalog().get(record_type).unwrap();
        let record = Record {
            record_type: record_type.into(),
            subject_id: "31505901234567".into(),
            record_key: "k".into(),
            version: 1,
            status: 1,
            issued_at: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }),
            payload: Some(prost_types::Any { type_url: spec.type_url(), value: payload.clone() }),
            ..Default::default()
        };
        let _ = validate_record(catalog(), record, &RecordLimits::default());
        if let Ok(fields) = wire::split_fields(&payload) {
            let all: Vec<u32> = fields.keys().copied().collect();
            prop_assert_eq!(wire::project(&payload, &all).unwrap(), payload.clone());
            prop_assert!(wire::project(&payload, &[]).unwrap().is_empty());
        }
    }

    #[test]
    fn subject_ids_are_digits_of_the_right_length(raw in "\\PC{0,20}") {
        if let Ok(subject) = SubjectId::parse(&raw) {
            prop_assert!(raw.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(matches!(
                (&subject, raw.len()),
                (SubjectId::Pinfl(_), 14) | (SubjectId::Stir(_), 9)
            ));
        }
    }
}
