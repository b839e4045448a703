//! Broker configuration.

use std::{net::SocketAddr, time::Duration};

use govbus_core::ConfigError;
use govbus_kafka::KafkaSettings;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// gRPC listen address of the once-only service.
    pub listen: SocketAddr,
    /// Showcase database: `sqlite://…` or `postgres://…`.
    pub database_url: String,
    pub kafka: KafkaSettings,
    /// Consumer group shared by all replicas of this broker.
    pub group_id: String,
    /// Most records written to the showcase in one transaction.
    pub batch_max: usize,
    /// How long a batch waits for more records once it has one.
    pub batch_wait_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: "sqlite://var/govbus/showcase.db".into(),
            kafka: KafkaSettings::default(),
            group_id: "govbus-broker".into(),
            batch_max: 500,
            batch_wait_ms: 5,
        }
    }
}

impl BrokerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        govbus_store::Backend::from_url(&self.database_url)
            .map_err(|e| ConfigError::new(format!("database_url: {e}")))?;
        self.kafka
            .validate()
            .map_err(|e| ConfigError::new(e.to_string()))?;
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::new("group_id must not be empty"));
        }
        if self.batch_max == 0 || self.batch_max > 10_000 {
            return Err(ConfigError::new("batch_max must be between 1 and 10000"));
        }
        if self.batch_wait_ms > 10_000 {
            return Err(ConfigError::new("batch_wait_ms must be at most 10000"));
        }
        Ok(())
    }

    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms)
    }
}
