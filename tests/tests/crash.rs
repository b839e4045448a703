//! Crashes: processes killed with SIGKILL at the worst moment. Each test
//! ends with an exact count — every accepted record stored exactly once.

use govbus_proto::v1::PublishOutcome;
use govbus_tests::*;

const SERVICE: &str = env!("CARGO_BIN_EXE_govbus-service");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_ingest_loses_and_duplicates_nothing() {
    let bus = TestBus::start();
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let showcase = open_showcase(&bus, "showcase.db").await;

    const TOTAL: u32 = 3000;
    for chunk in 0..TOTAL / 500 {
        let records = (0..500)
            .map(|i| birth_record(&pinfl(chunk * 500 + i), 1, "Crash"))
            .collect();
        let reply = publish(&adapter, records).await.unwrap();
        assert!(
            reply
                .results
                .iter()
                .all(|r| r.outcome == PublishOutcome::Accepted as i32)
        );
    }

    let mut config = bus.broker_config("showcase.db");
    config.batch_max = 250;
    let process = bus.spawn_service(SERVICE, "broker", &config);
    eventually("the first batches are committed", || async {
        showcase.count().await.unwrap() > 0
    })
    .await;
    process.kill();
    let at_kill = showcase.count().await.unwrap();
    assert!(at_kill < i64::from(TOTAL), "killed mid-ingest ({at_kill})");

    let process = bus.spawn_service(SERVICE, "broker", &config);
    eventually("every record ingested after the restart", || async {
        showcase.count().await.unwrap() == i64::from(TOTAL)
    })
    .await;
    let history = showcase.history_count().await.unwrap();
    assert_eq!(history, i64::from(TOTAL), "nothing stored twice");
    drop(process);
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_killed_before_kafka_acknowledges_and_a_retry_does_not_duplicate() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let showcase = open_showcase(&bus, "showcase.db").await;
    let mut config = bus.adapter_config(FHDY);
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let process = bus.spawn_service(SERVICE, "adapter", &config);

    // Records with their ids set by the caller, so that a retry is recognisable.
    let records: Vec<_> = (0..50)
        .map(|n| {
            let mut r = birth_record(&pinfl(1100 + n), 1, "Retry");
            r.record_id = uuid::Uuid::now_v7().to_string();
            r
        })
        .collect();

    // Kafka stops answering; the adapter holds the batch waiting for acks.
    bus.cluster.broker_down(1).unwrap();
    let client_channel = {
        let tls = govbus_security::TlsMaterial::load(&bus.tls(FHDY)).unwrap();
        tonic::transport::Channel::from_shared(format!("https://{}", process.addr))
            .unwrap()
            .tls_config(tls.client_config("localhost"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let mut client =
        govbus_proto::v1::agency_adapter_client::AgencyAdapterClient::new(client_channel);
    let call = tokio::spawn({
        let records = records.clone();
        async move {
            client
                .publish(govbus_proto::v1::PublishRequest { records })
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    process.kill();
    let outcome = call.await.unwrap();
    assert!(
        outcome.is_err(),
        "the caller got no success for what was not delivered: {outcome:?}"
    );
    bus.cluster.broker_up(1).unwrap();

    // The agency retries the same records through a new adapter process.
    let process = bus.spawn_service(SERVICE, "adapter", &config);
    let tls = govbus_security::TlsMaterial::load(&bus.tls(FHDY)).unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", process.addr))
        .unwrap()
        .tls_config(tls.client_config("localhost"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = govbus_proto::v1::agency_adapter_client::AgencyAdapterClient::new(channel);
    let reply = client
        .publish(govbus_proto::v1::PublishRequest {
            records: records.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        reply
            .results
            .iter()
            .all(|r| r.outcome == PublishOutcome::Accepted as i32)
    );
    // And once more, as a client that did not see the answer would.
    client
        .publish(govbus_proto::v1::PublishRequest {
            records: records.clone(),
        })
        .await
        .unwrap();

    eventually("every record ingested", || async {
        showcase.count().await.unwrap() == 50
    })
    .await;
    let answer = wait_for_records(&broker, &pinfl(1100), "birth_certificate").await;
    assert_eq!(
        answer.evidence[0].record.as_ref().unwrap().record_id,
        records[0].record_id
    );
    let history = showcase.history_count().await.unwrap();
    assert_eq!(history, 50, "each record once, whatever the retries");

    drop(process);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribing_adapter_killed_resumes_after_the_last_acknowledgement() {
    use govbus_proto::v1::{AcknowledgeRequest, SubscribeRequest};
    let bus = TestBus::start();
    let fhdy = bus.adapter(bus.adapter_config(FHDY)).await;
    const N: u32 = 20;
    let reply = publish(
        &fhdy,
        (0..N).map(|i| birth_record(&pinfl(i), 1, "Aziz")).collect(),
    )
    .await
    .unwrap();
    assert!(reply.results.iter().all(|r| r.error.is_empty()));
    let mut config = bus.adapter_config(TAX);
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let subscribe = SubscribeRequest {
        subscription: "births".into(),
        record_types: vec!["birth_certificate".into()],
        filter: None,
    };
    let take = |stream: tonic::Streaming<govbus_proto::v1::Delivery>, n: usize| async move {
        let mut stream = stream;
        let mut got = Vec::new();
        while got.len() < n {
            let next = tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
                .await
                .expect("deliveries keep coming")
                .expect("stream healthy")
                .expect("stream open");
            got.push(next);
        }
        (stream, got)
    };

    let process = bus.spawn_service(SERVICE, "adapter", &config);
    let mut client = process.adapter_client_as(&bus, TAX).await;
    let stream = client
        .subscribe(subscribe.clone())
        .await
        .unwrap()
        .into_inner();
    let (_stream, first) = take(stream, N as usize).await;
    let half = (N / 2) as usize;
    client
        .acknowledge(AcknowledgeRequest {
            subscription: "births".into(),
            cursors: first[..half].iter().map(|d| d.cursor.clone()).collect(),
        })
        .await
        .unwrap();
    process.kill();

    let subject = |d: &govbus_proto::v1::Delivery| d.record.as_ref().unwrap().subject_id.clone();
    let unacknowledged: std::collections::BTreeSet<_> = first[half..].iter().map(subject).collect();
    let process = bus.spawn_service(SERVICE, "adapter", &config);
    let mut client = process.adapter_client_as(&bus, TAX).await;
    let stream = client.subscribe(subscribe).await.unwrap().into_inner();
    let (mut stream, rest) = take(stream, unacknowledged.len()).await;
    assert_eq!(
        rest.iter()
            .map(subject)
            .collect::<std::collections::BTreeSet<_>>(),
        unacknowledged,
        "exactly the unacknowledged half again: nothing skipped, nothing acknowledged repeated"
    );
    let more = tokio::time::timeout(std::time::Duration::from_millis(1500), stream.message()).await;
    assert!(!matches!(more, Ok(Ok(Some(_)))), "nothing more: {more:?}");
    process.terminate();
}
