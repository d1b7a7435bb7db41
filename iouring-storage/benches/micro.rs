//! Criterion micro-benchmarks of the CPU-only parts of the partition log: batch validation
//! (with the CRC-32C and memcpy it is measured against), sparse index lookups, and the
//! in-memory half of an append.
//!
//! Workloads and method:
//! - `batch_validate/*`: one Kafka v2 batch of 1 KiB, 16 KiB and 1 MiB in total (header
//!   included), built by `testing::build_batch`, validated with `CountCheck::Exact` as the
//!   append path does. Beside it on the same bytes: `crc32c_hw`, the `crc32c` crate that
//!   `validate` uses (SSE4.2 / ARMv8 CRC when the CPU has them), `crc_table`, the
//!   table-driven `crc` crate (`CRC_32_ISCSI`, one 256-entry table) that the unit tests use as
//!   the oracle, and `memcpy` of the whole batch into another buffer: the machine's own limit,
//!   measured in the same run. Both CRCs cover the region `validate` hashes (bytes 21..).
//! - `index_lookup/*`: a `SegmentIndex` filled as for a full 1 GiB segment of 1 KiB batches
//!   (10 records each, timestamps one per batch) at Kafka's default 4 KiB interval, about 262k
//!   entries; lookups of offsets and timestamps drawn uniformly by a fixed-seed xorshift, so
//!   every run asks the same questions. The targets are drawn before timing starts.
//! - `append_in_memory/*`: per batch, what `PartitionLog::append` does before any I/O:
//!   validate, copy the header out and stamp base offset and leader epoch, copy the batch into a
//!   4096-aligned 1 MiB write buffer (the default `write_buffer_bytes`), update the index.
//!   A full buffer is recycled instead of written, and the segment rolls at 1 GiB, as the log
//!   would. `copy_only` is the same stream of copies into the same buffer without the rest:
//!   the floor the append path is measured against.
//!
//! Criterion reports the median time per iteration and throughput (bytes or lookups per
//! second). Run: `cargo bench -p iouring-storage --bench micro`. Under `cargo test` each
//! benchmark runs once, as a smoke test; timings never decide pass or fail.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iouring_storage::bench_support::SegmentIndex;
use iouring_storage::constants::{BATCH_BYTES_MAX, BATCH_CRC_START, BATCH_HEADER_BYTES};
use iouring_storage::testing::build_batch;
use iouring_storage::{stamp, validate, CountCheck};

/// Kafka's default `index.interval.bytes`, also `LogConfig::new`'s.
const INDEX_INTERVAL_BYTES: u32 = 4096;
/// Kafka's default `segment.bytes`.
const SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// `LogConfig::new`'s `write_buffer_bytes`.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Alignment of glommio's DMA buffers on the disks here.
const BUFFER_ALIGN_BYTES: usize = 4096;
/// Leader epoch stamped by the append benchmark; any value will do.
const LEADER_EPOCH: i32 = 7;
/// Lookup targets drawn per run: 256 KiB of u32 or 512 KiB of i64, cycled through.
const LOOKUP_TARGETS: usize = 1 << 16;

/// The table-driven CRC-32C of the unit tests' oracle. A static, so the table is built once.
static CRC_TABLE: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// A batch of exactly `total_bytes`, header included, with about one record per 128 bytes.
fn batch_of(total_bytes: usize) -> Vec<u8> {
    let records = (total_bytes / 128).max(1) as i32;
    let b = build_batch(
        records,
        total_bytes - BATCH_HEADER_BYTES,
        1_700_000_000_000,
        1_700_000_000_000 + i64::from(records),
    );
    assert_eq!(b.len(), total_bytes);
    b
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{}MiB", bytes >> 20)
    } else {
        format!("{}KiB", bytes >> 10)
    }
}

fn batch_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_validate");
    for total in [1 << 10, 16 << 10, 1 << 20] {
        let batch = batch_of(total);
        let covered = &batch[BATCH_CRC_START..];
        assert_eq!(crc32c::crc32c(covered), CRC_TABLE.checksum(covered), "the two CRC-32C must agree");
        let label = size_label(total);

        group.throughput(Throughput::Bytes(total as u64));
        group.bench_with_input(BenchmarkId::new("validate", &label), &batch, |b, batch| {
            b.iter(|| validate(black_box(batch), BATCH_BYTES_MAX, CountCheck::Exact).expect("a valid batch"))
        });
        group.bench_with_input(BenchmarkId::new("memcpy", &label), &batch, |b, batch| {
            let mut dst = vec![0u8; batch.len()];
            b.iter(|| {
                dst.copy_from_slice(black_box(batch));
                black_box(&mut dst);
            })
        });

        group.throughput(Throughput::Bytes(covered.len() as u64));
        group.bench_with_input(BenchmarkId::new("crc32c_hw", &label), covered, |b, covered| {
            b.iter(|| crc32c::crc32c(black_box(covered)))
        });
        group.bench_with_input(BenchmarkId::new("crc_table", &label), covered, |b, covered| {
            b.iter(|| CRC_TABLE.checksum(black_box(covered)))
        });
    }
    group.finish();
}

/// Marsaglia's xorshift64: a fixed seed gives every run the same targets, with no dependency.
struct XorShift64(u64);

impl XorShift64 {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `0..=max` for lookup targets (the modulo bias is below 2^-32).
    fn up_to(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }
}

/// What filling a full segment produced: the index and the ranges lookups draw from.
struct FullSegment {
    index: SegmentIndex,
    last_relative_offset: u32,
    first_timestamp: i64,
    last_timestamp: i64,
}

fn full_segment() -> FullSegment {
    const BATCH_BYTES: u32 = 1024;
    const RECORDS_PER_BATCH: u32 = 10;
    let first_timestamp = 1_700_000_000_000i64;
    let mut index = SegmentIndex::new(INDEX_INTERVAL_BYTES);
    let (mut relative, mut position, mut timestamp) = (0u32, 0u64, first_timestamp);
    while position + u64::from(BATCH_BYTES) <= SEGMENT_BYTES {
        index.on_batch(relative, position as u32, BATCH_BYTES, timestamp);
        relative += RECORDS_PER_BATCH;
        position += u64::from(BATCH_BYTES);
        timestamp += 1;
    }
    // The last point sits within one interval of the end: the index covers the whole segment.
    let (_, last_point) = index.lookup(u32::MAX);
    assert!(SEGMENT_BYTES - u64::from(last_point) <= u64::from(INDEX_INTERVAL_BYTES) + u64::from(BATCH_BYTES));
    FullSegment {
        index,
        last_relative_offset: relative - RECORDS_PER_BATCH,
        first_timestamp,
        last_timestamp: timestamp - 1,
    }
}

fn index_lookup(c: &mut Criterion) {
    let segment = full_segment();
    let mut rng = XorShift64(0x9e37_79b9_7f4a_7c15);
    let offsets: Vec<u32> = (0..LOOKUP_TARGETS)
        .map(|_| rng.up_to(u64::from(segment.last_relative_offset)) as u32)
        .collect();
    let span = (segment.last_timestamp - segment.first_timestamp) as u64;
    let timestamps: Vec<i64> = (0..LOOKUP_TARGETS)
        .map(|_| segment.first_timestamp + rng.up_to(span) as i64)
        .collect();
    for &target in offsets.iter().take(1000) {
        assert!(segment.index.lookup(target).0 <= target);
    }

    let mut group = c.benchmark_group("index_lookup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("offset_random_1GiB_segment", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let target = offsets[i % LOOKUP_TARGETS];
            i = i.wrapping_add(1);
            segment.index.lookup(black_box(target))
        })
    });
    group.bench_function("time_random_1GiB_segment", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let target = timestamps[i % LOOKUP_TARGETS];
            i = i.wrapping_add(1);
            segment.index.lookup_time(black_box(target))
        })
    });
    group.finish();
}

/// A write buffer aligned like glommio's `DmaBuffer`, without unsafe: over-allocate and start at
/// the first aligned byte.
struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    fn new(capacity: usize) -> AlignedBuffer {
        let storage = vec![0u8; capacity + BUFFER_ALIGN_BYTES];
        let start = storage.as_ptr().align_offset(BUFFER_ALIGN_BYTES);
        assert!(start < BUFFER_ALIGN_BYTES, "no aligned start in the allocation");
        AlignedBuffer { storage, start, len: 0 }
    }

    fn capacity(&self) -> usize {
        self.storage.len() - BUFFER_ALIGN_BYTES
    }

    /// Copies `data` in as `Writer::copy_in` does; a full buffer is recycled where the log would
    /// submit it to the disk.
    fn copy_in(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min(self.capacity() - self.len);
            let at = self.start + self.len;
            self.storage[at..at + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len == self.capacity() {
                black_box(&self.storage);
                self.len = 0;
            }
        }
    }
}

/// The active segment as `PartitionLog::append` sees it, minus the disk.
struct InMemoryAppend {
    buffer: AlignedBuffer,
    index: SegmentIndex,
    log_end: u64,
    segment_base: u64,
    segment_bytes: u64,
}

impl InMemoryAppend {
    fn new() -> InMemoryAppend {
        InMemoryAppend {
            buffer: AlignedBuffer::new(WRITE_BUFFER_BYTES),
            index: SegmentIndex::new(INDEX_INTERVAL_BYTES),
            log_end: 0,
            segment_base: 0,
            segment_bytes: 0,
        }
    }

    /// Mirrors `PartitionLog::append` step for step; returns the base offset given.
    fn append(&mut self, batch: &[u8]) -> u64 {
        let header = validate(batch, BATCH_BYTES_MAX, CountCheck::Exact).expect("a valid batch");
        if self.segment_bytes + header.total_bytes as u64 > SEGMENT_BYTES {
            self.index = SegmentIndex::new(INDEX_INTERVAL_BYTES);
            self.segment_base = self.log_end;
            self.segment_bytes = 0;
        }
        let base_offset = self.log_end;
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(&batch[..BATCH_HEADER_BYTES]);
        stamp(&mut head, base_offset as i64, LEADER_EPOCH);
        let position = self.segment_bytes;
        self.buffer.copy_in(&head);
        self.buffer.copy_in(&batch[BATCH_HEADER_BYTES..]);
        self.log_end = base_offset + header.last_offset_delta as u64 + 1;
        let relative = u32::try_from(base_offset - self.segment_base).expect("segment offsets fit u32");
        let position = u32::try_from(position).expect("segment size below 4 GiB");
        self.index
            .on_batch(relative, position, header.total_bytes as u32, header.max_timestamp);
        self.segment_bytes += header.total_bytes as u64;
        base_offset
    }
}

fn append_in_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_in_memory");
    for total in [1 << 10, 16 << 10] {
        let batch = batch_of(total);
        let label = size_label(total);
        group.throughput(Throughput::Bytes(total as u64));
        group.bench_with_input(BenchmarkId::new("validate_stamp_copy_index", &label), &batch, |b, batch| {
            let mut log = InMemoryAppend::new();
            b.iter(|| log.append(black_box(batch)))
        });
        group.bench_with_input(BenchmarkId::new("copy_only", &label), &batch, |b, batch| {
            let mut buffer = AlignedBuffer::new(WRITE_BUFFER_BYTES);
            b.iter(|| buffer.copy_in(black_box(batch)))
        });
    }
    group.finish();
}

criterion_group!(benches, batch_validate, index_lookup, append_in_memory);
criterion_main!(benches);
