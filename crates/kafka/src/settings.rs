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
    /// Passed through to every librdkafka client (e.g. `security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`); `_` may stand for `.`, as
    /// environment variables need.
    pub client: BTreeMap<String, String>,
    /// Passed through to consumers only (e.g. `session.timeout.ms`), over
    /// `client`. librdkafka warns at every producer that is given a
    /// consumer property, and the other way round.
    pub consumer: BTreeMap<String, String>,
    /// Passed through to producers only (e.g. `message.timeout.ms`,
    /// `linger.ms`), over `client`.
    pub producer: BTreeMap<String, String>,
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
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
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
    /// The setting's whole name, e.g. `kafka.consumer.group.id`.
    #[error("{0} is set by govbus and cannot be overridden")]
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
        for (section, settings) in [
            ("client", &self.client),
            ("consumer", &self.consumer),
            ("producer", &self.producer),
        ] {
            if let Some(key) = settings
                .keys()
                .find(|k| RESERVED.contains(&librdkafka_key(k).as_str()))
            {
                return Err(SettingsError::Reserved(format!("kafka.{section}.{key}")));
            }
        }
        Ok(())
    }

    /// Whether the operator set a librdkafka property for `role` (in either
    /// spelling).
    pub fn sets(&self, role: Role, property: &str) -> bool {
        [&self.client, self.only(role)]
            .into_iter()
            .flat_map(BTreeMap::keys)
            .any(|k| librdkafka_key(k) == property)
    }

    /// A configuration for a client in `role`: the bootstrap servers, the
    /// settings for every client, then those for the role alone.
    pub fn config_for(&self, role: Role) -> ClientConfig {
        let mut config = self.client_config();
        for (key, value) in self.only(role) {
            config.set(librdkafka_key(key), value);
        }
        config
    }

    /// `config_for(role)` with `defaults` for the properties the operator
    /// did not set (for `role` or for every client).
    pub fn config_with_defaults(&self, role: Role, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.config_for(role);
        for (key, value) in defaults {
            if !self.sets(role, key) {
                config.set(*key, *value);
            }
        }
        config
    }

    /// A configuration for an admin client: the bootstrap servers and the
    /// settings for every client.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.client {
            config.set(librdkafka_key(key), value);
        }
        config
    }

    fn only(&self, role: Role) -> &BTreeMap<String, String> {
        match role {
            Role::Consumer => &self.consumer,
            Role::Producer => &self.producer,
        }
    }
}

/// What a librdkafka client does, for the settings that apply to it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
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
        s.client.clear();
        s.consumer.insert("group_id".into(), "theirs".into());
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "kafka.consumer.group_id is set by govbus and cannot be overridden"
        );
        s.consumer.clear();
        s.producer
            .insert("enable.idempotence".into(), "false".into());
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "kafka.producer.enable.idempotence is set by govbus and cannot be overridden"
        );
    }

    #[test]
    fn a_role_gets_the_common_settings_and_its_own_only() {
        let mut s = KafkaSettings {
            bootstrap_servers: "localhost:9092".into(),
            ..Default::default()
        };
        s.client.insert("socket_timeout_ms".into(), "10000".into());
        s.client.insert("client.id".into(), "everyone".into());
        s.consumer
            .insert("session_timeout_ms".into(), "6000".into());
        s.consumer.insert("client.id".into(), "reader".into());
        s.producer.insert("linger.ms".into(), "5".into());
        s.validate().unwrap();

        let consumer = s.config_for(Role::Consumer);
        assert_eq!(consumer.get("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(consumer.get("socket.timeout.ms"), Some("10000"));
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        // The role's own value wins over the common one.
        assert_eq!(consumer.get("client.id"), Some("reader"));
        assert_eq!(consumer.get("linger.ms"), None);

        let producer = s.config_for(Role::Producer);
        assert_eq!(producer.get("socket.timeout.ms"), Some("10000"));
        assert_eq!(producer.get("linger.ms"), Some("5"));
        assert_eq!(producer.get("client.id"), Some("everyone"));
        assert_eq!(producer.get("session.timeout.ms"), None);

        let admin = s.client_config();
        assert_eq!(admin.get("session.timeout.ms"), None);
        assert_eq!(admin.get("linger.ms"), None);

        assert!(s.sets(Role::Consumer, "session.timeout.ms"));
        assert!(!s.sets(Role::Producer, "session.timeout.ms"));
        assert!(s.sets(Role::Producer, "socket.timeout.ms"));
        assert!(s.sets(Role::Producer, "linger.ms"));
        assert!(!s.sets(Role::Consumer, "linger.ms"));

        // A default gives way to the operator's value for the role or for
        // every client, and fills the rest.
        let defaults = [
            ("linger.ms", "2"),
            ("socket.timeout.ms", "1"),
            ("acks", "all"),
        ];
        let producer = s.config_with_defaults(Role::Producer, &defaults);
        assert_eq!(producer.get("linger.ms"), Some("5"));
        assert_eq!(producer.get("socket.timeout.ms"), Some("10000"));
        assert_eq!(producer.get("acks"), Some("all"));
        let consumer = s.config_with_defaults(Role::Consumer, &defaults);
        assert_eq!(consumer.get("linger.ms"), Some("2"));
    }
}
