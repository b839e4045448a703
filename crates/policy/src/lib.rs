//! The access policy: deny by default. Evidence grants name the consuming
//! system, the record type, the purposes (legal bases) and the fields it may
//! see; record types may also need the subject's consent. Subscription
//! grants name the system that may receive every new record of a type as it
//! is published, and the fields it receives.
//!
//! The policy is a TOML file, validated against the catalog on load and
//! reloaded when it changes; a file that does not validate is refused and the
//! last good policy stays in force.
//!
//! ```toml
//! [consent]
//! managed_by = "agency/egov/system/portal"   # who may grant and revoke consents
//! required = ["address_registration"]         # types released only with consent
//!
//! [[grant]]
//! consumer = "agency/egov/system/portal"
//! record_type = "birth_certificate"
//! purposes = ["PS-0417", "PS-0420"]          # portal service / procedure codes
//! fields = ["certificate_number", "child", "date_of_birth"]   # or ["*"]
//!
//! [[subscription]]
//! consumer = "agency/interior/system/address-bureau"
//! record_type = "marriage_certificate"
//! fields = ["spouse_one", "spouse_two", "spouse_two_surname_after"]  # or ["*"]
//! ```
//!
//! A hand-written matcher rather than a general policy engine: the decision
//! is a lookup over (consumer, type, purpose, fields), and the refusal must
//! say which of the three did not match, which a general engine's
//! allow/deny answer does not tell.

mod store;

use std::{collections::BTreeSet, path::Path, sync::Arc};

use figment::{
    Figment,
    providers::{Format, Toml},
};
use govbus_core::{Catalog, RecordTypeSpec};
use govbus_security::Identity;
use serde::Deserialize;

pub use store::{PolicyStore, initial};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    consent: ConsentSection,
    #[serde(default)]
    grant: Vec<GrantEntry>,
    #[serde(default)]
    subscription: Vec<SubscriptionEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentSection {
    managed_by: Option<Identity>,
    #[serde(default)]
    required: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    consumer: Identity,
    record_type: String,
    purposes: Vec<String>,
    fields: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionEntry {
    consumer: Identity,
    record_type: String,
    fields: Vec<String>,
}

#[derive(Debug, Clone)]
struct SubscriptionGrant {
    consumer: Identity,
    record_type: String,
    /// `None`: every field of the type.
    fields: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone)]
struct Grant {
    consumer: Identity,
    record_type: String,
    purposes: BTreeSet<String>,
    /// `None`: every field of the type.
    fields: Option<BTreeSet<String>>,
}

/// A loaded, validated policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: Vec<Grant>,
    subscriptions: Vec<SubscriptionGrant>,
    consent_required: BTreeSet<String>,
    consent_manager: Option<Identity>,
}

/// Why a request is refused; the message is sent to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("no grant allows {consumer} to read {record_type}")]
    NoGrant {
        consumer: String,
        record_type: String,
    },
    #[error(
        "purpose {purpose:?} is not allowed for {consumer} on {record_type}; allowed purposes: {allowed}"
    )]
    Purpose {
        consumer: String,
        record_type: String,
        purpose: String,
        allowed: String,
    },
    #[error("fields not allowed for {consumer} on {record_type} for this purpose: {fields}")]
    Fields {
        consumer: String,
        record_type: String,
        fields: String,
    },
}

/// Why a subscription is refused; the message is sent to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no subscription grant allows {consumer} to receive {record_type}")]
pub struct SubscriptionDenial {
    pub consumer: String,
    pub record_type: String,
}

#[derive(Debug, thiserror::Error)]
#[error("policy {path}: {reason}")]
pub struct PolicyError {
    path: String,
    reason: String,
}

impl Policy {
    /// Reads and validates a policy file against the catalog.
    pub fn load(path: &Path, catalog: &Catalog) -> Result<Self, PolicyError> {
        let fail = |reason: String| PolicyError {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            return Err(fail("file does not exist".into()));
        }
        let file: PolicyFile = Figment::from(Toml::file_exact(path))
            .extract()
            .map_err(|e| fail(e.to_string().replace('\n', "; ")))?;
        Self::build(file, catalog).map_err(fail)
    }

    fn build(file: PolicyFile, catalog: &Catalog) -> Result<Self, String> {
        for name in &file.consent.required {
            if catalog.get(name).is_none() {
                return Err(format!(
                    "consent.required names unknown record type {name:?}"
                ));
            }
        }
        let mut grants = Vec::with_capacity(file.grant.len());
        for (i, entry) in file.grant.into_iter().enumerate() {
            let at = format!("grant[{i}]");
            let spec = known_type(&at, catalog, &entry.record_type)?;
            if entry.purposes.is_empty() || entry.purposes.iter().any(|p| p.trim().is_empty()) {
                return Err(format!(
                    "{at}.purposes: list at least one non-empty purpose code"
                ));
            }
            let fields = granted_fields(&at, spec, entry.fields)?;
            grants.push(Grant {
                consumer: entry.consumer,
                record_type: entry.record_type,
                purposes: entry.purposes.into_iter().collect(),
                fields,
            });
        }
        let mut subscriptions = Vec::with_capacity(file.subscription.len());
        for (i, entry) in file.subscription.into_iter().enumerate() {
            let at = format!("subscription[{i}]");
            let spec = known_type(&at, catalog, &entry.record_type)?;
            let fields = granted_fields(&at, spec, entry.fields)?;
            subscriptions.push(SubscriptionGrant {
                consumer: entry.consumer,
                record_type: entry.record_type,
                fields,
            });
        }
        Ok(Self {
            grants,
            subscriptions,
            consent_required: file.consent.required.into_iter().collect(),
            consent_manager: file.consent.managed_by,
        })
    }

    /// The field numbers `consumer` may read of `spec` for `purpose`: the
    /// requested ones (all granted ones when `requested` is empty). `None`
    /// in the result means every field.
    pub fn authorise(
        &self,
        consumer: &Identity,
        spec: &RecordTypeSpec,
        purpose: &str,
        requested: &[String],
    ) -> Result<Option<Vec<u32>>, Denial> {
        let for_type: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|g| &g.consumer == consumer && g.record_type == spec.name)
            .collect();
        if for_type.is_empty() {
            return Err(Denial::NoGrant {
                consumer: consumer.to_string(),
                record_type: spec.name.clone(),
            });
        }
        let for_purpose: Vec<&&Grant> = for_type
            .iter()
            .filter(|g| g.purposes.contains(purpose))
            .collect();
        if for_purpose.is_empty() {
            let allowed: BTreeSet<&str> = for_type
                .iter()
                .flat_map(|g| g.purposes.iter().map(String::as_str))
                .collect();
            return Err(Denial::Purpose {
                consumer: consumer.to_string(),
                record_type: spec.name.clone(),
                purpose: purpose.to_string(),
                allowed: allowed.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        let all_fields = for_purpose.iter().any(|g| g.fields.is_none());
        let granted: BTreeSet<&String> = for_purpose
            .iter()
            .filter_map(|g| g.fields.as_ref())
            .flatten()
            .collect();
        let outside: Vec<&str> = requested
            .iter()
            .filter(|f| !all_fields && !granted.contains(f))
            .map(String::as_str)
            .collect();
        if !outside.is_empty() {
            return Err(Denial::Fields {
                consumer: consumer.to_string(),
                record_type: spec.name.clone(),
                fields: outside.join(", "),
            });
        }
        let names: Vec<String> = if !requested.is_empty() {
            requested.to_vec()
        } else if all_fields {
            return Ok(None);
        } else {
            granted.into_iter().cloned().collect()
        };
        // Names were checked against the catalog on load and on request.
        Ok(Some(spec.field_numbers(&names).unwrap_or_default()))
    }

    /// The field numbers `consumer` receives of each new record of `spec`
    /// (`None`: every field), or why it may not subscribe. Several grants
    /// for one type add up.
    pub fn authorise_subscription(
        &self,
        consumer: &Identity,
        spec: &RecordTypeSpec,
    ) -> Result<Option<Vec<u32>>, SubscriptionDenial> {
        let for_type: Vec<&SubscriptionGrant> = self
            .subscriptions
            .iter()
            .filter(|g| &g.consumer == consumer && g.record_type == spec.name)
            .collect();
        if for_type.is_empty() {
            return Err(SubscriptionDenial {
                consumer: consumer.to_string(),
                record_type: spec.name.clone(),
            });
        }
        if for_type.iter().any(|g| g.fields.is_none()) {
            return Ok(None);
        }
        let names: BTreeSet<String> = for_type
            .iter()
            .filter_map(|g| g.fields.as_ref())
            .flatten()
            .cloned()
            .collect();
        let names: Vec<String> = names.into_iter().collect();
        // Names were checked against the catalog on load.
        Ok(Some(spec.field_numbers(&names).unwrap_or_default()))
    }

    pub fn grant_count(&self) -> usize {
        self.grants.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    pub fn consent_required(&self, record_type: &str) -> bool {
        self.consent_required.contains(record_type)
    }

    pub fn consent_manager(&self) -> Option<&Identity> {
        self.consent_manager.as_ref()
    }
}

fn known_type<'c>(
    at: &str,
    catalog: &'c Catalog,
    name: &str,
) -> Result<&'c Arc<RecordTypeSpec>, String> {
    catalog
        .get(name)
        .ok_or_else(|| format!("{at}.record_type: unknown record type {name:?}"))
}

/// `["*"]` (every field) or a list of the type's field names.
fn granted_fields(
    at: &str,
    spec: &RecordTypeSpec,
    fields: Vec<String>,
) -> Result<Option<BTreeSet<String>>, String> {
    if fields == ["*"] {
        return Ok(None);
    }
    if fields.is_empty() {
        return Err(format!("{at}.fields: list the fields, or [\"*\"] for all"));
    }
    if let Err(unknown) = spec.field_numbers(&fields) {
        return Err(format!(
            "{at}.fields: {} has no field {}",
            spec.name,
            unknown.join(", ")
        ));
    }
    Ok(Some(fields.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, String> {
        let file: PolicyFile = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| e.to_string())?;
        Policy::build(file, &Catalog::builtin())
    }

    const SAMPLE: &str = r#"
        [consent]
        managed_by = "agency/egov/system/portal"
        required = ["address_registration"]

        [[grant]]
        consumer = "agency/egov/system/portal"
        record_type = "birth_certificate"
        purposes = ["PS-0417"]
        fields = ["date_of_birth", "child"]

        [[grant]]
        consumer = "agency/egov/system/portal"
        record_type = "birth_certificate"
        purposes = ["PS-0999"]
        fields = ["*"]

        [[subscription]]
        consumer = "agency/interior/system/address-bureau"
        record_type = "marriage_certificate"
        fields = ["spouse_two_surname_after", "spouse_one"]

        [[subscription]]
        consumer = "agency/interior/system/address-bureau"
        record_type = "marriage_certificate"
        fields = ["spouse_two"]

        [[subscription]]
        consumer = "agency/tax/system/soliq"
        record_type = "birth_certificate"
        fields = ["*"]
    "#;

    #[test]
    fn subscription_grants_decide_type_and_fields() {
        let p = policy(SAMPLE).unwrap();
        let catalog = Catalog::builtin();
        let birth = catalog.get("birth_certificate").unwrap();
        let marriage = catalog.get("marriage_certificate").unwrap();
        let interior: Identity = "agency/interior/system/address-bureau".parse().unwrap();
        let tax: Identity = "agency/tax/system/soliq".parse().unwrap();
        let portal: Identity = "agency/egov/system/portal".parse().unwrap();

        // Grants for one type add up, in field-number order.
        assert_eq!(
            p.authorise_subscription(&interior, marriage),
            Ok(Some(vec![2, 3, 7]))
        );
        assert_eq!(p.authorise_subscription(&tax, birth), Ok(None));
        let denied = p.authorise_subscription(&interior, birth).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "no subscription grant allows agency/interior/system/address-bureau to receive birth_certificate"
        );
        assert!(p.authorise_subscription(&tax, marriage).is_err());
        // An evidence grant is not a subscription grant.
        assert!(p.authorise_subscription(&portal, birth).is_err());
    }

    #[test]
    fn grants_decide_type_purpose_and_fields() {
        let p = policy(SAMPLE).unwrap();
        let catalog = Catalog::builtin();
        let birth = catalog.get("birth_certificate").unwrap();
        let marriage = catalog.get("marriage_certificate").unwrap();
        let portal: Identity = "agency/egov/system/portal".parse().unwrap();
        let other: Identity = "agency/tax/system/soliq".parse().unwrap();

        assert_eq!(
            p.authorise(&portal, birth, "PS-0417", &[]),
            Ok(Some(vec![2, 4]))
        );
        assert_eq!(
            p.authorise(&portal, birth, "PS-0417", &["date_of_birth".into()]),
            Ok(Some(vec![4]))
        );
        assert_eq!(p.authorise(&portal, birth, "PS-0999", &[]), Ok(None));
        assert!(matches!(
            p.authorise(&portal, birth, "PS-0417", &["mother".into()]),
            Err(Denial::Fields { fields, .. }) if fields == "mother"
        ));
        assert!(matches!(
            p.authorise(&portal, birth, "PS-1", &[]),
            Err(Denial::Purpose { allowed, .. }) if allowed == "PS-0417, PS-0999"
        ));
        assert!(matches!(
            p.authorise(&portal, marriage, "PS-0417", &[]),
            Err(Denial::NoGrant { .. })
        ));
        assert!(matches!(
            p.authorise(&other, birth, "PS-0417", &[]),
            Err(Denial::NoGrant { .. })
        ));
        assert!(p.consent_required("address_registration"));
        assert!(!p.consent_required("birth_certificate"));
        assert!(
            Policy::default()
                .authorise(&portal, birth, "PS-0417", &[])
                .is_err()
        );
    }

    #[test]
    fn invalid_policies_say_why() {
        let bad = [
            (
                "[[grant]]\nconsumer = \"agency/egov/system/portal\"\nrecord_type = \"pension\"\npurposes = [\"x\"]\nfields = [\"*\"]",
                "unknown record type \"pension\"",
            ),
            (
                "[[grant]]\nconsumer = \"agency/egov/system/portal\"\nrecord_type = \"birth_certificate\"\npurposes = []\nfields = [\"*\"]",
                "grant[0].purposes",
            ),
            (
                "[[grant]]\nconsumer = \"agency/egov/system/portal\"\nrecord_type = \"birth_certificate\"\npurposes = [\"x\"]\nfields = [\"salary\"]",
                "has no field salary",
            ),
            (
                "[[grant]]\nconsumer = \"portal\"\nrecord_type = \"birth_certificate\"\npurposes = [\"x\"]\nfields = [\"*\"]",
                "agency/<agency>/system/<system>",
            ),
            ("[consent]\nrequired = [\"pension\"]", "consent.required"),
            (
                "[[subscription]]\nconsumer = \"agency/tax/system/soliq\"\nrecord_type = \"death\"\nfields = [\"*\"]",
                "subscription[0].record_type: unknown record type \"death\"",
            ),
            (
                "[[subscription]]\nconsumer = \"agency/tax/system/soliq\"\nrecord_type = \"birth_certificate\"\nfields = []",
                "subscription[0].fields",
            ),
            (
                "[[subscription]]\nconsumer = \"agency/tax/system/soliq\"\nrecord_type = \"birth_certificate\"\npurposes = [\"x\"]\nfields = [\"*\"]",
                "purposes",
            ),
            ("[[grants]]\n", "grants"),
        ];
        for (text, expected) in bad {
            let e = policy(text).unwrap_err();
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        }
    }
}
