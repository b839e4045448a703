//! The `govbus.v1.AgencyAdapter` gRPC facade.

use std::sync::Arc;

use govbus_core::FieldViolation;
use govbus_proto::v1::{
    PublishOutcome, PublishRequest, PublishResponse, agency_adapter_server::AgencyAdapter,
};
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span};

use crate::publisher::{Prepared, Publisher, Refusal};

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

#[derive(Debug)]
pub struct AdapterService {
    publisher: Arc<Publisher>,
    max_batch: usize,
}

impl AdapterService {
    pub fn new(publisher: Arc<Publisher>, max_batch: usize) -> Self {
        Self {
            publisher,
            max_batch,
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
        for (i, record) in records.into_iter().enumerate() {
            match self.publisher.prepare(record) {
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
        let span = info_span!(
            "publish",
            otel.name = "govbus.v1.AgencyAdapter/Publish",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "govbus.v1.AgencyAdapter",
            rpc.method = "Publish",
            records = request.get_ref().records.len()
        );
        govbus_server::continue_trace(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = async move {
            let caller = govbus_server::caller(&request)?;
            if &caller != self.publisher.identity() {
                let e = PublishError::WrongCaller {
                    adapter: self.publisher.identity().to_string(),
                    caller: caller.to_string(),
                };
                info!(error = %e, "publish refused");
                return Err(e.into());
            }
            let prepared = self.prepare_all(request.into_inner()).inspect_err(|e| {
                info!(error = %e, "publish rejected");
            })?;
            let results = self.publisher.send(prepared).await;
            let failed = results
                .iter()
                .filter(|r| r.outcome != PublishOutcome::Accepted as i32)
                .count();
            info!(accepted = results.len() - failed, failed, "publish done");
            Ok(Response::new(PublishResponse { results }))
        }
        .instrument(span)
        .await;
        govbus_server::metrics::observe_rpc("govbus.v1.AgencyAdapter", "Publish", started, &result);
        result
    }
}
