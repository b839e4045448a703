//! The load generator: many concurrent gRPC callers over a few HTTP/2
//! connections, latencies into an HDR histogram.
//!
//! Two shapes: *closed loop* (each worker sends its next call as soon as the
//! last one answers) finds peak throughput; *open loop* (calls start on a
//! fixed schedule whatever the answers do) measures latency at a given
//! load, timed from when a call was due, so a stalled server shows up in
//! the tail instead of silently slowing the generator (coordinated omission).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::sync::{Mutex, Semaphore};

/// What one measured run produced.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub calls: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Microseconds.
    pub latency: Histogram<u64>,
    pub first_error: Option<String>,
    /// CPU time the whole process (servers and generator) used while the
    /// calls were measured.
    pub cpu: Duration,
    /// The share of the machine's time its host took (steal in
    /// `/proc/stat`) while the calls were measured; `None` off Linux.
    pub steal: Option<f64>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile` (0.5, 0.99, 0.999) in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        ms(&self.latency, quantile)
    }

    /// Microseconds of CPU per measured call, servers and generator
    /// together.
    pub fn cpu_us_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }

    /// Cores' worth of CPU the process used while the calls were measured.
    pub fn cores_used(&self) -> f64 {
        self.cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }

    pub fn summary(&self) -> String {
        format!(
            "{:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {:.0} µs CPU/call \
             ({} calls, {} errors)",
            self.per_second(),
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.cpu_us_per_call(),
            self.calls,
            self.errors
        )
    }
}

/// Whether CPU figures include the PostgreSQL server's processes on this
/// machine (set once, at start, when the showcase is on PostgreSQL).
static WITH_POSTGRES_SERVER: AtomicBool = AtomicBool::new(false);

pub fn count_postgres_server() {
    WITH_POSTGRES_SERVER.store(true, Ordering::Relaxed);
}

/// CPU time used so far by this process, all threads, and on PostgreSQL by
/// the server's processes on this machine: what a call or record costs
/// there is as much the broker's cost as its SQLite threads' are in the
/// SQLite runs.
pub fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let own = Duration::new(t.tv_sec as u64, t.tv_nsec as u32);
    if WITH_POSTGRES_SERVER.load(Ordering::Relaxed) {
        own + postgres_server_cpu()
    } else {
        own
    }
}

/// User + system time of every process named `postgres` (the server and
/// its backends), from `/proc/<pid>/stat`; none when the server runs
/// elsewhere. A backend that exits meanwhile takes its time with it: the
/// bench keeps its connections open while it measures.
fn postgres_server_cpu() -> Duration {
    // /proc counts in USER_HZ, which Linux fixes at 100.
    const TICKS_PER_SECOND: u64 = 100;
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: utime and stime are the 14th and 15th
        // fields, the 12th and 13th after the command's closing parenthesis.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for at in [11, 12] {
            ticks += fields
                .get(at)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// The machine's (steal, total) time in clock ticks, from the first line
/// of `/proc/stat` (`cpu user nice system idle iowait irq softirq steal …`).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // guest and guest_nice (9th, 10th) are already counted in user and nice.
    let total = ticks.iter().take(8).sum();
    Some((*ticks.get(7)?, total))
}

/// The process's CPU time, and the share of the machine's time its host
/// took, between `from` and `to`.
fn cpu_between(from: Instant, to: Instant) -> tokio::task::JoinHandle<(Duration, Option<f64>)> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let (start, ticks) = (process_cpu(), machine_ticks());
        tokio::time::sleep_until(to.into()).await;
        let cpu = process_cpu().saturating_sub(start);
        let steal = ticks.zip(machine_ticks()).and_then(|((s0, t0), (s1, t1))| {
            (t1 > t0).then(|| s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
        });
        (cpu, steal)
    })
}

/// Latencies in µs, 1 µs to 60 s at three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// The latency at `quantile` of `latency` (µs) in milliseconds.
pub fn ms(latency: &Histogram<u64>, quantile: f64) -> f64 {
    latency.value_at_quantile(quantile) as f64 / 1000.0
}

#[derive(Default)]
struct Tally {
    calls: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn count<E: std::fmt::Display>(&mut self, outcome: Result<(), E>) {
        self.calls += 1;
        if let Err(e) = outcome {
            self.errors += 1;
            self.first_error.get_or_insert_with(|| e.to_string());
        }
    }
}

/// `concurrency` workers call `call(worker)` back to back for `warmup`
/// (not measured) and then for `duration`.
pub async fn closed_loop<F, Fut, E>(
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    call: F,
) -> LoadResult
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + duration;
    let cpu = cpu_between(measure_from, end);
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let mut tally = Tally::default();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let outcome = call(worker).await;
                    if sent >= measure_from {
                        let _ = latency.record(sent.elapsed().as_micros() as u64);
                        tally.count(outcome);
                    }
                }
                (latency, tally)
            })
        })
        .collect();
    let mut latency = histogram();
    let mut total = Tally::default();
    let (cpu, steal) = cpu.await.expect("cpu clock does not panic");
    for worker in workers {
        let (h, tally) = worker.await.expect("load worker does not panic");
        latency.add(h).expect("same histogram bounds");
        total.calls += tally.calls;
        total.errors += tally.errors;
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
    }
    LoadResult {
        calls: total.calls,
        errors: total.errors,
        elapsed: duration,
        latency,
        first_error: total.first_error,
        cpu,
        steal,
    }
}

/// Starts `rate` calls per second for `warmup` + `duration`; each call's
/// latency counts from the moment it was due. At most `max_in_flight`
/// calls are outstanding; a call that cannot start on time is late, and
/// its lateness is in its latency.
pub async fn open_loop<F, Fut, E>(
    rate: f64,
    max_in_flight: usize,
    warmup: Duration,
    duration: Duration,
    call: F,
) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let call = Arc::new(call);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + duration;
    let cpu = cpu_between(measure_from, end);
    let shared = Arc::new(Mutex::new((histogram(), Tally::default())));
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n: u64 = 0;
    loop {
        let due = started + interval.mul_f64(n as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore stays open");
        let call = call.clone();
        let shared = shared.clone();
        tasks.spawn(async move {
            let outcome = call(n).await;
            let took = due.elapsed();
            drop(permit);
            if due >= measure_from {
                let mut guard = shared.lock().await;
                let _ = guard.0.record(took.as_micros() as u64);
                guard.1.count(outcome);
            }
        });
        n += 1;
        // Reap finished calls now and then so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let (cpu, steal) = cpu.await.expect("cpu clock does not panic");
    let (latency, tally) =
        std::mem::replace(&mut *shared.lock().await, (histogram(), Tally::default()));
    LoadResult {
        calls: tally.calls,
        errors: tally.errors,
        elapsed: duration,
        latency,
        first_error: tally.first_error,
        cpu,
        steal,
    }
}
