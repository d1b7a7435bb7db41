//! The machine's own limits, measured in the same run as the benchmark: O_DIRECT sequential
//! append bandwidth at the broker's write size and depth, O_DIRECT sequential read bandwidth of
//! what that wrote, both at once, fdatasync latency, loopback TCP bandwidth and memcpy
//! bandwidth. Every broker figure in the report stands beside one of these.
//!
//! Raw disk method: `depth` threads (the log's `writes_in_flight_max`) each write whole buffers
//! of `write_bytes` (the log's `write_buffer_bytes`) with O_DIRECT at increasing offsets of one
//! file, which is preallocated ahead of the writes with fallocate in steps that double from one
//! write buffer up to the log's `preallocate_step_bytes`, as the log grows its segments (ext4
//! writes into preallocated space at about twice the speed of writes that grow the file). The
//! final fdatasync is inside the timing. The read runs the same way over the file the append
//! wrote: `DISK_READ_DEPTH` threads, `DISK_READ_BYTES` at a time, until its end or
//! `DISK_MEASURE`. Then both at once: the same read over that file while the same append writes
//! a second one. No `unsafe`: the aligned buffer is carved out of an over-allocated `Vec`,
//! O_DIRECT is an open flag, fallocate comes from `nix`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::constants::{
    ALIGNMENT_FALLBACK_BYTES, DISK_BYTES_MAX, DISK_MEASURE, DISK_READ_BYTES, DISK_READ_DEPTH, FSYNC_ITERATIONS_MAX, FSYNC_MEASURE,
    FSYNC_WRITE_BYTES, LATENCY_US_MAX, MEMCPY_BYTES, MEMCPY_MEASURE, TCP_CHUNK_BYTES, TCP_MEASURE,
};

/// What the machine can do. MB is 10^6 bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub dir: String,
    pub alignment_bytes: usize,
    /// Where the alignment came from: the device's logical block size, or the fallback.
    pub alignment_source: String,
    pub disk_write_bytes: usize,
    pub disk_depth: usize,
    pub disk_append_mb_per_s: f64,
    /// O_DIRECT sequential reads of the appended file, `DISK_READ_BYTES` each,
    /// `DISK_READ_DEPTH` in flight.
    pub disk_read_mb_per_s: f64,
    pub disk_read_bytes: usize,
    pub disk_read_depth: usize,
    /// The append and the read above at once (the read over the first append's file): what
    /// the disk gives each while the other runs, as when consumers read a backlog from the
    /// disk while producers write.
    pub disk_mixed_append_mb_per_s: f64,
    pub disk_mixed_read_mb_per_s: f64,
    pub fdatasync_write_bytes: usize,
    pub fdatasync_us_p50: u64,
    pub fdatasync_us_p99: u64,
    pub fdatasync_us_p999: u64,
    pub tcp_loopback_mb_per_s: f64,
    pub memcpy_mb_per_s: f64,
}

/// Measures everything, in `dir` (which must be on the disk the broker writes to).
pub fn measure(dir: &Path, write_bytes: usize, depth: usize, preallocate_step_bytes: u64) -> Result<Limits> {
    let (alignment, source) = alignment(dir);
    let write_bytes = write_bytes.next_multiple_of(alignment);
    eprintln!(
        "limits: O_DIRECT append, {write_bytes} B writes, {depth} in flight, in {}",
        dir.display()
    );
    let (disk, appended) = disk_append(dir, "raw-append.tmp", write_bytes, depth, preallocate_step_bytes, alignment)?;
    eprintln!("limits: O_DIRECT read of what the append wrote");
    let read_bytes = DISK_READ_BYTES.next_multiple_of(alignment);
    let measured = (|| -> Result<(f64, (f64, f64))> {
        let read = disk_read(&appended, read_bytes, DISK_READ_DEPTH, alignment)?;
        eprintln!("limits: the same append and read at once");
        let mixed = disk_mixed(dir, &appended, write_bytes, depth, preallocate_step_bytes, read_bytes, alignment)?;
        Ok((read, mixed))
    })();
    std::fs::remove_file(&appended)?;
    let (read, (mixed_append, mixed_read)) = measured?;
    eprintln!("limits: fdatasync latency");
    let fsync_bytes = FSYNC_WRITE_BYTES.next_multiple_of(alignment);
    let fsync = fdatasync_latency(dir, fsync_bytes, alignment, preallocate_step_bytes)?;
    eprintln!("limits: loopback TCP and memcpy");
    let tcp = tcp_loopback()?;
    let memcpy = memcpy();
    Ok(Limits {
        dir: dir.display().to_string(),
        alignment_bytes: alignment,
        alignment_source: source,
        disk_write_bytes: write_bytes,
        disk_depth: depth,
        disk_append_mb_per_s: disk,
        disk_read_mb_per_s: read,
        disk_read_bytes: read_bytes,
        disk_read_depth: DISK_READ_DEPTH,
        disk_mixed_append_mb_per_s: mixed_append,
        disk_mixed_read_mb_per_s: mixed_read,
        fdatasync_write_bytes: fsync_bytes,
        fdatasync_us_p50: fsync.value_at_quantile(0.5),
        fdatasync_us_p99: fsync.value_at_quantile(0.99),
        fdatasync_us_p999: fsync.value_at_quantile(0.999),
        tcp_loopback_mb_per_s: tcp,
        memcpy_mb_per_s: memcpy,
    })
}

/// The O_DIRECT append bandwidth alone, in MB/s, taken as `measure` takes it. The harness takes
/// it again just before each maximum-rate run: one measurement of `DISK_MEASURE` is noisy on a
/// shared machine (see ARCHITECTURE.md), so the report's limit is the median of them all.
pub fn disk_append_now(dir: &Path, write_bytes: usize, depth: usize, preallocate_step_bytes: u64) -> Result<f64> {
    let (alignment, _) = alignment(dir);
    let write_bytes = write_bytes.next_multiple_of(alignment);
    let (mb_per_s, path) = disk_append(dir, "raw-append-now.tmp", write_bytes, depth, preallocate_step_bytes, alignment)?;
    std::fs::remove_file(&path)?;
    Ok(mb_per_s)
}

/// The logical block size of the device holding `dir`, from sysfs; 4096 only if unreadable.
fn alignment(dir: &Path) -> (usize, String) {
    match queue_attribute(dir, "logical_block_size").and_then(|v| v.parse::<usize>().ok()) {
        Some(a) if a.is_power_of_two() => (a, "the device's logical block size (sysfs)".into()),
        _ => (ALIGNMENT_FALLBACK_BYTES, "fallback (logical block size unreadable)".into()),
    }
}

/// An attribute of the block queue of the device holding `dir` (`queue/<name>` in sysfs),
/// trimmed; `None` if unreadable.
pub fn queue_attribute(dir: &Path, name: &str) -> Option<String> {
    let (major, minor) = device_of(dir)?;
    let base = format!("/sys/dev/block/{major}:{minor}");
    // A partition has no queue/ of its own; its parent disk does.
    [format!("{base}/queue/{name}"), format!("{base}/../queue/{name}")]
        .iter()
        .find_map(|p| Some(std::fs::read_to_string(p).ok()?.trim().to_owned()))
}

/// The major and minor number of the device holding `dir`; None if `dir` cannot be read.
pub fn device_of(dir: &Path) -> Option<(u64, u64)> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    // Linux's dev_t encoding (glibc's gnu_dev_major/minor).
    Some((((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff), (dev & 0xff) | ((dev >> 12) & !0xff)))
}

/// A buffer of `len` bytes whose start is aligned to `align`, inside an over-allocated Vec.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, align: usize, fill: u8) -> Aligned {
        let storage = vec![fill; len + align];
        let addr = storage.as_ptr() as usize;
        let start = (align - addr % align) % align;
        Aligned { storage, start, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn open_direct(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {} with O_DIRECT (tmpfs does not support it)", path.display()))
}

/// Keeps a file preallocated ahead of the writes, in steps that double up to `step_max`.
struct Preallocator {
    allocated: u64,
    step: u64,
    step_max: u64,
}

impl Preallocator {
    fn ensure(&mut self, file: &File, end: u64) -> Result<()> {
        while self.allocated < end {
            nix::fcntl::fallocate(
                file.as_raw_fd(),
                nix::fcntl::FallocateFlags::empty(),
                self.allocated as libc::off_t,
                self.step as libc::off_t,
            )
            .context("fallocate")?;
            self.allocated += self.step;
            self.step = (self.step * 2).min(self.step_max);
        }
        Ok(())
    }
}

/// Append bandwidth in MB/s, and the file written (the caller deletes it).
fn disk_append(dir: &Path, name: &str, write_bytes: usize, depth: usize, step_max: u64, alignment: usize) -> Result<(f64, PathBuf)> {
    let path = dir.join(name);
    let file = open_direct(&path)?;
    let prealloc = Mutex::new(Preallocator {
        allocated: 0,
        step: write_bytes as u64,
        step_max: step_max.max(write_bytes as u64),
    });
    let (written, start) = sequential(depth, write_bytes, DISK_BYTES_MAX, alignment, |buf, offset| {
        let end = offset + buf.len() as u64;
        prealloc.lock().expect("no panic holding it").ensure(&file, end)?;
        file.write_all_at(buf, offset).context("O_DIRECT write")
    })?;
    file.sync_data().context("fdatasync")?;
    let secs = start.elapsed().as_secs_f64();
    Ok((written as f64 / secs / 1e6, path))
}

/// Sequential O_DIRECT read bandwidth of `path` in MB/s: `depth` threads reading `read_bytes`
/// at increasing offsets until the end of the file or `DISK_MEASURE`.
fn disk_read(path: &Path, read_bytes: usize, depth: usize, alignment: usize) -> Result<f64> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {} with O_DIRECT", path.display()))?;
    let size = file.metadata()?.len();
    let (read, start) = sequential(depth, read_bytes, size, alignment, |buf, offset| {
        file.read_exact_at(buf, offset).context("O_DIRECT read")
    })?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(read > 0, "the append wrote less than one read ({read_bytes} B) to read back");
    Ok(read as f64 / secs / 1e6)
}

/// The append and the read at once, each as alone (the read over `appended`): (append MB/s,
/// read MB/s).
fn disk_mixed(
    dir: &Path,
    appended: &Path,
    write_bytes: usize,
    depth: usize,
    step_max: u64,
    read_bytes: usize,
    alignment: usize,
) -> Result<(f64, f64)> {
    std::thread::scope(|scope| {
        let append = scope.spawn(|| disk_append(dir, "raw-mixed-append.tmp", write_bytes, depth, step_max, alignment));
        let read = disk_read(appended, read_bytes, DISK_READ_DEPTH, alignment);
        let (append, path) = append.join().expect("mixed append thread")?;
        std::fs::remove_file(path)?;
        Ok((append, read?))
    })
}

/// Runs `op` on pieces of `unit` bytes at increasing offsets from `depth` threads at once, each
/// with an aligned buffer of its own, until the next piece would pass `end` or `DISK_MEASURE`
/// is up. Returns the bytes done and when it started.
fn sequential<F>(depth: usize, unit: usize, end: u64, alignment: usize, op: F) -> Result<(u64, Instant)>
where
    F: Fn(&mut [u8], u64) -> Result<()> + Sync,
{
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + DISK_MEASURE;
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..depth)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut buf = Aligned::new(unit, alignment, 1);
                    while Instant::now() < deadline {
                        let offset = next.fetch_add(unit as u64, Ordering::AcqRel);
                        if offset + unit as u64 > end {
                            break;
                        }
                        op(buf.as_mut_slice(), offset)?;
                        done.fetch_add(unit as u64, Ordering::AcqRel);
                    }
                    Ok(())
                })
            })
            .collect();
        threads.into_iter().try_for_each(|t| t.join().expect("disk I/O thread"))
    })?;
    Ok((done.load(Ordering::Acquire), start))
}

/// Write-then-fdatasync latency in µs.
fn fdatasync_latency(dir: &Path, write_bytes: usize, alignment: usize, step_max: u64) -> Result<Histogram<u64>> {
    let path = dir.join("raw-fdatasync.tmp");
    let file = open_direct(&path)?;
    let mut prealloc = Preallocator {
        allocated: 0,
        step: 1024 * 1024,
        step_max,
    };
    let buf = Aligned::new(write_bytes, alignment, 7);
    let mut h = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?;
    let start = Instant::now();
    let mut offset = 0u64;
    for _ in 0..FSYNC_ITERATIONS_MAX {
        if start.elapsed() > FSYNC_MEASURE {
            break;
        }
        prealloc.ensure(&file, offset + write_bytes as u64)?;
        let t = Instant::now();
        file.write_all_at(buf.as_slice(), offset)?;
        file.sync_data()?;
        h.record((t.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX))?;
        offset += write_bytes as u64;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(h)
}

fn tcp_loopback() -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, f64)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; TCP_CHUNK_BYTES];
        let mut total = 0u64;
        let start = Instant::now();
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok((total, start.elapsed().as_secs_f64()));
            }
            total += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![1u8; TCP_CHUNK_BYTES];
    let start = Instant::now();
    while start.elapsed() < TCP_MEASURE {
        s.write_all(&buf)?;
    }
    drop(s);
    let (bytes, secs) = reader.join().expect("tcp reader thread")?;
    Ok(bytes as f64 / secs / 1e6)
}

fn memcpy() -> f64 {
    let src = vec![1u8; MEMCPY_BYTES];
    let mut dst = vec![0u8; MEMCPY_BYTES];
    dst.copy_from_slice(&src); // fault the pages in before timing
    let start = Instant::now();
    let mut copies = 0u64;
    while start.elapsed() < MEMCPY_MEASURE {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copies += 1;
    }
    (copies * MEMCPY_BYTES as u64) as f64 / start.elapsed().as_secs_f64() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_buffer_starts_on_the_boundary_and_has_the_length() {
        for align in [512, 4096] {
            let b = Aligned::new(10_000, align, 3);
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            assert_eq!(b.as_slice().len(), 10_000);
            assert!(b.as_slice().iter().all(|&x| x == 3));
        }
    }

    #[test]
    fn the_alignment_is_a_power_of_two() {
        let (a, source) = alignment(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(a.is_power_of_two() && a >= 512, "{a} from {source}");
    }

    #[test]
    fn preallocation_steps_double_up_to_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let mut p = Preallocator {
            allocated: 0,
            step: 4096,
            step_max: 16384,
        };
        p.ensure(&file, 1).unwrap();
        assert_eq!(p.allocated, 4096);
        p.ensure(&file, 4097 + 8192 + 16384).unwrap();
        assert_eq!(p.allocated, 4096 + 8192 + 16384 + 16384);
        assert_eq!(p.step, 16384);
        assert!(file.metadata().unwrap().len() >= p.allocated);
    }
}
