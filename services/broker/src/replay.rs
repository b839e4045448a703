//! Rebuilding a showcase from the record topics alone (`govbus showcase
//! rebuild`): every partition is read from its start to the end it had when
//! the rebuild began, through the same checks as live ingestion, into a
//! showcase of its own. No consumer group offsets are touched and no dead
//! letters are sent again: refused records are counted, as they were
//! dead-lettered when they first arrived.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use govbus_core::time::now_micros;
use govbus_kafka::KafkaSettings;
use govbus_store::{IngestedRecord, Showcase};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use tracing::info;

use govbus_security::RecordChecker;

use crate::BrokerError;

/// What a rebuild read and wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    pub partitions: usize,
    pub messages: u64,
    pub applied: u64,
    pub stale: u64,
    pub refused: u64,
}

/// How long a rebuild waits for the next message before it gives up.
const STALL: Duration = Duration::from_secs(30);

pub async fn rebuild(
    kafka: &KafkaSettings,
    checker: &RecordChecker,
    showcase: &Showcase,
    batch_max: usize,
) -> Result<RebuildReport, BrokerError> {
    let consumer: StreamConsumer = kafka
        .config_for(govbus_kafka::Role::Consumer)
        .set(
            "group.id",
            format!("govbus-rebuild-{}", uuid::Uuid::now_v7()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;

    // The end of every partition now: the rebuild reads up to there.
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for topic in checker.catalog().topics() {
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) =
                consumer.fetch_watermarks(&topic, partition.id(), Duration::from_secs(10))?;
            if high > low {
                remaining.insert((topic.clone(), partition.id()), high);
                assignment.add_partition_offset(&topic, partition.id(), Offset::Beginning)?;
            }
        }
    }
    let mut report = RebuildReport {
        partitions: remaining.len(),
        ..RebuildReport::default()
    };
    if remaining.is_empty() {
        return Ok(report);
    }
    consumer.assign(&assignment)?;
    info!(
        partitions = report.partitions,
        "rebuilding the showcase from the topics"
    );

    let mut batch = Vec::with_capacity(batch_max);
    while !remaining.is_empty() {
        let message = tokio::time::timeout(STALL, consumer.recv())
            .await
            .map_err(|_| BrokerError::Replay(format!("no message for {} s", STALL.as_secs())))??;
        let key = (message.topic().to_string(), message.partition());
        let Some(&end) = remaining.get(&key) else {
            continue;
        };
        if message.offset() >= end {
            continue;
        }
        if message.offset() + 1 >= end {
            remaining.remove(&key);
        }
        report.messages += 1;
        let envelope = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        match checker.check(
            message.topic(),
            message.key().unwrap_or_default(),
            envelope.clone(),
        ) {
            Ok(record) => batch.push(IngestedRecord {
                record,
                envelope,
                topic: key.0,
                partition: key.1,
                offset: message.offset(),
                ingested_at_us: now_micros(),
            }),
            Err(_) => report.refused += 1,
        }
        if batch.len() >= batch_max || remaining.is_empty() {
            let stats = showcase.apply(&batch).await?;
            report.applied += stats.applied;
            report.stale += stats.stale;
            batch.clear();
        }
    }
    info!(
        messages = report.messages,
        applied = report.applied,
        stale = report.stale,
        refused = report.refused,
        "showcase rebuilt"
    );
    Ok(report)
}
