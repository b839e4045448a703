//! W3C trace context in Kafka record headers.

use govbus_telemetry::{TraceExtractor, TraceInjector};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

pub const TRACEPARENT: &str = "traceparent";

/// Collects propagation fields, then turns them into record headers.
#[derive(Debug, Default)]
pub struct HeaderInjector(pub Vec<(String, String)>);

impl TraceInjector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        // An empty tracestate carries nothing; leave the header out.
        if !value.is_empty() {
            self.0.push((key.to_string(), value));
        }
    }
}

impl HeaderInjector {
    /// The current span's trace context as headers.
    pub fn current() -> Self {
        let mut injector = Self::default();
        govbus_telemetry::inject_current(&mut injector);
        injector
    }

    /// `headers` with the trace context added (one context may go on many
    /// records of a batch).
    pub fn add_to(&self, mut headers: OwnedHeaders) -> OwnedHeaders {
        for (key, value) in &self.0 {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        headers
    }
}

/// Reads propagation fields from the headers of a consumed record.
pub struct HeaderExtractor<'a>(pub &'a BorrowedHeaders);

impl TraceExtractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}
