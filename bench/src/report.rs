//! What the run found, written as docs/BENCHMARKS.md: the machine, the
//! commit, every figure, and how it was obtained.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::{
    floor::PartCost,
    ingest::{SignatureCost, Throughput},
    load::{self, LoadResult},
};

/// The machine the figures are true for.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
}

/// A freshly seeded showcase: how long it took and what it occupies.
pub struct Seeded {
    pub seconds: f64,
    pub database_bytes: i64,
    pub table_bytes: i64,
}

/// The query benchmark at one showcase size.
pub struct SizeResult {
    pub records: u64,
    pub seeded: Seeded,
    pub peak: LoadResult,
    pub at_fixed_rate: LoadResult,
}

pub struct QueryResult {
    pub echo_peak: LoadResult,
    pub broker_peak: LoadResult,
    pub half_rate: f64,
    pub broker_half: LoadResult,
    pub echo_half: LoadResult,
    pub reply_bytes: usize,
    pub request_bytes: usize,
    /// An audit entry alone, in groups of `group` (`floor::audit`).
    pub audit_alone: PartCost,
    /// A showcase read alone, `group` at once (`floor::read`).
    pub read_alone: PartCost,
    pub group: usize,
    /// Audit commits of one entry each, alone, µs (`floor::audit_commits`).
    pub commit_alone: Histogram<u64>,
    /// 4 KiB write + `fdatasync` in the bench's folder, µs (`floor::disk_syncs`).
    pub disk_sync: Histogram<u64>,
}

pub struct TlsResult {
    pub peak: LoadResult,
    pub half: LoadResult,
}

pub struct IngestResult {
    /// The fastest of `govbus_runs`.
    pub govbus: Throughput,
    /// Records/s of every govbus run, in order.
    pub govbus_runs: Vec<f64>,
    /// The fastest of `raw_runs`.
    pub raw: Throughput,
    /// Records/s of every raw run, in order.
    pub raw_runs: Vec<f64>,
    pub signatures: SignatureCost,
    /// The adapter's decoding and preparing of publish calls alone
    /// (`floor::publish_prepare`), signing included.
    pub publish_prepare: PartCost,
    /// The showcase write alone (`floor::store`).
    pub store: PartCost,
    pub store_batch: usize,
    pub envelope_bytes: usize,
    pub batch: u64,
    pub publishers: u64,
    pub freshness_rate: f64,
    /// Microseconds.
    pub freshness: Histogram<u64>,
}

#[derive(Default)]
pub struct Report {
    pub settings: String,
    pub backend: String,
    pub query: Option<QueryResult>,
    pub tls: Option<TlsResult>,
    pub sizes: Vec<SizeResult>,
    pub ingest: Option<IngestResult>,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// Whether the parts alone (`floor`, µs of CPU) fit within what a target
/// allows (`budget`): if not, on this machine `impossible`; if so, how
/// much they leave, `left_for`.
fn floor_verdict(floor: f64, budget: f64, impossible: &str, left_for: &str) -> String {
    if floor > budget {
        format!("The parts alone exceed it: on this machine {impossible}")
    } else {
        format!("The parts leave {:.1} µs {left_for}", budget - floor)
    }
}

/// The waits every answer has in it — its audit entry's commit and the bare
/// exchange at the same rate — set against the p99 target.
fn tail_floor(q: &QueryResult, cores: usize) -> String {
    let commit_p99 = load::ms(&q.commit_alone, 0.99);
    let echo_p99 = q.echo_half.ms(0.99);
    let commit = format!(
        "the floor of the tail: every answer waits for its audit entry's durable commit — \
         at least one whole commit that starts after the entry is queued. Alone, one entry at \
         a time, {} commits through the broker's appender took p50 {:.2} / p99 **{commit_p99:.2} \
         ms**; beneath them, this machine's disk (the bench's temporary folder) made a 4 KiB \
         write durable (`fdatasync`, {} times) in p50 {:.2} / p99 {:.2} ms",
        q.commit_alone.len(),
        load::ms(&q.commit_alone, 0.5),
        q.disk_sync.len(),
        load::ms(&q.disk_sync, 0.5),
        load::ms(&q.disk_sync, 0.99),
    );
    // Every answer also crosses what the baseline's calls cross (the load
    // generator, HTTP/2, tonic on both sides) at the same rate on the same
    // cores. A p99 is at least the larger of its serial parts' p99s; their
    // sum is only a rough budget (tails need not coincide).
    let left = P99_TARGET_MS - commit_p99 - echo_p99;
    let verdict = if echo_p99 >= P99_TARGET_MS {
        format!(
            "The bare exchange alone is past the target: on this machine, with the load \
             generator beside the servers, no server answering through it at this rate keeps \
             its p99 under {P99_TARGET_MS} ms"
        )
    } else if commit_p99 >= P99_TARGET_MS {
        format!(
            "The commit alone is past the target: on this disk no broker that commits each \
             answer's audit entry before answering keeps its p99 under {P99_TARGET_MS} ms, \
             unless its commits get faster under load than alone"
        )
    } else if left <= 0.0 {
        format!(
            "Added, as a rough budget, the two reach the target already ({:.2} ms): on this \
             machine, with the load generator beside the servers, it leaves nothing for the \
             broker's own work",
            commit_p99 + echo_p99
        )
    } else {
        format!(
            "Added, as a rough budget, the two leave {left:.2} ms of the target for the \
             broker's own work and waits"
        )
    };
    let busy = |r: &LoadResult| 100.0 * r.cores_used() / cores.max(1) as f64;
    format!(
        "{commit}. The bare exchange at the same rate, on the same cores, had a p99 of its own \
         of {echo_p99:.2} ms (table above); an answer crosses it too. {verdict}. \
         At that rate the broker's run kept {:.0} % of the {cores} cores busy and the \
         baseline's {:.0} % (the CPU column's time over the measured seconds): at a fixed rate each call pays the wakes \
         and commits a busy peak shares, so half of the peak's calls is not half of the \
         machine, and waits for a core lengthen every hand-off",
        busy(&q.broker_half),
        busy(&q.echo_half),
    )
}

/// p99 at half of peak, in ms, that the design asks for.
const P99_TARGET_MS: f64 = 5.0;

/// Query throughput, govbus / bare tonic, that the design asks for.
const QUERY_TARGET: f64 = 0.7;

/// Ingest throughput, govbus / raw rdkafka, that the design asks for.
const INGEST_TARGET: f64 = 0.3;

const TABLE_HEAD: &str = "| server | calls/s | p50 ms | p99 ms | p99.9 ms | CPU µs / call |\n\
                          |---|---:|---:|---:|---:|---:|\n";

fn row(label: &str, r: &LoadResult) -> String {
    format!(
        "| {label} | {:.0} | {} | {:.0} |\n",
        r.per_second(),
        latency_cells(r),
        r.cpu_us_per_call()
    )
}

/// How much of the machine its host took during these measurements: on a
/// shared VM one reason (not the only one, docs/PROFILING.md) why figures
/// of one build move between runs.
fn steal_line(results: [&LoadResult; 4]) -> String {
    let steal: Vec<f64> = results.iter().filter_map(|r| r.steal).collect();
    if steal.len() < results.len() {
        return "steal time: not measured (no /proc/stat)".into();
    }
    let (low, high) = steal
        .iter()
        .fold((f64::MAX, 0.0_f64), |(l, h), s| (l.min(*s), h.max(*s)));
    format!(
        "the host took {:.1}–{:.1} % of this machine's time during these four measurements \
         (steal in /proc/stat): time the VM did not run at all",
        low * 100.0,
        high * 100.0
    )
}

fn latency_cells(r: &LoadResult) -> String {
    format!("{:.2} | {:.2} | {:.2}", r.ms(0.5), r.ms(0.99), r.ms(0.999))
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl Report {
    pub fn render(&self, machine: &Machine, date: &str) -> String {
        let mut out = String::new();
        let commit = git(&["rev-parse", "--short", "HEAD"]);
        // Reports written by an earlier run do not make the code dirty.
        let dirty = if git(&["status", "--porcelain", "--", ".", ":!docs"]).is_empty() {
            ""
        } else {
            " (with uncommitted changes)"
        };
        let _ = writeln!(
            out,
            "# govbus benchmarks\n\n\
             Written by `make bench` (bench/, `govbus-bench`); every figure below comes from \
             one run on one machine, and every ratio compares two measurements of that same \
             run. Rerun after any large change; see docs/PROFILING.md for where the time goes.\n\n\
             - date: {date}\n- commit: {commit}{dirty}\n\
             - machine: {} × {}, {:.1} GiB memory, Linux {}\n\
             - showcase database: {}\n- Kafka: embedded librdkafka mock cluster (in-process, 1 broker)\n\
             - settings: {}\n",
            machine.cores,
            machine.cpu,
            machine.memory_gib,
            machine.kernel,
            self.backend,
            self.settings
        );
        self.render_query(&mut out, machine.cores);
        self.render_tls(&mut out);
        self.render_sizes(&mut out);
        self.render_ingest(&mut out);
        out
    }

    fn render_query(&self, out: &mut String, cores: usize) {
        let Some(q) = &self.query else { return };
        let ratio = q.broker_peak.per_second() / q.echo_peak.per_second();
        let p99 = q.broker_half.ms(0.99);
        let cpu_ratio = q.echo_peak.cpu_us_per_call() / q.broker_peak.cpu_us_per_call();
        let rate = q.half_rate;
        // CPU per call that the target leaves, and what the parts every
        // call must pass through cost alone.
        let budget = q.echo_peak.cpu_us_per_call() / QUERY_TARGET;
        let floor = q.echo_peak.cpu_us_per_call()
            + q.audit_alone.cpu_us_each()
            + q.read_alone.cpu_us_each();
        let _ = writeln!(
            out,
            "## Once-only queries: GetEvidence against a bare tonic server\n\n\
             The load generator (bench/src/load.rs) runs on its own Tokio runtime in the same \
             process as the servers and calls `GetEvidence` for citizens spread over the whole \
             showcase. *Peak* is a closed loop; *half load* is an open loop at half of the \
             broker's peak, each latency timed from when the call was due (no coordinated \
             omission). The baseline serves the same service and messages with one fixed \
             answer captured from the broker ({} bytes; requests {} bytes): no policy, \
             database or audit.\n\n{TABLE_HEAD}{}{}{}{}\n\
             - throughput ratio govbus / baseline: **{ratio:.3}** (target ≥ {QUERY_TARGET:.2}: {})\n\
             - p99 at half of peak: **{p99:.2} ms** (target < {P99_TARGET_MS} ms: {})\n\
             - CPU per call at peak, baseline / govbus: **{cpu_ratio:.2}** — the throughput \
             ratio if each kept both cores busy; where it is above the measured ratio, the \
             broker spent part of its peak waiting rather than computing (the CPU column: this \
             process — servers and load generator, all threads — over the measured seconds, and \
             on PostgreSQL the server's processes on this machine; at a fixed rate it includes the wakes \
             that a busy peak shares between calls)\n\
             - the floor of the parts: the bare exchange {:.1} µs CPU per call (the baseline \
             at peak, load generator included), an audit entry alone {:.1} (the broker's \
             appender, {} entries in groups of {}, one commit each: the largest group a peak \
             of {} callers makes) and a showcase read alone {:.1} (the broker's shared reader, \
             {} at once) make **{:.1} µs** per call before policy, consent, minimising, \
             tracing or hand-offs; {QUERY_TARGET:.2} of the baseline's throughput, with every \
             core as busy as the baseline keeps them, allows at most **{:.1} µs** per call \
             (its CPU per call / {QUERY_TARGET:.2}). {}; govbus spent {:.1} µs above the floor\n\
             - {}\n\
             - {}\n",
            q.reply_bytes,
            q.request_bytes,
            row("baseline (bare tonic), peak", &q.echo_peak),
            row("govbus broker, peak", &q.broker_peak),
            row(&format!("baseline at {rate:.0} calls/s"), &q.echo_half),
            row(
                &format!("govbus broker at {rate:.0} calls/s (half of peak)"),
                &q.broker_half
            ),
            verdict(ratio >= QUERY_TARGET),
            verdict(p99 < P99_TARGET_MS),
            q.echo_peak.cpu_us_per_call(),
            q.audit_alone.cpu_us_each(),
            q.audit_alone.count,
            q.group,
            q.group,
            q.read_alone.cpu_us_each(),
            q.group,
            floor,
            budget,
            floor_verdict(
                floor,
                budget,
                "no broker that audits and reads this way meets the target",
                "per call for the rest",
            ),
            q.broker_peak.cpu_us_per_call() - floor,
            tail_floor(q, cores),
            steal_line([&q.echo_peak, &q.broker_peak, &q.echo_half, &q.broker_half]),
        );
    }

    fn render_tls(&self, out: &mut String) {
        let (Some(q), Some(t)) = (&self.query, &self.tls) else {
            return;
        };
        let rate = q.half_rate;
        let _ = writeln!(
            out,
            "## The cost of mTLS\n\n\
             The same broker and showcase with mTLS on (TLS 1.3, ECDSA P-256 certificates, the \
             caller's identity from its certificate), the same load.\n\n{TABLE_HEAD}{}{}{}{}\n\
             - throughput with mTLS / without: **{:.2}**\n",
            row("plaintext, peak", &q.broker_peak),
            row("mTLS, peak", &t.peak),
            row(&format!("plaintext at {rate:.0} calls/s"), &q.broker_half),
            row(&format!("mTLS at {rate:.0} calls/s"), &t.half),
            t.peak.per_second() / q.broker_peak.per_second(),
        );
    }

    fn render_sizes(&self, out: &mut String) {
        let Some(first) = self.sizes.first() else {
            return;
        };
        let _ = writeln!(
            out,
            "## How cost grows with the showcase\n\n\
             One signed birth certificate per citizen, written straight into a fresh showcase \
             with the ingest's own SQL (bench/src/seed.rs), then queried as above. The fixed \
             rate is half of the peak at the smallest size, the same for every size. Bytes \
             are measured right after seeding: current table + history (the history holds \
             every version with its envelope; the current table says which version is \
             current) + indexes.\n\n\
             | records | seeded in s | database MiB | bytes / record | peak calls/s | p50 ms | p99 ms | p99.9 ms | p99 ms at {:.0} calls/s |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            first.at_fixed_rate.per_second()
        );
        for s in &self.sizes {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.0} | {:.0} | {} | {:.2} |",
                s.records,
                s.seeded.seconds,
                s.seeded.database_bytes as f64 / 1024.0 / 1024.0,
                s.seeded.table_bytes as f64 / s.records as f64,
                s.peak.per_second(),
                latency_cells(&s.peak),
                s.at_fixed_rate.ms(0.99)
            );
        }
        if let Some(last) = self.sizes.last().filter(|_| self.sizes.len() > 1) {
            let _ = writeln!(
                out,
                "\n- p99 at the fixed rate, largest / smallest showcase: **{:.2}×**; \
                 peak throughput, largest / smallest: **{:.2}**\n",
                last.at_fixed_rate.ms(0.99) / first.at_fixed_rate.ms(0.99),
                last.peak.per_second() / first.peak.per_second()
            );
        } else {
            out.push('\n');
        }
    }

    fn render_ingest(&self, out: &mut String) {
        let Some(i) = &self.ingest else { return };
        let ratio = i.govbus.per_second() / i.raw.per_second();
        // CPU per record that the target leaves with every core busy, and
        // what the parts every record must pass through cost alone.
        let budget = i.signatures.cores as f64 * 1e6 / (INGEST_TARGET * i.raw.per_second());
        let floor = i.raw.cpu_us_per_record()
            + i.publish_prepare.cpu_us_each()
            + i.signatures.check.as_secs_f64() * 1e6
            + i.store.cpu_us_each();
        let ms = |q: f64| i.freshness.value_at_quantile(q) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "## Ingest: adapter to showcase against raw rdkafka\n\n\
             govbus: {} records published through the adapter's gRPC `Publish` ({} publishers, \
             batches of {}; the adapter validates, signs each call's records under one \
             signature, produces idempotently and answers after Kafka's acknowledgement), \
             until all are current in the showcase (the broker checks every record — its \
             inclusion proof, each batch signature once — and binds the batch's values up to \
             two batches ahead of its one writer, which stores current + history in one \
             transaction per batch — while behind, synced on disk at least every 100 ms, at \
             once when caught up — then the offsets of what is synced; the run ends when \
             the last record Kafka took on each partition is current, the whole count is \
             checked once after). Baseline: the same number of \
             signed envelopes \
             ({} bytes each) produced by a bare rdkafka producer with the adapter's producer \
             settings and read by a bare consumer with the broker's fetch settings, on the \
             same cluster. Both clocks start with the clients connected and what they send \
             made: the baseline's envelopes, the publishers' records.\n\n\
             | path | records | seconds | records/s | CPU µs / record |\n|---|---:|---:|---:|---:|\n\
             | raw rdkafka produce + consume | {} | {:.2} | {:.0} | {:.1} |\n\
             | govbus adapter → Kafka → broker → showcase | {} | {:.2} | {:.0} | {:.1} |\n\n\
             - ingest ratio govbus / raw: **{ratio:.3}** (target ≥ {INGEST_TARGET:.2}: {})\n\
             - CPU per record, raw / govbus: **{:.3}** (this process, all threads — \
             publishers, adapter, mock cluster, broker, SQLite — and on PostgreSQL the \
             server's processes on this machine; steadier between runs than records/s, which moves with whatever \
             else shares the cores)\n\
             - each path's row is the fastest of {} runs, each with records of its own (raw \
             {} records/s; govbus {}): runs this short vary that much here, and the fastest \
             is the nearest to the machine's limit\n\
             - in govbus's fastest run the adapter had acknowledged every record after \
             {:.2} s; the rest is the broker catching up\n\
             - what the signatures alone allow: in batches of {} records under one \
             signature, signing costs {:.1} µs per record (adapter) and checking {:.1} µs \
             (broker: decode, owner, certificate, inclusion proof, the batch's Ed25519 \
             signature once, validation), on one core; on {} cores no ingest that signs and \
             checks that way can pass **{:.0} records/s** = {:.2} of the raw rate, before any \
             gRPC, Kafka or SQL work. Each record under a signature of its own: {:.1} µs to \
             sign, {:.1} µs to check (measured in the same run)\n\
             - the floor of the parts: the raw Kafka path {:.1} µs CPU per record (its fastest \
             run), the adapter's work on a call alone {:.1} ({} records in calls of {}: each \
             request decoded from its bytes, then validated, completed, signed — {:.1} of it — \
             and encoded by the adapter's `Preparer`), checking {:.1}, and storing alone \
             {:.1} (the broker's SQL with nothing else running: {} records in batches of {}, \
             {:.0} records/s) make **{:.1} µs** per record before gRPC's transport, the \
             adapter's and the broker's Kafka calls, copies or hand-offs; {} of the raw rate \
             on {} cores allows at most **{:.1} µs** per record. {}; govbus spent {:.1} µs \
             above the floor\n\n\
             Freshness: one record's new version published while other publishers send \
             {:.0} records/s (half of the ingest peak); from the adapter's acknowledgement to \
             the first `GetEvidence` answer that shows the version (polled every ms), {} \
             samples: p50 **{:.1} ms**, p99 **{:.1} ms**, max {:.1} ms. Most of it is \
             the fetch wait: the embedded mock cluster answers a fetch on a partition \
             without new data only after `fetch.wait.max.ms` (the broker sets 50 ms), \
             where a Kafka broker answers as soon as data arrives; then the batch wait \
             (`batch_wait_ms`, 5 ms) and the write.\n",
            i.govbus.records,
            i.publishers,
            i.batch,
            i.envelope_bytes,
            i.raw.records,
            i.raw.elapsed.as_secs_f64(),
            i.raw.per_second(),
            i.raw.cpu_us_per_record(),
            i.govbus.records,
            i.govbus.elapsed.as_secs_f64(),
            i.govbus.per_second(),
            i.govbus.cpu_us_per_record(),
            verdict(ratio >= INGEST_TARGET),
            i.raw.cpu_us_per_record() / i.govbus.cpu_us_per_record(),
            i.raw_runs.len(),
            runs_text(&i.raw_runs),
            runs_text(&i.govbus_runs),
            i.govbus.published.unwrap_or_default().as_secs_f64(),
            i.signatures.batch,
            i.signatures.sign.as_secs_f64() * 1e6,
            i.signatures.check.as_secs_f64() * 1e6,
            i.signatures.cores,
            i.signatures.ceiling(),
            i.signatures.ceiling() / i.raw.per_second(),
            i.signatures.sign_alone.as_secs_f64() * 1e6,
            i.signatures.check_alone.as_secs_f64() * 1e6,
            i.raw.cpu_us_per_record(),
            i.publish_prepare.cpu_us_each(),
            i.publish_prepare.count,
            i.batch,
            i.signatures.sign.as_secs_f64() * 1e6,
            i.signatures.check.as_secs_f64() * 1e6,
            i.store.cpu_us_each(),
            i.store.count,
            i.store_batch,
            i.store.per_second(),
            floor,
            INGEST_TARGET,
            i.signatures.cores,
            budget,
            floor_verdict(
                floor,
                budget,
                "no ingest built of them meets the target",
                "per record for the rest (gRPC's transport, the Kafka calls, copies, \
                 hand-offs between tasks)",
            ),
            i.govbus.cpu_us_per_record() - floor,
            i.freshness_rate,
            i.freshness.len(),
            ms(0.5),
            ms(0.99),
            i.freshness.max() as f64 / 1000.0,
        );
    }
}

/// Records/s of a path's runs, in order: `159099 / 129729 / 153154`.
fn runs_text(runs: &[f64]) -> String {
    runs.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}
