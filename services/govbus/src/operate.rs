//! Operator commands: `status`, `dlq list|show`, `trace-of`.

use std::time::Duration;

use anyhow::{Context, Result};
use govbus_kafka::{DEAD_LETTER_TOPIC, KafkaSettings};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::Headers,
};

use crate::inspect::Connection;

/// A consumer that never joins a group: it only reads (watermarks,
/// committed offsets, dead letters), so it disturbs no member of `group`.
fn consumer(kafka: &str, group: &str) -> Result<BaseConsumer> {
    let settings = KafkaSettings {
        bootstrap_servers: kafka.to_string(),
        ..KafkaSettings::default()
    };
    settings.validate()?;
    Ok(settings
        .config_for(govbus_kafka::Role::Consumer)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?)
}

/// (partition, low, high) of every partition of `topic`.
fn watermarks(consumer: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64, i64)>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("no metadata for {topic}"))?;
    let mut out = Vec::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        out.push((p.id(), low, high));
    }
    Ok(out)
}

/// One dead letter: where it came from and why it was refused.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub reason: String,
    pub source: String,
    pub bytes: usize,
}

/// Every dead letter, oldest first per partition.
pub fn dead_letters(kafka: &str) -> Result<Vec<DeadLetter>> {
    let consumer = consumer(kafka, "govbus-operator")?;
    let partitions = watermarks(&consumer, DEAD_LETTER_TOPIC)?;
    let mut tpl = TopicPartitionList::new();
    let mut open = 0;
    for (p, low, high) in &partitions {
        if high > low {
            tpl.add_partition_offset(DEAD_LETTER_TOPIC, *p, Offset::Beginning)?;
            open += 1;
        }
    }
    let mut letters = Vec::new();
    if open == 0 {
        return Ok(letters);
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while open > 0 && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let header = |name: &str| {
                    m.headers()
                        .and_then(|h| h.iter().find(|x| x.key == name))
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                letters.push(DeadLetter {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    reason: header("govbus-reason"),
                    source: format!(
                        "{}/{}@{}",
                        header("govbus-source-topic"),
                        header("govbus-source-partition"),
                        header("govbus-source-offset")
                    ),
                    bytes: m.payload().map(<[u8]>::len).unwrap_or(0),
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(letters)
}

/// Health of each gRPC endpoint; per topic the messages held and, for the
/// record topics, how far the broker's consumer `group` lags behind.
pub async fn status(
    services: &[(String, Connection)],
    kafka: Option<&str>,
    group: &str,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (name, connection) in services {
        let line = match connection.channel().await {
            Ok(channel) => {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                match health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                {
                    Ok(reply) => format!(
                        "{name} {}: {:?}",
                        connection.address,
                        tonic_health::pb::health_check_response::ServingStatus::try_from(
                            reply.into_inner().status
                        )
                        .unwrap_or(tonic_health::pb::health_check_response::ServingStatus::Unknown)
                    ),
                    Err(s) => format!(
                        "{name} {}: {:?} {}",
                        connection.address,
                        s.code(),
                        s.message()
                    ),
                }
            }
            Err(e) => format!("{name} {}: unreachable ({e:#})", connection.address),
        };
        lines.push(line);
    }
    if let Some(kafka) = kafka {
        let consumer = consumer(kafka, group)?;
        let record_topics = govbus_core::Catalog::builtin().topics();
        for topic in govbus_kafka::with_system_topics(record_topics.clone()) {
            match watermarks(&consumer, &topic) {
                Ok(parts) => {
                    let total: i64 = parts.iter().map(|(_, low, high)| high - low).sum();
                    let mut line = format!(
                        "kafka {topic}: {total} messages in {} partitions",
                        parts.len()
                    );
                    if record_topics.contains(&topic) {
                        let lag = group_lag(&consumer, &topic, &parts)?;
                        line.push_str(&format!(", lag {lag} for group {group}"));
                    }
                    lines.push(line);
                }
                Err(e) => lines.push(format!("kafka {topic}: {e:#}")),
            }
        }
    }
    Ok(lines)
}

/// Messages of `topic` the group has not committed yet.
fn group_lag(consumer: &BaseConsumer, topic: &str, parts: &[(i32, i64, i64)]) -> Result<i64> {
    let mut tpl = TopicPartitionList::new();
    for (p, _, _) in parts {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(parts
        .iter()
        .map(|(p, low, high)| {
            let done = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(Offset::Offset(n)) => n,
                _ => *low,
            };
            (high - done).max(0)
        })
        .sum())
}

/// The audit entries of a request id: who, when, decision, and its trace id.
pub async fn trace_of(database: &str, request_id: &str) -> Result<Vec<String>> {
    let db = govbus_store::Database::connect(database).await?;
    let log = govbus_store::AuditLog::new(db);
    let entries = log.by_request_id(request_id).await?;
    Ok(entries
        .into_iter()
        .map(|e| {
            format!(
                "request {} at {} by {}: {} {} ({}) -> {} {}; trace {}",
                e.entry.request_id,
                e.entry.at_us,
                e.entry.caller,
                e.entry.record_type,
                e.entry.subject_id,
                e.entry.purpose,
                e.entry.decision,
                e.entry.reason,
                e.entry.trace_id
            )
        })
        .collect())
}
