//! The agency adapter: a gRPC facade and a database connector in front of
//! one agency information system, publishing its records to Kafka.

mod config;
mod grpc;
mod inbox;
mod outbox;
mod publisher;
pub mod subscription;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use govbus_core::{Catalog, ConfigError, RecordLimits};
use govbus_kafka::RecordProducer;
use govbus_policy::PolicyStore;
use govbus_proto::v1::agency_adapter_server::AgencyAdapterServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::server::Router};
use tracing::{info, warn};

pub use config::{AdapterConfig, InboxConfig, OutboxConfig};
pub use grpc::{AdapterService, PublishError};
pub use inbox::{InboxWriter, inbox_table_ddl};
pub use outbox::{OutboxConnector, OutboxError, outbox_table_ddl};
pub use publisher::{Prepared, Preparer, Publisher, Refusal};
use subscription::{SubscriptionSettings, Subscriptions};

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("outbox database: {0}")]
    Outbox(#[from] govbus_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Security(#[from] govbus_server::SecurityError),
    #[error("signing key: {0}")]
    Signing(#[from] govbus_security::SignError),
    #[error(transparent)]
    Policy(#[from] govbus_policy::PolicyError),
}

/// A built adapter: listening, connected, not yet serving.
pub struct Adapter {
    metrics: Option<govbus_server::metrics::MetricsEndpoint>,
    identity: String,
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    publisher: Arc<Publisher>,
    outbox: Option<OutboxConnector>,
    subscriptions: Arc<Subscriptions>,
    inbox: Option<InboxWriter>,
    policy_watch: Option<(std::path::PathBuf, Duration)>,
    catalog: Arc<Catalog>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("identity", &self.identity)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Adapter {
    pub async fn build(config: AdapterConfig) -> Result<Self, AdapterError> {
        config.validate()?;
        let tls = config.tls.as_ref().expect("validated: tls is set");
        let security = govbus_server::Security::load(
            tls,
            config.insecure_plaintext.as_ref(),
            config.rate_limit,
        )?;
        let catalog = Arc::new(Catalog::builtin());
        if config.kafka.manage_topics {
            let topics = govbus_kafka::with_system_topics(catalog.topics());
            govbus_kafka::ensure_topics(&config.kafka, &topics).await?;
        }
        let producer = RecordProducer::new(&config.kafka)?;
        let limits = RecordLimits {
            max_payload_bytes: config.max_payload_bytes,
            ..RecordLimits::default()
        };
        let policy = PolicyStore::new(govbus_policy::initial(
            config.policy_file.as_deref(),
            &catalog,
        )?);
        let subscriptions = Arc::new(Subscriptions::new(SubscriptionSettings {
            identity: security.identity().clone(),
            catalog: catalog.clone(),
            policy,
            ca_der: security.tls().ca_der().to_vec(),
            kafka: config.kafka.clone(),
            producer: producer.clone(),
            buffer: config.subscription_buffer,
        }));
        let publisher = Arc::new(Publisher::new(
            catalog.clone(),
            producer,
            limits,
            security.signer(tls, config.signing.as_ref())?,
        ));
        let identity = security.identity().to_string();
        let outbox = match &config.outbox {
            Some(outbox) => {
                Some(OutboxConnector::open(outbox, identity.clone(), publisher.clone()).await?)
            }
            None => None,
        };
        let inbox = match &config.inbox {
            Some(inbox) => Some(InboxWriter::open(inbox, subscriptions.clone()).await?),
            None => None,
        };

        let (listener, local_addr) =
            govbus_server::bind(config.listen)
                .await
                .map_err(|source| AdapterError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let (health, router) = govbus_server::base_router(
            &security,
            &[<AgencyAdapterServer<AdapterService> as tonic::server::NamedService>::NAME],
        )?;
        govbus_server::set_serving::<AgencyAdapterServer<AdapterService>>(&health).await;
        let service = AgencyAdapterServer::new(AdapterService::new(
            publisher.clone(),
            subscriptions.clone(),
            config.max_batch,
        ))
        .max_decoding_message_size(govbus_server::MAX_REQUEST_BYTES);
        let router = router.add_service(InterceptedService::new(service, security.authenticator()));
        let metrics = govbus_server::metrics::MetricsEndpoint::bind(config.metrics_listen)
            .await
            .map_err(|source| AdapterError::Bind {
                addr: config.metrics_listen.unwrap_or(config.listen),
                source,
            })?;
        Ok(Self {
            metrics,
            identity,
            listener,
            local_addr,
            router,
            publisher,
            outbox,
            subscriptions,
            inbox,
            policy_watch: config
                .policy_file
                .clone()
                .map(|path| (path, config.policy_reload())),
            catalog,
        })
    }

    /// The adapter's subscriptions (open streams, acknowledgements).
    pub fn subscriptions(&self) -> &Arc<Subscriptions> {
        &self.subscriptions
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `GET /metrics` is served, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight calls
    /// and the outbox round under way, and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AdapterError> {
        info!(identity = %self.identity, addr = %self.local_addr, "adapter serving");
        // Everything beside the server stops with `shutdown`, or when the
        // server itself fails.
        let stop = shutdown.child_token();
        let metrics = self.metrics.map(|m| m.spawn(stop.clone()));
        let outbox = self
            .outbox
            .map(|connector| tokio::spawn(connector.run(stop.clone())));
        let inbox = self
            .inbox
            .map(|inbox| tokio::spawn(inbox.run(stop.clone())));
        if let Some((path, every)) = self.policy_watch {
            let policy = self.subscriptions.policy().clone();
            tokio::spawn(policy.watch(path, self.catalog.clone(), every, stop.clone()));
        }
        // Subscription streams never end by themselves: end them, so the
        // server's graceful stop does not wait for them forever.
        let subscriptions = self.subscriptions.clone();
        let streams_stop = stop.clone();
        let streams_closed = tokio::spawn(async move {
            streams_stop.cancelled().await;
            subscriptions.close().await;
        });
        let served = govbus_server::serve(
            self.listener,
            self.router,
            shutdown.clone().cancelled_owned(),
        )
        .await;
        stop.cancel();
        for task in [outbox, inbox].into_iter().flatten() {
            let _ = task.await;
        }
        let _ = streams_closed.await;
        if let Some(task) = metrics {
            let _ = task.await;
        }
        if let Err(e) = self.publisher.producer().flush(Duration::from_secs(10)) {
            warn!(error = %e, "producer flush incomplete at shutdown");
        }
        info!(identity = %self.identity, "adapter stopped");
        Ok(served?)
    }
}
