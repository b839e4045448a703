//! Driving `GetEvidence`: at peak (closed loop) and at a fixed rate (open
//! loop), against the broker or the echo baseline, over plaintext or mTLS.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use govbus_proto::v1::{GetEvidenceRequest, GetEvidenceResponse, once_only_client::OnceOnlyClient};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::{
    load::{self, LoadResult},
    seed,
};

/// How hard and how long to drive a server.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Concurrent callers in the closed loop.
    pub concurrency: usize,
    /// HTTP/2 connections the callers share.
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// Where to send queries and about whom.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// mTLS as this client, or plaintext when `None`.
    pub tls: Option<ClientTlsConfig>,
    /// Citizens `0..subjects` have records.
    pub subjects: u64,
}

pub fn request(n: u64) -> GetEvidenceRequest {
    GetEvidenceRequest {
        subject_id: seed::citizen(n),
        record_type: seed::RECORD_TYPE.into(),
        purpose: "test-service-001".into(),
        request_id: String::new(),
        fields: Vec::new(),
    }
}

pub async fn connect(target: &Target) -> anyhow::Result<Channel> {
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", target.addr))?
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30));
    if let Some(tls) = &target.tls {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    Ok(endpoint.connect().await?)
}

/// One answer of the target for citizen 0 (the baseline echoes it).
pub async fn sample_reply(target: &Target) -> anyhow::Result<GetEvidenceResponse> {
    let mut client = OnceOnlyClient::new(connect(target).await?);
    let reply = client.get_evidence(request(0)).await?.into_inner();
    anyhow::ensure!(!reply.evidence.is_empty(), "citizen 0 has no evidence");
    Ok(reply)
}

/// Spreads subjects over the whole showcase without a random generator:
/// a multiplicative hash of the call counter.
pub fn subject_of(counter: u64, subjects: u64) -> u64 {
    counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) % subjects.max(1)
}

struct Callers {
    clients: Vec<OnceOnlyClient<Channel>>,
    counter: AtomicU64,
    subjects: u64,
}

impl Callers {
    async fn new(target: &Target, connections: usize) -> anyhow::Result<Arc<Self>> {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            clients.push(OnceOnlyClient::new(connect(target).await?));
        }
        Ok(Arc::new(Self {
            clients,
            counter: AtomicU64::new(0),
            subjects: target.subjects,
        }))
    }

    async fn call(self: Arc<Self>, slot: usize) -> Result<(), String> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut client = self.clients[slot % self.clients.len()].clone();
        let reply = client
            .get_evidence(request(subject_of(n, self.subjects)))
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        if reply.get_ref().evidence.is_empty() {
            return Err("answer without evidence".into());
        }
        Ok(())
    }
}

/// Peak throughput: `shape.concurrency` callers back to back.
pub async fn peak(target: &Target, shape: LoadShape) -> anyhow::Result<LoadResult> {
    let target = target.clone();
    // Connected from the load runtime: tonic runs each channel's HTTP/2
    // connection as a task of the runtime that connects it, and on the
    // servers' runtime the client's work was ~8 % of the samples there.
    let result = crate::on_load_runtime(async move {
        let callers = Callers::new(&target, shape.connections).await?;
        anyhow::Ok(
            load::closed_loop(
                shape.concurrency,
                shape.warmup,
                shape.duration,
                move |worker| callers.clone().call(worker),
            )
            .await,
        )
    })
    .await??;
    checked(result)
}

/// Exactly `count` calls, `concurrency` at a time, and no clock: for
/// counting instructions per call (`--part query`), where a timed loop
/// would make as many calls as valgrind's speed allows.
pub async fn calls(
    target: &Target,
    concurrency: usize,
    connections: usize,
    count: u64,
) -> anyhow::Result<()> {
    let target = target.clone();
    crate::on_load_runtime(async move {
        let callers = Callers::new(&target, connections).await?;
        let left = Arc::new(AtomicU64::new(count));
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|slot| {
                let (callers, left) = (callers.clone(), left.clone());
                tokio::spawn(async move {
                    while left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        callers
                            .clone()
                            .call(slot)
                            .await
                            .map_err(anyhow::Error::msg)?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.await??;
        }
        anyhow::Ok(())
    })
    .await?
}

/// Latency at `rate` calls per second, whatever the server does.
pub async fn at_rate(target: &Target, shape: LoadShape, rate: f64) -> anyhow::Result<LoadResult> {
    let target = target.clone();
    let result = crate::on_load_runtime(async move {
        let callers = Callers::new(&target, shape.connections).await?;
        anyhow::Ok(
            load::open_loop(
                rate,
                shape.concurrency * 16,
                shape.warmup,
                shape.duration,
                move |n| callers.clone().call(n as usize),
            )
            .await,
        )
    })
    .await??;
    checked(result)
}

/// A run with failed calls measures something else than it claims.
fn checked(result: LoadResult) -> anyhow::Result<LoadResult> {
    if result.errors > 0 {
        anyhow::bail!(
            "{} of {} calls failed, first: {}",
            result.errors,
            result.calls,
            result.first_error.as_deref().unwrap_or("?")
        );
    }
    if result.calls == 0 {
        anyhow::bail!("no call completed");
    }
    Ok(result)
}
