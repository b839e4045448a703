//! What every govbus gRPC server has in common: health, reflection, trace
//! context from request metadata, and serving on a pre-bound listener until
//! a shutdown signal.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    metadata::MetadataMap,
    server::NamedService,
    transport::{server::Router, server::TcpIncoming},
};
use tonic_health::server::HealthReporter;

pub mod metrics;
#[doc(hidden)]
pub use tracing as __tracing;

/// The server span of one RPC, with the OpenTelemetry RPC attributes:
/// `rpc_span!("publish", "govbus.v1.AgencyAdapter", "Publish", records = n)`.
#[macro_export]
macro_rules! rpc_span {
    ($name:literal, $service:literal, $method:literal $(, $($fields:tt)*)?) => {
        $crate::__tracing::info_span!(
            $name,
            otel.name = concat!($service, "/", $method),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = $service,
            rpc.method = $method
            $(, $($fields)*)?
        )
    };
}
mod security;

pub use security::{
    Authenticator, Caller, PlaintextSettings, RateLimitSettings, Security, SecurityError, caller,
};

/// The largest request any govbus server accepts (a Publish batch).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Binds `addr` (port 0 picks a free port) and reports the address bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// A router carrying the standard health service and server reflection (v1
/// and v1alpha, so older grpcurl builds work too) over the govbus contracts.
/// Reflection lists `served` (the fully qualified names of the services this
/// server adds to the router), health and itself — not every service in the
/// contracts — while every message type stays resolvable.
pub fn base_router(
    security: &Security,
    served: &[&str],
) -> Result<(HealthReporter, Router), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        // Both versions of reflection describe both: each lists the other.
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(govbus_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        served
            .iter()
            .copied()
            .chain([
                HEALTH_SERVICE,
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ])
            .fold(builder, |builder, name| builder.with_service_name(name))
    };
    let v1 = reflection()
        .build_v1()
        .expect("compiled-in descriptors are valid");
    let v1alpha = reflection()
        .build_v1alpha()
        .expect("compiled-in descriptors are valid");
    let router = security
        .server_builder()?
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    Ok((reporter, router))
}

/// The standard health service's name.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Marks `S` as serving in the health service.
pub async fn set_serving<S: NamedService>(reporter: &HealthReporter) {
    reporter.set_serving::<S>().await;
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Reads W3C trace context from gRPC request metadata.
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl govbus_telemetry::TraceExtractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Makes `span` a child of the caller's trace, when the request carries one.
pub fn continue_trace(span: &tracing::Span, metadata: &MetadataMap) {
    govbus_telemetry::set_parent_from(span, &MetadataExtractor(metadata));
}

/// A token cancelled on the first SIGINT (Ctrl-C) or SIGTERM. A second
/// signal exits at once, for an operator who does not want to wait for the
/// grace period.
pub fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal; exiting without draining");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
