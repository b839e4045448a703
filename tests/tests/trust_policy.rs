//! Access policy and consent: deny by default, precise refusals, exactly the
//! granted fields in answers (which still verify), and live policy reloads.

use std::time::Duration;

use govbus_proto::{
    records::BirthCertificate,
    v1::{
        ConsentScope, GetEvidenceRequest, GrantConsentRequest, RevokeConsentRequest,
        consents_client::ConsentsClient,
    },
};
use govbus_tests::*;
use prost::Message;
use tonic::Code;

fn denied(
    result: Result<tonic::Response<govbus_proto::v1::GetEvidenceResponse>, tonic::Status>,
) -> String {
    let status = result.expect_err("the request must be refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    status.message().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_decide_type_purpose_and_fields() {
    let bus = TestBus::start();
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let subject = pinfl(800);
    publish(&adapter, vec![birth_record(&subject, 1, "Madina")])
        .await
        .unwrap();
    wait_for_records(&broker, &subject, "birth_certificate").await;

    let mut tax = broker.once_only_client_as(TAX).await;
    let request = |purpose: &str, fields: &[&str]| GetEvidenceRequest {
        purpose: purpose.into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        ..evidence_request(&subject, "birth_certificate")
    };

    let msg = denied(
        tax.get_evidence(evidence_request(&subject, "marriage_certificate"))
            .await,
    );
    assert_eq!(
        msg,
        format!("no grant allows {TAX} to read marriage_certificate")
    );
    let msg = denied(tax.get_evidence(request("test-service-001", &[])).await);
    assert!(
        msg.contains("purpose \"test-service-001\" is not allowed")
            && msg.contains("allowed purposes: tax-deduction-children"),
        "{msg}"
    );
    let msg = denied(
        tax.get_evidence(request(
            "tax-deduction-children",
            &["date_of_birth", "mother"],
        ))
        .await,
    );
    assert!(msg.ends_with("for this purpose: mother"), "{msg}");
    let msg = denied(
        broker
            .once_only_client_as(STRANGER)
            .await
            .get_evidence(request("test-service-001", &[]))
            .await,
    );
    assert!(msg.contains("no grant allows"), "{msg}");
    // Refused requests do not reveal whether records exist.
    let msg = denied(
        tax.get_evidence(GetEvidenceRequest {
            subject_id: pinfl(801),
            ..request("x", &[])
        })
        .await,
    );
    assert!(msg.contains("not allowed"), "{msg}");

    // The allowed path: exactly the granted fields, and the copy still verifies.
    let answer = tax
        .get_evidence(request("tax-deduction-children", &[]))
        .await
        .unwrap()
        .into_inner();
    let record = answer.evidence[0].record.as_ref().unwrap();
    let payload =
        BirthCertificate::decode(record.payload.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!(payload.date_of_birth, "1990-05-15");
    assert_eq!(payload.child.as_ref().unwrap().first_name, "Madina");
    assert_eq!(
        payload,
        BirthCertificate {
            child: payload.child.clone(),
            date_of_birth: payload.date_of_birth.clone(),
            ..Default::default()
        },
        "nothing beyond the grant"
    );
    let signature = record.signature.as_ref().unwrap();
    assert_eq!(
        signature.field_salts.len(),
        2,
        "salts of withheld fields are withheld too"
    );
    govbus_security::verify(record, &bus.ca_der()).expect("the minimised copy verifies");

    // Asking for less than the grant gives less.
    let answer = tax
        .get_evidence(request("tax-deduction-children", &["date_of_birth"]))
        .await
        .unwrap()
        .into_inner();
    let payload = BirthCertificate::decode(
        answer.evidence[0]
            .record
            .as_ref()
            .unwrap()
            .payload
            .as_ref()
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    assert!(payload.child.is_none() && payload.date_of_birth == "1990-05-15");

    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_is_needed_where_the_policy_says_so() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let interior = bus.adapter(bus.adapter_config(INTERIOR)).await;
    let subject = pinfl(810);
    publish(&interior, vec![address_record(&subject)])
        .await
        .unwrap();

    let mut portal = broker.once_only_client().await;
    let ask = || evidence_request(&subject, "address_registration");
    let msg = denied(portal.get_evidence(ask()).await);
    assert_eq!(
        msg,
        format!(
            "consent of subject {subject} for {PORTAL} to read address_registration for purpose \"test-service-001\" is missing"
        )
    );

    let scope = ConsentScope {
        subject_id: subject.clone(),
        consumer: PORTAL.into(),
        record_type: "address_registration".into(),
        purpose: "test-service-001".into(),
    };
    let in_secs = |s: i64| {
        Some(govbus_core::time::micros_to_timestamp(
            govbus_core::time::now_micros() + s * 1_000_000,
        ))
    };

    // Only the portal manages consents.
    let mut not_portal = ConsentsClient::new(broker.channel_as(&id(TAX)).await);
    let status = not_portal
        .grant_consent(GrantConsentRequest {
            scope: Some(scope.clone()),
            expires_at: in_secs(3600),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains(&format!("only {PORTAL} manages consents")),
        "{}",
        status.message()
    );
    assert!(denied(portal.get_evidence(ask()).await).ends_with("is missing"));

    let mut consents = ConsentsClient::new(broker.channel().await);
    let status = consents
        .grant_consent(GrantConsentRequest {
            scope: Some(scope.clone()),
            expires_at: in_secs(-1),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // A purpose no evidence request could name (and PostgreSQL could not store).
    let status = consents
        .grant_consent(GrantConsentRequest {
            scope: Some(ConsentScope {
                purpose: "test-service-001\0".into(),
                ..scope.clone()
            }),
            expires_at: in_secs(3600),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "scope.purpose: required, at most 128 printable characters"
    );
    consents
        .grant_consent(GrantConsentRequest {
            scope: Some(scope.clone()),
            expires_at: in_secs(3600),
        })
        .await
        .unwrap();
    let answer = wait_for_evidence(&broker, ask(), |r| !r.evidence.is_empty()).await;
    assert_eq!(answer.evidence.len(), 1);

    consents
        .revoke_consent(RevokeConsentRequest {
            scope: Some(scope.clone()),
        })
        .await
        .unwrap();
    assert!(denied(portal.get_evidence(ask()).await).ends_with("is revoked"));
    let status = consents
        .revoke_consent(RevokeConsentRequest {
            scope: Some(scope.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    consents
        .grant_consent(GrantConsentRequest {
            scope: Some(scope.clone()),
            expires_at: in_secs(1),
        })
        .await
        .unwrap();
    portal.get_evidence(ask()).await.expect("granted again");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(denied(portal.get_evidence(ask()).await).ends_with("is expired"));

    interior.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_reloads_and_a_broken_one_is_refused() {
    let bus = TestBus::start();
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let subject = pinfl(820);
    publish(&adapter, vec![birth_record(&subject, 1, "Otabek")])
        .await
        .unwrap();
    wait_for_records(&broker, &subject, "birth_certificate").await;
    let mut stranger = broker.once_only_client_as(STRANGER).await;
    let ask = || GetEvidenceRequest {
        purpose: "sport-licence".into(),
        ..evidence_request(&subject, "birth_certificate")
    };
    denied(stranger.get_evidence(ask()).await);

    let grant = format!(
        "{TEST_POLICY}\n[[grant]]\nconsumer = \"{STRANGER}\"\nrecord_type = \"birth_certificate\"\npurposes = [\"sport-licence\"]\nfields = [\"date_of_birth\"]\n"
    );
    std::fs::write(bus.policy_path(), &grant).unwrap();
    let mut allowed = false;
    for _ in 0..100 {
        if stranger.get_evidence(ask()).await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(allowed, "the new grant takes effect without a restart");

    // A broken file is refused; the last good policy stays.
    std::fs::write(bus.policy_path(), "[[grant]]\nconsumer = \"nobody\"\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stranger
        .get_evidence(ask())
        .await
        .expect("last good policy still in force");
    // Removing the grant (valid file) takes it away again.
    std::fs::write(bus.policy_path(), TEST_POLICY).unwrap();
    let mut revoked = false;
    for _ in 0..100 {
        if stranger.get_evidence(ask()).await.is_err() {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(revoked);

    adapter.stop().await;
    broker.stop().await;
}
