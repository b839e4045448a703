//! A broker stopped in the middle of a stream picks up where it left off:
//! nothing lost, nothing stored twice.

use std::time::Duration;

use govbus_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_mid_stream_neither_loses_nor_duplicates() {
    let bus = TestBus::start();
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let mut config = bus.broker_config("showcase.db");
    // Small batches so the stop lands between commits.
    config.batch_max = 10;

    const TOTAL: u32 = 400;
    let mut client = adapter.adapter_client().await;
    let publisher = tokio::spawn({
        async move {
            for chunk in 0..TOTAL / 20 {
                let records = (0..20)
                    .map(|i| birth_record(&pinfl(chunk * 20 + i), 1, "Stream"))
                    .collect();
                client
                    .publish(govbus_proto::v1::PublishRequest { records })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let broker = bus.broker(config.clone()).await;
    eventually("some records ingested", || async {
        showcase.count().await.unwrap() >= 50
    })
    .await;
    broker.stop().await;
    let at_stop = showcase.count().await.unwrap();
    publisher.await.unwrap();
    assert!(
        at_stop < i64::from(TOTAL),
        "the stop should land mid-stream ({at_stop})"
    );

    let broker = bus.broker(config).await;
    eventually("every record ingested", || async {
        showcase.count().await.unwrap() == i64::from(TOTAL)
    })
    .await;
    for n in [0, 199, 399] {
        let subject = pinfl(n);
        let key = birth_record(&subject, 1, "x").record_key;
        assert_eq!(
            showcase
                .history_len("birth_certificate", &subject, &key)
                .await
                .unwrap(),
            1,
            "record {n} stored once"
        );
    }
    let history = showcase.history_count().await.unwrap();
    assert_eq!(history, i64::from(TOTAL));

    adapter.stop().await;
    broker.stop().await;
}
