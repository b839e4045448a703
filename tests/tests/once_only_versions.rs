//! Versions, revocation and redelivery: the showcase keeps exactly the newest
//! version of each record, once.

use govbus_proto::v1::{EvidenceStatus, RecordStatus};
use govbus_tests::*;
use prost::Message;

fn first_name(answer: &govbus_proto::v1::GetEvidenceResponse) -> String {
    let payload = answer.evidence[0]
        .record
        .as_ref()
        .unwrap()
        .payload
        .as_ref()
        .unwrap();
    govbus_proto::records::BirthCertificate::decode(payload.value.as_slice())
        .unwrap()
        .child
        .unwrap()
        .first_name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_version_is_ignored_and_revocation_is_reported() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let subject = pinfl(7);
    let key = birth_record(&subject, 1, "x").record_key;

    publish(&adapter, vec![birth_record(&subject, 2, "Bekzod")])
        .await
        .unwrap();
    wait_for_evidence(
        &broker,
        evidence_request(&subject, "birth_certificate"),
        |r| r.evidence.len() == 1,
    )
    .await;

    // Version 1 arrives late: it enters the history but does not replace version 2.
    publish(&adapter, vec![birth_record(&subject, 1, "Stale")])
        .await
        .unwrap();
    eventually("stale version reaches the history", || async {
        showcase
            .history_len("birth_certificate", &subject, &key)
            .await
            .unwrap()
            == 2
    })
    .await;
    let answer = wait_for_evidence(
        &broker,
        evidence_request(&subject, "birth_certificate"),
        |_| true,
    )
    .await;
    assert_eq!(answer.evidence.len(), 1);
    assert_eq!(answer.evidence[0].record.as_ref().unwrap().version, 2);
    assert_eq!(first_name(&answer), "Bekzod");

    // An equal version with different content does not replace it either.
    publish(&adapter, vec![birth_record(&subject, 2, "Impostor")])
        .await
        .unwrap();
    // Version 3 revokes the certificate.
    let mut revoked = birth_record(&subject, 3, "Bekzod");
    revoked.status = RecordStatus::Revoked as i32;
    publish(&adapter, vec![revoked]).await.unwrap();
    let answer = wait_for_evidence(
        &broker,
        evidence_request(&subject, "birth_certificate"),
        |r| r.evidence[0].record.as_ref().unwrap().version == 3,
    )
    .await;
    assert_eq!(answer.evidence[0].status, EvidenceStatus::Revoked as i32);
    assert_eq!(
        answer.evidence[0].record.as_ref().unwrap().status,
        RecordStatus::Revoked as i32
    );
    assert_eq!(
        showcase
            .history_len("birth_certificate", &subject, &key)
            .await
            .unwrap(),
        3
    );
    assert_eq!(showcase.count().await.unwrap(), 1);

    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_delivered_twice_is_stored_once() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let subject = pinfl(8);

    publish(&adapter, vec![birth_record(&subject, 1, "Jasur")])
        .await
        .unwrap();
    let answer = wait_for_records(&broker, &subject, "birth_certificate").await;
    let stored = answer.evidence[0].record.clone().unwrap();
    let first_offset = answer.evidence[0].provenance.as_ref().unwrap().offset;

    // The very same envelope again, as a producer retry or a replay would send it,
    // then a second record on the same partition to know the first was consumed.
    produce_raw(
        &bus,
        "govbus.records.birth_certificate",
        &subject,
        &stored.encode_to_vec(),
    )
    .await;
    let mut marker = birth_record(&subject, 1, "Jasur");
    marker.record_key = "marker".into();
    publish(&adapter, vec![marker]).await.unwrap();
    let answer = wait_for_evidence(
        &broker,
        evidence_request(&subject, "birth_certificate"),
        |r| r.evidence.len() == 2,
    )
    .await;

    assert_eq!(
        topic_message_count(&bus, "govbus.records.birth_certificate"),
        3
    );
    let again = answer
        .evidence
        .iter()
        .find(|e| e.record.as_ref().unwrap().record_key == stored.record_key)
        .unwrap();
    assert_eq!(again.record.as_ref().unwrap(), &stored);
    assert_eq!(
        again.provenance.as_ref().unwrap().offset,
        first_offset,
        "first delivery kept"
    );
    assert_eq!(
        showcase
            .history_len("birth_certificate", &subject, &stored.record_key)
            .await
            .unwrap(),
        1
    );
    assert_eq!(showcase.count().await.unwrap(), 2);

    adapter.stop().await;
    broker.stop().await;
}
