//! `govbus run`: the whole bus on one machine with no set-up — an embedded
//! Kafka-protocol cluster, the broker, and two demo agencies (civil registry
//! and interior ministry), each with its own adapter and its own SQLite
//! database of synthetic citizens published through its outbox table. The
//! interior ministry also subscribes to the civil registry's marriages
//! (inbox table) and registers the new surnames they bring.

mod interior_system;
mod names;
pub mod population;
pub mod records;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use govbus_adapter::{Adapter, AdapterConfig, InboxConfig, OutboxConfig, outbox_table_ddl};
use govbus_broker::{Broker, BrokerConfig};
use govbus_core::Catalog;
use govbus_kafka::{EmbeddedCluster, KafkaSettings};
use govbus_security::{Identity, pki};
use govbus_store::{Database, Showcase};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use prost::Message;
use records::OutboxRow;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Where the demo keeps its SQLite databases; recreated at each start.
    pub data_dir: PathBuf,
    /// The development CA and every demo system's certificate, created on
    /// first start and kept.
    pub certs_dir: PathBuf,
    /// Size of the synthetic population.
    pub citizens: usize,
    /// Same seed, same citizens.
    pub seed: u64,
    pub broker_listen: SocketAddr,
    pub civil_registry_listen: SocketAddr,
    pub interior_listen: SocketAddr,
    /// Prometheus metrics of the whole demo process.
    pub metrics_listen: SocketAddr,
    /// Leave `bootstrap_servers` empty for the embedded cluster.
    pub kafka: KafkaSettings,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("var/demo"),
            certs_dir: PathBuf::from("var/certs"),
            citizens: 1000,
            seed: 2026,
            broker_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            civil_registry_listen: SocketAddr::from(([127, 0, 0, 1], 50061)),
            interior_listen: SocketAddr::from(([127, 0, 0, 1], 50062)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            kafka: KafkaSettings::default(),
        }
    }
}

pub const BROKER: &str = "agency/govbus/system/broker";
pub const CIVIL_REGISTRY: &str = "agency/civil-registry/system/fhdy";
pub const INTERIOR: &str = "agency/interior/system/address-bureau";
pub const PORTAL: &str = "agency/egov/system/portal";
pub const TAX: &str = "agency/tax/system/soliq";

/// Every system of the demo, which `govbus certs init` issues certificates for.
pub fn demo_identities() -> Vec<Identity> {
    [BROKER, CIVIL_REGISTRY, INTERIOR, PORTAL, TAX]
        .iter()
        .map(|s| s.parse().expect("demo identities are well-formed"))
        .collect()
}

/// The demo's access policy: the one documented in deploy/config, written
/// to the data folder at first start so that it can be edited live.
const DEMO_POLICY: &str = include_str!("../../../../deploy/config/policy.toml");

/// The synthetic rows of one demo agency (`civil-registry` or `interior`).
pub fn agency_rows(agency: &str, seed: u64, citizens: usize) -> Result<Vec<OutboxRow>> {
    let people = population::citizens(seed, citizens);
    match agency {
        "civil-registry" => {
            let couples = population::marriages(seed, &people);
            Ok(records::civil_registry(seed, &people, &couples))
        }
        "interior" => Ok(records::interior(seed, &people)),
        other => bail!("no demo data for agency {other:?}; choose civil-registry or interior"),
    }
}

/// The demo's files; nothing else in `data_dir` is touched.
const DEMO_DATABASES: &[&str] = &[
    "showcase.db",
    "audit.db",
    "civil-registry.db",
    "interior.db",
];

/// A built demo: cluster up, databases seeded, services listening.
pub struct Demo {
    certs_dir: PathBuf,
    policy_file: PathBuf,
    cluster: Option<EmbeddedCluster>,
    kafka: String,
    broker: Broker,
    adapters: Vec<(&'static str, Adapter)>,
    data_dir: PathBuf,
    example_subject: String,
    renamed_subject: Option<(String, String)>,
    expected_records: i64,
    interior_system: interior_system::InteriorSystem,
}

impl Demo {
    pub async fn build(config: DemoConfig) -> Result<Self> {
        if config.citizens == 0 || config.citizens > 1_000_000 {
            bail!("invalid configuration: citizens must be between 1 and 1000000");
        }
        let catalog = Catalog::builtin();
        let mut kafka = config.kafka.clone();
        let cluster = if kafka.bootstrap_servers.is_empty() {
            let topics = govbus_kafka::with_system_topics(catalog.topics());
            let cluster = EmbeddedCluster::start(1, &topics, 3)?;
            kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
            kafka.manage_topics = false;
            Some(cluster)
        } else {
            None
        };

        let civil = agency_rows("civil-registry", config.seed, config.citizens)?;
        let interior = agency_rows("interior", config.seed, config.citizens)?;
        let expected_records = current_records(&civil) + current_records(&interior);
        // A married citizen (the first spouse on record), else anyone born.
        let example_subject = civil
            .iter()
            .find(|r| r.record_type == "marriage_certificate")
            .or_else(|| civil.first())
            .map(|r| r.subject_id.clone())
            .unwrap_or_default();
        let renamed_subject = civil
            .iter()
            .filter(|r| r.record_type == "marriage_certificate" && r.status == "active")
            .find_map(|r| {
                let marriage =
                    govbus_proto::records::MarriageCertificate::decode(r.payload.as_slice())
                        .ok()?;
                interior_system::surname_after(&marriage, &r.subject_id)
                    .map(|surname| (r.subject_id.clone(), surname))
            });

        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        for name in DEMO_DATABASES {
            for suffix in ["", "-wal", "-shm"] {
                let path = config.data_dir.join(format!("{name}{suffix}"));
                if path.exists() {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("cannot remove {}", path.display()))?;
                }
            }
        }
        let url = |name: &str| format!("sqlite://{}", config.data_dir.join(name).display());
        let report = pki::init_dir(&config.certs_dir, &demo_identities())
            .context("cannot create the development certificates")?;
        if let Some(retired) = &report.retired {
            warn!(
                dir = %config.certs_dir.display(),
                moved_to = %retired.display(),
                "development certificates of an earlier govbus (Ed25519 for TLS) moved aside; new ones made"
            );
        }
        if !report.created.is_empty() {
            info!(dir = %config.certs_dir.display(), systems = report.created.len(), "development certificates created");
        }
        let tls = |identity: &str| {
            pki::settings_in(&config.certs_dir, &identity.parse().expect("demo identity"))
        };
        let policy_file = config.data_dir.join("policy.toml");
        if !policy_file.exists() {
            std::fs::write(&policy_file, DEMO_POLICY)
                .with_context(|| format!("cannot write {}", policy_file.display()))?;
        }
        seed_outbox(&url("civil-registry.db"), &civil).await?;
        seed_outbox(&url("interior.db"), &interior).await?;

        let broker = Broker::build(BrokerConfig {
            tls: Some(tls(BROKER)),
            policy_file: Some(policy_file.clone()),
            metrics_listen: Some(config.metrics_listen),
            listen: config.broker_listen,
            database_url: url("showcase.db"),
            // SQLite: the audit trail in a file of its own (see README).
            audit_database_url: Some(url("audit.db")),
            kafka: kafka.clone(),
            ..BrokerConfig::default()
        })
        .await
        .context("broker did not start")?;
        let mut adapters = Vec::new();
        for (name, identity, listen) in [
            (
                "civil-registry",
                CIVIL_REGISTRY,
                config.civil_registry_listen,
            ),
            ("interior", INTERIOR, config.interior_listen),
        ] {
            // The interior ministry learns of marriages through its inbox.
            let inbox = (identity == INTERIOR).then(|| InboxConfig {
                database_url: url(&format!("{name}.db")),
                record_types: vec!["marriage_certificate".into()],
                ..InboxConfig::default()
            });
            let adapter = Adapter::build(AdapterConfig {
                tls: Some(tls(identity)),
                listen,
                kafka: kafka.clone(),
                outbox: Some(OutboxConfig {
                    database_url: url(&format!("{name}.db")),
                    ..OutboxConfig::default()
                }),
                policy_file: Some(policy_file.clone()),
                inbox,
                ..AdapterConfig::default()
            })
            .await
            .with_context(|| format!("{name} adapter did not start"))?;
            adapters.push((name, adapter));
        }
        let interior_system = interior_system::InteriorSystem::open(&url("interior.db")).await?;
        Ok(Self {
            certs_dir: config.certs_dir,
            policy_file,
            cluster,
            kafka: kafka.bootstrap_servers,
            broker,
            adapters,
            data_dir: config.data_dir,
            example_subject,
            renamed_subject,
            expected_records,
            interior_system,
        })
    }

    /// `(name, address)` of everything a person can connect to.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        let mut endpoints = vec![
            ("kafka".to_string(), self.kafka.clone()),
            ("broker".to_string(), self.broker.local_addr().to_string()),
        ];
        for (name, adapter) in &self.adapters {
            endpoints.push((name.to_string(), adapter.local_addr().to_string()));
        }
        if let Some(metrics) = self.broker.metrics_addr() {
            endpoints.push(("metrics".to_string(), format!("http://{metrics}/metrics")));
        }
        endpoints
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.data_dir
    }

    pub fn certs_dir(&self) -> &PathBuf {
        &self.certs_dir
    }

    pub fn policy_file(&self) -> &PathBuf {
        &self.policy_file
    }

    /// A citizen with a birth, a marriage and an address on record.
    pub fn example_subject(&self) -> &str {
        &self.example_subject
    }

    /// A married citizen whose new surname the interior ministry registers
    /// (learned through its subscription), and that surname.
    pub fn renamed_subject(&self) -> Option<(&str, &str)> {
        self.renamed_subject
            .as_ref()
            .map(|(subject, surname)| (subject.as_str(), surname.as_str()))
    }

    /// Serves until `shutdown`; then stops the adapters (flushing their
    /// producers), the broker (committing its offsets) and the cluster.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let showcase = self.broker.showcase().clone();
        let expected = self.expected_records;
        let progress = tokio::spawn(report_loaded(showcase, expected, shutdown.child_token()));

        let adapters_stop = CancellationToken::new();
        let broker_stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for (name, adapter) in self.adapters {
            let stop = adapters_stop.clone();
            tasks.push(tokio::spawn(async move {
                adapter
                    .run(stop)
                    .await
                    .with_context(|| format!("{name} adapter failed"))
            }));
        }
        let broker = tokio::spawn(self.broker.run(broker_stop.clone()));
        let interior_system = tokio::spawn(self.interior_system.run(adapters_stop.clone()));

        shutdown.cancelled().await;
        adapters_stop.cancel();
        interior_system.await?;
        for task in tasks {
            task.await??;
        }
        broker_stop.cancel();
        broker.await?.context("broker failed")?;
        progress.abort();
        drop(self.cluster);
        Ok(())
    }
}

/// How many records the showcase will hold once every row is ingested:
/// one per (type, subject, key), whatever the number of versions.
fn current_records(rows: &[OutboxRow]) -> i64 {
    let keys: std::collections::HashSet<_> = rows
        .iter()
        .map(|r| (r.record_type, &r.subject_id, &r.record_key))
        .collect();
    keys.len() as i64
}

/// Creates the outbox table in an agency database and writes `rows` to it.
pub async fn seed_outbox(url: &str, rows: &[OutboxRow]) -> Result<()> {
    let db = Database::connect(url).await?;
    let ddl = outbox_table_ddl("govbus_outbox", db.backend);
    sqlx::query(sqlx::AssertSqlSafe(ddl))
        .execute(&db.pool)
        .await?;
    let mut tx = db.pool.begin().await?;
    for row in rows {
        sqlx::query(
            "INSERT INTO govbus_outbox (record_type, subject_id, record_key, version, status, issued_at_unix, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(row.record_type)
        .bind(row.subject_id.as_str())
        .bind(row.record_key.as_str())
        .bind(row.version)
        .bind(row.status)
        .bind(row.issued_at_unix)
        .bind(row.payload.as_slice())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    db.close().await;
    Ok(())
}

async fn report_loaded(showcase: Showcase, expected: i64, stop: CancellationToken) {
    let started = tokio::time::Instant::now();
    while !stop.is_cancelled() {
        match showcase.count().await {
            Ok(n) if n >= expected => {
                info!(
                    records = n,
                    seconds = started.elapsed().as_secs_f32(),
                    "demo data is in the showcase"
                );
                return;
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot count showcase records"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
