//! What a record signature covers (`govbus.v1.SigningInput`), and data
//! minimisation that keeps a minimised copy verifiable.
//!
//! Each payload field is covered by SHA-256(salt || its wire bytes). A copy
//! that withholds a field carries the field's digest instead of its bytes and
//! salt: the signing input, and so the signature and the content hash, stay
//! the same, and the digest reveals nothing of the withheld value.

use govbus_proto::v1::{FieldDigest, Record, SigningInput};
use prost::Message;
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

/// The encoded `SigningInput` of a signed (possibly minimised) record.
pub fn signing_input(record: &Record) -> Result<Vec<u8>, SigningInputError> {
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
            digest: digest.clone(),
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
        certificate: signature.certificate.clone(),
        signed_at: signature.signed_at,
    }
    .encode_to_vec())
}

/// The content hash of a record: SHA-256 of its signing input.
pub fn content_hash(signing_input: &[u8]) -> Vec<u8> {
    Sha256::digest(signing_input).to_vec()
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
            .insert(number, field_digest(&salt, &bytes));
    }
    payload.value = wire::project(&payload.value, keep)?;
    Ok(())
}
