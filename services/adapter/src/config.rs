//! Adapter configuration.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use govbus_core::ConfigError;
use govbus_kafka::KafkaSettings;
use govbus_security::{SigningSettings, TlsSettings};
use govbus_server::{PlaintextSettings, RateLimitSettings};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterConfig {
    /// The bus CA and this system's transport certificate and key. The
    /// certificate's identity (`agency/<agency>/system/<system>`) is the
    /// adapter's: it is the source of every record published here, and only
    /// callers with that same identity may publish.
    pub tls: Option<TlsSettings>,
    /// This system's record signing certificate and key (Ed25519, made for
    /// document signing, never the transport key): they sign every record
    /// published here. Unset: the files beside the transport ones,
    /// `<stem>.signing.pem` and `<stem>.signing.key`.
    pub signing: Option<SigningSettings>,
    /// Development only: serve gRPC without TLS (see README).
    pub insecure_plaintext: Option<PlaintextSettings>,
    pub rate_limit: RateLimitSettings,
    /// Prometheus metrics on `GET /metrics` at this address; off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// gRPC listen address.
    pub listen: SocketAddr,
    pub kafka: KafkaSettings,
    /// Largest number of records in one Publish call.
    pub max_batch: usize,
    /// Largest payload of one record, in bytes.
    pub max_payload_bytes: usize,
    /// Reads records from a table in the agency's own database.
    pub outbox: Option<OutboxConfig>,
    /// The access policy; its `[[subscription]]` grants decide what this
    /// system may subscribe to. Without one, every subscription is refused.
    pub policy_file: Option<PathBuf>,
    /// How often the policy file is checked for changes.
    pub policy_reload_ms: u64,
    /// Deliveries one subscription stream holds before its Kafka consumer
    /// pauses (flow control for slow subscribers).
    pub subscription_buffer: usize,
    /// Writes subscribed records into a table in the agency's own database.
    pub inbox: Option<InboxConfig>,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            tls: None,
            signing: None,
            insecure_plaintext: None,
            rate_limit: RateLimitSettings::default(),
            metrics_listen: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 50061)),
            kafka: KafkaSettings::default(),
            max_batch: 1000,
            max_payload_bytes: govbus_core::RecordLimits::default().max_payload_bytes,
            outbox: None,
            policy_file: None,
            policy_reload_ms: 1000,
            subscription_buffer: 256,
            inbox: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// `sqlite://…` or `postgres://…` of the agency's database.
    pub database_url: String,
    /// The agency's outbox table (see the README for its columns).
    pub table: String,
    /// How often to look for new rows when the last look found none.
    pub poll_interval_ms: u64,
    /// Rows read and published per round.
    pub batch_size: i64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            table: "govbus_outbox".into(),
            poll_interval_ms: 200,
            batch_size: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// `sqlite://…` or `postgres://…` of the agency's database.
    pub database_url: String,
    /// The inbox table, created by the adapter if missing.
    pub table: String,
    /// The subscription (durable cursor) the inbox is filled from.
    pub subscription: String,
    /// Record types to receive; each needs a `[[subscription]]` grant.
    pub record_types: Vec<String>,
    /// Deliveries written per transaction, at most.
    pub batch_size: usize,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            table: "govbus_inbox".into(),
            subscription: "inbox".into(),
            record_types: Vec::new(),
            batch_size: 500,
        }
    }
}

impl OutboxConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

impl AdapterConfig {
    /// Checks everything that can be checked before connecting anywhere.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls.is_none() {
            return Err(ConfigError::new(
                "tls (ca, cert, key) is required: the adapter's identity comes from its certificate",
            ));
        }
        self.kafka
            .validate()
            .map_err(|e| ConfigError::new(e.to_string()))?;
        if self.max_batch == 0 {
            return Err(ConfigError::new("max_batch must be at least 1"));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 900 * 1024 {
            return Err(ConfigError::new(
                "max_payload_bytes must be between 1 and 921600 (Kafka's message limit leaves room for the envelope)",
            ));
        }
        if let Some(outbox) = &self.outbox {
            govbus_store::Backend::from_url(&outbox.database_url)
                .map_err(|e| ConfigError::new(format!("outbox.database_url: {e}")))?;
            check_table("outbox.table", &outbox.table)?;
            if outbox.batch_size < 1 || outbox.poll_interval_ms == 0 {
                return Err(ConfigError::new(
                    "outbox.batch_size and outbox.poll_interval_ms must be at least 1",
                ));
            }
        }
        if self.policy_reload_ms == 0 || self.subscription_buffer == 0 {
            return Err(ConfigError::new(
                "policy_reload_ms and subscription_buffer must be at least 1",
            ));
        }
        if let Some(inbox) = &self.inbox {
            if self.policy_file.is_none() {
                return Err(ConfigError::new(
                    "inbox needs policy_file: its subscription is allowed only by a [[subscription]] grant",
                ));
            }
            govbus_store::Backend::from_url(&inbox.database_url)
                .map_err(|e| ConfigError::new(format!("inbox.database_url: {e}")))?;
            check_table("inbox.table", &inbox.table)?;
            let catalog = govbus_core::Catalog::builtin();
            if inbox.record_types.is_empty() {
                return Err(ConfigError::new(
                    "inbox.record_types: name at least one record type",
                ));
            }
            if let Some(unknown) = inbox.record_types.iter().find(|t| catalog.get(t).is_none()) {
                return Err(ConfigError::new(format!(
                    "inbox.record_types: unknown record type {unknown:?}"
                )));
            }
            if inbox.batch_size == 0 {
                return Err(ConfigError::new("inbox.batch_size must be at least 1"));
            }
        }
        Ok(())
    }

    pub fn policy_reload(&self) -> Duration {
        Duration::from_millis(self.policy_reload_ms)
    }
}

/// Table names are put into SQL as they are, so only plain identifiers.
fn check_table(setting: &str, table: &str) -> Result<(), ConfigError> {
    let ok = !table.is_empty()
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !table.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(format!(
            "{setting} {table:?} must be a plain SQL identifier (letters, digits, _)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> AdapterConfig {
        AdapterConfig {
            tls: Some(TlsSettings {
                ca: "ca.pem".into(),
                cert: "fhdy.pem".into(),
                key: "fhdy.key".into(),
            }),
            kafka: KafkaSettings {
                bootstrap_servers: "127.0.0.1:9092".into(),
                ..KafkaSettings::default()
            },
            policy_file: Some("policy.toml".into()),
            ..AdapterConfig::default()
        }
    }

    #[test]
    fn validation_names_the_setting() {
        valid().validate().unwrap();
        let check = |mutate: fn(&mut AdapterConfig), expected: &str| {
            let mut c = valid();
            mutate(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        };
        check(|c| c.tls = None, "tls (ca, cert, key) is required");
        check(|c| c.max_batch = 0, "max_batch");
        check(
            |c| {
                c.outbox = Some(OutboxConfig {
                    database_url: "mysql://x".into(),
                    ..OutboxConfig::default()
                })
            },
            "outbox.database_url",
        );
        check(
            |c| {
                c.outbox = Some(OutboxConfig {
                    database_url: "sqlite://x.db".into(),
                    table: "outbox; DROP TABLE x".into(),
                    ..OutboxConfig::default()
                })
            },
            "outbox.table",
        );
        check(|c| c.subscription_buffer = 0, "subscription_buffer");
        check(
            |c| {
                c.policy_file = None;
                c.inbox = Some(InboxConfig {
                    database_url: "sqlite://x.db".into(),
                    record_types: vec!["marriage_certificate".into()],
                    ..InboxConfig::default()
                })
            },
            "inbox needs policy_file",
        );
        check(
            |c| {
                c.inbox = Some(InboxConfig {
                    database_url: "sqlite://x.db".into(),
                    ..InboxConfig::default()
                })
            },
            "inbox.record_types: name at least one",
        );
        check(
            |c| {
                c.inbox = Some(InboxConfig {
                    database_url: "sqlite://x.db".into(),
                    record_types: vec!["death_certificate".into()],
                    ..InboxConfig::default()
                })
            },
            "unknown record type \"death_certificate\"",
        );
        check(
            |c| {
                c.inbox = Some(InboxConfig {
                    database_url: "sqlite://x.db".into(),
                    table: "1nbox".into(),
                    record_types: vec!["marriage_certificate".into()],
                    ..InboxConfig::default()
                })
            },
            "inbox.table",
        );
    }
}
