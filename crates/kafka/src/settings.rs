//! Kafka client settings shared by producers, consumers and admin clients.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`. Empty in the embedded mode until the
    /// embedded cluster has started.
    pub bootstrap_servers: String,
    /// Passed through to librdkafka (e.g. `security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`, `message.timeout.ms`); `_` may
    /// stand for `.`, as environment variables need.
    pub client: BTreeMap<String, String>,
    /// Partitions of each record topic when govbus creates it.
    pub partitions: i32,
    pub replication_factor: i32,
    /// Whether govbus creates missing topics through the admin API. Off for
    /// the embedded cluster, which creates its topics itself.
    pub manage_topics: bool,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: String::new(),
            client: BTreeMap::new(),
            partitions: 6,
            replication_factor: 1,
            manage_topics: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("kafka.bootstrap_servers is empty")]
    NoBootstrap,
    #[error("kafka.bootstrap_servers entry {0:?} is not host:port")]
    BadBootstrap(String),
    #[error("kafka.partitions must be at least 1, got {0}")]
    Partitions(i32),
    #[error("kafka.replication_factor must be at least 1, got {0}")]
    Replication(i32),
    #[error("kafka.client.{0} is set by govbus and cannot be overridden")]
    Reserved(String),
}

/// Settings govbus owns because its guarantees depend on them.
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "enable.auto.offset.store",
    "group.id",
];

impl KafkaSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(SettingsError::NoBootstrap);
        }
        for server in self.bootstrap_servers.split(',') {
            let server = server.trim();
            let ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(SettingsError::BadBootstrap(server.to_string()));
            }
        }
        if self.partitions < 1 {
            return Err(SettingsError::Partitions(self.partitions));
        }
        if self.replication_factor < 1 {
            return Err(SettingsError::Replication(self.replication_factor));
        }
        if let Some(key) = self
            .client
            .keys()
            .find(|k| RESERVED.contains(&librdkafka_key(k).as_str()))
        {
            return Err(SettingsError::Reserved(key.clone()));
        }
        Ok(())
    }

    /// Whether the operator set a librdkafka property (in either spelling).
    pub fn sets(&self, property: &str) -> bool {
        self.client.keys().any(|k| librdkafka_key(k) == property)
    }

    /// A client configuration with the bootstrap servers and pass-through settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.client {
            config.set(librdkafka_key(key), value);
        }
        config
    }
}

/// librdkafka property names use dots and never underscores; environment
/// variables cannot carry dots, so `security_protocol` means `security.protocol`.
fn librdkafka_key(key: &str) -> String {
    key.replace('_', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let mut s = KafkaSettings {
            bootstrap_servers: "localhost:9092,kafka-2:9093".into(),
            ..Default::default()
        };
        s.validate().unwrap();
        s.bootstrap_servers = "localhost".into();
        assert!(matches!(s.validate(), Err(SettingsError::BadBootstrap(_))));
        s.bootstrap_servers = "localhost:9092".into();
        s.client.insert("enable.idempotence".into(), "false".into());
        assert!(matches!(s.validate(), Err(SettingsError::Reserved(_))));
    }
}
