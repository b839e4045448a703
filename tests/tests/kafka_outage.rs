//! Kafka unavailable: the adapter says per record that Kafka did not take it
//! (never a false "accepted"), the broker keeps answering from the showcase,
//! and both recover when Kafka returns.

use govbus_proto::v1::PublishOutcome;
use govbus_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reports_failure_while_kafka_is_down_and_recovers() {
    let bus = TestBus::start();
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
    let mut accepted = false;
    for _ in 0..20 {
        let reply = publish(&adapter, vec![birth_record(&after, 1, "Sevara")])
            .await
            .unwrap();
        if reply.results[0].outcome == PublishOutcome::Accepted as i32 {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "publishing recovers once Kafka is back");
    wait_for_records(&broker, &after, "birth_certificate").await;

    adapter.stop().await;
    broker.stop().await;
}
