//! Metrics overhead benchmark: produce throughput of the real broker binary with metrics on
//! against the same broker with `--metrics-enabled false`, which installs no recorder.
//!
//! Workload: librdkafka (the rdkafka crate's `BaseProducer`, acks=1, `linger.ms` 1, no
//! compression, idempotence off) sends `value_bytes`-byte records without keys, as fast as its
//! queue takes them, to a topic of `partitions` partitions (spread over the broker's shards,
//! so produce requests also cross the mesh) for `secs` seconds, then flushes. Throughput is
//! the records the broker acknowledged over the time from the first send to the end of the
//! flush. Each run starts a fresh broker on a fresh data directory and stops it afterwards.
//!
//! It also reads the broker process's CPU time (user + system, from `/proc/<pid>/stat`, in
//! clock ticks) over the run, and reports CPU microseconds per 1,000 records: less sensitive
//! than throughput to what else the shared machine runs.
//!
//! Method: `reps` repetitions (7 by default) of one run with metrics on and one with metrics
//! off, back to back, the order alternating per repetition so that drift on a shared machine
//! hits both alike. The report quotes the median of each mode, their ratio, and the median of
//! the per-repetition ratios (each from two adjacent runs, so slow drift cancels). The target
//! (on within 2% of off: a ratio of at least 0.98) is printed as PASS or MISS and never fails
//! the run: timings are not correctness. The client runs on the same 2 cores as the broker,
//! so this measures the broker sharing the machine with its load generator, not its limit.
//!
//! Knobs, as `--name value` after `--` or as `BENCH_NAME`: `reps`, `secs`, `value_bytes`,
//! `partitions`. Output: a Markdown report on stdout and JSON in
//! `<target>/bench-reports/metrics_overhead.json` (`.smoke.json` for the smoke run).
//!
//! Run by `cargo test --all-targets` (no `--bench` argument), it runs one short repetition and
//! asserts only correctness: every record is acknowledged, and with metrics on `/metrics`
//! counts exactly the records acknowledged.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use common::{http_get, BrokerProcess};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde_json::json;

/// Longest the final flush of a run may take.
const FLUSH_WAIT_MAX: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
struct Settings {
    smoke: bool,
    reps: usize,
    secs: f64,
    value_bytes: usize,
    partitions: usize,
}

impl Settings {
    fn from_args() -> anyhow::Result<Settings> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let smoke = !args.iter().any(|a| a == "--bench");
        let knob = |name: &str| -> Option<String> {
            let flag = format!("--{}", name.replace('_', "-"));
            if let Some(i) = args.iter().position(|a| a.replace('_', "-") == flag) {
                return args.get(i + 1).cloned();
            }
            std::env::var(format!("BENCH_{}", name.to_uppercase())).ok()
        };
        fn parse<T: std::str::FromStr>(name: &str, v: Option<String>, default: T) -> anyhow::Result<T>
        where
            T::Err: Display,
        {
            match v {
                None => Ok(default),
                Some(s) => s.trim().parse().map_err(|e| anyhow::anyhow!("knob {name} = {s:?}: {e}")),
            }
        }
        let s = Settings {
            smoke,
            reps: parse("reps", knob("reps"), if smoke { 1 } else { 7 })?,
            secs: parse("secs", knob("secs"), if smoke { 0.3 } else { 4.0 })?,
            value_bytes: parse("value_bytes", knob("value_bytes"), 100)?,
            partitions: parse("partitions", knob("partitions"), 4)?,
        };
        if s.reps == 0 || s.secs <= 0.0 || s.partitions == 0 {
            bail!("reps, secs and partitions must be positive: {s:?}");
        }
        Ok(s)
    }
}

/// Counts the broker's answers to the producer's records.
#[derive(Default)]
struct Deliveries {
    acknowledged: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.acknowledged.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// What one run measured.
struct Run {
    records_per_sec: f64,
    records: u64,
    /// Broker CPU time per 1,000 records acknowledged.
    cpu_us_per_1000: f64,
}

/// CPU time (user + system) of process `pid` so far, in microseconds.
fn cpu_us(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields
        .get(11..13)
        .context("short /proc/<pid>/stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Ok(ticks * 1e6 / hz)
}

/// One run: a fresh broker, `secs` of produce, the flush.
fn run_once(s: &Settings, metrics_on: bool) -> anyhow::Result<Run> {
    let partitions = s.partitions.to_string();
    let mut broker = BrokerProcess::start(&[
        "--metrics-enabled",
        if metrics_on { "true" } else { "false" },
        "--default-partitions",
        &partitions,
    ]);
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "false")
        .set("compression.codec", "none")
        .set("acks", "1")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "60000")
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;
    let topic = "bench";
    let value = vec![b'x'; s.value_bytes];
    let pid = broker.pid().context("the broker is running")?;
    let cpu_before = cpu_us(pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(s.secs);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        match producer.send(BaseRecord::<(), [u8]>::to(topic).payload(&value)) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("queueing a record: {e}"),
        }
        if sent % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(FLUSH_WAIT_MAX).context("flushing")?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_us(pid)? - cpu_before;
    let ctx = producer.context();
    let (acknowledged, failed) = (ctx.acknowledged.load(Ordering::Relaxed), ctx.failed.load(Ordering::Relaxed));
    if failed > 0 || acknowledged != sent {
        bail!("{sent} records sent, {acknowledged} acknowledged, {failed} failed");
    }
    if s.smoke {
        let (status, body) = http_get(&broker.admin(), "/metrics");
        if metrics_on {
            let counted: f64 = body
                .lines()
                .filter(|l| l.starts_with("kafka_messages_in_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            if status != 200 || counted != acknowledged as f64 {
                bail!("/metrics answered {status} and counted {counted} records in, not {acknowledged}");
            }
        } else if status != 404 {
            bail!("/metrics answered {status} with metrics off");
        }
    }
    drop(producer);
    broker.stop();
    Ok(Run {
        records_per_sec: acknowledged as f64 / elapsed,
        records: acknowledged,
        cpu_us_per_1000: cpu * 1000.0 / acknowledged.max(1) as f64,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

fn main() -> anyhow::Result<()> {
    let s = Settings::from_args()?;
    eprintln!(
        "metrics_overhead ({}): {} x {:.1} s per mode, {}-byte records, {} partitions",
        if s.smoke { "smoke" } else { "full" },
        s.reps,
        s.secs,
        s.value_bytes,
        s.partitions
    );
    let (mut on, mut off, mut cpu_on, mut cpu_off, mut paired) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..s.reps {
        // Alternate which mode goes first, so drift hits both alike.
        let order = if rep % 2 == 0 { [true, false] } else { [false, true] };
        let mut pair = [0.0; 2];
        for metrics_on in order {
            let run = run_once(&s, metrics_on)?;
            eprintln!(
                "  rep {rep}: metrics {:<3} {:>10.0} records/s, {:>7.1} CPU us per 1000 records ({} records)",
                if metrics_on { "on" } else { "off" },
                run.records_per_sec,
                run.cpu_us_per_1000,
                run.records
            );
            pair[usize::from(metrics_on)] = run.records_per_sec;
            (if metrics_on { &mut on } else { &mut off }).push(run.records_per_sec);
            (if metrics_on { &mut cpu_on } else { &mut cpu_off }).push(run.cpu_us_per_1000);
        }
        paired.push(pair[1] / pair[0]);
    }
    let (on_median, off_median) = (median(&on), median(&off));
    let ratio = on_median / off_median;
    let paired_median = median(&paired);
    let (cpu_on_median, cpu_off_median) = (median(&cpu_on), median(&cpu_off));
    let verdict = |r: f64| if r >= 0.98 { "PASS" } else { "MISS" };
    println!("| metrics | median records/s | median broker CPU us per 1000 records | records/s of each run |");
    println!("|---|---:|---:|---|");
    println!("| off | {off_median:.0} | {cpu_off_median:.1} | {off:.0?} |");
    println!("| on | {on_median:.0} | {cpu_on_median:.1} | {on:.0?} |");
    println!();
    println!("on / off, medians: {ratio:.3} (target at least 0.98: {})", verdict(ratio));
    println!(
        "on / off, median of the {} back-to-back pairs: {paired_median:.3} ({})",
        paired.len(),
        verdict(paired_median)
    );
    println!("CPU per record, on / off: {:.3}", cpu_on_median / cpu_off_median);
    let report = json!({
        "benchmark": "metrics_overhead",
        "smoke": s.smoke,
        "reps": s.reps,
        "secs": s.secs,
        "value_bytes": s.value_bytes,
        "partitions": s.partitions,
        "records_per_sec_on": on,
        "records_per_sec_off": off,
        "median_on": on_median,
        "median_off": off_median,
        "ratio_on_off": ratio,
        "paired_ratios_on_off": paired,
        "paired_ratio_median": paired_median,
        "cpu_us_per_1000_records_on": cpu_on,
        "cpu_us_per_1000_records_off": cpu_off,
    });
    let dir = target_dir().join("bench-reports");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = if s.smoke {
        "metrics_overhead.smoke.json"
    } else {
        "metrics_overhead.json"
    };
    std::fs::write(dir.join(name), serde_json::to_string_pretty(&report)?).context("writing the JSON report")?;
    Ok(())
}
