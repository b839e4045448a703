//! Invalid configuration stops the broker binary at start-up with a message
//! that says what is wrong.

use std::process::Command;

/// Paths for the tls section; validation names a missing section before
/// any file is read.
const TLS: [(&str, &str); 3] = [
    ("GOVBUS_TLS__CA", "/nonexistent/ca.pem"),
    ("GOVBUS_TLS__CERT", "/nonexistent/broker.pem"),
    ("GOVBUS_TLS__KEY", "/nonexistent/broker.key"),
];

fn broker(envs: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_govbus-broker"))
        .envs(TLS.iter().copied())
        .envs(envs.iter().copied())
        .env("RUST_LOG", "error")
        .output()
        .expect("broker binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_configuration_is_refused_with_a_reason() {
    let (ok, err) = broker(&[
        ("GOVBUS_DATABASE_URL", "mysql://db/showcase"),
        ("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("database_url") && err.contains("sqlite:// or postgres://"),
        "{err}"
    );

    let (ok, err) = broker(&[("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", "")]);
    assert!(!ok);
    assert!(err.contains("kafka.bootstrap_servers is empty"), "{err}");

    let (ok, err) = broker(&[("GOVBUS_LISTEN", "not-an-address")]);
    assert!(!ok);
    assert!(
        err.contains("invalid socket address syntax for key \"LISTEN\""),
        "{err}"
    );

    let (ok, err) = broker(&[("GOVBUS_CONFIG", "/nonexistent/broker.toml")]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/broker.toml does not exist"),
        "{err}"
    );

    // Everything else valid: the certificate files are read, and are missing.
    let (ok, err) = broker(&[("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn tls_is_required() {
    let out = Command::new(env!("CARGO_BIN_EXE_govbus-broker"))
        .env("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        .env("RUST_LOG", "error")
        .output()
        .expect("broker binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls (ca, cert, key) is required"), "{err}");
}
