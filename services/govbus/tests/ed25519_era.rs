//! Evidence signed before transport and signing keys were split — an
//! adapter signing with its Ed25519 TLS key, under an Ed25519 CA — still
//! verifies with `govbus verify` and the CA it was issued under. The
//! fixtures are answers a govbus of that time gave (the portal's whole
//! record, and the tax committee's minimised one) with that CA.

use std::{path::PathBuf, process::Command};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ed25519-era")
}

fn verify(evidence: &std::path::Path, ca: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .arg("verify")
        .arg(evidence)
        .arg("--ca")
        .arg(ca)
        .output()
        .expect("govbus runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn evidence_signed_the_old_way_still_verifies() {
    for answer in ["birth-portal.json", "birth-tax-minimised.json"] {
        let (ok, out) = verify(&fixtures().join(answer), &fixtures().join("ca.pem"));
        assert!(ok, "{answer}: {out}");
        assert!(
            out.starts_with("ok: record 00042f2a-c000-76ee-bfc9-7083ed810f1e (birth_certificate v1) signed by agency/civil-registry/system/fhdy with key c1f0f6a730eff26b"),
            "{answer}: {out}"
        );
    }
}

#[test]
fn old_evidence_tampered_with_or_checked_against_another_ca_fails() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(fixtures().join("birth-portal.json")).unwrap();
    let tampered = original.replacen(
        "\"recordKey\": \"I-FR 1791155\"",
        "\"recordKey\": \"I-FR 1791156\"",
        1,
    );
    assert_ne!(tampered, original, "the fixture names its record key");
    let tampered_file = dir.path().join("tampered.json");
    std::fs::write(&tampered_file, tampered).unwrap();
    let (ok, out) = verify(&tampered_file, &fixtures().join("ca.pem"));
    assert!(!ok && out.contains("content_hash does not match"), "{out}");

    // Today's CA (ECDSA) did not issue the old signer's certificate.
    let certs = dir.path().join("certs");
    govbus_security::pki::init_dir(&certs, &[]).unwrap();
    let (ok, out) = verify(&fixtures().join("birth-portal.json"), &certs.join("ca.pem"));
    assert!(
        !ok && out.contains("signer certificate was not issued by the bus CA"),
        "{out}"
    );
}
