//! Operator commands against a running bus: status, dead letters, trace-of.

use govbus_cli::{inspect::Connection, operate};
use govbus_proto::v1::GetEvidenceRequest;
use govbus_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_health_dead_letters_and_what_happened_to_a_request() {
    let bus = TestBus::start();
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let subject = pinfl(1800);
    publish(&adapter, vec![birth_record(&subject, 1, "Ops")])
        .await
        .unwrap();
    wait_for_records(&broker, &subject, "birth_certificate").await;
    poison_birth_topic(&bus, &subject).await;

    let kafka = bus.kafka().bootstrap_servers;
    let letters = operate::dead_letters(&kafka).unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.starts_with("envelope does not decode"),
        "{:?}",
        letters[0]
    );
    assert!(
        letters[0]
            .source
            .starts_with("govbus.records.birth_certificate/"),
        "{:?}",
        letters[0]
    );
    assert_eq!(letters[0].key, subject);

    let certs = bus.certs_dir();
    let services = vec![
        (
            "broker".to_string(),
            Connection::from_certs_dir(broker.addr.to_string(), &certs, "egov.portal"),
        ),
        (
            "adapter".to_string(),
            Connection::from_certs_dir(adapter.addr.to_string(), &certs, "egov.portal"),
        ),
    ];
    let lines = operate::status(&services, Some(&kafka), "govbus-broker")
        .await
        .unwrap();
    assert!(
        lines[0].starts_with("broker") && lines[0].ends_with("Serving"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("adapter") && lines[1].ends_with("Serving"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("kafka govbus.deadletter: 1 messages in ")),
        "{lines:?}"
    );

    // Once the broker's group has committed, the birth topic shows no lag.
    eventually("the broker's group catches up", || async {
        operate::status(&services, Some(&kafka), "govbus-broker")
            .await
            .unwrap()
            .iter()
            .any(|l| {
                l.starts_with("kafka govbus.records.birth_certificate: 2 messages")
                    && l.ends_with(", lag 0 for group govbus-broker")
            })
    })
    .await;

    let mut request = tonic::Request::new(GetEvidenceRequest {
        request_id: "portal-7f3a".into(),
        ..evidence_request(&subject, "birth_certificate")
    });
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    broker
        .once_only_client()
        .await
        .get_evidence(request)
        .await
        .unwrap();
    let lines = operate::trace_of(&bus.database_url("showcase.db"), "portal-7f3a")
        .await
        .unwrap();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("-> allowed") && lines[0].ends_with(&format!("trace {trace}")),
        "{lines:?}"
    );

    adapter.stop().await;
    broker.stop().await;
}
