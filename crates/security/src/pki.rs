//! A development certificate authority (rcgen): the bus CA and an Ed25519
//! certificate per agency system, with its identity as URI SAN. The same key
//! authenticates the system in mTLS and signs its records.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::{Identity, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a leaf certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// The certificate to issue for one agency system.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub identity: Identity,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub usages: Vec<Usage>,
}

impl LeafRequest {
    /// Valid for a year, for both serving and calling, on localhost.
    pub fn new(identity: Identity) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            identity,
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(365),
            usages: vec![Usage::Server, Usage::Client],
        }
    }
}

/// A PEM certificate and its PKCS#8 private key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The bus CA.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "govbus");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn issue(&self, request: &LeafRequest) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::new(request.dns_names.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, request.identity.to_string());
        dn.push(DnType::OrganizationName, request.identity.agency());
        params.distinguished_name = dn;
        params
            .subject_alt_names
            .push(SanType::URI(request.identity.uri().try_into()?));
        for ip in &request.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = request
            .usages
            .iter()
            .map(|u| match u {
                Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
                Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
            })
            .collect();
        params.not_before = request.not_before;
        params.not_after = request.not_after;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Where the files of one system live in a certificate folder.
pub fn settings_in(dir: &Path, identity: &Identity) -> TlsSettings {
    let stem = identity.file_stem();
    TlsSettings {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    }
}

/// Creates (once) the CA in `dir` and a certificate for every identity that
/// has none yet. Returns the identities that got a new certificate.
pub fn init_dir(dir: &Path, identities: &[Identity]) -> Result<Vec<Identity>, PkiError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let ca = if ca_cert.exists() && ca_key.exists() {
        let cert = fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?;
        let key = fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
        CertificateAuthority::from_pem(&cert, &key)?
    } else {
        let ca = CertificateAuthority::generate("govbus development CA")?;
        write_private(&ca_key, &ca.key_pem)?;
        fs::write(&ca_cert, ca.cert_pem()).map_err(io(&ca_cert))?;
        ca
    };
    let mut created = Vec::new();
    for identity in identities {
        let paths = settings_in(dir, identity);
        if paths.cert.exists() && paths.key.exists() {
            continue;
        }
        let issued = ca.issue(&LeafRequest::new(identity.clone()))?;
        write_private(&paths.key, &issued.key_pem)?;
        fs::write(&paths.cert, &issued.cert_pem).map_err(io(&paths.cert))?;
        created.push(identity.clone());
    }
    Ok(created)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    fs::write(path, contents).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}
