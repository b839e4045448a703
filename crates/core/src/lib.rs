//! Domain of the bus: subjects, the record catalog, and the validation that
//! turns a wire record into one the bus is willing to carry.

pub mod catalog;
pub mod config;
pub mod payload_scan;
pub mod record;
pub mod signing_input;
pub mod subject;
pub mod text;
pub mod time;
pub mod wire;

pub use catalog::{Catalog, CatalogError, RecordTypeSpec};
pub use config::ConfigError;
pub use record::{FieldViolation, RecordLimits, ValidRecord, validate_record};
pub use signing_input::{
    SigningInputError, content_hash, content_hash_is, minimise, signing_input,
};
pub use subject::{SubjectError, SubjectId};

/// The longest caller-chosen label (purpose code, request id), in bytes.
pub const MAX_LABEL_BYTES: usize = 128;

/// A caller-chosen label the bus stores, logs and echoes: at most
/// [`MAX_LABEL_BYTES`] and no control characters (they forge log lines, and
/// PostgreSQL text cannot hold a NUL).
pub fn is_label(text: &str) -> bool {
    text.len() <= MAX_LABEL_BYTES && !text::has_control(text)
}
