//! The `govbus.v1.AgencyAdapter` gRPC facade.

use std::sync::Arc;

use govbus_core::FieldViolation;
use govbus_proto::v1::{
    AcknowledgeRequest, AcknowledgeResponse, Delivery, PublishOutcome, PublishRequest,
    PublishResponse, SubscribeRequest, agency_adapter_server::AgencyAdapter,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info};

use crate::{
    publisher::{Prepared, Publisher, Refusal},
    subscription::Subscriptions,
};

/// Why a Publish call was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("records: at least one record is required")]
    Empty,
    #[error("records: {got} records in one call; at most {max} allowed")]
    TooMany { got: usize, max: usize },
    #[error("{} invalid: {}", count(.0), join(.0))]
    Invalid(Vec<FieldViolation>),
    #[error("only {adapter} may publish through this adapter; the caller is {caller}")]
    WrongCaller { adapter: String, caller: String },
    #[error("{}", .0.join("; "))]
    NotOwner(Vec<String>),
    #[error("records could not be signed")]
    Unsigned(String),
}

fn count(v: &[FieldViolation]) -> String {
    match v.len() {
        1 => "1 field".to_string(),
        n => format!("{n} fields"),
    }
}

fn join(v: &[FieldViolation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<PublishError> for Status {
    fn from(e: PublishError) -> Self {
        match &e {
            PublishError::Empty | PublishError::TooMany { .. } | PublishError::Invalid(_) => {
                Status::invalid_argument(e.to_string())
            }
            PublishError::WrongCaller { .. } | PublishError::NotOwner(_) => {
                Status::permission_denied(e.to_string())
            }
            PublishError::Unsigned(detail) => {
                tracing::error!(detail, "signing failed");
                Status::internal(e.to_string())
            }
        }
    }
}

pub struct AdapterService {
    publisher: Arc<Publisher>,
    subscriptions: Arc<Subscriptions>,
    max_batch: usize,
}

impl AdapterService {
    pub fn new(
        publisher: Arc<Publisher>,
        subscriptions: Arc<Subscriptions>,
        max_batch: usize,
    ) -> Self {
        Self {
            publisher,
            subscriptions,
            max_batch,
        }
    }

    /// Only the adapter's own system may publish or subscribe through it.
    fn check_caller(&self, caller: &govbus_security::Identity) -> Result<(), PublishError> {
        if caller == self.publisher.identity() {
            Ok(())
        } else {
            Err(PublishError::WrongCaller {
                adapter: self.publisher.identity().to_string(),
                caller: caller.to_string(),
            })
        }
    }

    /// Validates the whole batch; any violation rejects all of it, so a
    /// caller never has to work out which half of a batch went through.
    fn prepare_all(&self, request: PublishRequest) -> Result<Vec<Prepared>, PublishError> {
        let records = request.records;
        if records.is_empty() {
            return Err(PublishError::Empty);
        }
        if records.len() > self.max_batch {
            return Err(PublishError::TooMany {
                got: records.len(),
                max: self.max_batch,
            });
        }
        let mut prepared = Vec::with_capacity(records.len());
        let mut violations = Vec::new();
        let mut not_owned = Vec::new();
        for (i, outcome) in self.publisher.prepare_all(records).into_iter().enumerate() {
            match outcome {
                Ok(p) => prepared.push(p),
                Err(Refusal::Invalid(found)) => violations.extend(found.into_iter().map(|v| {
                    FieldViolation::new(format!("records[{i}].{}", v.field), v.reason)
                })),
                Err(Refusal::NotOwner { record_type, owner }) => not_owned.push(format!(
                    "records[{i}].record_type: {} may not publish {record_type}; its owner is {owner}",
                    self.publisher.identity()
                )),
                Err(Refusal::Unsigned(e)) => return Err(PublishError::Unsigned(e)),
            }
        }
        if !violations.is_empty() {
            Err(PublishError::Invalid(violations))
        } else if !not_owned.is_empty() {
            Err(PublishError::NotOwner(not_owned))
        } else {
            Ok(prepared)
        }
    }
}

#[tonic::async_trait]
impl AgencyAdapter for AdapterService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let span = govbus_server::rpc_span!(
            "publish",
            "govbus.v1.AgencyAdapter",
            "Publish",
            records = request.get_ref().records.len() as i64,
            outcome = tracing::field::Empty,
            accepted = tracing::field::Empty,
            failed = tracing::field::Empty,
        );
        govbus_server::continue_trace(&span, request.metadata());
        govbus_server::metrics::observed(
            "govbus.v1.AgencyAdapter",
            "Publish",
            async move {
                // The outcome is a field of the span: traces take no info events.
                let span = tracing::Span::current();
                let caller = govbus_server::caller(&request)?;
                self.check_caller(&caller).inspect_err(|e| {
                    span.record("outcome", "refused");
                    info!(error = %e, "publish refused");
                })?;
                let prepared = self.prepare_all(request.into_inner()).inspect_err(|e| {
                    span.record("outcome", "rejected");
                    info!(error = %e, "publish rejected");
                })?;
                let results = self.publisher.send(prepared).await;
                let failed = results
                    .iter()
                    .filter(|r| r.outcome != PublishOutcome::Accepted as i32)
                    .count();
                span.record("outcome", "done");
                span.record("accepted", (results.len() - failed) as i64);
                span.record("failed", failed as i64);
                info!("publish done");
                Ok(Response::new(PublishResponse { results }))
            }
            .instrument(span),
        )
        .await
    }

    type SubscribeStream = ReceiverStream<Result<Delivery, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let span = govbus_server::rpc_span!(
            "subscribe",
            "govbus.v1.AgencyAdapter",
            "Subscribe",
            subscription = %request.get_ref().subscription,
            request_id = tracing::field::Empty,
        );
        govbus_server::continue_trace(&span, request.metadata());
        govbus_server::metrics::observed(
            "govbus.v1.AgencyAdapter",
            "Subscribe",
            async move {
                let request_id = request_id(&request);
                tracing::Span::current().record("request_id", request_id.as_str());
                let caller = govbus_server::caller(&request)?;
                let request = request.into_inner();
                if let Err(e) = self.check_caller(&caller) {
                    info!(error = %e, "subscribe refused");
                    self.subscriptions
                        .refuse_caller(&caller, &request, &e.to_string(), &request_id)
                        .await?;
                    return Err(e.into());
                }
                let deliveries = self.subscriptions.open(request, &request_id).await?;
                Ok(Response::new(ReceiverStream::new(deliveries)))
            }
            .instrument(span),
        )
        .await
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        let span = govbus_server::rpc_span!(
            "acknowledge",
            "govbus.v1.AgencyAdapter",
            "Acknowledge",
            subscription = %request.get_ref().subscription,
            cursors = request.get_ref().cursors.len(),
        );
        govbus_server::continue_trace(&span, request.metadata());
        govbus_server::metrics::observed(
            "govbus.v1.AgencyAdapter",
            "Acknowledge",
            async move {
                let caller = govbus_server::caller(&request)?;
                self.check_caller(&caller)?;
                let request = request.into_inner();
                let advanced = self
                    .subscriptions
                    .acknowledge(&request.subscription, &request.cursors)
                    .await?;
                Ok(Response::new(AcknowledgeResponse { advanced }))
            }
            .instrument(span),
        )
        .await
    }
}

/// The caller's `x-request-id`, or a new one: ties the audit entry, the
/// logs and the trace of one call together.
fn request_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && govbus_core::is_label(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}
