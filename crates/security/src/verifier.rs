//! Verifying many records against one bus CA. A signer's certificate is the
//! same on every record it signs; parsing it and checking the CA's signature
//! on it once, not per record, saves one of the two Ed25519 verifications
//! per ingested record (the largest item of the ingest profile, see
//! docs/PROFILING.md). Likewise a batch signature is checked once for all
//! the records it covers. What depends on the record (validity at its
//! signing time, signer, key id, content hash, place in its batch) is still
//! checked every time; a place in a batch with the nodes of its tree that
//! the batch's other records already proved (`batch_proof`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use govbus_core::{content_hash_is, signing_input, time::timestamp_to_micros};
use govbus_proto::v1::{BatchInclusion, Record};
use ring::signature::{ED25519, UnparsedPublicKey};

use crate::{
    Identity, Verified, VerifyError, batch,
    batch_proof::ProvenTrees,
    key_id,
    signing::{is_ed25519, parse_issued},
};

/// Certificates, and batch signatures, remembered at most; a full cache
/// starts again empty.
const CACHE_CAPACITY: usize = 4096;

/// Hashed on every record: foldhash, seeded at random per map, instead of
/// std's SipHash. What enters these maps is a certificate the CA issued or
/// a batch signature that held; a flood of chosen keys only meets the
/// lookups, and each map is bounded (`CACHE_CAPACITY`).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A signer certificate that the CA issued, reduced to what verification
/// needs; shared, not copied, by every record it signed.
#[derive(Debug)]
struct IssuedCertificate {
    /// What verifying a record it signed proves — shared by every such
    /// record, not built for each — and the signer as records spell it in
    /// `RecordSignature.signer`.
    proves: Result<(Arc<Verified>, String), VerifyError>,
    public_key: Vec<u8>,
    /// Seconds since the epoch; the certificate's window narrowed by the CA's.
    not_before: i64,
    not_after: i64,
}

/// Checks record signatures against the bus CA; cheap to share by reference.
#[derive(Debug)]
pub struct Verifier {
    ca_der: Vec<u8>,
    issued: Mutex<FastMap<Vec<u8>, Arc<IssuedCertificate>>>,
    /// Batch signatures that held, by signature.
    batches: Mutex<FastMap<Vec<u8>, CheckedBatch>>,
    /// Nodes of batch trees proven to lead to their roots.
    trees: Mutex<ProvenTrees>,
}

/// What a batch signature was checked against: the key, and the root and
/// size its message (`batch::signed_message`) is made of.
#[derive(Debug)]
struct CheckedBatch {
    public_key: Vec<u8>,
    root: Vec<u8>,
    tree_size: u64,
}

impl Verifier {
    pub fn new(ca_der: Vec<u8>) -> Self {
        Self {
            ca_der,
            issued: Mutex::default(),
            batches: Mutex::default(),
            trees: Mutex::default(),
        }
    }

    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    fn issued(&self, certificate: &[u8]) -> Result<Arc<IssuedCertificate>, VerifyError> {
        if let Some(known) = self
            .issued
            .lock()
            .ok()
            .and_then(|cache| cache.get(certificate).cloned())
        {
            return Ok(known);
        }
        let (cert, (not_before, not_after)) = parse_issued(certificate, &self.ca_der)?;
        let issued = Arc::new(IssuedCertificate {
            proves: Identity::from_certificate(certificate)
                .map_err(|_| VerifyError::NoIdentity)
                .and_then(|signer| {
                    if is_ed25519(&cert) {
                        Ok(signer)
                    } else {
                        Err(VerifyError::NotSigningKey)
                    }
                })
                .map(|signer| {
                    let text = signer.to_string();
                    let key_id = key_id(cert.public_key().raw);
                    (Arc::new(Verified { signer, key_id }), text)
                }),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            not_before,
            not_after,
        });
        if let Ok(mut cache) = self.issued.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(certificate.to_vec(), issued.clone());
        }
        Ok(issued)
    }

    /// Verifies a (possibly minimised) record: signed with a certificate the
    /// CA issued, valid when it signed, by the identity it claims, over
    /// exactly this content. What it proves is shared by every record the
    /// same certificate signed.
    pub fn verify(&self, record: &Record) -> Result<Arc<Verified>, VerifyError> {
        let signature = record.signature.as_ref().ok_or(VerifyError::Unsigned)?;
        if signature.signature.is_empty() {
            return Err(VerifyError::Unsigned);
        }
        let signed_at = signature
            .signed_at
            .as_ref()
            .map(|t| timestamp_to_micros(t).div_euclid(1_000_000))
            .ok_or(VerifyError::NotValidAtSigning)?;
        let issued = self.issued(&signature.certificate)?;
        if signed_at < issued.not_before || signed_at > issued.not_after {
            return Err(VerifyError::NotValidAtSigning);
        }
        let (verified, actual_text) = issued.proves.as_ref().map_err(Clone::clone)?;
        if *actual_text != signature.signer {
            return Err(VerifyError::SignerMismatch {
                claimed: signature.signer.clone(),
                actual: actual_text.clone(),
            });
        }
        if verified.key_id != signature.key_id {
            return Err(VerifyError::KeyIdMismatch);
        }
        let input = signing_input(record)?;
        if !content_hash_is(&input, &record.content_hash) {
            return Err(VerifyError::HashMismatch);
        }
        match &signature.batch {
            // Signed alone (records from before batch signatures).
            None => check_signature(&issued.public_key, &input, &signature.signature)?,
            Some(inclusion) => {
                if !self.includes(inclusion, &record.content_hash) {
                    return Err(VerifyError::NotInBatch);
                }
                self.check_batch_signature(&issued.public_key, inclusion, &signature.signature)?;
            }
        }
        Ok(Arc::clone(verified))
    }

    /// Whether the record is the leaf of its batch it says; with the nodes
    /// of the batch's tree its other records proved, where remembered.
    fn includes(&self, inclusion: &BatchInclusion, content_hash: &[u8]) -> bool {
        match self.trees.lock() {
            Ok(mut trees) => trees.includes(inclusion, content_hash),
            Err(_) => crate::batch_proof::includes(inclusion, content_hash, None),
        }
    }

    /// Checks a batch signature, once for all the records of its batch:
    /// Ed25519 verification is deterministic, so a (key, message, signature)
    /// triple that held once holds again.
    fn check_batch_signature(
        &self,
        public_key: &[u8],
        inclusion: &BatchInclusion,
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        // Compared in place, nothing built: this runs for every ingested record.
        let known = self.batches.lock().ok().is_some_and(|cache| {
            cache.get(signature).is_some_and(|checked| {
                checked.public_key == public_key
                    && checked.root == inclusion.root
                    && checked.tree_size == inclusion.tree_size
            })
        });
        if known {
            return Ok(());
        }
        check_signature(public_key, &batch::signed_message(inclusion), signature)?;
        if let Ok(mut cache) = self.batches.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            let checked = CheckedBatch {
                public_key: public_key.to_vec(),
                // A copy: a slice would keep the consumed envelope alive.
                root: inclusion.root.to_vec(),
                tree_size: inclusion.tree_size,
            };
            cache.insert(signature.to_vec(), checked);
        }
        Ok(())
    }
}

fn check_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .map_err(|_| VerifyError::BadSignature)
}
