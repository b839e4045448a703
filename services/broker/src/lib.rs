//! The once-only broker: consumes record topics into the showcase and answers
//! evidence queries from it.

mod checks;
mod config;
mod consent;
mod evidence;
mod ingest;
mod policy;
mod replay;

use std::{net::SocketAddr, sync::Arc};

use govbus_core::{Catalog, ConfigError};
use govbus_proto::v1::{consents_server::ConsentsServer, once_only_server::OnceOnlyServer};
use govbus_store::Showcase;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::server::Router};
use tracing::info;

pub use config::BrokerConfig;
pub use consent::ConsentService;
pub use evidence::{EvidenceError, EvidenceQuery, OnceOnlyService};
pub use ingest::{Freshness, IngestSettings, Ingestor};
pub use policy::{Denial, Policy, PolicyError, PolicyStore};
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
    let checker = checks::RecordChecker::new(Arc::new(Catalog::builtin()), tls.ca_der().to_vec());
    let showcase = Showcase::open(into).await?;
    replay::rebuild(&config.kafka, &checker, &showcase, config.batch_max).await
}

/// A built broker: showcase migrated, consumer subscribed, listening.
pub struct Broker {
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
        let policy = PolicyStore::new(policy::initial(config.policy_file.as_deref(), &catalog)?);
        if config.kafka.manage_topics {
            let mut topics = catalog.topics();
            topics.push(govbus_kafka::DEAD_LETTER_TOPIC.to_string());
            govbus_kafka::ensure_topics(&config.kafka, &topics).await?;
        }
        let showcase = Showcase::open(&config.database_url).await?;
        let freshness = Arc::new(Freshness::default());
        let ingestor = Ingestor::new(
            IngestSettings {
                kafka: &config.kafka,
                group_id: &config.group_id,
                ca_der: security.tls().ca_der().to_vec(),
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
        let (health, router) = govbus_server::base_router(&security)?;
        govbus_server::set_serving::<OnceOnlyServer<OnceOnlyService>>(&health).await;
        govbus_server::set_serving::<ConsentsServer<ConsentService>>(&health).await;
        let once_only = OnceOnlyServer::new(OnceOnlyService::new(
            showcase.clone(),
            catalog.clone(),
            freshness,
            policy.clone(),
        ));
        let consents = ConsentsServer::new(ConsentService::new(
            govbus_store::Consents::new(showcase.database().clone()),
            catalog.clone(),
            policy.clone(),
        ));
        let router = router
            .add_service(InterceptedService::new(once_only, security.authenticator()))
            .add_service(InterceptedService::new(consents, security.authenticator()));
        Ok(Self {
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
        if let Some((path, every)) = self.policy_watch {
            tokio::spawn(self.policy.watch(path, self.catalog, every, stop.clone()));
        }
        let served =
            govbus_server::serve(self.listener, self.router, stop.clone().cancelled_owned()).await;
        // A server error ends the broker: stop ingest too.
        stop.cancel();
        let _ = ingest.await;
        info!("broker stopped");
        Ok(served?)
    }
}
