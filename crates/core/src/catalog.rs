//! The record catalog: which record types exist, which protobuf message each
//! carries, which agency owns it and which topic it travels on.
//!
//! Types are described by protobuf descriptors at run time (prost-reflect), not
//! by generated Rust types, so a new record type needs a descriptor and a
//! catalog entry, not a rebuilt broker.

use std::{collections::BTreeMap, sync::Arc};

use prost_reflect::{DescriptorPool, MessageDescriptor};

use crate::payload_scan::PayloadShape;

/// Kafka topics that carry records are named `govbus.records.<record_type>`.
pub const TOPIC_PREFIX: &str = "govbus.records.";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("descriptor set does not decode: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    #[error("record type name {0:?} must be 1-64 characters of a-z, 0-9 and _")]
    BadName(String),
    #[error("record type {name:?}: message {message:?} is not in the descriptor pool")]
    UnknownMessage { name: String, message: String },
    #[error("record type {0:?} is registered twice")]
    Duplicate(String),
}

/// One entry of the catalog.
#[derive(Debug)]
pub struct RecordTypeSpec {
    pub name: String,
    pub message: MessageDescriptor,
    /// The only system that may publish this type: `agency/<a>/system/<s>`.
    pub owner: String,
    pub description: String,
    pub topic: String,
    /// `message` reduced for checking payloads (`payload_scan`).
    payload_shape: PayloadShape,
}

impl RecordTypeSpec {
    pub fn type_url(&self) -> String {
        govbus_proto::type_url(self.message.full_name())
    }

    /// The message type as `validate_record` walks payloads.
    pub fn payload_shape(&self) -> &PayloadShape {
        &self.payload_shape
    }

    /// Whether a payload of type `url` is what this type carries.
    pub fn carries(&self, url: &str) -> bool {
        govbus_proto::is_type_url(url, self.message.full_name())
    }

    pub fn field_names(&self) -> Vec<String> {
        self.message
            .fields()
            .map(|f| f.name().to_string())
            .collect()
    }

    /// The field numbers of the named top-level fields, or the names the
    /// message does not have.
    pub fn field_numbers(&self, names: &[String]) -> Result<Vec<u32>, Vec<String>> {
        let mut numbers = Vec::with_capacity(names.len());
        let mut unknown = Vec::new();
        for name in names {
            match self.message.get_field_by_name(name) {
                Some(field) => numbers.push(field.number()),
                None => unknown.push(name.clone()),
            }
        }
        if unknown.is_empty() {
            Ok(numbers)
        } else {
            Err(unknown)
        }
    }
}

/// All record types the bus knows.
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: DescriptorPool,
    types: BTreeMap<String, Arc<RecordTypeSpec>>,
}

/// The record types compiled into govbus: (name, message, owning system, description).
const BUILTIN: &[(&str, &str, &str, &str)] = &[
    (
        "birth_certificate",
        "govbus.records.v1.BirthCertificate",
        "agency/civil-registry/system/fhdy",
        "Birth certificate issued by the civil registry (FHDY); subject is the child.",
    ),
    (
        "marriage_certificate",
        "govbus.records.v1.MarriageCertificate",
        "agency/civil-registry/system/fhdy",
        "Marriage certificate issued by the civil registry (FHDY); one record per spouse.",
    ),
    (
        "address_registration",
        "govbus.records.v1.AddressRegistration",
        "agency/interior/system/address-bureau",
        "Permanent or temporary address registration kept by the Ministry of Internal Affairs.",
    ),
    (
        "property_title",
        "govbus.records.v1.PropertyTitle",
        "agency/cadastre/system/ekadastr",
        "Title to real estate registered by the cadastre agency; record key is the cadastral number.",
    ),
];

impl Catalog {
    /// The catalog of the record types compiled into govbus.
    pub fn builtin() -> Self {
        let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET)
            .expect("the compiled-in descriptor set is valid");
        let mut catalog = Self {
            pool,
            types: BTreeMap::new(),
        };
        for (name, message, owner, description) in BUILTIN {
            catalog
                .register(name, message, owner, description)
                .expect("built-in record types are consistent");
        }
        catalog
    }

    /// Adds the messages of an encoded `FileDescriptorSet` to the pool, so
    /// that record types using them can be registered.
    pub fn add_descriptors(&mut self, encoded: &[u8]) -> Result<(), CatalogError> {
        self.pool.decode_file_descriptor_set(encoded)?;
        Ok(())
    }

    pub fn register(
        &mut self,
        name: &str,
        message: &str,
        owner: &str,
        description: &str,
    ) -> Result<(), CatalogError> {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name {
            return Err(CatalogError::BadName(name.to_string()));
        }
        if self.types.contains_key(name) {
            return Err(CatalogError::Duplicate(name.to_string()));
        }
        let descriptor =
            self.pool
                .get_message_by_name(message)
                .ok_or_else(|| CatalogError::UnknownMessage {
                    name: name.to_string(),
                    message: message.to_string(),
                })?;
        self.types.insert(
            name.to_string(),
            Arc::new(RecordTypeSpec {
                name: name.to_string(),
                payload_shape: PayloadShape::new(&descriptor),
                message: descriptor,
                owner: owner.to_string(),
                description: description.to_string(),
                topic: format!("{TOPIC_PREFIX}{name}"),
            }),
        );
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<RecordTypeSpec>> {
        self.types.get(name)
    }

    pub fn by_topic(&self, topic: &str) -> Option<&Arc<RecordTypeSpec>> {
        topic
            .strip_prefix(TOPIC_PREFIX)
            .and_then(|name| self.types.get(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<RecordTypeSpec>> {
        self.types.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.types.keys().map(String::as_str).collect()
    }

    pub fn topics(&self) -> Vec<String> {
        self.iter().map(|t| t.topic.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_types_resolve_to_messages_and_topics() {
        let catalog = Catalog::builtin();
        let birth = catalog.get("birth_certificate").unwrap();
        assert_eq!(
            birth.message.full_name(),
            "govbus.records.v1.BirthCertificate"
        );
        assert_eq!(birth.topic, "govbus.records.birth_certificate");
        assert_eq!(
            catalog
                .by_topic("govbus.records.property_title")
                .unwrap()
                .name,
            "property_title"
        );
        assert!(catalog.by_topic("other.birth_certificate").is_none());
        assert_eq!(catalog.iter().count(), 4);
    }

    #[test]
    fn register_rejects_bad_entries() {
        let mut catalog = Catalog::builtin();
        assert!(matches!(
            catalog.register("Bad-Name", "govbus.records.v1.BirthCertificate", "x", ""),
            Err(CatalogError::BadName(_))
        ));
        assert!(matches!(
            catalog.register("pension", "govbus.records.v1.Pension", "x", ""),
            Err(CatalogError::UnknownMessage { .. })
        ));
        assert!(matches!(
            catalog.register(
                "birth_certificate",
                "govbus.records.v1.BirthCertificate",
                "x",
                ""
            ),
            Err(CatalogError::Duplicate(_))
        ));
    }

    #[test]
    fn field_names_map_to_numbers() {
        let catalog = Catalog::builtin();
        let spec = catalog.get("birth_certificate").unwrap();
        assert_eq!(
            spec.field_numbers(&["date_of_birth".into(), "child".into()]),
            Ok(vec![4, 2])
        );
        assert_eq!(
            spec.field_numbers(&["salary".into(), "sex".into()]),
            Err(vec!["salary".to_string()])
        );
        assert_eq!(spec.owner, "agency/civil-registry/system/fhdy");
    }
}
