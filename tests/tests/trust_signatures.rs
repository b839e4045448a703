//! The broker stores only records signed by the owner of their type with a
//! certificate from the bus CA; everything else goes to the dead-letter
//! topic with the reason, and ingestion carries on.

use govbus_security::{Signer, pki::CertificateAuthority, pki::LeafRequest};
use govbus_tests::*;
use prost::Message;
use tonic::Code;

const BIRTH_TOPIC: &str = "govbus.records.birth_certificate";

fn signed(signer: &Signer, subject: &str, name: &str) -> govbus_proto::v1::Record {
    let mut record = birth_record(subject, 1, name);
    record.record_id = uuid::Uuid::now_v7().to_string();
    record.source_agency = signer.identity().agency().into();
    record.source_system = signer.identity().system().into();
    signer.sign(&mut record).unwrap();
    record
}

/// Reads the dead-letter topic: (reason header) per message.
fn dead_letter_reasons(bus: &TestBus) -> Vec<String> {
    read_topic(bus, govbus_kafka::DEAD_LETTER_TOPIC)
        .into_iter()
        .map(|(_, headers)| {
            headers
                .into_iter()
                .find(|(k, _)| k == "govbus-reason")
                .map(|(_, v)| v)
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_and_unsigned_records_are_dead_lettered() {
    let bus = TestBus::start();
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let subject = pinfl(900);
    let fhdy = bus.signer(FHDY);

    // 1. Tampered after signing: the date of birth changed, hash recomputed.
    let mut forged = signed(&fhdy, &subject, "Forged");
    let mut payload = govbus_proto::records::BirthCertificate::decode(
        forged.payload.as_ref().unwrap().value.as_slice(),
    )
    .unwrap();
    payload.date_of_birth = "1980-01-01".into();
    forged.payload.as_mut().unwrap().value = payload.encode_to_vec();
    forged.content_hash = govbus_core::content_hash(&govbus_core::signing_input(&forged).unwrap());
    // 1b. The same, claimed as a batch of its own under the genuine signature
    // (the root of a batch of one is SHA-256(0x00 || content hash)).
    let mut forged_root = forged.clone();
    let inclusion = forged_root
        .signature
        .as_mut()
        .and_then(|s| s.batch.as_mut())
        .unwrap();
    inclusion.root = govbus_core::content_hash(&[&[0u8][..], &forged.content_hash].concat()).into();
    (inclusion.tree_size, inclusion.leaf_index) = (1, 0);
    inclusion.path.clear();
    // 2. Signed by the interior ministry, which does not own birth certificates.
    let foreign = signed(&bus.signer(INTERIOR), &subject, "Foreign");
    // 3. Signed under a CA that is not the bus's.
    let rogue_ca = CertificateAuthority::generate("rogue CA").unwrap();
    let rogue_cert = rogue_ca.issue_signing(&LeafRequest::new(id(FHDY))).unwrap();
    let rogue = signed(
        &Signer::from_pem(&rogue_cert.cert_pem, &rogue_cert.key_pem).unwrap(),
        &subject,
        "Rogue",
    );
    // 4. Claimed under the signer's transport certificate (ECDSA, for TLS
    // only) instead of its signing certificate.
    let mut transport = signed(&fhdy, &subject, "Transport");
    let tls_cert = std::fs::read_to_string(bus.tls(FHDY).cert).unwrap();
    transport.signature.as_mut().unwrap().certificate =
        govbus_security::pem_certificate_der(&tls_cert)
            .unwrap()
            .into();
    // 5. Not signed at all.
    let mut unsigned = birth_record(&subject, 1, "Unsigned");
    unsigned.source_agency = "civil-registry".into();
    unsigned.source_system = "fhdy".into();

    for record in [
        &forged,
        &forged_root,
        &foreign,
        &rogue,
        &transport,
        &unsigned,
    ] {
        produce_raw(&bus, BIRTH_TOPIC, &subject, &record.encode_to_vec()).await;
    }
    // Then a genuine record on the same partition: ingestion carried on.
    let mut genuine = birth_record(&subject, 1, "Genuine");
    genuine.record_key = "genuine".into();
    publish(&adapter, vec![genuine]).await.unwrap();
    let answer = wait_for_records(&broker, &subject, "birth_certificate").await;
    assert_eq!(
        answer.evidence.len(),
        1,
        "only the genuine record is stored"
    );
    assert_eq!(
        answer.evidence[0].record.as_ref().unwrap().record_key,
        "genuine"
    );
    assert_eq!(showcase.count().await.unwrap(), 1);

    eventually("six dead letters", || async {
        dead_letter_reasons(&bus).len() == 6
    })
    .await;
    let reasons = dead_letter_reasons(&bus);
    let expected = [
        "signature: the record is not in the batch its signature covers (inclusion proof does not hold)"
            .to_string(),
        "signature: signature does not match the record (forged or tampered)".to_string(),
        format!("signed by {INTERIOR}, which does not own birth_certificate (owner: {FHDY})"),
        "signature: signer certificate was not issued by the bus CA".to_string(),
        "signature: signer certificate's key is not Ed25519: not a record signing certificate"
            .to_string(),
        "signature: record is not signed".to_string(),
    ];
    for reason in expected {
        assert!(reasons.contains(&reason), "{reason:?} not in {reasons:?}");
    }

    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_answer_verifies_offline_and_tampering_shows() {
    let bus = TestBus::start();
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let subject = pinfl(910);
    publish(&adapter, vec![birth_record(&subject, 1, "Nodira")])
        .await
        .unwrap();
    let answer = wait_for_records(&broker, &subject, "birth_certificate").await;

    // The CLI's path: JSON out, JSON in, checked against the CA file alone.
    let json = govbus_cli::inspect::to_json(&answer).unwrap();
    let saved = bus.dir.path().join("evidence.json");
    std::fs::write(&saved, &json).unwrap();
    let ca = bus.certs_dir().join("ca.pem");
    let lines = govbus_cli::inspect::verify_file(&saved, &ca).unwrap();
    assert!(
        lines[0].starts_with("ok: record") && lines[0].contains(FHDY),
        "{lines:?}"
    );

    let tampered = json.replace("\"firstName\": \"Nodira\"", "\"firstName\": \"Nodir\"");
    assert_ne!(tampered, json);
    std::fs::write(&saved, &tampered).unwrap();
    let error = govbus_cli::inspect::verify_file(&saved, &ca)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("FAILED") && error.contains("1 of 1 records do not verify"),
        "{error}"
    );

    // The unauthorised see nothing to verify.
    let status = broker
        .once_only_client_as(STRANGER)
        .await
        .get_evidence(evidence_request(&subject, "birth_certificate"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    adapter.stop().await;
    broker.stop().await;
}
