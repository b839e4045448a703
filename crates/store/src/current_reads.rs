//! Coalesced reads of current records: concurrent `Showcase::current` calls
//! share one statement on one connection kept out of the pool.
//!
//! Why: on SQLite, sqlx runs each connection on an OS thread of its own and
//! every statement is a hand-off to that thread and back, and its pool pings
//! every connection it takes back (one more hand-off; a network round trip
//! on PostgreSQL). On two cores those context switches were the largest
//! item of the query path (docs/PROFILING.md). Reads gather while the
//! previous statement runs, like the audit trail's group commit: one caller
//! alone waits for nothing, many callers share a statement.

use std::{collections::HashMap, sync::Arc};

use futures::TryStreamExt as _;
use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot};

use crate::{Backend, Database, StoreError, StoredRecord, stored_envelope};

/// Lookups one statement answers, at most.
const MAX_BATCH: usize = 256;

type Answer = Result<Vec<StoredRecord>, StoreError>;

struct Lookup {
    record_type: String,
    subject_id: String,
    reply: oneshot::Sender<Answer>,
}

/// The queue of the reader task; the task ends when the last handle is gone.
#[derive(Debug, Clone)]
pub(crate) struct CurrentReads {
    queue: mpsc::Sender<Lookup>,
}

impl CurrentReads {
    pub fn start(db: Database) -> Self {
        let (queue, lookups) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(read_in_batches(db, lookups));
        Self { queue }
    }

    pub async fn current(&self, record_type: &str, subject_id: &str) -> Answer {
        // No stored key holds a NUL (PostgreSQL text cannot), and in the
        // shared statement's JSON it would fail the others' lookups too.
        if record_type.contains('\0') || subject_id.contains('\0') {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            record_type: record_type.to_string(),
            subject_id: subject_id.to_string(),
            reply,
        };
        let stopped = || StoreError::ReaderStopped;
        self.queue.send(lookup).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Current records of many (record type, subject) pairs, each pair's in
/// record-key order, tagged with the pair's index in the JSON array `$1`.
fn batch_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            concat!(
                "SELECT CAST(j.key AS INTEGER), h.envelope, s.signature, r.kafka_topic, r.kafka_partition, \
                        r.kafka_offset, r.ingested_at_us \
                 FROM json_each($1) AS j \
                 JOIN showcase_records AS r \
                   ON r.record_type = j.value ->> 0 AND r.subject_id = j.value ->> 1",
                join_history_of_current!(),
                "ORDER BY j.key, r.record_key"
            )
        }
        Backend::Postgres => {
            // The planner guesses 100 pairs for any JSON array and, on a
            // small showcase, would scan the whole current table rather than
            // look each pair up (measured: 3.3 ms against 0.26 ms a batch at
            // 10k records); a LATERAL subquery behind OFFSET 0 keeps it to
            // one index lookup per pair.
            concat!(
                "SELECT j.n - 1, h.envelope, s.signature, r.kafka_topic, r.kafka_partition, \
                        r.kafka_offset, r.ingested_at_us \
                 FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS j(v, n) \
                 CROSS JOIN LATERAL ( \
                   SELECT * FROM showcase_records AS c \
                   WHERE c.record_type = j.v ->> 0 AND c.subject_id = j.v ->> 1 OFFSET 0 \
                 ) AS r",
                join_history_of_current!(),
                "ORDER BY j.n, r.record_key"
            )
        }
    }
}

async fn read_in_batches(db: Database, mut lookups: mpsc::Receiver<Lookup>) {
    let mut connection: Option<sqlx::AnyConnection> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while lookups.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = read_batch(&db, &mut connection, &batch).await;
        match outcome {
            Ok(mut found) => {
                for (i, lookup) in batch.drain(..).enumerate() {
                    let _ = lookup.reply.send(Ok(found.remove(&i).unwrap_or_default()));
                }
            }
            Err(e) => {
                // The connection may be broken: the next batch opens another.
                connection = None;
                let shared = Arc::new(e);
                for lookup in batch.drain(..) {
                    let _ = lookup.reply.send(Err(StoreError::Shared(shared.clone())));
                }
            }
        }
    }
}

/// No span of its own: each caller's `showcase_current` span covers its
/// wait, in its own trace.
async fn read_batch(
    db: &Database,
    connection: &mut Option<sqlx::AnyConnection>,
    batch: &[Lookup],
) -> Result<HashMap<usize, Vec<StoredRecord>>, StoreError> {
    let conn = match connection {
        Some(conn) => conn,
        None => connection.insert(db.detached().await?),
    };
    let pairs: Vec<[&str; 2]> = batch
        .iter()
        .map(|l| [l.record_type.as_str(), l.subject_id.as_str()])
        .collect();
    let keys = serde_json::to_string(&pairs).expect("strings serialise");
    let mut rows = sqlx::query(batch_sql(db.backend))
        .bind(keys)
        .fetch(&mut *conn);
    let mut found: HashMap<usize, Vec<StoredRecord>> = HashMap::with_capacity(batch.len());
    while let Some(row) = rows.try_next().await? {
        let index: i64 = row.try_get(0)?;
        let partition: i64 = row.try_get(4)?;
        let (own, shared): (&[u8], Option<&[u8]>) = (row.try_get(1)?, row.try_get(2)?);
        found.entry(index as usize).or_default().push(StoredRecord {
            envelope: stored_envelope::join(own, shared),
            topic: row.try_get(3)?,
            partition: partition as i32,
            offset: row.try_get(5)?,
            ingested_at_us: row.try_get(6)?,
        });
    }
    Ok(found)
}
