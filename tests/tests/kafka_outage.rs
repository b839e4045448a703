//! Kafka unavailable: the adapter says per record that Kafka did not take it
//! (never a false "accepted"), the broker keeps answering from the showcase,
//! and both recover when Kafka returns — with nothing lost or stored twice.

use std::time::Duration;

use govbus_proto::v1::{PublishOutcome, PublishRequest};
use govbus_tests::*;
use rdkafka::types::RDKafkaRespErr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_stopped_and_restarted_under_load_loses_nothing() {
    let bus = TestBus::start();
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    let showcase = open_showcase(&bus, "showcase.db").await;

    const TOTAL: u32 = 400;
    let mut client = adapter.adapter_client().await;
    // An agency system that retries what was not accepted, as it must.
    let publisher = tokio::spawn(async move {
        for chunk in 0..TOTAL / 20 {
            let records: Vec<_> = (0..20)
                .map(|i| {
                    let mut r = birth_record(&pinfl(chunk * 20 + i), 1, "Load");
                    r.record_id = uuid::Uuid::now_v7().to_string();
                    r
                })
                .collect();
            loop {
                match client
                    .publish(PublishRequest {
                        records: records.clone(),
                    })
                    .await
                {
                    Ok(reply)
                        if reply
                            .get_ref()
                            .results
                            .iter()
                            .all(|r| r.outcome == PublishOutcome::Accepted as i32) =>
                    {
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    eventually("load flowing", || async {
        showcase.count().await.unwrap() >= 60
    })
    .await;
    bus.cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bus.cluster.broker_up(1).unwrap();
    publisher.await.unwrap();

    eventually("every record ingested", || async {
        showcase.count().await.unwrap() == i64::from(TOTAL)
    })
    .await;
    let history = showcase.history_count().await.unwrap();
    assert_eq!(history, i64::from(TOTAL), "nothing stored twice");

    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reports_failure_while_kafka_is_down_and_recovers() {
    let bus = TestBus::start();
    if skip_timed_out_records_on_tansu() {
        return;
    }
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let mut config = bus.adapter_config(FHDY);
    config
        .kafka
        .client
        .insert("message.timeout.ms".into(), "2000".into());
    let adapter = bus.adapter(config).await;

    let before = pinfl(600);
    publish(&adapter, vec![birth_record(&before, 1, "Sevara")])
        .await
        .unwrap();
    wait_for_records(&broker, &before, "birth_certificate").await;

    bus.cluster.broker_down(1).unwrap();
    let during = pinfl(601);
    let reply = publish(&adapter, vec![birth_record(&during, 1, "Sevara")])
        .await
        .unwrap();
    let result = &reply.results[0];
    assert_eq!(result.outcome, PublishOutcome::Failed as i32, "{result:?}");
    assert!(
        result.error.contains("kafka did not accept the record"),
        "{}",
        result.error
    );
    // The showcase still answers.
    let answer = broker
        .once_only_client()
        .await
        .get_evidence(evidence_request(&before, "birth_certificate"))
        .await
        .unwrap();
    assert_eq!(answer.into_inner().evidence.len(), 1);

    bus.cluster.broker_up(1).unwrap();
    let after = pinfl(602);
    let mut last = None;
    for _ in 0..20 {
        let reply = publish(&adapter, vec![birth_record(&after, 1, "Sevara")])
            .await
            .unwrap();
        last = Some(reply.results[0].clone());
        if reply.results[0].outcome == PublishOutcome::Accepted as i32 {
            break;
        }
    }
    assert_eq!(
        last.as_ref().map(|r| r.outcome),
        Some(PublishOutcome::Accepted as i32),
        "publishing recovers once Kafka is back: {last:?}"
    );
    wait_for_records(&broker, &after, "birth_certificate").await;

    adapter.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_session_the_broker_rejects_is_renewed() {
    let bus = TestBus::start();
    let KafkaUnderTest::Embedded(cluster) = &bus.cluster else {
        println!("needs the embedded cluster, which can inject produce errors");
        return;
    };
    let (broker, adapter) = bus.broker_and_civil_registry().await;
    publish(&adapter, vec![birth_record(&pinfl(610), 1, "First")])
        .await
        .unwrap();

    // The broker answers the next produce with a sequence error: fatal for an
    // idempotent producer, which would refuse every record after it.
    cluster
        .fail_next_produce_requests(&[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
        ])
        .unwrap();
    let reply = publish(&adapter, vec![birth_record(&pinfl(611), 1, "Refused")])
        .await
        .unwrap();
    assert_eq!(
        reply.results[0].outcome,
        PublishOutcome::Failed as i32,
        "{:?}",
        reply.results[0]
    );

    let reply = publish(&adapter, vec![birth_record(&pinfl(612), 1, "After")])
        .await
        .unwrap();
    assert_eq!(
        reply.results[0].outcome,
        PublishOutcome::Accepted as i32,
        "{:?}",
        reply.results[0]
    );
    wait_for_records(&broker, &pinfl(612), "birth_certificate").await;

    adapter.stop().await;
    broker.stop().await;
}
