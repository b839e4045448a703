//! An envelope as the showcase stores it: the record's own bytes, and the
//! parts of its signature that every record of its signed batch shares,
//! stored once per batch.
//!
//! Why: an adapter signs a batch of records with one signature over the
//! batch's Merkle root, and every envelope carries the signer, key id,
//! certificate, signing time, signature, root and tree size — ~700 of its
//! ~1,470 bytes, the same in every record of the batch. The ingest's writer
//! is its slower stage and its cost grows with the bytes it writes
//! (docs/PROFILING.md, session 27: a 45 % smaller stored envelope ran ~15 %
//! faster).
//!
//! The split works on the wire bytes, not on decoded messages, so fields
//! this build does not know (a newer adapter's) stay where they were. The
//! shared part is itself an encoded `Record` holding only
//! `signature { signer, key_id, certificate, signed_at, signature,
//! batch { root, tree_size } }`; protobuf merges a message field that
//! appears twice, so `own ++ shared` decodes to the record as consumed. An
//! envelope this code does not recognise (no batch signature, a field
//! repeated, a group) is stored whole.

use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use sha2::{Digest as _, Sha256};

/// `Record.signature`.
const SIGNATURE: u32 = 14;
/// `RecordSignature` fields the same in every record of a signed batch:
/// signer, key_id, certificate, signed_at, signature.
const SHARED_SIGNATURE_FIELDS: [u32; 5] = [1, 2, 3, 4, 5];
/// `RecordSignature.batch`.
const BATCH: u32 = 8;
/// `BatchInclusion` fields the same in every record of the batch: root,
/// tree_size.
const SHARED_BATCH_FIELDS: [u32; 2] = [1, 2];

/// An envelope split for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitEnvelope {
    /// The envelope without the shared parts.
    pub own: Vec<u8>,
    /// The shared parts, an encoded `Record` of its signature's alone.
    pub shared: Vec<u8>,
}

impl SplitEnvelope {
    /// The key the shared part is stored under.
    pub fn shared_digest(&self) -> [u8; 32] {
        Sha256::digest(&self.shared).into()
    }
}

/// Splits a batch-signed envelope; `None` for one to store whole.
pub(crate) fn split(envelope: &[u8]) -> Option<SplitEnvelope> {
    let fields = fields(envelope)?;
    let mut signatures = fields.iter().filter(|f| f.number == SIGNATURE);
    let signature = signatures.next()?;
    if signatures.next().is_some() || signature.wire_type != WireType::LengthDelimited {
        return None;
    }
    let (own_signature, shared_signature) = split_signature(signature.value)?;

    let mut own = Vec::with_capacity(envelope.len() - shared_signature.len());
    for field in &fields {
        if field.number == SIGNATURE {
            put_message(SIGNATURE, &own_signature, &mut own);
        } else {
            own.extend_from_slice(field.raw);
        }
    }
    let mut shared = Vec::with_capacity(shared_signature.len() + 4);
    put_message(SIGNATURE, &shared_signature, &mut shared);
    Some(SplitEnvelope { own, shared })
}

/// The envelope as consumed, for protobuf: `own` followed by the shared
/// part, if it was split.
pub(crate) fn join(own: &[u8], shared: Option<&[u8]>) -> Vec<u8> {
    let shared = shared.unwrap_or_default();
    let mut envelope = Vec::with_capacity(own.len() + shared.len());
    envelope.extend_from_slice(own);
    envelope.extend_from_slice(shared);
    envelope
}

/// A `RecordSignature`'s bytes as (own, shared); `None` unless it holds a
/// batch with a root (a record signed alone shares nothing) and each shared
/// field at most once.
fn split_signature(signature: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let fields = fields(signature)?;
    let mut own = Vec::with_capacity(signature.len());
    let mut shared = Vec::with_capacity(signature.len());
    let mut seen_batch = false;
    for field in &fields {
        if SHARED_SIGNATURE_FIELDS.contains(&field.number) {
            if fields.iter().filter(|f| f.number == field.number).count() > 1 {
                return None;
            }
            shared.extend_from_slice(field.raw);
        } else if field.number == BATCH {
            if seen_batch || field.wire_type != WireType::LengthDelimited {
                return None;
            }
            seen_batch = true;
            let (own_batch, shared_batch) = split_batch(field.value)?;
            put_message(BATCH, &own_batch, &mut own);
            put_message(BATCH, &shared_batch, &mut shared);
        } else {
            own.extend_from_slice(field.raw);
        }
    }
    seen_batch.then_some((own, shared))
}

/// A `BatchInclusion`'s bytes as (own, shared); `None` without a root,
/// for a batch of one (whose parts no other record shares) or with a shared
/// field twice.
fn split_batch(batch: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let fields = fields(batch)?;
    let [root, tree_size] = SHARED_BATCH_FIELDS.map(|number| {
        let mut found = fields.iter().filter(move |f| f.number == number);
        (found.next(), found.next().is_some())
    });
    let (Some(_), false) = root else { return None };
    let (Some(tree_size), false) = tree_size else {
        return None;
    };
    let mut size = tree_size.raw;
    decode_key(&mut size).ok()?;
    if tree_size.wire_type != WireType::Varint || decode_varint(&mut size).ok()? < 2 {
        return None;
    }
    let mut own = Vec::with_capacity(batch.len());
    let mut shared = Vec::with_capacity(batch.len());
    for field in &fields {
        let to = if SHARED_BATCH_FIELDS.contains(&field.number) {
            &mut shared
        } else {
            &mut own
        };
        to.extend_from_slice(field.raw);
    }
    Some((own, shared))
}

/// One field of an encoded message.
struct Field<'a> {
    number: u32,
    wire_type: WireType,
    /// The whole field: key and value.
    raw: &'a [u8],
    /// A length-delimited field's value without its length; otherwise empty.
    value: &'a [u8],
}

/// The fields of an encoded message in order; `None` if it does not parse
/// or holds a group (deprecated, never in govbus messages).
fn fields(mut message: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut fields = Vec::with_capacity(16);
    while !message.is_empty() {
        let start = message;
        let (number, wire_type) = decode_key(&mut message).ok()?;
        let mut value: &[u8] = &[];
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut message).ok()?;
            }
            WireType::SixtyFourBit => message = message.get(8..)?,
            WireType::ThirtyTwoBit => message = message.get(4..)?,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut message).ok()?).ok()?;
                value = message.get(..len)?;
                message = &message[len..];
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        }
        let raw = &start[..start.len() - message.len()];
        fields.push(Field {
            number,
            wire_type,
            raw,
            value,
        });
    }
    Some(fields)
}

/// Appends a length-delimited field.
fn put_message(number: u32, value: &[u8], to: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, to);
    encode_varint(value.len() as u64, to);
    to.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use govbus_proto::v1::{BatchInclusion, Record, RecordSignature};
    use prost::Message as _;

    use super::*;

    /// Record `leaf` of a signed batch of 3, with the fields an adapter
    /// sets (the values need not verify: the split is about their bytes).
    fn signed(leaf: u64) -> Record {
        Record {
            record_id: format!("0190-{leaf}"),
            record_type: "birth_certificate".into(),
            subject_id: format!("5150515123456{leaf}"),
            record_key: "AA-1".into(),
            version: 2,
            status: 1,
            issued_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            source_agency: "civil-registry".into(),
            source_system: "zags".into(),
            payload: Some(prost_types::Any {
                type_url: "type.googleapis.com/govbus.records.v1.BirthCertificate".into(),
                value: vec![leaf as u8; 200],
            }),
            content_hash: vec![leaf as u8; 32],
            signature: Some(RecordSignature {
                signer: "agency/civil-registry/system/zags".into(),
                key_id: "ab".repeat(32),
                certificate: vec![0x30; 479],
                signed_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_001,
                    nanos: 5,
                }),
                signature: vec![9; 64],
                field_salts: [(1, vec![leaf as u8; 16]), (2, vec![3; 16])].into(),
                withheld_field_digests: Default::default(),
                batch: Some(BatchInclusion {
                    root: vec![4; 32],
                    tree_size: 3,
                    leaf_index: leaf,
                    path: vec![leaf as u8; 64],
                }),
            }),
            valid_from: None,
            valid_until: None,
        }
    }

    #[test]
    fn own_and_shared_decode_to_the_record_as_consumed() {
        let record = signed(1);
        let envelope = record.encode_to_vec();
        let split = split(&envelope).expect("a batch-signed envelope splits");
        let joined = join(&split.own, Some(&split.shared));
        assert_eq!(Record::decode(joined.as_slice()).expect("decodes"), record);
        // The bytes moved, with a key and a length more for each of the
        // signature and the batch.
        let overhead = split.own.len() + split.shared.len() - envelope.len();
        assert!(overhead <= 6, "{overhead}");
        assert!(split.own.len() < envelope.len() / 2, "{}", split.own.len());
    }

    #[test]
    fn the_shared_part_is_the_signature_of_the_batch_and_nothing_else() {
        let (first, second) = (
            split(&signed(0).encode_to_vec()),
            split(&signed(2).encode_to_vec()),
        );
        let (first, second) = (first.expect("splits"), second.expect("splits"));
        assert_eq!(first.shared, second.shared);
        assert_eq!(first.shared_digest(), second.shared_digest());

        let shared = Record::decode(first.shared.as_slice()).expect("decodes");
        let expected = signed(0).signature.map(|s| RecordSignature {
            field_salts: Default::default(),
            batch: s.batch.clone().map(|b| BatchInclusion {
                leaf_index: 0,
                path: Vec::new(),
                ..b
            }),
            ..s
        });
        assert_eq!(
            shared,
            Record {
                signature: expected,
                ..Record::default()
            }
        );

        let own = Record::decode(first.own.as_slice()).expect("decodes");
        let signature = own.signature.expect("own keeps the salts and the path");
        assert_eq!(signature.certificate, Vec::<u8>::new());
        assert_eq!(signature.batch.expect("batch").path, vec![0; 64]);
        assert_eq!(signature.field_salts.len(), 2);
    }

    #[test]
    fn fields_this_build_does_not_know_stay_in_their_place() {
        let mut envelope = signed(1).encode_to_vec();
        // Field 99 (varint 7) after the record's own fields.
        encode_key(99, WireType::Varint, &mut envelope);
        encode_varint(7, &mut envelope);
        let split = split(&envelope).expect("splits");
        assert!(split.own.ends_with(&[0x98, 0x06, 7]));
    }

    #[test]
    fn envelopes_without_a_batch_signature_are_stored_whole() {
        let unsigned = Record {
            signature: None,
            ..signed(0)
        };
        assert_eq!(split(&unsigned.encode_to_vec()), None);

        let mut alone = signed(0);
        alone.signature.as_mut().expect("signed").batch = None;
        assert_eq!(
            split(&alone.encode_to_vec()),
            None,
            "signed alone: nothing shared"
        );

        fn batch(record: &mut Record) -> &mut BatchInclusion {
            let signature = record.signature.as_mut().expect("signed");
            signature.batch.as_mut().expect("batch")
        }
        let mut rootless = signed(0);
        batch(&mut rootless).root = Vec::new();
        assert_eq!(split(&rootless.encode_to_vec()), None);

        let mut of_one = signed(0);
        batch(&mut of_one).tree_size = 1;
        batch(&mut of_one).path = Vec::new();
        assert_eq!(
            split(&of_one.encode_to_vec()),
            None,
            "a batch of one shares nothing"
        );

        assert_eq!(split(&[7; 1500]), None, "not protobuf");
        assert_eq!(split(&[]), None);
    }

    #[test]
    fn a_shared_field_twice_is_stored_whole() {
        // Two signature fields merge on decode: splitting one would move
        // fields across the other.
        let envelope = signed(0).encode_to_vec();
        let signature = Record {
            signature: signed(1).signature,
            ..Record::default()
        };
        let twice = [envelope, signature.encode_to_vec()].concat();
        assert_eq!(split(&twice), None);
    }
}
