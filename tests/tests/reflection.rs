//! A client that knows nothing but server reflection — as grpcurl or any
//! language's reflection client would — publishes a record and reads it back.

use std::collections::BTreeMap;

use govbus_tests::*;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// Encodes and decodes messages known only through descriptors.
struct DynamicCodec(MessageDescriptor);
struct DynamicEncoder;
struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;
    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }
    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.0.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

async fn reflect(channel: Channel, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection answers")
        .into_inner();
    stream
        .message()
        .await
        .expect("reflection stream")
        .expect("one response")
        .message_response
        .expect("a message response")
}

/// The services a server lists by reflection, sorted, after checking that
/// it also describes each of them (a listed service it cannot describe
/// breaks `grpcurl describe`).
async fn listed_and_described(channel: Channel) -> Vec<String> {
    let listed = match reflect(channel.clone(), MessageRequest::ListServices(String::new())).await {
        MessageResponse::ListServicesResponse(list) => list.service,
        other => panic!("unexpected reflection answer {other:?}"),
    };
    let mut names: Vec<String> = listed.into_iter().map(|s| s.name).collect();
    names.sort();
    for name in &names {
        match reflect(
            channel.clone(),
            MessageRequest::FileContainingSymbol(name.clone()),
        )
        .await
        {
            MessageResponse::FileDescriptorResponse(files) => {
                assert!(!files.file_descriptor_proto.is_empty(), "{name}")
            }
            other => panic!("{name} is listed but not described: {other:?}"),
        }
    }
    names
}

fn add_files(
    files: &mut BTreeMap<String, prost_types::FileDescriptorProto>,
    response: MessageResponse,
) {
    match response {
        MessageResponse::FileDescriptorResponse(r) => {
            for bytes in r.file_descriptor_proto {
                let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
                files.insert(file.name().to_string(), file);
            }
        }
        other => panic!("no descriptors: {other:?}"),
    }
}

/// Builds a descriptor pool from what the server says about `symbols`,
/// fetching imports by file name as grpcurl does.
async fn pool_from_reflection(channel: Channel, symbols: &[&str]) -> DescriptorPool {
    let mut files = BTreeMap::new();
    for symbol in symbols {
        let response = reflect(
            channel.clone(),
            MessageRequest::FileContainingSymbol(symbol.to_string()),
        )
        .await;
        add_files(&mut files, response);
    }
    loop {
        let missing: Vec<String> = files
            .values()
            .flat_map(|f| f.dependency.iter())
            .filter(|d| !files.contains_key(*d))
            .cloned()
            .collect();
        if missing.is_empty() {
            break;
        }
        for name in missing {
            let response = reflect(channel.clone(), MessageRequest::FileByFilename(name)).await;
            add_files(&mut files, response);
        }
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files.into_values())
        .expect("reflected descriptors are complete");
    pool
}

/// Calls `method` of `service` with a JSON request, as grpcurl -d would.
async fn call_json(
    channel: Channel,
    pool: &DescriptorPool,
    service: &str,
    method: &str,
    json: &str,
) -> Result<serde_json::Value, Status> {
    let method_desc = pool
        .get_service_by_name(service)
        .unwrap_or_else(|| panic!("{service} reflected"))
        .methods()
        .find(|m| m.name() == method)
        .unwrap_or_else(|| panic!("{service}/{method} reflected"));
    let mut de = serde_json::Deserializer::from_str(json);
    let request = DynamicMessage::deserialize(method_desc.input(), &mut de)
        .expect("request json matches the schema");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(format!("/{service}/{method}")).unwrap();
    let reply = grpc
        .unary(
            tonic::Request::new(request),
            path,
            DynamicCodec(method_desc.output()),
        )
        .await?
        .into_inner();
    Ok(serde_json::to_value(&reply).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflection_only_client_publishes_and_reads_back() {
    let bus = TestBus::start();
    let broker = bus.broker(bus.broker_config("showcase.db")).await;
    let adapter = bus.adapter(bus.adapter_config(FHDY)).await;
    let adapter_channel = adapter.channel().await;
    let broker_channel = broker.channel().await;

    assert_eq!(
        listed_and_described(adapter_channel.clone()).await,
        [
            "govbus.v1.AgencyAdapter",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ],
        "an adapter lists what it serves, not the broker's services"
    );
    assert_eq!(
        listed_and_described(broker_channel.clone()).await,
        [
            "govbus.v1.Consents",
            "govbus.v1.OnceOnly",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ],
    );

    let subject = pinfl(500);
    let pool = pool_from_reflection(
        adapter_channel.clone(),
        &[
            "govbus.v1.AgencyAdapter",
            "govbus.records.v1.BirthCertificate",
        ],
    )
    .await;
    let publish = format!(
        r#"{{"records": [{{
            "record_type": "birth_certificate", "subject_id": "{subject}", "record_key": "I-TN 7700500",
            "version": 1, "status": "RECORD_STATUS_ACTIVE", "issued_at": "2015-05-20T00:00:00Z",
            "payload": {{"@type": "type.googleapis.com/govbus.records.v1.BirthCertificate",
                         "certificate_number": "I-TN 7700500", "date_of_birth": "2015-05-15",
                         "child": {{"pinfl": "{subject}", "first_name": "Laylo", "last_name": "Yusupova"}}}}
        }}]}}"#
    );
    let reply = call_json(
        adapter_channel.clone(),
        &pool,
        "govbus.v1.AgencyAdapter",
        "Publish",
        &publish,
    )
    .await
    .expect("publish through reflection");
    assert_eq!(
        reply["results"][0]["outcome"], "PUBLISH_OUTCOME_ACCEPTED",
        "{reply}"
    );

    // A bad PINFL is refused with a readable reason.
    let bad = publish.replace(
        &format!("\"subject_id\": \"{subject}\""),
        "\"subject_id\": \"12345678901234\"",
    );
    let status = call_json(
        adapter_channel,
        &pool,
        "govbus.v1.AgencyAdapter",
        "Publish",
        &bad,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("records[0].subject_id"),
        "{}",
        status.message()
    );

    let pool = pool_from_reflection(
        broker_channel.clone(),
        &["govbus.v1.OnceOnly", "govbus.records.v1.BirthCertificate"],
    )
    .await;
    let query = format!(
        r#"{{"subject_id": "{subject}", "record_type": "birth_certificate", "purpose": "test-service-001"}}"#
    );
    let mut answer = None;
    for _ in 0..200 {
        match call_json(
            broker_channel.clone(),
            &pool,
            "govbus.v1.OnceOnly",
            "GetEvidence",
            &query,
        )
        .await
        {
            Ok(a) => {
                answer = Some(a);
                break;
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    let answer = answer.expect("evidence arrives");
    let payload = &answer["evidence"][0]["record"]["payload"];
    assert_eq!(payload["child"]["firstName"], "Laylo", "{answer}");
    assert_eq!(answer["evidence"][0]["status"], "EVIDENCE_STATUS_VALID");

    // Health says both services are serving.
    let mut health = tonic_health::pb::health_client::HealthClient::new(broker_channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "govbus.v1.OnceOnly".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    adapter.stop().await;
    broker.stop().await;
}
