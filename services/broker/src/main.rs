//! `govbus-broker`: the once-only broker. Configuration from the file named
//! by `--config` (or `GOVBUS_CONFIG`) and `GOVBUS_…` environment variables.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use govbus_broker::{Broker, BrokerConfig};

/// mimalloc, not glibc's malloc: the bus allocates and frees on many threads
/// at once (docs/PROFILING.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "govbus once-only broker")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "GOVBUS_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    govbus_telemetry::init("govbus-broker");
    govbus_security::install_crypto_provider();
    let args = Args::parse();
    let config: BrokerConfig = govbus_core::config::load(args.config.as_deref())?;
    let broker = Broker::build(config)
        .await
        .context("broker did not start")?;
    let outcome = broker
        .run(govbus_server::shutdown_on_signal())
        .await
        .context("broker failed");
    govbus_telemetry::shutdown();
    outcome
}
