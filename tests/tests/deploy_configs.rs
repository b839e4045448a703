//! The example configurations under deploy/ load and validate.

use std::path::Path;

use govbus_adapter::AdapterConfig;
use govbus_broker::BrokerConfig;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/config")
        .join(file)
}

#[test]
fn deploy_configurations_are_valid() {
    let broker: BrokerConfig = govbus_core::config::load(Some(&deploy("broker.toml"))).unwrap();
    broker.validate().unwrap();
    assert!(broker.database_url.starts_with("postgres://"));
    let catalog = govbus_core::Catalog::builtin();
    govbus_broker::Policy::load(&deploy("policy.toml"), &catalog).unwrap();
    for file in ["civil-registry.toml", "interior.toml"] {
        let adapter: AdapterConfig = govbus_core::config::load(Some(&deploy(file))).unwrap();
        adapter.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let interior: AdapterConfig =
        govbus_core::config::load(Some(&deploy("interior.toml"))).unwrap();
    let inbox = interior.inbox.expect("the interior ministry has an inbox");
    assert_eq!(inbox.record_types, ["marriage_certificate"]);
}

/// Each deployed service gets its own certificates and keys: no volume or
/// Secret shared by all of them, no key made readable to everyone.
#[test]
fn each_service_mounts_only_its_own_keys() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let compose = std::fs::read_to_string(deploy.join("docker-compose.yml")).unwrap();
    assert!(!compose.contains("a+r"), "no key is made world-readable");
    for service in ["broker", "civil-registry", "interior"] {
        let block = compose
            .split(&format!("\n  {service}:\n"))
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap_or_else(|| panic!("compose service {service}"));
        let mounts: Vec<&str> = block
            .lines()
            .filter(|line| line.trim_start().starts_with("- ") && line.contains(":/"))
            .map(str::trim)
            .collect();
        assert_eq!(
            mounts,
            [
                "- ./config:/etc/govbus/config:ro".to_string(),
                format!("- certs-{service}:/certs:ro"),
            ],
            "{service} mounts its own certificates only"
        );
    }
    for (file, secrets) in [
        ("k8s/broker.yaml", &["govbus-broker-certs"][..]),
        (
            "k8s/adapters.yaml",
            &["adapter-civil-registry-certs", "adapter-interior-certs"][..],
        ),
    ] {
        let manifest = std::fs::read_to_string(deploy.join(file)).unwrap();
        let named: Vec<&str> = manifest
            .split("secretName: ")
            .skip(1)
            .filter_map(|rest| rest.split(',').next())
            .collect();
        assert_eq!(named, secrets, "{file}: a Secret per Deployment");
        assert!(manifest.contains("fsGroup: 10001"), "{file}");
    }
}
