//! The query baseline: a bare tonic server speaking the same service with
//! the same messages, that answers every `GetEvidence` with one fixed reply
//! (a real answer of the broker, captured before the run). No policy, no
//! database, no audit, no interceptor: what is left is tonic, prost and
//! HTTP/2 on this machine, which is the most govbus could ever reach.

use std::net::SocketAddr;

use govbus_proto::v1::{
    GetEvidenceRequest, GetEvidenceResponse, ListAccessesRequest, ListAccessesResponse,
    ListRecordTypesRequest, ListRecordTypesResponse,
    once_only_server::{OnceOnly, OnceOnlyServer},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

struct Echo {
    reply: GetEvidenceResponse,
}

#[tonic::async_trait]
impl OnceOnly for Echo {
    async fn get_evidence(
        &self,
        request: Request<GetEvidenceRequest>,
    ) -> Result<Response<GetEvidenceResponse>, Status> {
        // Touch the request as a real server would before answering.
        if request.get_ref().subject_id.is_empty() {
            return Err(Status::invalid_argument("subject_id: is required"));
        }
        Ok(Response::new(self.reply.clone()))
    }

    async fn list_record_types(
        &self,
        _request: Request<ListRecordTypesRequest>,
    ) -> Result<Response<ListRecordTypesResponse>, Status> {
        Err(Status::unimplemented("not part of the baseline"))
    }

    async fn list_accesses(
        &self,
        _request: Request<ListAccessesRequest>,
    ) -> Result<Response<ListAccessesResponse>, Status> {
        Err(Status::unimplemented("not part of the baseline"))
    }
}

/// A running baseline server; stops when dropped.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl EchoServer {
    pub async fn start(reply: GetEvidenceResponse) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        // Served exactly as govbus serves (Nagle off, same shutdown path).
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(OnceOnlyServer::new(Echo { reply }));
        tokio::spawn(govbus_server::serve(
            listener,
            router,
            stop.clone().cancelled_owned(),
        ));
        Ok(Self { addr, stop })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
