//! The audit trail: every evidence request leaves one entry; citizens (via
//! the portal) and agency auditors see theirs, page by page; any alteration,
//! deletion or insertion is found by `govbus audit verify`.

use govbus_proto::v1::{GetEvidenceRequest, ListAccessesRequest, list_accesses_request::Scope};
use govbus_tests::*;
use tonic::Code;

async fn accesses(
    broker: &Running,
    as_identity: &str,
    scope: Scope,
    page_size: u32,
    page_token: String,
) -> Result<govbus_proto::v1::ListAccessesResponse, tonic::Status> {
    broker
        .once_only_client_as(as_identity)
        .await
        .list_accesses(ListAccessesRequest {
            scope: Some(scope),
            page_size,
            page_token,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_audited_and_citizens_see_theirs() {
    let bus = TestBus::start();
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let subject = pinfl(1400);
    publish(&adapter, vec![birth_record(&subject, 1, "Audit")])
        .await
        .unwrap();
    wait_for_records(&broker, &subject, "birth_certificate").await;

    // One allowed (tax, minimised), one denied (tax, wrong purpose), one
    // not found (portal, marriage), one invalid (portal, no purpose), and one
    // about somebody else.
    let mut tax = broker.once_only_client_as(TAX).await;
    tax.get_evidence(GetEvidenceRequest {
        purpose: "tax-deduction-children".into(),
        request_id: "req-allowed".into(),
        ..evidence_request(&subject, "birth_certificate")
    })
    .await
    .unwrap();
    tax.get_evidence(GetEvidenceRequest {
        purpose: "curiosity".into(),
        request_id: "req-denied".into(),
        ..evidence_request(&subject, "birth_certificate")
    })
    .await
    .unwrap_err();
    let mut portal = broker.once_only_client().await;
    portal
        .get_evidence(GetEvidenceRequest {
            request_id: "req-missing".into(),
            ..evidence_request(&subject, "marriage_certificate")
        })
        .await
        .unwrap_err();
    portal
        .get_evidence(GetEvidenceRequest {
            purpose: String::new(),
            request_id: "req-invalid".into(),
            ..evidence_request(&subject, "birth_certificate")
        })
        .await
        .unwrap_err();
    portal
        .get_evidence(evidence_request(&pinfl(1401), "birth_certificate"))
        .await
        .unwrap_err();

    // The citizen's view through the portal, newest first, two per page.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = accesses(&broker, PORTAL, Scope::SubjectId(subject.clone()), 2, token)
            .await
            .unwrap();
        assert!(page.accesses.len() <= 2);
        seen.extend(page.accesses);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let summary: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|a| {
            (
                a.request_id.as_str(),
                a.decision.as_str(),
                a.consumer.as_str(),
            )
        })
        .collect();
    // The wait_for_records poll above is the oldest entries; ours are the newest five minus the other subject's.
    assert_eq!(
        &summary[..4],
        &[
            ("req-invalid", "invalid", PORTAL),
            ("req-missing", "not_found", PORTAL),
            ("req-denied", "denied", TAX),
            ("req-allowed", "allowed", TAX),
        ]
    );
    assert!(
        seen.iter().all(|a| a.subject_id == subject),
        "other subjects are hidden"
    );
    let allowed = &seen[3];
    assert_eq!(
        allowed.fields,
        vec!["child".to_string(), "date_of_birth".to_string()]
    );
    assert_eq!(allowed.purpose, "tax-deduction-children");
    assert!(!allowed.trace_id.is_empty());
    assert!(
        seen[2]
            .reason
            .contains("purpose \"curiosity\" is not allowed"),
        "{}",
        seen[2].reason
    );

    // Only the portal sees a citizen's log; an agency's auditor sees its agency's.
    let status = accesses(
        &broker,
        TAX,
        Scope::SubjectId(subject.clone()),
        0,
        String::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = accesses(&broker, TAX, Scope::Agency("tax".into()), 0, String::new())
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "only the auditor system"
    );
    let tax_audit = accesses(
        &broker,
        TAX_AUDITOR,
        Scope::Agency("tax".into()),
        0,
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(tax_audit.accesses.len(), 2);
    assert!(tax_audit.accesses.iter().all(|a| a.consumer == TAX));
    let status = accesses(
        &broker,
        TAX_AUDITOR,
        Scope::Agency("egov".into()),
        0,
        String::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = accesses(
        &broker,
        PORTAL,
        Scope::SubjectId(subject.clone()),
        0,
        "garbage".into(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    adapter.stop().await;
    broker.stop().await;
    // Entries also reach the Kafka audit topic (the broker drained its publisher on stop).
    assert!(topic_message_count(&bus, govbus_kafka::AUDIT_TOPIC) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_trail_is_found() {
    let bus = TestBus::start();
    let mut config = bus.broker_config("showcase.db");
    config.audit_checkpoint_every = 4;
    let broker = bus.broker(config).await;
    let mut portal = broker.once_only_client().await;
    for n in 0..10 {
        let _ = portal
            .get_evidence(evidence_request(&pinfl(1500 + n), "birth_certificate"))
            .await;
    }
    broker.stop().await;

    let url = bus.database_url("showcase.db");
    let ca = bus.certs_dir().join("ca.pem");
    let verify = || govbus_cli::inspect::verify_audit(&url, &ca);
    assert_eq!(verify().await.unwrap(), 10);
    let pool = open_showcase(&bus, "showcase.db")
        .await
        .database()
        .pool
        .clone();
    let exec = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };

    exec("UPDATE audit_log SET purpose = 'nothing to see' WHERE seq = 6").await;
    let fault = verify().await.unwrap_err().to_string();
    assert!(fault.contains("entry 6 was altered"), "{fault}");
    exec("UPDATE audit_log SET purpose = 'test-service-001' WHERE seq = 6").await;
    assert_eq!(verify().await.unwrap(), 10, "restored");

    // An entry deleted from the middle.
    let saved = sqlx::query("SELECT * FROM audit_log WHERE seq = 3")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(saved.len(), 1);
    exec("DELETE FROM audit_log WHERE seq = 3").await;
    let fault = verify().await.unwrap_err().to_string();
    assert!(fault.contains("entries before 4 were deleted"), "{fault}");

    // An entry slipped in where the deleted one was, hashed to look right on
    // its own: its successor no longer follows it.
    exec(
        "INSERT INTO audit_log SELECT chain, 3, at_us, caller, subject_id, record_type, 'forged', fields, decision, reason, request_id, trace_id, records, prev_hash, entry_hash FROM audit_log WHERE seq = 2",
    )
    .await;
    let fault = verify().await.unwrap_err().to_string();
    assert!(fault.contains("entry 3"), "{fault}");

    // Entries deleted from the end: the last signed checkpoint gives it away.
    exec("DELETE FROM audit_log WHERE seq = 3").await;
    exec("DELETE FROM audit_log WHERE seq >= 3").await;
    let fault = verify().await.unwrap_err().to_string();
    assert!(fault.contains("checkpoint at 4"), "{fault}");
}

/// `audit_database_url`: the trail lives in its own database — entries,
/// accesses and verification all there, none in the showcase database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_can_live_in_a_database_of_its_own() {
    let bus = TestBus::start();
    let mut config = bus.broker_config("showcase.db");
    config.audit_database_url = Some(bus.database_url("audit.db"));
    config.audit_checkpoint_every = 2;
    let broker = bus.broker(config).await;
    let subject = pinfl(1600);
    let mut portal = broker.once_only_client().await;
    for n in 0..3 {
        let status = portal
            .get_evidence(GetEvidenceRequest {
                request_id: format!("req-own-{n}"),
                ..evidence_request(&subject, "birth_certificate")
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    let seen = accesses(
        &broker,
        PORTAL,
        Scope::SubjectId(subject),
        10,
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(seen.accesses.len(), 3);
    broker.stop().await;

    let ca = bus.certs_dir().join("ca.pem");
    let audit_url = bus.database_url("audit.db");
    assert_eq!(
        govbus_cli::inspect::verify_audit(&audit_url, &ca)
            .await
            .unwrap(),
        3
    );
    let showcase = open_showcase(&bus, "showcase.db").await;
    let in_showcase: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&showcase.database().pool)
        .await
        .unwrap();
    assert_eq!(
        in_showcase, 0,
        "nothing of the trail in the showcase database"
    );
}
