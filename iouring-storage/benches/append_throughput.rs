//! Append throughput benchmark: sustained MB/s and commit latency of `PartitionLog` under group
//! commit, each quoted as a ratio against the raw disk measured in the same run.
//!
//! Workload: for each batch size (1 KiB, 16 KiB and 1 MiB of whole Kafka v2 batch, header
//! included), `concurrency` producer tasks (8 by default) on one glommio executor pinned to CPU 0
//! each loop `append(batch)` then `wait_durable(last_offset + 1)` against one fresh log, until the
//! measurement time is up. Commit latency is one iteration: append call start to `wait_durable`
//! return. Throughput is the bytes of acknowledged batches over the time from the first append
//! to the last acknowledgement. MB/s means 10^6 bytes per second.
//!
//! Baselines, measured in the same run, in the same directory (so on the same filesystem and
//! device), with the same write size (the batch size rounded up to `DmaFile::alignment()`):
//! - raw bandwidth: glommio `DmaFile` writes at increasing positions, `writes_in_flight_max`
//!   of them in flight (the log's depth), into a file preallocated in `preallocate_step_bytes`
//!   steps exactly as the log grows its segments, with the final fdatasync inside the timing;
//! - raw fdatasync latency: a loop of one write of that size, then fdatasync, timed per
//!   iteration, into a file preallocated the same way.
//!
//! The latency table also prints a queueing floor: by Little's law, `concurrency` producers with
//! one batch each outstanding wait on average at least `concurrency * batch / raw bandwidth`,
//! whatever the log does; for large batches that floor, not fdatasync, bounds commit latency.
//!
//! The disk's durable frontier: what any appender could get from this disk at a given grouping,
//! with no log in the way. Sequential 1 MiB writes, 1, 2 or 4 in flight, with an fdatasync after
//! every 1, 2, 4 or 8 MiB that first waits for that group's writes; either the writer waits for
//! each fdatasync (stop and wait), or writes go on meanwhile with at most
//! `COMMITS_IN_FLIGHT_MAX` fdatasyncs in flight, as in the log (overlapped). A write's commit latency
//! runs from its submission to the end of the fdatasync covering it. Beside it, the log with 1 MiB
//! batches at 1, 2, 4, 8 and 16 producers. The 1 MiB targets are judged at the default producer
//! count, and again at the best point of each table that keeps commit p99 within the target: if
//! the frontier has no such point at 90% of raw bandwidth, no appender can meet both on this disk.
//!
//! For context it also measures 1 MiB writes with 32 in flight (the disk's best) and a growing
//! file without preallocation (the ext4 hazard in DESIGN.md: appends that extend the file take
//! the slow path).
//!
//! Method: every measurement runs `reps` times (5 by default), `secs` seconds each (2 by
//! default); repetitions interleave raw and log measurements so drift on a shared machine hits
//! both alike, and the report quotes the median of the repetitions. Each measurement uses a new
//! file or log, deleted afterwards. Targets are printed as PASS or MISS and never fail the run:
//! timings are not correctness.
//!
//! Knobs, as `--name value` after `--` or as the environment variable `BENCH_NAME`:
//! `dir` (default: a temporary directory under the cargo target directory, which must not be
//! tmpfs), `concurrency`, `reps`, `secs`, `sizes` (comma-separated batch bytes), and the log's
//! `write_buffer_bytes`, `writes_in_flight_max`, `preallocate_step_bytes`, `segment_bytes`;
//! `context 0` skips the raw 1 MiB context figures and `frontier 0` the durable frontier and the
//! producer sweep, to try knobs faster; `sweep` (comma-separated producer counts) sets the sweep;
//! `pattern 0` skips the broker's pattern (below).
//!
//! The broker's pattern: the broker's maximum-throughput workload replayed on the log alone,
//! with no network and no broker between. One executor per core, pinned, each with 8 logs and
//! 16 producers per log appending 128 KiB batches (16 partitions on 2 cores, 2 MiB outstanding
//! per partition, as bench-harness's `1-max-throughput.toml` leaves them). Each repetition first
//! measures the raw append bench-harness quotes the broker against (1 MiB writes, 4 in flight)
//! on one core, then the pattern on all of them; the report gives both, their ratio, and the
//! logs' commit rate, size and fdatasync time.
//!
//! Output: a Markdown report on stdout and JSON in `<target>/bench-reports/append_throughput.json`
//! (`append_throughput.smoke.json` for the smoke run), where `<target>` is `CARGO_TARGET_DIR` or
//! the workspace's `target/`.
//!
//! Run by `cargo test --all-targets` (no `--bench` argument), it runs a smoke version of a few
//! hundred milliseconds that takes every code path with tiny segments and buffers and asserts only
//! correctness: every acknowledged offset is durable, and the log reopened reads back every
//! acknowledged batch, contiguous and with a valid CRC.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Display;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use hdrhistogram::Histogram;
use iouring_storage::testing::build_batch;
use iouring_storage::{validate, CountCheck, LogConfig, LogStats, PartitionLog};
use serde_json::{json, Value};

/// glommio's io_uring rings need this much locked memory; below it the executor fails at `join`.
const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;

/// Writes in flight for the "disk's best" context figure; DESIGN.md's hazard was measured at 32.
const BEST_DEPTH: usize = 32;

/// The context figures use 1 MiB writes: large enough that the device, not the syscall, limits.
const CONTEXT_WRITE_BYTES: usize = 1024 * 1024;

/// The durable frontier and the producer sweep use the bandwidth target's 1 MiB batches; the
/// frontier's groups (MiB between fdatasyncs) and write depths span the log's operating points
/// from one producer to sixteen.
const FRONTIER_GROUPS_MIB: [usize; 4] = [1, 2, 4, 8];
const FRONTIER_DEPTHS: [usize; 3] = [1, 2, 4];

/// The broker's maximum-throughput workload replayed on the log alone, one executor per core:
/// 16 partitions over 2 cores, each taking a 128 KiB batch from each of 2 producers' 8
/// in-flight requests, so about 2 MiB outstanding per partition. Beside it, the raw append the
/// broker's figure is quoted against (bench-harness: 1 MiB writes, 4 in flight).
const PATTERN_LOGS_PER_CORE: usize = 8;
const PATTERN_PRODUCERS_PER_LOG: usize = 16;
const PATTERN_BATCH_BYTES: usize = 128 * 1024;
const PATTERN_RAW_DEPTH: usize = 4;

/// Targets from the issue.
const TARGET_BANDWIDTH_RATIO_MIN: f64 = 0.90;
const TARGET_COMMIT_P99_RATIO_MAX: f64 = 2.0;
const TARGET_BANDWIDTH_BATCH_BYTES: usize = 1024 * 1024;

/// A fixed clock: with `segment_ms` of a week, no segment rolls for age during the run.
const NOW_MS: i64 = 1_700_000_000_000;

/// Latencies are recorded in nanoseconds up to a minute, with 3 significant digits.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

type Res<T> = Result<T, String>;

/// Adds what was being done to an error, as text: errors cross the executor thread as strings.
trait Context<T> {
    fn ctx(self, what: impl Display) -> Res<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

#[derive(Debug, Clone)]
struct Settings {
    smoke: bool,
    /// Where files and logs under test are created; checked to be disk-backed.
    dir: PathBuf,
    report_path: PathBuf,
    concurrency: usize,
    reps: usize,
    secs: f64,
    batch_sizes: Vec<usize>,
    write_buffer_bytes: usize,
    writes_in_flight_max: usize,
    preallocate_step_bytes: u64,
    segment_bytes: u64,
    /// Whether to measure the raw 1 MiB context figures (off speeds up trying knobs).
    context: bool,
    /// Whether to measure the disk's durable frontier and the log's producer sweep, both with
    /// 1 MiB batches (needs 1 MiB among `batch_sizes`).
    frontier: bool,
    /// Producer counts of the sweep.
    sweep: Vec<usize>,
    /// Whether to replay the broker's maximum-throughput pattern on every core.
    pattern: bool,
}

impl Settings {
    fn from_args() -> Res<Settings> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let smoke = !args.iter().any(|a| a == "--bench");
        // A knob comes from `--name value`, else from `BENCH_NAME`.
        let knob = |name: &str| -> Option<String> {
            let flag = format!("--{}", name.replace('_', "-"));
            if let Some(i) = args.iter().position(|a| *a == flag || a.replace('_', "-") == flag) {
                return args.get(i + 1).cloned();
            }
            std::env::var(format!("BENCH_{}", name.to_uppercase())).ok()
        };
        fn parse<T: std::str::FromStr>(name: &str, v: Option<String>, default: T) -> Res<T>
        where
            T::Err: Display,
        {
            match v {
                None => Ok(default),
                Some(s) => s.trim().parse().ctx(format!("knob {name} = {s:?}")),
            }
        }
        let defaults = LogConfig::new(".");
        let target_dir = target_dir();
        let base_dir = match knob("dir") {
            Some(d) => PathBuf::from(d),
            None => target_dir.join("bench-tmp"),
        };
        let report_name = if smoke {
            "append_throughput.smoke.json"
        } else {
            "append_throughput.json"
        };
        let list = |name: &str, default: Vec<usize>| -> Res<Vec<usize>> {
            match knob(name) {
                None => Ok(default),
                Some(s) => s
                    .split(',')
                    .map(|x| x.trim().parse::<usize>().ctx(format!("knob {name} = {s:?}")))
                    .collect(),
            }
        };
        let sizes = list("sizes", vec![1024, 16 * 1024, 1024 * 1024])?;
        let sweep = list("sweep", vec![1, 2, 4, 8, 16])?;
        let mut s = Settings {
            smoke,
            dir: base_dir,
            report_path: target_dir.join("bench-reports").join(report_name),
            concurrency: parse("concurrency", knob("concurrency"), 8)?,
            reps: parse("reps", knob("reps"), 5)?,
            secs: parse("secs", knob("secs"), 2.0)?,
            batch_sizes: sizes,
            write_buffer_bytes: parse("write_buffer_bytes", knob("write_buffer_bytes"), defaults.write_buffer_bytes)?,
            writes_in_flight_max: parse("writes_in_flight_max", knob("writes_in_flight_max"), defaults.writes_in_flight_max)?,
            preallocate_step_bytes: parse(
                "preallocate_step_bytes",
                knob("preallocate_step_bytes"),
                defaults.preallocate_step_bytes,
            )?,
            segment_bytes: parse("segment_bytes", knob("segment_bytes"), defaults.segment_bytes)?,
            context: parse::<u8>("context", knob("context"), 1)? != 0,
            frontier: parse::<u8>("frontier", knob("frontier"), 1)? != 0,
            sweep,
            pattern: parse::<u8>("pattern", knob("pattern"), 1)? != 0,
        };
        if smoke {
            // Tiny buffers, steps and segments so a few batches take the buffer-full, preallocate
            // and roll paths; one short repetition, since only correctness is checked.
            s.reps = 1;
            s.secs = 0.03;
            s.write_buffer_bytes = 64 * 1024;
            s.preallocate_step_bytes = 256 * 1024;
            s.segment_bytes = 4 * 1024 * 1024;
            s.context = true;
            s.frontier = true;
            s.sweep = vec![2];
            s.pattern = true;
        }
        if s.concurrency == 0 || s.sweep.contains(&0) || s.reps == 0 || !s.secs.is_finite() || s.secs <= 0.0 || s.writes_in_flight_max == 0
        {
            return Err("concurrency, reps, secs and writes_in_flight_max must be positive".into());
        }
        if s.batch_sizes.iter().any(|&b| b <= iouring_storage::constants::BATCH_HEADER_BYTES) {
            return Err("every batch size must exceed the 61-byte batch header".into());
        }
        Ok(s)
    }

    fn log_config(&self, dir: &Path, batch_bytes: usize) -> LogConfig {
        let mut c = LogConfig::new(dir);
        c.write_buffer_bytes = self.write_buffer_bytes;
        c.writes_in_flight_max = self.writes_in_flight_max;
        c.preallocate_step_bytes = self.preallocate_step_bytes;
        c.segment_bytes = self.segment_bytes;
        c.batch_bytes_max = c.batch_bytes_max.max(batch_bytes);
        c
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the crate lives in the workspace")
            .join("target"),
    }
}

/// The filesystem type and source device holding `path`, from the longest matching mount point
/// in /proc/self/mountinfo.
fn filesystem_of(path: &Path) -> Res<(String, String)> {
    let path = path.canonicalize().ctx(format!("resolving {}", path.display()))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ctx("reading /proc/self/mountinfo")?;
    let mut best: Option<(usize, String, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fstype), Some(source)) = (fields.get(4), fields.get(dash + 1), fields.get(dash + 2)) else {
            continue;
        };
        let mount = mount.replace("\\040", " ");
        if path.starts_with(&mount) && best.as_ref().is_none_or(|(len, _, _)| mount.len() >= *len) {
            best = Some((mount.len(), fstype.to_string(), source.to_string()));
        }
    }
    best.map(|(_, t, s)| (t, s))
        .ok_or_else(|| format!("no mount point holds {}", path.display()))
}

/// Soft RLIMIT_MEMLOCK of this process, from /proc/self/limits (None: unlimited).
fn memlock_bytes() -> Res<Option<u64>> {
    let limits = std::fs::read_to_string("/proc/self/limits").ctx("reading /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .ok_or("no 'Max locked memory' in /proc/self/limits")?;
    let soft = line["Max locked memory".len()..].split_whitespace().next().unwrap_or("");
    if soft == "unlimited" {
        return Ok(None);
    }
    soft.parse().map(Some).ctx("parsing the memlock limit")
}

/// Percentiles of one latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Pcts {
    p50: f64,
    p99: f64,
    p999: f64,
    samples: u64,
}

impl Pcts {
    fn of(h: &Histogram<u64>) -> Pcts {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Pcts {
            p50: us(0.50),
            p99: us(0.99),
            p999: us(0.999),
            samples: h.len(),
        }
    }

    fn median(reps: &[Pcts]) -> Pcts {
        let m = |f: fn(&Pcts) -> f64| median(&reps.iter().map(f).collect::<Vec<_>>());
        Pcts {
            p50: m(|p| p.p50),
            p99: m(|p| p.p99),
            p999: m(|p| p.p999),
            samples: reps.iter().map(|p| p.samples).sum(),
        }
    }

    fn json(&self) -> Value {
        json!({ "p50": self.p50, "p99": self.p99, "p999": self.p999, "samples": self.samples })
    }
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

fn median(xs: &[f64]) -> f64 {
    assert!(!xs.is_empty(), "median of no repetitions");
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// All repetitions of one batch size.
#[derive(Debug, Default)]
struct SizeReps {
    batch_bytes: usize,
    write_bytes: usize,
    raw_mbps: Vec<f64>,
    raw_fdatasync: Vec<Pcts>,
    log_mbps: Vec<f64>,
    commit: Vec<Pcts>,
    /// Append call alone (lock wait, copy, backpressure from writes in flight).
    append: Vec<Pcts>,
    /// Acknowledgements per distinct durable end seen: a lower bound on batches per fdatasync.
    batches_per_sync: Vec<f64>,
}

/// Raw 1 MiB bandwidth in several file set-ups, for context.
#[derive(Debug, Default)]
struct ContextReps {
    prealloc_log_depth: Vec<f64>,
    prealloc_best_depth: Vec<f64>,
    growing_log_depth: Vec<f64>,
    growing_best_depth: Vec<f64>,
}

/// One point of the disk's durable frontier (`raw_grouped`, 1 MiB writes), all repetitions.
#[derive(Debug, Default)]
struct FrontierReps {
    group_bytes: usize,
    depth: usize,
    overlap: bool,
    mbps: Vec<f64>,
    commit: Vec<Pcts>,
}

/// The log with 1 MiB batches at one producer count, all repetitions.
#[derive(Debug, Default)]
struct SweepReps {
    producers: usize,
    mbps: Vec<f64>,
    commit: Vec<Pcts>,
}

#[derive(Debug)]
struct Measurements {
    alignment: u64,
    sizes: Vec<SizeReps>,
    context: ContextReps,
    frontier: Vec<FrontierReps>,
    sweep: Vec<SweepReps>,
}

/// Opens a file for O_DIRECT reads and writes, as the log opens its segments.
async fn open_dma(path: &Path) -> Res<Rc<DmaFile>> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .map(Rc::new)
        .ctx(format!("opening {}", path.display()))
}

/// Opens a non-empty file first, so glommio's once-per-device IOPOLL probe reads real data
/// (the log's `segment::probe_device` does the same): were the first DMA file opened on the
/// device an empty raw file, the probe would end at EOF, "succeed", and route every later
/// read and write through the poll ring, which this virtio disk refuses. Returns the alignment.
async fn probe_device(base: &Path) -> Res<u64> {
    let d = scratch(base, "probe")?;
    let path = d.path().join("probe");
    std::fs::write(&path, vec![0xa5u8; 64 * 1024]).ctx(format!("writing {}", path.display()))?;
    let file = DmaFile::open(&path).await.ctx(format!("opening {}", path.display()))?;
    let alignment = file.alignment();
    file.close().await.ctx("closing the probe")?;
    Ok(alignment)
}

/// An aligned buffer of `len` bytes of non-zero data (zeros could be special-cased by a device).
fn pattern_buffer(file: &DmaFile, len: usize) -> DmaBuffer {
    let mut b = file.alloc_dma_buffer(len);
    for (i, byte) in b.as_bytes_mut().iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    b
}

/// Grows the file ahead of a write reaching `end`, the way the log's `flush_locked` does: to
/// at least one more step. `step` None is the growing-file variant: never preallocate.
async fn ensure_allocated(file: &DmaFile, allocated: &mut u64, end: u64, step: Option<u64>) -> Res<()> {
    if let Some(step) = step {
        if end > *allocated {
            let target = end.max(*allocated + step);
            file.pre_allocate(target, false).await.ctx(format!("preallocating to {target}"))?;
            *allocated = target;
        }
    }
    Ok(())
}

fn check_write(r: Res<usize>, len: usize) -> Res<()> {
    match r? {
        n if n == len => Ok(()),
        n => Err(format!("short write: {n} of {len} bytes")),
    }
}

/// Sequential O_DIRECT writes of `write_bytes` (rounded up to the alignment), `depth` in flight,
/// for `secs`; the final fdatasync is inside the timing. Returns MB/s.
async fn raw_bandwidth(path: &Path, write_bytes: usize, depth: usize, step: Option<u64>, secs: Duration) -> Res<f64> {
    let file = open_dma(path).await?;
    let len = file.align_up(write_bytes as u64) as usize;
    let buf = Rc::new(pattern_buffer(&file, len));
    let mut in_flight: VecDeque<glommio::Task<Res<usize>>> = VecDeque::with_capacity(depth);
    let (mut pos, mut allocated) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        // Like the log: at the in-flight bound, wait for the oldest write.
        if in_flight.len() >= depth {
            check_write(in_flight.pop_front().expect("non-empty").await, len)?;
        }
        ensure_allocated(&file, &mut allocated, pos + len as u64, step).await?;
        let (f, b) = (file.clone(), buf.clone());
        in_flight.push_back(glommio::spawn_local(async move {
            f.write_rc_at(b, pos).await.ctx(format!("raw write at {pos}"))
        }));
        pos += len as u64;
        if start.elapsed() >= secs {
            break;
        }
    }
    for t in in_flight {
        check_write(t.await, len)?;
    }
    file.fdatasync().await.ctx("raw fdatasync")?;
    let elapsed = start.elapsed();
    Ok(pos as f64 / elapsed.as_secs_f64() / 1e6)
}

/// A loop of one write of `write_bytes` (rounded up to the alignment) then fdatasync, at
/// increasing positions in a file preallocated in `step`s; each iteration's latency recorded.
async fn raw_fdatasync(path: &Path, write_bytes: usize, step: u64, secs: Duration) -> Res<Pcts> {
    let file = open_dma(path).await?;
    let len = file.align_up(write_bytes as u64) as usize;
    let buf = Rc::new(pattern_buffer(&file, len));
    let mut hist = latency_histogram();
    let (mut pos, mut allocated) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        let t0 = Instant::now();
        ensure_allocated(&file, &mut allocated, pos + len as u64, Some(step)).await?;
        check_write(file.write_rc_at(buf.clone(), pos).await.ctx(format!("raw write at {pos}")), len)?;
        file.fdatasync().await.ctx("raw fdatasync")?;
        hist.saturating_record(t0.elapsed().as_nanos() as u64);
        pos += len as u64;
        if start.elapsed() >= secs {
            break;
        }
    }
    Ok(Pcts::of(&hist))
}

/// What the raw grouped-commit loop observed.
struct RawGrouped {
    mbps: f64,
    commit: Pcts,
}

/// The disk's own durable-append frontier at one grouping, with no log in the way: sequential
/// writes of `write_bytes`, `depth` in flight, into a file preallocated in `step`s; after every
/// `group_bytes` written, an fdatasync that first waits for that group's writes. With `overlap`,
/// writes go on while it runs, with at most `COMMITS_IN_FLIGHT_MAX` fdatasyncs in flight as in
/// the log (beyond that the writer waits); without, the writer waits for each fdatasync (stop
/// and wait, the lowest latency for the group). Each write's commit latency runs from its
/// submission to the end of the fdatasync covering it; time spent waiting for a write slot is
/// not counted, so these latencies flatter the disk, if anything. Bandwidth counts the bytes
/// made durable over the time.
async fn raw_grouped(
    path: &Path,
    write_bytes: usize,
    depth: usize,
    group_bytes: usize,
    overlap: bool,
    step: u64,
    secs: Duration,
) -> Res<RawGrouped> {
    use glommio::sync::Semaphore;
    use iouring_storage::constants::COMMITS_IN_FLIGHT_MAX;
    use std::cell::RefCell;

    let file = open_dma(path).await?;
    let len = file.align_up(write_bytes as u64) as usize;
    let per_group = group_bytes.div_ceil(len).max(1);
    let buf = Rc::new(pattern_buffer(&file, len));
    let slots = Rc::new(Semaphore::new(depth as u64));
    let hist = Rc::new(RefCell::new(latency_histogram()));
    let mut syncs: VecDeque<glommio::Task<Res<()>>> = VecDeque::new();
    let mut group: Vec<(Instant, glommio::Task<Res<usize>>)> = Vec::with_capacity(per_group);
    let (mut pos, mut allocated) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        let permit = slots.acquire_static_permit(1).await.ctx("write slot")?;
        ensure_allocated(&file, &mut allocated, pos + len as u64, Some(step)).await?;
        let (f, b) = (file.clone(), buf.clone());
        let submitted = Instant::now();
        group.push((
            submitted,
            glommio::spawn_local(async move {
                let r = f.write_rc_at(b, pos).await.ctx(format!("raw write at {pos}"));
                drop(permit);
                r
            }),
        ));
        pos += len as u64;
        let done = start.elapsed() >= secs;
        if group.len() == per_group || done {
            let syncs_max = if overlap { COMMITS_IN_FLIGHT_MAX } else { 1 };
            if syncs.len() >= syncs_max {
                syncs.pop_front().expect("non-empty").await?;
            }
            let (f, h) = (file.clone(), hist.clone());
            let writes = std::mem::take(&mut group);
            syncs.push_back(glommio::spawn_local(async move {
                let mut times = Vec::with_capacity(writes.len());
                for (t, w) in writes {
                    check_write(w.await, len)?;
                    times.push(t);
                }
                f.fdatasync().await.ctx("raw grouped fdatasync")?;
                let mut h = h.borrow_mut();
                for t in times {
                    h.saturating_record(t.elapsed().as_nanos() as u64);
                }
                Ok(())
            }));
            if !overlap {
                syncs.pop_front().expect("just pushed").await?;
            }
        }
        if done {
            break;
        }
    }
    for s in syncs {
        s.await?;
    }
    let elapsed = start.elapsed();
    let commit = Pcts::of(&hist.borrow());
    Ok(RawGrouped {
        mbps: pos as f64 / elapsed.as_secs_f64() / 1e6,
        commit,
    })
}

/// What one log measurement observed.
struct LogRun {
    mbps: f64,
    commit: Pcts,
    append: Pcts,
    batches_per_sync: f64,
    bytes: u64,
    elapsed: Duration,
    /// The log's own counts, taken before it closed.
    stats: LogStats,
}

/// One producer's tallies.
struct ProducerStats {
    commit: Histogram<u64>,
    append: Histogram<u64>,
    bytes: u64,
    acks: u64,
    durable_ends: Vec<u64>,
    /// Exclusive end of the highest batch this producer had acknowledged.
    acked_end: u64,
}

/// `concurrency` producers append `batch_bytes` batches to one fresh log in `dir` and wait for
/// each to be durable, for `secs`. Asserts that every acknowledged offset is durable; with
/// `read_back`, also reopens the log and reads every batch back.
async fn run_log(s: &Settings, dir: &Path, batch_bytes: usize, producers: usize, read_back: bool) -> Res<LogRun> {
    let config = s.log_config(dir, batch_bytes);
    let log = PartitionLog::open(config.clone()).await.ctx("opening the log")?;
    // One record per KiB, so offsets advance with the bytes as they would for small records.
    let records = (batch_bytes / 1024).max(1) as i32;
    let batch = Rc::new(build_batch(
        records,
        batch_bytes - iouring_storage::constants::BATCH_HEADER_BYTES,
        NOW_MS,
        NOW_MS,
    ));
    assert_eq!(batch.len(), batch_bytes);
    let secs = s.duration();
    let start = Instant::now();
    let producers: Vec<_> = (0..producers)
        .map(|_| {
            let (log, batch) = (log.clone(), batch.clone());
            glommio::spawn_local(async move {
                let mut st = ProducerStats {
                    commit: latency_histogram(),
                    append: latency_histogram(),
                    bytes: 0,
                    acks: 0,
                    durable_ends: Vec::new(),
                    acked_end: 0,
                };
                loop {
                    let t0 = Instant::now();
                    let info = log.append(&batch, 0, NOW_MS).await.ctx("append")?;
                    let t1 = Instant::now();
                    let durable = log.wait_durable(info.last_offset + 1).await.ctx("wait_durable")?;
                    let t2 = Instant::now();
                    assert!(
                        durable > info.last_offset,
                        "wait_durable returned {durable} for a batch ending at {}",
                        info.last_offset
                    );
                    st.append.saturating_record((t1 - t0).as_nanos() as u64);
                    st.commit.saturating_record((t2 - t0).as_nanos() as u64);
                    st.bytes += batch.len() as u64;
                    st.acks += 1;
                    st.durable_ends.push(durable);
                    st.acked_end = st.acked_end.max(info.last_offset + 1);
                    if t2 - start >= secs {
                        return Res::Ok(st);
                    }
                }
            })
        })
        .collect();
    let mut commit = latency_histogram();
    let mut append = latency_histogram();
    let (mut bytes, mut acks, mut acked_end) = (0u64, 0u64, 0u64);
    let mut durable_ends = BTreeSet::new();
    for p in producers {
        let st = p.await?;
        commit.add(&st.commit).ctx("merging histograms")?;
        append.add(&st.append).ctx("merging histograms")?;
        bytes += st.bytes;
        acks += st.acks;
        acked_end = acked_end.max(st.acked_end);
        durable_ends.extend(st.durable_ends);
    }
    let elapsed = start.elapsed();

    let offsets = log.offsets();
    assert!(
        offsets.durable_end >= acked_end,
        "acknowledged up to {acked_end} but durable only to {}",
        offsets.durable_end
    );
    // Every producer waits for its own batch before appending again, so nothing was appended
    // that was not acknowledged.
    assert_eq!(offsets.log_end, acked_end, "every appended batch was acknowledged");
    let stats = log.stats();
    if read_back {
        // Dropped without `close`: what reopening finds is what the acknowledgements promised.
        drop(log);
        verify_reopened(config, acked_end, acks, batch_bytes).await?;
    } else {
        log.close().await.ctx("closing the log")?;
    }
    Ok(LogRun {
        mbps: bytes as f64 / elapsed.as_secs_f64() / 1e6,
        commit: Pcts::of(&commit),
        append: Pcts::of(&append),
        batches_per_sync: acks as f64 / durable_ends.len() as f64,
        bytes,
        elapsed,
        stats,
    })
}

/// Reopens the log (recovery) and reads every batch: contiguous offsets from 0 to `acked_end`,
/// `acks` batches of `batch_bytes`, each with a valid CRC.
async fn verify_reopened(config: LogConfig, acked_end: u64, acks: u64, batch_bytes: usize) -> Res<()> {
    let max = config.batch_bytes_max;
    let log = PartitionLog::open(config).await.ctx("reopening the log")?;
    let offsets = log.offsets();
    assert_eq!(offsets.log_start, 0);
    assert_eq!(offsets.log_end, acked_end, "reopened log ends where the acknowledgements did");
    assert_eq!(offsets.durable_end, acked_end);
    let (mut next, mut batches) = (0u64, 0u64);
    while let Some(rb) = log.read(next, 4 * 1024 * 1024).await.ctx(format!("reading at {next}"))? {
        let mut bytes: &[u8] = &rb.bytes;
        while !bytes.is_empty() {
            let len = 12 + i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
            let h = validate(&bytes[..len], max, CountCheck::Exact).ctx(format!("batch at offset {next}"))?;
            assert_eq!(h.base_offset as u64, next, "offsets are contiguous");
            assert_eq!(h.total_bytes, batch_bytes);
            next = h.last_offset() as u64 + 1;
            batches += 1;
            bytes = &bytes[len..];
        }
        assert_eq!(rb.next_offset, next);
    }
    assert_eq!(next, acked_end, "every acknowledged batch reads back");
    assert_eq!(batches, acks);
    log.close().await.ctx("closing the reopened log")
}

/// Every repetition of the broker's pattern, with the raw append measured just before each.
#[derive(Debug, Default)]
struct PatternReps {
    cores: Vec<usize>,
    logs_per_core: usize,
    producers_per_log: usize,
    raw_mbps: Vec<f64>,
    log_mbps: Vec<f64>,
    /// Group commits per log per second, their mean size in bytes and mean fdatasync in µs.
    commits_per_log_s: Vec<f64>,
    commit_bytes: Vec<f64>,
    fdatasync_us: Vec<f64>,
}

/// One core's share of the pattern: `logs` fresh logs under `dir`, each run as `run_log` runs
/// one (with its checks, and its read-back in the smoke mode), all at once.
async fn pattern_core(s: &Settings, dir: &Path, logs: usize, producers: usize) -> Res<Vec<LogRun>> {
    let runs: Vec<_> = (0..logs)
        .map(|l| {
            let (s, dir) = (s.clone(), dir.join(format!("log{l}")));
            glommio::spawn_local(async move { run_log(&s, &dir, PATTERN_BATCH_BYTES, producers, s.smoke).await })
        })
        .collect();
    let mut done = Vec::with_capacity(logs);
    for run in runs {
        done.push(run.await?);
    }
    Ok(done)
}

/// Starts `f` on a glommio executor pinned to `cpu`.
fn spawn_on_cpu<T, F, Fut>(cpu: usize, name: &str, f: F) -> Res<glommio::ExecutorJoinHandle<Res<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Res<T>> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
        .name(name)
        .spawn(move || async move { f().await })
        .ctx(format!("starting executor {name}"))
}

/// The broker's pattern on every online core, `s.reps` times, each after a raw append.
fn measure_pattern(s: &Settings) -> Res<PatternReps> {
    let cores: Vec<usize> = glommio::CpuSet::online()
        .ctx("listing online cores")?
        .into_iter()
        .map(|l| l.cpu)
        .collect();
    let (logs, producers) = if s.smoke {
        (2, 2)
    } else {
        (PATTERN_LOGS_PER_CORE, PATTERN_PRODUCERS_PER_LOG)
    };
    let mut reps = PatternReps {
        cores: cores.clone(),
        logs_per_core: logs,
        producers_per_log: producers,
        ..PatternReps::default()
    };
    for rep in 0..s.reps {
        eprintln!(
            "rep {}/{}: the broker's pattern, {} cores x {logs} logs x {producers} producers",
            rep + 1,
            s.reps,
            cores.len()
        );
        let d = scratch(&s.dir, "pattern-raw")?;
        let (path, step, secs) = (d.path().join("bw"), s.preallocate_step_bytes, s.duration());
        let raw = spawn_on_cpu(cores[0], "pattern-raw", move || async move {
            raw_bandwidth(&path, CONTEXT_WRITE_BYTES, PATTERN_RAW_DEPTH, Some(step), secs).await
        })?
        .join()
        .ctx("the raw append executor failed")??;
        drop(d);
        let d = scratch(&s.dir, "pattern")?;
        let handles = cores
            .iter()
            .map(|&cpu| {
                let (s, dir) = (s.clone(), d.path().join(format!("cpu{cpu}")));
                spawn_on_cpu(cpu, &format!("pattern-{cpu}"), move || async move {
                    pattern_core(&s, &dir, logs, producers).await
                })
            })
            .collect::<Res<Vec<_>>>()?;
        let mut runs = Vec::with_capacity(logs * cores.len());
        for h in handles {
            runs.extend(h.join().ctx("a pattern executor failed")??);
        }
        drop(d);
        let sum = |f: fn(&LogRun) -> u64| runs.iter().map(f).sum::<u64>();
        let elapsed = runs.iter().map(|r| r.elapsed).max().unwrap_or_default().as_secs_f64();
        let commits = sum(|r| r.stats.group_commits).max(1) as f64;
        reps.raw_mbps.push(raw);
        reps.log_mbps.push(sum(|r| r.bytes) as f64 / elapsed / 1e6);
        reps.commits_per_log_s.push(commits / elapsed / runs.len() as f64);
        reps.commit_bytes.push(sum(|r| r.stats.committed_bytes) as f64 / commits);
        reps.fdatasync_us.push(sum(|r| r.stats.fsync_us_total) as f64 / commits);
    }
    Ok(reps)
}

/// The broker's pattern as a Markdown section and its JSON.
fn report_pattern(md: &mut String, p: &PatternReps) -> Value {
    let (logs, producers) = (p.logs_per_core, p.producers_per_log);
    let (raw, log) = (median(&p.raw_mbps), median(&p.log_mbps));
    let _ = writeln!(
        md,
        "\n### The broker's pattern: {} cores x {logs} logs x {producers} producers, {} batches\n\n\
         The broker's maximum-throughput workload on the log alone (no network, no broker). \
         Raw: 1 MiB writes, {PATTERN_RAW_DEPTH} in flight, on one core, just before each repetition \
         (bench-harness quotes the broker against this).\n\n\
         | raw MB/s | log MB/s | log / raw | commits per log per s | mean commit | mean fdatasync ms | log / raw by repetition |\n\
         |---:|---:|---:|---:|---:|---:|---|",
        p.cores.len(),
        human_bytes(PATTERN_BATCH_BYTES)
    );
    let by_rep: Vec<String> = p.log_mbps.iter().zip(&p.raw_mbps).map(|(l, r)| format!("{:.2}", l / r)).collect();
    let _ = writeln!(
        md,
        "| {raw:.0} | {log:.0} | {:.2} | {:.0} | {:.0} KB | {:.2} | {} |",
        log / raw,
        median(&p.commits_per_log_s),
        median(&p.commit_bytes) / 1e3,
        median(&p.fdatasync_us) / 1e3,
        by_rep.join(", ")
    );
    json!({
        "cores": p.cores,
        "logs_per_core": logs,
        "producers_per_log": producers,
        "batch_bytes": PATTERN_BATCH_BYTES,
        "raw_write_bytes": CONTEXT_WRITE_BYTES,
        "raw_depth": PATTERN_RAW_DEPTH,
        "raw_mbps": { "median": raw, "reps": p.raw_mbps },
        "log_mbps": { "median": log, "reps": p.log_mbps },
        "log_to_raw": log / raw,
        "commits_per_log_per_s": { "median": median(&p.commits_per_log_s), "reps": p.commits_per_log_s },
        "mean_commit_bytes": { "median": median(&p.commit_bytes), "reps": p.commit_bytes },
        "mean_fdatasync_us": { "median": median(&p.fdatasync_us), "reps": p.fdatasync_us },
    })
}

/// A fresh directory for one measurement, removed when dropped.
fn scratch(base: &Path, name: &str) -> Res<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(base)
        .ctx(format!("creating a scratch directory in {}", base.display()))
}

async fn measure(s: &Settings) -> Res<Measurements> {
    let alignment = probe_device(&s.dir).await?;
    let mut sizes: Vec<SizeReps> = s
        .batch_sizes
        .iter()
        .map(|&b| SizeReps {
            batch_bytes: b,
            write_bytes: (b as u64).div_ceil(alignment) as usize * alignment as usize,
            ..SizeReps::default()
        })
        .collect();
    let mut context = ContextReps::default();
    let depth = s.writes_in_flight_max;
    let frontier_on = s.frontier && s.batch_sizes.contains(&TARGET_BANDWIDTH_BATCH_BYTES);
    let mut frontier: Vec<FrontierReps> = Vec::new();
    let mut sweep: Vec<SweepReps> = Vec::new();
    if frontier_on {
        let (groups, depths) = if s.smoke {
            (vec![1], vec![2])
        } else {
            (FRONTIER_GROUPS_MIB.to_vec(), FRONTIER_DEPTHS.to_vec())
        };
        for overlap in [false, true] {
            for &g in &groups {
                for &d in &depths {
                    frontier.push(FrontierReps {
                        group_bytes: g * TARGET_BANDWIDTH_BATCH_BYTES,
                        depth: d,
                        overlap,
                        ..FrontierReps::default()
                    });
                }
            }
        }
        sweep = s
            .sweep
            .iter()
            .map(|&producers| SweepReps {
                producers,
                ..SweepReps::default()
            })
            .collect();
    }
    let step = s.preallocate_step_bytes;
    let secs = s.duration();
    for rep in 0..s.reps {
        for sz in sizes.iter_mut() {
            let b = sz.batch_bytes;
            eprintln!("rep {}/{}: {b} B batches", rep + 1, s.reps);
            let d = scratch(&s.dir, "raw")?;
            sz.raw_mbps
                .push(raw_bandwidth(&d.path().join("bw"), b, depth, Some(step), secs).await?);
            drop(d);
            let d = scratch(&s.dir, "fsync")?;
            sz.raw_fdatasync.push(raw_fdatasync(&d.path().join("fsync"), b, step, secs).await?);
            drop(d);
            let d = scratch(&s.dir, "log")?;
            let run = run_log(s, d.path(), b, s.concurrency, s.smoke).await?;
            drop(d);
            sz.log_mbps.push(run.mbps);
            sz.commit.push(run.commit);
            sz.append.push(run.append);
            sz.batches_per_sync.push(run.batches_per_sync);
        }
        for f in frontier.iter_mut() {
            eprintln!(
                "rep {}/{}: raw durable frontier, fdatasync every {} MiB, {} in flight, overlapped: {}",
                rep + 1,
                s.reps,
                f.group_bytes / TARGET_BANDWIDTH_BATCH_BYTES,
                f.depth,
                f.overlap
            );
            let d = scratch(&s.dir, "frontier")?;
            let (path, w) = (d.path().join("f"), TARGET_BANDWIDTH_BATCH_BYTES);
            let r = raw_grouped(&path, w, f.depth, f.group_bytes, f.overlap, step, secs).await?;
            drop(d);
            f.mbps.push(r.mbps);
            f.commit.push(r.commit);
        }
        for w in sweep.iter_mut() {
            eprintln!("rep {}/{}: log, 1 MiB batches, {} producers", rep + 1, s.reps, w.producers);
            let d = scratch(&s.dir, "sweep")?;
            let run = run_log(s, d.path(), TARGET_BANDWIDTH_BATCH_BYTES, w.producers, s.smoke).await?;
            drop(d);
            w.mbps.push(run.mbps);
            w.commit.push(run.commit);
        }
        if !s.context {
            continue;
        }
        eprintln!("rep {}/{}: raw 1 MiB context", rep + 1, s.reps);
        let cw = CONTEXT_WRITE_BYTES;
        let raw = |name: &'static str| scratch(&s.dir, name);
        let d = raw("best")?;
        context
            .prealloc_best_depth
            .push(raw_bandwidth(&d.path().join("f"), cw, BEST_DEPTH, Some(step), secs).await?);
        drop(d);
        // The 1 MiB row already measured this set-up; measure it only when that row is absent.
        if !s.batch_sizes.contains(&cw) {
            let d = raw("prealloc")?;
            context
                .prealloc_log_depth
                .push(raw_bandwidth(&d.path().join("f"), cw, depth, Some(step), secs).await?);
            drop(d);
        }
        let d = raw("grow")?;
        context
            .growing_log_depth
            .push(raw_bandwidth(&d.path().join("f"), cw, depth, None, secs).await?);
        drop(d);
        let d = raw("grow-best")?;
        context
            .growing_best_depth
            .push(raw_bandwidth(&d.path().join("f"), cw, BEST_DEPTH, None, secs).await?);
        drop(d);
    }
    if let Some(sz) = sizes.iter().find(|sz| s.context && sz.batch_bytes == CONTEXT_WRITE_BYTES) {
        context.prealloc_log_depth = sz.raw_mbps.clone();
    }
    Ok(Measurements {
        alignment,
        sizes,
        context,
        frontier,
        sweep,
    })
}

fn human_bytes(b: usize) -> String {
    match b {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// The Markdown report and its JSON twin.
fn report(s: &Settings, m: &Measurements, pattern: Option<&PatternReps>, fs: &(String, String)) -> (String, Value) {
    let mut md = String::new();
    let depth = s.writes_in_flight_max;
    let _ = writeln!(md, "## iouring-storage append throughput under group commit\n");
    if s.smoke {
        let _ = writeln!(
            md,
            "**Smoke run** (no `--bench`): tiny durations and segments; the numbers mean nothing.\n"
        );
    }
    let _ = writeln!(
        md,
        "{} producers on one glommio executor; median of {} repetition(s) of {} s each. \
         Directory {} ({} on {}), O_DIRECT alignment {} B. \
         Log: write_buffer_bytes={}, writes_in_flight_max={}, preallocate_step_bytes={}, segment_bytes={}. \
         Raw baselines use the batch size rounded up to the alignment, {} writes in flight, the same \
         preallocation steps; MB/s = 10^6 B/s; latencies in µs.\n",
        s.concurrency,
        s.reps,
        s.secs,
        s.dir.display(),
        fs.0,
        fs.1,
        m.alignment,
        s.write_buffer_bytes,
        s.writes_in_flight_max,
        s.preallocate_step_bytes,
        s.segment_bytes,
        depth
    );

    let _ = writeln!(md, "### Throughput\n");
    let _ = writeln!(
        md,
        "| batch | raw write | raw MB/s | log MB/s | log / raw | batches per fdatasync |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    let mut sizes_json = Vec::new();
    for sz in &m.sizes {
        let raw = median(&sz.raw_mbps);
        let log = median(&sz.log_mbps);
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.1} |",
            human_bytes(sz.batch_bytes),
            human_bytes(sz.write_bytes),
            raw,
            log,
            log / raw,
            median(&sz.batches_per_sync)
        );
    }

    let _ = writeln!(md, "\n### Commit latency (append start to `wait_durable` return)\n");
    let _ = writeln!(
        md,
        "| batch | raw write+fdatasync p50 / p99 / p999 | commit p50 / p99 / p999 | commit / raw p50 / p99 / p999 | append alone p50 / p99 | queueing floor |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for sz in &m.sizes {
        let raw = Pcts::median(&sz.raw_fdatasync);
        let c = Pcts::median(&sz.commit);
        let a = Pcts::median(&sz.append);
        // Little's law: mean latency >= outstanding bytes / bandwidth, in µs.
        let floor_us = (s.concurrency * sz.batch_bytes) as f64 / median(&sz.raw_mbps);
        let _ = writeln!(
            md,
            "| {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.2} / {:.2} / {:.2} | {:.0} / {:.0} | {:.0} |",
            human_bytes(sz.batch_bytes),
            raw.p50,
            raw.p99,
            raw.p999,
            c.p50,
            c.p99,
            c.p999,
            c.p50 / raw.p50,
            c.p99 / raw.p99,
            c.p999 / raw.p999,
            a.p50,
            a.p99,
            floor_us
        );
        sizes_json.push(json!({
            "batch_bytes": sz.batch_bytes,
            "write_bytes": sz.write_bytes,
            "raw_mbps": { "median": median(&sz.raw_mbps), "reps": sz.raw_mbps },
            "log_mbps": { "median": median(&sz.log_mbps), "reps": sz.log_mbps },
            "log_to_raw_bandwidth": median(&sz.log_mbps) / median(&sz.raw_mbps),
            "batches_per_fdatasync": { "median": median(&sz.batches_per_sync), "reps": sz.batches_per_sync },
            "raw_fdatasync_us": { "median": raw.json(), "reps": sz.raw_fdatasync.iter().map(Pcts::json).collect::<Vec<_>>() },
            "commit_us": { "median": c.json(), "reps": sz.commit.iter().map(Pcts::json).collect::<Vec<_>>() },
            "append_us": { "median": a.json(), "reps": sz.append.iter().map(Pcts::json).collect::<Vec<_>>() },
            "queueing_floor_us": floor_us,
            "commit_to_raw_fdatasync": { "p50": c.p50 / raw.p50, "p99": c.p99 / raw.p99, "p999": c.p999 / raw.p999 },
        }));
    }

    let ctx = &m.context;
    let mut context_json = Value::Null;
    if s.context {
        let best = median(&ctx.prealloc_best_depth).max(median(&ctx.prealloc_log_depth));
        let rows = [
            ("preallocated", depth, &ctx.prealloc_log_depth),
            ("preallocated", BEST_DEPTH, &ctx.prealloc_best_depth),
            ("growing (no preallocation)", depth, &ctx.growing_log_depth),
            ("growing (no preallocation)", BEST_DEPTH, &ctx.growing_best_depth),
        ];
        let _ = writeln!(
            md,
            "\n### Raw disk, 1 MiB writes (the disk's best: {best:.0} MB/s)\n\n| file | in flight | MB/s | / best |\n|---|---:|---:|---:|"
        );
        let mut rows_json = Vec::new();
        for (file, qd, reps) in rows {
            let mbps = median(reps);
            let _ = writeln!(md, "| {file} | {qd} | {mbps:.0} | {:.2} |", mbps / best);
            rows_json.push(json!({ "file": file, "in_flight": qd, "mbps": { "median": mbps, "reps": reps } }));
        }
        context_json = json!({ "disk_best_mbps": best, "rows": rows_json });
    }

    let one_mib = m.sizes.iter().find(|sz| sz.batch_bytes == TARGET_BANDWIDTH_BATCH_BYTES);
    // (bandwidth / raw, commit p99 / raw fdatasync p99) of the best point meeting the latency
    // target, for the frontier and for the log's sweep.
    let mut frontier_best: Option<(f64, f64)> = None;
    let mut sweep_best: Option<(f64, f64, usize)> = None;
    let mut frontier_json = Vec::new();
    let mut sweep_json = Vec::new();
    if let (Some(one), false) = (one_mib, m.frontier.is_empty() && m.sweep.is_empty()) {
        let raw_mbps = median(&one.raw_mbps);
        let raw_p99 = Pcts::median(&one.raw_fdatasync).p99;
        let both = |bw: f64, p99: f64| bw >= TARGET_BANDWIDTH_RATIO_MIN && p99 <= TARGET_COMMIT_P99_RATIO_MAX;
        let _ = writeln!(
            md,
            "\n### The disk's durable frontier, 1 MiB writes\n\n\
             What any appender could get from this disk at a given grouping, with no log in the way: \
             sequential 1 MiB writes, some in flight, an fdatasync after every group that waits for the \
             group's writes. Stop and wait: the writer waits for each fdatasync. Overlapped: writes go on \
             meanwhile, with at most {COMMITS_IN_FLIGHT} fdatasyncs in flight as in the log. Commit latency \
             runs from a write's submission to the end of the fdatasync covering it. Ratios are against the 1 MiB raw bandwidth ({raw_mbps:.0} MB/s) and raw write+fdatasync \
             p99 ({raw_p99:.0} µs) above.\n\n\
             | writes | fdatasync every | in flight | MB/s | / raw | commit p50 / p99 | p99 / raw fdatasync p99 | both targets |\n\
             |---|---:|---:|---:|---:|---:|---:|---|",
            COMMITS_IN_FLIGHT = iouring_storage::constants::COMMITS_IN_FLIGHT_MAX
        );
        for f in &m.frontier {
            let (mbps, c) = (median(&f.mbps), Pcts::median(&f.commit));
            let (bw, p99) = (mbps / raw_mbps, c.p99 / raw_p99);
            if p99 <= TARGET_COMMIT_P99_RATIO_MAX && frontier_best.is_none_or(|(b, _)| bw > b) {
                frontier_best = Some((bw, p99));
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {mbps:.0} | {bw:.2} | {:.0} / {:.0} | {p99:.2} | {} |",
                if f.overlap { "overlapped" } else { "stop and wait" },
                human_bytes(f.group_bytes),
                f.depth,
                c.p50,
                c.p99,
                if both(bw, p99) { "met" } else { "-" }
            );
            frontier_json.push(json!({
                "group_bytes": f.group_bytes, "in_flight": f.depth, "overlapped": f.overlap,
                "mbps": { "median": mbps, "reps": f.mbps },
                "commit_us": { "median": c.json(), "reps": f.commit.iter().map(Pcts::json).collect::<Vec<_>>() },
                "bandwidth_to_raw": bw, "commit_p99_to_raw_fdatasync": p99,
            }));
        }
        let _ = writeln!(
            md,
            "\n### The log at other producer counts, 1 MiB batches\n\n\
             | producers | MB/s | / raw | commit p50 / p99 | p99 / raw fdatasync p99 | both targets |\n\
             |---:|---:|---:|---:|---:|---|"
        );
        for w in &m.sweep {
            let (mbps, c) = (median(&w.mbps), Pcts::median(&w.commit));
            let (bw, p99) = (mbps / raw_mbps, c.p99 / raw_p99);
            if p99 <= TARGET_COMMIT_P99_RATIO_MAX && sweep_best.is_none_or(|(b, _, _)| bw > b) {
                sweep_best = Some((bw, p99, w.producers));
            }
            let _ = writeln!(
                md,
                "| {} | {mbps:.0} | {bw:.2} | {:.0} / {:.0} | {p99:.2} | {} |",
                w.producers,
                c.p50,
                c.p99,
                if both(bw, p99) { "met" } else { "-" }
            );
            sweep_json.push(json!({
                "producers": w.producers,
                "mbps": { "median": mbps, "reps": w.mbps },
                "commit_us": { "median": c.json(), "reps": w.commit.iter().map(Pcts::json).collect::<Vec<_>>() },
                "bandwidth_to_raw": bw, "commit_p99_to_raw_fdatasync": p99,
            }));
        }
    }

    let pattern_json = pattern.map(|p| report_pattern(&mut md, p));

    let _ = writeln!(md, "\n### Targets\n\n| target | measured | goal | result |\n|---|---:|---:|---|");
    let mut targets_json = Vec::new();
    if let Some(sz) = m.sizes.iter().find(|sz| sz.batch_bytes == TARGET_BANDWIDTH_BATCH_BYTES) {
        let ratio = median(&sz.log_mbps) / median(&sz.raw_mbps);
        let ok = ratio >= TARGET_BANDWIDTH_RATIO_MIN;
        let _ = writeln!(
            md,
            "| log bandwidth with 1 MiB batches / raw | {ratio:.2} | >= {TARGET_BANDWIDTH_RATIO_MIN:.2} | {} |",
            pass(ok)
        );
        targets_json
            .push(json!({ "target": "bandwidth_1mib_ratio", "measured": ratio, "goal_min": TARGET_BANDWIDTH_RATIO_MIN, "pass": ok }));
    }
    for sz in &m.sizes {
        let ratio = Pcts::median(&sz.commit).p99 / Pcts::median(&sz.raw_fdatasync).p99;
        let ok = ratio <= TARGET_COMMIT_P99_RATIO_MAX;
        let _ = writeln!(
            md,
            "| commit p99 / raw fdatasync p99, {} batches | {ratio:.2} | <= {TARGET_COMMIT_P99_RATIO_MAX:.1} | {} |",
            human_bytes(sz.batch_bytes),
            pass(ok)
        );
        targets_json.push(json!({ "target": "commit_p99_ratio", "batch_bytes": sz.batch_bytes, "measured": ratio, "goal_max": TARGET_COMMIT_P99_RATIO_MAX, "pass": ok }));
    }
    // Both 1 MiB targets at one operating point: the log's best over its producer sweep, and
    // beside it what the disk itself allows (the frontier's best), which bounds any appender.
    let best_rows = [
        (
            "log, best producer count",
            sweep_best.map(|(bw, _, n)| (bw, format!(" ({n} producers)"))),
        ),
        (
            "disk's durable frontier, best grouping",
            frontier_best.map(|(bw, _)| (bw, String::new())),
        ),
    ];
    for (what, best) in best_rows {
        if m.frontier.is_empty() && m.sweep.is_empty() {
            break;
        }
        let measured = best
            .as_ref()
            .map_or("none within".to_owned(), |(bw, note)| format!("{bw:.2}{note}"));
        let ok = best.as_ref().is_some_and(|(bw, _)| *bw >= TARGET_BANDWIDTH_RATIO_MIN);
        let _ = writeln!(
            md,
            "| 1 MiB bandwidth / raw with commit p99 <= {TARGET_COMMIT_P99_RATIO_MAX:.1}x raw fdatasync p99: {what} | {measured} | >= {TARGET_BANDWIDTH_RATIO_MIN:.2} | {} |",
            pass(ok)
        );
        targets_json.push(json!({ "target": "bandwidth_1mib_ratio_within_commit_p99", "of": what, "measured": best.map(|(bw, _)| bw), "goal_min": TARGET_BANDWIDTH_RATIO_MIN, "pass": ok }));
    }

    let json = json!({
        "bench": "append_throughput",
        "mode": if s.smoke { "smoke" } else { "full" },
        "dir": s.dir.display().to_string(),
        "filesystem": fs.0,
        "device": fs.1,
        "alignment_bytes": m.alignment,
        "concurrency": s.concurrency,
        "reps": s.reps,
        "secs": s.secs,
        "log_config": {
            "write_buffer_bytes": s.write_buffer_bytes,
            "writes_in_flight_max": s.writes_in_flight_max,
            "preallocate_step_bytes": s.preallocate_step_bytes,
            "segment_bytes": s.segment_bytes,
        },
        "sizes": sizes_json,
        "raw_1mib_context": context_json,
        "durable_frontier_1mib": frontier_json,
        "log_producer_sweep_1mib": sweep_json,
        "broker_pattern": pattern_json,
        "targets": targets_json,
    });
    (md, json)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("append_throughput: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let s = Settings::from_args()?;
    if let Some(limit) = memlock_bytes()? {
        if limit < MEMLOCK_BYTES_MIN {
            return Err(format!(
                "RLIMIT_MEMLOCK is {limit} bytes; glommio needs at least {MEMLOCK_BYTES_MIN} (raise it with `ulimit -l 512` or more)"
            ));
        }
    }
    std::fs::create_dir_all(&s.dir).ctx(format!("creating {}", s.dir.display()))?;
    let fs = filesystem_of(&s.dir)?;
    // tmpfs has no disk under it: its "fdatasync" is free and O_DIRECT may be refused.
    if matches!(fs.0.as_str(), "tmpfs" | "ramfs") {
        return Err(format!(
            "{} is on {}; set BENCH_DIR (or --dir) to a directory on a disk",
            s.dir.display(),
            fs.0
        ));
    }
    eprintln!(
        "append_throughput ({}): dir {} ({} on {}), {} producers, {} x {:.2} s",
        if s.smoke { "smoke" } else { "full" },
        s.dir.display(),
        fs.0,
        fs.1,
        s.concurrency,
        s.reps,
        s.secs
    );
    let settings = s.clone();
    let measured = spawn_on_cpu(0, "append-bench", move || async move { measure(&settings).await })?
        .join()
        // `spawn` succeeds even when the reactor cannot start; the error shows here.
        .ctx("glommio executor failed (RLIMIT_MEMLOCK too low, or io_uring blocked?)")??;
    let pattern = if s.pattern { Some(measure_pattern(&s)?) } else { None };
    let (md, json) = report(&s, &measured, pattern.as_ref(), &fs);
    println!("{md}");
    if let Some(parent) = s.report_path.parent() {
        std::fs::create_dir_all(parent).ctx(format!("creating {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&json).ctx("encoding the JSON report")?;
    std::fs::write(&s.report_path, text + "\n").ctx(format!("writing {}", s.report_path.display()))?;
    println!("JSON report: {}", s.report_path.display());
    Ok(())
}
