//! `govbus run`'s demo: the interior ministry subscribes to the civil
//! registry's marriages and registers the new surnames, which a once-only
//! query of its address registration then shows.

use std::{net::SocketAddr, time::Duration};

use govbus_cli::demo::{Demo, DemoConfig};
use govbus_proto::{
    records::AddressRegistration,
    v1::{
        ConsentScope, GrantConsentRequest, consents_client::ConsentsClient,
        once_only_client::OnceOnlyClient,
    },
};
use govbus_security::{TlsMaterial, pki};
use govbus_tests::*;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interior_ministry_registers_new_surnames_from_subscribed_marriages() {
    let dir = tempfile::tempdir().unwrap();
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    // `make run` against a cluster of its own (GOVBUS_KAFKA__BOOTSTRAP_SERVERS):
    // in the Apache Kafka pass, the demo creates its topics there.
    let apache = wants_apache().then(|| KafkaUnderTest::start(dir.path(), &[]));
    let kafka = govbus_kafka::KafkaSettings {
        bootstrap_servers: apache
            .as_ref()
            .map(KafkaUnderTest::bootstrap_servers)
            .unwrap_or_default(),
        ..govbus_kafka::KafkaSettings::default()
    };
    let demo = Demo::build(DemoConfig {
        kafka,
        data_dir: dir.path().join("demo"),
        certs_dir: dir.path().join("certs"),
        citizens: 300,
        broker_listen: any_port,
        civil_registry_listen: any_port,
        interior_listen: any_port,
        metrics_listen: any_port,
        ..DemoConfig::default()
    })
    .await
    .expect("demo builds");
    let (subject, surname) = demo
        .renamed_subject()
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .expect("the demo population has a spouse who takes a new surname");
    let broker = format!("https://{}", demo.endpoints()[1].1);
    let tls = TlsMaterial::load(&pki::settings_in(&dir.path().join("certs"), &id(PORTAL)))
        .expect("portal certificate");
    let channel = Channel::from_shared(broker)
        .unwrap()
        .tls_config(tls.client_config("localhost"))
        .unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(demo.run(stop.clone()));
    let channel = channel.connect().await.expect("broker reachable");

    // Address registrations need the citizen's consent for the portal.
    ConsentsClient::new(channel.clone())
        .grant_consent(GrantConsentRequest {
            scope: Some(ConsentScope {
                subject_id: subject.clone(),
                consumer: PORTAL.into(),
                record_type: "address_registration".into(),
                purpose: "demo".into(),
            }),
            expires_at: Some(govbus_core::time::micros_to_timestamp(
                govbus_core::time::now_micros() + 3_600_000_000,
            )),
        })
        .await
        .expect("consent granted");

    let mut once_only = OnceOnlyClient::new(channel);
    let mut request = evidence_request(&subject, "address_registration");
    request.purpose = "demo".into();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(reply) = once_only.get_evidence(request.clone()).await
            && let Some(record) = reply
                .into_inner()
                .evidence
                .first()
                .and_then(|e| e.record.clone())
        {
            let registration =
                AddressRegistration::decode(record.payload.unwrap().value.as_slice()).unwrap();
            seen = registration
                .resident
                .map(|r| r.last_name)
                .unwrap_or_default();
            if seen == surname {
                assert!(record.version >= 2, "a new version of the registration");
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the address registration of {subject} still says {seen:?}, not {surname:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    running.await.unwrap().expect("demo stops cleanly");
}
