//! A broker stopped in the middle of a stream picks up where it left off:
//! nothing lost, nothing stored twice.

use std::{ops::Range, time::Duration};

use govbus_proto::v1::{PublishRequest, agency_adapter_client::AgencyAdapterClient};
use govbus_tests::*;
use tonic::transport::Channel;

const TOTAL: u32 = 400;
const CHUNK: u32 = 20;

/// Publishes the chunks `chunks` of the stream (CHUNK records each, record
/// n of chunk c being citizen c × CHUNK + n), a little apart, so that the
/// broker consumes while they arrive.
async fn publish_chunks(client: &mut AgencyAdapterClient<Channel>, chunks: Range<u32>) {
    for chunk in chunks {
        let records = (0..CHUNK)
            .map(|i| birth_record(&pinfl(chunk * CHUNK + i), 1, "Stream"))
            .collect();
        client.publish(PublishRequest { records }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_mid_stream_neither_loses_nor_duplicates() {
    let bus = TestBus::start();
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let mut config = bus.broker_config("showcase.db");
    // Small batches so the stop lands between commits.
    config.batch_max = 10;

    // The first half is published while the broker runs, the second only
    // once it has stopped, so the restarted broker must resume from the
    // offsets the first one stored. (Publishing on a timer alone raced the
    // consumer group's join: when the join took longer than the whole
    // stream, the first broker ingested all of it before its stop.)
    let half = TOTAL / CHUNK / 2;
    let (stopped, broker_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut client = adapter.adapter_client().await;
    let publisher = tokio::spawn(async move {
        publish_chunks(&mut client, 0..half).await;
        broker_stopped.await.unwrap();
        publish_chunks(&mut client, half..TOTAL / CHUNK).await;
    });

    let broker = bus.broker(config.clone()).await;
    eventually("some records ingested", || async {
        showcase.count().await.unwrap() >= 50
    })
    .await;
    broker.stop().await;
    let at_stop = showcase.count().await.unwrap();
    stopped.send(()).unwrap();
    publisher.await.unwrap();
    assert!(
        (50..=i64::from(TOTAL / 2)).contains(&at_stop),
        "the first broker stored part of the stream ({at_stop})"
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

/// A broker that starts behind defers the syncs of its commits (every batch
/// it reads is full) and still stores the offsets of the last one once the
/// stream stops — synced on its own if no later commit did it — so its
/// group ends at the end of the topic with every record stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_behind_stores_its_last_offsets_once_they_are_synced() {
    let bus = TestBus::start();
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let mut client = adapter.adapter_client().await;
    // Published before the broker starts: a multiple of its batches, all
    // waiting, so the last batch read is usually full too and its offsets
    // wait for a sync of their own (with the lone sync in `Ingestor::write`
    // taken out, this test fails).
    publish_chunks(&mut client, 0..TOTAL / CHUNK).await;

    let showcase = open_showcase(&bus, "showcase.db").await;
    let mut config = bus.broker_config("showcase.db");
    config.batch_max = 10;
    let broker = bus.broker(config.clone()).await;
    eventually("every record ingested", || async {
        showcase.count().await.unwrap() == i64::from(TOTAL)
    })
    .await;
    eventually("the broker's group at the end of the topic", || async {
        group_is_at_end(
            &bus,
            &config.group_id,
            &["govbus.records.birth_certificate"],
        )
    })
    .await;
    assert_eq!(showcase.history_count().await.unwrap(), i64::from(TOTAL));

    adapter.stop().await;
    broker.stop().await;
}
