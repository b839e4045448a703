//! A batch of ingested records made ready for the showcase, and writing it.
//!
//! Preparing — ordering the batch, picking the version of each record that
//! may become current, encoding every value for the driver — needs no
//! database. The broker's ingest prepares batch n+1 on the blocking pool
//! while its one writer stores batch n, so the writer's turn is only the
//! statement: the writer is the ingest's slower stage, and this CPU work
//! was about a third of its time (docs/PROFILING.md).

use std::{borrow::Cow, sync::Arc};

use sqlx::{
    Arguments as _, Row as _,
    postgres::PgArguments,
    sqlite::{Sqlite, SqliteArguments},
};

use crate::{
    Backend, Database, IngestedRecord, StoreError, showcase::Table, showcase_arrays,
    stored_envelope,
};

/// When a batch's commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the write returns.
    Synced,
    /// With the next synced commit or [`crate::Showcase::sync`]; visible
    /// at once. A crash of the process cannot undo it, a power loss can
    /// (SQLite's `synchronous=NORMAL` in WAL mode: the commit is not
    /// `fsync`ed). The ingest defers while it is behind and stores a
    /// batch's Kafka offsets only once its commit is synced, so a lost
    /// commit is consumed again. PostgreSQL syncs every commit either way.
    Deferred,
}

impl Durability {
    /// The `PRAGMA synchronous` of a SQLite commit of this durability.
    fn sqlite_synchronous(self) -> &'static str {
        match self {
            Self::Synced => "FULL",
            Self::Deferred => "NORMAL",
        }
    }
}

/// A batch ready to be written by [`crate::Showcase::apply_prepared`];
/// cheap to clone (a write that failed is tried again with a clone).
#[derive(Debug, Clone)]
pub struct PreparedBatch {
    records: usize,
    statement: Statement,
}

#[derive(Debug, Clone)]
enum Statement {
    /// SQLite: one text of several statements (see `apply_sqlite`).
    Sqlite {
        /// Shared: the writer hands it to sqlx on every try without a copy.
        sql: Arc<str>,
        args: SqliteArguments,
    },
    /// PostgreSQL: one statement over column arrays (`showcase_arrays`).
    Postgres(PgArguments),
    /// A value the driver could not encode: applying fails with this.
    Unencodable(String),
}

/// Rows per statement of a multi-row INSERT (SQLite; PostgreSQL binds a
/// whole batch as arrays): 13 parameters each, well under SQLite's limit.
const ROWS_PER_STATEMENT: usize = 500;

impl PreparedBatch {
    /// Orders `batch` (a stable order of row locks across concurrent
    /// writers — replicas during a rebalance — in both tables), picks the
    /// newest version of each record in it for the current table (one
    /// upsert may touch a row once only: PostgreSQL refuses more; every
    /// version goes to the history), and encodes the statement's values.
    pub(crate) fn new(backend: Backend, batch: &[IngestedRecord]) -> Self {
        fn record(r: &IngestedRecord) -> (&str, &str, &str) {
            let r = &r.record;
            (&r.record_type, &r.subject_id, &r.record_key)
        }
        fn key(r: &IngestedRecord) -> ((&str, &str, &str), u64) {
            (record(r), r.record.version)
        }
        let (envelopes, signatures) = split_envelopes(batch);
        let mut all: Vec<Row<'_>> = batch
            .iter()
            .zip(envelopes)
            .map(|(item, (envelope, signature_digest))| Row {
                item,
                envelope,
                signature_digest,
            })
            .collect();
        // Stable: versions seen twice keep their batch order.
        all.sort_by(|a, b| key(a.item).cmp(&key(b.item)));
        // In key order a record's versions are a run, its newest last; of
        // that version seen twice (a redelivery), the first is current.
        let mut is_newest = vec![false; all.len()];
        let mut start = 0;
        for run in all.chunk_by(|a, b| record(a.item) == record(b.item)) {
            let newest = run.last().map(|row| row.item.record.version);
            let first = run
                .iter()
                .position(|row| Some(row.item.record.version) == newest);
            is_newest[start + first.unwrap_or_default()] = true;
            start += run.len();
        }
        let statement = match backend {
            Backend::Postgres => {
                showcase_arrays::arguments(&all, &is_newest, &signatures).map(Statement::Postgres)
            }
            Backend::Sqlite => sqlite_statement(all, &is_newest, &signatures),
        };
        Self {
            records: batch.len(),
            statement: statement.unwrap_or_else(|e| Statement::Unencodable(e.to_string())),
        }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Writes the batch in one transaction; returns the rows that became
    /// current.
    pub(crate) async fn write(
        &self,
        db: &Database,
        durability: Durability,
    ) -> Result<u64, StoreError> {
        match &self.statement {
            Statement::Sqlite { sql, args } => {
                let sql = format!(
                    "PRAGMA synchronous = {}; {sql}",
                    durability.sqlite_synchronous()
                );
                apply_sqlite(db, sql.into(), args.clone()).await
            }
            Statement::Postgres(args) => match db.native_postgres() {
                Some(pool) => showcase_arrays::apply(pool, args.clone()).await,
                None => Err(wrong_backend()),
            },
            Statement::Unencodable(message) => {
                Err(sqlx::Error::Encode(message.clone().into()).into())
            }
        }
    }
}

/// One history row of a batch: the record, and its envelope as stored.
pub(crate) struct Row<'a> {
    pub item: &'a IngestedRecord,
    /// The envelope, or its own part when `signature_digest` is set.
    pub envelope: Cow<'a, [u8]>,
    /// Where the batch signature parts of a split envelope are stored.
    pub signature_digest: Option<[u8; 32]>,
}

/// A batch signature's parts, under the SHA-256 of their bytes.
pub(crate) type BatchSignature = ([u8; 32], Vec<u8>);

/// An envelope as stored: whole, or its own part and the digest of its
/// batch's signature parts.
type StoredEnvelope<'a> = (Cow<'a, [u8]>, Option<[u8; 32]>);

/// Each record's envelope as stored, in `batch` order, and the distinct
/// signature parts of the batch in digest order (the order of their row
/// locks, like the records'). Records of one signed batch come one after
/// another off a partition: the parts are hashed once per run of records
/// that share them.
fn split_envelopes(batch: &[IngestedRecord]) -> (Vec<StoredEnvelope<'_>>, Vec<BatchSignature>) {
    let mut envelopes = Vec::with_capacity(batch.len());
    let mut signatures: Vec<BatchSignature> = Vec::new();
    let mut last: Option<usize> = None;
    let mut shared = Vec::new();
    for item in batch {
        let mut own = Vec::new();
        shared.clear();
        if !stored_envelope::split_into(&item.envelope, &mut own, &mut shared) {
            envelopes.push((Cow::Borrowed(&item.envelope[..]), None));
            continue;
        }
        let known = match last {
            Some(i) if signatures[i].1 == shared => i,
            _ => {
                let digest = stored_envelope::shared_digest(&shared);
                let i = match signatures.iter().position(|(d, _)| *d == digest) {
                    Some(i) => i,
                    None => {
                        signatures.push((digest, shared.clone()));
                        signatures.len() - 1
                    }
                };
                last = Some(i);
                i
            }
        };
        envelopes.push((Cow::Owned(own), Some(signatures[known].0)));
    }
    signatures.sort_by_key(|(digest, _)| *digest);
    (envelopes, signatures)
}

fn wrong_backend() -> StoreError {
    sqlx::Error::Configuration("a batch prepared for another backend".into()).into()
}

/// SQLite: a batch in one hand-off to SQLite's thread — BEGIN, the
/// upserts of the current table, the history, COMMIT as one text of several
/// statements (sqlx binds anonymous parameters across them in order), with
/// the changes counted before and after the upserts; `write` puts the
/// commit's `PRAGMA synchronous` first.
/// As four hand-offs (BEGIN, two INSERTs, COMMIT) each waited for SQLite's
/// thread to be scheduled on a busy machine: BEGIN alone was 11 % of the
/// ingest writer's time (docs/PROFILING.md).
fn sqlite_statement(
    all: Vec<Row<'_>>,
    is_newest: &[bool],
    signatures: &[BatchSignature],
) -> Result<Statement, sqlx::error::BoxDynError> {
    // In key order, as `all` is.
    let current: Vec<usize> = (0..all.len()).filter(|&i| is_newest[i]).collect();
    let mut sql = String::from("BEGIN IMMEDIATE; SELECT total_changes(); ");
    for chunk in current.chunks(ROWS_PER_STATEMENT) {
        sql += &Table::Current.insert_sql(Backend::Sqlite, chunk.len());
        sql += "; ";
    }
    sql += "SELECT total_changes(); ";
    for chunk in all.chunks(ROWS_PER_STATEMENT) {
        sql += &Table::History.insert_sql(Backend::Sqlite, chunk.len());
        sql += "; ";
    }
    if !signatures.is_empty() {
        sql += &format!(
            "INSERT INTO showcase_batch_signatures (digest, signature) VALUES {} \
             ON CONFLICT (digest) DO NOTHING; ",
            crate::database::values_placeholders(Backend::Sqlite, signatures.len(), 2)
        );
    }
    sql += "COMMIT";
    let mut args = SqliteArguments::default();
    args.reserve(
        current.len() * Table::Current.width()
            + all.len() * Table::History.width()
            + signatures.len() * 2,
        0,
    );
    let mut texts = SharedTexts::default();
    let keys: Vec<RowTexts> = all.iter().map(|row| texts.row(row.item)).collect();
    for &i in &current {
        bind_columns(&mut args, &keys[i], &all[i])?;
    }
    for (row, keys) in all.into_iter().zip(&keys) {
        bind_columns(&mut args, keys, &row)?;
        // The envelope moves in: sqlx would copy a borrowed one.
        args.add(row.envelope)?;
        args.add(row.signature_digest.map(Vec::from))?;
    }
    for (digest, signature) in signatures {
        args.add(digest.as_slice())?;
        args.add(signature.as_slice())?;
    }
    Ok(Statement::Sqlite {
        sql: sql.into(),
        args,
    })
}

/// A row's text columns, shared by its current and history rows: sqlx's
/// SQLite driver binds a borrowed string as a copy in an allocation of its
/// own, a shared one (`Arc<str>`) as it is — per record, two tables of
/// five texts were ~20 allocations and copies (docs/PROFILING.md).
struct RowTexts {
    record_type: Arc<str>,
    subject_id: Arc<str>,
    record_key: Arc<str>,
    record_id: Arc<str>,
    topic: Arc<str>,
}

/// Record types and topics, the same for runs of a batch's records, made
/// shareable once per run.
#[derive(Default)]
struct SharedTexts {
    record_type: Option<Arc<str>>,
    topic: Option<Arc<str>>,
}

impl SharedTexts {
    fn row(&mut self, item: &IngestedRecord) -> RowTexts {
        fn same(last: &mut Option<Arc<str>>, text: &str) -> Arc<str> {
            match last {
                Some(known) if **known == *text => known.clone(),
                _ => last.insert(text.into()).clone(),
            }
        }
        let r = &item.record;
        RowTexts {
            record_type: same(&mut self.record_type, &r.record_type),
            subject_id: r.subject_id.as_str().into(),
            record_key: r.record_key.as_str().into(),
            record_id: r.record_id.as_str().into(),
            topic: same(&mut self.topic, &item.topic),
        }
    }
}

/// Adds the columns both tables have (`Table::Current`'s), in its order.
fn bind_columns(
    args: &mut SqliteArguments,
    texts: &RowTexts,
    row: &Row<'_>,
) -> Result<(), sqlx::error::BoxDynError> {
    let (item, r) = (row.item, &row.item.record);
    args.add(texts.record_type.clone())?;
    args.add(texts.subject_id.clone())?;
    args.add(texts.record_key.clone())?;
    args.add(r.version as i64)?;
    args.add(texts.record_id.clone())?;
    args.add(i64::from(r.status))?;
    args.add(r.content_hash.as_slice())?;
    args.add(texts.topic.clone())?;
    args.add(i64::from(item.partition))?;
    args.add(item.offset)?;
    args.add(item.ingested_at_us)?;
    Ok(())
}

/// Runs a prepared SQLite text in this process's write turn, on the native
/// driver (`Any` would copy every value once more). Returns the rows of the
/// current table inserted or updated.
async fn apply_sqlite(
    db: &Database,
    sql: Arc<str>,
    args: SqliteArguments,
) -> Result<u64, StoreError> {
    let pool = db.native_sqlite().ok_or_else(wrong_backend)?;
    let query = sqlx::query_with::<Sqlite, _>(sqlx::AssertSqlSafe(sql), args);
    let _turn = db.write_turn().await;
    let mut conn = Unfinished(Some(pool.acquire().await?));
    let counts = match query.fetch_all(conn.get()).await {
        Ok(counts) => {
            conn.finished();
            counts
        }
        Err(e) => {
            // Whatever ran of the batch is undone; a connection that cannot
            // say so is closed rather than handed to the next caller.
            if sqlx::query("ROLLBACK").execute(conn.get()).await.is_ok() {
                conn.finished();
            }
            return Err(e.into());
        }
    };
    let count = |i: usize| -> Result<i64, StoreError> {
        let row = counts.get(i).ok_or(sqlx::Error::RowNotFound)?;
        Ok(row.try_get(0)?)
    };
    Ok((count(1)? - count(0)?) as u64)
}

/// A pooled connection running a text that opens a transaction: dropped
/// before `finished` (the caller cancelled, or the rollback failed), it is
/// closed instead of pooled, so no one inherits an open transaction.
struct Unfinished(Option<sqlx::pool::PoolConnection<Sqlite>>);

impl Unfinished {
    fn get(&mut self) -> &mut sqlx::SqliteConnection {
        self.0.as_mut().expect("connection held until finished")
    }

    /// The text ran to its end (or was rolled back): back to the pool.
    fn finished(&mut self) {
        self.0.take();
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use govbus_proto::v1::Record;

    use super::*;
    use crate::Showcase;

    pub(crate) fn batch(from: u64, to: u64) -> Vec<IngestedRecord> {
        (from..to)
            .map(|n| IngestedRecord {
                record: Record {
                    record_type: "birth_certificate".into(),
                    subject_id: format!("{n:014}"),
                    record_key: "k".into(),
                    version: 1,
                    ..Record::default()
                },
                // About a signed envelope's size.
                envelope: vec![7; 1500].into(),
                topic: "govbus.records.birth_certificate".into(),
                partition: 0,
                offset: n as i64,
                ingested_at_us: 1,
            })
            .collect()
    }

    /// A deferred commit is visible at once and its connection skips the
    /// sync (`synchronous` NORMAL, 1); the next synced commit is FULL (2)
    /// again; `sync` leaves no frame of the log uncopied, so none that was
    /// not yet on disk.
    #[tokio::test]
    async fn a_deferred_commit_is_visible_at_once_and_synced_later() {
        let (_dir, url) = crate::test_databases::temp_sqlite("showcase.db");
        let showcase = Showcase::open(&url).await.expect("showcase");
        let writer = showcase.database().native_sqlite().expect("SQLite");
        let synchronous = || async {
            sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
                .fetch_one(writer)
                .await
                .expect("synchronous")
        };
        let write = |records: Vec<IngestedRecord>, durability| {
            let showcase = &showcase;
            async move {
                showcase
                    .apply_prepared(&showcase.prepare(&records), durability)
                    .await
                    .expect("batch applies")
            }
        };

        assert_eq!(write(batch(0, 20), Durability::Deferred).await.applied, 20);
        assert_eq!(synchronous().await, 1);
        let read = showcase
            .current("birth_certificate", &format!("{:014}", 19))
            .await
            .expect("read");
        assert_eq!(read.len(), 1, "visible before any sync");

        showcase.sync().await.expect("sync");
        let (busy, log, checkpointed): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(writer)
                .await
                .expect("checkpoint");
        assert_eq!((busy, checkpointed), (0, log), "every frame copied");

        assert_eq!(write(batch(20, 30), Durability::Synced).await.applied, 10);
        assert_eq!(synchronous().await, 2);
        assert_eq!(showcase.count().await.expect("count"), 30);
    }
}
