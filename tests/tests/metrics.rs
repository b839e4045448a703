//! Prometheus metrics on every service: RPC counts and latency histograms by
//! method and code, records published / ingested / dead-lettered, the audit
//! chain's length.

use std::net::SocketAddr;

use govbus_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_expose_prometheus_metrics() {
    let bus = TestBus::start();
    let any_port = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut broker_config = bus.broker_config("showcase.db");
    broker_config.metrics_listen = any_port;
    let broker = bus.broker(broker_config).await;
    let mut adapter_config = bus.adapter_config(FHDY);
    adapter_config.metrics_listen = any_port;
    let adapter = bus.adapter(adapter_config).await;

    let subject = pinfl(1700);
    publish(&adapter, vec![birth_record(&subject, 1, "Counted")])
        .await
        .unwrap();
    wait_for_records(&broker, &subject, "birth_certificate").await;
    let _ = broker
        .once_only_client_as(STRANGER)
        .await
        .get_evidence(evidence_request(&subject, "birth_certificate"))
        .await;
    poison_birth_topic(&bus, &subject).await;

    let text = scrape(broker.metrics.expect("broker metrics endpoint")).await;
    for expected in [
        r#"govbus_rpc_requests_total{service="govbus.v1.OnceOnly",method="GetEvidence",code="Ok"}"#,
        r#"govbus_rpc_requests_total{service="govbus.v1.OnceOnly",method="GetEvidence",code="PermissionDenied"} 1"#,
        r#"govbus_rpc_duration_seconds_bucket{service="govbus.v1.OnceOnly",method="GetEvidence",le="0.005"}"#,
        r#"govbus_records_ingested_total{outcome="applied"} 1"#,
        r#"govbus_records_dead_lettered_total{topic="govbus.records.birth_certificate"} 1"#,
        r#"govbus_audit_chain_length{chain="broker"}"#,
        r#"govbus_records_published_total{record_type="birth_certificate",outcome="accepted"} 1"#,
        r#"govbus_rpc_requests_total{service="govbus.v1.AgencyAdapter",method="Publish",code="Ok"} 1"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    // One process, one registry: the adapter's endpoint serves the same text.
    let adapter_text = scrape(adapter.metrics.expect("adapter metrics endpoint")).await;
    assert!(adapter_text.contains("govbus_records_published_total"));

    adapter.stop().await;
    broker.stop().await;
}
