//! Copying the audit trail to the Kafka audit topic, for archives and
//! other systems to follow. The trail in the database is the record; the
//! topic is a copy, at least once (consumers deduplicate by chain and seq).
//! Entries are keyed by their chain, so a chain is one partition in chain
//! order: a follower checks its hashes from the topic alone, and each of
//! the copy's rounds is one batch (keyed by subject, a round of a few
//! entries went to as many partitions, each compressed on its own).
//!
//! The writer hands each committed group to the copy in memory, so an
//! entry is not read back from the database to be copied: reading every
//! entry back (and recording progress every 50 ms, a write competing with
//! the writer) was ~10 % of the broker's CPU at peak (docs/PROFILING.md).
//! The database stays the source: what the copy did not get from memory —
//! entries committed before a restart, groups dropped while it lagged, a
//! batch Kafka refused — it reads from the trail, from its progress on.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use govbus_kafka::{AUDIT_TOPIC, RecordProducer};
use govbus_store::{AuditLog, ChainedEntry};
use rdkafka::message::OwnedHeaders;
use tokio::{sync::mpsc, time::Instant};
use tracing::warn;

/// Entries read from the database per round, at most.
const READ_BATCH: i64 = 2000;
/// Committed groups the copy may be behind before the writer drops them
/// (the copy then reads them from the database). At peak a copy round
/// takes a few ms and finds a few dozen groups queued; this bounds the
/// memory held while Kafka is slow (a group holds at most 512 entries).
const QUEUED_GROUPS: usize = 256;
/// How often progress is recorded: after a crash, at most about this much
/// of the trail is copied again.
const MARK_EVERY: Duration = Duration::from_secs(1);
/// The pause after Kafka refused a batch.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// A round of the copy lasts at least this long: what commits meanwhile
/// goes in the next round's one produce request. Each request has a fixed
/// cost (librdkafka's threads, the batch's frame and compression, the
/// broker's answer), and rounds as fast as Kafka answers carried a few
/// entries each at peak.
const ROUND: Duration = Duration::from_millis(10);

/// The writer's side: offers each committed group to the copy.
#[derive(Debug)]
pub struct CopyFeed {
    groups: mpsc::Sender<Vec<ChainedEntry>>,
    committed: Arc<AtomicI64>,
}

impl CopyFeed {
    /// Never waits: a copy that lags finds the group in the database.
    pub fn committed(&self, group: Vec<ChainedEntry>) {
        if let Some(last) = group.last() {
            self.committed_up_to(last.seq);
            let _ = self.groups.try_send(group);
        }
    }

    /// The chain holds entries up to `seq` (the head the writer starts from).
    pub fn committed_up_to(&self, seq: i64) {
        self.committed.fetch_max(seq, Ordering::Release);
    }
}

/// The copy's side, run by `AuditCopy::run` until the writer has ended.
pub struct AuditCopy {
    log: AuditLog,
    chain: String,
    groups: mpsc::Receiver<Vec<ChainedEntry>>,
    /// The last seq the writer committed.
    committed: Arc<AtomicI64>,
}

pub fn channel(log: AuditLog, chain: String) -> (CopyFeed, AuditCopy) {
    let (tx, rx) = mpsc::channel(QUEUED_GROUPS);
    let committed = Arc::new(AtomicI64::new(0));
    (
        CopyFeed {
            groups: tx,
            committed: committed.clone(),
        },
        AuditCopy {
            log,
            chain,
            groups: rx,
            committed,
        },
    )
}

/// An entry as the audit topic carries it. Serialised straight from
/// borrowed fields: building a `serde_json::Value` map per entry first cost
/// a dozen allocations each, at thousands of entries a second.
#[derive(serde::Serialize)]
struct KafkaEntry<'a> {
    chain: &'a str,
    seq: i64,
    at_us: i64,
    caller: &'a str,
    subject_id: &'a str,
    record_type: &'a str,
    purpose: &'a str,
    fields: &'a str,
    decision: &'a str,
    reason: &'a str,
    request_id: &'a str,
    trace_id: &'a str,
    records: i64,
    prev_hash: String,
    entry_hash: String,
}

impl<'a> From<&'a ChainedEntry> for KafkaEntry<'a> {
    fn from(e: &'a ChainedEntry) -> Self {
        Self {
            chain: &e.chain,
            seq: e.seq,
            at_us: e.entry.at_us,
            caller: &e.entry.caller,
            subject_id: &e.entry.subject_id,
            record_type: &e.entry.record_type,
            purpose: &e.entry.purpose,
            fields: &e.entry.fields,
            decision: &e.entry.decision,
            reason: &e.entry.reason,
            request_id: &e.entry.request_id,
            trace_id: &e.entry.trace_id,
            records: e.entry.records,
            prev_hash: lower_hex(&e.prev_hash),
            entry_hash: lower_hex(&e.entry_hash),
        }
    }
}

/// `bytes` as lower-case hex digits. `hex::encode` collects its digits a
/// character at a time, ~2k instructions for a 32-byte hash, two per entry
/// copied (docs/PROFILING.md); `hex::encode_to_slice` costs
/// ~1k more per entry than this table (callgrind, `--part query`).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = vec![0; bytes.len() * 2];
    for (pair, byte) in digits.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xF)];
    }
    String::from_utf8(digits).expect("hex digits are ASCII")
}

/// Where the copy stands.
struct Copier {
    log: AuditLog,
    chain: String,
    producer: RecordProducer,
    /// The last seq Kafka acknowledged (with all before it); `None` until
    /// the recorded progress is read.
    published: Option<i64>,
    marked: i64,
    marked_at: Instant,
}

impl AuditCopy {
    /// Copies until the writer has ended, then what the database holds
    /// beyond the copy's progress, and records the progress.
    pub async fn run(mut self, producer: RecordProducer) {
        let mut copier = Copier {
            log: self.log,
            chain: self.chain,
            producer,
            published: None,
            marked: 0,
            marked_at: Instant::now(),
        };
        // Entries of an earlier run that were not copied.
        copier.read_through(None).await;
        let mut groups = Vec::new();
        loop {
            let committed = self.committed.load(Ordering::Acquire);
            // Progress to record, or committed entries the copy lacks
            // (dropped while it lagged, refused, or of an earlier run).
            let pending = copier
                .published
                .is_none_or(|p| p > copier.marked || p < committed);
            let received = tokio::select! {
                biased;
                n = self.groups.recv_many(&mut groups, QUEUED_GROUPS) => n,
                _ = tokio::time::sleep_until(copier.marked_at + MARK_EVERY), if pending => {
                    copier.read_through(Some(committed)).await;
                    copier.mark().await;
                    continue;
                }
            };
            if received == 0 {
                break;
            }
            let round = Instant::now() + ROUND;
            let entries: Vec<ChainedEntry> = groups.drain(..).flatten().collect();
            if !copier.copy(entries).await {
                tokio::time::sleep(RETRY_AFTER).await;
            }
            tokio::time::sleep_until(round).await;
            if copier.marked_at.elapsed() >= MARK_EVERY {
                copier.mark().await;
            }
        }
        copier.read_through(None).await;
        copier.mark().await;
    }
}

impl Copier {
    /// The last seq copied, read from the database the first time.
    async fn published(&mut self) -> Option<i64> {
        if self.published.is_none() {
            match self.log.published(&self.chain).await {
                Ok(seq) => {
                    self.published = Some(seq);
                    self.marked = seq;
                }
                Err(e) => warn!(error = %e, "audit copy cannot read its progress"),
            }
        }
        self.published
    }

    /// Copies committed entries (in seq order; gaps where groups were
    /// dropped or refused). Unless they follow the progress without a gap,
    /// they are read from the database, with what is missing before them.
    /// False if Kafka refused some or the database failed.
    async fn copy(&mut self, entries: Vec<ChainedEntry>) -> bool {
        let Some(published) = self.published().await else {
            return false;
        };
        let fresh: Vec<ChainedEntry> = entries.into_iter().filter(|e| e.seq > published).collect();
        let follows = fresh
            .iter()
            .zip(published + 1..)
            .all(|(e, seq)| e.seq == seq);
        if follows {
            self.send(&fresh).await
        } else {
            self.read_through(fresh.last().map(|e| e.seq)).await
        }
    }

    /// Copies entries from the database until `until` (or until it holds no
    /// more). False if Kafka refused some or the database failed.
    async fn read_through(&mut self, until: Option<i64>) -> bool {
        loop {
            let Some(published) = self.published().await else {
                return false;
            };
            let limit = until.map_or(READ_BATCH, |u| (u - published).min(READ_BATCH));
            if limit <= 0 {
                return true;
            }
            let entries = match self.log.entries_after(&self.chain, published, limit).await {
                Ok(entries) => entries,
                Err(e) => {
                    warn!(error = %e, "audit copy cannot read the trail");
                    return false;
                }
            };
            if entries.is_empty() {
                return true;
            }
            if !self.send(&entries).await {
                return false;
            }
        }
    }

    /// Sends consecutive entries following `published` in one batch; the
    /// progress moves to the last one Kafka took with all before it.
    async fn send(&mut self, entries: &[ChainedEntry]) -> bool {
        if entries.is_empty() {
            return true;
        }
        let bodies: Vec<String> = entries
            .iter()
            .map(|e| serde_json::to_string(&KafkaEntry::from(e)).expect("strings serialise"))
            .collect();
        let records = entries
            .iter()
            .zip(&bodies)
            .map(|(e, body)| (e.chain.as_bytes(), body.as_bytes(), OwnedHeaders::new()))
            .collect();
        // The idempotent producer keeps the order within a partition;
        // after a failure the rest is sent again, so the topic is
        // at-least-once.
        let delivered = self.producer.send_batch(AUDIT_TOPIC, records).await;
        let mut all = true;
        for (e, outcome) in entries.iter().zip(delivered) {
            if outcome.is_err() {
                all = false;
                break;
            }
            self.published = Some(e.seq);
        }
        all
    }

    /// Records the progress in the database.
    async fn mark(&mut self) {
        self.marked_at = Instant::now();
        let Some(published) = self.published.filter(|&p| p > self.marked) else {
            return;
        };
        match self.log.mark_published(&self.chain, published).await {
            Ok(()) => self.marked = published,
            Err(e) => warn!(error = %e, "audit copy cannot record its progress"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_are_copied_as_lower_case_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::lower_hex(&bytes), hex::encode(&bytes));
        assert_eq!(super::lower_hex(&[]), "");
    }
}
