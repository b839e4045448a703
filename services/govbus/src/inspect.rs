//! `govbus evidence` and `govbus record-types`: ask a broker and print the
//! answer as JSON, with payloads decoded by their record type.

use anyhow::{Context, Result};
use govbus_proto::v1::{
    GetEvidenceRequest, ListRecordTypesRequest, once_only_client::OnceOnlyClient,
};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// Renders a govbus message as JSON, resolving `Any` payloads through the
/// compiled-in descriptors.
pub fn to_json<M: Message + prost::Name>(message: &M) -> Result<String> {
    let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET)?;
    let descriptor = pool
        .get_message_by_name(&M::full_name())
        .with_context(|| format!("{} is not in the descriptor set", M::full_name()))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
    let mut out = serde_json::Serializer::pretty(Vec::new());
    dynamic.serialize_with_options(
        &mut out,
        &SerializeOptions::new()
            .stringify_64_bit_integers(false)
            .skip_default_fields(false),
    )?;
    Ok(String::from_utf8(out.into_inner())?)
}

async fn connect(broker: &str) -> Result<OnceOnlyClient<tonic::transport::Channel>> {
    let url = if broker.contains("://") {
        broker.to_string()
    } else {
        format!("http://{broker}")
    };
    OnceOnlyClient::connect(url.clone())
        .await
        .with_context(|| format!("cannot reach the broker at {url}"))
}

pub async fn evidence(broker: &str, request: GetEvidenceRequest) -> Result<String> {
    let reply = connect(broker)
        .await?
        .get_evidence(request)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    to_json(reply.get_ref())
}

pub async fn record_types(broker: &str) -> Result<String> {
    let reply = connect(broker)
        .await?
        .list_record_types(ListRecordTypesRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    to_json(reply.get_ref())
}
