//! The showcase: a versioned, materialised view of every record on the bus,
//! in SQLite (embedded default) or PostgreSQL (production) through sqlx.

pub mod audit;
mod audit_append;
mod consents;
mod current_reads;
mod database;
mod showcase;
#[cfg(test)]
mod showcase_upgrade_tests;

pub use audit::{AccessScope, AuditEntry, AuditLog, ChainFault, ChainedEntry, Checkpoint};
pub use audit_append::Appender;
pub use consents::{ConsentRecord, ConsentScope, ConsentState, Consents};
pub use database::{Backend, Database, StoreError, WriteTransaction};
pub use showcase::{ApplyStats, IngestedRecord, Showcase, ShowcaseDigest, StoredRecord};
