//! Process-level crash test: a child process appends to a partition log and reports every batch
//! it was told is durable; it is killed with SIGKILL at random moments, many times over, and after
//! each kill the log is reopened and checked against everything ever acknowledged.
//!
//! The child is this test binary itself, re-executed with `CRASH_CHILD_DIR` set. Knobs:
//! `CRASH_SEED` replays a run (the seed is printed first), `CRASH_CYCLES` sets the number of kills.
//! After each check the parent applies retention by size (the child never does), so the cost
//! of a cycle stays bounded; acknowledged batches that retention deletes are no longer expected.
//! A seed fixes the kill delays and every batch's shape; where exactly a kill lands still depends
//! on the machine's timing, so a replay reproduces the schedule, not the instant.
//!
//! The child's protocol on stdout, one line per `write(2)` (shorter than `PIPE_BUF`, so a kill
//! never leaves half a line that parses):
//!
//! ```text
//! OPEN <log_start> <log_end>                                            after recovery
//! APP <base> <last> <records> <payload> <base_ts> <max_ts> <epoch>    appended, not durable
//! ACK <base> <last> <records> <payload> <base_ts> <max_ts> <epoch>    wait_durable returned
//! ```
//!
//! `testing::build_batch` is deterministic in its arguments, so each line is enough to rebuild
//! the exact bytes the log must hold at `base`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use iouring_storage::constants::{BATCH_BYTES_MAX, BATCH_HEADER_BYTES};
use iouring_storage::testing::build_batch;
use iouring_storage::{stamp, validate, BatchHeader, CountCheck, LogConfig, PartitionLog, SyncScope};

/// The one test in this file; the child re-runs it by this exact name.
const TEST_NAME: &str = "sigkill_mid_append_loses_nothing_acknowledged";
/// Set only in the child: the partition directory it appends to.
const CHILD_DIR_ENV: &str = "CRASH_CHILD_DIR";
/// Set only in the child: seeds its producers.
const CHILD_SEED_ENV: &str = "CRASH_CHILD_SEED";
/// Set only in the child: the partition leader epoch it stamps on every batch.
const CHILD_EPOCH_ENV: &str = "CRASH_CHILD_EPOCH";
/// Set only in the child: its `writes_in_flight_max`, which shapes what a kill leaves on disk.
const CHILD_WRITES_IN_FLIGHT_ENV: &str = "CRASH_CHILD_WRITES_IN_FLIGHT";
/// Set only in the child: "1" to append only batches larger than a write buffer.
const CHILD_LARGE_ENV: &str = "CRASH_CHILD_LARGE";
/// Set only in the child: "1" to commit with one syncfs (`SyncScope::Filesystem`) instead of
/// an fdatasync of the segment.
const CHILD_SYNC_FILESYSTEM_ENV: &str = "CRASH_CHILD_SYNC_FILESYSTEM";
/// How long the parent waits for a child to finish recovery before killing it anyway.
const OPEN_WAIT_MAX: Duration = Duration::from_secs(30);

/// Kills in a default run; enough to hit rolls, torn tails and recovery itself, and still fast
/// in a debug build.
const CYCLES_DEFAULT: u64 = 25;
/// Concurrent producers in the child: several, so group commit shares fdatasyncs.
const PRODUCERS: u64 = 4;
/// A child that lives this long was never killed; it exits with an error rather than filling
/// the disk if the parent is gone.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(30);
/// Cap on the bytes one child appends, for the same reason.
const CHILD_APPEND_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Largest payload of one batch in the mixed shape: big enough that one batch spans write
/// buffers and fills a good part of a segment.
const PAYLOAD_BYTES_MAX: usize = 100 * 1024;
/// Payloads of the large shape: every batch spans two or three write buffers, so a kill often
/// finds one half on disk and the other not.
const LARGE_PAYLOAD_BYTES: std::ops::RangeInclusive<u64> = 70 * 1024..=127 * 1024;
/// Upper bound of one read while walking the log.
const READ_BYTES_MAX: usize = 1024 * 1024;
/// Acknowledged batches, from this cycle and from earlier ones, also read back through an offset
/// inside them after each kill. The walk compares all of them anyway; this goes through the
/// sparse index instead of from the start.
const SPOT_READS_MAX: usize = 100;
/// After each check the parent applies retention down to this size, so the log, and the cost
/// of checking all of it after every kill, stays bounded however many cycles run. Acknowledged
/// batches it deletes are forgotten; everything still in the log is checked.
const RETAINED_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Exit code of a child that failed on its own (as opposed to being killed).
const CHILD_FAILED_EXIT: i32 = 3;

/// Small segments and buffers, so that segments roll and buffers fill many times per cycle and
/// kills land inside rolls and partial writes.
fn config(dir: &Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes = 256 * 1024;
    c.write_buffer_bytes = 64 * 1024;
    c.preallocate_step_bytes = 64 * 1024;
    // Must not exceed segment_bytes; the largest batch here is a large payload plus a header.
    c.batch_bytes_max = 128 * 1024;
    c.index_interval_bytes = 4096;
    c.writes_in_flight_max = 4;
    // Only the parent enforces retention, between kills; the batches' timestamps are old, so
    // retention by time would delete everything.
    c.retention_ms = None;
    c.retention_bytes = Some(RETAINED_BYTES_MAX);
    c
}

/// xorshift64*: enough randomness for kill timing and batch shapes, and seedable for replay.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Zero is a fixed point of xorshift; mix the seed so nearby seeds diverge at once.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `lo..=hi` for a test.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One batch as the child described it: everything needed to rebuild its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Described {
    base: u64,
    last: u64,
    records: i32,
    payload: usize,
    base_ts: i64,
    max_ts: i64,
    epoch: i32,
}

impl Described {
    fn line(&self, tag: &str) -> String {
        format!(
            "{tag} {} {} {} {} {} {} {}\n",
            self.base, self.last, self.records, self.payload, self.base_ts, self.max_ts, self.epoch
        )
    }

    fn parse(fields: &[&str]) -> Option<Described> {
        if fields.len() != 7 {
            return None;
        }
        Some(Described {
            base: fields[0].parse().ok()?,
            last: fields[1].parse().ok()?,
            records: fields[2].parse().ok()?,
            payload: fields[3].parse().ok()?,
            base_ts: fields[4].parse().ok()?,
            max_ts: fields[5].parse().ok()?,
            epoch: fields[6].parse().ok()?,
        })
    }

    /// The batch as the producer sent it, before the log stamped it.
    fn unstamped(&self) -> Vec<u8> {
        build_batch(self.records, self.payload, self.base_ts, self.max_ts)
    }

    /// The exact bytes the log must hold at `base`.
    fn expected_bytes(&self) -> Vec<u8> {
        let mut b = self.unstamped();
        stamp(&mut b, self.base as i64, self.epoch);
        b
    }
}

/// An acknowledged batch and its expected bytes, built once: rebuilding every batch on every
/// check would make the run quadratic in debug builds.
#[derive(Debug, Clone)]
struct Acked {
    d: Described,
    bytes: Arc<[u8]>,
}

#[test]
fn sigkill_mid_append_loses_nothing_acknowledged() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        run_child(PathBuf::from(dir));
    }
    run_parent();
}

// ---------------------------------------------------------------------------------------------
// Child: append forever, report what is durable, never return.
// ---------------------------------------------------------------------------------------------

/// Runs the appending child. It only ends by being killed; any error exits with
/// `CHILD_FAILED_EXIT`, which the parent reports, so a child failure can never pass as a kill.
fn run_child(dir: PathBuf) -> ! {
    // A panic in a producer task must not leave a silent, idle child that then "dies" to the
    // parent's SIGKILL as if all were well.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("crash child panicked: {info}");
        std::process::exit(CHILD_FAILED_EXIT);
    }));
    let seed: u64 = env_parse(CHILD_SEED_ENV).unwrap_or_else(|| child_fail(format!("{CHILD_SEED_ENV} missing")));
    let epoch: i32 = env_parse(CHILD_EPOCH_ENV).unwrap_or_else(|| child_fail(format!("{CHILD_EPOCH_ENV} missing")));
    let large = env_parse::<u8>(CHILD_LARGE_ENV) == Some(1);
    let in_flight: usize =
        env_parse(CHILD_WRITES_IN_FLIGHT_ENV).unwrap_or_else(|| child_fail(format!("{CHILD_WRITES_IN_FLIGHT_ENV} missing")));
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("crash-child")
        .spawn(move || async move { child_main(dir, seed, epoch, in_flight, large).await })
        .unwrap_or_else(|e| child_fail(format!("starting executor: {e}")));
    match handle.join() {
        Ok(()) => child_fail(format!(
            "appended until the bound ({CHILD_LIFETIME_MAX:?} or {CHILD_APPEND_BYTES_MAX} bytes) without being killed"
        )),
        Err(e) => child_fail(format!("executor: {e}")),
    }
}

async fn child_main(dir: PathBuf, seed: u64, epoch: i32, writes_in_flight_max: usize, large: bool) {
    let mut config = config(&dir);
    config.writes_in_flight_max = writes_in_flight_max;
    if env_parse::<u8>(CHILD_SYNC_FILESYSTEM_ENV) == Some(1) {
        config.sync = SyncScope::Filesystem;
    }
    let log = PartitionLog::open(config)
        .await
        .unwrap_or_else(|e| child_fail(format!("open (recovery): {e}")));
    let o = log.offsets();
    // The leading newline ends the harness's unterminated "test <name> ... " line, which would
    // otherwise swallow this one.
    emit(&format!("\nOPEN {} {}\n", o.log_start, o.log_end));
    // The gate: the parent sends a line to let producers start, or kills the child first for a
    // cycle that must end before any ack. Blocking the executor here is fine: nothing else runs.
    let mut go = String::new();
    if std::io::stdin().read_line(&mut go).is_err() || go.trim() != "go" {
        child_fail("the parent closed stdin without saying go".into());
    }
    let started = Instant::now();
    let appended = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (log, appended) = (log.clone(), appended.clone());
            glommio::spawn_local(produce(log, Rng::new(seed ^ (p + 1)), epoch, large, started, appended))
        })
        .collect();
    for t in tasks {
        t.await;
    }
}

/// One producer: a burst of 1 to 3 appends, then a wait for durability, then the ACK lines.
async fn produce(log: PartitionLog, mut rng: Rng, epoch: i32, large: bool, started: Instant, appended: std::rc::Rc<std::cell::Cell<u64>>) {
    while started.elapsed() < CHILD_LIFETIME_MAX && appended.get() < CHILD_APPEND_BYTES_MAX {
        let burst = rng.range(1, 3);
        let mut pending = Vec::new();
        for _ in 0..burst {
            let d = random_batch(&mut rng, epoch, large);
            let bytes = d.unstamped();
            let info = log
                .append(&bytes, epoch, wall_ms())
                .await
                .unwrap_or_else(|e| child_fail(format!("append of {} bytes: {e}", bytes.len())));
            let d = Described {
                base: info.base_offset,
                last: info.last_offset,
                ..d
            };
            if info.last_offset - info.base_offset + 1 != d.records as u64 || info.max_timestamp != d.max_ts {
                child_fail(format!("append returned {info:?} for a batch of {} records", d.records));
            }
            appended.set(appended.get() + bytes.len() as u64);
            emit(&d.line("APP"));
            pending.push(d);
        }
        let want = pending.last().expect("a burst is never empty").last + 1;
        let durable = log
            .wait_durable(want)
            .await
            .unwrap_or_else(|e| child_fail(format!("wait_durable({want}): {e}")));
        if durable < want {
            child_fail(format!("wait_durable({want}) returned {durable}"));
        }
        for d in &pending {
            emit(&d.line("ACK"));
        }
        // Let the other producers in between bursts, so appends interleave.
        glommio::yield_if_needed().await;
    }
}

/// Mixed: mostly small batches, some medium, a few large enough to span write buffers.
/// Large: every batch spans write buffers.
fn random_batch(rng: &mut Rng, epoch: i32, large: bool) -> Described {
    let payload = match rng.range(0, 99) {
        _ if large => rng.range(*LARGE_PAYLOAD_BYTES.start(), *LARGE_PAYLOAD_BYTES.end()),
        0..=64 => rng.range(0, 512),
        65..=95 => rng.range(513, 16 * 1024),
        _ => rng.range(16 * 1024 + 1, PAYLOAD_BYTES_MAX as u64),
    } as usize;
    let records = rng.range(1, 200) as i32;
    let base_ts = 1_700_000_000_000 + rng.range(0, 1_000_000) as i64;
    Described {
        base: 0,
        last: 0,
        records,
        payload,
        base_ts,
        max_ts: base_ts + i64::from(records) - 1,
        epoch,
    }
}

/// Writes one protocol line with one `write(2)`, so a kill cannot split it.
fn emit(line: &str) {
    assert!(line.len() < 512 && line.ends_with('\n'), "protocol lines are short and whole");
    let mut out = std::io::stdout().lock();
    if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
        // The parent stopped listening; nothing more can be acknowledged.
        child_fail("stdout closed".into());
    }
}

fn child_fail(msg: String) -> ! {
    eprintln!("crash child failed: {msg}");
    std::process::exit(CHILD_FAILED_EXIT);
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn env_parse<T: std::str::FromStr>(key: &str) -> Option<T> {
    std::env::var(key).ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Parent: spawn, kill, reopen, check.
// ---------------------------------------------------------------------------------------------

/// When a cycle's kill lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// This long after spawn, producers never let go: the kill lands during start-up,
    /// recovery or at the gate, before any append.
    BeforeAnyAck(Duration),
    /// This long after spawn: in recovery or in the first appends, depending on how long
    /// recovery takes by then.
    FromSpawn(Duration),
    /// This long after the child reported its recovery done: mid-append.
    AfterOpen(Duration),
}

/// What one child is told through its environment.
#[derive(Debug, Clone, Copy)]
struct ChildParams {
    seed: u64,
    epoch: i32,
    writes_in_flight_max: usize,
    large_batches: bool,
    /// Commits sync the filesystem, not the segment: every other cycle.
    sync_filesystem: bool,
}

/// What one child said before it died.
#[derive(Default)]
struct ChildReport {
    opened: Option<(u64, u64)>,
    /// When the OPEN line arrived, after spawn: start-up plus recovery.
    opened_after: Option<Duration>,
    appended: Vec<Described>,
    acked: Vec<Described>,
    /// Protocol lines that did not parse (there should be none).
    garbled: Vec<String>,
}

fn run_parent() {
    let seed: u64 = env_parse("CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let cycles: u64 = env_parse("CRASH_CYCLES").unwrap_or(CYCLES_DEFAULT);
    assert!(cycles >= 2, "CRASH_CYCLES must be at least 2: one early kill and one late");
    // Printed first, so any failure below can be replayed.
    println!("crash test: CRASH_SEED={seed} CRASH_CYCLES={cycles}");
    let tmp = tempfile::tempdir().expect("creating a temporary directory");
    let dir = tmp.path().join("partition");
    let mut rng = Rng::new(seed);
    let mut acked: BTreeMap<u64, Acked> = BTreeMap::new();
    let mut cycles_without_acks = 0u64;
    let mut sealed_max = 0usize;
    // Where the log must start on the next reopen: moved only by the parent's retention.
    let mut log_start = 0u64;
    let mut acked_total = 0usize;
    let mut tails: BTreeMap<&'static str, u64> = BTreeMap::new();
    // The inode of the segment file retention kept as the spare, and how many children rolled
    // into such a file (recycled it) before their kill, so that recovery ran on one.
    let mut spare_inode: Option<u64> = None;
    let mut recycled = 0u64;
    let started = Instant::now();

    for cycle in 0..cycles {
        let replay = format!("CRASH_SEED={seed} CRASH_CYCLES={cycles}, cycle {cycle}");
        let kill_at = match cycle % 10 {
            // Late, in the last cycle too: many rolls and thousands of batches in.
            4 => KillAt::AfterOpen(Duration::from_millis(rng.range(1000, 1600))),
            _ if cycle + 1 == cycles => KillAt::AfterOpen(Duration::from_millis(rng.range(1000, 1600))),
            // Cycle 0 kills an empty log's first open; later ones kill a recovery of real data.
            0 | 7 => KillAt::BeforeAnyAck(Duration::from_millis(rng.range(0, 15))),
            2 | 9 => KillAt::FromSpawn(Duration::from_millis(rng.range(20, 400))),
            _ => KillAt::AfterOpen(Duration::from_millis(rng.range(1, 400))),
        };
        let child = ChildParams {
            seed: rng.next(),
            epoch: (cycle + 1) as i32,
            // One write in flight makes each buffer wait for the previous one, which widens the
            // window where a batch spanning two buffers is half on disk.
            writes_in_flight_max: [1, 1, 2, 4][rng.range(0, 3) as usize],
            large_batches: rng.range(0, 2) == 0,
            sync_filesystem: cycle % 2 == 1,
        };
        let mut report = match run_child_once(&dir, child, kill_at) {
            Ok(r) => r,
            Err(e) => fail(tmp, &format!("{replay}: {e}")),
        };
        if !report.acked.is_empty() && report.opened.is_none() {
            report.garbled.push("(acks without an OPEN line before them)".into());
        }
        if !report.garbled.is_empty() {
            fail(tmp, &format!("{replay}: child wrote unparsable lines: {:?}", report.garbled));
        }
        if let KillAt::BeforeAnyAck(_) = kill_at {
            if !report.acked.is_empty() || !report.appended.is_empty() {
                fail(tmp, &format!("{replay}: the child appended although it was never let go"));
            }
        }
        if report.acked.is_empty() {
            cycles_without_acks += 1;
        }
        // The child reopened what the previous check saw: it must not have lost anything either.
        if let Some((child_start, _)) = report.opened.filter(|&(start, _)| start != log_start) {
            fail(
                tmp,
                &format!("{replay}: the child's recovery started the log at {child_start}, not {log_start}"),
            );
        }
        if let (Some((_, log_end)), Some((_, last))) = (report.opened, acked.last_key_value()) {
            if log_end < last.d.last + 1 {
                fail(
                    tmp,
                    &format!(
                        "{replay}: the child's recovery ended the log at {log_end}, below acknowledged offset {}",
                        last.d.last
                    ),
                );
            }
        }
        let new_acks = report.acked.len();
        acked_total += new_acks;
        for d in &report.acked {
            let entry = Acked {
                d: *d,
                bytes: d.expected_bytes().into(),
            };
            if let Some(old) = acked.insert(d.base, entry) {
                fail(
                    tmp,
                    &format!("{replay}: offset {} acknowledged twice: first {:?}, now {d:?}", d.base, old.d),
                );
            }
        }
        // Classify what the kill left at the end of the newest segment, before recovery cuts
        // it, so the run shows which recovery paths it exercised.
        let tail = match raw_tail(&dir) {
            Ok(t) => t,
            Err(e) => fail(tmp, &format!("{replay}: {e}")),
        };
        *tails.entry(tail.kind()).or_default() += 1;
        if spare_inode.is_some_and(|ino| segment_inodes(&dir).contains(&ino)) {
            recycled += 1;
        }
        let check_seed = rng.next();
        let check_started = Instant::now();
        match check(&dir, &acked, &report, log_start, check_seed) {
            Ok(summary) => {
                log_start = summary.retained_from;
                if let Some(a) = acked.values().find(|a| a.d.base < log_start && a.d.last >= log_start) {
                    fail(
                        tmp,
                        &format!("{replay}: retention cut acknowledged batch {:?} in two at {log_start}", a.d),
                    );
                }
                acked.retain(|_, a| a.d.base >= log_start);
                sealed_max = sealed_max.max(summary.sealed);
                spare_inode = std::fs::metadata(dir.join("recycled.spare")).ok().map(|m| m.ino());
                println!(
                    concat!(
                        "{}: {:?}, {} in flight, large {}, syncfs {}, opened after {:?}, tail {}, ",
                        "{} acks ({} still in the log), log [{}, {}) in {} bytes, {} sealed segments, ",
                        "checked in {:?}, retained from {}"
                    ),
                    replay,
                    kill_at,
                    child.writes_in_flight_max,
                    child.large_batches,
                    child.sync_filesystem,
                    report.opened_after,
                    tail.describe(),
                    new_acks,
                    acked.len(),
                    summary.log_start,
                    summary.log_end,
                    summary.bytes,
                    summary.sealed,
                    check_started.elapsed(),
                    summary.retained_from
                );
            }
            Err(why) => fail(tmp, &format!("{replay}: {why}")),
        }
    }

    println!(
        "crash test: {cycles} kills, {acked_total} acknowledged batches, {cycles_without_acks} cycles without acks, in {:?}",
        started.elapsed()
    );
    println!("crash test: what the kills left after the last batch: {tails:?}");
    println!("crash test: {recycled} children rolled into a recycled segment file before their kill");
    // Guard against a test that passes by never doing anything.
    assert!(acked_total > 0, "CRASH_SEED={seed}: no batch was ever acknowledged");
    assert!(
        sealed_max >= 1,
        "CRASH_SEED={seed}: no segment ever rolled; the kills never landed near a roll"
    );
    assert!(
        recycled >= 1,
        "CRASH_SEED={seed}: no child ever reused the spare segment file; recovery of a recycled segment went untested"
    );
}

/// Inode numbers of the segment data files in `dir`.
fn segment_inodes(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| e.metadata().ok().map(|m| m.ino()))
        .collect()
}

/// Keeps the log directory for a post-mortem and fails the test.
fn fail(tmp: tempfile::TempDir, msg: &str) -> ! {
    let kept = tmp.keep();
    panic!("{msg}\n(log directory kept at {})", kept.display());
}

/// Spawns the child on `dir`, kills it with SIGKILL as `kill_at` says, and returns what it
/// reported. Fails the test if the child died of anything but the kill.
fn run_child_once(dir: &Path, child: ChildParams, kill_at: KillAt) -> Result<ChildReport, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the test binary: {e}"))?;
    let mut proc = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, child.seed.to_string())
        .env(CHILD_EPOCH_ENV, child.epoch.to_string())
        .env(CHILD_WRITES_IN_FLIGHT_ENV, child.writes_in_flight_max.to_string())
        .env(CHILD_LARGE_ENV, u8::from(child.large_batches).to_string())
        .env(CHILD_SYNC_FILESYSTEM_ENV, u8::from(child.sync_filesystem).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the crash child: {e}"))?;
    let spawned = Instant::now();
    let mut stdin = proc.stdin.take().expect("piped stdin");
    let stdout = proc.stdout.take().expect("piped stdout");
    let mut stderr = proc.stderr.take().expect("piped stderr");
    // Readers on their own threads, so a full pipe never stalls the child before the kill.
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let out_reader = std::thread::spawn(move || read_report(stdout, spawned, opened_tx));
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    if !matches!(kill_at, KillAt::BeforeAnyAck(_)) {
        // A child that already died cannot read it; its exit status tells why below.
        let _ = stdin.write_all(b"go\n").and_then(|()| stdin.flush());
    }
    let mut recovery_hung = false;
    match kill_at {
        KillAt::BeforeAnyAck(d) | KillAt::FromSpawn(d) => std::thread::sleep(d.saturating_sub(spawned.elapsed())),
        KillAt::AfterOpen(d) => match opened_rx.recv_timeout(OPEN_WAIT_MAX) {
            Ok(()) => std::thread::sleep(d),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => recovery_hung = true,
            // The child's stdout closed before OPEN: it died, and its exit status says why.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        },
    }
    // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no fdatasync runs. (The
    // workspace forbids `unsafe`, so `libc::kill` is not an option here.)
    let _ = proc.kill();
    let status = proc.wait().map_err(|e| format!("waiting for the crash child: {e}"))?;
    drop(stdin);
    let report = out_reader.join().expect("stdout reader panicked");
    let err = err_reader.join().expect("stderr reader panicked");
    if status.signal() != Some(libc::SIGKILL) {
        return Err(format!(
            "the crash child was not killed but ended with {status}; its stderr:\n{err}"
        ));
    }
    if recovery_hung {
        return Err(format!(
            "the crash child did not finish recovery within {OPEN_WAIT_MAX:?}; its stderr:\n{err}"
        ));
    }
    Ok(report)
}

/// Parses the child's stdout. Only whole lines count: a line cut by the kill was never seen
/// by anyone, so it acknowledges nothing. Lines without a protocol tag come from the test
/// harness and are ignored.
fn read_report(stdout: std::process::ChildStdout, spawned: Instant, opened: std::sync::mpsc::Sender<()>) -> ChildReport {
    let mut report = ChildReport::default();
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let fields: Vec<&str> = text.split_whitespace().collect();
        const TAGS: [&str; 3] = ["OPEN", "APP", "ACK"];
        if fields.iter().skip(1).any(|f| TAGS.contains(f)) {
            // A protocol line glued to other output: it must not be lost silently.
            report.garbled.push(text.into_owned());
            continue;
        }
        let parsed = match fields.first() {
            Some(&"OPEN") if fields.len() == 3 => fields[1].parse().ok().zip(fields[2].parse().ok()).map(|o| {
                report.opened = Some(o);
                report.opened_after = Some(spawned.elapsed());
                // The parent may have stopped waiting; then nobody needs to hear it.
                let _ = opened.send(());
            }),
            Some(&"APP") => Described::parse(&fields[1..]).map(|d| report.appended.push(d)),
            Some(&"ACK") => Described::parse(&fields[1..]).map(|d| report.acked.push(d)),
            Some(&"OPEN") => None,
            _ => Some(()),
        };
        if parsed.is_none() {
            report.garbled.push(text.into_owned());
        }
    }
    report
}

struct CheckSummary {
    log_start: u64,
    log_end: u64,
    bytes: u64,
    sealed: usize,
    /// The log start after the parent's retention.
    retained_from: u64,
}

/// Reopens the log in this process and checks it against everything acknowledged, on its own
/// executor thread (the log is not `Send`, and each check starts from a fresh executor).
fn check(dir: &Path, acked: &BTreeMap<u64, Acked>, report: &ChildReport, log_start: u64, seed: u64) -> Result<CheckSummary, String> {
    let dir = dir.to_owned();
    let acked = acked.clone();
    // Appended but maybe not durable: if the batch survived, its bytes must be exactly these.
    let appended: BTreeMap<u64, Described> = report.appended.iter().map(|d| (d.base, *d)).collect();
    let fresh: Vec<u64> = report.acked.iter().map(|d| d.base).collect();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("crash-check")
        .spawn(move || async move { check_log(&dir, &acked, &appended, &fresh, log_start, seed).await })
        .map_err(|e| format!("starting the check executor: {e}"))?
        .join()
        .map_err(|e| format!("check executor: {e}"))?
}

async fn check_log(
    dir: &Path,
    acked: &BTreeMap<u64, Acked>,
    appended: &BTreeMap<u64, Described>,
    fresh: &[u64],
    log_start: u64,
    seed: u64,
) -> Result<CheckSummary, String> {
    let log = PartitionLog::open(config(dir))
        .await
        .map_err(|e| format!("reopening after the kill: {e}"))?;
    let o = log.offsets();
    if o.durable_end != o.log_end {
        return Err(format!("after recovery durable_end {} != log_end {}", o.durable_end, o.log_end));
    }
    if o.log_start != log_start {
        return Err(format!("log_start is {}, but retention left it at {log_start}", o.log_start));
    }
    if let Some(Acked { d: last, .. }) = acked.values().next_back() {
        if o.log_end < last.last + 1 {
            return Err(format!(
                "log_end {} is below acknowledged batch [{}, {}]",
                o.log_end, last.base, last.last
            ));
        }
    }

    // Walk every batch from the start: contiguous, each valid, acknowledged ones byte for byte,
    // ending exactly at the durable end.
    let mut next = o.log_start;
    let mut bytes_total = 0u64;
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    while next < o.durable_end {
        let r = log
            .read(next, READ_BYTES_MAX)
            .await
            .map_err(|e| format!("read({next}): {e}"))?
            .ok_or_else(|| format!("read({next}) found nothing below the durable end {}", o.durable_end))?;
        if r.first_offset != next {
            return Err(format!("read({next}) started at batch {} instead", r.first_offset));
        }
        let bytes: &[u8] = &r.bytes;
        let mut at = 0usize;
        while at < bytes.len() {
            let h = BatchHeader::parse(&bytes[at..]).map_err(|e| format!("batch at offset {next}: {e}"))?;
            let end = at + h.total_bytes;
            if end > bytes.len() {
                return Err(format!("read({}) returned a partial batch at offset {next}", r.first_offset));
            }
            let one = &bytes[at..end];
            let h =
                validate(one, BATCH_BYTES_MAX, CountCheck::AtMost).map_err(|e| format!("invalid batch served at offset {next}: {e}"))?;
            if h.base_offset < 0 || h.base_offset as u64 != next {
                return Err(format!("batch at base {} where offset {next} was expected", h.base_offset));
            }
            if let Some(a) = acked.get(&next) {
                same_bytes(one, &a.d, &a.bytes, "walk")?;
            } else if let Some(d) = appended.get(&next) {
                // Appended, never acknowledged, yet it survived: it must still be exactly that batch.
                same_bytes(one, d, &d.expected_bytes(), "walk (unacknowledged batch)")?;
            }
            seen.insert(next);
            next = h.last_offset() as u64 + 1;
            at = end;
            bytes_total += h.total_bytes as u64;
        }
        if r.next_offset != next {
            return Err(format!(
                "read({}) said next offset {} but its batches end at {next}",
                r.first_offset, r.next_offset
            ));
        }
    }
    if next != o.durable_end {
        return Err(format!("the walk ended at {next}, past the durable end {}", o.durable_end));
    }
    match log.read(o.durable_end, READ_BYTES_MAX).await {
        Ok(None) => {}
        Ok(Some(r)) => return Err(format!("read at the durable end {} served {r:?}", o.durable_end)),
        Err(e) => return Err(format!("read at the durable end {}: {e}", o.durable_end)),
    }
    if let Some(Acked { d: missing, .. }) = acked.values().find(|a| !seen.contains(&a.d.base)) {
        return Err(format!(
            "acknowledged batch [{}, {}] is not a batch of the recovered log",
            missing.base, missing.last
        ));
    }

    // Nothing beyond the last valid batch may remain on disk, served or not.
    let size = log.size_bytes();
    if size != bytes_total {
        return Err(format!("size_bytes {size} but the batches served add up to {bytes_total}"));
    }
    let on_disk = log_files_bytes(dir)?;
    if on_disk != bytes_total {
        return Err(format!(
            "segment files hold {on_disk} bytes but the valid batches add up to {bytes_total}: {}",
            "recovery left bytes after the last valid batch"
        ));
    }

    // Reads from inside a batch: a random sample of this cycle's acks and of all of them.
    let mut rng = Rng::new(seed);
    let bases: Vec<u64> = acked.keys().copied().collect();
    let mut sample = Vec::new();
    for from in [fresh, &bases[..]] {
        sample.extend((0..SPOT_READS_MAX.min(from.len())).map(|_| from[rng.next() as usize % from.len()]));
    }
    for base in sample {
        let Acked { d, bytes: want } = &acked[&base];
        let mid = rng.range(d.base, d.last);
        let r = log
            .read(mid, 1)
            .await
            .map_err(|e| format!("read({mid}) of acknowledged batch [{}, {}]: {e}", d.base, d.last))?
            .ok_or_else(|| format!("read({mid}) of acknowledged batch [{}, {}] found nothing", d.base, d.last))?;
        if r.first_offset != d.base || r.next_offset != d.last + 1 {
            return Err(format!(
                "read({mid}) returned [{}, {}) instead of acknowledged batch [{}, {}]",
                r.first_offset, r.next_offset, d.base, d.last
            ));
        }
        same_bytes(&r.bytes, d, want, "read from inside the batch")?;
    }

    let sealed = log.sealed_segments().len();
    log.enforce_retention(wall_ms())
        .await
        .map_err(|e| format!("retention after the check: {e}"))?;
    Ok(CheckSummary {
        log_start: o.log_start,
        log_end: o.log_end,
        bytes: bytes_total,
        sealed,
        retained_from: log.offsets().log_start,
    })
}

/// Compares a served batch with the one the child described, naming the first differing byte.
fn same_bytes(got: &[u8], d: &Described, want: &[u8], how: &str) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let first_diff = got.iter().zip(want).position(|(a, b)| a != b);
    Err(format!(
        "{how}: batch at offset {} differs from what the child reported ({d:?}): {} bytes served, {} expected, {}{first_diff:?}",
        d.base,
        got.len(),
        want.len(),
        "first difference at byte "
    ))
}

/// What a kill left after the last whole batch of the newest segment file.
#[derive(Debug)]
enum RawTail {
    /// No segment file yet.
    NoSegment,
    /// The file ends right after a valid batch (or is empty).
    Clean,
    /// Zeros follow: preallocated space or a write that never landed.
    Zeros { at: u64, file_bytes: u64 },
    /// A batch cut short or damaged: a write that landed partly, or a later buffer that landed
    /// before an earlier one.
    Torn { at: u64, why: String },
}

impl RawTail {
    fn kind(&self) -> &'static str {
        match self {
            RawTail::NoSegment => "no segment",
            RawTail::Clean => "clean",
            RawTail::Zeros { .. } => "zeros",
            RawTail::Torn { .. } => "torn batch",
        }
    }

    fn describe(&self) -> String {
        match self {
            RawTail::NoSegment | RawTail::Clean => self.kind().to_owned(),
            RawTail::Zeros { at, file_bytes } => format!("zeros from byte {at} of {file_bytes}"),
            RawTail::Torn { at, why } => format!("torn batch at byte {at}: {why}"),
        }
    }
}

/// Walks the newest segment file with ordinary reads, independently of the log's own scan.
fn raw_tail(dir: &Path) -> Result<RawTail, String> {
    let newest = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("listing {}: {e}", dir.display())),
    };
    let Some(path) = newest else { return Ok(RawTail::NoSegment) };
    let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let file_bytes = bytes.len() as u64;
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let head = &rest[..rest.len().min(BATCH_HEADER_BYTES)];
        if head.iter().all(|&b| b == 0) {
            return Ok(RawTail::Zeros {
                at: pos as u64,
                file_bytes,
            });
        }
        let why = match BatchHeader::parse(rest) {
            Err(e) => e.to_string(),
            Ok(h) if h.total_bytes > rest.len() => format!("{} bytes declared, {} in the file", h.total_bytes, rest.len()),
            Ok(h) => match validate(&rest[..h.total_bytes], BATCH_BYTES_MAX, CountCheck::AtMost) {
                Ok(_) => {
                    pos += h.total_bytes;
                    continue;
                }
                Err(e) => e.to_string(),
            },
        };
        return Ok(RawTail::Torn { at: pos as u64, why });
    }
    Ok(RawTail::Clean)
}

/// Total size of the segment data files in `dir`.
fn log_files_bytes(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?;
        if entry.file_name().to_str().is_some_and(|n| n.ends_with(".log")) {
            total += entry.metadata().map_err(|e| format!("stat {}: {e}", entry.path().display()))?.len();
        }
    }
    Ok(total)
}
