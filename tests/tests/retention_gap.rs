//! Records that Kafka's retention removed before the broker read them are
//! lost to the showcase; the broker must say so loudly, not carry on as if
//! nothing happened. The embedded cluster keeps only the newest ~5 MB of a
//! partition, which makes the case easy to produce.

use std::net::SocketAddr;

use govbus_proto::v1::PublishRequest;
use govbus_tests::*;

const RESETS: &str = r#"govbus_consumer_offset_resets_total{consumer="ingest",topic="govbus.records.birth_certificate"}"#;
const SKIPPED: &str = r#"govbus_consumer_skipped_offsets_total{consumer="ingest",topic="govbus.records.birth_certificate"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_removed_before_ingest_are_reported() {
    if wants_tansu() || wants_apache() {
        // tansu keeps record topics without a size limit (retention.ms=-1);
        // Apache Kafka removes whole segments, on its retention check's
        // schedule (every 5 minutes by default): nothing falls out of the
        // log within this test on either.
        println!("skipped on tansu and Apache Kafka: nothing leaves their log within the test");
        return;
    }
    let bus = TestBus::start();
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let mut config = bus.broker_config("showcase.db");
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let subject = pinfl(4242);
    let key = birth_record(&subject, 1, "x").record_key;

    // The broker reads version 1, commits its offset and stops.
    let broker = bus.broker(config.clone()).await;
    publish(&adapter, vec![birth_record(&subject, 1, "First")])
        .await
        .unwrap();
    wait_for_records(&broker, &subject, "birth_certificate").await;
    broker.stop().await;

    // While it is down, one citizen's partition gets 20,000 new versions,
    // ~6 MB after compression (salts and proofs do not compress; the
    // cluster kept ~17,000 of them when this was written): it drops the
    // oldest, the broker's next offset among them.
    const LAST: u64 = 20_001;
    let mut client = adapter.adapter_client().await;
    for first in (2..=LAST).step_by(250) {
        let records = (first..(first + 250).min(LAST + 1))
            .map(|version| birth_record(&subject, version, "Later"))
            .collect();
        client.publish(PublishRequest { records }).await.unwrap();
    }

    let broker = bus.broker(config).await;
    let metrics = broker.metrics.expect("broker metrics endpoint");
    eventually("the newest version ingested", || async {
        showcase
            .current("birth_certificate", &subject)
            .await
            .unwrap()
            .first()
            .is_some_and(|stored| stored.record().unwrap().version == LAST)
    })
    .await;
    let stored = showcase
        .history_len("birth_certificate", &subject, &key)
        .await
        .unwrap();
    assert!(
        stored < LAST as i64,
        "the scenario needs records lost to retention; all {stored} were stored"
    );
    // Each version is one offset: what the counters say was skipped is
    // exactly what the showcase lacks.
    let text = scrape(metrics).await;
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert!(counter(RESETS) >= 1.0);
    assert_eq!(counter(SKIPPED) as i64, LAST as i64 - stored);

    adapter.stop().await;
    broker.stop().await;
}
