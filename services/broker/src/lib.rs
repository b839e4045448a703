//! The once-only broker: consumes record topics into the showcase and answers
//! evidence queries from it.

mod config;
mod evidence;
mod ingest;

use std::{net::SocketAddr, sync::Arc};

use govbus_core::{Catalog, ConfigError};
use govbus_proto::v1::once_only_server::OnceOnlyServer;
use govbus_store::Showcase;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;
use tracing::info;

pub use config::BrokerConfig;
pub use evidence::{EvidenceError, EvidenceQuery, OnceOnlyService};
pub use ingest::{Freshness, Ingestor};

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
}

/// A built broker: showcase migrated, consumer subscribed, listening.
pub struct Broker {
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
        let catalog = Arc::new(Catalog::builtin());
        if config.kafka.manage_topics {
            let mut topics = catalog.topics();
            topics.push(govbus_kafka::DEAD_LETTER_TOPIC.to_string());
            govbus_kafka::ensure_topics(&config.kafka, &topics).await?;
        }
        let showcase = Showcase::open(&config.database_url).await?;
        let freshness = Arc::new(Freshness::default());
        let ingestor = Ingestor::new(
            &config.kafka,
            &config.group_id,
            showcase.clone(),
            catalog.clone(),
            freshness.clone(),
            config.batch_max,
            config.batch_wait(),
        )?;
        let (listener, local_addr) =
            govbus_server::bind(config.listen)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let (health, router) = govbus_server::base_router();
        govbus_server::set_serving::<OnceOnlyServer<OnceOnlyService>>(&health).await;
        let router = router.add_service(OnceOnlyServer::new(OnceOnlyService::new(
            showcase.clone(),
            catalog,
            freshness,
        )));
        Ok(Self {
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
        let served =
            govbus_server::serve(self.listener, self.router, stop.clone().cancelled_owned()).await;
        // A server error ends the broker: stop ingest too.
        stop.cancel();
        let _ = ingest.await;
        info!("broker stopped");
        Ok(served?)
    }
}
