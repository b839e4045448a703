//! Reading and writing showcase records.

use govbus_proto::v1::Record;
use prost::{Message, bytes::Bytes};
use sqlx::Row;

use std::sync::{Arc, OnceLock};

use crate::{
    Database, StoreError,
    current_reads::CurrentReads,
    showcase_batch::{Durability, PreparedBatch},
    stored_envelope,
};

pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/sqlite");
pub(crate) static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/postgres");

/// A record taken off Kafka, with where it was found.
#[derive(Debug, Clone)]
pub struct IngestedRecord {
    pub record: Record,
    /// The envelope bytes exactly as consumed; `record`'s signature fields
    /// may be slices of them.
    pub envelope: Bytes,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub ingested_at_us: i64,
}

/// A current record as the showcase holds it: its envelope, which an answer
/// sends on without decoding it, and where it came from.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Decodes to the envelope as consumed: the same bytes, or (a record
    /// signed in a batch) the record's own bytes followed by its batch's
    /// signature parts (`stored_envelope`).
    pub envelope: Vec<u8>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub ingested_at_us: i64,
}

impl StoredRecord {
    /// The envelope decoded.
    pub fn record(&self) -> Result<Record, StoreError> {
        Ok(Record::decode(self.envelope.as_slice())?)
    }
}

/// What one batch did to the showcase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    /// Became the current version of their (type, subject, key).
    pub applied: u64,
    /// Older than or equal to the current version: kept in history only if new there.
    pub stale: u64,
}

#[derive(Debug, Clone)]
pub struct Showcase {
    db: Database,
    /// Started by the first `current` call: a showcase only written to
    /// (ingest, seeding) keeps no reader.
    reads: Arc<OnceLock<CurrentReads>>,
}

/// The two tables of the showcase. Every version, envelope included, goes
/// to the history once; the current table says which version is current
/// and takes its envelope from the history (migration 0006). A third,
/// `showcase_batch_signatures`, holds the signature parts of a signed
/// batch once for all its records (migration 0008, `stored_envelope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Current,
    History,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Current => "showcase_records",
            Self::History => "showcase_history",
        }
    }

    pub(crate) fn columns(self) -> &'static str {
        match self {
            Self::Current => {
                "record_type, subject_id, record_key, version, record_id, status, \
                 content_hash, kafka_topic, kafka_partition, kafka_offset, ingested_at_us"
            }
            Self::History => {
                "record_type, subject_id, record_key, version, record_id, status, \
                 content_hash, kafka_topic, kafka_partition, kafka_offset, ingested_at_us, \
                 envelope, signature_digest"
            }
        }
    }

    /// Columns bound per row.
    pub(crate) fn width(self) -> usize {
        self.columns().split(',').count()
    }

    /// A multi-row INSERT of `rows` rows.
    pub(crate) fn insert_sql(self, backend: crate::Backend, rows: usize) -> String {
        format!(
            "INSERT INTO {} ({}) VALUES {}{}",
            self.name(),
            self.columns(),
            crate::database::values_placeholders(backend, rows, self.width()),
            self.conflict()
        )
    }

    /// What follows the VALUES: a record becomes current only over an older
    /// version; a version enters the history once.
    pub(crate) fn conflict(self) -> &'static str {
        match self {
            Self::Current => {
                " ON CONFLICT (record_type, subject_id, record_key) DO UPDATE SET \
                   version = excluded.version, record_id = excluded.record_id, \
                   status = excluded.status, content_hash = excluded.content_hash, \
                   kafka_topic = excluded.kafka_topic, kafka_partition = excluded.kafka_partition, \
                   kafka_offset = excluded.kafka_offset, ingested_at_us = excluded.ingested_at_us \
                 WHERE excluded.version > showcase_records.version"
            }
            Self::History => {
                " ON CONFLICT (record_type, subject_id, record_key, version) DO NOTHING"
            }
        }
    }
}

/// Pages of a new SQLite showcase. A history row (its ~1.5 KB signed
/// envelope and key) is ~1.6 KB: two to a 4 KiB page or four to an 8 KiB
/// one, the same bytes per record, but a batch of 500 then writes half as
/// many WAL frames (one `pwrite` each, each checksummed and later copied by
/// the checkpoint) and its unique indexes half as many pages. The ingest's
/// write alone: −17 % CPU per record, reads unchanged (docs/PROFILING.md; 16 KiB was no better). The audit trail keeps 4 KiB pages:
/// its commits are of one or two small entries, whose frames would double.
pub(crate) const SHOWCASE_PAGE_SIZE: u32 = 8192;

/// `db` with the store's one schema (showcase, consents, audit trail)
/// migrated to the newest version.
pub(crate) async fn migrated(db: Database) -> Result<Database, StoreError> {
    db.migrate(&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS).await?;
    Ok(db)
}

impl Showcase {
    /// Connects to `url` and migrates the schema.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let db = migrated(Database::connect_with_page_size(url, SHOWCASE_PAGE_SIZE).await?).await?;
        Ok(Self {
            db,
            reads: Default::default(),
        })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Applies a batch in one transaction: each record becomes current unless
    /// a version at least as new is already there, and enters the history
    /// once. Nothing of the batch is visible until all of it is.
    pub async fn apply(&self, batch: &[IngestedRecord]) -> Result<ApplyStats, StoreError> {
        self.apply_prepared(&self.prepare(batch), Durability::Synced)
            .await
    }

    /// The CPU half of [`Showcase::apply`], which needs no database and can
    /// run beside a writer (see `showcase_batch`).
    pub fn prepare(&self, batch: &[IngestedRecord]) -> PreparedBatch {
        PreparedBatch::new(self.db.backend, batch)
    }

    /// The database half of [`Showcase::apply`]: many rows per statement
    /// (one statement per record cost a round trip each: found by the
    /// benchmark), both tables in one transaction.
    #[tracing::instrument(name = "showcase_apply", skip_all, fields(
        otel.name = "INSERT showcase_records",
        otel.kind = "client",
        db.system.name = self.db.backend.system_name(),
        db.operation.name = "INSERT",
        db.collection.name = "showcase_records",
        db.operation.batch.size = batch.len(),
        govbus.durability = ?durability,
    ))]
    pub async fn apply_prepared(
        &self,
        batch: &PreparedBatch,
        durability: Durability,
    ) -> Result<ApplyStats, StoreError> {
        let applied = batch.write(&self.db, durability).await?;
        Ok(ApplyStats {
            applied,
            stale: batch.len() as u64 - applied,
        })
    }

    /// Makes every commit made before it durable, [`Durability::Deferred`]
    /// ones included (on SQLite a checkpoint of the whole write-ahead log;
    /// PostgreSQL synced every commit already).
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.db.checkpoint_all().await
    }

    /// The current records of one type about one subject, by record key.
    /// Concurrent calls share one statement (see `current_reads`); the span
    /// is the caller's wait for it.
    #[tracing::instrument(name = "showcase_current", skip_all, fields(
        otel.name = "SELECT showcase_records",
        otel.kind = "client",
        db.system.name = self.db.backend.system_name(),
        db.operation.name = "SELECT",
        db.collection.name = "showcase_records",
    ))]
    pub async fn current(
        &self,
        record_type: &str,
        subject_id: &str,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let reads = self
            .reads
            .get_or_init(|| CurrentReads::start(self.db.clone()));
        reads.current(record_type, subject_id).await
    }

    /// How many versions of one record the history holds (operators, tests).
    pub async fn history_len(
        &self,
        record_type: &str,
        subject_id: &str,
        record_key: &str,
    ) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM showcase_history \
                   WHERE record_type = $1 AND subject_id = $2 AND record_key = $3";
        Ok(sqlx::query_scalar(sql)
            .bind(record_type)
            .bind(subject_id)
            .bind(record_key)
            .fetch_one(&self.db.pool)
            .await?)
    }

    /// Number of versions in the history (operators, tests).
    pub async fn history_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM showcase_history")
            .fetch_one(&self.db.pool)
            .await?)
    }

    /// Number of current records (operators, tests).
    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM showcase_records")
            .fetch_one(&self.db.pool)
            .await?)
    }
}

/// A content digest of the showcase, the same for two showcases that hold
/// the same records whatever order they were written in, backend they are
/// on or envelope layout they were stored in (migration 0008): the sum
/// (mod 2^256) of a SHA-256 per row, over the current records and the
/// history separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowcaseDigest {
    pub current_records: i64,
    pub current: String,
    pub history_records: i64,
    pub history: String,
}

impl Showcase {
    pub async fn digest(&self) -> Result<ShowcaseDigest, StoreError> {
        let (current_records, current) = self.table_digest(Table::Current).await?;
        let (history_records, history) = self.table_digest(Table::History).await?;
        Ok(ShowcaseDigest {
            current_records,
            current,
            history_records,
            history,
        })
    }

    async fn table_digest(&self, table: Table) -> Result<(i64, String), StoreError> {
        use futures::TryStreamExt;
        use sha2::{Digest, Sha256};

        // Where a record came from (offset, ingestion time) is not content.
        let sql = match table {
            Table::History => {
                "SELECT h.record_type, h.subject_id, h.record_key, h.version, h.record_id, \
                        h.status, h.content_hash, h.envelope, s.signature \
                 FROM showcase_history AS h \
                 LEFT JOIN showcase_batch_signatures AS s ON s.digest = h.signature_digest"
            }
            Table::Current => {
                concat!(
                    "SELECT r.record_type, r.subject_id, r.record_key, r.version, r.record_id, \
                            r.status, r.content_hash, h.envelope, s.signature \
                     FROM showcase_records AS r",
                    join_history_of_current!()
                )
            }
        };
        let mut rows = sqlx::query(sql).fetch(&self.db.pool);
        let mut sum = [0u64; 4];
        let mut count = 0i64;
        while let Some(row) = rows.try_next().await? {
            let mut hasher = Sha256::new();
            for i in 0..3 {
                let text: String = row.try_get(i)?;
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
            hasher.update(row.try_get::<i64, _>(3)?.to_be_bytes());
            let record_id: String = row.try_get(4)?;
            hasher.update(record_id.as_bytes());
            hasher.update(row.try_get::<i64, _>(5)?.to_be_bytes());
            let content_hash: Vec<u8> = row.try_get(6)?;
            let (own, shared) = digest_parts(row.try_get(7)?, row.try_get(8)?);
            for bytes in [content_hash.as_slice(), &own, &shared] {
                hasher.update((bytes.len() as u64).to_be_bytes());
                hasher.update(bytes);
            }
            add_256(&mut sum, &hasher.finalize());
            count += 1;
        }
        let bytes: Vec<u8> = sum
            .iter()
            .rev()
            .flat_map(|limb| limb.to_be_bytes())
            .collect();
        Ok((count, hex::encode(bytes)))
    }
}

/// An envelope's parts as the digest counts them: as a write would store
/// them now, so a row stored whole before migration 0008 counts as the same
/// row written split after it (`own ++ shared` is not the consumed bytes,
/// only decodes the same).
fn digest_parts(own: Vec<u8>, shared: Option<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
    match shared {
        Some(shared) => (own, shared),
        None => match stored_envelope::split(&own) {
            Some(split) => (split.own, split.shared),
            None => (own, Vec::new()),
        },
    }
}

/// `sum += digest` modulo 2^256, little-endian limbs.
fn add_256(sum: &mut [u64; 4], digest: &[u8]) {
    let mut carry = 0u128;
    for (i, limb) in sum.iter_mut().enumerate() {
        let start = 32 - (i + 1) * 8;
        let part = u64::from_be_bytes(digest[start..start + 8].try_into().expect("8 bytes"));
        let total = u128::from(*limb) + u128::from(part) + carry;
        *limb = total as u64;
        carry = total >> 64;
    }
}
