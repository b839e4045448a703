//! The broker's side of `govbus.v1.OnceOnly`: answers that carry each stored
//! envelope as the bytes the showcase holds.
//!
//! Why: the showcase keeps every record as the signed envelope it was
//! published in. Decoding it into a [`Record`](crate::v1::Record) only to
//! encode the same bytes into the answer was 3–6 % of a call's
//! instructions (docs/PROFILING.md). An embedded message and a
//! `bytes` field have one wire form (tag, wire type 2, length, the bytes),
//! so these messages are `govbus.v1.GetEvidenceResponse` and
//! `govbus.v1.Evidence` on the wire: clients, reflection and the descriptor
//! set see only the public types. The service's routes and other messages
//! are generated from the same descriptor as the public service (build.rs).

/// `govbus.v1.GetEvidenceResponse` with each record as its encoded bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetEvidenceResponse {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(message, repeated, tag = "2")]
    pub evidence: Vec<Evidence>,
    #[prost(message, optional, tag = "3")]
    pub showcase_as_of: Option<prost_types::Timestamp>,
}

/// `govbus.v1.Evidence` with the record as its encoded bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Evidence {
    /// An encoded `govbus.v1.Record`.
    #[prost(bytes = "vec", tag = "1")]
    pub record: Vec<u8>,
    #[prost(enumeration = "crate::v1::EvidenceStatus", tag = "2")]
    pub status: i32,
    #[prost(message, optional, tag = "3")]
    pub provenance: Option<crate::v1::Provenance>,
}

/// The fields of a `govbus.v1.Record` that an answer reads besides its
/// bytes. Decoding an envelope as this checks its outer framing and skips
/// the other fields without decoding them (the signature block, the
/// payload, the certificate).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecordHead {
    #[prost(enumeration = "crate::v1::RecordStatus", tag = "6")]
    pub status: i32,
    #[prost(message, optional, tag = "9")]
    pub valid_until: Option<prost_types::Timestamp>,
    #[prost(string, tag = "10")]
    pub source_agency: String,
    #[prost(string, tag = "11")]
    pub source_system: String,
}

include!(concat!(env!("OUT_DIR"), "/govbus.v1.OnceOnly.rs"));
