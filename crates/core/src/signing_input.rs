//! What a record signature covers (`govbus.v1.SigningInput`), and data
//! minimisation that keeps a minimised copy verifiable.
//!
//! Each payload field is covered by SHA-256(salt || its wire bytes). A copy
//! that withholds a field carries the field's digest instead of its bytes and
//! salt: the signing input, and so the signature and the content hash, stay
//! the same, and the digest reveals nothing of the withheld value.

use govbus_proto::v1::Record;
use prost::encoding::{self, WireType};
use sha2::{Digest, Sha256};

use crate::wire::{self, WireError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningInputError {
    #[error("the record is not signed")]
    Unsigned,
    #[error("the record has no payload")]
    NoPayload,
    #[error("payload: {0}")]
    Wire(#[from] WireError),
    #[error("payload field {0} has no salt")]
    NoSalt(u32),
    #[error("payload field {0} is both present and withheld")]
    PresentAndWithheld(u32),
}

fn field_digest(salt: &[u8], bytes: &[u8]) -> Vec<u8> {
    Sha256::new()
        .chain_update(salt)
        .chain_update(bytes)
        .finalize()
        .to_vec()
}

/// A field's digest: computed here, or carried by a minimised copy.
enum FieldHash<'a> {
    Computed([u8; 32]),
    Withheld(&'a [u8]),
}

impl FieldHash<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Computed(d) => d,
            Self::Withheld(d) => d,
        }
    }
}

/// The encoded `SigningInput` of a signed (possibly minimised) record.
///
/// Encoded here field by field, byte for byte as prost encodes the message,
/// so that neither the record nor its payload fields are copied: signer and
/// verifier build this for every record they handle (it was ~11 % of an
/// ingest run's CPU as a cloned `Record` in a `SigningInput`). A test holds
/// it to the prost encoding.
pub fn signing_input(record: &Record) -> Result<Vec<u8>, SigningInputError> {
    let signature = record
        .signature
        .as_ref()
        .ok_or(SigningInputError::Unsigned)?;
    let payload = record
        .payload
        .as_ref()
        .ok_or(SigningInputError::NoPayload)?;
    let records = wire::field_records(&payload.value)?;
    let mut digests: Vec<(u32, FieldHash<'_>)> =
        Vec::with_capacity(records.len() + signature.withheld_field_digests.len());
    for field in records.chunk_by(|a, b| a.0 == b.0) {
        let number = field[0].0;
        if signature.withheld_field_digests.contains_key(&number) {
            return Err(SigningInputError::PresentAndWithheld(number));
        }
        let salt = signature
            .field_salts
            .get(&number)
            .ok_or(SigningInputError::NoSalt(number))?;
        let mut hash = Sha256::new().chain_update(salt);
        for (_, range) in field {
            hash.update(&payload.value[range.clone()]);
        }
        digests.push((number, FieldHash::Computed(hash.finalize().into())));
    }
    for (number, digest) in &signature.withheld_field_digests {
        digests.push((*number, FieldHash::Withheld(digest)));
    }
    digests.sort_by_key(|(number, _)| *number);

    let mut out = Vec::with_capacity(
        256 + payload.type_url.len() + signature.certificate.len() + 40 * digests.len(),
    );
    encode_envelope(record, &payload.type_url, &mut out);
    for (number, digest) in &digests {
        encode_field_digest(*number, digest.as_slice(), &mut out);
    }
    if !signature.signer.is_empty() {
        encoding::string::encode(3, &signature.signer, &mut out);
    }
    if !signature.key_id.is_empty() {
        encoding::string::encode(4, &signature.key_id, &mut out);
    }
    if !signature.certificate.is_empty() {
        encoding::bytes::encode(5, &signature.certificate, &mut out);
    }
    if let Some(signed_at) = &signature.signed_at {
        encoding::message::encode(6, signed_at, &mut out);
    }
    Ok(out)
}

/// `SigningInput.envelope` (field 1): the record with `payload.value`,
/// `content_hash` and `signature` cleared, as prost encodes such a
/// `Record` (fields at their default value left out), written from the
/// borrowed fields: a cleared clone cost six string copies per record on
/// each side. Named field by field (no `..`): a field added to `Record`
/// must be decided on here, signed or not.
fn encode_envelope(record: &Record, type_url: &str, out: &mut Vec<u8>) {
    use encoding::{int32, message, string, uint64};
    let Record {
        record_id,
        record_type,
        subject_id,
        record_key,
        version,
        status,
        issued_at,
        valid_from,
        valid_until,
        source_agency,
        source_system,
        payload: _,
        content_hash: _,
        signature: _,
    } = record;
    let text = |tag: u32, value: &String| match value.is_empty() {
        true => 0,
        false => string::encoded_len(tag, value),
    };
    let time = |tag: u32, value: &Option<prost_types::Timestamp>| {
        value.as_ref().map_or(0, |t| message::encoded_len(tag, t))
    };
    // The payload: an `Any` holding its type URL only.
    let any_len = match type_url.is_empty() {
        true => 0,
        false => 1 + encoding::encoded_len_varint(type_url.len() as u64) + type_url.len(),
    };
    let len = text(1, record_id)
        + text(2, record_type)
        + text(3, subject_id)
        + text(4, record_key)
        + if *version == 0 {
            0
        } else {
            uint64::encoded_len(5, version)
        }
        + if *status == 0 {
            0
        } else {
            int32::encoded_len(6, status)
        }
        + time(7, issued_at)
        + time(8, valid_from)
        + time(9, valid_until)
        + text(10, source_agency)
        + text(11, source_system)
        + 1
        + encoding::encoded_len_varint(any_len as u64)
        + any_len;
    encoding::encode_key(1, WireType::LengthDelimited, out);
    encoding::encode_varint(len as u64, out);
    for (tag, value) in [
        (1, record_id),
        (2, record_type),
        (3, subject_id),
        (4, record_key),
    ] {
        if !value.is_empty() {
            string::encode(tag, value, out);
        }
    }
    if *version != 0 {
        uint64::encode(5, version, out);
    }
    if *status != 0 {
        int32::encode(6, status, out);
    }
    for (tag, value) in [(7, issued_at), (8, valid_from), (9, valid_until)] {
        if let Some(t) = value {
            message::encode(tag, t, out);
        }
    }
    for (tag, value) in [(10, source_agency), (11, source_system)] {
        if !value.is_empty() {
            string::encode(tag, value, out);
        }
    }
    encoding::encode_key(12, WireType::LengthDelimited, out);
    encoding::encode_varint(any_len as u64, out);
    if !type_url.is_empty() {
        encoding::encode_key(1, WireType::LengthDelimited, out);
        encoding::encode_varint(type_url.len() as u64, out);
        out.extend_from_slice(type_url.as_bytes());
    }
}

/// `SigningInput.field_digests` (field 2), one `FieldDigest` as prost
/// encodes it: fields at their default value are left out.
fn encode_field_digest(number: u32, digest: &[u8], out: &mut Vec<u8>) {
    let number_len = match number {
        0 => 0,
        n => 1 + encoding::encoded_len_varint(u64::from(n)),
    };
    let digest_len = match digest.len() {
        0 => 0,
        n => 1 + encoding::encoded_len_varint(n as u64) + n,
    };
    encoding::encode_key(2, WireType::LengthDelimited, out);
    encoding::encode_varint((number_len + digest_len) as u64, out);
    if number != 0 {
        encoding::encode_key(1, WireType::Varint, out);
        encoding::encode_varint(u64::from(number), out);
    }
    if !digest.is_empty() {
        encoding::encode_key(2, WireType::LengthDelimited, out);
        encoding::encode_varint(digest.len() as u64, out);
        out.extend_from_slice(digest);
    }
}

/// The content hash of a record: SHA-256 of its signing input.
fn digest(signing_input: &[u8]) -> [u8; 32] {
    Sha256::digest(signing_input).into()
}

/// The content hash of a record, as `Record.content_hash` holds it.
pub fn content_hash(signing_input: &[u8]) -> Vec<u8> {
    digest(signing_input).to_vec()
}

/// Whether `expected` is the content hash of `signing_input`, without an
/// allocation (the broker checks every record it consumes).
pub fn content_hash_is(signing_input: &[u8], expected: &[u8]) -> bool {
    digest(signing_input) == expected
}

/// Keeps only the payload fields numbered in `keep`; every other field's
/// bytes and salt give way to its digest, so the copy still verifies.
pub fn minimise(record: &mut Record, keep: &[u32]) -> Result<(), SigningInputError> {
    let payload = record
        .payload
        .as_mut()
        .ok_or(SigningInputError::NoPayload)?;
    let signature = record
        .signature
        .as_mut()
        .ok_or(SigningInputError::Unsigned)?;
    for (number, bytes) in wire::split_fields(&payload.value)? {
        if keep.contains(&number) {
            continue;
        }
        let salt = signature
            .field_salts
            .remove(&number)
            .ok_or(SigningInputError::NoSalt(number))?;
        signature
            .withheld_field_digests
            .insert(number, field_digest(&salt, &bytes).into());
    }
    payload.value = wire::project(&payload.value, keep)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use govbus_proto::v1::{FieldDigest, RecordSignature, SigningInput};
    use prost::Message;
    use prost::bytes::Bytes;

    use super::*;

    /// The definition: the record cloned and cleared, inside a prost
    /// `SigningInput` (how signatures were made before it was encoded by
    /// hand; stored records carry such signatures).
    fn by_prost(record: &Record) -> Result<Vec<u8>, SigningInputError> {
        let signature = record
            .signature
            .as_ref()
            .ok_or(SigningInputError::Unsigned)?;
        let payload = record
            .payload
            .as_ref()
            .ok_or(SigningInputError::NoPayload)?;
        let mut digests = Vec::new();
        for (number, bytes) in wire::split_fields(&payload.value)? {
            if signature.withheld_field_digests.contains_key(&number) {
                return Err(SigningInputError::PresentAndWithheld(number));
            }
            let salt = signature
                .field_salts
                .get(&number)
                .ok_or(SigningInputError::NoSalt(number))?;
            digests.push(FieldDigest {
                field_number: number,
                digest: field_digest(salt, &bytes),
            });
        }
        for (number, digest) in &signature.withheld_field_digests {
            digests.push(FieldDigest {
                field_number: *number,
                digest: digest.to_vec(),
            });
        }
        digests.sort_by_key(|d| d.field_number);
        let mut envelope = record.clone();
        envelope.content_hash.clear();
        envelope.signature = None;
        if let Some(p) = envelope.payload.as_mut() {
            p.value.clear();
        }
        Ok(SigningInput {
            envelope: Some(envelope),
            field_digests: digests,
            signer: signature.signer.clone(),
            key_id: signature.key_id.clone(),
            certificate: signature.certificate.to_vec(),
            signed_at: signature.signed_at,
        }
        .encode_to_vec())
    }

    fn salts(numbers: &[u32]) -> BTreeMap<u32, Bytes> {
        numbers
            .iter()
            .map(|&n| (n, vec![n as u8; 16].into()))
            .collect()
    }

    fn full() -> Record {
        let at = |s| prost_types::Timestamp {
            seconds: s,
            nanos: 7,
        };
        Record {
            record_id: "0193b0c4-7f1e-7000-8000-000000000001".into(),
            record_type: "civil.birth".into(),
            subject_id: "31505901234567".into(),
            record_key: "I-TN 1".into(),
            version: 300,
            status: 2,
            issued_at: Some(at(1_700_000_000)),
            valid_from: Some(at(1)),
            valid_until: Some(at(0)),
            source_agency: "civil-registry".into(),
            source_system: "births".into(),
            payload: Some(prost_types::Any {
                type_url: "type.googleapis.com/govbus.records.v1.BirthCertificate".into(),
                // Field 2 twice (field 1 between), field 200 (a two-byte key).
                value: vec![
                    0x12, 0x01, b'a', 0x08, 0x07, 0x12, 0x01, b'b', 0xc2, 0x0c, 0x00,
                ],
            }),
            content_hash: vec![9; 32],
            signature: Some(RecordSignature {
                signer: "agency/civil-registry/system/births".into(),
                key_id: "ab".repeat(32),
                certificate: vec![0x30; 700].into(),
                signed_at: Some(at(1_700_000_001)),
                signature: vec![1; 64].into(),
                field_salts: salts(&[1, 2, 200]),
                withheld_field_digests: BTreeMap::new(),
                batch: Some(govbus_proto::v1::BatchInclusion {
                    root: vec![3; 32].into(),
                    tree_size: 250,
                    leaf_index: 17,
                    path: vec![4; 256].into(),
                }),
            }),
        }
    }

    #[test]
    fn encoded_by_hand_as_prost_encodes_it() {
        let mut cases = vec![full()];
        // Minimised: field 2 withheld, its salt gone, its digest carried.
        let mut minimised = full();
        minimise(&mut minimised, &[1, 200]).unwrap();
        cases.push(minimised);
        // Every envelope and signature field at its default value.
        cases.push(Record {
            payload: Some(prost_types::Any::default()),
            signature: Some(RecordSignature::default()),
            ..Record::default()
        });
        // Withheld digests prost would encode oddly: field number 0, empty.
        let mut odd = full();
        let signature = odd.signature.as_mut().unwrap();
        signature.withheld_field_digests =
            BTreeMap::from([(0, vec![5; 32].into()), (9, Bytes::new())]);
        cases.push(odd);
        // A payload with no fields; a long one (multi-byte lengths).
        let mut empty = full();
        empty.payload.as_mut().unwrap().value.clear();
        cases.push(empty);
        let mut long = full();
        long.payload.as_mut().unwrap().value = [vec![0x0a, 0x90, 0x03], vec![b'x'; 400]].concat();
        long.signature.as_mut().unwrap().field_salts = salts(&[1]);
        cases.push(long);
        // Times absent or at their default, an unknown (negative) status,
        // the largest version, non-ASCII text.
        let mut edges = full();
        edges.issued_at = None;
        edges.valid_from = Some(prost_types::Timestamp::default());
        edges.valid_until = None;
        edges.status = -3;
        edges.version = u64::MAX;
        edges.record_key = "Ž-1 ".repeat(40);
        cases.push(edges);
        for (i, record) in cases.iter().enumerate() {
            assert_eq!(signing_input(record), by_prost(record), "case {i}");
            assert!(signing_input(record).is_ok(), "case {i}");
        }
    }

    #[test]
    fn refuses_what_prost_refuses() {
        let mut no_salt = full();
        no_salt.signature.as_mut().unwrap().field_salts.remove(&2);
        let mut both = full();
        both.signature
            .as_mut()
            .unwrap()
            .withheld_field_digests
            .insert(1, vec![0; 32].into());
        let mut malformed = full();
        malformed.payload.as_mut().unwrap().value = vec![0x0a, 0x05, b'a'];
        let mut unsigned = full();
        unsigned.signature = None;
        let mut no_payload = full();
        no_payload.payload = None;
        for (record, error) in [
            (no_salt, SigningInputError::NoSalt(2)),
            (both, SigningInputError::PresentAndWithheld(1)),
            (
                malformed,
                SigningInputError::Wire(wire::WireError::Malformed(0)),
            ),
            (unsigned, SigningInputError::Unsigned),
            (no_payload, SigningInputError::NoPayload),
        ] {
            assert_eq!(signing_input(&record), Err(error.clone()));
            assert_eq!(by_prost(&record), Err(error));
        }
    }
}
