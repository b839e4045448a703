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
