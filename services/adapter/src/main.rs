//! `govbus-adapter`: one agency's adapter. Configuration from the file named
//! by `--config` (or `GOVBUS_CONFIG`) and `GOVBUS_…` environment variables.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use govbus_adapter::{Adapter, AdapterConfig};

/// mimalloc, not glibc's malloc: the bus allocates and frees on many threads
/// at once (docs/PROFILING.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "govbus agency adapter")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "GOVBUS_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    govbus_telemetry::init("govbus-adapter");
    govbus_security::install_crypto_provider();
    let args = Args::parse();
    let config: AdapterConfig = govbus_core::config::load(args.config.as_deref())?;
    let adapter = Adapter::build(config)
        .await
        .context("adapter did not start")?;
    let shutdown = govbus_server::shutdown_on_signal();
    let outcome = adapter.run(shutdown).await.context("adapter failed");
    govbus_telemetry::shutdown();
    outcome
}
