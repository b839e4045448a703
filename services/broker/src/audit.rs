//! Writing the audit trail: every evidence request, allowed or denied, is
//! appended to this broker's hash chain before the caller gets an answer, so
//! no answer leaves without its entry. A single writer task serialises the
//! chain and commits concurrent requests together (group commit); every
//! `checkpoint_every` entries it signs the chain head with the broker's key,
//! and it hands what it committed to the copy to Kafka (`audit_copy`).

use std::time::Duration;

use govbus_core::time::now_micros;
use govbus_security::Signer;
use govbus_store::{AuditEntry, AuditLog, Checkpoint};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::audit_copy::{self, AuditCopy, CopyFeed};

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
    copy: CopyFeed,
}

impl AuditTrail {
    pub fn new(
        log: AuditLog,
        chain: String,
        signer: Signer,
        checkpoint_every: i64,
    ) -> (Self, AuditWorker, AuditCopy) {
        let (tx, rx) = mpsc::channel(4096);
        let (feed, copy) = audit_copy::channel(log.clone(), chain.clone());
        (
            Self { queue: tx },
            AuditWorker {
                log,
                chain,
                signer,
                checkpoint_every: checkpoint_every.max(1),
                queue: rx,
                copy: feed,
            },
            copy,
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
    /// Writes until every `AuditTrail` handle is dropped, then signs the
    /// head; the copy to Kafka ends after it.
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
        self.copy.committed_up_to(head.0);
        let mut signed_up_to = head.0;
        let mut appender = self.log.appender();
        let mut batch = Vec::with_capacity(512);
        // Whatever queued while the last commit ran goes in the next one.
        while self.queue.recv_many(&mut batch, 512).await > 0 {
            let (entries, replies): (Vec<AuditEntry>, Vec<Reply>) = batch.drain(..).unzip();
            let count = entries.len();
            let outcome = appender.append(&self.chain, head.clone(), entries).await;
            match outcome {
                Ok(chained) => {
                    for reply in replies {
                        let _ = reply.send(Ok(()));
                    }
                    if let Some(last) = chained.last() {
                        head = (last.seq, last.entry_hash.clone());
                    }
                    self.copy.committed(chained);
                    metrics::gauge!("govbus_audit_chain_length", "chain" => self.chain.clone())
                        .set(head.0 as f64);
                    if head.0 / self.checkpoint_every > signed_up_to / self.checkpoint_every {
                        signed_up_to = self.checkpoint(&head).await.unwrap_or(signed_up_to);
                    }
                }
                Err(e) => {
                    error!(error = %e, entries = count, "audit append failed");
                    for reply in replies {
                        let _ = reply.send(Err(e.to_string()));
                    }
                    // Another writer may have moved the head (or nothing was written).
                    if let Ok(h) = self.log.head(&self.chain).await {
                        self.copy.committed_up_to(h.0);
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
