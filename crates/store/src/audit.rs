//! The audit trail: an append-only hash chain of evidence requests, signed
//! checkpoints over it, and the walk that finds the first tampered entry.

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{Database, StoreError, audit_append::Appender};

/// What happened to one evidence request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_us: i64,
    pub caller: String,
    pub subject_id: String,
    pub record_type: String,
    pub purpose: String,
    /// Released payload fields, comma-separated; `*` for all, empty if none.
    pub fields: String,
    /// `allowed`, `denied` or `not_found`.
    pub decision: String,
    pub reason: String,
    pub request_id: String,
    pub trace_id: String,
    pub records: i64,
}

impl AuditEntry {
    /// The entry with control characters in its text replaced. Refusals
    /// keep the caller's text (and reasons quote it): a NUL byte cannot be
    /// stored in a PostgreSQL text column, and one such entry failed its
    /// whole group commit — every request committed with it answered
    /// UNAVAILABLE.
    pub fn printable(mut self) -> Self {
        for text in [
            &mut self.caller,
            &mut self.subject_id,
            &mut self.record_type,
            &mut self.purpose,
            &mut self.fields,
            &mut self.decision,
            &mut self.reason,
            &mut self.request_id,
            &mut self.trace_id,
        ] {
            if govbus_core::text::has_control(text) {
                *text = text
                    .chars()
                    .map(|c| {
                        if c.is_control() {
                            char::REPLACEMENT_CHARACTER
                        } else {
                            c
                        }
                    })
                    .collect();
            }
        }
        self
    }
}

/// An entry as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEntry {
    pub chain: String,
    pub seq: i64,
    pub entry: AuditEntry,
    pub prev_hash: Vec<u8>,
    pub entry_hash: Vec<u8>,
}

/// A signed statement that `chain` had `entry_hash` at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub chain: String,
    pub seq: i64,
    pub entry_hash: Vec<u8>,
    pub signed_at_us: i64,
    pub certificate: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The bytes the broker signs.
    pub fn message(chain: &str, seq: i64, entry_hash: &[u8], signed_at_us: i64) -> Vec<u8> {
        let mut m = b"govbus audit checkpoint\n".to_vec();
        put(&mut m, chain.as_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        put(&mut m, entry_hash);
        m.extend_from_slice(&signed_at_us.to_be_bytes());
        m
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// SHA-256(prev_hash || length-prefixed fields, in a fixed order).
pub fn entry_hash(chain: &str, seq: i64, prev_hash: &[u8], e: &AuditEntry) -> Vec<u8> {
    let mut canonical = Vec::with_capacity(256);
    put(&mut canonical, chain.as_bytes());
    canonical.extend_from_slice(&seq.to_be_bytes());
    canonical.extend_from_slice(&e.at_us.to_be_bytes());
    for text in [
        &e.caller,
        &e.subject_id,
        &e.record_type,
        &e.purpose,
        &e.fields,
        &e.decision,
        &e.reason,
        &e.request_id,
        &e.trace_id,
    ] {
        put(&mut canonical, text.as_bytes());
    }
    canonical.extend_from_slice(&e.records.to_be_bytes());
    Sha256::new()
        .chain_update(prev_hash)
        .chain_update(&canonical)
        .finalize()
        .to_vec()
}

/// The first problem found walking a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFault {
    /// The entry's contents do not match its hash.
    Altered { chain: String, seq: i64 },
    /// Entries are missing before this one.
    Missing { chain: String, seq: i64 },
    /// The entry does not follow its predecessor (inserted or reordered).
    Broken { chain: String, seq: i64 },
    /// A checkpoint disagrees with the chain, or its signature does not hold.
    Checkpoint {
        chain: String,
        seq: i64,
        reason: String,
    },
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Altered { chain, seq } => write!(f, "chain {chain}: entry {seq} was altered"),
            Self::Missing { chain, seq } => {
                write!(f, "chain {chain}: entries before {seq} were deleted")
            }
            Self::Broken { chain, seq } => {
                write!(
                    f,
                    "chain {chain}: entry {seq} does not follow the entry before it (inserted?)"
                )
            }
            Self::Checkpoint { chain, seq, reason } => {
                write!(f, "chain {chain}: checkpoint at {seq}: {reason}")
            }
        }
    }
}

/// Rows of one INSERT: 15 parameters each, under SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters per statement.
pub(crate) const APPEND_ROWS_PER_STATEMENT: usize = 256;

pub(crate) const ENTRY_COLUMNS: &str = "chain, seq, at_us, caller, subject_id, record_type, purpose, fields, \
     decision, reason, request_id, trace_id, records, prev_hash, entry_hash";

fn chained(row: &sqlx::any::AnyRow) -> Result<ChainedEntry, sqlx::Error> {
    Ok(ChainedEntry {
        chain: row.try_get(0)?,
        seq: row.try_get(1)?,
        entry: AuditEntry {
            at_us: row.try_get(2)?,
            caller: row.try_get(3)?,
            subject_id: row.try_get(4)?,
            record_type: row.try_get(5)?,
            purpose: row.try_get(6)?,
            fields: row.try_get(7)?,
            decision: row.try_get(8)?,
            reason: row.try_get(9)?,
            request_id: row.try_get(10)?,
            trace_id: row.try_get(11)?,
            records: row.try_get(12)?,
        },
        prev_hash: row.try_get(13)?,
        entry_hash: row.try_get(14)?,
    })
}

/// Whose accesses to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessScope {
    Subject(String),
    /// Callers of one agency: `agency/<agency>/system/…`.
    Agency(String),
}

impl AccessScope {
    /// The subject id or the agency.
    pub(crate) fn value(&self) -> &str {
        match self {
            Self::Subject(value) | Self::Agency(value) => value,
        }
    }
}

/// A page of accesses: $1 the subject or agency, $2–$4 the (at_us, chain,
/// seq) the page starts below, $5 the page size. Both scopes have an index
/// by (scope, at_us); the `at_us <= $2` bound, implied by the condition after
/// it, is what lets PostgreSQL start a later page at its place in that index
/// instead of walking down to it from the newest entry.
pub(crate) fn accesses_sql(scope: &AccessScope, paged: bool) -> String {
    let filter = match scope {
        AccessScope::Subject(_) => "subject_id = $1",
        AccessScope::Agency(_) => "agency = $1",
    };
    let after = if paged {
        " AND at_us <= $2 AND (at_us < $2 OR (at_us = $2 AND (chain < $3 OR (chain = $3 AND seq < $4))))"
    } else {
        " AND $2 = $2 AND $3 = $3 AND $4 = $4"
    };
    format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE {filter}{after} \
         ORDER BY at_us DESC, chain DESC, seq DESC LIMIT $5"
    )
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Database,
}

impl AuditLog {
    /// The audit trail in `db` (the showcase database, or one of its own).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Connects to a database of the audit trail's own and migrates it (the
    /// store has one schema; the showcase tables stay empty there). Unlike
    /// the showcase's, its SQLite pages keep SQLite's default size.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let db = crate::showcase::migrated(Database::connect(url).await?).await?;
        Ok(Self::new(db))
    }

    /// The database the trail is in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The last (seq, entry_hash) of `chain`; (0, zeros) when it is empty.
    pub async fn head(&self, chain: &str) -> Result<(i64, Vec<u8>), StoreError> {
        let row = sqlx::query(
            "SELECT seq, entry_hash FROM audit_log WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(chain)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(match row {
            Some(row) => (row.try_get(0)?, row.try_get(1)?),
            None => (0, vec![0u8; 32]),
        })
    }

    /// The writer of this trail's chains (one per process and chain).
    pub fn appender(&self) -> Appender {
        Appender::new(self.db.clone())
    }

    pub async fn insert_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (chain, seq, entry_hash, signed_at_us, certificate, signature) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (chain, seq) DO NOTHING",
        )
        .bind(c.chain.as_str())
        .bind(c.seq)
        .bind(c.entry_hash.as_slice())
        .bind(c.signed_at_us)
        .bind(c.certificate.as_slice())
        .bind(c.signature.as_slice())
        .execute(&mut **tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries of `chain` after `seq`, in order, at most `limit`.
    pub async fn entries_after(
        &self,
        chain: &str,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<ChainedEntry>, StoreError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(chain)
            .bind(seq)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows.iter().map(chained).collect::<Result<_, _>>()?)
    }

    /// Accesses newest first; `before` is the (at_us, chain, seq) of the last
    /// entry of the previous page.
    pub async fn accesses(
        &self,
        scope: &AccessScope,
        before: Option<(i64, String, i64)>,
        limit: i64,
    ) -> Result<Vec<ChainedEntry>, StoreError> {
        let sql = accesses_sql(scope, before.is_some());
        let (at, chain, seq) = before.unwrap_or_default();
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.value())
            .bind(at)
            .bind(chain)
            .bind(seq)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows.iter().map(chained).collect::<Result<_, _>>()?)
    }

    /// The entries of one request id (operators: "what happened to request X").
    pub async fn by_request_id(&self, request_id: &str) -> Result<Vec<ChainedEntry>, StoreError> {
        let sql =
            format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE request_id = $1 ORDER BY at_us");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(request_id)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows.iter().map(chained).collect::<Result<_, _>>()?)
    }

    pub async fn chains(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT chain FROM audit_log ORDER BY chain")
                .fetch_all(&self.db.pool)
                .await?,
        )
    }

    pub async fn checkpoints(&self, chain: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT chain, seq, entry_hash, signed_at_us, certificate, signature FROM audit_checkpoints \
             WHERE chain = $1 ORDER BY seq",
        )
        .bind(chain)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Checkpoint {
                    chain: r.try_get(0)?,
                    seq: r.try_get(1)?,
                    entry_hash: r.try_get(2)?,
                    signed_at_us: r.try_get(3)?,
                    certificate: r.try_get(4)?,
                    signature: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Walks every chain; `check_signature` judges each checkpoint's
    /// signature. Returns the number of entries checked, or the first fault.
    pub async fn verify(
        &self,
        check_signature: impl Fn(&Checkpoint) -> Result<(), String>,
    ) -> Result<Result<i64, ChainFault>, StoreError> {
        let mut total = 0;
        for chain in self.chains().await? {
            let mut hashes = std::collections::HashMap::new();
            let (mut seq, mut prev) = (0i64, vec![0u8; 32]);
            loop {
                let batch = self.entries_after(&chain, seq, 1000).await?;
                if batch.is_empty() {
                    break;
                }
                for e in batch {
                    if e.seq != seq + 1 {
                        return Ok(Err(ChainFault::Missing { chain, seq: e.seq }));
                    }
                    if e.prev_hash != prev {
                        return Ok(Err(ChainFault::Broken { chain, seq: e.seq }));
                    }
                    if entry_hash(&chain, e.seq, &prev, &e.entry) != e.entry_hash {
                        return Ok(Err(ChainFault::Altered { chain, seq: e.seq }));
                    }
                    seq = e.seq;
                    prev = e.entry_hash;
                    hashes.insert(seq, prev.clone());
                    total += 1;
                }
            }
            for c in self.checkpoints(&chain).await? {
                let fault = |reason: &str| ChainFault::Checkpoint {
                    chain: chain.clone(),
                    seq: c.seq,
                    reason: reason.to_string(),
                };
                match hashes.get(&c.seq) {
                    None => {
                        return Ok(Err(fault(
                            "its entry is gone (entries deleted from the end?)",
                        )));
                    }
                    Some(h) if *h != c.entry_hash => {
                        return Ok(Err(fault("the chain differs from what was signed")));
                    }
                    Some(_) => {}
                }
                if let Err(reason) = check_signature(&c) {
                    return Ok(Err(fault(&reason)));
                }
            }
        }
        Ok(Ok(total))
    }

    /// How far `chain` was published to Kafka.
    pub async fn published(&self, chain: &str) -> Result<i64, StoreError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM audit_published WHERE chain = $1")
                .bind(chain)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(last.unwrap_or(0))
    }

    pub async fn mark_published(&self, chain: &str, seq: i64) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO audit_published (chain, last_seq) VALUES ($1, $2) \
             ON CONFLICT (chain) DO UPDATE SET last_seq = excluded.last_seq",
        )
        .bind(chain)
        .bind(seq)
        .execute(&mut **tx)
        .await?;
        tx.commit().await
    }
}
