//! Agency system identities: `agency/<agency>/system/<system>`, carried in
//! certificates as the URI SAN `spiffe://govbus/agency/<agency>/system/<system>`.

use std::{fmt, str::FromStr};

use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// The SPIFFE trust domain of the bus.
pub const TRUST_DOMAIN: &str = "govbus";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    agency: String,
    system: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{0:?} is not of the form agency/<agency>/system/<system>")]
    Form(String),
    #[error("{part} {value:?} must be 1-63 characters of a-z, 0-9 and -")]
    Part { part: &'static str, value: String },
    #[error("certificate does not parse: {0}")]
    Certificate(String),
    #[error("certificate carries no spiffe://{TRUST_DOMAIN}/agency/…/system/… URI SAN")]
    NoUri,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Identity {
    pub fn new(agency: &str, system: &str) -> Result<Self, IdentityError> {
        for (part, value) in [("agency", agency), ("system", system)] {
            if !valid_part(value) {
                return Err(IdentityError::Part {
                    part,
                    value: value.to_string(),
                });
            }
        }
        Ok(Self {
            agency: agency.to_string(),
            system: system.to_string(),
        })
    }

    pub fn agency(&self) -> &str {
        &self.agency
    }

    pub fn system(&self) -> &str {
        &self.system
    }

    /// `spiffe://govbus/agency/<agency>/system/<system>`
    pub fn uri(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{self}")
    }

    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let path = uri
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.strip_prefix(TRUST_DOMAIN))
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| IdentityError::Form(uri.to_string()))?;
        path.parse()
    }

    /// The identity in a certificate's URI SAN.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Certificate(e.to_string()))?
            .ok_or(IdentityError::NoUri)?;
        san.value
            .general_names
            .iter()
            .find_map(|name| match name {
                GeneralName::URI(uri) => Self::from_uri(uri).ok(),
                _ => None,
            })
            .ok_or(IdentityError::NoUri)
    }

    /// A name safe for files: `<agency>.<system>`.
    pub fn file_stem(&self) -> String {
        format!("{}.{}", self.agency, self.system)
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split('/').collect::<Vec<_>>().as_slice() {
            ["agency", agency, "system", system] => Self::new(agency, system),
            _ => Err(IdentityError::Form(s.to_string())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agency/{}/system/{}", self.agency, self.system)
    }
}

impl serde::Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let id: Identity = "agency/civil-registry/system/fhdy".parse().unwrap();
        assert_eq!(
            id.uri(),
            "spiffe://govbus/agency/civil-registry/system/fhdy"
        );
        assert_eq!(Identity::from_uri(&id.uri()).unwrap(), id);
        assert!("agency/Civil/system/x".parse::<Identity>().is_err());
        assert!("civil-registry/fhdy".parse::<Identity>().is_err());
        assert!(Identity::from_uri("spiffe://other/agency/a/system/b").is_err());
    }
}
