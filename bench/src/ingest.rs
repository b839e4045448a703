//! Ingest: records published through the adapter (batched gRPC) until all
//! are in the showcase, against raw rdkafka producing and consuming the same
//! bytes on the same cluster; and freshness, from a publish acknowledged to
//! the record visible in a `GetEvidence` answer.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use govbus_kafka::{KafkaSettings, Role};
use govbus_proto::v1::{
    PublishRequest, PublishResult, Record, agency_adapter_client::AgencyAdapterClient,
};
use govbus_security::Signer;
use govbus_store::Showcase;
use hdrhistogram::Histogram;
use prost::{Message, bytes::Bytes};
use rdkafka::{
    Message as _,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use tonic::transport::Channel;

use crate::{load::process_cpu, query, seed};

#[derive(Debug, Clone, Copy)]
pub struct IngestShape {
    pub records: u64,
    pub batch: u64,
    pub publishers: u64,
    /// How often the showcase is asked whether the last records are in:
    /// often in a timed run, rarely under callgrind, where every poll's
    /// instructions would count as the ingest's (`--part ingest`).
    pub poll_every: Duration,
}

impl IngestShape {
    /// How the timed runs poll: every 2 ms.
    pub const POLL_EVERY: Duration = Duration::from_millis(2);
}

/// Records/s through the adapter into the showcase.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub records: u64,
    pub elapsed: Duration,
    /// When the adapter had acknowledged the last record (govbus only).
    pub published: Option<Duration>,
    /// CPU time meanwhile (`load::process_cpu`): publishers, adapter, mock
    /// cluster, broker, SQLite, and a PostgreSQL server on this machine.
    pub cpu: Duration,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU per record: steadier between runs than records/s, which moves
    /// with whatever else the machine's two cores do meanwhile.
    pub fn cpu_us_per_record(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.records.max(1) as f64
    }
}

/// What the two signature steps of every record cost on one core: the
/// adapter signs, the broker checks (decode, owner, certificate, signature,
/// validation). Their sum bounds any ingest that signs and checks each
/// record, before Kafka, gRPC or SQL do anything.
#[derive(Debug, Clone, Copy)]
pub struct SignatureCost {
    /// Per record, signed in batches of `batch` (one signature per batch).
    pub sign: Duration,
    /// Per record, checked one after another by one checker, which checks
    /// each batch signature once.
    pub check: Duration,
    /// Per record, each signed alone (a batch of one).
    pub sign_alone: Duration,
    /// Per record, each under a signature of its own.
    pub check_alone: Duration,
    pub batch: u64,
    pub cores: usize,
}

impl SignatureCost {
    /// Records/s that signing and checking in batches alone would allow on
    /// every core.
    pub fn ceiling(&self) -> f64 {
        self.cores as f64 / (self.sign + self.check).as_secs_f64()
    }
}

/// The topic birth records are published on.
pub fn birth_topic(checker: &govbus_security::RecordChecker) -> anyhow::Result<String> {
    checker
        .catalog()
        .get(seed::RECORD_TYPE)
        .map(|spec| spec.topic.clone())
        .context("birth certificates in the catalog")
}

/// Each record's message key (its subject) and envelope, as Kafka carries
/// them.
pub fn envelopes(records: &[Record]) -> Vec<(String, Bytes)> {
    records
        .iter()
        .map(|record| (record.subject_id.clone(), record.encode_to_vec().into()))
        .collect()
}

/// Checks each envelope as the broker does when it comes off `topic`.
pub fn check_envelopes(
    checker: &govbus_security::RecordChecker,
    topic: &str,
    envelopes: &[(String, Bytes)],
) -> anyhow::Result<()> {
    for (subject, envelope) in envelopes {
        checker
            .check(topic, subject.as_bytes(), envelope.clone())
            .map_err(|reason| anyhow::anyhow!("a signed record fails its check: {reason}"))?;
    }
    Ok(())
}

/// Times signing and checking `samples` birth records, in batches of `batch`
/// and one by one.
pub fn signature_cost(
    signer: &Signer,
    checker: &govbus_security::RecordChecker,
    samples: u64,
    batch: u64,
) -> anyhow::Result<SignatureCost> {
    let topic = birth_topic(checker)?;
    let check = |records: &[Record]| -> anyhow::Result<Duration> {
        let envelopes = envelopes(records);
        let started = Instant::now();
        check_envelopes(checker, &topic, &envelopes)?;
        Ok(started.elapsed())
    };
    let unsigned = |from: u64, to: u64| -> Vec<Record> {
        (from..to)
            .map(|n| seed::unsigned_birth(signer, n, 1))
            .collect()
    };
    let mut cost = SignatureCost {
        sign: Duration::ZERO,
        check: Duration::ZERO,
        sign_alone: Duration::ZERO,
        check_alone: Duration::ZERO,
        batch,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut from = 0;
    while from < samples {
        let to = (from + batch).min(samples);
        let mut records = unsigned(from, to);
        let started = Instant::now();
        signer.sign_all(&mut records)?;
        cost.sign += started.elapsed();
        cost.check += check(&records)?;

        let mut records = unsigned(from, to);
        let started = Instant::now();
        for record in &mut records {
            signer.sign(record)?;
        }
        cost.sign_alone += started.elapsed();
        cost.check_alone += check(&records)?;
        from = to;
    }
    for total in [
        &mut cost.sign,
        &mut cost.check,
        &mut cost.sign_alone,
        &mut cost.check_alone,
    ] {
        *total /= samples as u32;
    }
    Ok(cost)
}

/// Unsigned births of citizens `from..to`, as an agency would send them.
pub fn births(from: u64, to: u64, version: u64) -> Vec<Record> {
    (from..to)
        .map(|n| govbus_tests::birth_record(&seed::citizen(n), version, "Aziza"))
        .collect()
}

/// Publishes `records` in one call; every one must be accepted. Returns
/// where Kafka put each, in order.
async fn publish(
    client: &mut AgencyAdapterClient<Channel>,
    records: Vec<Record>,
) -> anyhow::Result<Vec<PublishResult>> {
    let reply = client
        .publish(PublishRequest { records })
        .await?
        .into_inner();
    let accepted = reply
        .results
        .iter()
        .filter(|r| r.outcome == govbus_proto::v1::PublishOutcome::Accepted as i32)
        .count();
    anyhow::ensure!(
        accepted == reply.results.len(),
        "{} of {} records not accepted: {:?}",
        reply.results.len() - accepted,
        reply.results.len(),
        reply.results.iter().find(|r| !r.error.is_empty())
    );
    Ok(reply.results)
}

/// The citizen of the last record (highest offset) Kafka took on each
/// partition.
type LastOnPartition = HashMap<i32, (i64, u64)>;

fn note_last(last: &mut LastOnPartition, partition: i32, offset: i64, citizen: u64) {
    let slot = last.entry(partition).or_insert((offset, citizen));
    if offset > slot.0 {
        *slot = (offset, citizen);
    }
}

/// Waits until the last record of every partition is in the showcase. The
/// broker stores each partition's records in offset order, so then all are;
/// a count of the whole showcase, polled, would itself cost the run much
/// CPU (it reads every page of an index) and is taken once, at the end.
async fn wait_for_last(
    showcase: &Showcase,
    last: LastOnPartition,
    expected: i64,
    poll_every: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut waiting: Vec<u64> = last.into_values().map(|(_, citizen)| citizen).collect();
    while !waiting.is_empty() {
        let mut still = Vec::with_capacity(waiting.len());
        for citizen in waiting {
            if showcase
                .current(seed::RECORD_TYPE, &seed::citizen(citizen))
                .await?
                .is_empty()
            {
                still.push(citizen);
            }
        }
        waiting = still;
        anyhow::ensure!(
            Instant::now() < deadline,
            "the showcase never received the last record of every partition"
        );
        if !waiting.is_empty() {
            tokio::time::sleep(poll_every).await;
        }
    }
    let count = showcase.count().await?;
    anyhow::ensure!(
        count >= expected,
        "the showcase holds {count} records after the last of every partition; expected \
         {expected}: records were skipped (an offset reset? the embedded cluster keeps only \
         ~5 MB per partition, see the broker's log)"
    );
    Ok(())
}

/// Publishes `shape.records` new citizens (after `first`) through the
/// adapter and waits until the showcase holds `first + records` of them.
pub async fn through_govbus(
    adapter: &query::Target,
    showcase: &Showcase,
    first: u64,
    shape: IngestShape,
) -> anyhow::Result<Throughput> {
    // The publishers' connections and records are made before the clock
    // starts, as the raw baseline's producer, consumer and envelopes are:
    // what is timed is the bus carrying them, not the load generator
    // making them up.
    let per_publisher = shape.records.div_ceil(shape.publishers);
    let mut publishers = Vec::new();
    for p in 0..shape.publishers {
        let client = AgencyAdapterClient::new(query::connect(adapter).await?);
        let from = first + p * per_publisher;
        let to = (from + per_publisher).min(first + shape.records);
        let calls: Vec<(u64, Vec<Record>)> = (from..to)
            .step_by(usize::try_from(shape.batch)?)
            .map(|at| (at, births(at, (at + shape.batch).min(to), 1)))
            .collect();
        publishers.push((client, calls));
    }
    let (started, cpu_before) = (Instant::now(), process_cpu());
    let mut tasks = Vec::new();
    for (mut client, calls) in publishers {
        tasks.push(tokio::spawn(async move {
            let mut last = LastOnPartition::new();
            for (at, records) in calls {
                let results = publish(&mut client, records).await?;
                for (citizen, r) in (at..).zip(results) {
                    note_last(&mut last, r.partition, r.offset, citizen);
                }
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = LastOnPartition::new();
    for task in tasks {
        for (partition, (offset, citizen)) in task.await?? {
            note_last(&mut last, partition, offset, citizen);
        }
    }
    let published = started.elapsed();
    wait_for_last(
        showcase,
        last,
        (first + shape.records) as i64,
        shape.poll_every,
    )
    .await?;
    Ok(Throughput {
        records: shape.records,
        elapsed: started.elapsed(),
        published: Some(published),
        cpu: process_cpu().saturating_sub(cpu_before),
    })
}

/// The same bytes (signed envelopes of the same size, keyed by citizen)
/// produced with the adapter's producer settings to a fresh topic and
/// consumed by one plain consumer with the broker's fetch settings.
pub async fn through_raw_rdkafka(
    kafka: &KafkaSettings,
    signer: &Signer,
    shape: IngestShape,
) -> anyhow::Result<Throughput> {
    let topic = format!("bench.raw.{}", uuid::Uuid::now_v7().simple());
    let envelopes: Vec<(String, Vec<u8>)> =
        seed::signed_births(signer, 0..shape.records, shape.batch)?
            .into_iter()
            .map(|record| (record.subject_id.clone(), record.encode_to_vec()))
            .collect();
    let producer: FutureProducer = kafka
        .config_for(Role::Producer)
        .set("message.timeout.ms", "20000")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let consumer: StreamConsumer = kafka
        .config_for(Role::Consumer)
        .set("group.id", &topic)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .set("enable.auto.commit", "false")
        .create()?;
    // Create the topic and join the group before the clock starts.
    producer
        .send(
            FutureRecord::to(&topic).key("warmup").payload(b"warmup"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    consumer.subscribe(&[&topic])?;
    tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;

    let (started, cpu_before) = (Instant::now(), process_cpu());
    let consuming = tokio::spawn(async move {
        let mut seen = 0u64;
        while seen < shape.records {
            let message = consumer.recv().await?;
            // Touch the bytes as any consumer must.
            seen += u64::from(message.payload().is_some_and(|p| !p.is_empty()));
        }
        anyhow::Ok(())
    });
    let sends = envelopes.iter().map(|(key, bytes)| {
        producer.send(
            FutureRecord::to(&topic).key(key).payload(bytes),
            Duration::from_secs(10),
        )
    });
    for outcome in futures::future::join_all(sends).await {
        outcome.map_err(|(e, _)| e)?;
    }
    tokio::time::timeout(Duration::from_secs(600), consuming).await???;
    Ok(Throughput {
        records: shape.records,
        elapsed: started.elapsed(),
        published: None,
        cpu: process_cpu().saturating_sub(cpu_before),
    })
}

/// Freshness lag in microseconds: a probe publishes a new version of one
/// record, takes the adapter's acknowledgement as the start, and asks the
/// broker (every millisecond) until the answer carries that version; the
/// while, background publishers send new citizens from `first` on at
/// `background_rate` records per second.
pub async fn freshness(
    adapter: &query::Target,
    broker: &query::Target,
    probe_citizen: u64,
    first: u64,
    background_rate: f64,
    duration: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let stop = Instant::now() + duration;
    const BATCH: u64 = 50;
    let background = {
        let mut client = AgencyAdapterClient::new(query::connect(adapter).await?);
        let every = Duration::from_secs_f64(BATCH as f64 / background_rate.max(1.0));
        tokio::spawn(async move {
            let mut next = first;
            let mut tick = tokio::time::interval(every);
            while Instant::now() < stop {
                tick.tick().await;
                publish(&mut client, births(next, next + BATCH, 1)).await?;
                next += BATCH;
            }
            anyhow::Ok(())
        })
    };
    let mut probe = AgencyAdapterClient::new(query::connect(adapter).await?);
    let mut reader =
        govbus_proto::v1::once_only_client::OnceOnlyClient::new(query::connect(broker).await?);
    let mut lags = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut version = 1;
    while Instant::now() < stop {
        version += 1;
        publish(
            &mut probe,
            births(probe_citizen, probe_citizen + 1, version),
        )
        .await?;
        let acknowledged = Instant::now();
        loop {
            let reply = reader
                .get_evidence(query::request(probe_citizen))
                .await?
                .into_inner();
            let seen = reply
                .evidence
                .first()
                .and_then(|e| e.record.as_ref())
                .is_some_and(|r| r.version >= version);
            if seen {
                lags.record(acknowledged.elapsed().as_micros() as u64)?;
                break;
            }
            anyhow::ensure!(
                acknowledged.elapsed() < Duration::from_secs(60),
                "version {version} of the probe record never became visible"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    background.await??;
    Ok(lags)
}
