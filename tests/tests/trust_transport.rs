//! mTLS: only certificates issued by the bus CA, valid now and made for
//! client authentication (not a record signing certificate) get in; the
//! caller is who the certificate says, whatever the request claims.

use govbus_proto::v1::PublishOutcome;
use govbus_security::pki::{CertificateAuthority, LeafRequest, Usage};
use govbus_tests::*;
use tonic::Code;

const BIRTH_TOPIC: &str = "govbus.records.birth_certificate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_client_certificates_from_the_bus_ca_get_in() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;

    let good = bus.odd_certificate(PORTAL, |_| {});
    broker
        .try_call_with(Some(&good))
        .await
        .expect("a valid certificate gets in");

    for service in [&broker, &adapter] {
        let refused = service.try_call_with(None).await.unwrap_err();
        assert!(!refused.is_empty(), "no certificate: {refused}");
    }

    let rogue_ca = CertificateAuthority::generate("rogue CA").unwrap();
    let rogue = rogue_ca.issue(&LeafRequest::new(id(PORTAL))).unwrap();
    let rogue = OddCertificate {
        cert_pem: rogue.cert_pem,
        key_pem: rogue.key_pem,
    };
    assert!(
        broker.try_call_with(Some(&rogue)).await.is_err(),
        "another CA's certificate"
    );

    let expired = bus.odd_certificate(PORTAL, |r| {
        r.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        r.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    });
    assert!(
        broker.try_call_with(Some(&expired)).await.is_err(),
        "expired certificate"
    );

    let not_yet = bus.odd_certificate(PORTAL, |r| {
        r.not_before = time::OffsetDateTime::now_utc() + time::Duration::days(1);
        r.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    });
    assert!(
        broker.try_call_with(Some(&not_yet)).await.is_err(),
        "not yet valid"
    );

    let server_only = bus.odd_certificate(PORTAL, |r| r.usages = vec![Usage::Server]);
    assert!(
        broker.try_call_with(Some(&server_only)).await.is_err(),
        "a certificate not made for client authentication"
    );

    // The system's record signing certificate (Ed25519, document signing)
    // opens no connection: transport and signing keys are apart.
    let signing = bus
        .ca()
        .issue_signing(&LeafRequest::new(id(PORTAL)))
        .unwrap();
    let signing = OddCertificate {
        cert_pem: signing.cert_pem,
        key_pem: signing.key_pem,
    };
    for service in [&broker, &adapter] {
        assert!(
            service.try_call_with(Some(&signing)).await.is_err(),
            "a record signing certificate used for TLS"
        );
    }

    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_the_certificate_not_the_request() {
    let bus = TestBus::start();
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let interior = bus.adapter(bus.adapter_config(INTERIOR)).await;
    let subject = pinfl(700);

    // Someone else's system calling the civil registry's adapter.
    for caller in [PORTAL, INTERIOR] {
        let mut client = govbus_proto::v1::agency_adapter_client::AgencyAdapterClient::new(
            adapter.channel_as(&id(caller)).await,
        );
        let mut request = tonic::Request::new(govbus_proto::v1::PublishRequest {
            records: vec![birth_record(&subject, 1, "Spoof")],
        });
        // Claims in metadata change nothing.
        request
            .metadata_mut()
            .insert("x-govbus-identity", FHDY.parse().unwrap());
        let status = client.publish(request).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status
                .message()
                .contains(&format!("only {FHDY} may publish through this adapter")),
            "{}",
            status.message()
        );
    }

    // The interior ministry's adapter may not publish birth certificates.
    let status = publish(&interior, vec![birth_record(&subject, 1, "Spoof")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(&format!(
            "records[0].record_type: {INTERIOR} may not publish birth_certificate; its owner is {FHDY}"
        )),
        "{}",
        status.message()
    );
    assert_eq!(
        topic_message_count(&bus, BIRTH_TOPIC),
        0,
        "nothing reached Kafka"
    );

    // Source fields in the record are overwritten with the signer's identity.
    let mut record = birth_record(&subject, 1, "Real");
    record.source_agency = "interior".into();
    record.source_system = "address-bureau".into();
    let reply = publish(&adapter, vec![record]).await.unwrap();
    assert_eq!(reply.results[0].outcome, PublishOutcome::Accepted as i32);
    let answer = wait_for_records(&broker, &subject, "birth_certificate").await;
    let stored = answer.evidence[0].record.as_ref().unwrap();
    assert_eq!(
        (stored.source_agency.as_str(), stored.source_system.as_str()),
        ("civil-registry", "fhdy")
    );
    assert_eq!(stored.signature.as_ref().unwrap().signer, FHDY);

    // A system without a grant claiming to be the portal in metadata is still itself.
    let mut client = broker.once_only_client_as(STRANGER).await;
    let mut request = tonic::Request::new(evidence_request(&subject, "birth_certificate"));
    request
        .metadata_mut()
        .insert("x-govbus-identity", PORTAL.parse().unwrap());
    let status = client.get_evidence(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains(&format!("no grant allows {STRANGER}")),
        "{}",
        status.message()
    );

    interior.stop().await;
    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused() {
    let bus = TestBus::start();
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;

    // One record over the payload limit, and a request over the message limit.
    let mut big = birth_record(&pinfl(710), 1, "Big");
    big.payload.as_mut().unwrap().value.resize(600 * 1024, 0);
    let status = publish(&adapter, vec![big]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("records[0].payload: is 614400 bytes; at most 524288 allowed"),
        "{}",
        status.message()
    );

    let mut huge = birth_record(&pinfl(711), 1, "Huge");
    huge.record_key = "k".repeat(17 * 1024 * 1024);
    let status = publish(&adapter, vec![huge]).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );

    assert_eq!(topic_message_count(&bus, BIRTH_TOPIC), 0);
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_above_the_rate_limit_are_refused() {
    let bus = TestBus::start();
    let mut config = bus.adapter_config(FHDY);
    config.rate_limit = govbus_server::RateLimitSettings {
        per_second: 1,
        burst: 3,
    };
    let adapter = bus.adapter(config).await;
    let mut client = adapter.adapter_client().await;
    // Four calls in a few milliseconds: the limiter counts calls before
    // anything else looks at them, so empty batches do.
    let mut codes = Vec::new();
    for _ in 0..4 {
        let status = client
            .publish(govbus_proto::v1::PublishRequest { records: vec![] })
            .await
            .unwrap_err();
        codes.push((status.code(), status.message().to_string()));
    }
    assert!(
        codes[..3].iter().all(|(c, _)| *c == Code::InvalidArgument),
        "{codes:?}"
    );
    assert_eq!(codes[3].0, Code::ResourceExhausted, "{codes:?}");
    assert!(
        codes[3]
            .1
            .contains(&format!("rate limit for {FHDY} exceeded")),
        "{}",
        codes[3].1
    );
    // Other identities have their own budget.
    let status = govbus_proto::v1::agency_adapter_client::AgencyAdapterClient::new(
        adapter.channel_as(&id(PORTAL)).await,
    )
    .publish(govbus_proto::v1::PublishRequest { records: vec![] })
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_an_explicit_development_switch() {
    let bus = TestBus::start();
    let mut config = bus.broker_config("showcase.db");
    config.insecure_plaintext = Some(govbus_server::PlaintextSettings {
        assume_caller: id(TAX),
    });
    let broker = bus.broker(config).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", broker.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = govbus_proto::v1::once_only_client::OnceOnlyClient::new(channel);
    // Every caller is the configured identity: here the tax committee, which
    // has no grant on marriage certificates.
    let status = client
        .get_evidence(evidence_request(&pinfl(720), "marriage_certificate"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(&format!("no grant allows {TAX}")),
        "{}",
        status.message()
    );
    broker.stop().await;
}
