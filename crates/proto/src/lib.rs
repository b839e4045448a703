//! The govbus wire contracts, generated from `proto/` at build time.
//!
//! `v1` holds the envelope and the gRPC services; `records` holds the typed
//! record payloads; `served` the broker's side of `OnceOnly`, whose answers
//! carry stored envelopes as bytes. [`FILE_DESCRIPTOR_SET`] carries every
//! message (well-known types included) for server reflection and for the
//! record catalog.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod govbus {
    pub mod v1 {
        tonic::include_proto!("govbus.v1");
    }
    pub mod records {
        pub mod v1 {
            tonic::include_proto!("govbus.records.v1");
        }
    }
}

pub use govbus::records::v1 as records;
pub use govbus::v1;

pub mod served;

/// Encoded `google.protobuf.FileDescriptorSet` of all govbus protos and their imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/govbus_descriptor.bin"));

/// The `type_url` under which a message is packed into `google.protobuf.Any`.
pub fn type_url(full_name: &str) -> String {
    format!("{TYPE_URL_PREFIX}{full_name}")
}

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// Whether `url` is [`type_url`]`(full_name)`, without building it: the
/// adapter and the broker ask it of every record they check.
pub fn is_type_url(url: &str, full_name: &str) -> bool {
    url.strip_prefix(TYPE_URL_PREFIX) == Some(full_name)
}

/// Packs a typed record message into the `Any` a [`v1::Record`] carries.
pub fn pack<M: prost::Name>(message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url(&M::full_name()),
        value: prost::Message::encode_to_vec(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_url_is_recognised_exactly() {
        let name = "govbus.records.v1.BirthCertificate";
        assert!(is_type_url(&type_url(name), name));
        for other in [
            "",
            name,
            "type.googleapis.com/",
            "type.googleapis.com/govbus.records.v1.BirthCertificat",
            "type.googleapis.com/govbus.records.v1.BirthCertificateX",
            "type.googleapis.com//govbus.records.v1.BirthCertificate",
            "example.com/govbus.records.v1.BirthCertificate",
        ] {
            assert!(!is_type_url(other, name), "{other:?}");
        }
    }
}
