//! `govbus`: run the whole bus on one machine, or ask a running one.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use govbus_cli::{
    demo::{Demo, DemoConfig},
    inspect,
};
use govbus_proto::v1::GetEvidenceRequest;

#[derive(Parser)]
#[command(version, about = "govbus: interagency data-exchange bus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the embedded cluster, the broker and two demo agencies.
    Run {
        /// TOML configuration file (see README); `GOVBUS_…` variables override it.
        #[arg(long, env = "GOVBUS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Ask the broker for evidence about a subject and print it as JSON.
    Evidence {
        #[arg(long, default_value = "127.0.0.1:50051")]
        broker: String,
        /// PINFL (14 digits) or STIR (9 digits).
        #[arg(long)]
        subject: String,
        /// Record type, e.g. birth_certificate.
        #[arg(long = "type")]
        record_type: String,
        /// Legal basis: the portal service or procedure code.
        #[arg(long)]
        purpose: String,
        /// Only these payload fields (repeatable).
        #[arg(long = "field")]
        fields: Vec<String>,
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// List the record types the broker knows.
    RecordTypes {
        #[arg(long, default_value = "127.0.0.1:50051")]
        broker: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run { config } => run(config).await,
        Command::Evidence {
            broker,
            subject,
            record_type,
            purpose,
            fields,
            request_id,
        } => {
            let request = GetEvidenceRequest {
                subject_id: subject,
                record_type,
                purpose,
                request_id,
                fields,
            };
            println!("{}", inspect::evidence(&broker, request).await?);
            Ok(())
        }
        Command::RecordTypes { broker } => {
            println!("{}", inspect::record_types(&broker).await?);
            Ok(())
        }
    }
}

async fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    govbus_telemetry::init("govbus");
    let config: DemoConfig = govbus_core::config::load(config.as_deref())?;
    let demo = Demo::build(config)
        .await
        .context("the demo did not start")?;
    let endpoints = demo.endpoints();
    let broker = &endpoints[1].1;
    let kafka = &endpoints[0].1;
    let subject = demo.example_subject();

    println!("govbus is running; Ctrl-C stops it.\n");
    for (name, address) in &endpoints {
        println!("{name}: {address}");
    }
    println!(
        "data: {} (recreated at each start)",
        demo.data_dir().display()
    );
    println!("\nTry it:");
    println!(
        "  cargo run -q -p govbus-cli -- evidence --broker {broker} --subject {subject} --type marriage_certificate --purpose demo"
    );
    println!(
        "  grpcurl -plaintext -d '{{\"subject_id\":\"{subject}\",\"record_type\":\"birth_certificate\",\"purpose\":\"demo\"}}' {broker} govbus.v1.OnceOnly/GetEvidence"
    );
    println!(
        "  kcat -b {kafka} -C -e -t govbus.records.birth_certificate -c 3 -f '%k %p:%o %T\\n'"
    );
    println!("(README.md shows how to publish through an adapter.)\n");

    demo.run(govbus_server::shutdown_on_signal()).await
}
