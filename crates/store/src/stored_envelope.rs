//! An envelope as the showcase stores it: the record's own bytes, and the
//! parts of its signature that every record of its signed batch shares,
//! stored once per batch.
//!
//! Why: an adapter signs a batch of records with one signature over the
//! batch's Merkle root, and every envelope carries the signer, key id,
//! certificate, signing time, signature, root and tree size — ~700 of its
//! ~1,470 bytes, the same in every record of the batch. The ingest's writer
//! is its slower stage and its cost grows with the bytes it writes
//! (docs/PROFILING.md: a 45 % smaller stored envelope ran ~15 %
//! faster).
//!
//! The split works on the wire bytes, not on decoded messages, so fields
//! this build does not know (a newer adapter's) stay where they were. The
//! shared part is itself an encoded `Record` holding only
//! `signature { signer, key_id, certificate, signed_at, signature,
//! batch { root, tree_size } }`; protobuf merges a message field that
//! appears twice, so `own ++ shared` decodes to the record as consumed. An
//! envelope this code does not recognise (no batch signature, a field
//! repeated, a group, its signature's fields in more runs than `Runs::MAX`)
//! is stored whole.

use std::ops::Range;

use prost::encoding::{
    WireType, decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint,
};
use sha2::{Digest as _, Sha256};

/// `Record.signature`.
const SIGNATURE: u32 = 14;
/// `RecordSignature` fields the same in every record of a signed batch:
/// signer, key_id, certificate, signed_at, signature.
const SHARED_SIGNATURE_FIELDS: Range<u32> = 1..6;
/// `RecordSignature.batch`.
const BATCH: u32 = 8;
/// `BatchInclusion` fields the same in every record of the batch: root,
/// tree_size.
const SHARED_BATCH_FIELDS: Range<u32> = 1..3;
/// `BatchInclusion.root`, `BatchInclusion.tree_size`.
const ROOT: u32 = 1;
const TREE_SIZE: u32 = 2;

/// An envelope split for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitEnvelope {
    /// The envelope without the shared parts.
    pub own: Vec<u8>,
    /// The shared parts, an encoded `Record` of its signature's alone.
    pub shared: Vec<u8>,
}

/// The key a shared part is stored under.
pub(crate) fn shared_digest(shared: &[u8]) -> [u8; 32] {
    Sha256::digest(shared).into()
}

/// Splits a batch-signed envelope; `None` for one to store whole.
pub(crate) fn split(envelope: &[u8]) -> Option<SplitEnvelope> {
    let (mut own, mut shared) = (Vec::new(), Vec::new());
    split_into(envelope, &mut own, &mut shared).then_some(SplitEnvelope { own, shared })
}

/// Splits a batch-signed envelope, appending its own part to `own` and the
/// shared part to `shared`; `false`, both untouched, for one to store whole.
///
/// The ingest splits every record: each message is walked once, its fields
/// gathered into runs of one kind (own, shared, the batch) that are copied
/// whole, and nothing is allocated but what `own` and `shared` grow by. A
/// table of fields per message and a buffer per part cost ~6.7k
/// instructions per record (docs/PROFILING.md).
pub(crate) fn split_into(envelope: &[u8], own: &mut Vec<u8>, shared: &mut Vec<u8>) -> bool {
    let Some(layout) = Layout::of(envelope) else {
        return false;
    };
    let (signature, batch) = (layout.signature_value, layout.batch_value);
    let (own_batch, shared_batch) = (layout.batch.len(Kind::Own), layout.batch.len(Kind::Shared));
    let own_signature = layout.signature.len(Kind::Own) + message_len(BATCH, own_batch);
    let shared_signature = layout.signature.len(Kind::Shared) + message_len(BATCH, shared_batch);

    own.reserve(envelope.len() + 8 - layout.signature_field.len() + own_signature);
    own.extend_from_slice(&envelope[..layout.signature_field.start]);
    put_header(SIGNATURE, own_signature, own);
    for (kind, run) in layout.signature.iter() {
        match kind {
            Kind::Own => own.extend_from_slice(&signature[run]),
            Kind::Shared => {}
            Kind::Batch => {
                put_header(BATCH, own_batch, own);
                layout.batch.copy(Kind::Own, batch, own);
            }
        }
    }
    own.extend_from_slice(&envelope[layout.signature_field.end..]);

    shared.reserve(message_len(SIGNATURE, shared_signature));
    put_header(SIGNATURE, shared_signature, shared);
    for (kind, run) in layout.signature.iter() {
        match kind {
            Kind::Own => {}
            Kind::Shared => shared.extend_from_slice(&signature[run]),
            Kind::Batch => {
                put_header(BATCH, shared_batch, shared);
                layout.batch.copy(Kind::Shared, batch, shared);
            }
        }
    }
    true
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

/// Where a batch-signed envelope's parts lie.
struct Layout<'a> {
    /// The signature field, key to end, within the envelope.
    signature_field: Range<usize>,
    signature_value: &'a [u8],
    /// The signature's fields, by kind, within its value.
    signature: Runs,
    batch_value: &'a [u8],
    /// The batch's fields (own or shared) within its value.
    batch: Runs,
}

impl<'a> Layout<'a> {
    /// `None` unless the envelope has one signature, holding one batch of
    /// at least two records with a root (a record signed alone shares
    /// nothing), each shared field at most once, no group (deprecated,
    /// never in govbus messages) and its kinds of field in a few runs
    /// (`Runs::MAX`; an adapter writes fields in order: three).
    fn of(envelope: &'a [u8]) -> Option<Self> {
        let mut signature: Option<Field<'a>> = None;
        for field in Fields::new(envelope) {
            let field = field?;
            if field.number == SIGNATURE {
                if signature.is_some() || field.wire_type != WireType::LengthDelimited {
                    return None;
                }
                signature = Some(field);
            }
        }
        let signature = signature?;

        let mut runs = Runs::default();
        let mut seen = Seen::default();
        let mut batch: Option<(&'a [u8], Runs)> = None;
        for field in Fields::new(signature.value) {
            let field = field?;
            let kind = if SHARED_SIGNATURE_FIELDS.contains(&field.number) {
                seen.first(field.number)?;
                Kind::Shared
            } else if field.number == BATCH {
                if batch.is_some() || field.wire_type != WireType::LengthDelimited {
                    return None;
                }
                batch = Some((field.value, batch_runs(field.value)?));
                Kind::Batch
            } else {
                Kind::Own
            };
            runs.push(kind, field.at)?;
        }
        let (batch_value, batch) = batch?;
        Some(Self {
            signature_field: signature.at,
            signature_value: signature.value,
            signature: runs,
            batch_value,
            batch,
        })
    }
}

/// A `BatchInclusion`'s fields by kind; `None` without a root, for a batch
/// of one (whose parts no other record shares) or with a shared field
/// twice.
fn batch_runs(batch: &[u8]) -> Option<Runs> {
    let mut runs = Runs::default();
    let mut seen = Seen::default();
    let mut tree_size = 0;
    for field in Fields::new(batch) {
        let field = field?;
        let kind = if SHARED_BATCH_FIELDS.contains(&field.number) {
            seen.first(field.number)?;
            if field.number == TREE_SIZE {
                if field.wire_type != WireType::Varint {
                    return None;
                }
                tree_size = decode_varint(&mut { field.value }).ok()?;
            }
            Kind::Shared
        } else {
            Kind::Own
        };
        runs.push(kind, field.at)?;
    }
    (seen.has(ROOT) && tree_size >= 2).then_some(runs)
}

/// What a run of fields is to the split.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Own,
    Shared,
    /// The signature's batch, itself split.
    Batch,
}

/// A message's fields as runs of one kind, in order: `[start, end)` byte
/// ranges of its value.
#[derive(Default)]
struct Runs {
    runs: [(Kind, u32, u32); Runs::MAX],
    count: usize,
}

impl Runs {
    /// Beyond this many runs an envelope is stored whole: the fields are in
    /// an order no adapter writes.
    const MAX: usize = 8;

    /// Appends a field, joining it to the last run if of the same kind;
    /// `None` when full.
    fn push(&mut self, kind: Kind, at: Range<usize>) -> Option<()> {
        let (start, end) = (u32::try_from(at.start).ok()?, u32::try_from(at.end).ok()?);
        match self.count.checked_sub(1).map(|last| &mut self.runs[last]) {
            Some((last, _, last_end)) if *last == kind && *last_end == start => {
                *last_end = end;
            }
            _ => {
                *self.runs.get_mut(self.count)? = (kind, start, end);
                self.count += 1;
            }
        }
        Some(())
    }

    fn iter(&self) -> impl Iterator<Item = (Kind, Range<usize>)> + '_ {
        self.runs[..self.count]
            .iter()
            .map(|&(kind, start, end)| (kind, start as usize..end as usize))
    }

    /// Bytes of the runs of `kind`.
    fn len(&self, kind: Kind) -> usize {
        self.iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, run)| run.len())
            .sum()
    }

    /// Appends the runs of `kind` of `message`.
    fn copy(&self, kind: Kind, message: &[u8], to: &mut Vec<u8>) {
        for (_, run) in self.iter().filter(|(k, _)| *k == kind) {
            to.extend_from_slice(&message[run]);
        }
    }
}

/// Field numbers (all under 32) met so far in one message.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// Marks `number` seen; `None` if it was already.
    fn first(&mut self, number: u32) -> Option<()> {
        let first = !self.has(number);
        self.0 |= 1 << number;
        first.then_some(())
    }

    fn has(&self, number: u32) -> bool {
        self.0 & (1 << number) != 0
    }
}

/// Appends a length-delimited field's key and length.
fn put_header(number: u32, len: usize, to: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, to);
    encode_varint(len as u64, to);
}

/// Bytes of a length-delimited field with `len` bytes of content.
fn message_len(number: u32, len: usize) -> usize {
    prost::encoding::key_len(number) + encoded_len_varint(len as u64) + len
}

/// One field of an encoded message.
struct Field<'a> {
    number: u32,
    wire_type: WireType,
    /// Where the whole field (key and value) lies in the message.
    at: Range<usize>,
    /// The value after the key; for a length-delimited field without its
    /// length.
    value: &'a [u8],
}

/// The fields of an encoded message in order; an item is `None` where the
/// rest does not parse or holds a group, and the walk ends there.
struct Fields<'a> {
    len: usize,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8]) -> Self {
        Self {
            len: message.len(),
            rest: message,
        }
    }

    fn parse(&mut self) -> Option<Field<'a>> {
        let start = self.len - self.rest.len();
        let mut rest = self.rest;
        let (number, wire_type) = decode_key(&mut rest).ok()?;
        let after_key = rest;
        let value = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest).ok()?;
                &after_key[..after_key.len() - rest.len()]
            }
            WireType::SixtyFourBit => rest.split_off(..8)?,
            WireType::ThirtyTwoBit => rest.split_off(..4)?,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
                rest.split_off(..len)?
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        self.rest = rest;
        Some(Field {
            number,
            wire_type,
            at: start..self.len - rest.len(),
            value,
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<Field<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.parse();
        if field.is_none() {
            self.rest = &[];
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use govbus_proto::v1::{BatchInclusion, Record, RecordSignature};
    use prost::{Message as _, bytes::Bytes};

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
                certificate: vec![0x30; 479].into(),
                signed_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_001,
                    nanos: 5,
                }),
                signature: vec![9; 64].into(),
                field_salts: [(1, vec![leaf as u8; 16].into()), (2, vec![3; 16].into())].into(),
                withheld_field_digests: Default::default(),
                batch: Some(BatchInclusion {
                    root: vec![4; 32].into(),
                    tree_size: 3,
                    leaf_index: leaf,
                    path: vec![leaf as u8; 64].into(),
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
        assert_eq!(shared_digest(&first.shared), shared_digest(&second.shared));

        let shared = Record::decode(first.shared.as_slice()).expect("decodes");
        let expected = signed(0).signature.map(|s| RecordSignature {
            field_salts: Default::default(),
            batch: s.batch.clone().map(|b| BatchInclusion {
                leaf_index: 0,
                path: Bytes::new(),
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

    /// The parts' bytes are what rows already stored hold and what the
    /// showcase digest recomputes for rows stored whole: for an envelope
    /// in field order (prost's), each part is the canonical encoding of
    /// the record with the other part's fields cleared.
    #[test]
    fn the_parts_are_the_canonical_encodings_of_their_fields() {
        for leaf in [0, 1, 2] {
            let record = signed(leaf);
            let split = split(&record.encode_to_vec()).expect("splits");

            let signature = record.signature.clone().expect("signed");
            let batch = signature.batch.clone().expect("batch");
            let own = Record {
                signature: Some(RecordSignature {
                    signer: String::new(),
                    key_id: String::new(),
                    certificate: Bytes::new(),
                    signed_at: None,
                    signature: Bytes::new(),
                    batch: Some(BatchInclusion {
                        root: Bytes::new(),
                        tree_size: 0,
                        ..batch.clone()
                    }),
                    ..signature.clone()
                }),
                ..record.clone()
            };
            let shared = Record {
                signature: Some(RecordSignature {
                    field_salts: Default::default(),
                    withheld_field_digests: Default::default(),
                    batch: Some(BatchInclusion {
                        leaf_index: 0,
                        path: Bytes::new(),
                        ..batch
                    }),
                    ..signature
                }),
                ..Record::default()
            };
            assert_eq!(split.own, own.encode_to_vec(), "leaf {leaf}");
            assert_eq!(split.shared, shared.encode_to_vec(), "leaf {leaf}");
        }
    }

    /// A record whose signature's fields are encoded in `order`, a field
    /// number each (6, the salts: the next salt), instead of prost's.
    fn with_signature_in_order(record: &Record, order: &[u32]) -> Vec<u8> {
        let signature = record.signature.clone().expect("signed");
        let mut salts = signature.field_salts.clone().into_iter();
        let mut encoded = Vec::new();
        for number in order {
            let mut one = RecordSignature::default();
            match number {
                1 => one.signer = signature.signer.clone(),
                2 => one.key_id = signature.key_id.clone(),
                3 => one.certificate = signature.certificate.clone(),
                4 => one.signed_at = signature.signed_at,
                5 => one.signature = signature.signature.clone(),
                6 => one.field_salts = salts.next().into_iter().collect(),
                8 => one.batch = signature.batch.clone(),
                _ => unreachable!("no field {number} in the test record"),
            }
            encoded.extend(one.encode_to_vec());
        }
        let mut envelope = Record {
            signature: None,
            ..record.clone()
        }
        .encode_to_vec();
        put_header(SIGNATURE, encoded.len(), &mut envelope);
        envelope.extend(encoded);
        envelope
    }

    #[test]
    fn fields_out_of_order_split_in_runs_or_are_stored_whole() {
        let mut record = signed(1);
        let signature = record.signature.as_mut().expect("signed");
        signature.field_salts = (1..=5).map(|n| (n, vec![n as u8; 16].into())).collect();

        // Shared, own, shared, own, shared, batch: six runs.
        let interleaved = with_signature_in_order(&record, &[1, 6, 2, 6, 3, 4, 5, 8, 6, 6, 6]);
        let split = split(&interleaved).expect("splits");
        let joined = join(&split.own, Some(&split.shared));
        assert_eq!(Record::decode(joined.as_slice()).expect("decodes"), record);
        let canonical = super::split(&record.encode_to_vec()).expect("splits");
        assert_eq!(
            Record::decode(split.shared.as_slice()).expect("decodes"),
            Record::decode(canonical.shared.as_slice()).expect("decodes"),
            "the same shared fields, in another order"
        );

        // Eleven runs: more than any adapter writes.
        let scattered = with_signature_in_order(&record, &[1, 6, 2, 6, 3, 6, 4, 6, 5, 6, 8]);
        assert_eq!(
            Record::decode(scattered.as_slice()).expect("decodes"),
            record
        );
        assert_eq!(super::split(&scattered), None);
    }

    #[test]
    fn a_truncated_envelope_is_stored_whole() {
        let envelope = signed(1).encode_to_vec();
        for len in [1, envelope.len() / 2, envelope.len() - 1] {
            let (mut own, mut shared) = (vec![1], vec![2]);
            assert!(!split_into(&envelope[..len], &mut own, &mut shared));
            assert_eq!((own, shared), (vec![1], vec![2]), "left untouched");
        }
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
        batch(&mut rootless).root = Bytes::new();
        assert_eq!(split(&rootless.encode_to_vec()), None);

        let mut of_one = signed(0);
        batch(&mut of_one).tree_size = 1;
        batch(&mut of_one).path = Bytes::new();
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
