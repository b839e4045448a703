//! Everything govbus says to Kafka goes through here: client settings, the
//! embedded cluster, topic management, the idempotent producer and the trace
//! context carried in record headers.

mod admin;
mod embedded;
mod headers;
mod producer;
mod settings;

pub use admin::ensure_topics;
pub use embedded::{EmbeddedCluster, EmbeddedError};
pub use headers::{HeaderExtractor, HeaderInjector, TRACEPARENT};
pub use producer::{Delivered, RecordProducer};
pub use settings::{KafkaSettings, SettingsError};

/// Topic that receives records the broker refused, with the reason in a header.
pub const DEAD_LETTER_TOPIC: &str = "govbus.deadletter";
