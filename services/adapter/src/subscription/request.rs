//! What a Subscribe call asks for, checked: the subscription name, the
//! record types and the filter.

use std::sync::Arc;

use govbus_core::{Catalog, RecordTypeSpec, SubjectId};
use govbus_proto::v1::{Record, RecordStatus, SubscribeRequest};

use super::{SubscriptionError, invalid};

/// Checks the request; returns the topics asked for and the filter.
pub fn validate(
    catalog: &Catalog,
    request: SubscribeRequest,
) -> Result<(Vec<Arc<RecordTypeSpec>>, Filter), SubscriptionError> {
    check_name(&request.subscription)?;
    if request.record_types.is_empty() {
        return Err(invalid("record_types", "name at least one record type"));
    }
    let mut topics = Vec::new();
    for (i, name) in request.record_types.iter().enumerate() {
        let spec = catalog.get(name).ok_or_else(|| {
            invalid(
                format!("record_types[{i}]"),
                format!("unknown record type {name:?}"),
            )
        })?;
        if !topics
            .iter()
            .any(|t: &Arc<RecordTypeSpec>| t.name == spec.name)
        {
            topics.push(spec.clone());
        }
    }
    let filter = request.filter.unwrap_or_default();
    let mut subjects = Vec::new();
    for (i, raw) in filter.subject_ids.iter().enumerate() {
        let subject = SubjectId::parse(raw)
            .map_err(|e| invalid(format!("filter.subject_ids[{i}]"), e.to_string()))?;
        subjects.push(subject.as_str().to_string());
    }
    let mut statuses = Vec::new();
    for (i, raw) in filter.statuses.iter().enumerate() {
        match RecordStatus::try_from(*raw) {
            Ok(RecordStatus::Active | RecordStatus::Revoked) => statuses.push(*raw),
            _ => {
                return Err(invalid(
                    format!("filter.statuses[{i}]"),
                    format!("{raw} is not a record status (1 active, 2 revoked)"),
                ));
            }
        }
    }
    Ok((topics, Filter { subjects, statuses }))
}

/// Which records of the granted types a stream delivers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    subjects: Vec<String>,
    statuses: Vec<i32>,
}

impl Filter {
    pub(super) fn admits(&self, record: &Record) -> bool {
        (self.subjects.is_empty() || self.subjects.contains(&record.subject_id))
            && (self.statuses.is_empty() || self.statuses.contains(&record.status))
    }
}

pub fn check_name(name: &str) -> Result<(), SubscriptionError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "subscription",
            "1 to 64 characters: letters, digits, '-' and '_'",
        ))
    }
}
