//! The payload walk (`payload_scan::conforms`) is a shortcut to "valid" in
//! `validate_record`: it must never vouch for bytes that prost-reflect's
//! decode refuses or that carry a field the type does not define, and it
//! must vouch for well-formed payloads, or it saves nothing. Checked on
//! every message of govbus's descriptor set (the record payloads, and the
//! bus's own messages for repeated, packed and map fields), filled and then
//! damaged.

use govbus_core::{Catalog, RecordLimits, payload_scan::conforms, validate_record};
use govbus_proto::v1::Record;
use proptest::prelude::*;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, Value};

fn pool() -> &'static DescriptorPool {
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("descriptor set")
    })
}

fn messages() -> Vec<MessageDescriptor> {
    pool()
        .all_messages()
        .filter(|m| !m.is_map_entry())
        .collect()
}

/// A value of `kind`, varied by `n`; messages are `filled`, not scalars.
fn scalar(kind: &Kind, n: i64) -> Value {
    match kind {
        Kind::Double => Value::F64(n as f64 + 0.25),
        Kind::Float => Value::F32(n as f32 - 0.5),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(-(n as i32) - 1),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(-n - 300),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(n as u32 + 7),
        Kind::Uint64 | Kind::Fixed64 => Value::U64((n as u64 + 1) << 40),
        Kind::Bool => Value::Bool(true),
        Kind::String => Value::String(format!("Ўзбек {n} ✓")),
        Kind::Bytes => Value::Bytes(vec![0xff, n as u8, 0].into()),
        Kind::Enum(e) => Value::EnumNumber(e.values().last().map_or(0, |v| v.number())),
        Kind::Message(m) => unreachable!("{} is filled, not a scalar", m.full_name()),
    }
}

fn key(kind: &Kind, n: i64) -> MapKey {
    match scalar(kind, n) {
        Value::I32(v) => MapKey::I32(v),
        Value::I64(v) => MapKey::I64(v),
        Value::U32(v) => MapKey::U32(v),
        Value::U64(v) => MapKey::U64(v),
        Value::Bool(v) => MapKey::Bool(v),
        Value::String(v) => MapKey::String(v),
        other => panic!("no map key of {other:?}"),
    }
}

/// `message` with every field set, lists and maps with two entries, nested
/// messages to a small depth.
fn filled(message: &MessageDescriptor, depth: u32) -> DynamicMessage {
    let mut out = DynamicMessage::new(message.clone());
    for field in message.fields() {
        let kind = field.kind();
        if depth > 3 && matches!(kind, Kind::Message(_)) {
            continue;
        }
        let value = if field.is_map() {
            let entry = kind.as_message().expect("map entry").clone();
            let (k, v) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            Value::Map(
                (1..=2)
                    .map(|n| {
                        let value = match v.kind() {
                            Kind::Message(m) => Value::Message(filled(&m, depth + 1)),
                            other => scalar(&other, n),
                        };
                        (key(&k.kind(), n), value)
                    })
                    .collect(),
            )
        } else if field.is_list() {
            Value::List(
                (1..=2)
                    .map(|n| match &kind {
                        Kind::Message(m) => Value::Message(filled(m, depth + 1)),
                        other => scalar(other, n),
                    })
                    .collect(),
            )
        } else {
            match &kind {
                Kind::Message(m) => Value::Message(filled(m, depth + 1)),
                other => scalar(other, 3),
            }
        };
        out.set_field(&field, value);
    }
    out
}

/// What the decode says: decodes, and every field at every depth is known.
fn decode_accepts(message: &MessageDescriptor, bytes: &[u8]) -> bool {
    fn clean(m: &DynamicMessage) -> bool {
        m.unknown_fields().next().is_none()
            && m.fields().all(|(_, value)| match value {
                Value::Message(m) => clean(m),
                Value::List(items) => items.iter().filter_map(Value::as_message).all(clean),
                Value::Map(entries) => entries.values().filter_map(Value::as_message).all(clean),
                _ => true,
            })
    }
    DynamicMessage::decode(message.clone(), bytes).is_ok_and(|m| clean(&m))
}

#[test]
fn every_filled_message_conforms() {
    let all = messages();
    assert!(all.len() > 20, "descriptor set has {} messages", all.len());
    let mut packed = false;
    for message in &all {
        let bytes = filled(message, 0).encode_to_vec();
        assert!(decode_accepts(message, &bytes), "{}", message.full_name());
        assert!(conforms(message, &bytes), "{}", message.full_name());
        packed |= message.fields().any(|f| f.is_list() && f.is_packed());
    }
    assert!(packed, "no packed field was exercised");
}

#[test]
fn refuses_what_it_cannot_vouch_for() {
    let birth = pool()
        .get_message_by_name("govbus.records.v1.BirthCertificate")
        .expect("birth certificate");
    let good = filled(&birth, 0).encode_to_vec();
    assert!(conforms(&birth, &good));
    // An unknown field at the top, and inside a nested message.
    let mut unknown = good.clone();
    unknown.extend_from_slice(&[0xa0, 0x1f, 0x01]);
    assert!(!conforms(&birth, &unknown));
    let child = birth.get_field_by_name("child").expect("child field");
    let mut nested = filled(&birth, 0);
    let mut person = filled(child.kind().as_message().unwrap(), 1).encode_to_vec();
    person.extend_from_slice(&[0xa0, 0x1f, 0x01]);
    let mut with_unknown_child = Vec::new();
    nested.clear_field(&child);
    nested.encode(&mut with_unknown_child).unwrap();
    prost::encoding::bytes::encode(child.number(), &person, &mut with_unknown_child);
    assert!(!conforms(&birth, &with_unknown_child));
    assert!(!decode_accepts(&birth, &with_unknown_child));
    // Bad UTF-8 in a string, a wrong wire type, a cut value, a group.
    let number = birth
        .get_field_by_name("certificate_number")
        .unwrap()
        .number();
    let mut bad_text = Vec::new();
    prost::encoding::bytes::encode(number, &vec![0xc3, 0x28], &mut bad_text);
    assert!(!conforms(&birth, &bad_text));
    let mut varint_for_text = Vec::new();
    prost::encoding::uint64::encode(number, &5, &mut varint_for_text);
    assert!(!conforms(&birth, &varint_for_text));
    assert!(!conforms(&birth, &good[..good.len() - 1]));
    let mut group = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::StartGroup, &mut group);
    prost::encoding::encode_key(number, prost::encoding::WireType::EndGroup, &mut group);
    assert!(!conforms(&birth, &group));
    // None of them passes validation either: the decode has the last word.
    for payload in [
        unknown,
        with_unknown_child,
        bad_text,
        varint_for_text,
        group,
    ] {
        let record = Record {
            record_type: "birth_certificate".into(),
            subject_id: "31505901234567".into(),
            record_key: "k".into(),
            version: 1,
            status: 1,
            issued_at: Some(prost_types::Timestamp::default()),
            payload: Some(prost_types::Any {
                type_url: govbus_proto::type_url(birth.full_name()),
                value: payload,
            }),
            ..Default::default()
        };
        let refused = validate_record(&Catalog::builtin(), record, &RecordLimits::default())
            .expect_err("a bad payload is refused");
        assert_eq!(refused[0].field, "payload");
    }
}

/// A damage done to good bytes.
#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Cut { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1..=255_u8).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        any::<usize>().prop_map(|at| Damage::Cut { at }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
    ]
}

fn damaged(mut bytes: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
    for d in damages {
        let len = bytes.len().max(1);
        match d {
            Damage::Flip { at, mask } => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Damage::Cut { at } => bytes.truncate(at % len),
            Damage::Insert { at, bytes: new } => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, new.iter().copied());
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn never_vouches_for_damaged_bytes_the_decode_refuses(
        which in any::<usize>(),
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        let all = messages();
        let message = &all[which % all.len()];
        let bytes = damaged(filled(message, 0).encode_to_vec(), &damages);
        if conforms(message, &bytes) {
            prop_assert!(decode_accepts(message, &bytes), "{} {:02x?}", message.full_name(), bytes);
        }
    }

    #[test]
    fn never_vouches_for_arbitrary_bytes_the_decode_refuses(
        which in any::<usize>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let all = messages();
        let message = &all[which % all.len()];
        if conforms(message, &bytes) {
            prop_assert!(decode_accepts(message, &bytes), "{} {:02x?}", message.full_name(), bytes);
        }
    }
}
