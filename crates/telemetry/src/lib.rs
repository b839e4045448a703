//! Logging and tracing set-up shared by every govbus process, and the W3C
//! trace-context plumbing that carries one trace across gRPC and Kafka.
//!
//! Spans are real OpenTelemetry spans (an SDK tracer provider sits behind the
//! `tracing` layer), so their ids are what we propagate, and they are
//! exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Span names
//! follow the semantic conventions through `otel.name` / `otel.kind` fields.

use std::sync::OnceLock;

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{LevelFilter, filter_fn},
    fmt::{TestWriter, writer::BoxMakeWriter},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

pub use opentelemetry::propagation::{Extractor as TraceExtractor, Injector as TraceInjector};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber: human-readable logs filtered by `RUST_LOG`
/// (default `info`) plus OpenTelemetry span context. Safe to call more than
/// once (tests do); only the first call has an effect.
pub fn init(service: &'static str) {
    install(service, false, DEFAULT_FILTER);
}

/// Like [`init`] with another filter when `RUST_LOG` is unset (e.g. `warn`
/// for a benchmark, whose per-request logs would drown its output).
pub fn init_with_default_filter(service: &'static str, filter: &str) {
    install(service, false, filter);
}

const DEFAULT_FILTER: &str = "info,sqlx=warn,librdkafka=warn,rdkafka=warn,h2=warn";

/// Like [`init`], but logs through libtest's capture so that only failing
/// tests show their logs.
pub fn init_for_tests(service: &'static str) {
    install(service, true, DEFAULT_FILTER);
}

fn install(service: &'static str, test_writer: bool, default_filter: &str) {
    // Logs go to stderr so that stdout stays for what a command prints.
    let writer = if test_writer {
        BoxMakeWriter::new(TestWriter::new())
    } else {
        BoxMakeWriter::new(std::io::stderr)
    };
    let provider = PROVIDER.get_or_init(|| provider(service));
    let tracer = provider.tracer(service);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // RUST_LOG filters the logs only: the spans that carry trace context
    // (info level) are always made, whatever the log level. Traces take
    // events (span events) from `warn` up: an `info!` inside a request's
    // span became an OpenTelemetry event on every request (what that cost:
    // docs/PROFILING.md); what a request did is a field of its span
    // instead, searchable in a trace store, and the info lines stay in the
    // logs.
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(!test_writer)
                .with_writer(writer)
                .with_filter(filter),
        )
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // Every request makes several spans, and the layer's
                // defaults did work on each that no trace needs: source
                // file and line, thread name and id as attributes, busy
                // and idle time taken at every poll, and an OpenTelemetry
                // context attached on every enter, which nothing here
                // reads (propagation takes a span's context from the span).
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_filter(filter_fn(traced).with_max_level_hint(LevelFilter::INFO)),
        )
        .try_init();
}

/// What the OpenTelemetry layer takes: spans from `info`, events from `warn`.
/// Decided by the callsite's metadata alone, so `tracing` caches the answer
/// per callsite and a skipped event costs nothing at run time.
fn traced(metadata: &tracing::Metadata<'_>) -> bool {
    let least = if metadata.is_event() {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    *metadata.level() <= least
}

/// The tracer provider: spans always get real ids (they are propagated);
/// they are exported over OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set, so that telemetry costs nothing otherwise. Must be called inside
/// a Tokio runtime (the tonic exporter needs one).
fn provider(service: &'static str) -> SdkTracerProvider {
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build(),
    );
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    if !endpoint.is_empty() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("OTLP export to {endpoint} disabled: {e}"),
        }
    }
    builder.build()
}

/// Exports the spans still buffered; call before the process exits.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    }
}

/// Writes the current span's context as W3C `traceparent`/`tracestate` entries.
pub fn inject_current(carrier: &mut dyn Injector) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, carrier);
}

/// Makes `span` a child of the remote context found in `carrier`, if any.
pub fn set_parent_from(span: &tracing::Span, carrier: &dyn Extractor) {
    let cx = TraceContextPropagator::new().extract(carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The W3C trace id of the current span, as 32 hex digits; empty when tracing
/// is not initialised. Returned to callers so they can quote it to operators.
pub fn current_trace_id() -> String {
    let cx: Context = tracing::Span::current().context();
    let span_context = cx.span().span_context().clone();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Links `span` to the remote span found in `carrier`, if any: a batch span
/// that handles records from many traces links to each of them.
pub fn link_from(span: &tracing::Span, carrier: &dyn Extractor) -> Option<String> {
    let cx = TraceContextPropagator::new().extract(carrier);
    let remote = cx.span().span_context().clone();
    if !remote.is_valid() {
        return None;
    }
    let trace_id = remote.trace_id().to_string();
    span.add_link(remote);
    Some(trace_id)
}
