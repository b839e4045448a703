//! What the parts that every record or query must pass through cost alone,
//! with nothing else running: the adapter's work on a publish call, the
//! showcase write of an ingest batch, an audit entry, a showcase read.
//! Added to what the same run measured for the bare exchange (Kafka, gRPC)
//! and the broker's check, they are a floor on
//! govbus's CPU per record or call, which the report sets against what the
//! targets allow on this machine. For the latency target, the wait every
//! answer has in it: its audit entry's durable commit, and the disk's own
//! sync beneath it.

use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use prost::Message as _;

use govbus_adapter::Preparer;
use govbus_core::time::now_micros;
use govbus_proto::v1::PublishRequest;
use govbus_security::Signer;
use govbus_store::{AuditEntry, AuditLog, Durability, IngestedRecord, Showcase};

use crate::{
    ingest,
    load::{histogram, process_cpu},
    query, seed,
};

/// One part, timed alone.
#[derive(Debug, Clone, Copy)]
pub struct PartCost {
    /// Records written, entries appended or reads answered.
    pub count: u64,
    pub elapsed: Duration,
    /// CPU time meanwhile (`load::process_cpu`).
    pub cpu: Duration,
}

impl PartCost {
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    pub fn cpu_us_each(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.count.max(1) as f64
    }
}

/// Runs `work` and times it, wall clock and this process's CPU.
async fn timed(
    count: u64,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<PartCost> {
    let (started, cpu_before) = (Instant::now(), process_cpu());
    work.await?;
    Ok(PartCost {
        count,
        elapsed: started.elapsed(),
        cpu: process_cpu().saturating_sub(cpu_before),
    })
}

/// The ingest's write alone: citizens `0..records`, signed beforehand (not
/// timed), written into `showcase` (a fresh one) by the broker's own code —
/// `Showcase::prepare` and `apply_prepared`: ordering, binding, one
/// transaction per `batch` — one batch after another, as a broker that is
/// behind writes them: commits deferred but the last (the broker syncs one
/// every 100 ms as well, a few per run).
pub async fn store(
    showcase: &Showcase,
    signer: &Signer,
    records: u64,
    batch: usize,
) -> anyhow::Result<PartCost> {
    let now = now_micros();
    let all: Vec<IngestedRecord> = seed::signed_births(signer, 0..records, seed::SIGNED_TOGETHER)?
        .into_iter()
        .zip(0..)
        .map(|(record, n)| seed::ingested(n, record, now))
        .collect();
    timed(records, async {
        let chunks = all.chunks(batch.max(1));
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.enumerate() {
            let durability = if i == last {
                Durability::Synced
            } else {
                Durability::Deferred
            };
            showcase
                .apply_prepared(&showcase.prepare(chunk), durability)
                .await?;
        }
        Ok(())
    })
    .await
}

/// The broker's check alone: `records` births signed beforehand (not
/// timed) in the adapter's batches, each envelope checked by the broker's
/// `RecordChecker` as it comes off Kafka (decode, owner, certificate,
/// inclusion proof, each batch's signature once, validation), one after
/// another on one thread.
pub fn check(
    signer: &Signer,
    checker: &govbus_security::RecordChecker,
    records: u64,
) -> anyhow::Result<PartCost> {
    let topic = ingest::birth_topic(checker)?;
    let envelopes = ingest::envelopes(&seed::signed_births(
        signer,
        0..records,
        seed::SIGNED_TOGETHER,
    )?);
    let (started, cpu_before) = (Instant::now(), process_cpu());
    ingest::check_envelopes(checker, &topic, &envelopes)?;
    Ok(PartCost {
        count: records,
        elapsed: started.elapsed(),
        cpu: process_cpu().saturating_sub(cpu_before),
    })
}

/// The adapter's own work on a publish call alone: `records` unsigned
/// births in calls of `batch`, each call's request decoded from its wire
/// bytes (encoded beforehand, not timed) and prepared by the adapter's
/// `Preparer` — validated, completed, signed under one signature, each
/// envelope encoded — one call after another on one task.
pub async fn publish_prepare(
    preparer: &Preparer,
    records: u64,
    batch: u64,
) -> anyhow::Result<PartCost> {
    let calls: Vec<Vec<u8>> = (0..records)
        .step_by(batch.max(1) as usize)
        .map(|from| {
            let records = ingest::births(from, (from + batch).min(records), 1);
            PublishRequest { records }.encode_to_vec()
        })
        .collect();
    timed(records, async {
        for call in calls {
            let request = PublishRequest::decode(call.as_slice())?;
            for prepared in preparer.prepare_all(request.records) {
                if let Err(refusal) = prepared {
                    anyhow::bail!("the adapter refused a bench record: {refusal}");
                }
            }
        }
        Ok(())
    })
    .await
}

/// The audit trail's write alone: `entries` allowed requests about citizens
/// spread over `0..subjects`, appended to a fresh trail by the broker's own
/// appender in groups of `group`, one commit each — as many as the load
/// generator has callers, the largest group a peak can make, so the
/// cheapest per entry.
pub async fn audit(
    log: &AuditLog,
    entries: u64,
    group: usize,
    subjects: u64,
) -> anyhow::Result<PartCost> {
    let chain = "bench-alone";
    let all: Vec<AuditEntry> = (0..entries).map(|n| allowed(n, subjects)).collect();
    // Grouped before the clock starts: the broker's writer moves its
    // queued entries into the appender without copying them.
    let mut groups: Vec<Vec<AuditEntry>> = Vec::new();
    let mut rest = all.into_iter().peekable();
    while rest.peek().is_some() {
        groups.push(rest.by_ref().take(group.max(1)).collect());
    }
    let mut appender = log.appender();
    let mut head = log.head(chain).await?;
    timed(entries, async {
        for entries in groups {
            let chained = appender.append(chain, head.clone(), entries).await?;
            if let Some(last) = chained.last() {
                head = (last.seq, last.entry_hash.clone());
            }
        }
        Ok(())
    })
    .await
}

/// The `n`th allowed request's audit entry, about one of `0..subjects`.
fn allowed(n: u64, subjects: u64) -> AuditEntry {
    AuditEntry {
        at_us: now_micros(),
        caller: "agency/egov/system/portal".into(),
        subject_id: seed::citizen(query::subject_of(n, subjects)),
        record_type: seed::RECORD_TYPE.into(),
        purpose: query::request(0).purpose,
        fields: "*".into(),
        decision: "allowed".into(),
        reason: String::new(),
        request_id: uuid::Uuid::now_v7().to_string(),
        trace_id: format!("{:032x}", u128::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        records: 1,
    }
}

fn record(histogram: &mut Histogram<u64>, took: Duration) {
    histogram.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
}

/// The durable commit an answer waits for, alone: `commits` audit entries
/// appended by the broker's appender one at a time, each its own
/// transaction, and how long each took (µs).
pub async fn audit_commits(
    log: &AuditLog,
    commits: u64,
    subjects: u64,
) -> anyhow::Result<Histogram<u64>> {
    let chain = "bench-commits";
    let mut appender = log.appender();
    let mut head = log.head(chain).await?;
    let mut took = histogram();
    for n in 0..commits {
        let entry = allowed(n, subjects);
        let started = Instant::now();
        let chained = appender.append(chain, head, vec![entry]).await?;
        record(&mut took, started.elapsed());
        let Some(last) = chained.last() else {
            anyhow::bail!("the appender chained no entry");
        };
        head = (last.seq, last.entry_hash.clone());
    }
    Ok(took)
}

/// The disk's own durable write beneath a commit: 4 KiB (a page) appended
/// to a file in `dir` and synced (`fdatasync`) `syncs` times, each timed
/// (µs). Blocking: run it where blocking is allowed.
pub fn disk_syncs(dir: &Path, syncs: u64) -> anyhow::Result<Histogram<u64>> {
    let path = dir.join("disk-syncs.bench");
    let mut file = std::fs::File::create(&path)?;
    let page = [0x5a_u8; 4096];
    let mut took = histogram();
    for _ in 0..syncs {
        let started = Instant::now();
        file.write_all(&page)?;
        file.sync_data()?;
        record(&mut took, started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(took)
}

/// The showcase read alone: `reads` current-record look-ups of citizens
/// spread over `0..subjects`, by `concurrency` tasks at once through the
/// showcase's shared reader (the broker's own read path, statements shared
/// between concurrent callers).
pub async fn read(
    showcase: &Showcase,
    reads: u64,
    concurrency: usize,
    subjects: u64,
) -> anyhow::Result<PartCost> {
    let concurrency = concurrency.max(1) as u64;
    timed(reads, async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|task| {
                let showcase = showcase.clone();
                tokio::spawn(async move {
                    let mut n = task;
                    while n < reads {
                        let subject = seed::citizen(query::subject_of(n, subjects));
                        let found = showcase.current(seed::RECORD_TYPE, &subject).await?;
                        anyhow::ensure!(!found.is_empty(), "citizen {subject} has no record");
                        n += concurrency;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        Ok(())
    })
    .await
}
