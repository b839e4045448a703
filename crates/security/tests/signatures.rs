//! Record signatures: what verifies, and every way a record can fail to.

use govbus_core::minimise;
use govbus_proto::{
    records::{BirthCertificate, PersonName},
    v1::{Record, RecordStatus},
};
use govbus_security::{
    Identity, Signer, VerifyError,
    pki::{CertificateAuthority, LeafRequest},
    verify,
};
use prost::{Message, bytes::Bytes};

/// Flips bit 0 of byte `at` of `bytes` (a signature's byte fields
/// are shared `Bytes`, changed by replacing them).
fn flip_bit(bytes: &mut Bytes, at: usize) {
    let mut changed = bytes.to_vec();
    changed[at] ^= 1;
    *bytes = changed.into();
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate("test CA").unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

fn signer(ca: &CertificateAuthority, identity: &str) -> Signer {
    let issued = ca
        .issue_signing(&LeafRequest::new(identity.parse().unwrap()))
        .unwrap();
    Signer::from_pem(&issued.cert_pem, &issued.key_pem).unwrap()
}

fn record() -> Record {
    let payload = BirthCertificate {
        certificate_number: "I-TN 0412345".into(),
        child: Some(PersonName {
            pinfl: "51505151234567".into(),
            first_name: "Aziz".into(),
            ..Default::default()
        }),
        sex: 1,
        date_of_birth: "2015-05-15".into(),
        ..Default::default()
    };
    Record {
        record_id: "0192f000-0000-7000-8000-000000000001".into(),
        record_type: "birth_certificate".into(),
        subject_id: "51505151234567".into(),
        record_key: "I-TN 0412345".into(),
        version: 1,
        status: RecordStatus::Active as i32,
        source_agency: "civil-registry".into(),
        source_system: "fhdy".into(),
        // Required by the broker's check (`RecordChecker`), not by signatures.
        issued_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        payload: Some(govbus_proto::pack(&payload)),
        ..Default::default()
    }
}

#[test]
fn signed_records_verify_and_minimised_copies_too() {
    let ca = ca();
    let signer = signer(&ca, "agency/civil-registry/system/fhdy");
    let mut r = record();
    signer.sign(&mut r).unwrap();
    let verified = verify(&r, &der(ca.cert_pem())).unwrap();
    assert_eq!(
        verified.signer,
        "agency/civil-registry/system/fhdy"
            .parse::<Identity>()
            .unwrap()
    );

    let hash = r.content_hash.clone();
    let mut minimised = r.clone();
    minimise(&mut minimised, &[4]).unwrap();
    let payload =
        BirthCertificate::decode(minimised.payload.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!(payload.date_of_birth, "2015-05-15");
    assert!(payload.child.is_none());
    let signature = minimised.signature.as_ref().unwrap();
    assert_eq!(
        signature.field_salts.len(),
        1,
        "withheld fields keep no salt"
    );
    assert_eq!(signature.withheld_field_digests.len(), 3);
    assert_eq!(minimised.content_hash, hash);
    verify(&minimised, &der(ca.cert_pem())).unwrap();
}

#[test]
fn tampering_forgery_and_foreign_keys_fail() {
    let ca = ca();
    let ca_der = der(ca.cert_pem());
    let signer = signer(&ca, "agency/civil-registry/system/fhdy");
    let mut signed = record();
    signer.sign(&mut signed).unwrap();

    let mut r = signed.clone();
    r.version = 2;
    assert_eq!(verify(&r, &ca_der), Err(VerifyError::HashMismatch));

    // Tampered payload with the content hash recomputed: it is no longer
    // the leaf the signed batch holds.
    let r = tampered(&signed);
    assert_eq!(verify(&r, &ca_der), Err(VerifyError::NotInBatch));

    let mut r = signed.clone();
    r.signature.as_mut().unwrap().signer = "agency/interior/system/address-bureau".into();
    assert!(matches!(
        verify(&r, &ca_der),
        Err(VerifyError::SignerMismatch { .. })
    ));

    let mut r = signed.clone();
    r.signature = None;
    assert_eq!(verify(&r, &ca_der), Err(VerifyError::Unsigned));

    // Signed by a key from another CA.
    let other = CertificateAuthority::generate("rogue CA").unwrap();
    let rogue = self::signer(&other, "agency/civil-registry/system/fhdy");
    let mut r = record();
    rogue.sign(&mut r).unwrap();
    assert_eq!(verify(&r, &ca_der), Err(VerifyError::UnknownIssuer));

    // Signed with a certificate that had expired.
    let mut request = LeafRequest::new("agency/civil-registry/system/fhdy".parse().unwrap());
    request.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    request.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let issued = ca.issue_signing(&request).unwrap();
    let expired = Signer::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
    let mut r = record();
    expired.sign(&mut r).unwrap();
    assert_eq!(verify(&r, &ca_der), Err(VerifyError::NotValidAtSigning));
}

/// `signed` with another date of birth and its content hash recomputed.
fn tampered(signed: &Record) -> Record {
    let mut r = signed.clone();
    let mut payload =
        BirthCertificate::decode(r.payload.as_ref().unwrap().value.as_slice()).unwrap();
    payload.date_of_birth = "2014-01-01".into();
    r.payload.as_mut().unwrap().value = payload.encode_to_vec();
    r.content_hash = govbus_core::content_hash(&govbus_core::signing_input(&r).unwrap());
    r
}

/// A batch-signed record's place in its batch, to change.
fn inclusion(r: &mut Record) -> &mut govbus_proto::v1::BatchInclusion {
    r.signature.as_mut().unwrap().batch.as_mut().unwrap()
}

/// The CA's certificate and `n` records signed together by a system it
/// issued a certificate to.
fn signed_batch(n: usize) -> (Vec<u8>, Vec<Record>) {
    let ca = ca();
    let signer = signer(&ca, "agency/civil-registry/system/fhdy");
    (der(ca.cert_pem()), batch_of(&signer, n))
}

fn batch_of(signer: &Signer, n: usize) -> Vec<Record> {
    let mut records: Vec<Record> = (0..n)
        .map(|i| Record {
            record_id: format!("0192f000-0000-7000-8000-00000000000{i}"),
            version: i as u64 + 1,
            ..record()
        })
        .collect();
    signer.sign_all(&mut records).unwrap();
    records
}

/// One signature covers a batch; each record still verifies alone, with
/// its own place in the batch and nothing else.
#[test]
fn a_batch_signature_covers_each_record_alone() {
    let (ca_der, batch) = signed_batch(5);
    let signature = &batch[0].signature.as_ref().unwrap().signature;
    for r in &batch {
        assert_eq!(&r.signature.as_ref().unwrap().signature, signature);
        verify(r, &ca_der).unwrap();
        let mut minimised = r.clone();
        minimise(&mut minimised, &[4]).unwrap();
        verify(&minimised, &ca_der).unwrap();
    }

    // Another record's proof.
    let mut r = batch[1].clone();
    r.signature.as_mut().unwrap().batch = batch[3].signature.as_ref().unwrap().batch.clone();
    assert_eq!(verify(&r, &ca_der), Err(VerifyError::NotInBatch));

    // A different tree size may still lead to the same root (RFC 9162
    // proofs do not pin it), but the signature covers the size.
    let mut r = batch[2].clone();
    inclusion(&mut r).tree_size = 6;
    assert_eq!(verify(&r, &ca_der), Err(VerifyError::BadSignature));

    // A tampered record in a batch of its own, under the genuine signature:
    // refused, also by a verifier that has already checked that signature.
    let verifier = govbus_security::Verifier::new(ca_der.clone());
    verifier.verify(&batch[0]).unwrap();
    let mut r = tampered(&batch[0]);
    let inclusion = r.signature.as_mut().unwrap().batch.as_mut().unwrap();
    // The root of a batch of one is its leaf hash, SHA-256(0x00 || content hash).
    inclusion.root = govbus_core::content_hash(&[&[0u8][..], &r.content_hash].concat()).into();
    inclusion.tree_size = 1;
    inclusion.leaf_index = 0;
    inclusion.path.clear();
    assert_eq!(verifier.verify(&r), Err(VerifyError::BadSignature));
    assert_eq!(verify(&r, &ca_der), Err(VerifyError::BadSignature));
}

/// A verifier remembers the nodes of a batch's tree that its records
/// proved (so later records of the batch hash less); what it remembers
/// never lets a record through that a fresh verifier refuses.
#[test]
fn a_verifier_that_proved_a_batch_refuses_what_a_fresh_one_refuses() {
    let (ca_der, batch) = signed_batch(9);
    let verifier = govbus_security::Verifier::new(ca_der.clone());
    for r in &batch {
        verifier.verify(r).unwrap();
    }
    let path_len = batch[4]
        .signature
        .as_ref()
        .unwrap()
        .batch
        .as_ref()
        .unwrap()
        .path
        .len();
    let mut refused = Vec::new();
    // A record changed and its content hash made anew, in its own place.
    refused.push(tampered(&batch[4]));
    // Each hash of a proof changed in turn, the lowest (a leaf's sibling,
    // which the verifier knows) to the one below the root.
    for at in (0..path_len).step_by(32) {
        let mut r = batch[4].clone();
        flip_bit(&mut inclusion(&mut r).path, at);
        refused.push(r);
    }
    // A record moved to a neighbour's place.
    let mut r = batch[4].clone();
    inclusion(&mut r).leaf_index = 5;
    refused.push(r);
    for r in &refused {
        assert_eq!(verify(r, &ca_der), Err(VerifyError::NotInBatch));
        assert_eq!(verifier.verify(r), Err(VerifyError::NotInBatch));
    }
    for r in &batch {
        verifier.verify(r).unwrap();
    }
}

/// The salts of a batch are drawn together, but no two fields of any
/// records share one: a shared salt would let a field's digest in one
/// minimised record be compared with another's.
#[test]
fn every_field_of_a_batch_has_a_salt_of_its_own() {
    let ca = ca();
    let signer = signer(&ca, "agency/civil-registry/system/fhdy");
    let batch = batch_of(&signer, 7);
    let mut seen = std::collections::HashSet::new();
    let mut fields = 0;
    for r in &batch {
        let salts = &r.signature.as_ref().unwrap().field_salts;
        let numbers = govbus_core::wire::split_fields(&r.payload.as_ref().unwrap().value).unwrap();
        assert_eq!(
            salts
                .keys()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            numbers.keys().copied().collect(),
            "a salt for each payload field, and no other"
        );
        for salt in salts.values() {
            assert_eq!(salt.len(), 16);
            assert!(seen.insert(salt.clone()), "salt used twice: {salt:?}");
            fields += 1;
        }
    }
    assert_eq!(fields, 7 * 4, "four payload fields per record");
}

/// Records signed one by one, before batch signatures, still verify.
#[test]
fn records_signed_alone_still_verify() {
    let ca = ca();
    let ca_der = der(ca.cert_pem());
    let signer = signer(&ca, "agency/civil-registry/system/fhdy");
    let mut r = record();
    signer.sign(&mut r).unwrap();
    let block = r.signature.as_mut().unwrap();
    block.batch = None;
    assert_eq!(verify(&r, &ca_der), Err(VerifyError::BadSignature));
    let alone = signer.sign_bytes(&govbus_core::signing_input(&r).unwrap());
    r.signature.as_mut().unwrap().signature = alone.into();
    verify(&r, &ca_der).unwrap();
    assert_eq!(
        verify(&tampered(&r), &ca_der),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn a_key_must_match_its_certificate() {
    let ca = ca();
    let a = ca
        .issue_signing(&LeafRequest::new("agency/a/system/a".parse().unwrap()))
        .unwrap();
    let b = ca
        .issue_signing(&LeafRequest::new("agency/b/system/b".parse().unwrap()))
        .unwrap();
    assert!(matches!(
        Signer::from_pem(&a.cert_pem, &b.key_pem),
        Err(govbus_security::SignError::KeyMismatch)
    ));
}

/// One verifier for many records remembers the certificates it checked;
/// what depends on the record is still checked on every record.
#[test]
fn a_shared_verifier_still_checks_every_record() {
    let ca = ca();
    let verifier = govbus_security::Verifier::new(der(ca.cert_pem()));
    let signer = signer(&ca, "agency/civil-registry/system/fhdy");
    let mut signed = record();
    signer.sign(&mut signed).unwrap();
    verifier.verify(&signed).unwrap();
    verifier.verify(&signed).unwrap();

    let mut r = signed.clone();
    r.version = 2;
    assert_eq!(verifier.verify(&r), Err(VerifyError::HashMismatch));

    let mut r = signed.clone();
    flip_bit(&mut r.signature.as_mut().unwrap().signature, 0);
    assert_eq!(verifier.verify(&r), Err(VerifyError::BadSignature));

    // The remembered certificate, but a signing time outside its validity.
    let mut r = signed.clone();
    r.signature.as_mut().unwrap().signed_at = Some(prost_types::Timestamp {
        seconds: 0,
        nanos: 0,
    });
    assert_eq!(verifier.verify(&r), Err(VerifyError::NotValidAtSigning));

    let mut r = signed.clone();
    r.signature.as_mut().unwrap().key_id = "00".into();
    assert_eq!(verifier.verify(&r), Err(VerifyError::KeyIdMismatch));

    // A rogue certificate is refused every time, never remembered as good.
    let other = CertificateAuthority::generate("rogue CA").unwrap();
    let rogue = self::signer(&other, "agency/civil-registry/system/fhdy");
    let mut r = record();
    rogue.sign(&mut r).unwrap();
    for _ in 0..2 {
        assert_eq!(verifier.verify(&r), Err(VerifyError::UnknownIssuer));
    }
}

/// The broker checks each consumed envelope from a `Bytes` buffer: the
/// signature's byte fields are then slices of that buffer, not copies (the
/// copies were ~5 % of an ingest's CPU), and the record is the same as one
/// checked from a plain slice.
#[test]
fn a_record_checked_from_bytes_borrows_its_signature_from_the_envelope() {
    let (ca_der, batch) = signed_batch(3);
    let checker = govbus_security::RecordChecker::new(
        std::sync::Arc::new(govbus_core::Catalog::builtin()),
        ca_der,
    );
    let topic = "govbus.records.birth_certificate";
    let envelope = Bytes::from(batch[1].encode_to_vec());
    let key = batch[1].subject_id.as_bytes();
    let checked = checker.check(topic, key, envelope.clone()).unwrap();
    assert_eq!(checked, checker.check(topic, key, &envelope[..]).unwrap());
    assert_eq!(checked, batch[1]);

    let inside = |field: &[u8]| envelope.as_ptr_range().contains(&field.as_ptr());
    let signature = checked.signature.as_ref().unwrap();
    let inclusion = signature.batch.as_ref().unwrap();
    assert!(inside(&signature.certificate), "certificate copied");
    assert!(inside(&signature.signature), "signature copied");
    assert!(
        inside(&inclusion.root) && inside(&inclusion.path),
        "proof copied"
    );
    assert!(!signature.field_salts.is_empty());
    for salt in signature.field_salts.values() {
        assert!(inside(salt), "salt copied");
    }
}
