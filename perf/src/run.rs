//! Runs a workload: creates fresh topics, starts producer and consumer threads, ticks once a
//! second (progress line, series point), and builds the report.
//!
//! Producer: one sender thread and, per leader, one connection with a reader thread. The
//! sender generates messages on the pacer's schedule into one open batch per partition
//! (null keys fill one partition at a time, like Kafka's sticky partitioner; keyed messages go
//! to `crc32c(key) % partitions`), seals a batch when another record could take it past
//! `batch_bytes` (Kafka's `batch.size`: only a single larger record makes a larger batch), or
//! when it is `linger_ms` old and its connection has a free slot, and sends sealed batches, at
//! most one per partition per request, while fewer than `max_in_flight` requests are
//! outstanding. The reader matches responses to requests in order and records publish latency
//! for every message of a batch from its intended send time. Every value starts with that time
//! (8 bytes, big-endian wall-clock ns); consumers subtract it from the time a fetch response
//! arrived: end-to-end latency.
//!
//! Consumer: one thread, one connection per leader, plain fetches from positions it keeps
//! itself (no consumer group), starting at the latest offset (end-to-end) or the earliest
//! (consume mode). Partitions that got records move to the back of the next request.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{IoSlice, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProduceResponse};
use rustix::net::{SendAncillaryBuffer, SendFlags};

use crate::batch::{walk_values, Batch, BatchBuilder, SharedPayload, HEADER_BYTES, RECORD_OVERHEAD_BYTES_MAX};
use crate::client::{self, Conn, FETCH_VERSION, PRODUCE_VERSION};
use crate::constants::{
    ACCUMULATOR_BYTES_MAX, DRAIN_TIMEOUT_MS, DURATION_S_MAX, FETCH_BYTES_MAX, FETCH_WAIT_MS, MESSAGES_PER_PASS_MAX, OFFSET_OUT_OF_RANGE,
    PARTITION_FETCH_BYTES_MAX, PRODUCE_TIMEOUT_MS, REQUEST_BYTES_MAX, STATS_FLUSH_INTERVAL_MS,
};
use crate::keys::{Keys, KEY_BYTES_MAX};
use crate::report::{Backlog, Point, Report, Throughput};
use crate::stats::{wall_ns, Pacer, Sample};
use crate::workload::{KeyDistributor, Mode, OffsetReset, Workload};
use crate::{Error, Result};

/// How to run a workload.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// "host:port" of any broker of the cluster.
    pub bootstrap: String,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Messages per second over all producers, replacing the workload's `producer_rate`
    /// (required when the workload gives `rate_of_max`). 0 means maximum rate.
    pub rate: Option<u64>,
    /// Delete the run's topics at the end (as OMB does), so that runs do not fill the disk.
    pub delete_topics: bool,
}

/// State the threads share with the ticking main thread.
#[derive(Default)]
struct Shared {
    stop_producing: AtomicBool,
    stop_consuming: AtomicBool,
    /// Consumers have their positions but do not fetch yet (`consumer_backlog_mb`).
    consumers_held: AtomicBool,
    /// Counters and histograms flushed by the threads since the last tick.
    sample: Mutex<Sample>,
    /// Messages acknowledged (acks 1 or all) or written (acks 0), and consumed, so far.
    acked: AtomicU64,
    consumed: AtomicU64,
    /// Consumer positions moved after OFFSET_OUT_OF_RANGE (`consumer_offset_reset`), and the
    /// messages the moves skipped.
    offset_resets: AtomicU64,
    skipped: AtomicU64,
    /// Nanoseconds producers spent waiting for the broker (a full in-flight window, or a socket
    /// it had not drained), and in total.
    broker_wait_ns: AtomicU64,
    producer_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn flush(&self, local: &mut Sample) {
        let mut s = self.sample.lock().expect("no thread panics holding the sample lock");
        local.drain_into(&mut s);
    }

    fn take(&self) -> Sample {
        std::mem::take(&mut *self.sample.lock().expect("no thread panics holding the sample lock"))
    }

    /// Messages the consumers are done with: read, or skipped by an offset reset.
    fn consumed_or_skipped(&self) -> u64 {
        self.consumed.load(Ordering::Acquire) + self.skipped.load(Ordering::Acquire)
    }

    fn note_error(&self, e: String) {
        let mut first = self.first_error.lock().expect("no thread panics holding the error lock");
        first.get_or_insert(e);
    }
}

/// Runs `w` against `opts.bootstrap` and returns the report.
pub fn run(w: &Workload, opts: &RunOptions) -> Result<Report> {
    w.validate()?;
    let rate = match (opts.rate, w.rate_of_max) {
        (Some(r), _) => r,
        (None, Some(f)) => {
            return Err(Error::Workload {
                key: "rate_of_max",
                value: f.to_string(),
                reason: "needs a measured maximum: give the rate explicitly (perf --rate, or run it through bench-harness)".into(),
            })
        }
        (None, None) => w.producer_rate,
    };
    let started = Instant::now();
    let suffix = format!("{:06x}", (wall_ns() / 1000) & 0xff_ffff);
    let topics: Vec<String> = (0..w.topics).map(|i| format!("{}-{suffix}-{i}", w.name)).collect();
    let mut admin = Conn::open(&opts.bootstrap)?;
    client::create_topics(&mut admin, &topics, w.partitions_per_topic, &w.topic_config)?;
    let cluster = client::wait_for_leaders(&mut admin, &topics)?;
    drop(admin);

    let shared = Arc::new(Shared::default());
    let payload = SharedPayload::new(Bytes::from(payload(w.message_size - 8)));
    let keyed = w.key_distributor != KeyDistributor::None;
    let keys = Arc::new(Keys::new(if keyed { w.key_space } else { 0 }, w.partitions_per_topic as usize));
    let producers_total = (w.topics * w.producers_per_topic) as f64;
    let rate_per_producer = rate as f64 / producers_total;
    let mut ticker = Ticker::new(opts.progress);

    let start_producers = |shared: &Arc<Shared>| -> Vec<JoinHandle<Result<()>>> {
        let start_ns = wall_ns();
        let mut handles = Vec::new();
        for (t, topic) in topics.iter().enumerate() {
            for p in 0..w.producers_per_topic {
                let ctx = ProducerCtx {
                    id: p as usize,
                    topic: topic.clone(),
                    leaders: cluster.leaders[topic].clone(),
                    workload: w.clone(),
                    pacer: Pacer::new(start_ns, rate_per_producer),
                    shared: shared.clone(),
                    payload: payload.clone(),
                    keys: keys.clone(),
                };
                let name = format!("producer-{t}-{p}");
                handles.push(spawn(name, move || producer(ctx)));
            }
        }
        handles
    };
    let start_consumers = |shared: &Arc<Shared>, from: i64, record_e2e: bool| -> Result<Vec<JoinHandle<Result<()>>>> {
        let ready = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for (t, topic) in topics.iter().enumerate() {
            let leaders = &cluster.leaders[topic];
            for c in 0..w.consumers_per_topic {
                let partitions: Vec<i32> = (0..leaders.len() as i32)
                    .filter(|p| *p as u32 % w.consumers_per_topic == c)
                    .collect();
                if partitions.is_empty() {
                    continue;
                }
                let ctx = ConsumerCtx {
                    topic: topic.clone(),
                    partitions,
                    leaders: leaders.clone(),
                    from,
                    reset: w.consumer_offset_reset,
                    record_e2e,
                    shared: shared.clone(),
                    ready: ready.clone(),
                };
                handles.push(spawn(format!("consumer-{t}-{c}"), move || consumer(ctx)));
            }
        }
        // Positions first, so that nothing produced from now on is missed.
        while ready.load(Ordering::Acquire) < handles.len() {
            if handles.iter().any(|h| h.is_finished()) {
                join_all(handles)?;
                return Err(Error::Thread {
                    thread: "consumer".into(),
                    message: "stopped before it was ready".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(handles)
    };

    let mut backlog: Option<Backlog> = None;
    let report = match w.mode {
        Mode::Produce | Mode::EndToEnd => {
            let hold = w.consumer_backlog_mb > 0;
            shared.consumers_held.store(hold, Ordering::Release);
            let consumers = if w.mode == Mode::EndToEnd {
                start_consumers(&shared, -1, true)?
            } else {
                Vec::new()
            };
            let producers = start_producers(&shared);
            let stopped = || producers.iter().any(|h| h.is_finished()) || consumers.iter().any(|h| h.is_finished());
            if hold {
                backlog = Some(build_backlog(w, &shared, &mut ticker, stopped));
            }
            let warmup = Duration::from_secs(w.warmup_s);
            let duration = Duration::from_secs(w.duration_s);
            let drained_at = std::cell::Cell::new(None);
            let released = Instant::now();
            let backlog_messages = backlog.as_ref().map_or(0, |b| b.messages);
            ticker.run(&shared, "run", warmup, duration, || {
                // A backlog skipped by an offset reset was not read: no drain time.
                if drained_at.get().is_none()
                    && shared.skipped.load(Ordering::Acquire) == 0
                    && shared.consumed.load(Ordering::Acquire) >= backlog_messages
                {
                    drained_at.set(Some(released.elapsed()));
                }
                producers.iter().any(|h| h.is_finished())
            });
            if let Some(b) = backlog.as_mut() {
                b.drain_s = drained_at.get().map(|d| d.as_secs_f64());
            }
            shared.stop_producing.store(true, Ordering::Release);
            let produced = join_all(producers);
            if w.mode == Mode::EndToEnd {
                let deadline = Instant::now() + Duration::from_millis(DRAIN_TIMEOUT_MS);
                while shared.consumed_or_skipped() < shared.acked.load(Ordering::Acquire)
                    && Instant::now() < deadline
                    && !consumers.iter().any(|h| h.is_finished())
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            shared.stop_consuming.store(true, Ordering::Release);
            let consumed = join_all(consumers);
            produced?;
            consumed?;
            ticker.finish(&shared, false)
        }
        Mode::Consume => {
            let producers = start_producers(&shared);
            let fill = Duration::from_secs(w.duration_s);
            ticker.run(&shared, "fill", Duration::ZERO, fill, || producers.iter().any(|h| h.is_finished()));
            shared.stop_producing.store(true, Ordering::Release);
            join_all(producers)?;
            let target = shared.acked.load(Ordering::Acquire);
            ticker = Ticker::new(opts.progress);
            shared.take();
            let consumers = start_consumers(&shared, -2, false)?;
            let shared2 = shared.clone();
            ticker.run(&shared, "consume", Duration::ZERO, fill, || {
                shared2.consumed.load(Ordering::Acquire) >= target || consumers.iter().any(|h| h.is_finished())
            });
            shared.stop_consuming.store(true, Ordering::Release);
            join_all(consumers)?;
            // Reading the backlog may take less than one flush interval: what the consumers
            // flushed when they stopped belongs to the window.
            ticker.finish(&shared, true)
        }
    };
    if opts.delete_topics {
        let mut admin = Conn::open(&opts.bootstrap)?;
        client::delete_topics(&mut admin, &topics)?;
    }
    let first_error = shared.first_error.lock().expect("no thread panicked holding it").clone();
    let producer_ns = shared.producer_ns.load(Ordering::Acquire).max(1);
    Ok(Report {
        workload: w.clone(),
        bootstrap: opts.bootstrap.clone(),
        topics,
        target_rate_msg_per_s: rate,
        measured_s: report.measured_s,
        measured_from_s: report.measured_from.map_or(0.0, |t| t.duration_since(started).as_secs_f64()),
        publish: report.publish,
        consume: report.consume,
        publish_errors: report.total.publish_errors,
        first_error,
        publish_latency: report.total.publish.percentiles(),
        publish_round_trip_latency: report.total.publish_round_trip.percentiles(),
        end_to_end_latency: report.total.end_to_end.percentiles(),
        backlog,
        perf_cpu_cores: report.cpu_cores,
        producer_wait_fraction: shared.broker_wait_ns.load(Ordering::Acquire) as f64 / producer_ns as f64,
        consumer_offset_resets: shared.offset_resets.load(Ordering::Acquire),
        skipped_messages: shared.skipped.load(Ordering::Acquire),
        series: report.series,
    })
}

/// Incompressible filler for values (a fixed xorshift stream), as OMB uses a random payload.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn spawn(name: String, f: impl FnOnce() -> Result<()> + Send + 'static) -> JoinHandle<Result<()>> {
    let n = name.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            f().map_err(|e| Error::Thread {
                thread: n,
                message: e.to_string(),
            })
        })
        .expect("spawning a thread")
}

/// Joins every thread, then returns the first error.
fn join_all(handles: Vec<JoinHandle<Result<()>>>) -> Result<()> {
    let mut first = Ok(());
    for h in handles {
        let name = h.thread().name().unwrap_or("perf thread").to_owned();
        let r = h.join().unwrap_or_else(|_| {
            Err(Error::Thread {
                thread: name,
                message: "panicked".into(),
            })
        });
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// Process CPU time (user + system) in seconds, from /proc/self/stat. USER_HZ is 100 on every
/// Linux architecture this project targets.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// What the ticker measured.
struct Measured {
    measured_s: f64,
    /// When the measured window began; None if it never did.
    measured_from: Option<Instant>,
    publish: Throughput,
    consume: Throughput,
    total: Sample,
    cpu_cores: f64,
    series: Vec<Point>,
}

/// The main thread's once-a-second loop.
struct Ticker {
    progress: bool,
    /// Everything after warm-up, drain included (latencies).
    total: Sample,
    /// Counts within the measured window only (throughput).
    window: Sample,
    measured_s: f64,
    /// The start of the first interval that counted.
    measured_from: Option<Instant>,
    cpu_s: f64,
    series: Vec<Point>,
}

impl Ticker {
    fn new(progress: bool) -> Ticker {
        Ticker {
            progress,
            total: Sample::default(),
            window: Sample::default(),
            measured_s: 0.0,
            measured_from: None,
            cpu_s: 0.0,
            series: Vec::new(),
        }
    }

    /// Ticks until `warmup + duration` passed or `done()`; intervals after warm-up count.
    fn run(&mut self, shared: &Shared, label: &str, warmup: Duration, duration: Duration, done: impl Fn() -> bool) {
        let start = Instant::now();
        let measure_from = start + warmup;
        let end = measure_from + duration;
        let mut last = start;
        let mut cpu_at_window = if warmup.is_zero() { Some(cpu_s()) } else { None };
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        loop {
            let next = (last + Duration::from_secs(1)).min(end);
            let mut finished = false;
            while Instant::now() < next {
                if done() {
                    finished = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let now = Instant::now();
            let interval = shared.take();
            let secs = now.duration_since(last).as_secs_f64().max(1e-9);
            // An interval counts when it began after the warm-up: ticks fall on whole seconds
            // from the start, and so does the end of the warm-up.
            let measuring = last >= measure_from;
            if measuring {
                self.measured_from.get_or_insert(last);
                self.total.add(&interval);
                self.window.add(&interval);
                self.measured_s += secs;
                self.series.push(Point {
                    t_s: self.measured_s,
                    publish_msg_per_s: interval.published_messages as f64 / secs,
                    publish_mb_per_s: interval.published_bytes as f64 / secs / 1e6,
                    consume_msg_per_s: interval.consumed_messages as f64 / secs,
                    consume_mb_per_s: interval.consumed_bytes as f64 / secs / 1e6,
                    publish_p99_us: interval.publish.percentiles().map(|p| p.p99_us),
                    end_to_end_p99_us: interval.end_to_end.percentiles().map(|p| p.p99_us),
                });
            }
            if self.progress {
                let p99 = |h: &crate::stats::Latency| {
                    h.percentiles()
                        .map_or("-".to_owned(), |p| format!("{:.2}ms", p.p99_us as f64 / 1000.0))
                };
                let line = format!(
                    "[{label} {:>5.1}s{}] pub {:>9.0} msg/s {:>8.1} MB/s p99 {:>9} | cons {:>9.0} msg/s e2e p99 {:>9} | err {}",
                    now.duration_since(start).as_secs_f64(),
                    if measuring { "" } else { " warm-up" },
                    interval.published_messages as f64 / secs,
                    interval.published_bytes as f64 / secs / 1e6,
                    p99(&interval.publish),
                    interval.consumed_messages as f64 / secs,
                    p99(&interval.end_to_end),
                    interval.publish_errors
                );
                let mut err = std::io::stderr().lock();
                let _ = if tty {
                    write!(err, "\r{line}\x1b[K")
                } else {
                    writeln!(err, "{line}")
                };
            }
            last = now;
            if last >= measure_from && cpu_at_window.is_none() {
                cpu_at_window = Some(cpu_s());
            }
            if finished || now >= end {
                break;
            }
        }
        if self.progress && tty {
            let _ = writeln!(std::io::stderr());
        }
        if let Some(c) = cpu_at_window {
            self.cpu_s = cpu_s() - c;
        }
    }

    /// Adds what the threads flushed after the last tick (acknowledgements and receipts of
    /// messages sent in the window) to the latency totals, and to the window's counts if
    /// `tail_in_window`; builds the result.
    fn finish(mut self, shared: &Shared, tail_in_window: bool) -> Measured {
        let tail = shared.take();
        self.total.add(&tail);
        if tail_in_window {
            self.window.add(&tail);
        }
        let s = self.measured_s;
        Measured {
            measured_s: s,
            measured_from: self.measured_from,
            publish: Throughput::over(self.window.published_messages, self.window.published_bytes, s),
            consume: Throughput::over(self.window.consumed_messages, self.window.consumed_bytes, s),
            total: self.total,
            cpu_cores: self.cpu_s / s.max(1e-9),
            series: self.series,
        }
    }
}

/// A counting semaphore for requests in flight on one connection.
struct Window {
    used: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Window {
    fn new(max: usize) -> Window {
        Window {
            used: Mutex::new(0),
            freed: Condvar::new(),
            max,
        }
    }

    fn try_acquire(&self) -> bool {
        let mut used = self.used.lock().expect("window lock");
        if *used < self.max {
            *used += 1;
            true
        } else {
            false
        }
    }

    fn has_room(&self) -> bool {
        *self.used.lock().expect("window lock") < self.max
    }

    /// Waits until a slot is free or `timeout` passed; does not take the slot.
    fn wait_free(&self, timeout: Duration) {
        let used = self.used.lock().expect("window lock");
        if *used >= self.max {
            let _ = self.freed.wait_timeout(used, timeout).expect("window lock");
        }
    }

    fn release(&self) {
        *self.used.lock().expect("window lock") -= 1;
        self.freed.notify_one();
    }
}

struct ProducerCtx {
    id: usize,
    topic: String,
    /// Leader address by partition.
    leaders: Vec<String>,
    workload: Workload,
    pacer: Pacer,
    shared: Arc<Shared>,
    payload: SharedPayload,
    /// Message keys and their partitions (keyed workloads).
    keys: Arc<Keys>,
}

/// A sealed batch waiting to be sent, then waiting for its acknowledgement.
struct SealedBatch {
    partition: i32,
    bytes: Batch,
    /// Intended send time of each message, in order.
    intended_ns: Vec<u64>,
}

/// One produce request on the wire.
struct InFlight {
    correlation: i32,
    batches: Vec<SealedBatch>,
    /// When the request had been written to the socket (wall-clock ns).
    sent_ns: u64,
}

/// A producer's connection to one leader.
struct Link {
    stream: TcpStream,
    addr: String,
    correlation: i32,
    window: Arc<Window>,
    /// To the reader thread; `None` with acks 0 (no responses).
    to_reader: Option<SyncSender<InFlight>>,
    reader: Option<JoinHandle<Result<()>>>,
}

struct OpenBatch {
    builder: BatchBuilder,
    intended_ns: Vec<u64>,
    /// When the first message went in, for linger.
    opened_ns: u64,
}

fn producer(mut ctx: ProducerCtx) -> Result<()> {
    let w = &ctx.workload;
    let shared = ctx.shared.clone();
    let acks = w.acks_code();
    let n = ctx.leaders.len();
    let mut links: BTreeMap<String, Link> = BTreeMap::new();
    for addr in &ctx.leaders {
        if links.contains_key(addr) {
            continue;
        }
        let stream = client::connect(addr)?;
        let window = Arc::new(Window::new(w.max_in_flight));
        let (to_reader, reader) = if acks == 0 {
            (None, None)
        } else {
            let (tx, rx) = mpsc::sync_channel(w.max_in_flight + 1);
            let read_stream = stream.try_clone().map_err(|source| Error::Io {
                op: "cloning the socket of",
                addr: addr.clone(),
                source,
            })?;
            let r = ReaderCtx {
                stream: read_stream,
                addr: addr.clone(),
                rx,
                window: window.clone(),
                shared: shared.clone(),
                message_size: w.message_size as u64,
            };
            (Some(tx), Some(spawn(format!("reader-{}-{}", ctx.topic, ctx.id), move || reader(r))))
        };
        links.insert(
            addr.clone(),
            Link {
                stream,
                addr: addr.clone(),
                correlation: 0,
                window,
                to_reader,
                reader,
            },
        );
    }
    // A batch holds at most `batch_bytes`, or one record when that record is larger.
    let batch_capacity = w.batch_bytes.max(HEADER_BYTES + record_bytes_max(w));
    let mut open: Vec<OpenBatch> = (0..n)
        .map(|_| OpenBatch {
            builder: BatchBuilder::with_capacity(w.compression, batch_capacity).sharing(ctx.payload.clone()),
            intended_ns: Vec::new(),
            opened_ns: 0,
        })
        .collect();
    // Intended send times per batch, reserved likewise.
    let times_per_batch = w.batch_bytes / w.message_size.max(1) + 1;
    // Partitions with an open, non-empty batch, so linger checks do not scan them all.
    let mut open_list: Vec<usize> = Vec::new();
    let mut sealed: VecDeque<SealedBatch> = VecDeque::new();
    let mut buffered_bytes = 0usize;
    let mut sticky = ctx.id % n;
    let mut key_counter = ctx.id as u64;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d ^ ((ctx.id as u64 + 1) * 0x9e37_79b9);
    let linger_ns = w.linger_ms * 1_000_000;
    let mut frame = BytesMut::new();
    let mut local = Sample::default();
    let started = Instant::now();
    let mut last_flush = Instant::now();
    let mut waited_ns = 0u64;

    let seal = |open: &mut Vec<OpenBatch>, sealed: &mut VecDeque<SealedBatch>, p: usize| -> Result<()> {
        let ob = &mut open[p];
        if let Some(bytes) = ob.builder.finish()? {
            sealed.push_back(SealedBatch {
                partition: p as i32,
                bytes,
                intended_ns: std::mem::take(&mut ob.intended_ns),
            });
        }
        Ok(())
    };

    loop {
        let stopping = shared.stop_producing.load(Ordering::Acquire);
        let mut progressed = false;
        let now = wall_ns();
        if stopping {
            for p in open_list.drain(..) {
                seal(&mut open, &mut sealed, p)?;
            }
            if sealed.is_empty() {
                break;
            }
        } else {
            let mut generated = 0;
            let mut key_buf = [0u8; KEY_BYTES_MAX];
            while generated < MESSAGES_PER_PASS_MAX && buffered_bytes < ACCUMULATOR_BYTES_MAX {
                let Some(intended) = ctx.pacer.next_due(now) else { break };
                let (p, key) = match w.key_distributor {
                    KeyDistributor::None => (sticky, None),
                    KeyDistributor::RoundRobin | KeyDistributor::Random => {
                        let k = if w.key_distributor == KeyDistributor::RoundRobin {
                            key_counter += 1;
                            key_counter % w.key_space
                        } else {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            rng % w.key_space
                        };
                        let (key, p) = ctx.keys.get(k, &mut key_buf);
                        // The same as `p` when the topic has the partitions the workload asked
                        // for (the keys are computed for those); within range if not.
                        (p % n, Some(key))
                    }
                };
                let ob = &mut open[p];
                if ob.builder.is_empty() {
                    ob.opened_ns = now;
                    ob.intended_ns.reserve(times_per_batch);
                    open_list.push(p);
                }
                let stamp = intended.to_be_bytes();
                ob.builder.append_with_payload((intended / 1_000_000) as i64, key, &stamp);
                ob.intended_ns.push(intended);
                // Value bytes only, exactly what sending gives back: counting keys here leaked
                // their bytes until generation stopped for good (keyed workloads stalled).
                buffered_bytes += w.message_size;
                if batch_full(&ob.builder, w) {
                    seal(&mut open, &mut sealed, p)?;
                    open_list.retain(|&q| q != p);
                    if w.key_distributor == KeyDistributor::None {
                        sticky = (sticky + 1) % n;
                    }
                }
                generated += 1;
            }
            progressed |= generated > 0;
            // Linger: a batch old enough is ready, but it is sealed only when its connection
            // can send it now; until then it keeps filling, as Kafka's and librdkafka's
            // producers do, so a busy broker gets fewer, larger batches.
            let mut i = 0;
            while i < open_list.len() {
                let p = open_list[i];
                let can_send = acks == 0 || links[&ctx.leaders[p]].window.has_room();
                if now.saturating_sub(open[p].opened_ns) >= linger_ns && can_send {
                    seal(&mut open, &mut sealed, p)?;
                    open_list.swap_remove(i);
                    if w.key_distributor == KeyDistributor::None && p == sticky {
                        sticky = (sticky + 1) % n;
                    }
                } else {
                    i += 1;
                }
            }
        }

        // Send: one request per free slot, at most one batch per partition in each.
        while let Some(first) = sealed.front() {
            let addr = &ctx.leaders[first.partition as usize];
            let link = links.get_mut(addr).expect("a link per leader");
            if acks != 0 && !link.window.try_acquire() {
                break;
            }
            let mut batches: Vec<SealedBatch> = Vec::new();
            let mut request_bytes = 0usize;
            let mut rest = VecDeque::with_capacity(sealed.len());
            while let Some(b) = sealed.pop_front() {
                let fits = batches.is_empty() || request_bytes + b.bytes.len() <= REQUEST_BYTES_MAX;
                if fits && &ctx.leaders[b.partition as usize] == addr && !batches.iter().any(|x| x.partition == b.partition) {
                    request_bytes += b.bytes.len();
                    batches.push(b);
                } else {
                    rest.push_back(b);
                }
            }
            sealed = rest;
            for b in &batches {
                buffered_bytes = buffered_bytes.saturating_sub(b.intended_ns.len() * w.message_size);
            }
            waited_ns += send_produce(
                link,
                &ctx.topic,
                acks,
                batches,
                &mut frame,
                &mut local,
                w.message_size as u64,
                &shared,
            )?;
            progressed = true;
        }
        if !progressed {
            // Something ready (sealed, or lingered long enough) but no slot free: wait for the
            // broker. Else nothing is due: sleep until the next message or linger deadline.
            let ready = sealed.front().map(|b| b.partition as usize).or_else(|| {
                open_list
                    .iter()
                    .copied()
                    .find(|&p| now.saturating_sub(open[p].opened_ns) >= linger_ns)
            });
            if let Some(p) = ready {
                let t = Instant::now();
                let link = &links[&ctx.leaders[p]];
                if link.reader.as_ref().is_some_and(|r| r.is_finished()) {
                    break;
                }
                link.window.wait_free(Duration::from_millis(1));
                waited_ns += t.elapsed().as_nanos() as u64;
            } else {
                let mut wake = now + 1_000_000;
                if ctx.pacer.is_fixed_rate() {
                    wake = wake.min(next_wake_ns(&ctx.pacer, w, &open[sticky].builder));
                }
                for &p in &open_list {
                    wake = wake.min(open[p].opened_ns + linger_ns);
                }
                let now2 = wall_ns();
                if wake > now2 {
                    std::thread::sleep(Duration::from_nanos(wake - now2));
                }
            }
        }
        if last_flush.elapsed() >= Duration::from_millis(STATS_FLUSH_INTERVAL_MS) {
            shared.flush(&mut local);
            last_flush = Instant::now();
        }
    }
    shared.flush(&mut local);
    shared.broker_wait_ns.fetch_add(waited_ns, Ordering::AcqRel);
    shared.producer_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::AcqRel);
    // Closing the channels ends the readers once they have read every response.
    let mut result = Ok(());
    for (_, mut link) in links {
        link.to_reader = None;
        if let Some(r) = link.reader.take() {
            let joined = r.join().unwrap_or_else(|_| {
                Err(Error::Thread {
                    thread: format!("reader for {}", link.addr),
                    message: "panicked".into(),
                })
            });
            if result.is_ok() {
                result = joined;
            }
        }
    }
    result
}

/// When a fixed-rate producer next has to generate messages. Messages leave only in batches:
/// with the sticky partitioner (no keys) the open batch goes out when the message that fills
/// it is due, or when it has lingered long enough (the caller takes the earlier). Waking then
/// and generating every message due, each with its own intended time, changes no latency, and
/// spares the thread a wake-up for every gap between two messages (a few microseconds at these
/// rates, so one per timer slack). With keys, any partition's batch may fill next: wake per
/// message.
fn next_wake_ns(pacer: &Pacer, w: &Workload, sticky: &BatchBuilder) -> u64 {
    if w.key_distributor != KeyDistributor::None {
        return pacer.next_intended_ns();
    }
    // Records of the upper bound's size would fill the batch soonest, so the estimate wakes at
    // or before the filling one: the batch is full once the next record could overflow it.
    let record = record_bytes_max(w);
    let to_fill = w.batch_bytes.saturating_sub(sticky.uncompressed_bytes() + record) / record + 1;
    pacer.intended_ns_after(to_fill as u64 - 1)
}

/// An upper bound on the size of one of the workload's records in a batch.
fn record_bytes_max(w: &Workload) -> usize {
    w.message_size + KEY_BYTES_MAX + RECORD_OVERHEAD_BYTES_MAX
}

/// Whether the batch has no room left for another record within `batch_bytes`, as Kafka's
/// producer decides with `batch.size`: a batch is never sealed past it (unless its one record
/// is larger), so a 1 MiB batch stays under a broker's `max.message.bytes` of Kafka's default
/// (1,048,588 bytes). Sealed only once it reached `batch_bytes`, a batch could grow by a record
/// more, past that limit.
fn batch_full(b: &BatchBuilder, w: &Workload) -> bool {
    !b.is_empty() && b.uncompressed_bytes() + record_bytes_max(w) > w.batch_bytes
}

#[allow(clippy::too_many_arguments)]
fn send_produce(
    link: &mut Link,
    topic: &str,
    acks: i16,
    batches: Vec<SealedBatch>,
    frame: &mut BytesMut,
    local: &mut Sample,
    message_size: u64,
    shared: &Shared,
) -> Result<u64> {
    link.correlation = link.correlation.wrapping_add(1);
    let parts = batches.iter().map(|b| (b.partition, &b.bytes));
    let pieces = client::encode_produce(frame, link.correlation, topic, acks, PRODUCE_TIMEOUT_MS, parts)?;
    let blocked_ns = send_counting_blocked(&mut link.stream, &pieces).map_err(|source| Error::Io {
        op: "sending a produce request to",
        addr: link.addr.clone(),
        source,
    })?;
    match &link.to_reader {
        Some(tx) => tx
            .send(InFlight {
                correlation: link.correlation,
                batches,
                sent_ns: wall_ns(),
            })
            .map_err(|_| Error::Thread {
                thread: format!("reader for {}", link.addr),
                message: "stopped".into(),
            })?,
        None => {
            // acks 0: the write is all the acknowledgement there is.
            let now = wall_ns();
            let mut count = 0;
            for b in &batches {
                for &t in &b.intended_ns {
                    local.publish.record_between(t, now);
                }
                count += b.intended_ns.len() as u64;
            }
            local.published_messages += count;
            local.published_bytes += count * message_size;
            shared.acked.fetch_add(count, Ordering::AcqRel);
        }
    }
    Ok(blocked_ns)
}

/// Writes all of `pieces` (one frame, in order, with vectored sends), and returns the
/// nanoseconds spent blocked because the socket's send buffer was full: the broker was not
/// reading, so the producer waited for it as it does for a free in-flight slot. What the socket
/// takes at once is copied without blocking and not counted; only after a send that would block
/// does the rest go out blocking, timed.
fn send_counting_blocked(stream: &mut TcpStream, pieces: &[&[u8]]) -> std::io::Result<u64> {
    let mut all: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut all[..];
    let mut blocked: Option<Instant> = None;
    while !slices.is_empty() {
        let flags = match blocked {
            None => SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            Some(_) => SendFlags::NOSIGNAL,
        };
        let batch = slices.len().min(IOV_MAX);
        match rustix::net::sendmsg(&*stream, &slices[..batch], &mut SendAncillaryBuffer::default(), flags) {
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::WOULDBLOCK) if blocked.is_none() => blocked = Some(Instant::now()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(blocked.map_or(0, |t| t.elapsed().as_nanos() as u64))
}

/// At most this many pieces go to one `sendmsg` (Linux's `UIO_MAXIOV`): a request to 1,000
/// partitions has 2,001, and a 1 MiB batch of 1 KiB values that refer to their payload about
/// 2,000 of its own.
const IOV_MAX: usize = 1024;

struct ReaderCtx {
    stream: TcpStream,
    addr: String,
    rx: Receiver<InFlight>,
    window: Arc<Window>,
    shared: Arc<Shared>,
    message_size: u64,
}

fn reader(mut r: ReaderCtx) -> Result<()> {
    let mut local = Sample::default();
    let mut last_flush = Instant::now();
    loop {
        let inflight = match r.rx.recv_timeout(Duration::from_millis(STATS_FLUSH_INTERVAL_MS)) {
            Ok(f) => f,
            Err(RecvTimeoutError::Timeout) => {
                r.shared.flush(&mut local);
                last_flush = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let frame = client::read_frame(&mut r.stream, &r.addr)?;
        let now = wall_ns();
        let response: ProduceResponse = client::decode_response(frame, ApiKey::Produce, PRODUCE_VERSION, inflight.correlation)?;
        let mut failed: Vec<(i32, i16)> = Vec::new();
        for t in &response.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    failed.push((p.index, p.error_code));
                }
            }
        }
        let mut ok = 0u64;
        for b in &inflight.batches {
            let count = b.intended_ns.len() as u64;
            if let Some((_, code)) = failed.iter().find(|(p, _)| *p == b.partition) {
                local.publish_errors += count;
                r.shared
                    .note_error(format!("produce to partition {}: {}", b.partition, crate::error::code_name(*code)));
                continue;
            }
            for &t in &b.intended_ns {
                local.publish.record_between(t, now);
                local.publish_round_trip.record_between(inflight.sent_ns, now);
            }
            ok += count;
        }
        local.published_messages += ok;
        local.published_bytes += ok * r.message_size;
        r.shared.acked.fetch_add(ok, Ordering::AcqRel);
        r.window.release();
        if last_flush.elapsed() >= Duration::from_millis(STATS_FLUSH_INTERVAL_MS) {
            r.shared.flush(&mut local);
            last_flush = Instant::now();
        }
    }
    r.shared.flush(&mut local);
    Ok(())
}

struct ConsumerCtx {
    topic: String,
    partitions: Vec<i32>,
    leaders: Vec<String>,
    /// -1: start at the latest offset; -2: at the earliest.
    from: i64,
    reset: OffsetReset,
    record_e2e: bool,
    shared: Arc<Shared>,
    ready: Arc<AtomicUsize>,
}

/// Holds the consumers until the producers have `consumer_backlog_mb` acknowledged (or stop,
/// or a consumer does), then lets them read; not measured.
fn build_backlog(w: &Workload, shared: &Shared, ticker: &mut Ticker, stopped: impl Fn() -> bool) -> Backlog {
    let target = (w.consumer_backlog_mb * 1_000_000).div_ceil(w.message_size as u64);
    let started = Instant::now();
    let forever = Duration::from_secs(DURATION_S_MAX);
    ticker.run(shared, "backlog", forever, Duration::ZERO, || {
        shared.acked.load(Ordering::Acquire) >= target || stopped()
    });
    let messages = shared.acked.load(Ordering::Acquire);
    shared.consumers_held.store(false, Ordering::Release);
    Backlog {
        mb: messages as f64 * w.message_size as f64 / 1e6,
        messages,
        build_s: started.elapsed().as_secs_f64(),
        drain_s: None,
    }
}

fn consumer(ctx: ConsumerCtx) -> Result<()> {
    let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for &p in &ctx.partitions {
        by_leader.entry(ctx.leaders[p as usize].clone()).or_default().push(p);
    }
    // Per leader: the connection, each partition's position, and the order to ask for them.
    let mut links: Vec<(Conn, BTreeMap<i32, i64>, Vec<i32>)> = Vec::new();
    for (addr, partitions) in by_leader {
        let mut conn = Conn::open(&addr)?;
        let positions = client::list_offsets(&mut conn, &ctx.topic, &partitions, ctx.from)?;
        links.push((conn, positions, partitions));
    }
    ctx.ready.fetch_add(1, Ordering::AcqRel);
    while ctx.shared.consumers_held.load(Ordering::Acquire) {
        if ctx.shared.stop_consuming.load(Ordering::Acquire) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut local = Sample::default();
    let mut last_flush = Instant::now();
    while !ctx.shared.stop_consuming.load(Ordering::Acquire) {
        for (conn, positions, order) in &mut links {
            let request = FetchRequest::default()
                .with_replica_id((-1).into())
                .with_max_wait_ms(FETCH_WAIT_MS)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_BYTES_MAX)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(client::topic_name(&ctx.topic))
                    .with_partitions(
                        order
                            .iter()
                            .map(|&p| (p, positions[&p]))
                            .map(|(p, offset)| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(offset)
                                    .with_current_leader_epoch(-1)
                                    .with_last_fetched_epoch(-1)
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(PARTITION_FETCH_BYTES_MAX)
                            })
                            .collect(),
                    )]);
            let response: FetchResponse = conn.call(ApiKey::Fetch, FETCH_VERSION, &request)?;
            let now = wall_ns();
            if response.error_code != 0 {
                return Err(Error::Broker {
                    api: "Fetch",
                    resource: ctx.topic.clone(),
                    code: response.error_code,
                });
            }
            let mut count = 0;
            let mut served = HashSet::new();
            let mut lost = Vec::new();
            for t in &response.responses {
                for p in &t.partitions {
                    if p.error_code == OFFSET_OUT_OF_RANGE && ctx.reset != OffsetReset::None {
                        lost.push(p.partition_index);
                        continue;
                    }
                    if p.error_code != 0 {
                        return Err(Error::Broker {
                            api: "Fetch",
                            resource: format!("{}-{}", ctx.topic, p.partition_index),
                            code: p.error_code,
                        });
                    }
                    let Some(records) = &p.records else { continue };
                    let record_e2e = ctx.record_e2e;
                    let walked = walk_values(records, |v| {
                        if record_e2e && v.len() >= 8 {
                            let sent = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                            local.end_to_end.record_between(sent, now);
                        }
                    })?;
                    if let Some(next) = walked.next_offset {
                        positions.insert(p.partition_index, next);
                        served.insert(p.partition_index);
                    }
                    local.consumed_messages += walked.records;
                    local.consumed_bytes += walked.value_bytes;
                    count += walked.records;
                }
            }
            ctx.shared.consumed.fetch_add(count, Ordering::AcqRel);
            if !lost.is_empty() {
                reset_positions(conn, &ctx, positions, &lost)?;
            }
            // Partitions that got records go to the back, as Kafka's consumers do: a response
            // holds at most FETCH_BYTES_MAX, and a fixed order would starve the last ones.
            order.sort_by_key(|p| served.contains(p));
        }
        if last_flush.elapsed() >= Duration::from_millis(STATS_FLUSH_INTERVAL_MS) {
            ctx.shared.flush(&mut local);
            last_flush = Instant::now();
        }
    }
    ctx.shared.flush(&mut local);
    Ok(())
}

/// Moves the positions of `lost` partitions (answered OFFSET_OUT_OF_RANGE) to where
/// `ctx.reset` says, and counts the messages skipped: those between the old position and the
/// new one (none when the new one is behind, as after truncation).
fn reset_positions(conn: &mut Conn, ctx: &ConsumerCtx, positions: &mut BTreeMap<i32, i64>, lost: &[i32]) -> Result<()> {
    let timestamp = ctx
        .reset
        .list_offsets_timestamp()
        .expect("only a consumer with a reset has lost partitions");
    let found = client::list_offsets(conn, &ctx.topic, lost, timestamp)?;
    let mut skipped = 0;
    for (p, to) in found {
        let from = positions.insert(p, to).unwrap_or(to);
        skipped += (to - from).max(0) as u64;
    }
    ctx.shared.offset_resets.fetch_add(lost.len() as u64, Ordering::AcqRel);
    ctx.shared.skipped.fetch_add(skipped, Ordering::AcqRel);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum of the kernel's largest send and receive buffers for TCP: a write larger than
    /// that cannot all be taken while the peer reads nothing.
    fn tcp_buffers_max_bytes() -> usize {
        ["/proc/sys/net/ipv4/tcp_wmem", "/proc/sys/net/ipv4/tcp_rmem"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).expect("TCP buffer limits");
                text.split_whitespace()
                    .last()
                    .and_then(|v| v.parse::<usize>().ok())
                    .expect("a number")
            })
            .sum()
    }

    /// A connection to a listener whose one accepted socket starts reading after `delay`, and
    /// counts what it read until the writer closes.
    fn reader_after(delay: Duration) -> (TcpStream, JoinHandle<usize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            std::thread::sleep(delay);
            let mut sink = Vec::new();
            std::io::Read::read_to_end(&mut s, &mut sink).unwrap()
        });
        (TcpStream::connect(addr).unwrap(), reader)
    }

    /// A write the socket takes at once blocks for nothing; one the broker must read first
    /// counts as time waiting for it. Either way every byte arrives.
    #[test]
    fn only_a_send_that_waits_for_a_full_socket_counts_as_waiting_for_the_broker() {
        let (mut stream, reader) = reader_after(Duration::ZERO);
        assert_eq!(send_counting_blocked(&mut stream, &[&[7u8; 100]]).unwrap(), 0);
        drop(stream);
        assert_eq!(reader.join().unwrap(), 100);

        // In 3,000 pieces, more than one sendmsg takes, some of them empty.
        let big = Bytes::from(vec![7u8; tcp_buffers_max_bytes() + (1 << 20)]);
        let step = big.len() / 1500;
        let pieces: Vec<&[u8]> = (0..1500)
            .flat_map(|i| {
                let end = if i == 1499 { big.len() } else { (i + 1) * step };
                [&big[i * step..end], &[][..]]
            })
            .collect();
        let (mut stream, reader) = reader_after(Duration::from_millis(200));
        assert!(send_counting_blocked(&mut stream, &pieces).unwrap() > 0);
        drop(stream);
        assert_eq!(reader.join().unwrap(), big.len());
    }

    fn workload(keys: &str) -> Workload {
        let text = format!(
            "name = \"w\"\nmode = \"produce\"\ntopics = 1\npartitions_per_topic = 16\nmessage_size = 1024\nkey_distributor = \"{keys}\"\n\
             producers_per_topic = 1\nproducer_rate = 100000\nbatch_bytes = 131072\nlinger_ms = 1\nduration_s = 10\n"
        );
        Workload::parse(&text, "test").expect("workload parses")
    }

    /// A sealed batch stays within `batch_bytes` (Kafka's `batch.size`), keys included, so a
    /// 1 MiB batch fits a broker's default `max.message.bytes` of 1,048,588; only a record larger
    /// than `batch_bytes` makes a batch of its own that is larger.
    #[test]
    fn batches_are_sealed_before_they_outgrow_batch_bytes() {
        for (message_size, batch_bytes) in [(1024, 1_048_576), (1024, 131_072), (100, 16_384), (5000, 4096)] {
            let mut w = workload("random");
            w.message_size = message_size;
            w.batch_bytes = batch_bytes;
            let mut b = BatchBuilder::new(w.compression);
            let value = vec![7u8; message_size];
            let key = [b'k'; KEY_BYTES_MAX];
            let mut records = 0;
            while !batch_full(&b, &w) {
                b.append(0, Some(&key), &[&value]);
                records += 1;
            }
            let bytes = b.finish().expect("batch finishes").expect("batch has records").len();
            if message_size < batch_bytes {
                assert!(bytes <= batch_bytes, "{bytes} bytes in a batch of at most {batch_bytes}");
                // Full means one more record of this size would not have fitted.
                assert!(
                    bytes + message_size + KEY_BYTES_MAX > batch_bytes,
                    "sealed early: {bytes} of {batch_bytes}"
                );
            } else {
                assert_eq!(records, 1, "a record larger than batch_bytes goes alone");
            }
        }
    }

    /// The sticky producer sleeps until the message that fills its batch is due, never past it.
    #[test]
    fn a_sticky_producer_wakes_when_the_message_filling_its_batch_is_due() {
        let w = workload("none");
        let mut pacer = Pacer::new(1_000_000_000, 100_000.0);
        let mut b = BatchBuilder::new(w.compression);
        let value = vec![0u8; w.message_size];
        let mut now = 0;
        let mut wakes = 0;
        // Fill one batch, generating only at the wake-ups the estimate asks for.
        while !batch_full(&b, &w) {
            now = now.max(next_wake_ns(&pacer, &w, &b));
            wakes += 1;
            while let Some(t) = pacer.next_due(now) {
                b.append((t / 1_000_000) as i64, None, &[&value]);
                if batch_full(&b, &w) {
                    // The filling message is generated no later than it is due.
                    assert_eq!(t, now, "woke after the filling message was due");
                    break;
                }
            }
        }
        assert!(b.count() > 100, "a 128 KiB batch of 1 KiB messages: {}", b.count());
        assert!(wakes <= 3, "{wakes} wake-ups for one batch");
        // With keys any partition may fill next: wake for the next message.
        let keyed = workload("random");
        assert_eq!(next_wake_ns(&pacer, &keyed, &b), pacer.next_intended_ns());
    }
}
