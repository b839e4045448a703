//! The `govbus.v1.OnceOnly` service: evidence from the showcase.

use std::sync::Arc;

use govbus_core::{
    Catalog, RecordTypeSpec, SubjectId,
    text::clipped,
    time::{micros_to_timestamp, now_micros, timestamp_to_micros},
};
use govbus_proto::{
    served::{self, RecordHead, once_only_server::OnceOnly},
    v1::{
        EvidenceStatus, GetEvidenceRequest, ListAccessesRequest, ListAccessesResponse,
        ListRecordTypesRequest, ListRecordTypesResponse, Provenance, Record, RecordStatus,
        RecordTypeInfo,
    },
};
use govbus_security::Identity;
use govbus_store::{
    AuditEntry, AuditLog, ConsentScope, ConsentState, Consents, Showcase, StoreError, StoredRecord,
};
use prost::Message as _;
use tonic::{Request, Response, Status};
use tracing::{Instrument, error, info};

use govbus_policy::{Denial, PolicyStore};

use crate::{audit::AuditTrail, ingest::Freshness};

/// Why an evidence request failed. One mapping to gRPC codes; internal
/// detail is logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{0}")]
    Denied(#[from] Denial),
    #[error(
        "consent of subject {subject} for {consumer} to read {record_type} for purpose {purpose:?} is {state}"
    )]
    NoConsent {
        subject: String,
        consumer: String,
        record_type: String,
        purpose: String,
        state: &'static str,
    },
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
            EvidenceError::Denied(_) | EvidenceError::NoConsent { .. } => {
                Status::permission_denied(e.to_string())
            }
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
        if !govbus_core::is_label(purpose) {
            return Err(invalid(
                "purpose",
                "must be at most 128 printable characters",
            ));
        }
        if !govbus_core::is_label(&request.request_id) {
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
        // Names are listed only for the error: most requests name no fields.
        if let Err(unknown) = spec.field_numbers(&request.fields) {
            return Err(invalid(
                "fields",
                format!(
                    "{} has no field {}; its fields are {}",
                    spec.name,
                    unknown.join(", "),
                    spec.field_names().join(", ")
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
    audit: AuditTrail,
    audit_log: AuditLog,
    showcase: Showcase,
    consents: Consents,
    catalog: Arc<Catalog>,
    freshness: Arc<Freshness>,
    policy: PolicyStore,
}

impl OnceOnlyService {
    pub fn new(
        showcase: Showcase,
        catalog: Arc<Catalog>,
        freshness: Arc<Freshness>,
        policy: PolicyStore,
        (audit, audit_log): (AuditTrail, AuditLog),
    ) -> Self {
        Self {
            audit,
            audit_log,
            consents: Consents::new(showcase.database().clone()),
            showcase,
            catalog,
            freshness,
            policy,
        }
    }

    /// Policy, then consent, then the showcase: a caller without the right
    /// to an answer does not learn whether records exist.
    pub async fn evidence(
        &self,
        caller: &Identity,
        query: &EvidenceQuery,
    ) -> Result<(served::GetEvidenceResponse, String), EvidenceError> {
        let policy = self.policy.current();
        let allowed = policy.authorise(caller, &query.spec, &query.purpose, &query.fields)?;
        if policy.consent_required(&query.spec.name) {
            self.check_consent(caller, query).await?;
        }
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
            .map(|s| to_evidence(s, allowed.as_deref(), now))
            .collect::<Result<Vec<_>, _>>()?;
        let released = match &allowed {
            None => "*".to_string(),
            Some(numbers) => numbers
                .iter()
                .filter_map(|n| query.spec.message.get_field(*n))
                .map(|f| f.name().to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        Ok((
            served::GetEvidenceResponse {
                request_id: query.request_id.clone(),
                evidence,
                showcase_as_of: as_of.map(micros_to_timestamp),
            },
            released,
        ))
    }

    async fn check_consent(
        &self,
        caller: &Identity,
        query: &EvidenceQuery,
    ) -> Result<(), EvidenceError> {
        let scope = ConsentScope {
            subject_id: query.subject.to_string(),
            consumer: caller.to_string(),
            record_type: query.spec.name.clone(),
            purpose: query.purpose.clone(),
        };
        let state = match self.consents.state(&scope, now_micros()).await? {
            ConsentState::Live => return Ok(()),
            ConsentState::Missing => "missing",
            ConsentState::Revoked => "revoked",
            ConsentState::Expired => "expired",
        };
        Err(EvidenceError::NoConsent {
            subject: scope.subject_id,
            consumer: scope.consumer,
            record_type: scope.record_type,
            purpose: scope.purpose,
            state,
        })
    }
}

/// Evidence from a stored record, minimised to the `allowed` field numbers
/// (`None`: all) so that it still verifies against its signature. A record
/// released whole goes out as the bytes the showcase holds, undecoded.
fn to_evidence(
    stored: StoredRecord,
    allowed: Option<&[u32]>,
    now_us: i64,
) -> Result<served::Evidence, EvidenceError> {
    let StoredRecord {
        envelope,
        topic,
        partition,
        offset,
        ingested_at_us,
    } = stored;
    fn corrupt(e: impl std::fmt::Display) -> EvidenceError {
        EvidenceError::Corrupt(e.to_string())
    }
    let head = RecordHead::decode(envelope.as_slice()).map_err(corrupt)?;
    let record = match allowed {
        None => envelope,
        Some(keep) => {
            let mut record = Record::decode(envelope.as_slice()).map_err(corrupt)?;
            govbus_core::minimise(&mut record, keep).map_err(corrupt)?;
            record.encode_to_vec()
        }
    };
    Ok(served::Evidence {
        status: evidence_status(&head, now_us) as i32,
        provenance: Some(Provenance {
            source_agency: head.source_agency,
            source_system: head.source_system,
            topic,
            partition,
            offset,
            ingested_at: Some(micros_to_timestamp(ingested_at_us)),
        }),
        record,
    })
}

/// The audit entry of a parsed request and its outcome.
fn audit_entry(
    raw: AuditEntry,
    query: &EvidenceQuery,
    result: &Result<(served::GetEvidenceResponse, String), EvidenceError>,
) -> AuditEntry {
    let (decision, reason, fields, records) = match result {
        Ok((reply, released)) => (
            "allowed",
            String::new(),
            released.clone(),
            reply.evidence.len() as i64,
        ),
        Err(EvidenceError::NotFound { .. }) => ("not_found", String::new(), String::new(), 0),
        Err(e @ (EvidenceError::Denied(_) | EvidenceError::NoConsent { .. })) => {
            ("denied", e.to_string(), String::new(), 0)
        }
        Err(e) => ("failed", e.to_string(), String::new(), 0),
    };
    AuditEntry {
        subject_id: query.subject.to_string(),
        record_type: query.spec.name.clone(),
        purpose: query.purpose.clone(),
        request_id: query.request_id.clone(),
        decision: decision.into(),
        reason,
        fields,
        records,
        ..raw
    }
}

fn evidence_status(head: &RecordHead, now_us: i64) -> EvidenceStatus {
    if head.status == RecordStatus::Revoked as i32 {
        EvidenceStatus::Revoked
    } else if head
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
    ) -> Result<Response<served::GetEvidenceResponse>, Status> {
        let span = govbus_server::rpc_span!(
            "get_evidence",
            "govbus.v1.OnceOnly",
            "GetEvidence",
            request_id = tracing::field::Empty,
            record_type = %request.get_ref().record_type,
            caller = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            purpose = tracing::field::Empty,
            outcome = tracing::field::Empty,
            records = tracing::field::Empty,
        );
        govbus_server::continue_trace(&span, request.metadata());
        govbus_server::metrics::observed(
            "govbus.v1.OnceOnly",
            "GetEvidence",
            async move {
                let span = tracing::Span::current();
                let trace_id = govbus_telemetry::current_trace_id();
                span.record("trace_id", trace_id.as_str());
                let caller = govbus_server::caller(&request)?;
                let caller_name = caller.to_string();
                span.record("caller", caller_name.as_str());
                let request = request.into_inner();
                let raw = AuditEntry {
                    at_us: now_micros(),
                    caller: caller_name,
                    subject_id: clipped(&request.subject_id, 64),
                    record_type: clipped(&request.record_type, 64),
                    purpose: clipped(&request.purpose, 128),
                    fields: String::new(),
                    decision: "invalid".into(),
                    reason: String::new(),
                    request_id: clipped(&request.request_id, 128),
                    trace_id,
                    records: 0,
                };
                let (result, entry) = match EvidenceQuery::parse(request, &self.catalog) {
                    Err(e) => {
                        span.record("outcome", "rejected");
                        info!(error = %e, "evidence request rejected");
                        let entry = AuditEntry {
                            reason: e.to_string(),
                            ..raw
                        };
                        (Err(e), entry)
                    }
                    Ok(query) => {
                        span.record("request_id", query.request_id.as_str());
                        let result = self.evidence(&caller, &query).await;
                        let entry = audit_entry(raw, &query, &result);
                        // The outcome is a field of the span, which both
                        // the trace (it takes no info events) and the log
                        // line below show.
                        span.record("purpose", query.purpose.as_str());
                        match &result {
                            Ok((reply, _)) => {
                                span.record("outcome", "served");
                                span.record("records", reply.evidence.len() as i64);
                                info!("evidence served")
                            }
                            // Not-found and consent messages name the subject; the log must not.
                            Err(e) => {
                                let outcome = match e {
                                    EvidenceError::NotFound { .. } => "not found".to_string(),
                                    EvidenceError::NoConsent { state, .. } => {
                                        format!("consent {state}")
                                    }
                                    EvidenceError::Denied(denial) => denial.to_string(),
                                    _ => "failed".to_string(),
                                };
                                span.record("outcome", outcome.as_str());
                                info!("no evidence served");
                            }
                        }
                        (result, entry)
                    }
                };
                // No answer, not even a refusal, leaves without its audit entry.
                if let Err(e) = self.audit.record(entry).await {
                    error!(error = %e, "audit entry not written; nothing released");
                    return Err(Status::unavailable(
                        "audit trail unavailable; nothing was released",
                    ));
                }
                result
                    .map(|(reply, _)| Response::new(reply))
                    .map_err(Status::from)
            }
            .instrument(span),
        )
        .await
    }

    async fn list_accesses(
        &self,
        request: Request<ListAccessesRequest>,
    ) -> Result<Response<ListAccessesResponse>, Status> {
        govbus_server::metrics::observed("govbus.v1.OnceOnly", "ListAccesses", async move {
            let caller = govbus_server::caller(&request)?;
            crate::accesses::list(&self.audit_log, &self.policy, &caller, request.into_inner())
                .await
                .map(Response::new)
        })
        .await
    }

    async fn list_record_types(
        &self,
        _request: Request<ListRecordTypesRequest>,
    ) -> Result<Response<ListRecordTypesResponse>, Status> {
        govbus_server::metrics::observed("govbus.v1.OnceOnly", "ListRecordTypes", async {
            let policy = self.policy.current();
            let record_types = self
                .catalog
                .iter()
                .map(|spec| RecordTypeInfo {
                    name: spec.name.clone(),
                    message_type: spec.message.full_name().to_string(),
                    owner: spec.owner.clone(),
                    description: spec.description.clone(),
                    topic: spec.topic.clone(),
                    fields: spec.field_names(),
                    consent_required: policy.consent_required(&spec.name),
                })
                .collect();
            Ok(Response::new(ListRecordTypesResponse { record_types }))
        })
        .await
    }
}
