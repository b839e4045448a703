//! Domain of the bus: subjects, the record catalog, and the validation that
//! turns a wire record into one the bus is willing to carry.

pub mod catalog;
pub mod config;
pub mod record;
pub mod subject;
pub mod time;

pub use catalog::{Catalog, CatalogError, ProjectError, RecordTypeSpec};
pub use config::ConfigError;
pub use record::{FieldViolation, RecordLimits, ValidRecord, content_hash, validate_record};
pub use subject::{SubjectError, SubjectId};
