//! Test kit: an embedded cluster, in-process services on port 0, record
//! builders and polling helpers. Everything real: rdkafka against the mock
//! cluster, sqlx against SQLite files in a temporary folder.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use govbus_adapter::{Adapter, AdapterConfig, OutboxConfig};
use govbus_broker::{Broker, BrokerConfig};
use govbus_core::Catalog;
use govbus_kafka::KafkaSettings;

mod kafka;
use govbus_proto::{
    records::{AddressRegistration, BirthCertificate, PersonName},
    v1::{
        GetEvidenceRequest, GetEvidenceResponse, PublishRequest, PublishResponse, Record,
        RecordStatus, agency_adapter_client::AgencyAdapterClient, once_only_client::OnceOnlyClient,
    },
};
use govbus_security::{Identity, TlsMaterial, TlsSettings, pki};
pub use kafka::{KafkaUnderTest, skip_timed_out_records_on_tansu, wants_apache, wants_tansu};
use prost_types::Timestamp;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const BROKER: &str = "agency/govbus/system/broker";
pub const FHDY: &str = "agency/civil-registry/system/fhdy";
pub const INTERIOR: &str = "agency/interior/system/address-bureau";
pub const PORTAL: &str = "agency/egov/system/portal";
/// The tax committee: granted two fields of birth certificates for one purpose.
pub const TAX: &str = "agency/tax/system/soliq";
/// The tax committee's auditor, who may list the committee's requests.
pub const TAX_AUDITOR: &str = "agency/tax/system/auditor";
/// A system with a valid certificate and no grant at all.
pub const STRANGER: &str = "agency/sport/system/registry";

pub fn id(identity: &str) -> Identity {
    identity.parse().expect("test identity")
}

/// The policy every test broker starts with.
pub const TEST_POLICY: &str = r#"
[consent]
managed_by = "agency/egov/system/portal"
required = ["address_registration"]

[[grant]]
consumer = "agency/egov/system/portal"
record_type = "birth_certificate"
purposes = ["test-service-001"]
fields = ["*"]

[[grant]]
consumer = "agency/egov/system/portal"
record_type = "marriage_certificate"
purposes = ["test-service-001"]
fields = ["*"]

[[grant]]
consumer = "agency/egov/system/portal"
record_type = "address_registration"
purposes = ["test-service-001"]
fields = ["*"]

[[grant]]
consumer = "agency/tax/system/soliq"
record_type = "birth_certificate"
purposes = ["tax-deduction-children"]
fields = ["child", "date_of_birth"]

[[subscription]]
consumer = "agency/interior/system/address-bureau"
record_type = "marriage_certificate"
fields = ["*"]

[[subscription]]
consumer = "agency/interior/system/address-bureau"
record_type = "birth_certificate"
fields = ["child"]

[[subscription]]
consumer = "agency/tax/system/soliq"
record_type = "birth_certificate"
fields = ["child", "date_of_birth"]
"#;

/// One embedded Kafka cluster, a CA with certificates for the test systems,
/// a policy file and a scratch folder; databases are SQLite files there, or —
/// when `TEST_POSTGRES_URL` names a server — PostgreSQL databases
/// created for this bus and dropped with it.
pub struct TestBus {
    pub cluster: KafkaUnderTest,
    pub dir: TempDir,
    postgres: Option<String>,
    run_id: String,
    created: std::sync::Mutex<Vec<String>>,
}

/// The PostgreSQL server for the test run, if any: an admin URL such as
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Runs one statement on the admin database, from a thread of its own so
/// that it can be called from sync code inside a runtime (and from Drop).
fn admin_exec(admin_url: &str, sql: String) -> Result<(), String> {
    let url = admin_url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let mut conn = sqlx::AnyConnection::connect(&url)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_string())?
}

fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    if query.is_empty() {
        format!("{base}/{database}")
    } else {
        format!("{base}/{database}?{query}")
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let Some(admin) = &self.postgres else { return };
        let created = self.created.lock().map(|c| c.clone()).unwrap_or_default();
        for database in created {
            let _ = admin_exec(
                admin,
                format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
            );
        }
    }
}

impl TestBus {
    pub fn start() -> Self {
        Self::start_with(postgres_admin_url())
    }

    /// A bus whose databases are on the PostgreSQL server of `postgres`
    /// (an admin URL), or SQLite files when `None`.
    pub fn start_with(postgres: Option<String>) -> Self {
        govbus_telemetry::init_for_tests("govbus-tests");
        govbus_security::install_crypto_provider();
        let topics = govbus_kafka::with_system_topics(Catalog::builtin().topics());
        let dir = tempfile::tempdir().expect("temporary folder");
        let bus = Self {
            cluster: KafkaUnderTest::start(dir.path(), &topics),
            dir,
            postgres,
            // The random tail of a v7 id: tests starting in the same millisecond differ.
            run_id: uuid::Uuid::now_v7().simple().to_string()[20..].to_string(),
            created: std::sync::Mutex::new(Vec::new()),
        };
        let identities: Vec<Identity> =
            [BROKER, FHDY, INTERIOR, PORTAL, TAX, TAX_AUDITOR, STRANGER]
                .into_iter()
                .map(id)
                .collect();
        pki::init_dir(&bus.certs_dir(), &identities).expect("test certificates");
        if bus.cluster.needs_topic_management() {
            // Create the topics before any test traffic, as govbus does at start.
            let settings = bus.kafka();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(govbus_kafka::ensure_topics(&settings, &topics))
            })
            .join()
            .expect("topic thread")
            .expect("topics created through the admin API");
        }
        std::fs::write(bus.policy_path(), TEST_POLICY).expect("test policy");
        bus
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    /// DER of the test CA, for offline signature checks.
    pub fn ca_der(&self) -> Vec<u8> {
        TlsMaterial::load(&self.tls(PORTAL))
            .expect("portal tls")
            .ca_der()
            .to_vec()
    }

    pub fn tls(&self, identity: &str) -> TlsSettings {
        pki::settings_in(&self.certs_dir(), &id(identity))
    }

    /// The record signer of `identity` (its signing certificate's key), as
    /// its adapter signs.
    pub fn signer(&self, identity: &str) -> govbus_security::Signer {
        let tls = self.tls(identity);
        TlsMaterial::load(&tls)
            .and_then(|material| material.signer(&govbus_security::SigningSettings::beside(&tls)))
            .expect("the test CA's signer")
    }

    pub fn kafka(&self) -> KafkaSettings {
        let mut settings = KafkaSettings {
            bootstrap_servers: self.cluster.bootstrap_servers(),
            manage_topics: self.cluster.needs_topic_management(),
            ..KafkaSettings::default()
        };
        // Tests stop and start consumers often; keep group joins quick.
        settings
            .consumer
            .insert("session.timeout.ms".into(), "6000".into());
        settings
            .consumer
            .insert("heartbeat.interval.ms".into(), "500".into());
        settings
    }

    /// A database for `name` (e.g. `showcase.db`): a SQLite file of this
    /// bus, or a fresh PostgreSQL database dropped with the bus.
    pub fn database_url(&self, name: &str) -> String {
        let Some(admin) = &self.postgres else {
            return format!("sqlite://{}", self.dir.path().join(name).display());
        };
        let stem: String = name
            .trim_end_matches(".db")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let database = format!("govbus_t_{}_{stem}", self.run_id);
        let mut created = self.created.lock().expect("database list");
        if !created.contains(&database) {
            admin_exec(admin, format!("CREATE DATABASE {database}"))
                .unwrap_or_else(|e| panic!("cannot create test database {database}: {e}"));
            created.push(database.clone());
        }
        with_database(admin, &database)
    }

    pub fn broker_config(&self, db: &str) -> BrokerConfig {
        BrokerConfig {
            tls: Some(self.tls(BROKER)),
            policy_file: Some(self.policy_path()),
            policy_reload_ms: 50,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: self.database_url(db),
            kafka: self.kafka(),
            ..BrokerConfig::default()
        }
    }

    /// The adapter of `identity` (e.g. [`FHDY`]).
    pub fn adapter_config(&self, identity: &str) -> AdapterConfig {
        AdapterConfig {
            tls: Some(self.tls(identity)),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka: self.kafka(),
            policy_file: Some(self.policy_path()),
            policy_reload_ms: 50,
            ..AdapterConfig::default()
        }
    }

    pub fn outbox_config(&self, db: &str) -> OutboxConfig {
        OutboxConfig {
            database_url: self.database_url(db),
            poll_interval_ms: 50,
            ..OutboxConfig::default()
        }
    }

    /// Starts a broker; its clients call as the portal unless told otherwise.
    pub async fn broker(&self, config: BrokerConfig) -> Running {
        let broker = Broker::build(config).await.expect("broker builds");
        let addr = broker.local_addr();
        let metrics = broker.metrics_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { broker.run(shutdown).await.map_err(anyhow::Error::from) }
        });
        let mut running = Running::new(addr, self.certs_dir(), id(PORTAL), shutdown, task);
        running.metrics = metrics;
        running
    }

    /// The usual pair: a broker on `showcase.db` and the civil registry's adapter.
    pub async fn broker_and_civil_registry(&self) -> (Running, Running) {
        let broker = self.broker(self.broker_config("showcase.db")).await;
        let adapter = self.adapter(self.adapter_config(FHDY)).await;
        (broker, adapter)
    }

    /// Starts an adapter; its clients call as the adapter's own system.
    pub async fn adapter(&self, config: AdapterConfig) -> Running {
        let identity = config
            .tls
            .as_ref()
            .map(|tls| {
                TlsMaterial::load(tls)
                    .expect("adapter tls")
                    .identity()
                    .clone()
            })
            .expect("adapter config has tls");
        let adapter = Adapter::build(config).await.expect("adapter builds");
        let addr = adapter.local_addr();
        let metrics = adapter.metrics_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { adapter.run(shutdown).await.map_err(anyhow::Error::from) }
        });
        let mut running = Running::new(addr, self.certs_dir(), identity, shutdown, task);
        running.metrics = metrics;
        running
    }
}

/// A service started in-process, and how to call it.
pub struct Running {
    pub addr: SocketAddr,
    certs: PathBuf,
    /// Whom the plain `*_client()` helpers call as.
    pub client_identity: Identity,
    /// The Prometheus endpoint, when the service was configured with one.
    pub metrics: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn new(
        addr: SocketAddr,
        certs: PathBuf,
        client_identity: Identity,
        shutdown: CancellationToken,
        task: JoinHandle<anyhow::Result<()>>,
    ) -> Self {
        Self {
            addr,
            certs,
            client_identity,
            metrics: None,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// An mTLS channel presenting `identity`'s certificate.
    pub async fn channel_as(&self, identity: &Identity) -> Channel {
        self.channel_with(identity, |endpoint| endpoint).await
    }

    /// As [`Self::channel_as`], with endpoint settings of the test's own
    /// (e.g. a small HTTP/2 window for a slow reader).
    pub async fn channel_with(
        &self,
        identity: &Identity,
        configure: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
    ) -> Channel {
        mtls_channel(
            self.addr,
            &pki::settings_in(&self.certs, identity),
            configure,
        )
        .await
    }

    pub async fn channel(&self) -> Channel {
        self.channel_as(&self.client_identity.clone()).await
    }

    /// Graceful stop; fails the test if the service ended with an error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("service stops within 30 s")
            .expect("service task does not panic")
            .expect("service stops cleanly");
    }

    pub async fn adapter_client(&self) -> AgencyAdapterClient<Channel> {
        AgencyAdapterClient::new(self.channel().await)
    }

    pub async fn once_only_client(&self) -> OnceOnlyClient<Channel> {
        OnceOnlyClient::new(self.channel().await)
    }

    pub async fn once_only_client_as(&self, identity: &str) -> OnceOnlyClient<Channel> {
        OnceOnlyClient::new(self.channel_as(&id(identity)).await)
    }
}

/// A PINFL of valid format, distinct for each `n` below 1000.
pub fn pinfl(n: u32) -> String {
    format!("3150590{:03}{:03}1", n % 1000, (n / 1000) % 1000)
}

pub fn timestamp(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

pub fn birth_payload(subject: &str, first_name: &str) -> BirthCertificate {
    BirthCertificate {
        certificate_number: format!("I-TN {}", subject.get(7..).unwrap_or(subject)),
        child: Some(PersonName {
            pinfl: subject.into(),
            last_name: "Karimov".into(),
            first_name: first_name.into(),
            patronymic: "Rustam o'g'li".into(),
        }),
        date_of_birth: "1990-05-15".into(),
        place_of_birth: "Toshkent shahri, Yunusobod tumani".into(),
        registry_office: "Yunusobod tumani FHDY bo'limi".into(),
        registered_on: "1990-05-20".into(),
        ..Default::default()
    }
}

/// A birth certificate record for `subject`, version `version`.
pub fn birth_record(subject: &str, version: u64, first_name: &str) -> Record {
    Record {
        record_type: "birth_certificate".into(),
        subject_id: subject.into(),
        record_key: format!("I-TN {}", &subject[7..14]),
        version,
        status: RecordStatus::Active as i32,
        issued_at: timestamp(642_729_600 + version as i64),
        payload: Some(govbus_proto::pack(&birth_payload(subject, first_name))),
        ..Default::default()
    }
}

/// A marriage certificate record about `subject` (one spouse).
pub fn marriage_record(subject: &str, version: u64) -> Record {
    let payload = govbus_proto::records::MarriageCertificate {
        certificate_number: format!("II-TN {}", &subject[7..14]),
        spouse_one: Some(PersonName {
            pinfl: subject.into(),
            last_name: "Karimov".into(),
            first_name: "Aziz".into(),
            ..Default::default()
        }),
        spouse_two: Some(PersonName {
            last_name: "Yusupova".into(),
            first_name: "Malika".into(),
            ..Default::default()
        }),
        date_of_marriage: "2019-09-14".into(),
        spouse_two_surname_after: "Karimova".into(),
        ..Default::default()
    };
    Record {
        record_type: "marriage_certificate".into(),
        subject_id: subject.into(),
        record_key: payload.certificate_number.clone(),
        version,
        status: RecordStatus::Active as i32,
        issued_at: timestamp(1_568_419_200 + version as i64),
        payload: Some(govbus_proto::pack(&payload)),
        ..Default::default()
    }
}

pub fn address_record(subject: &str) -> Record {
    let payload = AddressRegistration {
        resident: Some(PersonName {
            pinfl: subject.into(),
            first_name: "Dilnoza".into(),
            last_name: "Karimova".into(),
            ..Default::default()
        }),
        registered_on: "2015-03-01".into(),
        ..Default::default()
    };
    Record {
        record_type: "address_registration".into(),
        subject_id: subject.into(),
        record_key: "permanent".into(),
        version: 1,
        status: RecordStatus::Active as i32,
        issued_at: timestamp(1_425_168_000),
        payload: Some(govbus_proto::pack(&payload)),
        ..Default::default()
    }
}

pub async fn publish(
    adapter: &Running,
    records: Vec<Record>,
) -> Result<PublishResponse, tonic::Status> {
    adapter
        .adapter_client()
        .await
        .publish(PublishRequest { records })
        .await
        .map(tonic::Response::into_inner)
}

pub fn evidence_request(subject: &str, record_type: &str) -> GetEvidenceRequest {
    GetEvidenceRequest {
        subject_id: subject.into(),
        record_type: record_type.into(),
        purpose: "test-service-001".into(),
        request_id: String::new(),
        fields: Vec::new(),
    }
}

/// Polls the broker until `accept` holds for the answer, or panics after 20 s.
pub async fn wait_for_evidence(
    broker: &Running,
    request: GetEvidenceRequest,
    accept: impl Fn(&GetEvidenceResponse) -> bool,
) -> GetEvidenceResponse {
    let mut client = broker.once_only_client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        match client.get_evidence(request.clone()).await {
            Ok(reply) if accept(reply.get_ref()) => return reply.into_inner(),
            Ok(reply) => last = Some(format!("{:?}", reply.into_inner())),
            Err(status) => last = Some(format!("{status:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("evidence never matched; last answer: {last:?}");
}

/// Waits until the broker holds at least one `record_type` record about `subject`.
pub async fn wait_for_records(
    broker: &Running,
    subject: &str,
    record_type: &str,
) -> GetEvidenceResponse {
    wait_for_evidence(broker, evidence_request(subject, record_type), |r| {
        !r.evidence.is_empty()
    })
    .await
}

/// Polls `check` until it returns true, or panics after 20 s with `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// How many messages a topic holds, summed over its partitions.
pub fn topic_message_count(bus: &TestBus, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = bus
        .kafka()
        .config_for(govbus_kafka::Role::Consumer)
        .set("group.id", "govbus-tests-inspector")
        .create()
        .expect("inspector consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("topic metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            // A partition of a topic just created may not have taken up its
            // leadership yet (Apache Kafka answers NotLeaderForPartition).
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                match consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5)) {
                    Ok((low, high)) => break high - low,
                    Err(e) if std::time::Instant::now() < deadline => {
                        tracing::debug!(error = %e, "watermarks not yet");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => panic!("watermarks of {topic}: {e}"),
                }
            }
        })
        .sum()
}

/// Whether `group` has committed the high watermark of every non-empty
/// partition of `topics`.
pub fn group_is_at_end(bus: &TestBus, group: &str, topics: &[&str]) -> bool {
    use rdkafka::{
        Offset,
        consumer::{BaseConsumer, Consumer},
    };
    let consumer: BaseConsumer = bus
        .kafka()
        .config_for(govbus_kafka::Role::Consumer)
        .set("group.id", group)
        .create()
        .expect("inspecting consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut highs = Vec::new();
    for &topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .expect("metadata");
        for p in metadata.topics()[0].partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .expect("watermarks");
            tpl.add_partition(topic, p.id());
            highs.push(high);
        }
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .zip(highs)
        .all(|(e, high)| high == 0 || e.offset() == Offset::Offset(high))
}

/// Produces raw bytes to a topic with a plain rdkafka producer, bypassing
/// the adapter (for duplicates and hostile input).
pub async fn produce_raw(bus: &TestBus, topic: &str, key: &str, payload: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = bus
        .kafka()
        .config_for(govbus_kafka::Role::Producer)
        .create()
        .expect("raw producer");
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(5),
        )
        .await
        .expect("raw record delivered");
}

/// A second handle on a broker's showcase database, for assertions.
pub async fn open_showcase(bus: &TestBus, db: &str) -> govbus_store::Showcase {
    govbus_store::Showcase::open(&bus.database_url(db))
        .await
        .expect("showcase opens")
}

/// Creates an agency outbox table in a SQLite database of the test's folder.
pub async fn agency_outbox(bus: &TestBus, db: &str) -> sqlx::AnyPool {
    let db = govbus_store::Database::connect(&bus.database_url(db))
        .await
        .expect("agency database");
    let ddl = govbus_adapter::outbox_table_ddl("govbus_outbox", db.backend);
    sqlx::query(sqlx::AssertSqlSafe(ddl))
        .execute(&db.pool)
        .await
        .expect("outbox table");
    db.pool
}

/// Writes one birth certificate row to an agency outbox, as the agency's own system would.
pub async fn write_outbox_birth(pool: &sqlx::AnyPool, subject: &str, version: i64, status: &str) {
    let payload = prost::Message::encode_to_vec(&birth_payload(subject, "Outbox"));
    sqlx::query(
        "INSERT INTO govbus_outbox (record_type, subject_id, record_key, version, status, issued_at_unix, payload) \
         VALUES ('birth_certificate', $1, 'I-TN OUTBOX', $2, $3, 642729600, $4)",
    )
    .bind(subject)
    .bind(version)
    .bind(status)
    .bind(payload)
    .execute(pool)
    .await
    .expect("outbox row");
}

/// Every message on `topic`, read from the beginning: (key, headers as strings).
pub fn read_topic(bus: &TestBus, topic: &str) -> Vec<(String, Vec<(String, String)>)> {
    read_topic_messages(bus, topic)
        .into_iter()
        .map(|(key, headers, _)| (key, headers))
        .collect()
}

/// The payloads of every message on `topic`, as text (audit entries are JSON).
pub fn read_topic_payloads(bus: &TestBus, topic: &str) -> Vec<String> {
    read_topic_messages(bus, topic)
        .into_iter()
        .map(|(_, _, payload)| payload)
        .collect()
}

type TopicMessage = (String, Vec<(String, String)>, String);

fn read_topic_messages(bus: &TestBus, topic: &str) -> Vec<TopicMessage> {
    use rdkafka::{
        Message, Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
        message::Headers,
    };
    let consumer: BaseConsumer = bus
        .kafka()
        .config_for(govbus_kafka::Role::Consumer)
        .set("group.id", "govbus-tests-reader")
        .set("enable.partition.eof", "true")
        .create()
        .expect("reader consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("topic metadata");
    let partitions = metadata.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut messages = Vec::new();
    let mut at_end = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while at_end < partitions && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let value =
                                    h.value.map(String::from_utf8_lossy).unwrap_or_default();
                                (h.key.to_string(), value.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                messages.push((key, headers, payload));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => at_end += 1,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    messages
}

/// A client certificate made for a refusal test.
pub struct OddCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestBus {
    /// The bus CA, to issue certificates with unusual properties.
    pub fn ca(&self) -> pki::CertificateAuthority {
        let dir = self.certs_dir();
        let cert = std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem");
        let key = std::fs::read_to_string(dir.join("ca.key")).expect("ca.key");
        pki::CertificateAuthority::from_pem(&cert, &key).expect("test CA loads")
    }

    /// A certificate for `identity` from the bus CA, shaped by `edit`.
    pub fn odd_certificate(
        &self,
        identity: &str,
        edit: impl FnOnce(&mut pki::LeafRequest),
    ) -> OddCertificate {
        let mut request = pki::LeafRequest::new(id(identity));
        edit(&mut request);
        let issued = self.ca().issue(&request).expect("certificate issued");
        OddCertificate {
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
    }
}

impl Running {
    /// Connects presenting `client` (or no certificate at all) and trusting the
    /// bus CA, then calls ListRecordTypes on a broker or an empty Publish on an
    /// adapter. The error text when either step fails.
    pub async fn try_call_with(&self, client: Option<&OddCertificate>) -> Result<(), String> {
        let ca = std::fs::read_to_string(self.certs.join("ca.pem")).expect("ca.pem");
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some(c) = client {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                &c.cert_pem,
                &c.key_pem,
            ));
        }
        let channel = Channel::from_shared(self.url())
            .expect("url")
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let mut client = OnceOnlyClient::new(channel);
        match client
            .list_record_types(govbus_proto::v1::ListRecordTypesRequest {})
            .await
        {
            Ok(_) => Ok(()),
            Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

/// A broker or adapter running as a process of its own (the
/// `govbus-service` binary of this crate), for tests that kill processes.
/// An mTLS channel to a service at `addr`, presenting the certificate of
/// `tls`, with endpoint settings of the caller's own.
async fn mtls_channel(
    addr: SocketAddr,
    tls: &TlsSettings,
    configure: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
) -> Channel {
    let tls = TlsMaterial::load(tls).expect("client tls");
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls.client_config("localhost"))
        .expect("tls config");
    configure(endpoint)
        .connect()
        .await
        .expect("service reachable over mTLS")
}

pub struct ServiceProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl TestBus {
    /// Starts `kind` ("broker" or "adapter") with `config` written to a file,
    /// and waits until it listens. `binary` is
    /// `env!("CARGO_BIN_EXE_govbus-service")`, which only integration tests see.
    pub fn spawn_service(
        &self,
        binary: &str,
        kind: &str,
        config: &impl serde::Serialize,
    ) -> ServiceProcess {
        self.spawn_service_with_env(binary, kind, config, &[])
    }

    /// [`spawn_service`](Self::spawn_service) with extra environment variables.
    pub fn spawn_service_with_env(
        &self,
        binary: &str,
        kind: &str,
        config: &impl serde::Serialize,
        env: &[(&str, &str)],
    ) -> ServiceProcess {
        use std::io::{BufRead, BufReader};
        let file = self
            .dir
            .path()
            .join(format!("{kind}-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&file, toml::to_string(config).expect("config as toml"))
            .expect("config file");
        let mut child = std::process::Command::new(binary)
            .arg(kind)
            .env("GOVBUS_CONFIG", &file)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("service process starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.parse::<SocketAddr>());
                    sent = true;
                }
                // Keep draining so the child never blocks on a full pipe;
                // show what it says in the test's output.
                println!("[{}] {line}", if sent { "service" } else { "starting" });
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("service reports its address")
            .expect("a socket address");
        ServiceProcess { child, addr }
    }
}

impl ServiceProcess {
    /// A client of this (adapter) process, presenting `identity`'s certificate.
    pub async fn adapter_client_as(
        &self,
        bus: &TestBus,
        identity: &str,
    ) -> AgencyAdapterClient<Channel> {
        AgencyAdapterClient::new(mtls_channel(self.addr, &bus.tls(identity), |e| e).await)
    }

    /// SIGTERM, then waits for the process to drain and exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("service did not stop within 30 s of SIGTERM");
    }

    /// SIGKILL: no draining, no flush, no final commit.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestBus {
    /// On PostgreSQL: makes the database behind `name` refuse connections
    /// and ends the ones it has (`false`), or accept them again (`true`).
    /// `None` on SQLite, which has no server to take away.
    pub fn set_database_available(&self, name: &str, available: bool) -> Option<()> {
        let admin = self.postgres.as_ref()?;
        let url = self.database_url(name);
        let database = url.rsplit('/').next()?.split('?').next()?.to_string();
        // Connection limits do not bind superusers; ALLOW_CONNECTIONS does.
        admin_exec(
            admin,
            format!("ALTER DATABASE {database} ALLOW_CONNECTIONS {available}"),
        )
        .expect("alter database");
        if !available {
            admin_exec(
                admin,
                format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"),
            )
            .expect("terminate connections");
        }
        Some(())
    }
}

/// The text a service's `GET /metrics` returns.
pub async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

/// Puts bytes that are no envelope on the birth-certificate topic under
/// `subject`'s key, and waits for the broker to dead-letter them (the first
/// dead letter of the bus).
pub async fn poison_birth_topic(bus: &TestBus, subject: &str) {
    produce_raw(bus, "govbus.records.birth_certificate", subject, b"poison").await;
    eventually("the poison record is dead-lettered", || async {
        topic_message_count(bus, govbus_kafka::DEAD_LETTER_TOPIC) == 1
    })
    .await;
}
