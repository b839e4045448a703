//! A showcase rebuilt from the topics alone is identical to the live one.

use govbus_proto::v1::RecordStatus;
use govbus_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_showcase_has_the_live_digest() {
    let bus = TestBus::start();
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let live = open_showcase(&bus, "showcase.db").await;

    let mut records: Vec<_> = (0..60)
        .map(|n| birth_record(&pinfl(1000 + n), 1, "Replay"))
        .collect();
    records.push(birth_record(&pinfl(1000), 2, "Newer"));
    records.push(birth_record(
        &pinfl(1001),
        1,
        "Equal version, other content",
    ));
    let mut revoked = birth_record(&pinfl(1002), 3, "Revoked");
    revoked.status = RecordStatus::Revoked as i32;
    records.push(revoked);
    publish(&adapter, records).await.unwrap();
    // A record the broker refuses, which must stay out of both showcases.
    produce_raw(
        &bus,
        "govbus.records.birth_certificate",
        &pinfl(1003),
        b"not an envelope",
    )
    .await;
    eventually("all versions ingested", || async {
        live.digest().await.unwrap().history_records == 62
    })
    .await;
    let mut last = birth_record(&pinfl(1003), 1, "Last");
    last.record_key = "last".into();
    publish(&adapter, vec![last]).await.unwrap();
    // pinfl(1003) already has its "Replay" certificate: "last" is its second.
    wait_for_evidence(
        &broker,
        evidence_request(&pinfl(1003), "birth_certificate"),
        |r| r.evidence.len() == 2,
    )
    .await;

    let mut config = bus.broker_config("showcase.db");
    config.batch_max = 7;
    let into = bus.database_url("rebuilt.db");
    let report = govbus_broker::rebuild_showcase(&config, &into)
        .await
        .unwrap();
    assert_eq!(report.messages, 65);
    assert_eq!(report.refused, 1);
    assert_eq!(report.applied + report.stale, 64);

    let rebuilt = govbus_store::Showcase::open(&into).await.unwrap();
    let (live, rebuilt) = (
        live.digest().await.unwrap(),
        rebuilt.digest().await.unwrap(),
    );
    assert_eq!(live.current_records, 61);
    assert_eq!(live.history_records, 63);
    assert_eq!(rebuilt, live);

    adapter.stop().await;
    broker.stop().await;
}
