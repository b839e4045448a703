//! One batch of the ingest between the reader and the writer: the messages
//! copied off Kafka, checked and made ready for the showcase by a task of
//! its own, which the writer awaits in the order the batches were read.
//!
//! The reader only receives and copies; it hands the writer each batch's
//! task as soon as it is started and goes on reading, so the checks of one
//! batch run beside the reading of the next and the writing of the one
//! before. With checking and preparing one after the other inside the
//! reader's turn, the reader was the slower stage (docs/PROFILING.md).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use govbus_core::time::now_micros;
use govbus_kafka::{HeaderExtractor, TRACEPARENT};
use govbus_security::RecordChecker;
use govbus_store::{IngestedRecord, PreparedBatch, Showcase};
use rdkafka::{
    Message,
    message::{BorrowedHeaders, BorrowedMessage, Headers},
};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug};

/// A message taken off Kafka, owned so the consumer can move on.
pub(crate) struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    /// Shared with the checked record's signature fields, decoded from it.
    pub payload: Bytes,
}

/// The traces a batch's messages were published in, each linked to the
/// batch span once: one publish call puts its trace context on every record
/// it sends (hundreds), and extracting and linking it per message was ~2 %
/// of an ingest run's CPU (docs/PROFILING.md) for links that
/// said the same — and past the span's link limit, dropped.
pub(crate) struct BatchLinks {
    span: tracing::Span,
    /// Each `traceparent` header seen in this batch, with its trace id.
    seen: HashMap<Vec<u8>, String>,
}

impl BatchLinks {
    pub fn new(span: tracing::Span) -> Self {
        Self {
            span,
            seen: HashMap::new(),
        }
    }

    pub fn into_span(self) -> tracing::Span {
        self.span
    }

    /// The trace id in `headers`, linked to the batch span the first time.
    fn trace_id(&mut self, headers: &BorrowedHeaders) -> Option<&str> {
        let traceparent = headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(TRACEPARENT))?
            .value?;
        if !self.seen.contains_key(traceparent) {
            let trace_id = govbus_telemetry::link_from(&self.span, &HeaderExtractor(headers))?;
            self.seen.insert(traceparent.to_vec(), trace_id);
        }
        self.seen.get(traceparent).map(String::as_str)
    }
}

/// Copies a message out of the consumer, linking the batch span to the
/// trace that published it.
pub(crate) fn consumed(message: &BorrowedMessage<'_>, links: &mut BatchLinks) -> Consumed {
    if let Some(headers) = message.headers()
        && let Some(trace_id) = links.trace_id(headers)
    {
        debug!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            trace_id,
            "consumed"
        );
    }
    Consumed {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().unwrap_or_default().to_vec(),
        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
    }
}

/// A batch checked, for the writer. An empty one (no records, no positions)
/// only says when the consumer found nothing more to read.
#[derive(Default)]
pub(crate) struct Checked {
    /// The records that passed, ready to write; `None` when none did.
    pub good: Option<PreparedBatch>,
    /// Records refused, with the reason, for the dead letters.
    pub dead: Vec<(Consumed, String)>,
    /// Per partition, the offset after the batch's last message.
    pub positions: BTreeMap<(String, i32), i64>,
    /// When the consumer found nothing more after this batch.
    pub drained_at: Option<i64>,
    pub span: Option<tracing::Span>,
}

/// What the writer awaits: `None` when the runtime shut down first, in
/// which case nothing of the batch is stored or acknowledged, so it is
/// read again after the restart.
pub(crate) type Pending = JoinHandle<Option<Checked>>;

/// What the reader sends when it found nothing more to read: an empty
/// batch, already checked.
pub(crate) fn drained(at_us: i64) -> Pending {
    tokio::spawn(std::future::ready(Some(Checked {
        drained_at: Some(at_us),
        ..Checked::default()
    })))
}

/// Starts checking and preparing `batch` (on the blocking pool; started
/// now, not when the writer gets to it).
pub(crate) fn check(
    checker: &RecordChecker,
    showcase: &Showcase,
    batch: Vec<Consumed>,
    drained_at: Option<i64>,
    span: tracing::Span,
) -> Pending {
    let (checker, showcase) = (checker.clone(), showcase.clone());
    tokio::spawn(
        async move {
            let now = now_micros();
            // Gathered by reference first: the key's copy of the topic is
            // then made once per partition, not once per message.
            let mut after: BTreeMap<(&str, i32), i64> = BTreeMap::new();
            for message in &batch {
                let next = after
                    .entry((message.topic.as_str(), message.partition))
                    .or_insert(message.offset + 1);
                *next = (*next).max(message.offset + 1);
            }
            let positions: BTreeMap<(String, i32), i64> = after
                .into_iter()
                .map(|((topic, partition), next)| ((topic.to_string(), partition), next))
                .collect();
            let mut good = Vec::with_capacity(batch.len());
            let mut dead = Vec::new();
            for (message, checked) in check_on_all_cores(&checker, batch).await? {
                match checked {
                    Ok(record) => good.push(IngestedRecord {
                        record,
                        envelope: message.payload,
                        topic: message.topic,
                        partition: message.partition,
                        offset: message.offset,
                        ingested_at_us: now,
                    }),
                    Err(reason) => dead.push((message, reason)),
                }
            }
            let good = if good.is_empty() {
                None
            } else {
                // Ordered and encoded here, beside the writer, whose turn
                // is then only the statement; the records are dropped here.
                Some(on_blocking_pool(move || showcase.prepare(&good)).await?)
            };
            Some(Checked {
                good,
                dead,
                positions,
                drained_at,
                span: Some(tracing::Span::current()),
            })
        }
        .instrument(span),
    )
}

/// Checks a batch (signature verification is most of the broker's ingest
/// CPU) in slices on the blocking pool, one per core, so that it neither
/// holds a Tokio worker nor leaves the other cores idle. Results are in
/// batch order.
async fn check_on_all_cores(
    checker: &RecordChecker,
    batch: Vec<Consumed>,
) -> Option<Vec<(Consumed, Result<govbus_proto::v1::Record, String>)>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_slice = batch.len().div_ceil(cores).max(1);
    let mut slices = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        let tail = rest.split_off(per_slice.min(rest.len()));
        slices.push(std::mem::replace(&mut rest, tail));
    }
    let tasks: Vec<_> = slices
        .into_iter()
        .map(|slice| {
            let checker = checker.clone();
            on_blocking_pool(move || {
                slice
                    .into_iter()
                    .map(|m| {
                        let checked = checker.check(&m.topic, &m.key, m.payload.clone());
                        (m, checked)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut checked = Vec::new();
    for task in tasks {
        checked.extend(task.await?);
    }
    Some(checked)
}

/// Runs `work` on the blocking pool (started at once, awaited later);
/// `None` when the runtime is shutting down.
fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Option<T>> {
    let task = tokio::task::spawn_blocking(work);
    async move {
        match task.await {
            Ok(result) => Some(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders};

    use super::*;

    fn traceparent(trace: u8, span: u8) -> OwnedHeaders {
        let value = format!("00-{:032x}-{:016x}-01", u128::from(trace), u64::from(span));
        OwnedHeaders::new().insert(Header {
            key: TRACEPARENT,
            value: Some(value.as_bytes()),
        })
    }

    #[test]
    fn a_batch_links_each_publishing_trace_once() {
        let mut links = BatchLinks::new(tracing::Span::none());
        let (first, second) = (traceparent(1, 1), traceparent(2, 7));
        for headers in [&first, &first, &second, &first, &second] {
            assert!(links.trace_id(headers.as_borrowed()).is_some());
        }
        let mut ids: Vec<&str> = links.seen.values().map(String::as_str).collect();
        ids.sort_unstable();
        assert_eq!(ids, [format!("{:032x}", 1), format!("{:032x}", 2)]);
        assert_eq!(
            links.trace_id(first.as_borrowed()),
            Some(format!("{:032x}", 1).as_str())
        );
        // No trace context, or an invalid one: nothing to link.
        assert_eq!(links.trace_id(OwnedHeaders::new().as_borrowed()), None);
        assert_eq!(links.trace_id(traceparent(0, 0).as_borrowed()), None);
        assert_eq!(links.seen.len(), 2);
    }
}
