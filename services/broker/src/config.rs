//! Broker configuration.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use govbus_core::ConfigError;
use govbus_kafka::KafkaSettings;
use govbus_security::{SigningSettings, TlsSettings};
use govbus_server::{PlaintextSettings, RateLimitSettings};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// The bus CA (which also checks record signatures) and the broker's
    /// own certificate and key.
    pub tls: Option<TlsSettings>,
    /// The broker's signing certificate and key (Ed25519, made for document
    /// signing, never the transport key): they sign the audit checkpoints.
    /// Unset: the files beside the transport ones, `<stem>.signing.pem` and
    /// `<stem>.signing.key`.
    pub signing: Option<SigningSettings>,
    /// Development only: serve gRPC without TLS (see README).
    pub insecure_plaintext: Option<PlaintextSettings>,
    pub rate_limit: RateLimitSettings,
    /// The access policy (grants, consent). Without one, every evidence
    /// request is denied.
    pub policy_file: Option<PathBuf>,
    /// How often the policy file is checked for changes.
    pub policy_reload_ms: u64,
    /// Where the audit trail is kept (`sqlite://…` or `postgres://…`);
    /// unset: in the showcase database. On SQLite give it a file of its own:
    /// every audit commit otherwise empties the page cache of every
    /// showcase reader (see docs/PROFILING.md).
    pub audit_database_url: Option<String>,
    /// This broker's audit hash chain. Replicas sharing a database need
    /// distinct names (e.g. the pod name).
    pub audit_chain: String,
    /// Sign the chain head every this many entries (and at shutdown).
    pub audit_checkpoint_every: i64,
    /// Prometheus metrics on `GET /metrics` at this address; off when unset.
    pub metrics_listen: Option<SocketAddr>,
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
            tls: None,
            signing: None,
            insecure_plaintext: None,
            rate_limit: RateLimitSettings::default(),
            policy_file: None,
            policy_reload_ms: 1000,
            audit_database_url: None,
            audit_chain: "broker".into(),
            audit_checkpoint_every: 1000,
            metrics_listen: None,
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
        if self.tls.is_none() {
            return Err(ConfigError::new(
                "tls (ca, cert, key) is required: the CA checks callers and record signatures",
            ));
        }
        if self.audit_chain.is_empty()
            || self.audit_chain.len() > 64
            || self.audit_chain.contains('.')
        {
            return Err(ConfigError::new(
                "audit_chain must be 1-64 characters without '.'",
            ));
        }
        if self.audit_checkpoint_every < 1 {
            return Err(ConfigError::new(
                "audit_checkpoint_every must be at least 1",
            ));
        }
        if self.policy_reload_ms == 0 {
            return Err(ConfigError::new("policy_reload_ms must be at least 1"));
        }
        govbus_store::Backend::from_url(&self.database_url)
            .map_err(|e| ConfigError::new(format!("database_url: {e}")))?;
        if let Some(url) = &self.audit_database_url {
            govbus_store::Backend::from_url(url)
                .map_err(|e| ConfigError::new(format!("audit_database_url: {e}")))?;
        }
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

    pub fn policy_reload(&self) -> Duration {
        Duration::from_millis(self.policy_reload_ms)
    }

    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms)
    }
}
