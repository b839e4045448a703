//! The showcase: a versioned, materialised view of every record on the bus,
//! in SQLite (embedded default) or PostgreSQL (production) through sqlx.

/// SQL joining the history row `h` that holds the envelope of the current
/// row `r` (migration 0006: each version's envelope is stored once, in the
/// history) and the signature parts `s` of its batch, if its envelope was
/// split (migration 0008), for `concat!` into the statements that read
/// current records.
macro_rules! join_history_of_current {
    () => {
        " JOIN showcase_history AS h \
           ON h.record_type = r.record_type AND h.subject_id = r.subject_id \
          AND h.record_key = r.record_key AND h.version = r.version \
         LEFT JOIN showcase_batch_signatures AS s ON s.digest = h.signature_digest "
    };
}

pub mod audit;
mod audit_append;
#[cfg(test)]
mod audit_scope_tests;
mod checkpointer;
mod consents;
mod current_reads;
mod database;
mod showcase;
mod showcase_arrays;
mod showcase_batch;
#[cfg(test)]
mod showcase_upgrade_tests;
mod stored_envelope;
#[cfg(test)]
mod test_databases;

pub use audit::{AccessScope, AuditEntry, AuditLog, ChainFault, ChainedEntry, Checkpoint};
pub use audit_append::Appender;
pub use consents::{ConsentRecord, ConsentScope, ConsentState, Consents};
pub use database::{Backend, Database, StoreError, WriteTransaction};
pub use showcase::{ApplyStats, IngestedRecord, Showcase, ShowcaseDigest, StoredRecord};
pub use showcase_batch::{Durability, PreparedBatch};
