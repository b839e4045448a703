//! OpenTelemetry over OTLP: a real OTLP/gRPC receiver (the collector's
//! TraceService from the official protos) gets the spans of a publish and a
//! query across separate broker and adapter processes; the traces link up.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use govbus_tests::*;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::{Span, span::SpanKind},
};

const SERVICE: &str = env!("CARGO_BIN_EXE_govbus-service");

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_receiver() -> (Receiver, SocketAddr) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (receiver, addr)
}

fn traceparent(trace: &str, span: &str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    format!("00-{trace}-{span}-01").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_query_traces_reach_an_otlp_receiver_and_connect() {
    let (receiver, otlp) = start_receiver().await;
    let bus = TestBus::start();
    let endpoint = format!("http://{otlp}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let broker =
        bus.spawn_service_with_env(SERVICE, "broker", &bus.broker_config("showcase.db"), &env);
    let adapter = bus.spawn_service_with_env(SERVICE, "adapter", &bus.adapter_config(FHDY), &env);

    let channel = |addr: SocketAddr, identity: &str| {
        let tls = govbus_security::TlsMaterial::load(&bus.tls(identity)).unwrap();
        async move {
            tonic::transport::Channel::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls.client_config("localhost"))
                .unwrap()
                .connect()
                .await
                .unwrap()
        }
    };

    // The publishing agency's trace.
    let (publish_trace, publish_parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let subject = pinfl(1600);
    let mut request = tonic::Request::new(govbus_proto::v1::PublishRequest {
        records: vec![birth_record(&subject, 1, "Traced")],
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent(publish_trace, publish_parent));
    govbus_proto::v1::agency_adapter_client::AgencyAdapterClient::new(
        channel(adapter.addr, FHDY).await,
    )
    .publish(request)
    .await
    .unwrap();

    // The portal's trace.
    let (query_trace, query_parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut client =
        govbus_proto::v1::once_only_client::OnceOnlyClient::new(channel(broker.addr, PORTAL).await);
    let mut found = false;
    for _ in 0..200 {
        let mut request = tonic::Request::new(evidence_request(&subject, "birth_certificate"));
        request
            .metadata_mut()
            .insert("traceparent", traceparent(query_trace, query_parent));
        if client.get_evidence(request).await.is_ok() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(found, "the record reached the showcase");

    // SIGTERM: the services flush their spans as they stop.
    adapter.terminate();
    broker.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let spans = receiver.spans.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let find = |service: &str, name: &str| {
        spans
            .iter()
            .filter(|(s, span)| s == service && span.name == name)
            .map(|(_, span)| span.clone())
            .collect::<Vec<_>>()
    };

    let attribute = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone())
    };

    let publish = find("govbus-adapter", "govbus.v1.AgencyAdapter/Publish");
    assert_eq!(
        publish.len(),
        1,
        "spans: {:?}",
        spans.iter().map(|(s, x)| (s, &x.name)).collect::<Vec<_>>()
    );
    let publish = &publish[0];
    assert_eq!(hex(&publish.trace_id), publish_trace);
    assert_eq!(
        hex(&publish.parent_span_id),
        publish_parent,
        "continues the caller's trace"
    );
    assert_eq!(publish.kind, SpanKind::Server as i32);
    assert_eq!(
        attribute(publish, "outcome"),
        Some(Value::StringValue("done".into()))
    );
    assert_eq!(attribute(publish, "records"), Some(Value::IntValue(1)));
    assert_eq!(attribute(publish, "accepted"), Some(Value::IntValue(1)));
    assert_eq!(attribute(publish, "failed"), Some(Value::IntValue(0)));
    assert!(publish.events.is_empty(), "{:?}", publish.events);

    let produce = find("govbus-adapter", "publish govbus.records.birth_certificate");
    assert_eq!(produce.len(), 1);
    let produce = &produce[0];
    assert_eq!(produce.kind, SpanKind::Producer as i32);
    assert_eq!(produce.trace_id, publish.trace_id);
    assert_eq!(produce.parent_span_id, publish.span_id);

    // The broker's ingest batch links to the producer span, across processes.
    let process: Vec<_> = find("govbus-broker", "process govbus.records")
        .into_iter()
        .filter(|s| {
            s.links
                .iter()
                .any(|l| l.trace_id == produce.trace_id && l.span_id == produce.span_id)
        })
        .collect();
    assert_eq!(process.len(), 1, "one ingest batch linked to the publish");
    assert_eq!(process[0].kind, SpanKind::Consumer as i32);
    let write = find("govbus-broker", "INSERT showcase_records");
    assert!(
        write
            .iter()
            .any(|w| w.parent_span_id == process[0].span_id && w.trace_id == process[0].trace_id),
        "the showcase write is a child of the ingest batch"
    );

    // The query: the portal's trace continues into the broker and its database read.
    let queries: Vec<_> = find("govbus-broker", "govbus.v1.OnceOnly/GetEvidence")
        .into_iter()
        .filter(|s| hex(&s.trace_id) == query_trace)
        .collect();
    assert!(!queries.is_empty());
    assert!(
        queries
            .iter()
            .all(|q| hex(&q.parent_span_id) == query_parent && q.kind == SpanKind::Server as i32)
    );
    let reads = find("govbus-broker", "SELECT showcase_records");
    let answered = queries.last().unwrap();
    // What the request did is on its span; traces take no info events.
    assert_eq!(
        attribute(answered, "outcome"),
        Some(Value::StringValue("served".into()))
    );
    assert_eq!(attribute(answered, "records"), Some(Value::IntValue(1)));
    assert_eq!(
        attribute(answered, "caller"),
        Some(Value::StringValue(PORTAL.into()))
    );
    assert_eq!(
        attribute(answered, "purpose"),
        Some(Value::StringValue("test-service-001".into()))
    );
    // Queries before the record arrived: refused, and the span says why.
    for early in &queries[..queries.len() - 1] {
        assert_eq!(
            attribute(early, "outcome"),
            Some(Value::StringValue("not found".into()))
        );
    }
    assert!(
        answered.events.is_empty(),
        "info events stay out of traces: {:?}",
        answered.events
    );
    assert!(
        reads
            .iter()
            .any(|r| r.parent_span_id == answered.span_id && r.trace_id == answered.trace_id),
        "the showcase read is a child of GetEvidence"
    );
}
