//! One part of the floor (`floor.rs`) timed alone, and nothing else:
//! `govbus-bench --part read --part-count N`; or N whole calls, to the
//! broker or to the bare baseline (`--part query|echo`). For counting
//! instructions under callgrind, where a whole bench would take hours and
//! where the cloud machine's noise (other tenants, steal) does not reach:
//! the difference between two counts, N and 2N, is what N more reads,
//! entries, records or calls cost, whatever the set-up around them
//! (docs/PROFILING.md).

use std::sync::Arc;

use govbus_store::{AuditLog, Showcase};
use govbus_tests::{FHDY, TestBus};

use crate::{
    echo, floor,
    query::{self, Target},
    seed,
};

/// The parts `--part` can time.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Part {
    /// Showcase reads through the shared reader, `concurrency` at once.
    Read,
    /// The ingest's showcase write, in the broker's batches (the records
    /// are signed first, untimed but counted by callgrind).
    Store,
    /// The broker's check of ingested records, one after another (the
    /// records are signed first, in the adapter's batches, untimed but
    /// counted by callgrind).
    Check,
    /// Audit entries through the broker's appender, in groups of
    /// `concurrency`.
    Audit,
    /// Whole `GetEvidence` calls to a broker over plaintext gRPC,
    /// `concurrency` at once over `connections`: what a call costs above
    /// the parts (policy, tracing, hand-offs, the audit copy).
    Query,
    /// The same calls to the bare tonic baseline (`echo.rs`), after the
    /// same set-up as `query`: the bare exchange, for the difference.
    Echo,
    /// The whole ingest: records published through the adapter (4
    /// publishers, calls of 250 as the bench's default) until all are in
    /// the showcase — what a record costs end to end, every thread of the
    /// bus counted, with the showcase polled every second only.
    Ingest,
}

/// Runs `part` `count` times on a bus of its own (SQLite, or databases on
/// `postgres_url`) whose showcase, for reads and calls, holds `subjects`
/// citizens.
pub async fn run(
    part: Part,
    count: u64,
    (concurrency, connections): (usize, usize),
    subjects: u64,
    postgres_url: Option<String>,
) -> anyhow::Result<()> {
    let bus = TestBus::start_with(postgres_url);
    let signer = Arc::new(bus.signer(FHDY));
    let showcase = Showcase::open(&bus.database_url("part.db")).await?;
    let cost = match part {
        Part::Read => {
            seed::fill(&showcase, signer, 0, subjects, |_| {}).await?;
            floor::read(&showcase, count, concurrency, subjects).await?
        }
        Part::Store => {
            let batch = govbus_broker::BrokerConfig::default().batch_max;
            floor::store(&showcase, &signer, count, batch).await?
        }
        Part::Check => {
            let checker = govbus_security::RecordChecker::new(
                Arc::new(govbus_core::Catalog::builtin()),
                bus.ca_der(),
            );
            floor::check(&signer, &checker, count)?
        }
        Part::Audit => {
            let log = AuditLog::open(&bus.database_url("part-audit.db")).await?;
            let cost = floor::audit(&log, count, concurrency, subjects).await?;
            log.database().close().await;
            cost
        }
        Part::Ingest => {
            showcase.database().close().await;
            return ingest(&bus, count).await;
        }
        Part::Query | Part::Echo => {
            seed::fill(&showcase, signer, 0, subjects, |_| {}).await?;
            showcase.database().close().await;
            return calls(&bus, part, count, (concurrency, connections), subjects).await;
        }
    };
    showcase.database().close().await;
    println!(
        "{part:?}: {} in {:.3} s, {:.1} µs CPU each",
        cost.count,
        cost.elapsed.as_secs_f64(),
        cost.cpu_us_each()
    );
    Ok(())
}

/// `count` calls to a broker on the part's showcase of `subjects`
/// citizens, or to the echo baseline beside it (both are started either
/// way, so that the two counts differ by the calls alone).
async fn calls(
    bus: &TestBus,
    part: Part,
    count: u64,
    (concurrency, connections): (usize, usize),
    subjects: u64,
) -> anyhow::Result<()> {
    let (broker, broker_target) = crate::start_broker(bus, "part.db", false, subjects).await;
    let echo = echo::EchoServer::start(query::sample_reply(&broker_target).await?).await?;
    let target = match part {
        Part::Echo => Target {
            addr: echo.addr,
            ..broker_target
        },
        _ => broker_target,
    };
    let started = std::time::Instant::now();
    query::calls(&target, concurrency, connections, count).await?;
    println!(
        "{part:?}: {count} calls in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    drop(echo);
    broker.stop().await;
    Ok(())
}

/// `count` records through an adapter and a broker into a showcase, after
/// the broker has joined its group (one record, as in the bench).
async fn ingest(bus: &TestBus, count: u64) -> anyhow::Result<()> {
    let servers = crate::IngestServers::start(bus, "part-ingest.db").await?;
    let run = servers
        .run(
            1,
            crate::ingest::IngestShape {
                records: count,
                batch: 250,
                publishers: 4,
                poll_every: std::time::Duration::from_secs(1),
            },
        )
        .await?;
    println!(
        "Ingest: {count} records in {:.3} s, {:.1} µs CPU each",
        run.elapsed.as_secs_f64(),
        run.cpu_us_per_record()
    );
    servers.stop().await;
    Ok(())
}
