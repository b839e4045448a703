//! Offset resets that skip records. A consumer that asks for an offset its
//! Kafka broker no longer holds (retention removed the records before they
//! were read; the embedded cluster keeps only the newest ~5 MB of a
//! partition) is moved by librdkafka to the oldest offset kept
//! (`auto.offset.reset`), and librdkafka only warns. For govbus that is
//! loss: the records in between are never ingested or delivered. Consumer
//! contexts pass librdkafka's log through [`consumer_log`], which makes that
//! warning an error an operator can find and counters to alarm on.

use rdkafka::{ClientContext, client::DefaultClientContext, config::RDKafkaLogLevel};
use tracing::error;

/// Logs a librdkafka message of the consumer `consumer` (`ingest`,
/// `subscription`). An offset reset after a fetch error is an error, counted
/// in `govbus_consumer_offset_resets_total` and, where librdkafka names both
/// offsets, `govbus_consumer_skipped_offsets_total`.
pub fn consumer_log(consumer: &'static str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    let Some(reset) = ResetPastUnread::parse(level, fac, message) else {
        return DefaultClientContext.log(level, fac, message);
    };
    let topic = reset.topic.to_string();
    metrics::counter!(
        "govbus_consumer_offset_resets_total",
        "consumer" => consumer,
        "topic" => topic.clone()
    )
    .increment(1);
    if let Some(skipped) = reset.skipped {
        metrics::counter!(
            "govbus_consumer_skipped_offsets_total",
            "consumer" => consumer,
            "topic" => topic
        )
        .increment(skipped);
    }
    error!(
        consumer,
        topic = reset.topic,
        partition = reset.partition,
        skipped = reset.skipped,
        detail = message,
        "kafka moved the consumer past records it had not read; they were skipped"
    );
}

/// An offset reset forced by an error, as librdkafka (rdkafka_offset.c)
/// logs it at warning level: `[thrd:…]: <topic> [<partition>]: offset reset
/// (at offset <n> (…), broker <id>) to [cached BEGINNING offset ]offset <m>
/// (…): <reason>: <error>`. Resets without an error (a group's first start)
/// are only debug messages. A reset backwards (after log truncation, say)
/// is not one: it reads records again, which the showcase and the inboxes
/// ignore, and librdkafka's warning is enough.
#[derive(Debug, PartialEq, Eq)]
struct ResetPastUnread<'a> {
    topic: &'a str,
    partition: &'a str,
    /// Offsets from where the consumer was to where it was moved, when the
    /// message names both.
    skipped: Option<u64>,
}

impl<'a> ResetPastUnread<'a> {
    fn parse(level: RDKafkaLogLevel, fac: &str, message: &'a str) -> Option<Self> {
        if !matches!(level, RDKafkaLogLevel::Warning) || fac != "OFFSET" {
            return None;
        }
        let message = match message.strip_prefix("[thrd:") {
            Some(rest) => rest.split_once("]: ")?.1,
            None => message,
        };
        let (topic, rest) = message.split_once(" [")?;
        let (partition, rest) = rest.split_once("]: ")?;
        let rest = rest.strip_prefix("offset reset (at ")?;
        let from = rest.strip_prefix("offset ").and_then(leading_number);
        // The target ends at its "(leader epoch …)", or at the reason.
        let to = rest
            .split_once(") to ")
            .and_then(|(_, target)| target.split(": ").next())
            .and_then(|target| target.split(" (").next())
            .and_then(|target| target.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        let skipped = match from.zip(to) {
            Some((from, to)) if to <= from => return None,
            known => known.map(|(from, to)| to - from),
        };
        Some(Self {
            topic,
            partition,
            skipped,
        })
    }
}

fn leading_number(text: &str) -> Option<u64> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_range_reset_names_its_partition_and_what_it_skipped() {
        // As the embedded cluster's retention produced it in a test.
        let message = "[thrd:main]: govbus.records.birth_certificate [0]: offset reset (at \
                       offset 1 (leader epoch 0), broker 1) to cached BEGINNING offset offset \
                       3001 (leader epoch -1): fetch failed due to requested offset not \
                       available on the broker: Broker: Offset out of range";
        assert_eq!(
            ResetPastUnread::parse(RDKafkaLogLevel::Warning, "OFFSET", message),
            Some(ResetPastUnread {
                topic: "govbus.records.birth_certificate",
                partition: "0",
                skipped: Some(3000),
            })
        );
    }

    #[test]
    fn a_reset_to_a_logical_offset_counts_without_a_number() {
        let message = "t [7]: offset reset (at offset 12 (leader epoch 0), broker 1) to offset \
                       BEGINNING: fetch failed: Broker: Offset out of range";
        assert_eq!(
            ResetPastUnread::parse(RDKafkaLogLevel::Warning, "OFFSET", message),
            Some(ResetPastUnread {
                topic: "t",
                partition: "7",
                skipped: None,
            })
        );
    }

    #[test]
    fn only_the_target_position_counts_as_the_target() {
        let message = "t [1]: offset reset (at offset 40 (leader epoch 2), broker 1) to offset \
                       55: fetch failed after 3 (tries): Broker: Offset out of range";
        assert_eq!(
            ResetPastUnread::parse(RDKafkaLogLevel::Warning, "OFFSET", message)
                .and_then(|reset| reset.skipped),
            Some(15)
        );
        let backwards = "t [1]: offset reset (at offset 40 (leader epoch 2), broker 1) to offset \
                         12 (leader epoch 3): log truncation detected";
        assert_eq!(
            ResetPastUnread::parse(RDKafkaLogLevel::Warning, "OFFSET", backwards),
            None,
            "a reset backwards skips nothing"
        );
    }

    #[test]
    fn other_messages_are_not_resets() {
        for (level, fac, message) in [
            (
                RDKafkaLogLevel::Debug,
                "OFFSET",
                "t [0]: offset reset (at offset INVALID, broker -1) to offset BEGINNING: no \
                 previously committed offset available: Local: No offset stored",
            ),
            (
                RDKafkaLogLevel::Warning,
                "FETCH",
                "t [0]: offset reset (at offset 1, broker 1) to offset 2",
            ),
            (
                RDKafkaLogLevel::Warning,
                "OFFSET",
                "t [0]: offset commit failed",
            ),
            (RDKafkaLogLevel::Warning, "OFFSET", "no partition here"),
        ] {
            assert_eq!(
                ResetPastUnread::parse(level, fac, message),
                None,
                "{message}"
            );
        }
    }
}
