//! One part of the floor (`floor.rs`) timed alone, and nothing else:
//! `govbus-bench --part read --part-count N`. For counting instructions
//! under callgrind, where a whole bench would take hours and where the
//! cloud machine's noise (other tenants, steal) does not reach: the
//! difference between two counts, N and 2N, is what N more reads, entries
//! or records cost, whatever the set-up around them (docs/PROFILING.md).

use std::sync::Arc;

use govbus_security::TlsMaterial;
use govbus_store::{AuditLog, Showcase};
use govbus_tests::{FHDY, TestBus};

use crate::{floor, seed};

/// The parts `--part` can time.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Part {
    /// Showcase reads through the shared reader, `concurrency` at once.
    Read,
    /// The ingest's showcase write, in the broker's batches (the records
    /// are signed first, untimed but counted by callgrind).
    Store,
    /// Audit entries through the broker's appender, in groups of
    /// `concurrency`.
    Audit,
}

/// Runs `part` `count` times on a bus of its own (SQLite, or databases on
/// `postgres_url`) whose showcase, for reads, holds `subjects` citizens.
pub async fn run(
    part: Part,
    count: u64,
    concurrency: usize,
    subjects: u64,
    postgres_url: Option<String>,
) -> anyhow::Result<()> {
    let bus = TestBus::start_with(postgres_url);
    let signer = Arc::new(TlsMaterial::load(&bus.tls(FHDY))?.signer()?);
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
        Part::Audit => {
            let log = AuditLog::new(showcase.database().clone());
            floor::audit(&log, count, concurrency, subjects).await?
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
