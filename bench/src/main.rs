//! `govbus-bench`: measures govbus against baselines run on the same machine
//! in the same run, and writes docs/BENCHMARKS.md. `make bench` runs it.

mod echo;
mod floor;
mod ingest;
mod load;
mod part;
mod query;
mod report;
mod seed;

use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use govbus_adapter::Preparer;
use govbus_security::TlsMaterial;
use govbus_server::{PlaintextSettings, RateLimitSettings};
use govbus_store::{AuditLog, Showcase};
use govbus_tests::{FHDY, PORTAL, Running, TestBus, id};
use prost::Message;

use crate::{
    ingest::IngestShape,
    query::{LoadShape, Target},
    report::{IngestResult, Machine, QueryResult, Report, Seeded, SizeResult, TlsResult},
};

/// The allocator of the govbus binaries (services/*/src/main.rs), so the
/// bench measures what they run; the baselines share it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks govbus against same-run baselines")]
struct Args {
    /// A short run (showcase of 10k, 3 s per measurement) to check the bench itself.
    #[arg(long)]
    quick: bool,
    /// Showcase sizes for the query benchmark; the first is also the size of
    /// the baseline comparison. Add 10000000 for the ten-million run.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    sizes: Vec<u64>,
    /// Seconds each measurement lasts (after a warm-up).
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Concurrent callers at peak load.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Records published in the ingest benchmark.
    #[arg(long, default_value_t = 50_000)]
    ingest_records: u64,
    /// Records per Publish call.
    #[arg(long, default_value_t = 250)]
    ingest_batch: u64,
    /// PostgreSQL admin URL: showcases in databases created (and dropped) on
    /// that server instead of SQLite files.
    #[arg(long, env = "BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Skip the mTLS comparison.
    #[arg(long)]
    no_tls: bool,
    /// Times only this part, `--part-count` times, on a showcase of the
    /// first of `--sizes` (reads), and writes no report (part.rs).
    #[arg(long, value_enum)]
    part: Option<part::Part>,
    /// Reads, records, entries or calls: `--part` times.
    #[arg(long, default_value_t = PARTS_ALONE)]
    part_count: u64,
    /// Where the report goes; default docs/BENCHMARKS.md, or
    /// docs/BENCHMARKS-postgres.md with --postgres-url.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The load generator's own runtime, so that its threads are not the
/// servers' threads (both still share the machine's cores, as the baseline
/// does).
pub fn on_load_runtime<F>(future: F) -> impl Future<Output = anyhow::Result<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("load")
            .enable_all()
            .build()
            .expect("load generator runtime")
    });
    let task = runtime.spawn(future);
    async move { task.await.context("load generator task") }
}

fn step(what: &str) {
    println!("== {what}");
}

fn plaintext_as(identity: &str) -> Option<PlaintextSettings> {
    Some(PlaintextSettings {
        assume_caller: id(identity),
    })
}

/// Runs of the raw rdkafka baseline and of govbus's ingest; the fastest of
/// each is compared.
const INGEST_RUNS: u64 = 3;

/// Audit entries appended, and showcase reads made, when each part is
/// timed alone (`floor`).
const PARTS_ALONE: u64 = 20_000;

/// Audit commits, and disk syncs, timed one at a time for the floor of
/// the latency target (`floor`).
const WAITS_ALONE: u64 = 1_000;

/// No rate limit can be the bottleneck of a benchmark.
const UNLIMITED: RateLimitSettings = RateLimitSettings {
    per_second: 100_000_000,
    burst: 100_000_000,
};

struct Bench {
    args: Args,
    shape: LoadShape,
}

/// A broker on showcase `db` whose citizens `0..subjects` have records.
pub async fn start_broker(bus: &TestBus, db: &str, tls: bool, subjects: u64) -> (Running, Target) {
    let mut config = bus.broker_config(db);
    config.rate_limit = UNLIMITED;
    config.audit_chain = if tls { "bench-tls" } else { "bench" }.into();
    // As the README advises for SQLite (and harmless on PostgreSQL).
    config.audit_database_url = Some(bus.database_url(&format!("audit-{db}")));
    if !tls {
        config.insecure_plaintext = plaintext_as(PORTAL);
    }
    let broker = bus.broker(config).await;
    let target = Target {
        addr: broker.addr,
        tls: tls.then(|| {
            TlsMaterial::load(&bus.tls(PORTAL))
                .expect("portal tls")
                .client_config("localhost")
        }),
        subjects,
    };
    (broker, target)
}

impl Bench {
    /// A fresh showcase of `records` citizens; how long it took and its bytes.
    async fn seeded(&self, bus: &TestBus, db: &str, records: u64) -> anyhow::Result<Seeded> {
        let showcase = Showcase::open(&bus.database_url(db)).await?;
        let signer = Arc::new(bus.signer(FHDY));
        let started = Instant::now();
        let mut shown = 0;
        seed::fill(&showcase, signer, 0, records, |done| {
            if done * 10 / records > shown {
                shown = done * 10 / records;
                println!("   seeded {done} of {records}");
            }
        })
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        let (database_bytes, table_bytes) = seed::footprint(&showcase).await?;
        showcase.database().close().await;
        Ok(Seeded {
            seconds,
            database_bytes,
            table_bytes,
        })
    }

    async fn query(&self, bus: &TestBus, report: &mut Report) -> anyhow::Result<()> {
        let size = self.args.sizes[0];
        let db = format!("showcase-{size}.db");
        step(&format!("query: showcase of {size} records"));
        let seeded = self.seeded(bus, &db, size).await?;
        let (broker, target) = start_broker(bus, &db, false, size).await;
        let reply = query::sample_reply(&target).await?;
        let echo = echo::EchoServer::start(reply.clone()).await?;
        let echo_target = Target {
            addr: echo.addr,
            tls: None,
            subjects: size,
        };
        step("query: baseline (bare tonic) at peak");
        let echo_peak = query::peak(&echo_target, self.shape).await?;
        println!("   {}", echo_peak.summary());
        step("query: govbus broker at peak");
        let broker_peak = query::peak(&target, self.shape).await?;
        println!("   {}", broker_peak.summary());
        let half_rate = broker_peak.per_second() / 2.0;
        step(&format!("query: govbus broker at {half_rate:.0} calls/s"));
        let broker_half = query::at_rate(&target, self.shape, half_rate).await?;
        println!("   {}", broker_half.summary());
        step(&format!("query: baseline at {half_rate:.0} calls/s"));
        let echo_half = query::at_rate(&echo_target, self.shape, half_rate).await?;
        println!("   {}", echo_half.summary());
        drop(echo);
        broker.stop().await;
        step("query: the parts alone (an audit entry, a showcase read)");
        let group = self.shape.concurrency;
        // Opened as the broker opens its own (`audit_database_url`).
        let audit_log = AuditLog::open(&bus.database_url(&format!("audit-alone-{db}"))).await?;
        let audit_alone = floor::audit(&audit_log, PARTS_ALONE, group, size).await?;
        audit_log.database().close().await;
        let showcase = Showcase::open(&bus.database_url(&db)).await?;
        let read_alone = floor::read(&showcase, PARTS_ALONE, group, size).await?;
        showcase.database().close().await;
        println!(
            "   audit entry {:.1} µs CPU (groups of {group}), read {:.1} µs CPU ({group} at once)",
            audit_alone.cpu_us_each(),
            read_alone.cpu_us_each()
        );
        step("query: the waits alone (an audit commit, a disk sync)");
        let commits_log = AuditLog::open(&bus.database_url(&format!("audit-commits-{db}"))).await?;
        let commit_alone = floor::audit_commits(&commits_log, WAITS_ALONE, size).await?;
        commits_log.database().close().await;
        let dir = bus.dir.path().to_path_buf();
        let disk_sync =
            tokio::task::spawn_blocking(move || floor::disk_syncs(&dir, WAITS_ALONE)).await??;
        println!(
            "   audit commit p99 {:.2} ms, disk sync p99 {:.2} ms",
            load::ms(&commit_alone, 0.99),
            load::ms(&disk_sync, 0.99)
        );
        report.sizes.push(SizeResult {
            records: size,
            seeded,
            peak: broker_peak.clone(),
            at_fixed_rate: broker_half.clone(),
        });
        report.query = Some(QueryResult {
            echo_peak,
            broker_peak,
            half_rate,
            broker_half,
            echo_half,
            reply_bytes: reply.encoded_len(),
            request_bytes: query::request(0).encoded_len(),
            audit_alone,
            read_alone,
            group,
            commit_alone,
            disk_sync,
        });

        if !self.args.no_tls {
            step("query: govbus broker with mTLS at peak");
            let (broker, target) = start_broker(bus, &db, true, size).await;
            let peak = query::peak(&target, self.shape).await?;
            println!("   {}", peak.summary());
            step(&format!(
                "query: govbus broker with mTLS at {half_rate:.0} calls/s"
            ));
            let half = query::at_rate(&target, self.shape, half_rate).await?;
            println!("   {}", half.summary());
            broker.stop().await;
            report.tls = Some(TlsResult { peak, half });
        }
        Ok(())
    }

    async fn scaling(&self, bus: &TestBus, report: &mut Report) -> anyhow::Result<()> {
        let Some(rate) = report.query.as_ref().map(|q| q.half_rate) else {
            return Ok(());
        };
        for &size in &self.args.sizes[1..] {
            let db = format!("showcase-{size}.db");
            step(&format!("scaling: showcase of {size} records"));
            let seeded = self.seeded(bus, &db, size).await?;
            let (broker, target) = start_broker(bus, &db, false, size).await;
            let peak = query::peak(&target, self.shape).await?;
            println!("   peak: {}", peak.summary());
            let at_fixed_rate = query::at_rate(&target, self.shape, rate).await?;
            println!("   at {rate:.0} calls/s: {}", at_fixed_rate.summary());
            broker.stop().await;
            report.sizes.push(SizeResult {
                records: size,
                seeded,
                peak,
                at_fixed_rate,
            });
        }
        Ok(())
    }

    async fn ingest(&self, report: &mut Report) -> anyhow::Result<()> {
        // A bus of its own: fresh topics, fresh consumer group.
        let bus = TestBus::start_with(self.args.postgres_url.clone());
        let shape = IngestShape {
            records: self.args.ingest_records,
            batch: self.args.ingest_batch,
            publishers: 4,
            poll_every: IngestShape::POLL_EVERY,
        };
        let tls = TlsMaterial::load(&bus.tls(FHDY))?;
        let signer = bus.signer(FHDY);
        step("ingest: what signing and checking a record cost");
        let checker = govbus_security::RecordChecker::new(
            Arc::new(govbus_core::Catalog::builtin()),
            tls.ca_der().to_vec(),
        );
        let signatures = ingest::signature_cost(&signer, &checker, 2_000, self.args.ingest_batch)?;
        println!(
            "   per record in batches of {}: sign {:.1} µs, check {:.1} µs \
             (alone: {:.1}, {:.1}): at most {:.0} records/s on {} cores",
            signatures.batch,
            signatures.sign.as_secs_f64() * 1e6,
            signatures.check.as_secs_f64() * 1e6,
            signatures.sign_alone.as_secs_f64() * 1e6,
            signatures.check_alone.as_secs_f64() * 1e6,
            signatures.ceiling(),
            signatures.cores
        );
        step(&format!(
            "ingest: the adapter's work alone, {PARTS_ALONE} records in calls of {}",
            shape.batch
        ));
        let preparer = Preparer::new(
            Arc::new(govbus_core::Catalog::builtin()),
            govbus_core::RecordLimits::default(),
            bus.signer(FHDY),
        );
        let publish_prepare = floor::publish_prepare(&preparer, PARTS_ALONE, shape.batch).await?;
        println!("   {:.1} µs CPU/record", publish_prepare.cpu_us_each());
        // The batch of the brokers this bench starts (their default).
        let store_batch = govbus_broker::BrokerConfig::default().batch_max;
        let floor_db = "store-alone.db";
        step(&format!(
            "ingest: storing alone, {} signed records in batches of {store_batch}",
            shape.records
        ));
        let floor_showcase = Showcase::open(&bus.database_url(floor_db)).await?;
        let store = floor::store(&floor_showcase, &signer, shape.records, store_batch).await?;
        floor_showcase.database().close().await;
        println!(
            "   {:.0} records/s, {:.1} µs CPU/record",
            store.per_second(),
            store.cpu_us_each()
        );
        step(&format!(
            "ingest: raw rdkafka, {} records produced and consumed, {INGEST_RUNS} times",
            shape.records
        ));
        let mut raw_runs = Vec::new();
        for _ in 0..INGEST_RUNS {
            let run = ingest::through_raw_rdkafka(&bus.kafka(), &signer, shape).await?;
            println!(
                "   {:.0} records/s, {:.1} µs CPU/record",
                run.per_second(),
                run.cpu_us_per_record()
            );
            raw_runs.push(run);
        }
        // The fastest run is the nearest to what the machine's Kafka path
        // can do; single runs of under a second vary by up to 2× here.
        let raw = *fastest(&raw_runs)?;

        let servers = IngestServers::start(&bus, "ingest.db").await?;
        step(&format!(
            "ingest: govbus, {} records through the adapter into the showcase, {INGEST_RUNS} times",
            shape.records
        ));
        // Each run publishes citizens of its own, so every record is new.
        let mut govbus_runs = Vec::new();
        for run in 0..INGEST_RUNS {
            let first = 1 + run * shape.records;
            let govbus = servers.run(first, shape).await?;
            println!(
                "   {:.0} records/s, {:.1} µs CPU/record (all acknowledged by the adapter after {:.2} s)",
                govbus.per_second(),
                govbus.cpu_us_per_record(),
                govbus.published.unwrap_or_default().as_secs_f64()
            );
            govbus_runs.push(govbus);
        }
        // The fastest, as for the baseline: both are then as near to the
        // machine's limit as this many runs get.
        let govbus = *fastest(&govbus_runs)?;
        let freshness_rate = govbus.per_second() / 2.0;
        step(&format!(
            "ingest: freshness under {freshness_rate:.0} records/s"
        ));
        let freshness = ingest::freshness(
            &servers.adapter_target,
            &servers.broker_target,
            0,
            1 + INGEST_RUNS * shape.records,
            freshness_rate,
            self.shape.duration,
        )
        .await?;
        println!(
            "   {} probes: p50 {:.1} ms, p99 {:.1} ms",
            freshness.len(),
            freshness.value_at_quantile(0.5) as f64 / 1000.0,
            freshness.value_at_quantile(0.99) as f64 / 1000.0
        );
        servers.stop().await;
        report.ingest = Some(IngestResult {
            govbus,
            raw,
            raw_runs: raw_runs
                .iter()
                .map(ingest::Throughput::per_second)
                .collect(),
            govbus_runs: govbus_runs
                .iter()
                .map(ingest::Throughput::per_second)
                .collect(),
            signatures,
            publish_prepare,
            store,
            store_batch,
            envelope_bytes: seed::signed_births(&signer, 0..shape.batch, shape.batch)?[0]
                .encoded_len(),
            batch: shape.batch,
            publishers: shape.publishers,
            freshness_rate,
            freshness,
        });
        Ok(())
    }
}

/// A broker and an adapter on one bus, for the ingest: plaintext, no rate
/// limits, the broker's group joined.
pub struct IngestServers {
    broker: Running,
    broker_target: Target,
    adapter: Running,
    adapter_target: Target,
    showcase: Showcase,
}

impl IngestServers {
    pub async fn start(bus: &TestBus, db: &str) -> anyhow::Result<Self> {
        let (broker, broker_target) = start_broker(bus, db, false, 1).await;
        let mut adapter_config = bus.adapter_config(FHDY);
        adapter_config.rate_limit = UNLIMITED;
        adapter_config.insecure_plaintext = plaintext_as(FHDY);
        let adapter = bus.adapter(adapter_config).await;
        let adapter_target = Target {
            addr: adapter.addr,
            tls: None,
            subjects: 0,
        };
        let servers = Self {
            broker,
            broker_target,
            adapter,
            adapter_target,
            showcase: Showcase::open(&bus.database_url(db)).await?,
        };
        // Citizen 0 first: the broker has joined its group once it shows.
        servers
            .run(
                0,
                IngestShape {
                    records: 1,
                    batch: 1,
                    publishers: 1,
                    poll_every: IngestShape::POLL_EVERY,
                },
            )
            .await?;
        Ok(servers)
    }

    /// Publishes citizens `first..` through the adapter until all are in
    /// the showcase.
    pub async fn run(&self, first: u64, shape: IngestShape) -> anyhow::Result<ingest::Throughput> {
        ingest::through_govbus(&self.adapter_target, &self.showcase, first, shape).await
    }

    pub async fn stop(self) {
        self.showcase.database().close().await;
        self.adapter.stop().await;
        self.broker.stop().await;
    }
}

/// The run with the most records per second.
fn fastest(runs: &[ingest::Throughput]) -> anyhow::Result<&ingest::Throughput> {
    runs.iter()
        .max_by(|a, b| a.per_second().total_cmp(&b.per_second()))
        .context("no run")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    govbus_telemetry::init_with_default_filter("govbus-bench", "warn");
    govbus_security::install_crypto_provider();
    let mut args = Args::parse();
    if args.quick {
        args.sizes = vec![10_000];
        args.seconds = 3;
        args.warmup_seconds = 1;
        args.ingest_records = args.ingest_records.min(5_000);
    }
    anyhow::ensure!(
        !args.sizes.is_empty() && args.sizes.iter().all(|&s| (1..=10_000_000).contains(&s)),
        "--sizes: each size must be between 1 and 10000000"
    );
    anyhow::ensure!(
        args.seconds > 0 && args.concurrency > 0,
        "--seconds and --concurrency must be at least 1"
    );
    anyhow::ensure!(
        args.ingest_records > 0 && args.ingest_batch > 0,
        "--ingest-records and --ingest-batch must be at least 1"
    );
    if let Some(part) = args.part {
        return part::run(
            part,
            args.part_count,
            (args.concurrency, args.connections),
            args.sizes[0],
            args.postgres_url,
        )
        .await;
    }
    let shape = LoadShape {
        concurrency: args.concurrency,
        connections: args.connections,
        warmup: Duration::from_secs(args.warmup_seconds),
        duration: Duration::from_secs(args.seconds),
    };
    let mut report = Report {
        settings: format!(
            "{} s per measurement after {} s warm-up; {} callers over {} HTTP/2 connections; \
             logs at `warn` (RUST_LOG unset); audit trail in its own database \
             (`audit_database_url`); release build",
            args.seconds, args.warmup_seconds, args.concurrency, args.connections
        ),
        backend: match &args.postgres_url {
            Some(_) => "PostgreSQL (local server)".into(),
            None => "SQLite file (WAL; synchronous=FULL, the ingest's commits while it is behind NORMAL but one every 100 ms)".into(),
        },
        ..Report::default()
    };
    if args.postgres_url.is_some() {
        load::count_postgres_server();
    }
    let started = Instant::now();
    let bench = Bench { args, shape };
    let bus = TestBus::start_with(bench.args.postgres_url.clone());
    bench.query(&bus, &mut report).await?;
    bench.scaling(&bus, &mut report).await?;
    drop(bus);
    bench.ingest(&mut report).await?;

    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let text = report.render(&Machine::read(), &date);
    let out = bench.args.out.clone().unwrap_or_else(|| {
        PathBuf::from(match bench.args.postgres_url {
            Some(_) => "docs/BENCHMARKS-postgres.md",
            None => "docs/BENCHMARKS.md",
        })
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "== done in {:.0} s; report in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
