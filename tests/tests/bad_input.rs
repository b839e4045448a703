//! Hostile and malformed input: precise INVALID_ARGUMENT, nothing stored,
//! and the consumer carries on past records it refuses.

use govbus_proto::{
    records::MarriageCertificate,
    v1::{GetEvidenceRequest, PublishOutcome},
};
use govbus_tests::*;
use tonic::Code;

const BIRTH_TOPIC: &str = "govbus.records.birth_certificate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_rejected_and_nothing_is_stored() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let showcase = open_showcase(&bus, "showcase.db").await;

    let mut bad_pinfl = birth_record(&pinfl(20), 1, "Aziz");
    bad_pinfl.subject_id = "3150590123".into();
    let mut unknown_type = birth_record(&pinfl(21), 1, "Aziz");
    unknown_type.record_type = "pension_certificate".into();
    let mut wrong_payload = birth_record(&pinfl(22), 1, "Aziz");
    wrong_payload.payload = Some(govbus_proto::pack(&MarriageCertificate {
        certificate_number: "I-TN 0000001".into(),
        ..Default::default()
    }));

    let cases = [
        (bad_pinfl, "records[0].subject_id: has 10 digits"),
        (
            unknown_type,
            "records[0].record_type: unknown record type \"pension_certificate\"",
        ),
        (
            wrong_payload,
            "records[0].payload: has type \"type.googleapis.com/govbus.records.v1.MarriageCertificate\"",
        ),
    ];
    for (record, expected) in cases {
        let status = publish(&adapter, vec![record]).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(expected),
            "{:?} lacks {expected:?}",
            status.message()
        );
    }

    // One bad record spoils its whole batch: the good one is not published either.
    let good = birth_record(&pinfl(23), 1, "Aziz");
    let mut bad = birth_record(&pinfl(24), 1, "Aziz");
    bad.version = 0;
    let status = publish(&adapter, vec![good, bad]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("records[1].version"),
        "{}",
        status.message()
    );

    let status = publish(&adapter, vec![]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at least one record"));

    // A valid record afterwards proves the pipeline was live all along.
    let sentinel = pinfl(25);
    let reply = publish(&adapter, vec![birth_record(&sentinel, 1, "Aziz")])
        .await
        .unwrap();
    assert_eq!(reply.results[0].outcome, PublishOutcome::Accepted as i32);
    wait_for_records(&broker, &sentinel, "birth_certificate").await;
    assert_eq!(
        topic_message_count(&bus, BIRTH_TOPIC),
        1,
        "only the sentinel reached Kafka"
    );
    assert_eq!(
        showcase.count().await.unwrap(),
        1,
        "only the sentinel is stored"
    );
    let mut client = broker.once_only_client().await;
    for n in [21, 22, 23, 24] {
        let status = client
            .get_evidence(evidence_request(&pinfl(n), "birth_certificate"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }

    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_records_go_to_dead_letters_and_ingest_carries_on() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let subject = pinfl(30);

    // Not an envelope at all, and an envelope whose hash was tampered with.
    produce_raw(&bus, BIRTH_TOPIC, &subject, b"\xff\xff not protobuf").await;
    let mut tampered = birth_record(&subject, 1, "Aziz");
    tampered.source_agency = "civil-registry".into();
    tampered.source_system = "fhdy".into();
    tampered.content_hash = vec![0; 32];
    produce_raw(
        &bus,
        BIRTH_TOPIC,
        &subject,
        &prost::Message::encode_to_vec(&tampered),
    )
    .await;
    // Then a good record with the same key, so on the same partition, after them.
    publish(&adapter, vec![birth_record(&subject, 1, "Aziz")])
        .await
        .unwrap();

    wait_for_records(&broker, &subject, "birth_certificate").await;
    eventually("two dead letters", || async {
        topic_message_count(&bus, govbus_kafka::DEAD_LETTER_TOPIC) == 2
    })
    .await;
    assert_eq!(showcase.count().await.unwrap(), 1);

    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_requests_are_checked_and_minimised() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let subject = pinfl(40);
    publish(&adapter, vec![birth_record(&subject, 1, "Malika")])
        .await
        .unwrap();
    wait_for_records(&broker, &subject, "birth_certificate").await;
    let mut client = broker.once_only_client().await;

    let cases: [(GetEvidenceRequest, Code, &str); 9] = [
        (
            GetEvidenceRequest {
                subject_id: "12345".into(),
                ..evidence_request(&subject, "birth_certificate")
            },
            Code::InvalidArgument,
            "subject_id: has 5 digits",
        ),
        (
            evidence_request(&subject, "salary_statement"),
            Code::InvalidArgument,
            "record_type: unknown record type \"salary_statement\"",
        ),
        (
            GetEvidenceRequest {
                purpose: " ".into(),
                ..evidence_request(&subject, "birth_certificate")
            },
            Code::InvalidArgument,
            "purpose: is required",
        ),
        // A NUL byte cannot be stored in a PostgreSQL text column: the
        // refusal's audit entry must still be written (and not fail the
        // other requests committed with it).
        (
            GetEvidenceRequest {
                purpose: "tax\0refund".into(),
                ..evidence_request(&subject, "birth_certificate")
            },
            Code::InvalidArgument,
            "purpose: must be at most 128 printable characters",
        ),
        (
            GetEvidenceRequest {
                subject_id: "1234\u{0}5678901234".into(),
                request_id: "req\0".into(),
                ..evidence_request(&subject, "birth_certificate")
            },
            Code::InvalidArgument,
            "subject_id:",
        ),
        // The refusal's reason quotes the unknown field.
        (
            GetEvidenceRequest {
                fields: vec!["sal\0ary".into()],
                ..evidence_request(&subject, "birth_certificate")
            },
            Code::InvalidArgument,
            "fields: birth_certificate has no field sal",
        ),
        (
            GetEvidenceRequest {
                fields: vec!["salary".into()],
                ..evidence_request(&subject, "birth_certificate")
            },
            Code::InvalidArgument,
            "fields: birth_certificate has no field salary",
        ),
        (
            evidence_request(&subject, "marriage_certificate"),
            Code::NotFound,
            &format!("no marriage_certificate records for subject {subject}"),
        ),
        (
            evidence_request(&pinfl(41), "birth_certificate"),
            Code::NotFound,
            "no birth_certificate records for subject",
        ),
    ];
    for (request, code, expected) in cases {
        let status = client.get_evidence(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(expected),
            "{:?} lacks {expected:?}",
            status.message()
        );
    }

    // Only the requested fields come back; the caller's request id is echoed.
    let reply = client
        .get_evidence(GetEvidenceRequest {
            fields: vec!["date_of_birth".into(), "sex".into()],
            request_id: "portal-req-42".into(),
            ..evidence_request(&subject, "birth_certificate")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.request_id, "portal-req-42");
    let payload = reply.evidence[0]
        .record
        .as_ref()
        .unwrap()
        .payload
        .as_ref()
        .unwrap();
    let got: govbus_proto::records::BirthCertificate =
        prost::Message::decode(payload.value.as_slice()).unwrap();
    assert_eq!(got.date_of_birth, "1990-05-15");
    assert!(
        got.child.is_none() && got.certificate_number.is_empty(),
        "{got:?}"
    );

    adapter.stop().await;
    broker.stop().await;
}

/// An envelope damaged in the showcase (a disk fault, a hand edit) is never
/// sent on, whole or minimised: the caller gets INTERNAL without detail and
/// the other records are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_damaged_at_rest_is_not_served() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let (damaged, intact) = (pinfl(60), pinfl(61));
    publish(
        &adapter,
        vec![
            birth_record(&damaged, 1, "Olim"),
            birth_record(&intact, 1, "Nodir"),
        ],
    )
    .await
    .unwrap();
    wait_for_records(&broker, &damaged, "birth_certificate").await;
    wait_for_records(&broker, &intact, "birth_certificate").await;

    // Ten bytes cut off the end: inside the signature block, the last field.
    let db = govbus_store::Database::connect(&bus.database_url("showcase.db"))
        .await
        .unwrap();
    let cut = sqlx::query(
        "UPDATE showcase_history SET envelope = substr(envelope, 1, length(envelope) - 10) \
         WHERE subject_id = $1",
    )
    .bind(&damaged)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(cut.rows_affected(), 1);

    let mut client = broker.once_only_client().await;
    for fields in [vec![], vec!["date_of_birth".to_string()]] {
        let status = client
            .get_evidence(GetEvidenceRequest {
                fields: fields.clone(),
                ..evidence_request(&damaged, "birth_certificate")
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Internal,
            "fields {fields:?}: {status:?}"
        );
        assert_eq!(status.message(), "stored record is corrupt");
    }
    let answer = client
        .get_evidence(evidence_request(&intact, "birth_certificate"))
        .await
        .unwrap()
        .into_inner();
    let record = answer.evidence[0].record.as_ref().unwrap();
    govbus_security::verify(record, &bus.ca_der()).expect("the intact record verifies");

    adapter.stop().await;
    broker.stop().await;
}
