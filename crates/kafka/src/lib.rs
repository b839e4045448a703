//! Everything govbus says to Kafka goes through here: client settings, the
//! embedded cluster, topic management, the idempotent producer and the trace
//! context carried in record headers.

mod admin;
mod embedded;
mod headers;
mod offset_reset;
mod producer;
mod settings;

pub use admin::ensure_topics;
pub use embedded::{EmbeddedCluster, EmbeddedError};
pub use headers::{HeaderExtractor, HeaderInjector, TRACEPARENT};
pub use offset_reset::consumer_log;
pub use producer::{Delivered, RecordProducer};
pub use settings::{KafkaSettings, Role, SettingsError};

/// Topic that receives records the broker refused, with the reason in a header.
pub const DEAD_LETTER_TOPIC: &str = "govbus.deadletter";

/// Topic that archives the audit trail, one message per entry.
pub const AUDIT_TOPIC: &str = "govbus.audit";

/// The topics govbus uses besides the record topics.
pub const SYSTEM_TOPICS: [&str; 2] = [DEAD_LETTER_TOPIC, AUDIT_TOPIC];

/// The record topics plus the system topics: everything govbus needs to exist.
pub fn with_system_topics(mut record_topics: Vec<String>) -> Vec<String> {
    record_topics.extend(SYSTEM_TOPICS.iter().map(|t| t.to_string()));
    record_topics
}
