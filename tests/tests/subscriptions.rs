//! Agencies consume: subscription streams with grants, field minimisation,
//! durable cursors and flow control, and the inbox table.

use std::{collections::BTreeSet, time::Duration};

use govbus_proto::{
    records::{BirthCertificate, MarriageCertificate},
    v1::{
        AcknowledgeRequest, Delivery, SubscribeRequest, SubscriptionFilter,
        agency_adapter_client::AgencyAdapterClient,
    },
};
use govbus_tests::*;
use prost::Message;
use tonic::{Code, Streaming};

fn request(subscription: &str, types: &[&str]) -> SubscribeRequest {
    SubscribeRequest {
        subscription: subscription.into(),
        record_types: types.iter().map(|t| t.to_string()).collect(),
        filter: None,
    }
}

async fn subscribe(
    adapter: &Running,
    request: SubscribeRequest,
) -> Result<Streaming<Delivery>, tonic::Status> {
    adapter
        .adapter_client()
        .await
        .subscribe(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The next `n` deliveries, or a panic naming how many came within 20 s.
async fn take(stream: &mut Streaming<Delivery>, n: usize) -> Vec<Delivery> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(d))) => got.push(d),
            Ok(Ok(None)) => panic!("stream ended after {} of {n} deliveries", got.len()),
            Ok(Err(status)) => panic!("stream failed after {} of {n}: {status:?}", got.len()),
            Err(_) => panic!("only {} of {n} deliveries within 20 s", got.len()),
        }
    }
    got
}

/// Nothing more arrives for a while.
async fn assert_quiet(stream: &mut Streaming<Delivery>) {
    if let Ok(Ok(Some(d))) =
        tokio::time::timeout(Duration::from_millis(1500), stream.message()).await
    {
        panic!("unexpected delivery: {:?}", d.record.map(|r| r.subject_id));
    }
}

async fn acknowledge(
    adapter: &Running,
    subscription: &str,
    deliveries: &[Delivery],
) -> Result<u32, tonic::Status> {
    adapter
        .adapter_client()
        .await
        .acknowledge(AcknowledgeRequest {
            subscription: subscription.into(),
            cursors: deliveries.iter().map(|d| d.cursor.clone()).collect(),
        })
        .await
        .map(|r| r.into_inner().advanced)
}

fn key(d: &Delivery) -> (String, String) {
    let r = d.record.as_ref().expect("delivery has a record");
    (r.record_type.clone(), r.subject_id.clone())
}

async fn publish_all(adapter: &Running, records: Vec<govbus_proto::v1::Record>) {
    let reply = publish(adapter, records).await.expect("publish");
    assert!(
        reply.results.iter().all(|r| r.error.is_empty()),
        "{reply:?}"
    );
}

/// Birth certificates of citizens 0..n.
async fn publish_births(adapter: &Running, n: u32) {
    publish_all(
        adapter,
        (0..n).map(|i| birth_record(&pinfl(i), 1, "Aziz")).collect(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscriber_receives_exactly_its_granted_types_and_fields() {
    let bus = TestBus::start();
    let fhdy = bus.adapter(bus.adapter_config(FHDY)).await;
    let interior = bus.adapter(bus.adapter_config(INTERIOR)).await;
    let tax = bus.adapter(bus.adapter_config(TAX)).await;
    const BIRTHS: u32 = 12;
    const MARRIAGES: u32 = 4;
    let mut records: Vec<_> = (0..BIRTHS)
        .map(|i| birth_record(&pinfl(i), 1, "Jasur"))
        .collect();
    records.extend((0..MARRIAGES).map(|i| marriage_record(&pinfl(100 + i), 1)));
    publish_all(&fhdy, records).await;

    let verifier = govbus_security::Verifier::new(bus.ca_der());
    // The interior ministry: marriages whole, births with the child only.
    let mut stream = subscribe(
        &interior,
        request("civil", &["marriage_certificate", "birth_certificate"]),
    )
    .await
    .expect("interior may subscribe");
    let got = take(&mut stream, (BIRTHS + MARRIAGES) as usize).await;
    assert_quiet(&mut stream).await;
    let keys: BTreeSet<_> = got.iter().map(key).collect();
    assert_eq!(keys.len(), (BIRTHS + MARRIAGES) as usize, "no duplicates");
    for d in &got {
        let record = d.record.as_ref().unwrap();
        verifier
            .verify(record)
            .expect("a minimised delivery still verifies against the bus CA");
        let payload = &record.payload.as_ref().unwrap().value;
        match record.record_type.as_str() {
            "birth_certificate" => {
                let birth = BirthCertificate::decode(payload.as_slice()).unwrap();
                assert!(birth.child.is_some());
                assert_eq!(birth.date_of_birth, "", "date_of_birth is not granted");
                assert_eq!(birth.place_of_birth, "");
                assert_eq!(birth.certificate_number, "");
            }
            "marriage_certificate" => {
                let marriage = MarriageCertificate::decode(payload.as_slice()).unwrap();
                assert_eq!(marriage.spouse_two_surname_after, "Karimova");
                assert!(marriage.spouse_two.is_some());
            }
            other => panic!("not subscribed to {other}"),
        }
    }

    // The tax committee: births only, child and date of birth.
    let mut stream = subscribe(&tax, request("births", &["birth_certificate"]))
        .await
        .expect("tax may subscribe to births");
    let got = take(&mut stream, BIRTHS as usize).await;
    assert_quiet(&mut stream).await;
    for d in &got {
        let record = d.record.as_ref().unwrap();
        assert_eq!(record.record_type, "birth_certificate");
        verifier.verify(record).expect("verifies");
        let birth =
            BirthCertificate::decode(record.payload.as_ref().unwrap().value.as_slice()).unwrap();
        assert!(birth.child.is_some());
        assert_eq!(birth.date_of_birth, "1990-05-15");
        assert_eq!(birth.place_of_birth, "", "place_of_birth is not granted");
    }

    // A filter narrows the stream to some subjects.
    let mut filtered = request("one-citizen", &["birth_certificate"]);
    filtered.filter = Some(SubscriptionFilter {
        subject_ids: vec![pinfl(3)],
        statuses: Vec::new(),
    });
    let mut stream = subscribe(&tax, filtered).await.expect("filtered");
    let got = take(&mut stream, 1).await;
    assert_eq!(key(&got[0]).1, pinfl(3));
    assert_quiet(&mut stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_without_a_grant_is_refused_with_the_reason_and_audited() {
    let bus = TestBus::start();
    let tax = bus.adapter(bus.adapter_config(TAX)).await;
    let fhdy = bus.adapter(bus.adapter_config(FHDY)).await;

    let status = subscribe(
        &tax,
        request("all", &["birth_certificate", "marriage_certificate"]),
    )
    .await
    .expect_err("marriages are not granted to the tax committee");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "no subscription grant allows agency/tax/system/soliq to receive marriage_certificate"
    );

    // Another system may not subscribe through the civil registry's adapter.
    let mut as_interior = AgencyAdapterClient::new(fhdy.channel_as(&id(INTERIOR)).await);
    let status = as_interior
        .subscribe(request("borrowed", &["birth_certificate"]))
        .await
        .expect_err("wrong caller");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("only agency/civil-registry/system/fhdy may"),
        "{status:?}"
    );

    // Both refusals, and nothing else, are on the audit topic.
    let entries: Vec<serde_json::Value> = read_topic_payloads(&bus, "govbus.audit")
        .iter()
        .map(|p| serde_json::from_str(p).expect("audit entries are JSON"))
        .collect();
    let denied: Vec<_> = entries
        .iter()
        .filter(|e| e["kind"] == "subscription" && e["decision"] == "denied")
        .collect();
    assert_eq!(denied.len(), 2, "{entries:?}");
    let by = |caller: &str| {
        *denied
            .iter()
            .find(|e| e["caller"] == caller)
            .unwrap_or_else(|| panic!("no refusal of {caller} audited: {denied:?}"))
    };
    let tax_entry = by(TAX);
    assert_eq!(tax_entry["record_type"], "marriage_certificate");
    assert_eq!(tax_entry["subscription"], "all");
    assert!(
        tax_entry["reason"]
            .as_str()
            .unwrap()
            .contains("no subscription grant")
    );
    assert!(!tax_entry["request_id"].as_str().unwrap().is_empty());
    assert_eq!(by(INTERIOR)["chain"], FHDY);

    // A granted subscription is audited as allowed, with its fields.
    let _stream = subscribe(&tax, request("births", &["birth_certificate"]))
        .await
        .expect("granted");
    let entries = read_topic_payloads(&bus, "govbus.audit");
    assert!(
        entries.iter().any(|e| e.contains(r#""decision":"allowed""#)
            && e.contains(r#""fields":"child,date_of_birth""#)),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_grant_ends_the_stream() {
    let bus = TestBus::start();
    let fhdy = bus.adapter(bus.adapter_config(FHDY)).await;
    let tax = bus.adapter(bus.adapter_config(TAX)).await;
    publish_all(&fhdy, vec![birth_record(&pinfl(1), 1, "Aziz")]).await;
    let mut stream = subscribe(&tax, request("births", &["birth_certificate"]))
        .await
        .unwrap();
    take(&mut stream, 1).await;

    // The tax committee's subscription grant is taken out of the policy.
    let without = TEST_POLICY.replace(
        "[[subscription]]\nconsumer = \"agency/tax/system/soliq\"",
        "[[subscription]]\nconsumer = \"agency/sport/system/registry\"",
    );
    assert_ne!(without, TEST_POLICY);
    std::fs::write(bus.policy_path(), without).unwrap();
    eventually("the adapter reloads the policy", || async {
        subscribe(&tax, request("probe", &["birth_certificate"]))
            .await
            .is_err_and(|s| s.code() == Code::PermissionDenied)
    })
    .await;
    publish_all(&fhdy, vec![birth_record(&pinfl(2), 1, "Bobur")]).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("the stream ends");
    let status = ended.expect_err("ended with a status");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("no subscription grant"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscribe_and_acknowledge_calls_get_precise_errors() {
    let bus = TestBus::start();
    let tax = bus.adapter(bus.adapter_config(TAX)).await;
    let fhdy = bus.adapter(bus.adapter_config(FHDY)).await;
    let cases = [
        (request("", &["birth_certificate"]), "subscription: 1 to 64"),
        (
            request("a b", &["birth_certificate"]),
            "subscription: 1 to 64",
        ),
        (request("x", &[]), "record_types: name at least one"),
        (
            request("x", &["birth_certificate", "death"]),
            "record_types[1]: unknown record type \"death\"",
        ),
        (
            SubscribeRequest {
                filter: Some(SubscriptionFilter {
                    subject_ids: vec!["123".into()],
                    statuses: Vec::new(),
                }),
                ..request("x", &["birth_certificate"])
            },
            "filter.subject_ids[0]",
        ),
        (
            SubscribeRequest {
                filter: Some(SubscriptionFilter {
                    subject_ids: Vec::new(),
                    statuses: vec![1, 9],
                }),
                ..request("x", &["birth_certificate"])
            },
            "filter.statuses[1]: 9 is not a record status",
        ),
    ];
    for (bad, expected) in cases {
        let status = subscribe(&tax, bad).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(expected),
            "{status:?} lacks {expected:?}"
        );
    }

    let ack = |subscription: &str, cursors: Vec<&str>| AcknowledgeRequest {
        subscription: subscription.into(),
        cursors: cursors.into_iter().map(String::from).collect(),
    };
    let mut client = tax.adapter_client().await;
    let status = client
        .acknowledge(ack("births", vec!["govbus.records.birth_certificate:0:0"]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    publish_all(&fhdy, vec![birth_record(&pinfl(1), 1, "Aziz")]).await;
    let mut stream = subscribe(&tax, request("births", &["birth_certificate"]))
        .await
        .expect("granted");
    let got = take(&mut stream, 1).await;
    for (cursors, expected) in [
        (vec![], "cursors: at least one"),
        (vec!["nonsense"], "cursors[0]: \"nonsense\" is not a cursor"),
        (
            vec![
                got[0].cursor.as_str(),
                "govbus.records.birth_certificate:0:999",
            ],
            "cursors[1]: cursor govbus.records.birth_certificate:0:999 was not delivered",
        ),
    ] {
        let status = client
            .acknowledge(ack("births", cursors))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(expected),
            "{status:?} lacks {expected:?}"
        );
    }
    // The stream is still open and a good acknowledgement still works.
    assert_eq!(acknowledge(&tax, "births", &got).await.unwrap(), 1);
    assert_eq!(
        acknowledge(&tax, "births", &got).await.unwrap(),
        0,
        "already there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_after_its_last_acknowledgement_with_no_gap() {
    let bus = TestBus::start();
    let fhdy = bus.adapter(bus.adapter_config(FHDY)).await;
    let tax = bus.adapter(bus.adapter_config(TAX)).await;
    const N: u32 = 20;
    publish_births(&fhdy, N).await;

    let mut stream = subscribe(&tax, request("births", &["birth_certificate"]))
        .await
        .unwrap();
    let first = take(&mut stream, N as usize).await;
    // Acknowledged: the first half as delivered (a prefix of each partition).
    let half = (N / 2) as usize;
    acknowledge(&tax, "births", &first[..half]).await.unwrap();
    // The subscriber dies without another word.
    drop(stream);

    // It comes back: exactly the unacknowledged half, nothing skipped.
    let expect_rest: BTreeSet<_> = first[half..].iter().map(key).collect();
    let mut stream = subscribe(&tax, request("births", &["birth_certificate"]))
        .await
        .unwrap();
    let rest = take(&mut stream, expect_rest.len()).await;
    assert_eq!(rest.iter().map(key).collect::<BTreeSet<_>>(), expect_rest);
    assert_quiet(&mut stream).await;
    acknowledge(&tax, "births", &rest[..2]).await.unwrap();
    drop(stream);

    // The adapter restarts: the cursor is in Kafka, not in its memory.
    tax.stop().await;
    let tax = bus.adapter(bus.adapter_config(TAX)).await;
    let expect_rest: BTreeSet<_> = rest[2..].iter().map(key).collect();
    let mut stream = subscribe(&tax, request("births", &["birth_certificate"]))
        .await
        .unwrap();
    let again = take(&mut stream, expect_rest.len()).await;
    assert_eq!(again.iter().map(key).collect::<BTreeSet<_>>(), expect_rest);

    // New records follow on the same stream; a second Subscribe takes over.
    publish_all(&fhdy, vec![birth_record(&pinfl(500), 1, "Bobur")]).await;
    let new = take(&mut stream, 1).await;
    assert_eq!(key(&new[0]).1, pinfl(500));
    let _newer = subscribe(&tax, request("births", &["birth_certificate"]))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the older stream ends");
    assert_eq!(ended.unwrap_err().code(), Code::Aborted);
    tax.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_holds_back_nobody_else() {
    let bus = TestBus::start();
    let fhdy = bus.adapter(bus.adapter_config(FHDY)).await;
    let mut config = bus.adapter_config(INTERIOR);
    config.subscription_buffer = 8;
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let interior = bus.adapter(config).await;
    let tax = bus.adapter(bus.adapter_config(TAX)).await;

    // The interior ministry subscribes and then reads nothing. Its HTTP/2
    // window is small (hyper's default holds 2 MiB), so the adapter soon
    // has nowhere to put deliveries.
    let small_window = interior
        .channel_with(&id(INTERIOR), |endpoint| {
            endpoint
                .initial_stream_window_size(16 * 1024)
                .initial_connection_window_size(16 * 1024)
        })
        .await;
    let mut stalled = AgencyAdapterClient::new(small_window)
        .subscribe(request("stalled", &["birth_certificate"]))
        .await
        .unwrap()
        .into_inner();
    const N: u32 = 300;
    publish_births(&fhdy, N).await;
    // The tax committee gets everything meanwhile, and publishing goes on.
    let mut stream = subscribe(&tax, request("births", &["birth_certificate"]))
        .await
        .unwrap();
    take(&mut stream, N as usize).await;
    publish_all(&fhdy, vec![birth_record(&pinfl(900), 1, "Bobur")]).await;
    take(&mut stream, 1).await;

    // The stalled stream's consumer paused instead of buffering: it has
    // handed over only what the stream and HTTP/2 flow control hold.
    let metrics = interior.metrics.expect("metrics endpoint");
    let stalled_value = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{subscription=\"stalled\"}} ")))
            .and_then(|v| v.parse().ok())
    };
    eventually("the stalled subscription's consumer pauses", || async {
        let text = scrape(metrics).await;
        stalled_value(&text, "govbus_subscription_pauses_total").is_some_and(|pauses| pauses >= 1.0)
    })
    .await;
    let text = scrape(metrics).await;
    let delivered = stalled_value(&text, "govbus_subscription_delivered_total").unwrap_or(0.0);
    assert!(delivered < f64::from(N) / 2.0, "{text}");
    eventually("its lag is reported", || async {
        scrape(metrics)
            .await
            .lines()
            .any(|l| l.starts_with(r#"govbus_subscription_lag{subscription="stalled""#))
    })
    .await;
    // Once it reads again it receives everything, in order per subject.
    let all = take(&mut stalled, N as usize + 1).await;
    assert_eq!(
        all.iter().map(key).collect::<BTreeSet<_>>().len(),
        N as usize + 1
    );
    assert!(
        !scrape(metrics)
            .await
            .contains(r#"govbus_subscription_paused{subscription="stalled"} 1"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_holds_each_record_once_in_order_under_redelivery() {
    let bus = TestBus::start();
    let fhdy = bus.adapter(bus.adapter_config(FHDY)).await;
    let inbox_db = bus.database_url("interior.db");
    let mut config = bus.adapter_config(INTERIOR);
    config.inbox = Some(govbus_adapter::InboxConfig {
        database_url: inbox_db.clone(),
        record_types: vec!["marriage_certificate".into(), "birth_certificate".into()],
        batch_size: 7,
        ..Default::default()
    });
    let interior = bus.adapter(config.clone()).await;
    const N: u32 = 30;
    let mut records: Vec<_> = (0..N - 3)
        .map(|i| birth_record(&pinfl(i), 1, "Aziz"))
        .collect();
    // Three versions of one marriage: the inbox keeps them in that order.
    records.extend((1..=3).map(|v| marriage_record(&pinfl(777), v)));
    publish_all(&fhdy, records).await;

    let db = govbus_store::Database::connect(&inbox_db).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM govbus_inbox")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    eventually("every record is in the inbox", || async {
        count().await == N as i64
    })
    .await;
    interior.stop().await;

    // Redelivery of everything: the subscription's cursor back to the start.
    rewind_group(&bus, "govbus.subscription.interior.address-bureau.inbox");
    let interior = bus.adapter(config).await;
    publish_all(&fhdy, vec![birth_record(&pinfl(999), 1, "Bobur")]).await;
    eventually("the new record arrives", || async {
        count().await == N as i64 + 1
    })
    .await;
    eventually(
        "the redelivered records were all acknowledged again",
        || async {
            group_is_at_end(
                &bus,
                "govbus.subscription.interior.address-bureau.inbox",
                &RECORD_TOPICS,
            )
        },
    )
    .await;
    assert_eq!(count().await, N as i64 + 1, "redelivery added no row");

    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM govbus_inbox WHERE subject_id = $1 ORDER BY seq")
            .bind(pinfl(777))
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 2, 3]);
    // Births arrive minimised to the granted field, and verifiable.
    let (payload, envelope): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT payload, envelope FROM govbus_inbox WHERE subject_id = $1")
            .bind(pinfl(4))
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let birth = BirthCertificate::decode(payload.as_slice()).unwrap();
    assert!(birth.child.is_some());
    assert_eq!(birth.date_of_birth, "");
    let record = govbus_proto::v1::Record::decode(envelope.as_slice()).unwrap();
    govbus_security::verify(&record, &bus.ca_der()).expect("the inbox envelope verifies");
    interior.stop().await;
}

const RECORD_TOPICS: [&str; 2] = [
    "govbus.records.birth_certificate",
    "govbus.records.marriage_certificate",
];

/// Commits offset 0 on every partition of the record topics for `group`.
fn rewind_group(bus: &TestBus, group: &str) {
    use rdkafka::{
        Offset, TopicPartitionList,
        consumer::{BaseConsumer, CommitMode, Consumer},
    };
    let consumer: BaseConsumer = bus
        .kafka()
        .config_for(govbus_kafka::Role::Consumer)
        .set("group.id", group)
        .create()
        .expect("rewinding consumer");
    // Join the group (a commit from outside it is refused), then commit.
    consumer.subscribe(&RECORD_TOPICS).expect("subscribe");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let assignment = loop {
        consumer.poll(Duration::from_millis(100));
        let assignment = consumer.assignment().expect("assignment");
        if assignment.count() > 0 {
            break assignment;
        }
        assert!(std::time::Instant::now() < deadline, "never joined {group}");
    };
    let mut tpl = TopicPartitionList::new();
    for e in assignment.elements() {
        tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(0))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("rewind");
}
