//! The once-only broker: consumes record topics into the showcase and answers
//! evidence queries from it.

mod accesses;
mod audit;
mod audit_copy;
mod config;
mod consent;
mod evidence;
mod ingest;
mod ingest_batch;
mod ingest_offsets;
mod replay;

use std::{net::SocketAddr, sync::Arc};

use govbus_core::{Catalog, ConfigError};
use govbus_proto::{served::once_only_server::OnceOnlyServer, v1::consents_server::ConsentsServer};
use govbus_store::Showcase;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::server::Router};
use tracing::info;

pub use config::BrokerConfig;
pub use consent::ConsentService;
pub use evidence::{EvidenceError, EvidenceQuery, OnceOnlyService};
pub use govbus_policy::{Denial, Policy, PolicyError, PolicyStore};
pub use ingest::{Freshness, IngestSettings, Ingestor};
pub use replay::RebuildReport;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("showcase: {0}")]
    Store(#[from] govbus_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Security(#[from] govbus_server::SecurityError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("replay: {0}")]
    Replay(String),
}

/// Rebuilds the showcase at `into` from the record topics alone, with the
/// broker's Kafka settings and CA. See [`replay`](crate::replay).
pub async fn rebuild_showcase(
    config: &BrokerConfig,
    into: &str,
) -> Result<RebuildReport, BrokerError> {
    let tls = config.tls.as_ref().ok_or_else(|| {
        ConfigError::new("tls (ca, cert, key) is required: the CA checks record signatures")
    })?;
    config
        .kafka
        .validate()
        .map_err(|e| ConfigError::new(e.to_string()))?;
    let tls =
        govbus_security::TlsMaterial::load(tls).map_err(govbus_server::SecurityError::from)?;
    let checker =
        govbus_security::RecordChecker::new(Arc::new(Catalog::builtin()), tls.ca_der().to_vec());
    let showcase = Showcase::open(into).await?;
    replay::rebuild(&config.kafka, &checker, &showcase, config.batch_max).await
}

/// A built broker: showcase migrated, consumer subscribed, listening.
pub struct Broker {
    metrics: Option<govbus_server::metrics::MetricsEndpoint>,
    audit_worker: audit::AuditWorker,
    audit_copy: (audit_copy::AuditCopy, govbus_kafka::RecordProducer),
    policy: PolicyStore,
    policy_watch: Option<(std::path::PathBuf, std::time::Duration)>,
    catalog: Arc<Catalog>,
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    ingestor: Ingestor,
    showcase: Showcase,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Broker {
    pub async fn build(config: BrokerConfig) -> Result<Self, BrokerError> {
        config.validate()?;
        let tls = config.tls.as_ref().expect("validated: tls is set");
        let security = govbus_server::Security::load(
            tls,
            config.insecure_plaintext.as_ref(),
            config.rate_limit,
        )?;
        let catalog = Arc::new(Catalog::builtin());
        let policy = PolicyStore::new(govbus_policy::initial(
            config.policy_file.as_deref(),
            &catalog,
        )?);
        if config.kafka.manage_topics {
            let topics = govbus_kafka::with_system_topics(catalog.topics());
            govbus_kafka::ensure_topics(&config.kafka, &topics).await?;
        }
        let showcase = Showcase::open(&config.database_url).await?;
        // One idempotent producer for dead letters and the audit topic.
        let producer = govbus_kafka::RecordProducer::new(&config.kafka)?;
        let freshness = Arc::new(Freshness::default());
        let ingestor = Ingestor::new(
            IngestSettings {
                kafka: &config.kafka,
                group_id: &config.group_id,
                ca_der: security.tls().ca_der().to_vec(),
                dead_letters: producer.clone(),
                batch_max: config.batch_max,
                batch_wait: config.batch_wait(),
            },
            showcase.clone(),
            catalog.clone(),
            freshness.clone(),
        )?;
        let (listener, local_addr) =
            govbus_server::bind(config.listen)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let (health, router) = govbus_server::base_router(
            &security,
            &[
                <OnceOnlyServer<OnceOnlyService> as tonic::server::NamedService>::NAME,
                <ConsentsServer<ConsentService> as tonic::server::NamedService>::NAME,
            ],
        )?;
        govbus_server::set_serving::<OnceOnlyServer<OnceOnlyService>>(&health).await;
        govbus_server::set_serving::<ConsentsServer<ConsentService>>(&health).await;
        let audit_log = match &config.audit_database_url {
            Some(url) => govbus_store::AuditLog::open(url).await?,
            None => govbus_store::AuditLog::new(showcase.database().clone()),
        };
        let (audit, audit_worker, audit_copy) = audit::AuditTrail::new(
            audit_log.clone(),
            config.audit_chain.clone(),
            security.signer(tls, config.signing.as_ref())?,
            config.audit_checkpoint_every,
        );
        let audit_copy = (audit_copy, producer);
        let once_only = OnceOnlyServer::new(OnceOnlyService::new(
            showcase.clone(),
            catalog.clone(),
            freshness,
            policy.clone(),
            (audit, audit_log.clone()),
        ));
        let consents = ConsentsServer::new(ConsentService::new(
            govbus_store::Consents::new(showcase.database().clone()),
            catalog.clone(),
            policy.clone(),
        ));
        let router = router
            .add_service(InterceptedService::new(once_only, security.authenticator()))
            .add_service(InterceptedService::new(consents, security.authenticator()));
        let metrics = govbus_server::metrics::MetricsEndpoint::bind(config.metrics_listen)
            .await
            .map_err(|source| BrokerError::Bind {
                addr: config.metrics_listen.unwrap_or(config.listen),
                source,
            })?;
        Ok(Self {
            metrics,
            audit_worker,
            audit_copy,
            policy,
            policy_watch: config
                .policy_file
                .clone()
                .map(|path| (path, config.policy_reload())),
            catalog,
            listener,
            local_addr,
            router,
            ingestor,
            showcase,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `GET /metrics` is served, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    /// The showcase this broker writes (for operators' tools and tests).
    pub fn showcase(&self) -> &Showcase {
        &self.showcase
    }

    /// Ingests and serves until `shutdown` is cancelled; then finishes the
    /// batch and the calls under way and commits the consumer's offsets.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BrokerError> {
        info!(addr = %self.local_addr, "broker serving");
        let stop = shutdown.child_token();
        let ingest = tokio::spawn(self.ingestor.run(stop.clone()));
        let metrics = self.metrics.map(|m| m.spawn(stop.clone()));
        let size = tokio::spawn(report_showcase_size(self.showcase.clone(), stop.clone()));
        let audit_writer = tokio::spawn(self.audit_worker.run());
        // Ends after the writer, with what it committed last.
        let (audit_copy, producer) = self.audit_copy;
        let audit_copy = tokio::spawn(audit_copy.run(producer));
        if let Some((path, every)) = self.policy_watch {
            tokio::spawn(self.policy.watch(path, self.catalog, every, stop.clone()));
        }
        let served =
            govbus_server::serve(self.listener, self.router, stop.clone().cancelled_owned()).await;
        // A server error ends the broker: stop ingest too.
        stop.cancel();
        let _ = ingest.await;
        // The server (and with it every audit handle) is gone: the writer
        // commits what it holds, signs the head and ends.
        let _ = audit_writer.await;
        let _ = audit_copy.await;
        let _ = size.await;
        if let Some(task) = metrics {
            let _ = task.await;
        }
        info!("broker stopped");
        Ok(served?)
    }
}

/// Keeps the `govbus_showcase_records` gauge current (every 30 s: a count
/// of a large showcase is not free).
async fn report_showcase_size(showcase: Showcase, stop: CancellationToken) {
    loop {
        if let Ok(n) = showcase.count().await {
            metrics::gauge!("govbus_showcase_records").set(n as f64);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
        }
    }
}
