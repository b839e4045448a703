//! Prometheus metrics: one registry per process (the `metrics` facade),
//! served as text on `GET /metrics` by a small HTTP listener of each service.

use std::{future::Future, net::SocketAddr, sync::OnceLock, time::Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::warn;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from a cached lookup to a slow write.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process's recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = install();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics listener; port 0 picks a free port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Runs one RPC's handler, then counts it and records its latency.
pub async fn observed<T>(
    service: &'static str,
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let started = Instant::now();
    let result = call.await;
    observe_rpc(service, method, started, &result);
    result
}

/// Counts a finished RPC and records its latency, by method and status code.
fn observe_rpc<T>(
    service: &'static str,
    method: &'static str,
    started: Instant,
    result: &Result<T, tonic::Status>,
) {
    let code = match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    let code = code_name(code);
    metrics::counter!("govbus_rpc_requests_total", "service" => service, "method" => method, "code" => code)
        .increment(1);
    metrics::histogram!("govbus_rpc_duration_seconds", "service" => service, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// The code's name as its `Debug` form spells it, without formatting a
/// string on every call.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// A bound metrics listener, served once the service runs.
#[derive(Debug)]
pub struct MetricsEndpoint {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Binds `addr` when metrics are configured.
    pub async fn bind(addr: Option<SocketAddr>) -> std::io::Result<Option<Self>> {
        install();
        match addr {
            None => Ok(None),
            Some(addr) => {
                let (listener, addr) = bind(addr).await?;
                Ok(Some(Self { listener, addr }))
            }
        }
    }

    pub fn spawn(self, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(e) = serve(self.listener, stop.cancelled_owned()).await {
                warn!(error = %e, "metrics endpoint failed");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn code_names_are_the_debug_names() {
        for n in 0..17 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(super::code_name(code), format!("{code:?}"));
        }
    }
}
