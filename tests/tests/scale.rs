//! Two broker replicas in one consumer group share the partitions and one
//! showcase: rebalances while ingesting lose nothing and store nothing twice,
//! and either replica answers.

use std::time::Duration;

use govbus_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_stream_through_rebalances() {
    let bus = TestBus::start();
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let mut config = bus.broker_config("showcase.db");
    config.batch_max = 10;

    const TOTAL: u32 = 600;
    let mut client = adapter.adapter_client().await;
    let publisher = tokio::spawn(async move {
        for chunk in 0..TOTAL / 20 {
            let records = (0..20)
                .map(|i| birth_record(&pinfl(chunk * 20 + i), 1, "Scale"))
                .collect();
            client
                .publish(govbus_proto::v1::PublishRequest { records })
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });

    // Replicas sharing one database keep audit chains of their own.
    let replica = |n: u32| {
        let mut c = config.clone();
        c.audit_chain = format!("broker-{n}");
        c
    };
    let first = bus.broker(replica(1)).await;
    eventually("the first replica ingests", || async {
        showcase.count().await.unwrap() >= 50
    })
    .await;
    // A second replica joins: the group rebalances while records flow.
    let second = bus.broker(replica(2)).await;
    eventually(
        "the second replica takes partitions and ingests",
        || async { showcase.count().await.unwrap() >= 250 },
    )
    .await;
    // The first leaves mid-stream: its partitions move to the second.
    first.stop().await;
    publisher.await.unwrap();
    eventually("every record ingested", || async {
        showcase.count().await.unwrap() == i64::from(TOTAL)
    })
    .await;
    let history = showcase.history_count().await.unwrap();
    assert_eq!(history, i64::from(TOTAL), "nothing stored twice");

    // Either replica answers from the shared showcase: the remaining one,
    // and a fresh one that joins afterwards.
    let third = bus.broker(replica(3)).await;
    for replica in [&second, &third] {
        let answer = wait_for_records(replica, &pinfl(TOTAL - 1), "birth_certificate").await;
        assert_eq!(answer.evidence.len(), 1);
    }

    third.stop().await;
    second.stop().await;
    adapter.stop().await;
}
