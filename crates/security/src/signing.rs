//! Record signatures: Ed25519 with the key of the signer's certificate, over
//! the Merkle root of a batch of `govbus.v1.SigningInput` hashes (see
//! `batch`); verification needs only the record and the bus CA certificate.

use std::collections::BTreeMap;

use bytes::Bytes;
use govbus_core::{SigningInputError, content_hash, signing_input, time::now_timestamp};
use govbus_proto::v1::{Record, RecordSignature};
use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};
use sha2::{Digest, Sha256};
use x509_parser::{
    prelude::{FromDer, X509Certificate},
    time::ASN1Time,
};

use crate::{Identity, batch, tls::pem_certificate_der};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the certificate is not PEM")]
    CertificateNotPem,
    #[error("the private key is not a PEM private key (PKCS#8, SEC1 or PKCS#1)")]
    KeyNotPem,
    #[error("the private key is not a PKCS#8 Ed25519 key in PEM")]
    KeyNotEd25519,
    #[error("the certificate: {0}")]
    Certificate(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error(
        "the certificate is not made for record signing (extended key usage document signing, RFC 9336, and no TLS purpose)"
    )]
    NotSigningCertificate,
    #[error("the private key is of a kind rustls cannot sign with: {0}")]
    UnsupportedKey(String),
    #[error("no randomness for salts")]
    Random,
    #[error(transparent)]
    Input(#[from] SigningInputError),
}

/// Why a record's signature does not hold. Each names the first check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("record is not signed")]
    Unsigned,
    #[error("signer certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("signer certificate was not issued by the bus CA")]
    UnknownIssuer,
    #[error("signer certificate was not valid at the signing time")]
    NotValidAtSigning,
    #[error("signer certificate's key is not Ed25519: not a record signing certificate")]
    NotSigningKey,
    #[error("signer certificate names no govbus identity")]
    NoIdentity,
    #[error("signer {claimed} does not match the certificate's identity {actual}")]
    SignerMismatch { claimed: String, actual: String },
    #[error("key id does not match the certificate's key")]
    KeyIdMismatch,
    #[error("signing input: {0}")]
    Input(#[from] SigningInputError),
    #[error("content_hash does not match the record")]
    HashMismatch,
    #[error("signature does not match the record (forged or tampered)")]
    BadSignature,
    #[error("the record is not in the batch its signature covers (inclusion proof does not hold)")]
    NotInBatch,
}

/// Hex SHA-256 of a SubjectPublicKeyInfo.
pub fn key_id(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// What a successful verification proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub signer: Identity,
    pub key_id: String,
}

/// Bytes of randomness per payload field.
const SALT_BYTES: usize = 16;

/// Signs records as one agency system.
pub struct Signer {
    identity: Identity,
    key: Ed25519KeyPair,
    /// Shared by every record this signer signs.
    certificate: Bytes,
    key_id: String,
    random: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("identity", &self.identity)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, SignError> {
        let certificate = pem_certificate_der(cert_pem).ok_or(SignError::CertificateNotPem)?;
        let (_, key_block) = x509_parser::pem::parse_x509_pem(key_pem.as_bytes())
            .map_err(|_| SignError::KeyNotEd25519)?;
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key_block.contents)
            .map_err(|_| SignError::KeyNotEd25519)?;
        let (_, cert) = X509Certificate::from_der(&certificate)
            .map_err(|e| SignError::Certificate(e.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key().as_ref() {
            return Err(SignError::KeyMismatch);
        }
        if !is_document_signing(&cert) {
            return Err(SignError::NotSigningCertificate);
        }
        let identity = Identity::from_certificate(&certificate)
            .map_err(|e| SignError::Certificate(e.to_string()))?;
        let key_id = key_id(cert.public_key().raw);
        Ok(Self {
            identity,
            key,
            certificate: certificate.into(),
            key_id,
            random: SystemRandom::new(),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The signer's certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// A detached Ed25519 signature over `message` (audit checkpoints).
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).as_ref().to_vec()
    }

    /// Signs a probe and verifies it with the certificate's key.
    pub fn self_check(&self) -> Result<(), SignError> {
        let probe = b"govbus key check";
        let signature = self.key.sign(probe);
        UnparsedPublicKey::new(&ED25519, self.key.public_key().as_ref())
            .verify(probe, signature.as_ref())
            .map_err(|_| SignError::KeyMismatch)
    }

    /// Adds salts, the signature block and the content hash to `record`,
    /// signed as a batch of one.
    pub fn sign(&self, record: &mut Record) -> Result<(), SignError> {
        self.sign_all(std::slice::from_mut(record))
    }

    /// Signs `records` as one batch: salts and a content hash for each, one
    /// Ed25519 signature over the Merkle root of the content hashes, and
    /// each record's inclusion proof (see `govbus.v1.BatchInclusion`).
    pub fn sign_all(&self, records: &mut [Record]) -> Result<(), SignError> {
        if records.is_empty() {
            return Ok(());
        }
        let signed_at = now_timestamp();
        let mut salts = self.salts(records)?.into_iter();
        let signer = self.identity.to_string();
        for record in records.iter_mut() {
            let field_salts = salts.next().unwrap_or_default();
            record.signature = Some(RecordSignature {
                signer: signer.clone(),
                key_id: self.key_id.clone(),
                certificate: self.certificate.clone(),
                signed_at: Some(signed_at),
                signature: Bytes::new(),
                field_salts,
                withheld_field_digests: Default::default(),
                batch: None,
            });
            record.content_hash = content_hash(&signing_input(record)?);
        }
        let inclusions = batch::inclusions(records.iter().map(|r| r.content_hash.as_slice()));
        let signature = Bytes::copy_from_slice(
            self.key
                .sign(&batch::signed_message(&inclusions[0]))
                .as_ref(),
        );
        for (record, inclusion) in records.iter_mut().zip(inclusions) {
            if let Some(block) = record.signature.as_mut() {
                block.signature = signature.clone();
                block.batch = Some(inclusion);
            }
        }
        Ok(())
    }

    /// A random salt for each payload field of each record, all drawn in
    /// one call (each call is a getrandom syscall) into one buffer that the
    /// salts are slices of.
    fn salts(&self, records: &[Record]) -> Result<Vec<BTreeMap<u32, Bytes>>, SignError> {
        let numbers = records
            .iter()
            .map(|record| match &record.payload {
                None => Ok(Vec::new()),
                Some(payload) => {
                    govbus_core::wire::field_records(&payload.value).map(|mut fields| {
                        fields.dedup_by_key(|(number, _)| *number);
                        fields.into_iter().map(|(number, _)| number).collect()
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(SigningInputError::from)?;
        let mut random = vec![0u8; SALT_BYTES * numbers.iter().map(Vec::len).sum::<usize>()];
        self.random
            .fill(&mut random)
            .map_err(|_| SignError::Random)?;
        let random = Bytes::from(random);
        let mut drawn = (0..random.len())
            .step_by(SALT_BYTES)
            .map(|at| random.slice(at..at + SALT_BYTES));
        Ok(numbers
            .into_iter()
            .map(|numbers| numbers.into_iter().zip(drawn.by_ref()).collect())
            .collect())
    }
}

/// Parses `cert_der` and checks that the CA in `ca_der` issued it; returns
/// the certificate and the window (seconds since the epoch) in which both
/// it and the CA are valid.
pub(crate) fn parse_issued<'a>(
    cert_der: &'a [u8],
    ca_der: &[u8],
) -> Result<(X509Certificate<'a>, (i64, i64)), VerifyError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| VerifyError::BadCertificate(e.to_string()))?;
    let (_, ca) = X509Certificate::from_der(ca_der)
        .map_err(|e| VerifyError::BadCertificate(e.to_string()))?;
    if cert.issuer() != ca.subject() || cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(VerifyError::UnknownIssuer);
    }
    let window = (
        cert.validity()
            .not_before
            .timestamp()
            .max(ca.validity().not_before.timestamp()),
        cert.validity()
            .not_after
            .timestamp()
            .min(ca.validity().not_after.timestamp()),
    );
    Ok((cert, window))
}

/// Whether a certificate is made for document signing and for nothing
/// else: a signing key that could also authenticate TLS (or any purpose)
/// would undo the split between transport and signing keys. Certificates
/// without the extension are valid for every purpose, so they do not pass.
fn is_document_signing(cert: &X509Certificate<'_>) -> bool {
    let Ok(Some(usage)) = cert.extended_key_usage() else {
        return false;
    };
    let usage = usage.value;
    !(usage.any || usage.server_auth || usage.client_auth)
        && usage.other.iter().any(|oid| {
            oid.iter()
                .is_some_and(|arcs| arcs.eq(crate::pki::DOCUMENT_SIGNING.iter().copied()))
        })
}

/// Whether a certificate's key is Ed25519, the only key records and
/// checkpoints are signed with (a transport certificate's is ECDSA).
pub(crate) fn is_ed25519(cert: &X509Certificate<'_>) -> bool {
    cert.public_key().algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519
}

/// Checks that `cert_der` was issued by the CA in `ca_der` and, when `at`
/// (seconds since the epoch) is given, was valid then; otherwise now.
pub fn check_issued_by(cert_der: &[u8], ca_der: &[u8], at: Option<i64>) -> Result<(), VerifyError> {
    let (_, (not_before, not_after)) = parse_issued(cert_der, ca_der)?;
    let when = at.unwrap_or_else(|| ASN1Time::now().timestamp());
    if when < not_before || when > not_after {
        return Err(VerifyError::NotValidAtSigning);
    }
    Ok(())
}

/// Verifies a detached signature made by [`Signer::sign_bytes`] with a
/// certificate from the bus CA, valid at `at` (seconds since the epoch).
pub fn verify_detached(
    certificate: &[u8],
    ca_der: &[u8],
    at: i64,
    message: &[u8],
    signature: &[u8],
) -> Result<Identity, VerifyError> {
    check_issued_by(certificate, ca_der, Some(at))?;
    let (_, cert) = X509Certificate::from_der(certificate)
        .map_err(|e| VerifyError::BadCertificate(e.to_string()))?;
    if !is_ed25519(&cert) {
        return Err(VerifyError::NotSigningKey);
    }
    let identity = Identity::from_certificate(certificate).map_err(|_| VerifyError::NoIdentity)?;
    UnparsedPublicKey::new(&ED25519, cert.public_key().subject_public_key.data.as_ref())
        .verify(message, signature)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(identity)
}

/// Verifies a (possibly minimised) record offline against the bus CA. For
/// many records, keep one [`Verifier`](crate::Verifier) instead.
pub fn verify(record: &Record, ca_der: &[u8]) -> Result<std::sync::Arc<Verified>, VerifyError> {
    crate::Verifier::new(ca_der.to_vec()).verify(record)
}
