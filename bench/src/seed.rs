//! Realistic showcase contents: signed birth certificates, one per citizen,
//! written straight into the showcase with the same SQL the broker's ingest
//! uses (so a showcase of a million records takes a minute, not the hour a
//! trip through Kafka would), and what they cost on disk.

use std::sync::Arc;

use govbus_proto::v1::Record;
use govbus_security::Signer;
use govbus_store::{Backend, IngestedRecord, Showcase};
use prost::Message;

pub const RECORD_TYPE: &str = "birth_certificate";
pub const TOPIC: &str = "govbus.records.birth_certificate";

/// A well-formed PINFL for citizen `n`, distinct for every `n` below ten
/// million. Ascending with `n`, so that seeding appends to the B-trees
/// instead of splitting pages all over them (a million random-order inserts
/// took four minutes; queries still spread over the whole key range).
pub fn citizen(n: u64) -> String {
    format!("3010190{:07}", n % 10_000_000)
}

/// Records under one signature when the bench signs without the adapter:
/// as many as the adapter signs together for one Publish call of the
/// ingest benchmark (its default batch), so that records carry inclusion
/// proofs of the same length as published ones.
pub const SIGNED_TOGETHER: u64 = 250;

/// The civil registry's birth certificates of citizens `citizens`, signed
/// as the adapter signs them (id, source system, salts, content hash, one
/// signature per `together` records, inclusion proofs).
pub fn signed_births(
    signer: &Signer,
    citizens: std::ops::Range<u64>,
    together: u64,
) -> anyhow::Result<Vec<Record>> {
    let mut signed = Vec::with_capacity(citizens.end.saturating_sub(citizens.start) as usize);
    let mut from = citizens.start;
    while from < citizens.end {
        let to = (from + together.max(1)).min(citizens.end);
        let mut batch: Vec<Record> = (from..to).map(|n| unsigned_birth(signer, n, 1)).collect();
        signer.sign_all(&mut batch)?;
        signed.extend(batch);
        from = to;
    }
    Ok(signed)
}

/// Citizen `n`'s birth record as `signer`'s adapter has it before signing.
pub fn unsigned_birth(signer: &Signer, n: u64, version: u64) -> Record {
    let mut record = govbus_tests::birth_record(&citizen(n), version, "Aziza");
    record.record_id = uuid::Uuid::now_v7().to_string();
    record.source_agency = signer.identity().agency().to_string();
    record.source_system = signer.identity().system().to_string();
    record
}

/// Adds the records of citizens `from..to` to `showcase`, signing on every
/// core, committing `batch` records per transaction.
pub async fn fill(
    showcase: &Showcase,
    signer: Arc<Signer>,
    from: u64,
    to: u64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<()> {
    const BATCH: u64 = 5_000;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let mut start = from;
    // Sign the next batch while the current one is written.
    let mut pending = sign_batch(signer.clone(), start, (start + BATCH).min(to), cores);
    while start < to {
        let batch = pending.await??;
        let next = (start + BATCH).min(to);
        pending = sign_batch(signer.clone(), next, (next + BATCH).min(to), cores);
        showcase.apply(&batch).await?;
        start = next;
        progress(start);
    }
    Ok(())
}

fn sign_batch(
    signer: Arc<Signer>,
    from: u64,
    to: u64,
    cores: u64,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<IngestedRecord>>> {
    tokio::spawn(async move {
        let per_core = (to - from).div_ceil(cores.max(1)).max(1);
        let parts: Vec<_> = (from..to)
            .step_by(per_core as usize)
            .map(|lo| {
                let signer = signer.clone();
                let hi = (lo + per_core).min(to);
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<IngestedRecord>> {
                    let now = govbus_core::time::now_micros();
                    let signed = signed_births(&signer, lo..hi, SIGNED_TOGETHER)?;
                    Ok((lo..hi)
                        .zip(signed)
                        .map(|(n, record)| ingested(n, record, now))
                        .collect())
                })
            })
            .collect();
        let mut all = Vec::with_capacity((to - from) as usize);
        for part in parts {
            all.extend(part.await??);
        }
        Ok(all)
    })
}

/// Citizen `n`'s signed record as the broker's ingest hands it to the
/// showcase, as if taken off Kafka at offset `n`.
pub fn ingested(n: u64, record: Record, now_us: i64) -> IngestedRecord {
    IngestedRecord {
        envelope: record.encode_to_vec().into(),
        record,
        topic: TOPIC.into(),
        partition: (n % 3) as i32,
        offset: n as i64,
        ingested_at_us: now_us,
    }
}

/// What the showcase occupies on disk: (whole database bytes, bytes of the
/// showcase's tables with their indexes).
pub async fn footprint(showcase: &Showcase) -> anyhow::Result<(i64, i64)> {
    let db = showcase.database();
    Ok(match db.backend {
        Backend::Sqlite => {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&db.pool)
                .await?;
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(&db.pool)
                .await?;
            let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
                .fetch_one(&db.pool)
                .await?;
            // SQLite cannot tell tables apart without the dbstat module;
            // the audit tables hold only the few entries of earlier runs.
            (pages * page_size, pages * page_size)
        }
        Backend::Postgres => {
            sqlx::query("VACUUM ANALYZE showcase_records")
                .execute(&db.pool)
                .await?;
            let whole: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(&db.pool)
                .await?;
            let tables: i64 = sqlx::query_scalar(
                "SELECT pg_total_relation_size('showcase_records') \
                 + pg_total_relation_size('showcase_history') \
                 + pg_total_relation_size('showcase_batch_signatures')",
            )
            .fetch_one(&db.pool)
            .await?;
            (whole, tables)
        }
    })
}
