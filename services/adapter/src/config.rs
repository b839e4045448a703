//! Adapter configuration.

use std::{net::SocketAddr, time::Duration};

use govbus_core::ConfigError;
use govbus_kafka::KafkaSettings;
use govbus_security::TlsSettings;
use govbus_server::{PlaintextSettings, RateLimitSettings};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterConfig {
    /// The bus CA and this system's certificate and key. The certificate's
    /// identity (`agency/<agency>/system/<system>`) is the adapter's: it is
    /// the source of every record published here, its key signs them, and
    /// only callers with that same identity may publish.
    pub tls: Option<TlsSettings>,
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
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            tls: None,
            insecure_plaintext: None,
            rate_limit: RateLimitSettings::default(),
            metrics_listen: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 50061)),
            kafka: KafkaSettings::default(),
            max_batch: 1000,
            max_payload_bytes: govbus_core::RecordLimits::default().max_payload_bytes,
            outbox: None,
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
                "tls (ca, cert, key) is required: the adapter's identity and signing key come from its certificate",
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
            let table_ok = !outbox.table.is_empty()
                && outbox
                    .table
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !outbox.table.as_bytes()[0].is_ascii_digit();
            if !table_ok {
                return Err(ConfigError::new(format!(
                    "outbox.table {:?} must be a plain SQL identifier (letters, digits, _)",
                    outbox.table
                )));
            }
            if outbox.batch_size < 1 || outbox.poll_interval_ms == 0 {
                return Err(ConfigError::new(
                    "outbox.batch_size and outbox.poll_interval_ms must be at least 1",
                ));
            }
        }
        Ok(())
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
    }
}
