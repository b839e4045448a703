//! The broker or an adapter as a process of its own, for tests that kill
//! processes. Does what `govbus-broker` and `govbus-adapter` do, from the
//! configuration file named by `GOVBUS_CONFIG`.

use anyhow::{Context, bail};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    govbus_security::install_crypto_provider();
    let file = std::env::var_os("GOVBUS_CONFIG").context("GOVBUS_CONFIG is required")?;
    let file = std::path::PathBuf::from(file);
    let shutdown = govbus_server::shutdown_on_signal();
    match std::env::args().nth(1).as_deref() {
        Some("broker") => {
            govbus_telemetry::init("govbus-broker");
            let config: govbus_broker::BrokerConfig = govbus_core::config::load(Some(&file))?;
            let broker = govbus_broker::Broker::build(config).await?;
            eprintln!("listening on {}", broker.local_addr());
            broker.run(shutdown).await?;
        }
        Some("adapter") => {
            govbus_telemetry::init("govbus-adapter");
            let config: govbus_adapter::AdapterConfig = govbus_core::config::load(Some(&file))?;
            let adapter = govbus_adapter::Adapter::build(config).await?;
            eprintln!("listening on {}", adapter.local_addr());
            adapter.run(shutdown).await?;
        }
        _ => bail!("usage: govbus-service broker|adapter"),
    }
    govbus_telemetry::shutdown();
    Ok(())
}
