//! mTLS material for servers and clients, loaded from PEM files and checked
//! before anything listens.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};

use crate::{Identity, SignError, Signer};

/// Where a service finds the bus CA and its own certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a PEM certificate")]
    NotPem { path: PathBuf },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Key(#[from] SignError),
}

/// A service's verified TLS material and the identity it proves.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    identity: Identity,
    ca_pem: String,
    ca_der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

/// The DER of the first certificate in a PEM text.
pub fn pem_certificate_der(pem: &str) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(block.contents)
}

impl TlsMaterial {
    /// Reads the files and checks that the certificate was issued by the CA,
    /// is valid now and names a govbus identity, and that the key matches.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })
        };
        let ca_pem = read(&settings.ca)?;
        let cert_pem = read(&settings.cert)?;
        let key_pem = read(&settings.key)?;
        let ca_der = pem_certificate_der(&ca_pem).ok_or_else(|| TlsError::NotPem {
            path: settings.ca.clone(),
        })?;
        let cert_der = pem_certificate_der(&cert_pem).ok_or_else(|| TlsError::NotPem {
            path: settings.cert.clone(),
        })?;
        let invalid = |reason: String| TlsError::Invalid {
            path: settings.cert.clone(),
            reason,
        };
        crate::signing::check_issued_by(&cert_der, &ca_der, None)
            .map_err(|e| invalid(e.to_string()))?;
        let identity = Identity::from_certificate(&cert_der).map_err(|e| invalid(e.to_string()))?;
        // The key must belong to the certificate: sign and verify once.
        let signer = Signer::from_pem(&cert_pem, &key_pem)?;
        signer.self_check()?;
        Ok(Self {
            identity,
            ca_pem,
            ca_der,
            cert_pem,
            key_pem,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// DER of the bus CA certificate (for verifying record signatures).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// Requires and verifies a client certificate from the bus CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// Presents this service's certificate and trusts only the bus CA.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(server_name)
    }

    /// The record signer for this identity (same Ed25519 key as the certificate).
    pub fn signer(&self) -> Result<Signer, SignError> {
        Signer::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// The identity in the leaf certificate a TLS peer presented, if any.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<Identity> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    Identity::from_certificate(leaf.as_ref()).ok()
}

/// Installs the process-wide rustls crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
