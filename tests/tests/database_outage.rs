//! The showcase database going away: evidence queries fail fast with
//! UNAVAILABLE, ingestion pauses without storing offsets, and everything
//! published meanwhile arrives once the database is back.

use std::time::{Duration, Instant};

use govbus_tests::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_pauses_ingestion_and_loses_nothing() {
    let bus = TestBus::start();
    if postgres_admin_url().is_none() {
        // Runs in the PostgreSQL pass of `make test` (TEST_POSTGRES_URL).
        println!("needs a PostgreSQL server (TEST_POSTGRES_URL): SQLite has none to take away");
        return;
    }
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    publish(&adapter, vec![birth_record(&pinfl(1200), 1, "Before")])
        .await
        .unwrap();
    wait_for_records(&broker, &pinfl(1200), "birth_certificate").await;

    bus.set_database_available("showcase.db", false).unwrap();
    let mut client = broker.once_only_client().await;
    let started = Instant::now();
    let status = client
        .get_evidence(evidence_request(&pinfl(1200), "birth_certificate"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Whichever part noticed first, the caller learns nothing internal.
    assert!(
        [
            "showcase unavailable",
            "audit trail unavailable; nothing was released"
        ]
        .contains(&status.message()),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast: {:?}",
        started.elapsed()
    );

    // Published while the database is away: accepted by Kafka, waiting there.
    let records = (0..100)
        .map(|n| birth_record(&pinfl(1201 + n), 1, "During"))
        .collect();
    publish(&adapter, records).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    bus.set_database_available("showcase.db", true).unwrap();
    let showcase = {
        drop(showcase);
        open_showcase(&bus, "showcase.db").await
    };
    eventually(
        "everything published during the outage is stored",
        || async { showcase.count().await.unwrap_or(0) == 101 },
    )
    .await;
    wait_for_records(&broker, &pinfl(1300), "birth_certificate").await;

    adapter.stop().await;
    broker.stop().await;
}
