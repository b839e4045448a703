//! What `govbus certs init` writes: transport certificates every TLS stack
//! negotiates (ECDSA P-256), a separate Ed25519 record signing certificate
//! per system, PKCS#8 v1 keys only their owner can read, and a folder of an
//! earlier govbus moved aside rather than mixed in.

use std::path::Path;

use govbus_security::{
    Identity, SigningSettings, TlsError, TlsMaterial, TlsSettings, VerifyError,
    pki::{self, DOCUMENT_SIGNING, InitOptions, LeafRequest},
};
use x509_parser::{
    oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519},
    prelude::{FromDer, GeneralName, X509Certificate},
};

const FHDY: &str = "agency/civil-registry/system/fhdy";
const PORTAL: &str = "agency/egov/system/portal";

fn id(identity: &str) -> Identity {
    identity.parse().unwrap()
}

fn der(path: &Path) -> Vec<u8> {
    govbus_security::pem_certificate_der(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The DER inside a private key file, which must be PKCS#8.
fn pkcs8(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(text.as_bytes()).unwrap();
    assert_eq!(block.label, "PRIVATE KEY", "{}", path.display());
    block.contents
}

/// PKCS#8 v1 (RFC 5208): SEQUENCE { INTEGER 0, … }; v2 (RFC 5958), which
/// OpenSSL 3.0 refuses for Ed25519, has INTEGER 1.
fn pkcs8_version(key: &[u8]) -> u8 {
    assert_eq!(&key[..1], &[0x30]);
    let header = if key[1] & 0x80 == 0 {
        2
    } else {
        2 + usize::from(key[1] & 0x7f)
    };
    assert_eq!(&key[header..header + 2], &[0x02, 0x01], "version INTEGER");
    key[header + 2]
}

#[test]
fn every_system_gets_an_ecdsa_transport_and_an_ed25519_signing_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let options = InitOptions {
        dns_names: vec![
            (Some(id(FHDY)), "civil-registry.govbus.svc".into()),
            (None, "govbus.example".into()),
        ],
    };
    let report = pki::init_dir_with(&certs, &[id(FHDY), id(PORTAL)], &options).unwrap();
    assert_eq!(report.created, vec![id(FHDY), id(PORTAL)]);
    assert!(report.retired.is_none());

    let ca = der(&certs.join("ca.pem"));
    let (_, ca_cert) = X509Certificate::from_der(&ca).unwrap();
    assert_eq!(
        ca_cert.public_key().algorithm.algorithm,
        OID_KEY_TYPE_EC_PUBLIC_KEY
    );

    let tls = pki::settings_in(&certs, &id(FHDY));
    let tls_der = der(&tls.cert);
    let (_, cert) = X509Certificate::from_der(&tls_der).unwrap();
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    let names: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => format!("uri:{uri}"),
            GeneralName::DNSName(dns) => format!("dns:{dns}"),
            GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    for expected in [
        "uri:spiffe://govbus/agency/civil-registry/system/fhdy",
        "dns:localhost",
        "dns:civil-registry.govbus.svc",
        "dns:govbus.example",
        "ip:[127, 0, 0, 1]",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let portal_der = der(&pki::settings_in(&certs, &id(PORTAL)).cert);
    let (_, portal) = X509Certificate::from_der(&portal_der).unwrap();
    let portal_names = format!("{:?}", portal.subject_alternative_name());
    assert!(
        portal_names.contains("govbus.example")
            && !portal_names.contains("civil-registry.govbus.svc"),
        "a name given for one identity is on its certificate only: {portal_names}"
    );
    let usage = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.server_auth && usage.client_auth);

    let signing = pki::signing_in(&certs, &id(FHDY));
    assert_eq!(signing, SigningSettings::beside(&tls));
    assert!(signing.cert.ends_with("civil-registry.fhdy.signing.pem"));
    let signing_der = der(&signing.cert);
    let (_, signing_cert) = X509Certificate::from_der(&signing_der).unwrap();
    assert_eq!(
        signing_cert.public_key().algorithm.algorithm,
        OID_SIG_ED25519
    );
    let usage = signing_cert.extended_key_usage().unwrap().unwrap().value;
    assert!(!usage.server_auth && !usage.client_auth, "not for TLS");
    let document_signing = DOCUMENT_SIGNING
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    assert!(
        usage
            .other
            .iter()
            .any(|oid| oid.to_id_string() == document_signing),
        "document signing in {:?}",
        usage.other
    );
    assert_eq!(
        Identity::from_certificate(&signing_der).unwrap(),
        id(FHDY),
        "the same identity as the transport certificate"
    );

    // Every key: PKCS#8 v1, readable by its owner only.
    for entry in std::fs::read_dir(&certs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            assert_eq!(pkcs8_version(&pkcs8(&path)), 0, "{}", path.display());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            }
        }
    }

    // A second run keeps what is there.
    let again = pki::init_dir(&certs, &[id(FHDY), id(PORTAL)]).unwrap();
    assert!(again.created.is_empty());
    assert_eq!(der(&tls.cert), tls_der);
}

#[test]
fn a_service_signs_with_its_signing_certificate_and_never_its_transport_key() {
    govbus_security::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    pki::init_dir(dir.path(), &[id(FHDY), id(PORTAL)]).unwrap();
    let tls = pki::settings_in(dir.path(), &id(FHDY));
    let material = TlsMaterial::load(&tls).unwrap();
    let signer = material.signer(&SigningSettings::beside(&tls)).unwrap();
    assert_eq!(signer.identity(), &id(FHDY));

    let refused = |settings: SigningSettings| match material.signer(&settings) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{settings:?} accepted as a signing certificate"),
    };
    // The transport files themselves.
    let transport = refused(SigningSettings {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
    });
    assert!(
        transport.contains("the signing key is the transport key"),
        "{transport}"
    );
    // Another system's signing certificate.
    let portal = refused(pki::signing_in(dir.path(), &id(PORTAL)));
    assert!(
        portal.contains("names agency/egov/system/portal, but the transport certificate names agency/civil-registry/system/fhdy"),
        "{portal}"
    );
    // A signing certificate with another system's key.
    let mismatched = refused(SigningSettings {
        cert: SigningSettings::beside(&tls).cert,
        key: pki::signing_in(dir.path(), &id(PORTAL)).key,
    });
    assert!(mismatched.contains("does not belong"), "{mismatched}");
    // A signing certificate that has expired.
    let ca = pki::CertificateAuthority::from_pem(
        &std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
        &std::fs::read_to_string(dir.path().join("ca.key")).unwrap(),
    )
    .unwrap();
    let mut request = LeafRequest::new(id(FHDY));
    request.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    request.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let expired = ca.issue_signing(&request).unwrap();
    std::fs::write(dir.path().join("expired.pem"), expired.cert_pem).unwrap();
    std::fs::write(dir.path().join("expired.key"), expired.key_pem).unwrap();
    let expired = refused(SigningSettings {
        cert: dir.path().join("expired.pem"),
        key: dir.path().join("expired.key"),
    });
    assert!(expired.contains("not valid"), "{expired}");

    // A transport key is no Ed25519 key: nothing can sign records with it.
    let key = std::fs::read_to_string(&tls.key).unwrap();
    let cert = std::fs::read_to_string(&tls.cert).unwrap();
    assert!(matches!(
        govbus_security::Signer::from_pem(&cert, &key),
        Err(govbus_security::SignError::KeyNotEd25519)
    ));
}

#[test]
fn a_record_claimed_under_a_transport_certificate_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    pki::init_dir(dir.path(), &[id(FHDY)]).unwrap();
    let tls = pki::settings_in(dir.path(), &id(FHDY));
    let material = TlsMaterial::load(&tls).unwrap();
    let signer = material.signer(&SigningSettings::beside(&tls)).unwrap();
    let mut record = govbus_proto::v1::Record {
        record_id: "0192f000-0000-7000-8000-000000000001".into(),
        record_type: "birth_certificate".into(),
        subject_id: "51505151234567".into(),
        record_key: "I-TN 0412345".into(),
        version: 1,
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/govbus.records.v1.BirthCertificate".into(),
            value: prost::Message::encode_to_vec(&govbus_proto::records::BirthCertificate {
                certificate_number: "I-TN 0412345".into(),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    signer.sign(&mut record).unwrap();
    let ca = material.ca_der().to_vec();
    govbus_security::verify(&record, &ca).unwrap();
    record.signature.as_mut().unwrap().certificate = der(&tls.cert).into();
    assert_eq!(
        govbus_security::verify(&record, &ca),
        Err(VerifyError::NotSigningKey)
    );
}

#[test]
fn transport_keys_load_as_pkcs8_or_sec1_and_must_match_their_certificate() {
    govbus_security::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    pki::init_dir(dir.path(), &[id(FHDY), id(PORTAL)]).unwrap();
    let fhdy = pki::settings_in(dir.path(), &id(FHDY));
    let portal = pki::settings_in(dir.path(), &id(PORTAL));
    let swapped = TlsSettings {
        key: portal.key.clone(),
        ..fhdy.clone()
    };
    match TlsMaterial::load(&swapped) {
        Err(TlsError::Key { path, source }) => {
            assert_eq!(path, portal.key);
            assert!(source.to_string().contains("does not belong"), "{source}");
        }
        other => panic!("a key of another certificate: {other:?}"),
    }
    // The same key as SEC1 (`BEGIN EC PRIVATE KEY`), as OpenSSL writes it.
    let sec1 = dir.path().join("sec1.key");
    let converted = std::process::Command::new("openssl")
        .args(["ec", "-in"])
        .arg(&fhdy.key)
        .arg("-out")
        .arg(&sec1)
        .output()
        .expect("openssl runs");
    assert!(converted.status.success(), "{converted:?}");
    assert!(
        std::fs::read_to_string(&sec1)
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    TlsMaterial::load(&TlsSettings {
        key: sec1,
        ..fhdy.clone()
    })
    .expect("a SEC1 key loads");

    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key").unwrap();
    let error = TlsMaterial::load(&TlsSettings {
        key: garbage,
        ..fhdy.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("garbage.key") && error.contains("not a PEM private key"),
        "{error}"
    );
}

#[test]
fn a_folder_of_an_earlier_govbus_moves_aside_and_a_new_one_is_made() {
    // The CA of a folder written before transport and signing keys were
    // split: an Ed25519 CA (kept from that version in the CLI's fixtures).
    let old_ca = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../services/govbus/tests/fixtures/ed25519-era/ca.pem"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.pem"), &old_ca).unwrap();
    std::fs::write(certs.join("ca.key"), "the old CA's key").unwrap();

    let report = pki::init_dir(&certs, &[id(FHDY)]).unwrap();
    let retired = report.retired.expect("moved aside");
    assert_eq!(retired, dir.path().join("certs.ed25519"));
    assert_eq!(
        std::fs::read_to_string(retired.join("ca.pem")).unwrap(),
        old_ca,
        "the old CA is kept: evidence signed under it still verifies with it"
    );
    let new_ca = der(&certs.join("ca.pem"));
    let (_, ca) = X509Certificate::from_der(&new_ca).unwrap();
    assert_eq!(
        ca.public_key().algorithm.algorithm,
        OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    assert_eq!(report.created, vec![id(FHDY)]);

    // A second old folder does not overwrite the first one moved aside.
    let report = {
        std::fs::remove_dir_all(&certs).unwrap();
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::write(certs.join("ca.pem"), &old_ca).unwrap();
        std::fs::write(certs.join("ca.key"), "the old CA's key").unwrap();
        pki::init_dir(&certs, &[id(FHDY)]).unwrap()
    };
    assert_eq!(report.retired, Some(dir.path().join("certs.ed25519-2")));
}

/// An Ed25519 certificate from the bus CA, as rcgen makes it with `edit`.
fn ed25519_leaf(dir: &Path, edit: impl FnOnce(&mut rcgen::CertificateParams)) -> (String, String) {
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap(),
    )
    .unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(id(FHDY).uri().try_into().unwrap()));
    edit(&mut params);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn only_a_certificate_made_for_document_signing_signs_records() {
    let dir = tempfile::tempdir().unwrap();
    pki::init_dir(dir.path(), &[id(FHDY)]).unwrap();
    // The way before the split: one Ed25519 certificate for TLS and records.
    let (cert, key) = ed25519_leaf(dir.path(), |p| {
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
    });
    assert!(matches!(
        govbus_security::Signer::from_pem(&cert, &key),
        Err(govbus_security::SignError::NotSigningCertificate)
    ));
    // No extended key usage at all: good for any purpose, TLS included.
    let (cert, key) = ed25519_leaf(dir.path(), |_| {});
    assert!(matches!(
        govbus_security::Signer::from_pem(&cert, &key),
        Err(govbus_security::SignError::NotSigningCertificate)
    ));
    // Document signing beside a TLS purpose.
    let (cert, key) = ed25519_leaf(dir.path(), |p| {
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::Other(DOCUMENT_SIGNING.to_vec()),
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
    });
    assert!(matches!(
        govbus_security::Signer::from_pem(&cert, &key),
        Err(govbus_security::SignError::NotSigningCertificate)
    ));
    // Document signing alone.
    let (cert, key) = ed25519_leaf(dir.path(), |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::Other(
            DOCUMENT_SIGNING.to_vec(),
        )];
    });
    govbus_security::Signer::from_pem(&cert, &key).expect("a document signing certificate");
}

#[test]
fn a_signing_certificate_is_no_transport_certificate_and_its_absence_is_named() {
    govbus_security::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    pki::init_dir(dir.path(), &[id(FHDY)]).unwrap();
    let tls = pki::settings_in(dir.path(), &id(FHDY));
    let signing = SigningSettings::beside(&tls);
    let error = TlsMaterial::load(&TlsSettings {
        ca: tls.ca.clone(),
        cert: signing.cert.clone(),
        key: signing.key.clone(),
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("not made for TLS"), "{error}");

    std::fs::remove_file(&signing.key).unwrap();
    let error = TlsMaterial::load(&tls)
        .unwrap()
        .signer(&signing)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("civil-registry.fhdy.signing.key")
            && error.contains("`govbus certs init` writes them"),
        "{error}"
    );
}

#[test]
fn signing_files_sit_beside_the_transport_files_each_with_its_own_stem() {
    let tls = TlsSettings {
        ca: "/etc/govbus/ca.pem".into(),
        cert: "/etc/govbus/tls.crt".into(),
        key: "/run/secrets/tls.key".into(),
    };
    assert_eq!(
        SigningSettings::beside(&tls),
        SigningSettings {
            cert: "/etc/govbus/tls.signing.pem".into(),
            key: "/run/secrets/tls.signing.key".into(),
        }
    );
}

#[test]
fn a_folder_with_half_a_ca_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ca = "-----BEGIN CERTIFICATE-----\nnot ours\n-----END CERTIFICATE-----\n";
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    let error = pki::init_dir(dir.path(), &[id(FHDY)])
        .unwrap_err()
        .to_string();
    assert!(error.contains("no ca.key beside it"), "{error}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
        ca
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.key"), "a key").unwrap();
    let error = pki::init_dir(dir.path(), &[id(FHDY)])
        .unwrap_err()
        .to_string();
    assert!(error.contains("no ca.pem beside it"), "{error}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.key")).unwrap(),
        "a key"
    );
}
