//! Commands that talk to a running bus over mTLS and print JSON, with
//! payloads decoded by their record type; and the offline check of evidence.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use govbus_proto::v1::{
    ConsentScope, GetEvidenceRequest, GetEvidenceResponse, GrantConsentRequest,
    ListRecordTypesRequest, RevokeConsentRequest, consents_client::ConsentsClient,
    once_only_client::OnceOnlyClient,
};
use govbus_security::{TlsMaterial, TlsSettings};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use tonic::transport::Channel;

fn pool() -> Result<DescriptorPool> {
    Ok(DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET)?)
}

/// Renders a govbus message as JSON, resolving `Any` payloads through the
/// compiled-in descriptors.
pub fn to_json<M: Message + prost::Name>(message: &M) -> Result<String> {
    let descriptor = pool()?
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

/// Parses JSON (as printed by [`to_json`] or grpcurl) into a govbus message.
pub fn from_json<M: Message + prost::Name + Default>(json: &str) -> Result<M> {
    let descriptor = pool()?
        .get_message_by_name(&M::full_name())
        .with_context(|| format!("{} is not in the descriptor set", M::full_name()))?;
    let mut de = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(descriptor, &mut de)
        .with_context(|| format!("not a {} in JSON", M::full_name()))?;
    Ok(M::decode(dynamic.encode_to_vec().as_slice())?)
}

/// How a command reaches the bus: address and the caller's certificate.
#[derive(Debug, Clone)]
pub struct Connection {
    pub address: String,
    pub tls: TlsSettings,
}

impl Connection {
    /// The files `govbus certs init` wrote for `stem` (e.g. `egov.portal`).
    pub fn from_certs_dir(address: String, dir: &Path, stem: &str) -> Self {
        Self {
            address,
            tls: TlsSettings {
                ca: dir.join("ca.pem"),
                cert: dir.join(format!("{stem}.pem")),
                key: dir.join(format!("{stem}.key")),
            },
        }
    }

    pub async fn channel(&self) -> Result<Channel> {
        govbus_security::install_crypto_provider();
        let tls = TlsMaterial::load(&self.tls).context("client certificate")?;
        let url = format!("https://{}", self.address.trim_start_matches("https://"));
        let channel = Channel::from_shared(url.clone())?
            .tls_config(tls.client_config("localhost"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| format!("cannot reach {url} over mTLS"))?;
        Ok(channel)
    }
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

pub async fn evidence(connection: &Connection, request: GetEvidenceRequest) -> Result<String> {
    let reply = OnceOnlyClient::new(connection.channel().await?)
        .get_evidence(request)
        .await
        .map_err(status)?;
    to_json(reply.get_ref())
}

pub async fn record_types(connection: &Connection) -> Result<String> {
    let reply = OnceOnlyClient::new(connection.channel().await?)
        .list_record_types(ListRecordTypesRequest {})
        .await
        .map_err(status)?;
    to_json(reply.get_ref())
}

pub async fn grant_consent(
    connection: &Connection,
    scope: ConsentScope,
    days: u32,
) -> Result<String> {
    let expires = govbus_core::time::now_micros() + i64::from(days) * 86_400_000_000;
    let reply = ConsentsClient::new(connection.channel().await?)
        .grant_consent(GrantConsentRequest {
            scope: Some(scope),
            expires_at: Some(govbus_core::time::micros_to_timestamp(expires)),
        })
        .await
        .map_err(status)?;
    to_json(reply.get_ref())
}

pub async fn revoke_consent(connection: &Connection, scope: ConsentScope) -> Result<String> {
    let reply = ConsentsClient::new(connection.channel().await?)
        .revoke_consent(RevokeConsentRequest { scope: Some(scope) })
        .await
        .map_err(status)?;
    to_json(reply.get_ref())
}

/// Checks every record of a saved evidence answer (JSON) against the bus CA,
/// with no network. Returns one line per record; fails if any does not hold.
pub fn verify_file(evidence_json: &Path, ca_pem: &PathBuf) -> Result<Vec<String>> {
    let json = std::fs::read_to_string(evidence_json)
        .with_context(|| format!("cannot read {}", evidence_json.display()))?;
    let answer: GetEvidenceResponse = from_json(&json)?;
    let ca = std::fs::read_to_string(ca_pem)
        .with_context(|| format!("cannot read {}", ca_pem.display()))?;
    let ca_der = govbus_security::pem_certificate_der(&ca)
        .with_context(|| format!("{} is not a PEM certificate", ca_pem.display()))?;
    let mut lines = Vec::new();
    let mut failed = 0;
    for evidence in &answer.evidence {
        let Some(record) = &evidence.record else {
            continue;
        };
        match govbus_security::verify(record, &ca_der) {
            Ok(v) => lines.push(format!(
                "ok: record {} ({} v{}) signed by {} with key {}",
                record.record_id, record.record_type, record.version, v.signer, v.key_id
            )),
            Err(e) => {
                failed += 1;
                lines.push(format!("FAILED: record {}: {e}", record.record_id));
            }
        }
    }
    if answer.evidence.is_empty() {
        bail!("the answer holds no evidence");
    }
    if failed > 0 {
        bail!(
            "{}\n{failed} of {} records do not verify",
            lines.join("\n"),
            answer.evidence.len()
        );
    }
    Ok(lines)
}

/// Walks the audit trail in `database`; checkpoints must be signed by a
/// certificate of the CA in `ca_pem`.
pub async fn verify_audit(database: &str, ca_pem: &Path) -> Result<i64> {
    let ca = std::fs::read_to_string(ca_pem)
        .with_context(|| format!("cannot read {}", ca_pem.display()))?;
    let ca_der = govbus_security::pem_certificate_der(&ca)
        .with_context(|| format!("{} is not a PEM certificate", ca_pem.display()))?;
    let db = govbus_store::Database::connect(database).await?;
    let log = govbus_store::AuditLog::new(db);
    let outcome = log
        .verify(|c| {
            let message =
                govbus_store::Checkpoint::message(&c.chain, c.seq, &c.entry_hash, c.signed_at_us);
            govbus_security::verify_detached(
                &c.certificate,
                &ca_der,
                c.signed_at_us.div_euclid(1_000_000),
                &message,
                &c.signature,
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
        .await?;
    outcome.map_err(|fault| anyhow::anyhow!("audit trail tampered: {fault}"))
}
