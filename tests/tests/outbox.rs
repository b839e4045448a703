//! The database connector: rows an agency writes to its outbox reach the
//! showcase, exactly once across adapter restarts.

use govbus_proto::v1::EvidenceStatus;
use govbus_tests::*;
use sqlx::Row;

const BIRTH_TOPIC: &str = "govbus.records.birth_certificate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_reach_the_showcase_once_across_restarts() {
    let bus = TestBus::start();
    let agency_db = agency_outbox(&bus, "fhdy.db").await;
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let mut config = bus.adapter_config(FHDY);
    config.outbox = Some(bus.outbox_config("fhdy.db"));

    for n in 0..20 {
        write_outbox_birth(&agency_db, &pinfl(100 + n), 1, "active").await;
    }
    // A row the bus cannot carry: it is set aside with its reason, not retried forever.
    write_outbox_birth(&agency_db, "not-a-pinfl", 1, "active").await;
    write_outbox_birth(&agency_db, &pinfl(120), 1, "active").await;

    let adapter = bus.adapter(config.clone()).await;
    let answer = wait_for_records(&broker, &pinfl(120), "birth_certificate").await;
    assert_eq!(
        answer.evidence[0].record.as_ref().unwrap().source_agency,
        "civil-registry"
    );
    eventually("21 records in the showcase", || async {
        showcase.count().await.unwrap() == 21
    })
    .await;
    let rejected = sqlx::query("SELECT outbox_id, reason FROM govbus_outbox_rejected")
        .fetch_all(&agency_db)
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].get::<i64, _>(0), 21);
    let reason: String = rejected[0].get(1);
    assert!(reason.contains("subject_id"), "{reason}");
    adapter.stop().await;

    // Rows written while the adapter is down, including a revocation.
    write_outbox_birth(&agency_db, &pinfl(100), 2, "revoked").await;
    write_outbox_birth(&agency_db, &pinfl(121), 1, "active").await;
    let adapter = bus.adapter(config).await;
    let answer = wait_for_evidence(
        &broker,
        evidence_request(&pinfl(100), "birth_certificate"),
        |r| r.evidence[0].record.as_ref().unwrap().version == 2,
    )
    .await;
    assert_eq!(answer.evidence[0].status, EvidenceStatus::Revoked as i32);
    eventually("22 records in the showcase", || async {
        showcase.count().await.unwrap() == 22
    })
    .await;

    // Neither skipped nor repeated: every valid row went to Kafka exactly once.
    assert_eq!(topic_message_count(&bus, BIRTH_TOPIC), 23);
    let progress: i64 = sqlx::query_scalar("SELECT last_id FROM govbus_outbox_progress")
        .fetch_one(&agency_db)
        .await
        .unwrap();
    assert_eq!(progress, 24);

    adapter.stop().await;
    broker.stop().await;
}
