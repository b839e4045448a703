//! The showcase: a versioned, materialised view of every record on the bus,
//! in SQLite (embedded default) or PostgreSQL (production) through sqlx.

/// SQL keeping, of the history rows `h`, each record's newest version — its
/// current one (migration 0008: the history is the showcase's one table) —
/// for `concat!` into the statements that read current records. One seek
/// in the history's key index per row.
macro_rules! newest_version_only {
    () => {
        " NOT EXISTS (SELECT 1 FROM showcase_history AS newer \
           WHERE newer.record_type = h.record_type AND newer.subject_id = h.subject_id \
             AND newer.record_key = h.record_key AND newer.version > h.version) "
    };
}

pub mod audit;
mod audit_append;
#[cfg(test)]
mod audit_scope_tests;
mod consents;
mod current_reads;
mod database;
mod showcase;
mod showcase_arrays;
mod showcase_batch;
#[cfg(test)]
mod showcase_upgrade_tests;
#[cfg(test)]
mod test_databases;

pub use audit::{AccessScope, AuditEntry, AuditLog, ChainFault, ChainedEntry, Checkpoint};
pub use audit_append::Appender;
pub use consents::{ConsentRecord, ConsentScope, ConsentState, Consents};
pub use database::{Backend, Database, StoreError, WriteTransaction};
pub use showcase::{ApplyStats, IngestedRecord, Showcase, ShowcaseDigest, StoredRecord};
pub use showcase_batch::PreparedBatch;
