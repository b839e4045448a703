//! `govbus`: run the whole bus on one machine, or ask a running one.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use govbus_cli::{
    demo::{Demo, DemoConfig, demo_identities},
    inspect::{self, Connection},
};
use govbus_proto::v1::{ConsentScope, GetEvidenceRequest};
use govbus_security::{Identity, pki};

/// mimalloc, not glibc's malloc: the bus allocates and frees on many threads
/// at once (docs/PROFILING.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "govbus: interagency data-exchange bus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a command connects and whose certificate it presents.
#[derive(Args)]
struct Client {
    /// Address of the broker.
    #[arg(long, default_value = "127.0.0.1:50051")]
    broker: String,
    /// Folder made by `govbus certs init`.
    #[arg(long, default_value = "var/certs")]
    certs: PathBuf,
    /// Whose certificate to present, as <agency>.<system> in the certs folder.
    #[arg(long = "as", default_value = "egov.portal")]
    as_system: String,
}

impl Client {
    fn connection(&self) -> Connection {
        Connection::from_certs_dir(self.broker.clone(), &self.certs, &self.as_system)
    }
}

#[derive(Args)]
struct Scope {
    #[arg(long)]
    subject: String,
    /// The consuming system, agency/<agency>/system/<system>.
    #[arg(long)]
    consumer: String,
    #[arg(long = "type")]
    record_type: String,
    #[arg(long)]
    purpose: String,
}

impl From<Scope> for ConsentScope {
    fn from(s: Scope) -> Self {
        ConsentScope {
            subject_id: s.subject,
            consumer: s.consumer,
            record_type: s.record_type,
            purpose: s.purpose,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start the embedded cluster, the broker and two demo agencies.
    Run {
        /// TOML configuration file (see README); `GOVBUS_…` variables override it.
        #[arg(long, env = "GOVBUS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Development certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Ask the broker for evidence about a subject and print it as JSON.
    Evidence {
        #[command(flatten)]
        client: Client,
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
    /// Check the signatures of a saved evidence answer offline, against the bus CA.
    Verify {
        /// The JSON printed by `govbus evidence` (or grpcurl's GetEvidence answer).
        evidence: PathBuf,
        #[arg(long, default_value = "var/certs/ca.pem")]
        ca: PathBuf,
    },
    /// List the record types the broker knows.
    RecordTypes {
        #[command(flatten)]
        client: Client,
    },
    /// Grant or revoke a citizen's consent (as the portal).
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Operate on showcases.
    #[command(subcommand)]
    Showcase(ShowcaseCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Health of the services, messages per topic, dead letters.
    Status {
        #[command(flatten)]
        client: Client,
        /// Adapter addresses to check too (repeatable).
        #[arg(long = "adapter")]
        adapters: Vec<String>,
        /// Kafka bootstrap servers, to count messages per topic.
        #[arg(long)]
        kafka: Option<String>,
        /// The broker's consumer group, whose lag to report.
        #[arg(long, default_value = "govbus-broker")]
        group: String,
    },
    /// Records the broker refused, with the reason.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// What happened to a request: its audit entries and trace id.
    TraceOf {
        request_id: String,
        /// The database holding the audit trail (the broker's
        /// `audit_database_url`, else its showcase database).
        #[arg(long)]
        database: String,
    },
    /// Write a demo agency's synthetic records to an outbox table in its
    /// database (for deployments that run the adapters separately).
    DemoSeed {
        /// civil-registry or interior.
        #[arg(long)]
        agency: String,
        /// The agency database, sqlite://… or postgres://….
        #[arg(long)]
        database: String,
        #[arg(long, default_value_t = 1000)]
        citizens: usize,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// One line per dead letter.
    List {
        #[arg(long)]
        kafka: String,
    },
    /// One dead letter in full, by partition and offset.
    Show {
        #[arg(long)]
        kafka: String,
        /// partition:offset, as `dlq list` prints it.
        at: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk every hash chain and check the signed checkpoints; report the
    /// first entry that was altered, inserted or deleted.
    Verify {
        /// The showcase database holding the trail.
        #[arg(long)]
        database: String,
        #[arg(long, default_value = "var/certs/ca.pem")]
        ca: PathBuf,
    },
}

#[derive(Subcommand)]
enum ShowcaseCommand {
    /// Rebuild a showcase from the record topics alone, into a new database.
    Rebuild {
        /// The broker's configuration (Kafka settings and the CA).
        #[arg(long, env = "GOVBUS_CONFIG")]
        config: Option<PathBuf>,
        /// Database to build into, e.g. sqlite://rebuilt.db.
        #[arg(long)]
        into: String,
    },
    /// Print a content digest of a showcase (equal for equal contents).
    Digest {
        #[arg(long)]
        database: String,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create the CA and a certificate for every demo system (and any
    /// --identity), keeping those that exist.
    Init {
        #[arg(long, default_value = "var/certs")]
        dir: PathBuf,
        /// More systems, as agency/<agency>/system/<system> (repeatable).
        #[arg(long = "identity")]
        identities: Vec<Identity>,
        /// A DNS name that new transport certificates carry besides
        /// localhost: NAME for every one, or IDENTITY=NAME for one, e.g.
        /// agency/govbus/system/broker=govbus-broker.govbus.svc (repeatable).
        #[arg(long = "dns", value_parser = parse_dns_name)]
        dns_names: Vec<(Option<Identity>, String)>,
    },
}

#[derive(Subcommand)]
enum ConsentCommand {
    Grant {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        scope: Scope,
        /// Days until the consent expires.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    Revoke {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        scope: Scope,
    },
}

/// `NAME` or `IDENTITY=NAME` of `govbus certs init --dns`.
fn parse_dns_name(value: &str) -> Result<(Option<Identity>, String), String> {
    let (identity, name) = match value.split_once('=') {
        Some((identity, name)) => (Some(identity.parse().map_err(|e| format!("{e}"))?), name),
        None => (None, value),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        return Err(format!("{name:?} is not a DNS name"));
    }
    Ok((identity, name.to_ascii_lowercase()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    govbus_security::install_crypto_provider();
    match Cli::parse().command {
        Command::Run { config } => run(config).await,
        Command::Certs(CertsCommand::Init {
            dir,
            identities,
            dns_names,
        }) => {
            let mut all = demo_identities();
            all.extend(identities);
            if let Some((Some(unknown), _)) = dns_names
                .iter()
                .find(|(of, _)| of.as_ref().is_some_and(|of| !all.contains(of)))
            {
                anyhow::bail!(
                    "--dns names {unknown}, which is neither a demo system nor given with --identity"
                );
            }
            let report = pki::init_dir_with(&dir, &all, &pki::InitOptions { dns_names })?;
            if let Some(retired) = &report.retired {
                println!(
                    "moved: {} → {} (Ed25519 certificates of an earlier govbus; its ca.pem still verifies evidence signed under it)",
                    dir.display(),
                    retired.display()
                );
            }
            println!("ca: {}", dir.join("ca.pem").display());
            for identity in &all {
                let tls = pki::settings_in(&dir, identity);
                let signing = pki::signing_in(&dir, identity);
                // Names given now go into new certificates only.
                let state = if report.created.contains(identity) {
                    "created"
                } else {
                    "kept; delete its files to reissue it with new --dns names"
                };
                println!(
                    "{identity}: {} (TLS), {} (record signing) ({state})",
                    tls.cert.display(),
                    signing.cert.display()
                );
            }
            Ok(())
        }
        Command::Evidence {
            client,
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
            println!(
                "{}",
                inspect::evidence(&client.connection(), request).await?
            );
            Ok(())
        }
        Command::Verify { evidence, ca } => {
            for line in inspect::verify_file(&evidence, &ca)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::RecordTypes { client } => {
            println!("{}", inspect::record_types(&client.connection()).await?);
            Ok(())
        }
        Command::Consent(ConsentCommand::Grant {
            client,
            scope,
            days,
        }) => {
            println!(
                "{}",
                inspect::grant_consent(&client.connection(), scope.into(), days).await?
            );
            Ok(())
        }
        Command::Showcase(ShowcaseCommand::Rebuild { config, into }) => {
            govbus_telemetry::init("govbus");
            let config: govbus_broker::BrokerConfig = govbus_core::config::load(config.as_deref())?;
            let report = govbus_broker::rebuild_showcase(&config, &into).await?;
            println!(
                "rebuilt {into} from {} partitions: {} messages, {} applied, {} older versions, {} refused",
                report.partitions, report.messages, report.applied, report.stale, report.refused
            );
            let digest = govbus_store::Showcase::open(&into).await?.digest().await?;
            println!("{digest:?}");
            Ok(())
        }
        Command::Status {
            client,
            adapters,
            kafka,
            group,
        } => {
            let mut services = vec![("broker".to_string(), client.connection())];
            for address in adapters {
                services.push((
                    "adapter".to_string(),
                    Connection::from_certs_dir(address, &client.certs, &client.as_system),
                ));
            }
            for line in govbus_cli::operate::status(&services, kafka.as_deref(), &group).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Dlq(DlqCommand::List { kafka }) => {
            let letters = govbus_cli::operate::dead_letters(&kafka)?;
            for l in &letters {
                println!(
                    "{}:{} from {} key {}: {}",
                    l.partition, l.offset, l.source, l.key, l.reason
                );
            }
            println!("{} dead letters", letters.len());
            Ok(())
        }
        Command::Dlq(DlqCommand::Show { kafka, at }) => {
            let (partition, offset) = at
                .split_once(':')
                .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)))
                .context("give the dead letter as partition:offset")?;
            let letter = govbus_cli::operate::dead_letters(&kafka)?
                .into_iter()
                .find(|l| l.partition == partition && l.offset == offset)
                .with_context(|| format!("no dead letter at {at}"))?;
            println!("{letter:#?}");
            Ok(())
        }
        Command::TraceOf {
            request_id,
            database,
        } => {
            let lines = govbus_cli::operate::trace_of(&database, &request_id).await?;
            if lines.is_empty() {
                anyhow::bail!("no audit entry has request id {request_id:?}");
            }
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { database, ca }) => {
            let checked = inspect::verify_audit(&database, &ca).await?;
            println!(
                "audit trail intact: {checked} entries, every checkpoint signed by the bus CA's certificates"
            );
            Ok(())
        }
        Command::DemoSeed {
            agency,
            database,
            citizens,
            seed,
        } => {
            let rows = govbus_cli::demo::agency_rows(&agency, seed, citizens)?;
            govbus_cli::demo::seed_outbox(&database, &rows).await?;
            println!("{} outbox rows written for {agency}", rows.len());
            Ok(())
        }
        Command::Showcase(ShowcaseCommand::Digest { database }) => {
            let digest = govbus_store::Showcase::open(&database)
                .await?
                .digest()
                .await?;
            println!(
                "current: {} records, {}",
                digest.current_records, digest.current
            );
            println!(
                "history: {} records, {}",
                digest.history_records, digest.history
            );
            Ok(())
        }
        Command::Consent(ConsentCommand::Revoke { client, scope }) => {
            println!(
                "{}",
                inspect::revoke_consent(&client.connection(), scope.into()).await?
            );
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
    let certs = demo.certs_dir().display().to_string();

    println!("govbus is running; Ctrl-C stops it.\n");
    for (name, address) in &endpoints {
        println!("{name}: {address}");
    }
    println!(
        "data: {} (recreated at each start)",
        demo.data_dir().display()
    );
    println!(
        "policy: {} (edit it; the broker reloads it)",
        demo.policy_file().display()
    );
    println!(
        "certificates: {certs} (mTLS everywhere; the portal's client certificate is {certs}/egov.portal.pem, key {certs}/egov.portal.key, CA {certs}/ca.pem)"
    );
    println!("\nTry it:");
    println!(
        "  cargo run -q -p govbus-cli -- evidence --broker {broker} --subject {subject} --type marriage_certificate --purpose demo > evidence.json"
    );
    println!("  cargo run -q -p govbus-cli -- verify evidence.json --ca {certs}/ca.pem");
    println!(
        "  grpcurl -cacert {certs}/ca.pem -cert {certs}/egov.portal.pem -key {certs}/egov.portal.key -d '{{\"subject_id\":\"{subject}\",\"record_type\":\"birth_certificate\",\"purpose\":\"demo\"}}' {broker} govbus.v1.OnceOnly/GetEvidence"
    );
    println!(
        "  kcat -b {kafka} -C -e -t govbus.records.birth_certificate -c 3 -f '%k %p:%o %T\\n'"
    );
    if let Some((renamed, surname)) = demo.renamed_subject() {
        println!(
            "\nThe interior ministry subscribes to marriages (its inbox: {}/interior.db, table govbus_inbox) and registers new surnames; citizen {renamed} becomes {surname}:",
            demo.data_dir().display()
        );
        println!(
            "  cargo run -q -p govbus-cli -- consent grant --broker {broker} --subject {renamed} --consumer agency/egov/system/portal --type address_registration --purpose demo"
        );
        println!(
            "  cargo run -q -p govbus-cli -- evidence --broker {broker} --subject {renamed} --type address_registration --purpose demo"
        );
    }
    println!(
        "(README.md shows more: publishing through an adapter, subscribing, consents, the tax committee's narrower grant.)\n"
    );

    let outcome = demo.run(govbus_server::shutdown_on_signal()).await;
    govbus_telemetry::shutdown();
    outcome
}
