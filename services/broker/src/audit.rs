//! Writing the audit trail: every evidence request, allowed or denied, is
//! appended to this broker's hash chain before the caller gets an answer, so
//! no answer leaves without its entry. A single writer task serialises the
//! chain and commits concurrent requests together (group commit); every
//! `checkpoint_every` entries it signs the chain head with the broker's key.
//! A second task copies committed entries to the Kafka audit topic.

use std::time::Duration;

use govbus_core::time::now_micros;
use govbus_kafka::{AUDIT_TOPIC, RecordProducer};
use govbus_security::Signer;
use govbus_store::{AuditEntry, AuditLog, ChainedEntry, Checkpoint};
use rdkafka::message::OwnedHeaders;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

type Reply = oneshot::Sender<Result<(), String>>;

/// Appends entries to the audit trail.
#[derive(Debug, Clone)]
pub struct AuditTrail {
    queue: mpsc::Sender<(AuditEntry, Reply)>,
}

/// The audit trail could not be written; nothing may be released.
#[derive(Debug, thiserror::Error)]
#[error("audit trail unavailable: {0}")]
pub struct AuditUnavailable(pub String);

/// The parts of the trail's background work.
pub struct AuditWorker {
    log: AuditLog,
    chain: String,
    signer: Signer,
    checkpoint_every: i64,
    queue: mpsc::Receiver<(AuditEntry, Reply)>,
}

impl AuditTrail {
    pub fn new(
        log: AuditLog,
        chain: String,
        signer: Signer,
        checkpoint_every: i64,
    ) -> (Self, AuditWorker) {
        let (tx, rx) = mpsc::channel(4096);
        (
            Self { queue: tx },
            AuditWorker {
                log,
                chain,
                signer,
                checkpoint_every: checkpoint_every.max(1),
                queue: rx,
            },
        )
    }

    /// Returns once the entry is committed.
    pub async fn record(&self, entry: AuditEntry) -> Result<(), AuditUnavailable> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send((entry.printable(), reply))
            .await
            .map_err(|_| AuditUnavailable("the audit writer has stopped".into()))?;
        done.await
            .map_err(|_| AuditUnavailable("the audit writer has stopped".into()))?
            .map_err(AuditUnavailable)
    }
}

impl AuditWorker {
    /// Writes until every `AuditTrail` handle is dropped, then signs the head.
    pub async fn run(mut self) {
        let mut head = loop {
            match self.log.head(&self.chain).await {
                Ok(head) => break head,
                Err(e) => {
                    error!(error = %e, "cannot read the audit chain head; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut signed_up_to = head.0;
        let mut appender = self.log.appender();
        let mut batch = Vec::with_capacity(512);
        // Whatever queued while the last commit ran goes in the next one.
        while self.queue.recv_many(&mut batch, 512).await > 0 {
            let (entries, replies): (Vec<AuditEntry>, Vec<Reply>) = batch.drain(..).unzip();
            let outcome = appender.append(&self.chain, head.clone(), &entries).await;
            match outcome {
                Ok(new_head) => {
                    head = new_head;
                    metrics::gauge!("govbus_audit_chain_length", "chain" => self.chain.clone())
                        .set(head.0 as f64);
                    for reply in replies {
                        let _ = reply.send(Ok(()));
                    }
                    if head.0 / self.checkpoint_every > signed_up_to / self.checkpoint_every {
                        signed_up_to = self.checkpoint(&head).await.unwrap_or(signed_up_to);
                    }
                }
                Err(e) => {
                    error!(error = %e, entries = entries.len(), "audit append failed");
                    for reply in replies {
                        let _ = reply.send(Err(e.to_string()));
                    }
                    // Another writer may have moved the head (or nothing was written).
                    if let Ok(h) = self.log.head(&self.chain).await {
                        head = h;
                    }
                }
            }
        }
        if head.0 > signed_up_to {
            let _ = self.checkpoint(&head).await;
        }
        info!(chain = self.chain, seq = head.0, "audit trail closed");
    }

    async fn checkpoint(&self, head: &(i64, Vec<u8>)) -> Option<i64> {
        let signed_at_us = now_micros();
        let message = Checkpoint::message(&self.chain, head.0, &head.1, signed_at_us);
        let checkpoint = Checkpoint {
            chain: self.chain.clone(),
            seq: head.0,
            entry_hash: head.1.clone(),
            signed_at_us,
            certificate: self.signer.certificate().to_vec(),
            signature: self.signer.sign_bytes(&message),
        };
        match self.log.insert_checkpoint(&checkpoint).await {
            Ok(()) => Some(head.0),
            Err(e) => {
                warn!(error = %e, "audit checkpoint not written");
                None
            }
        }
    }
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
            prev_hash: hex::encode(&e.prev_hash),
            entry_hash: hex::encode(&e.entry_hash),
        }
    }
}

/// Entries copied to Kafka per round, at most.
const COPY_BATCH: usize = 2000;

/// Copies committed entries of `chain` to the Kafka audit topic, in order,
/// recording progress in the database after each acknowledged batch. Once
/// `stop` is cancelled it drains what is committed and returns; what Kafka
/// did not take is published after the next start.
pub async fn publish_to_kafka(
    log: AuditLog,
    chain: String,
    producer: RecordProducer,
    stop: CancellationToken,
) {
    loop {
        let published = publish_once(&log, &chain, &producer).await;
        if stop.is_cancelled() {
            if published == 0 {
                return;
            }
            continue;
        }
        // Caught up: wait for a batch to gather rather than copy a few
        // entries at a time, each round a progress commit competing with
        // the audit writer for the database (tails in the bench). Nothing
        // copied (nothing new, or a failure logged): wait longer.
        let pause = match published {
            0 => Duration::from_millis(500),
            n if n < COPY_BATCH => Duration::from_millis(50),
            _ => Duration::ZERO,
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Publishes the next batch of unpublished entries; returns how many.
async fn publish_once(log: &AuditLog, chain: &str, producer: &RecordProducer) -> usize {
    let published = match log.published(chain).await {
        Ok(seq) => seq,
        Err(e) => {
            warn!(error = %e, "audit publisher cannot read its progress");
            return 0;
        }
    };
    let entries = match log.entries_after(chain, published, COPY_BATCH as i64).await {
        Ok(entries) => entries,
        Err(e) => {
            warn!(error = %e, "audit publisher cannot read the trail");
            return 0;
        }
    };
    // All of the batch in flight at once: awaiting each acknowledgement in
    // turn capped the copy at a few hundred entries a second, far below the
    // query rate (found by the benchmark). The idempotent producer keeps
    // the order within a partition; after a failure the rest of the batch
    // is sent again next round, so the topic is at-least-once (consumers
    // deduplicate by chain and seq).
    let sends = entries.iter().map(|e| {
        let body = serde_json::to_string(&KafkaEntry::from(e)).expect("strings serialise");
        async move {
            producer
                .send(
                    AUDIT_TOPIC,
                    e.entry.subject_id.as_bytes(),
                    body.as_bytes(),
                    OwnedHeaders::new(),
                )
                .await
        }
    });
    let delivered = futures::future::join_all(sends).await;
    let mut last = published;
    let mut sent = 0;
    for (e, outcome) in entries.iter().zip(delivered) {
        if outcome.is_err() {
            break;
        }
        last = e.seq;
        sent += 1;
    }
    if last > published
        && let Err(e) = log.mark_published(chain, last).await
    {
        warn!(error = %e, "audit publisher cannot record its progress");
        return 0;
    }
    sent
}
