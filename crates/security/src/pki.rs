//! A development certificate authority (rcgen): the bus CA and, for every
//! agency system, two certificates with its identity as URI SAN — an ECDSA
//! P-256 one for mTLS, which every TLS stack negotiates (BoringSSL-based
//! gRPC clients offer no Ed25519), and an Ed25519 one that only signs
//! records and audit checkpoints (extended key usage *document signing*,
//! RFC 9336), so a leaked transport key cannot sign evidence and a record
//! signing key cannot open a connection. Keys are PKCS#8 v1 PEM, which
//! OpenSSL 3, BoringSSL, Go and Java all read, written with mode 0600.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use ed25519::pkcs8::{EncodePrivateKey, KeypairBytes, spki::der::pem::LineEnding};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SanType,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Identity, SigningSettings, TlsSettings};

/// id-kp-documentSigning (RFC 9336): the extended key usage of record
/// signing certificates.
pub const DOCUMENT_SIGNING: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 36];

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("no randomness for a key")]
    Random,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a PEM certificate")]
    NotPem { path: PathBuf },
    #[error("{path}: not an X.509 certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("a new key could not be encoded as PKCS#8: {0}")]
    Encode(String),
    #[error(
        "{path} has no ca.key beside it: not a folder govbus certs init issues in (a CA of its own would replace this one)"
    )]
    ForeignCa { path: PathBuf },
    #[error(
        "{path} has no ca.pem beside it: restore the CA certificate, or remove the key to start a new CA"
    )]
    OrphanCaKey { path: PathBuf },
    #[error(
        "{from} holds Ed25519 certificates of an earlier govbus and could not be moved to {to}: {source}; move it aside by hand and run again"
    )]
    Retire {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a transport certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// The certificate to issue for one agency system. A record signing
/// certificate ([`CertificateAuthority::issue_signing`]) takes only the
/// identity and the validity window.
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
    /// A new CA with an ECDSA P-256 key, valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
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

    /// A transport (mTLS) certificate: ECDSA P-256, the identity as URI SAN
    /// beside the request's DNS names and addresses.
    pub fn issue(&self, request: &LeafRequest) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = leaf_params(request, request.dns_names.clone())?;
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
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A record signing certificate: Ed25519, the identity as its only SAN,
    /// usable for document signing and nothing else. Of the request only the
    /// identity and the validity window apply.
    pub fn issue_signing(&self, request: &LeafRequest) -> Result<Issued, PkiError> {
        let key_pem = ed25519_pkcs8_v1()?;
        let key = KeyPair::from_pem_and_sign_algo(&key_pem, &PKCS_ED25519)?;
        let mut params = leaf_params(request, Vec::new())?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::Other(DOCUMENT_SIGNING.to_vec())];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem,
        })
    }
}

/// What both kinds of leaf share: subject, URI SAN, validity, issuer key id.
fn leaf_params(
    request: &LeafRequest,
    dns_names: Vec<String>,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(dns_names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, request.identity.to_string());
    dn.push(DnType::OrganizationName, request.identity.agency());
    params.distinguished_name = dn;
    params
        .subject_alt_names
        .push(SanType::URI(request.identity.uri().try_into()?));
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A new Ed25519 key as PKCS#8 v1 PEM (RFC 8410, without the public key):
/// ring writes v2, which OpenSSL 3.0 refuses.
fn ed25519_pkcs8_v1() -> Result<String, PkiError> {
    let mut seed = [0u8; 32];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| PkiError::Random)?;
    let pem = KeypairBytes {
        secret_key: seed,
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| PkiError::Encode(e.to_string()))?;
    Ok(pem.to_string())
}

/// Where the transport files of one system live in a certificate folder:
/// `<agency>.<system>.pem` and `.key`.
pub fn settings_in(dir: &Path, identity: &Identity) -> TlsSettings {
    let stem = identity.file_stem();
    TlsSettings {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    }
}

/// Where the record signing files of one system live in a certificate
/// folder: `<agency>.<system>.signing.pem` and `.signing.key`.
pub fn signing_in(dir: &Path, identity: &Identity) -> SigningSettings {
    SigningSettings::beside(&settings_in(dir, identity))
}

/// What [`init_dir`] did.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Identities that got new certificates (either kind).
    pub created: Vec<Identity>,
    /// Where a folder written by an earlier govbus (Ed25519 transport
    /// certificates) was moved before a new CA was made; its `ca.pem` still
    /// verifies the evidence signed under it.
    pub retired: Option<PathBuf>,
}

/// Options of [`init_dir`].
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// DNS names that new transport certificates carry besides `localhost`,
    /// so clients in a cluster verify hostnames: for one identity (e.g. the
    /// broker's `govbus-broker.govbus.svc`), or for every one when `None`.
    pub dns_names: Vec<(Option<Identity>, String)>,
}

impl InitOptions {
    /// The extra DNS names of `identity`'s transport certificate.
    fn dns_names_of<'a>(&'a self, identity: &'a Identity) -> impl Iterator<Item = String> + 'a {
        self.dns_names
            .iter()
            .filter(move |(of, _)| of.as_ref().is_none_or(|of| of == identity))
            .map(|(_, name)| name.clone())
    }
}

/// Creates (once) the CA in `dir` and, for every identity, the transport
/// and the record signing certificate it does not have yet.
pub fn init_dir(dir: &Path, identities: &[Identity]) -> Result<InitReport, PkiError> {
    init_dir_with(dir, identities, &InitOptions::default())
}

/// [`init_dir`] with options.
pub fn init_dir_with(
    dir: &Path,
    identities: &[Identity],
    options: &InitOptions,
) -> Result<InitReport, PkiError> {
    let mut report = InitReport {
        retired: retire_if_ed25519(dir)?,
        ..InitReport::default()
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    // Half a CA is never completed by a new one: that would replace a
    // certificate others trust, or a key nothing else has.
    let ca = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {
            let cert = fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?;
            let key = fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
            CertificateAuthority::from_pem(&cert, &key)?
        }
        (false, false) => {
            let ca = CertificateAuthority::generate("govbus development CA")?;
            write_private(&ca_key, &ca.key_pem)?;
            fs::write(&ca_cert, ca.cert_pem()).map_err(io(&ca_cert))?;
            ca
        }
        (true, false) => return Err(PkiError::ForeignCa { path: ca_cert }),
        (false, true) => return Err(PkiError::OrphanCaKey { path: ca_key }),
    };
    for identity in identities {
        let mut request = LeafRequest::new(identity.clone());
        request.dns_names.extend(options.dns_names_of(identity));
        let tls = settings_in(dir, identity);
        let signing = SigningSettings::beside(&tls);
        let mut created = false;
        if !(tls.cert.exists() && tls.key.exists()) {
            write_pair(&tls.cert, &tls.key, &ca.issue(&request)?)?;
            created = true;
        }
        if !(signing.cert.exists() && signing.key.exists()) {
            write_pair(&signing.cert, &signing.key, &ca.issue_signing(&request)?)?;
            created = true;
        }
        if created {
            report.created.push(identity.clone());
        }
    }
    Ok(report)
}

/// A folder whose CA has an Ed25519 key (and whose CA key is there: govbus
/// made it) was written by a govbus from before transport and signing keys
/// were split: its transport certificates are Ed25519, which
/// BoringSSL-based clients refuse. It moves aside whole (`<dir>.ed25519`,
/// or `.ed25519-2`, …) and a new set is made in its place.
fn retire_if_ed25519(dir: &Path) -> Result<Option<PathBuf>, PkiError> {
    let ca_cert = dir.join("ca.pem");
    if !(ca_cert.exists() && dir.join("ca.key").exists()) {
        return Ok(None);
    }
    let pem = fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?;
    let der = crate::pem_certificate_der(&pem).ok_or_else(|| PkiError::NotPem {
        path: ca_cert.clone(),
    })?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate {
        path: ca_cert.clone(),
        reason: e.to_string(),
    })?;
    if !crate::signing::is_ed25519(&cert) {
        return Ok(None);
    }
    let mut name = dir
        .file_name()
        .ok_or_else(|| PkiError::BadCertificate {
            path: ca_cert.clone(),
            reason: "its folder has no name to move it aside by".into(),
        })?
        .to_os_string();
    name.push(".ed25519");
    let mut retired = dir.with_file_name(&name);
    let mut n = 1;
    while retired.exists() {
        n += 1;
        let mut numbered = name.clone();
        numbered.push(format!("-{n}"));
        retired = dir.with_file_name(numbered);
    }
    fs::rename(dir, &retired).map_err(|source| PkiError::Retire {
        from: dir.to_path_buf(),
        to: retired.clone(),
        source,
    })?;
    Ok(Some(retired))
}

fn write_pair(cert: &Path, key: &Path, issued: &Issued) -> Result<(), PkiError> {
    write_private(key, &issued.key_pem)?;
    fs::write(cert, &issued.cert_pem).map_err(io(cert))
}

/// Writes a private key readable by its owner only: into a file created
/// with mode 0600 beside it, then renamed over it, so that no reader ever
/// sees a key readable by others or half written.
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    let mut partial = path.as_os_str().to_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&partial).map_err(io(&partial))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A partial file left by a crash keeps its mode through open().
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io(&partial))?;
    }
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&partial))?;
    fs::rename(&partial, path).map_err(io(path))
}
