//! The once-only path end to end: adapter → Kafka → broker → evidence.

use govbus_proto::v1::{EvidenceStatus, PublishOutcome};
use govbus_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_record_reads_back_byte_equal_with_provenance() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;

    let subject = pinfl(1);
    let mut record = birth_record(&subject, 1, "Aziz");
    // Whatever a caller claims as source is replaced by the adapter's identity.
    record.source_agency = "someone-else".into();
    let sent_payload = record.payload.clone().unwrap();

    let reply = publish(&adapter, vec![record])
        .await
        .expect("publish succeeds");
    assert_eq!(reply.results.len(), 1);
    let result = &reply.results[0];
    assert_eq!(
        result.outcome,
        PublishOutcome::Accepted as i32,
        "{result:?}"
    );
    assert_eq!(result.topic, "govbus.records.birth_certificate");
    assert!(result.offset >= 0);
    let id = uuid::Uuid::parse_str(&result.record_id).expect("assigned id is a uuid");
    assert_eq!(id.get_version_num(), 7);

    let answer = wait_for_records(&broker, &subject, "birth_certificate").await;
    assert!(!answer.request_id.is_empty(), "a request id is assigned");
    assert!(answer.showcase_as_of.is_some());
    assert_eq!(answer.evidence.len(), 1);
    let evidence = &answer.evidence[0];
    assert_eq!(evidence.status, EvidenceStatus::Valid as i32);
    let got = evidence.record.as_ref().unwrap();
    assert_eq!(
        got.payload.as_ref().unwrap(),
        &sent_payload,
        "payload byte-equal"
    );
    assert_eq!(got.record_id, result.record_id);
    assert_eq!(got.source_agency, "civil-registry");
    assert_eq!(got.source_system, "fhdy");
    let verified = govbus_security::verify(got, &bus.ca_der()).expect("evidence verifies offline");
    assert_eq!(verified.signer, govbus_tests::id(FHDY));
    let provenance = evidence.provenance.as_ref().unwrap();
    assert_eq!(provenance.topic, result.topic);
    assert_eq!(provenance.partition, result.partition);
    assert_eq!(provenance.offset, result.offset);
    assert_eq!(provenance.source_agency, "civil-registry");
    assert_eq!(provenance.source_system, "fhdy");
    // Released whole, the record is the envelope the showcase holds.
    let stored = open_showcase(&bus, "showcase.db")
        .await
        .current("birth_certificate", &subject)
        .await
        .unwrap();
    assert_eq!(prost::Message::encode_to_vec(got), stored[0].envelope);

    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_continues_into_kafka_headers() {
    let bus = TestBus::start();
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let subject = pinfl(2);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";

    let mut request = tonic::Request::new(govbus_proto::v1::PublishRequest {
        records: vec![birth_record(&subject, 1, "Aziz")],
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    adapter
        .adapter_client()
        .await
        .publish(request)
        .await
        .unwrap();

    let messages = read_topic(&bus, "govbus.records.birth_certificate");
    assert_eq!(messages.len(), 1);
    let (key, headers) = &messages[0];
    assert_eq!(key, &subject, "keyed by subject");
    let traceparent = headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
        .expect("traceparent header");
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent} does not continue trace {trace_id}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "the adapter's own span is the parent, not the caller's"
    );
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "govbus-record-type" && v == "birth_certificate")
    );

    adapter.stop().await;
}
