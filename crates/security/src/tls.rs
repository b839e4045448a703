//! mTLS material for servers and clients, and the record signing key beside
//! it, loaded from PEM files and checked before anything listens.

use std::path::{Path, PathBuf};

use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Identity, SignError, Signer};

/// Where a service finds the bus CA and its own transport certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where a service finds its record signing certificate and key: a key of
/// its own, never the transport key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl SigningSettings {
    /// The files beside the transport ones, as `govbus certs init` writes
    /// them: `<stem>.signing.pem` and `<stem>.signing.key`.
    /// Each file keeps its own stem: `tls.crt` gives `tls.signing.pem`.
    pub fn beside(tls: &TlsSettings) -> Self {
        let signing = |path: &Path, extension: &str| {
            let mut name = path.file_stem().unwrap_or_default().to_os_string();
            name.push(format!(".signing.{extension}"));
            path.with_file_name(name)
        };
        Self {
            cert: signing(&tls.cert, "pem"),
            key: signing(&tls.key, "key"),
        }
    }
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
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: SignError },
    #[error(
        "{path}: {source} (the record signing certificate and key: `signing.cert` and `signing.key`, by default beside the transport files; `govbus certs init` writes them)"
    )]
    SigningFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A service's verified TLS material and the identity it proves.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    identity: Identity,
    ca_pem: String,
    ca_der: Vec<u8>,
    cert_der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

/// The DER of the first certificate in a PEM text.
pub fn pem_certificate_der(pem: &str) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(block.contents)
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificate_der(pem: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    pem_certificate_der(pem).ok_or_else(|| TlsError::NotPem {
        path: path.to_path_buf(),
    })
}

impl TlsMaterial {
    /// Reads the files and checks that the certificate was issued by the CA,
    /// is valid now and names a govbus identity, and that the key (PKCS#8,
    /// SEC1 or PKCS#1; any key rustls can sign with) matches it.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        let ca_pem = read(&settings.ca)?;
        let cert_pem = read(&settings.cert)?;
        let key_pem = read(&settings.key)?;
        let ca_der = certificate_der(&ca_pem, &settings.ca)?;
        let cert_der = certificate_der(&cert_pem, &settings.cert)?;
        let invalid = |reason: String| TlsError::Invalid {
            path: settings.cert.clone(),
            reason,
        };
        crate::signing::check_issued_by(&cert_der, &ca_der, None)
            .map_err(|e| invalid(e.to_string()))?;
        let identity = Identity::from_certificate(&cert_der).map_err(|e| invalid(e.to_string()))?;
        let key_error = |source| TlsError::Key {
            path: settings.key.clone(),
            source,
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| key_error(SignError::KeyNotPem))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| key_error(SignError::UnsupportedKey(e.to_string())))?;
        let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| invalid(e.to_string()))?;
        let for_tls = match cert.extended_key_usage() {
            Ok(Some(usage)) => usage.value.server_auth || usage.value.client_auth,
            _ => false,
        };
        if !for_tls {
            return Err(invalid(
                "not made for TLS (extended key usage server or client authentication); a record signing certificate goes in `signing`".into(),
            ));
        }
        if key.public_key().as_deref() != Some(cert.public_key().raw) {
            return Err(key_error(SignError::KeyMismatch));
        }
        Ok(Self {
            identity,
            ca_pem,
            ca_der,
            cert_der,
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

    /// The record signer of this service: the signing certificate of
    /// `settings`, checked to be issued by the same CA, valid now, for the
    /// same identity, made for signing and not for TLS, with a key that is
    /// not this transport key.
    pub fn signer(&self, settings: &SigningSettings) -> Result<Signer, TlsError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::SigningFile {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(&settings.cert)?;
        let key_pem = read(&settings.key)?;
        let cert_der = certificate_der(&cert_pem, &settings.cert)?;
        let invalid = |reason: String| TlsError::Invalid {
            path: settings.cert.clone(),
            reason,
        };
        crate::signing::check_issued_by(&cert_der, &self.ca_der, None)
            .map_err(|e| invalid(e.to_string()))?;
        let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| invalid(e.to_string()))?;
        let (_, transport) =
            X509Certificate::from_der(&self.cert_der).map_err(|e| invalid(e.to_string()))?;
        if cert.public_key().raw == transport.public_key().raw {
            return Err(invalid(
                "the signing key is the transport key; records need a signing certificate of their own".into(),
            ));
        }
        let signer = Signer::from_pem(&cert_pem, &key_pem).map_err(|source| {
            // Name the file at fault: the certificate, or the key.
            let path = match source {
                SignError::NotSigningCertificate
                | SignError::Certificate(_)
                | SignError::CertificateNotPem => settings.cert.clone(),
                _ => settings.key.clone(),
            };
            TlsError::Key { path, source }
        })?;
        if signer.identity() != &self.identity {
            return Err(invalid(format!(
                "names {}, but the transport certificate names {}",
                signer.identity(),
                self.identity
            )));
        }
        signer.self_check().map_err(|source| TlsError::Key {
            path: settings.key.clone(),
            source,
        })?;
        Ok(signer)
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
