//! The `govbus.v1.OnceOnly` service: evidence from the showcase.

use std::sync::Arc;

use govbus_core::{
    Catalog, RecordTypeSpec, SubjectId,
    time::{micros_to_timestamp, now_micros, timestamp_to_micros},
};
use govbus_proto::v1::{
    Evidence, EvidenceStatus, GetEvidenceRequest, GetEvidenceResponse, ListRecordTypesRequest,
    ListRecordTypesResponse, Provenance, Record, RecordStatus, RecordTypeInfo,
    once_only_server::OnceOnly,
};
use govbus_store::{Showcase, StoreError, StoredRecord};
use tonic::{Request, Response, Status};
use tracing::{Instrument, error, info, info_span};

use crate::ingest::Freshness;

/// Why an evidence request failed. One mapping to gRPC codes; internal
/// detail is logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("no {record_type} records for subject {subject}")]
    NotFound {
        subject: String,
        record_type: String,
    },
    #[error("showcase unavailable")]
    Store(#[from] StoreError),
    #[error("stored record is corrupt")]
    Corrupt(String),
}

impl From<EvidenceError> for Status {
    fn from(e: EvidenceError) -> Self {
        match &e {
            EvidenceError::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
            EvidenceError::NotFound { .. } => Status::not_found(e.to_string()),
            EvidenceError::Store(inner) => {
                error!(error = %inner, "showcase read failed");
                Status::unavailable(e.to_string())
            }
            EvidenceError::Corrupt(detail) => {
                error!(detail, "stored record does not decode");
                Status::internal(e.to_string())
            }
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EvidenceError {
    EvidenceError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// A checked evidence request.
#[derive(Debug)]
pub struct EvidenceQuery {
    pub subject: SubjectId,
    pub spec: Arc<RecordTypeSpec>,
    pub purpose: String,
    pub request_id: String,
    pub fields: Vec<String>,
}

impl EvidenceQuery {
    pub fn parse(request: GetEvidenceRequest, catalog: &Catalog) -> Result<Self, EvidenceError> {
        let subject = SubjectId::parse(&request.subject_id)
            .map_err(|e| invalid("subject_id", e.to_string()))?;
        if request.record_type.is_empty() {
            return Err(invalid("record_type", "is required"));
        }
        let spec = catalog.get(&request.record_type).cloned().ok_or_else(|| {
            invalid(
                "record_type",
                format!(
                    "unknown record type {:?}; known types: {}",
                    request.record_type,
                    catalog.names().join(", ")
                ),
            )
        })?;
        let purpose = request.purpose.trim();
        if purpose.is_empty() {
            return Err(invalid(
                "purpose",
                "is required: the legal basis (portal service or procedure code)",
            ));
        }
        if purpose.len() > 128 || purpose.chars().any(char::is_control) {
            return Err(invalid(
                "purpose",
                "must be at most 128 printable characters",
            ));
        }
        if request.request_id.len() > 128 || request.request_id.chars().any(char::is_control) {
            return Err(invalid(
                "request_id",
                "must be at most 128 printable characters",
            ));
        }
        let request_id = if request.request_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            request.request_id
        };
        let known = spec.field_names();
        let unknown: Vec<&str> = request
            .fields
            .iter()
            .filter(|f| !known.contains(f))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(invalid(
                "fields",
                format!(
                    "{} has no field {}; its fields are {}",
                    spec.name,
                    unknown.join(", "),
                    known.join(", ")
                ),
            ));
        }
        Ok(Self {
            subject,
            spec,
            purpose: purpose.to_string(),
            request_id,
            fields: request.fields,
        })
    }
}

#[derive(Debug)]
pub struct OnceOnlyService {
    showcase: Showcase,
    catalog: Arc<Catalog>,
    freshness: Arc<Freshness>,
}

impl OnceOnlyService {
    pub fn new(showcase: Showcase, catalog: Arc<Catalog>, freshness: Arc<Freshness>) -> Self {
        Self {
            showcase,
            catalog,
            freshness,
        }
    }

    pub async fn evidence(
        &self,
        query: &EvidenceQuery,
    ) -> Result<GetEvidenceResponse, EvidenceError> {
        // Read freshness before the records: the answer is at least this fresh.
        let as_of = self.freshness.as_of_us();
        let stored = self
            .showcase
            .current(&query.spec.name, query.subject.as_str())
            .await?;
        if stored.is_empty() {
            return Err(EvidenceError::NotFound {
                subject: query.subject.to_string(),
                record_type: query.spec.name.clone(),
            });
        }
        let now = now_micros();
        let evidence = stored
            .into_iter()
            .map(|s| self.to_evidence(s, query, now))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GetEvidenceResponse {
            request_id: query.request_id.clone(),
            evidence,
            showcase_as_of: as_of.map(micros_to_timestamp),
        })
    }

    fn to_evidence(
        &self,
        stored: StoredRecord,
        query: &EvidenceQuery,
        now_us: i64,
    ) -> Result<Evidence, EvidenceError> {
        let StoredRecord {
            mut record,
            topic,
            partition,
            offset,
            ingested_at_us,
        } = stored;
        let status = evidence_status(&record, now_us);
        if !query.fields.is_empty()
            && let Some(payload) = record.payload.as_mut()
        {
            payload.value = query
                .spec
                .project(&payload.value, &query.fields)
                .map_err(|e| EvidenceError::Corrupt(e.to_string()))?;
        }
        Ok(Evidence {
            provenance: Some(Provenance {
                source_agency: record.source_agency.clone(),
                source_system: record.source_system.clone(),
                topic,
                partition,
                offset,
                ingested_at: Some(micros_to_timestamp(ingested_at_us)),
            }),
            record: Some(record),
            status: status as i32,
        })
    }
}

fn evidence_status(record: &Record, now_us: i64) -> EvidenceStatus {
    if record.status == RecordStatus::Revoked as i32 {
        EvidenceStatus::Revoked
    } else if record
        .valid_until
        .as_ref()
        .is_some_and(|until| timestamp_to_micros(until) < now_us)
    {
        EvidenceStatus::Expired
    } else {
        EvidenceStatus::Valid
    }
}

#[tonic::async_trait]
impl OnceOnly for OnceOnlyService {
    async fn get_evidence(
        &self,
        request: Request<GetEvidenceRequest>,
    ) -> Result<Response<GetEvidenceResponse>, Status> {
        let span = info_span!(
            "get_evidence",
            request_id = tracing::field::Empty,
            record_type = %request.get_ref().record_type,
            trace_id = tracing::field::Empty,
        );
        govbus_server::continue_trace(&span, request.metadata());
        async move {
            let span = tracing::Span::current();
            span.record("trace_id", govbus_telemetry::current_trace_id());
            let query =
                EvidenceQuery::parse(request.into_inner(), &self.catalog).inspect_err(|e| {
                    info!(error = %e, "evidence request rejected");
                })?;
            span.record("request_id", query.request_id.as_str());
            match self.evidence(&query).await {
                Ok(reply) => {
                    info!(
                        purpose = query.purpose,
                        records = reply.evidence.len(),
                        "evidence served"
                    );
                    Ok(Response::new(reply))
                }
                Err(e) => {
                    // The message names the subject; the log must not.
                    let outcome = match &e {
                        EvidenceError::NotFound { .. } => "not found",
                        _ => "failed",
                    };
                    info!(purpose = query.purpose, outcome, "no evidence served");
                    Err(e.into())
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn list_record_types(
        &self,
        _request: Request<ListRecordTypesRequest>,
    ) -> Result<Response<ListRecordTypesResponse>, Status> {
        let record_types = self
            .catalog
            .iter()
            .map(|spec| RecordTypeInfo {
                name: spec.name.clone(),
                message_type: spec.message.full_name().to_string(),
                owner_agency: spec.owner_agency.clone(),
                description: spec.description.clone(),
                topic: spec.topic.clone(),
                fields: spec.field_names(),
            })
            .collect();
        Ok(Response::new(ListRecordTypesResponse { record_types }))
    }
}
