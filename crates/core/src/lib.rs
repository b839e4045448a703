//! Domain of the bus: subjects, the record catalog, and the validation that
//! turns a wire record into one the bus is willing to carry.

pub mod catalog;
pub mod config;
pub mod record;
pub mod signing_input;
pub mod subject;
pub mod time;
pub mod wire;

pub use catalog::{Catalog, CatalogError, RecordTypeSpec};
pub use config::ConfigError;
pub use record::{FieldViolation, RecordLimits, ValidRecord, validate_record};
pub use signing_input::{SigningInputError, content_hash, minimise, signing_input};
pub use subject::{SubjectError, SubjectId};
