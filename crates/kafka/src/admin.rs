//! Creating record topics through the Kafka admin API: production clusters
//! (and tansu's durable engine) do not auto-create topics.

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::{KafkaError, RDKafkaErrorCode},
};
use tracing::info;

use crate::KafkaSettings;

/// Creates each missing topic with the configured partitions and replication.
/// Topics that already exist are left as they are.
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[String]) -> Result<(), KafkaError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(
                t,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            );
            // Record topics are the bus's log of record: every version is
            // kept (a showcase can be rebuilt from them), so no deletion by
            // age and no compaction. Dead letters go after 30 days.
            if t == crate::DEAD_LETTER_TOPIC {
                topic.set("retention.ms", "2592000000")
            } else {
                topic.set("retention.ms", "-1")
            }
        })
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for result in results {
        match result {
            Ok(topic) => info!(topic, partitions = settings.partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic, %code, "topic creation failed");
                });
            }
        }
    }
    Ok(())
}
