//! `ListAccesses`: the citizen's "who looked at my data" (through the
//! portal) and an agency auditor's view of its own agency's requests.

use govbus_core::{SubjectId, time::micros_to_timestamp};
use govbus_proto::v1::{
    Access, ListAccessesRequest, ListAccessesResponse, list_accesses_request::Scope,
};
use govbus_security::Identity;
use govbus_store::{AccessScope, AuditLog};
use tonic::Status;
use tracing::error;

use govbus_policy::PolicyStore;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// The system name an agency's auditor has: `agency/<agency>/system/auditor`.
pub const AUDITOR_SYSTEM: &str = "auditor";

pub async fn list(
    log: &AuditLog,
    policy: &PolicyStore,
    caller: &Identity,
    request: ListAccessesRequest,
) -> Result<ListAccessesResponse, Status> {
    let scope = match request.scope {
        None => {
            return Err(Status::invalid_argument(
                "scope: subject_id or agency is required",
            ));
        }
        Some(Scope::SubjectId(raw)) => {
            let subject = SubjectId::parse(&raw)
                .map_err(|e| Status::invalid_argument(format!("subject_id: {e}")))?;
            match policy.current().consent_manager() {
                Some(portal) if portal == caller => AccessScope::Subject(subject.to_string()),
                Some(portal) => {
                    return Err(Status::permission_denied(format!(
                        "only {portal} may list a citizen's accesses; the caller is {caller}"
                    )));
                }
                None => {
                    return Err(Status::permission_denied(
                        "the policy names no portal (consent.managed_by)",
                    ));
                }
            }
        }
        Some(Scope::Agency(agency)) => {
            if caller.system() != AUDITOR_SYSTEM || caller.agency() != agency {
                return Err(Status::permission_denied(format!(
                    "only agency/{agency}/system/{AUDITOR_SYSTEM} may list agency {agency:?}'s accesses; the caller is {caller}"
                )));
            }
            AccessScope::Agency(agency)
        }
    };
    let size = match request.page_size {
        0 => DEFAULT_PAGE,
        n if n > MAX_PAGE => {
            return Err(Status::invalid_argument(format!(
                "page_size: at most {MAX_PAGE}"
            )));
        }
        n => n,
    };
    let before = if request.page_token.is_empty() {
        None
    } else {
        Some(parse_token(&request.page_token).ok_or_else(|| {
            Status::invalid_argument("page_token: not a token this service issued")
        })?)
    };
    let mut rows = log
        .accesses(&scope, before, i64::from(size) + 1)
        .await
        .map_err(|e| {
            error!(error = %e, "audit read failed");
            Status::unavailable("audit trail unavailable")
        })?;
    let more = rows.len() > size as usize;
    rows.truncate(size as usize);
    let next_page_token = match (more, rows.last()) {
        (true, Some(last)) => format!("{}.{}.{}", last.entry.at_us, last.seq, last.chain),
        _ => String::new(),
    };
    let accesses = rows
        .into_iter()
        .map(|row| {
            let e = row.entry;
            Access {
                at: Some(micros_to_timestamp(e.at_us)),
                consumer: e.caller,
                subject_id: e.subject_id,
                record_type: e.record_type,
                purpose: e.purpose,
                fields: e
                    .fields
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect(),
                decision: e.decision,
                reason: e.reason,
                request_id: e.request_id,
                trace_id: e.trace_id,
            }
        })
        .collect();
    Ok(ListAccessesResponse {
        accesses,
        next_page_token,
    })
}

/// `<at_us>.<seq>.<chain>`: where the previous page ended.
fn parse_token(token: &str) -> Option<(i64, String, i64)> {
    let mut parts = token.splitn(3, '.');
    let at = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let chain = parts.next()?.to_string();
    Some((at, chain, seq))
}
