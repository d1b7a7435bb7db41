//! The produce side of a workload through librdkafka (the `rdkafka` crate), so that the report's
//! figures do not come only from our own client.
//!
//! Method, as close to perf's as librdkafka allows: one `ThreadedProducer` per topic with the
//! workload's acks, `batch.size`, `linger.ms` and compression; messages of the workload's size
//! with null keys (librdkafka's sticky partitioner) or keys drawn as perf draws them; at a fixed
//! rate each message has an intended send time on a fixed schedule and publish latency counts
//! from it (coordinated omission corrected), at maximum rate from the moment it was handed to
//! librdkafka. Only messages intended after the warm-up count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;

use crate::constants::{LATENCY_US_MAX, RDKAFKA_QUEUE_KBYTES_MAX};
use crate::workload::WorkloadInfo;

/// Summary of a librdkafka run (same meanings as perf's report).
#[derive(Debug, Clone, Serialize)]
pub struct RdkafkaRun {
    pub workload: String,
    pub target_rate_msg_per_s: u64,
    pub measured_s: f64,
    pub messages: u64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub publish_us_p50: u64,
    pub publish_us_p99: u64,
    pub publish_us_p999: u64,
    pub publish_us_p9999: u64,
    pub publish_us_max: u64,
}

struct Ctx {
    measure_from_ns: u64,
    hist: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, intended_ns: Box<u64>) {
        let now = wall_ns();
        if *intended_ns < self.measure_from_ns {
            return;
        }
        match result {
            Ok(_) => {
                let us = (now.saturating_sub(*intended_ns) / 1000).clamp(1, LATENCY_US_MAX);
                self.hist.lock().expect("histogram lock").saturating_record(us);
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().expect("error lock").get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs the produce side of `w` at `rate` msg/s (0: maximum) against `addr`.
pub fn run(addr: &str, w: &WorkloadInfo, rate: u64) -> Result<RdkafkaRun> {
    let topic = format!("{}-rdkafka-{:06x}", w.name, (wall_ns() / 1000) & 0xff_ffff);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", addr).create()?;
    let new = NewTopic::new(&topic, w.partitions_per_topic as i32, TopicReplication::Fixed(1));
    let results = futures::executor::block_on(admin.create_topics([&new], &AdminOptions::new()))?;
    for r in results {
        if let Err((t, code)) = r {
            bail!("creating {t} through librdkafka: {code}");
        }
    }
    let start_ns = wall_ns();
    let measure_from_ns = start_ns + w.warmup_s * 1_000_000_000;
    let ctx = Ctx {
        measure_from_ns,
        hist: Mutex::new(Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let acks = if w.acks == "all" { "-1" } else { w.acks.as_str() };
    let producer: ThreadedProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", acks)
        .set("batch.size", w.batch_bytes.to_string())
        .set("linger.ms", w.linger_ms.to_string())
        .set("compression.type", &w.compression)
        .set("queue.buffering.max.kbytes", RDKAFKA_QUEUE_KBYTES_MAX.to_string())
        .set("enable.idempotence", "false")
        .create_with_context(ctx)
        .context("creating the librdkafka producer")?;
    let payload = vec![0x5au8; w.message_size];
    let interval_ns = if rate > 0 { 1e9 / rate as f64 } else { 0.0 };
    let end_ns = measure_from_ns + w.duration_s * 1_000_000_000;
    let mut sent = 0u64;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut key = String::new();
    loop {
        let now = wall_ns();
        if now >= end_ns {
            break;
        }
        let intended = if interval_ns > 0.0 {
            let t = start_ns + (sent as f64 * interval_ns) as u64;
            if t > now {
                std::thread::sleep(Duration::from_nanos((t - now).min(1_000_000)));
                continue;
            }
            t
        } else {
            now
        };
        key.clear();
        let k = match w.key_distributor.as_str() {
            "round-robin" => Some(sent % w.key_space.max(1)),
            "random" => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                Some(rng % w.key_space.max(1))
            }
            _ => None,
        };
        if let Some(k) = k {
            use std::fmt::Write as _;
            let _ = write!(key, "key-{k}");
        }
        let mut record = BaseRecord::with_opaque_to(&topic, Box::new(intended)).payload(&payload[..]);
        if k.is_some() {
            record = record.key(key.as_bytes());
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            match producer.send(r) {
                Ok(()) => {}
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // librdkafka's queue is full: wait for the broker (backpressure).
                    std::thread::sleep(Duration::from_micros(100));
                    record = Some(r);
                }
                Err((e, _)) => bail!("librdkafka send: {e}"),
            }
        }
        sent += 1;
    }
    let measured_s = (wall_ns() - measure_from_ns) as f64 / 1e9;
    let flushed = Instant::now();
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the librdkafka producer")?;
    let ctx = producer.context();
    let h = ctx.hist.lock().expect("histogram lock").clone();
    let messages = ctx.ok.load(Ordering::Acquire);
    let errors = ctx.errors.load(Ordering::Acquire);
    let first_error = ctx.first_error.lock().expect("error lock").clone();
    eprintln!("rdkafka: {messages} messages acknowledged, flush took {:?}", flushed.elapsed());
    let _ = futures::executor::block_on(admin.delete_topics(&[&topic], &AdminOptions::new()));
    Ok(RdkafkaRun {
        workload: w.name.clone(),
        target_rate_msg_per_s: rate,
        measured_s,
        messages,
        msg_per_s: messages as f64 / measured_s,
        mb_per_s: (messages * w.message_size as u64) as f64 / measured_s / 1e6,
        errors,
        first_error,
        publish_us_p50: h.value_at_quantile(0.5),
        publish_us_p99: h.value_at_quantile(0.99),
        publish_us_p999: h.value_at_quantile(0.999),
        publish_us_p9999: h.value_at_quantile(0.9999),
        publish_us_max: h.max(),
    })
}
