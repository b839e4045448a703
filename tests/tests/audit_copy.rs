//! The audit trail's copy on the Kafka audit topic: every entry, in chain
//! order, none twice while Kafka takes them; entries Kafka refused, and
//! entries an earlier run left uncopied, follow from the database.

use std::time::Duration;

use govbus_store::{AuditEntry, AuditLog};
use govbus_tests::*;
use tonic::Code;

/// The seqs of `chain` on the audit topic, in the order of the topic (a
/// chain is one partition).
fn copied(bus: &TestBus, chain: &str) -> Vec<i64> {
    read_topic_payloads(bus, govbus_kafka::AUDIT_TOPIC)
        .iter()
        .map(|p| serde_json::from_str::<serde_json::Value>(p).expect("audit entries are JSON"))
        .filter(|entry| entry["chain"] == chain)
        .map(|entry| entry["seq"].as_i64().expect("seq"))
        .collect()
}

/// `n` evidence requests about `subject` (none has records), `concurrently`
/// at once, so that they share commits.
async fn ask(broker: &Running, subject: &str, n: usize, concurrently: usize) {
    let client = broker.once_only_client().await;
    let mut left = n;
    while left > 0 {
        let now = left.min(concurrently);
        let calls = (0..now).map(|_| {
            let mut client = client.clone();
            async move {
                client
                    .get_evidence(evidence_request(subject, "birth_certificate"))
                    .await
            }
        });
        for outcome in futures::future::join_all(calls).await {
            assert_eq!(outcome.unwrap_err().code(), Code::NotFound);
        }
        left -= now;
    }
}

/// A broker whose audit trail is in `audit.db`, beside its showcase.
fn with_own_trail(bus: &TestBus) -> govbus_broker::BrokerConfig {
    let mut config = bus.broker_config("showcase.db");
    config.audit_database_url = Some(bus.database_url("audit.db"));
    config
}

async fn published(bus: &TestBus, db: &str, chain: &str) -> i64 {
    let log = AuditLog::open(&bus.database_url(db)).await.unwrap();
    log.published(chain).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_reaches_the_audit_topic_once_and_in_order() {
    let bus = TestBus::start();
    let broker = bus.broker(with_own_trail(&bus)).await;
    // Requests about six subjects: the entries are still one sequence.
    for subject in 0..6 {
        ask(&broker, &pinfl(1710 + subject), 10, 10).await;
    }
    broker.stop().await;

    assert_eq!(copied(&bus, "broker"), (1..=60).collect::<Vec<_>>());
    assert_eq!(published(&bus, "audit.db", "broker").await, 60);
    let keys: Vec<String> = read_topic(&bus, govbus_kafka::AUDIT_TOPIC)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(keys, vec!["broker".to_string(); 60], "keyed by chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_an_earlier_run_left_uncopied_are_copied_first() {
    let bus = TestBus::start();
    let subject = pinfl(1701);
    // A run that committed five entries and stopped before copying any.
    let log = AuditLog::open(&bus.database_url("audit.db")).await.unwrap();
    let earlier: Vec<AuditEntry> = (0..5)
        .map(|n| AuditEntry {
            at_us: 1_700_000_000_000_000 + n,
            caller: PORTAL.into(),
            subject_id: subject.clone(),
            record_type: "birth_certificate".into(),
            purpose: "test".into(),
            fields: String::new(),
            decision: "not_found".into(),
            reason: String::new(),
            request_id: format!("earlier-{n}"),
            trace_id: String::new(),
            records: 0,
        })
        .collect();
    let head = log.head("broker").await.unwrap();
    log.appender()
        .append("broker", head, earlier)
        .await
        .unwrap();

    let broker = bus.broker(with_own_trail(&bus)).await;
    eventually("the earlier entries copied", || async {
        copied(&bus, "broker").len() == 5
    })
    .await;
    ask(&broker, &subject, 3, 3).await;
    broker.stop().await;

    assert_eq!(copied(&bus, "broker"), (1..=8).collect::<Vec<_>>());
    assert_eq!(published(&bus, "audit.db", "broker").await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_kafka_refused_are_copied_from_the_database_once_it_is_back() {
    let bus = TestBus::start();
    if skip_timed_out_records_on_tansu() {
        return;
    }
    let subject = pinfl(1702);
    let mut config = with_own_trail(&bus);
    config
        .kafka
        .client
        .insert("message.timeout.ms".into(), "1000".into());
    let broker = bus.broker(config).await;
    ask(&broker, &subject, 3, 1).await;
    eventually("the first entries copied", || async {
        copied(&bus, "broker") == vec![1, 2, 3]
    })
    .await;

    // Answers go on while Kafka is away: the trail is in the database.
    bus.cluster.broker_down(1).unwrap();
    ask(&broker, &subject, 5, 1).await;
    // Long enough for every send to time out (after 1 s) before Kafka is back.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    bus.cluster.broker_up(1).unwrap();
    // No request after Kafka is back: the copy finds what it lacks by itself.
    eventually("the refused entries copied", || async {
        let seqs = copied(&bus, "broker");
        (1..=8).all(|seq| seqs.contains(&seq))
    })
    .await;

    // Again, and requests as soon as Kafka is back: what they commit waits
    // for what was refused before it.
    bus.cluster.broker_down(1).unwrap();
    ask(&broker, &subject, 3, 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    bus.cluster.broker_up(1).unwrap();
    ask(&broker, &subject, 2, 1).await;
    eventually("the entries of both outages copied", || async {
        let seqs = copied(&bus, "broker");
        (1..=13).all(|seq| seqs.contains(&seq))
    })
    .await;
    broker.stop().await;

    let seqs = copied(&bus, "broker");
    let mut firsts: Vec<i64> = Vec::new();
    for seq in seqs {
        if !firsts.contains(&seq) {
            firsts.push(seq);
        }
    }
    assert_eq!(firsts, (1..=13).collect::<Vec<_>>(), "all, in chain order");
    assert_eq!(published(&bus, "audit.db", "broker").await, 13);
}
