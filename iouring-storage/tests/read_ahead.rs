//! Read-ahead for sequential readers: what they are served is byte for byte what plain reads
//! serve, also when the log changes under them (truncation, a compaction rewrite).

mod common;

use common::run_in_dir;

use std::path::Path;

use iouring_storage::testing::build_batch;
use iouring_storage::{read_ahead_stats, stamp, BatchHeader, LogConfig, PartitionLog};

/// Segments of 4 MiB, so a reader of 64 KiB reads goes through several windows of 512 KiB in
/// each, and the active segment holds more than one window behind its end.
fn config(dir: &Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes = 4 * 1024 * 1024;
    c.batch_bytes_max = 64 * 1024;
    c
}

/// The `i`-th batch: between 9 and 41 KiB, so batches straddle every window boundary.
fn nth_batch(i: u64, fill: i64) -> Vec<u8> {
    let payload = 9 * 1024 + ((i * 7919) % (32 * 1024)) as usize;
    build_batch(1 + (i % 5) as i32, payload, fill, fill + i as i64)
}

/// Appends batches `from..to` (with `fill` in their timestamps, so other fills make other
/// bytes), commits, and returns (base offset, stored bytes) of each.
async fn append(log: &PartitionLog, from: u64, to: u64, fill: i64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for i in from..to {
        let mut b = nth_batch(i, fill);
        let info = log.append(&b, 0, 0).await.expect("append");
        stamp(&mut b, info.base_offset as i64, 0);
        out.push((info.base_offset, b));
    }
    log.commit().await.expect("commit");
    out
}

/// (base offset, bytes) of each whole batch in `bytes`.
fn batches_in(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = BatchHeader::parse(&bytes[at..]).expect("header");
        out.push((h.base_offset as u64, bytes[at..at + h.total_bytes].to_vec()));
        at += h.total_bytes;
    }
    out
}

/// Reads from `from` in reads of `max_bytes` until `until` batches have come back or the log
/// ends, and returns (base offset, bytes) of each batch and the offset to continue at.
async fn read_batches(log: &PartitionLog, from: u64, max_bytes: usize, until: usize) -> (Vec<(u64, Vec<u8>)>, u64) {
    let mut out = Vec::new();
    let mut next = from;
    while out.len() < until {
        let Some(r) = log.read(next, max_bytes).await.expect("read") else {
            break;
        };
        out.extend(batches_in(&r.bytes));
        next = r.next_offset;
    }
    (out, next)
}

#[test]
fn sequential_readers_are_served_from_read_ahead_byte_for_byte() {
    run_in_dir(|dir| async move {
        let log = PartitionLog::open(config(&dir)).await.unwrap();
        let all = append(&log, 0, 600, 0).await;
        assert!(log.sealed_segments().len() >= 2, "the reads cross segments");
        let served_before = read_ahead_stats().reads_served;
        // Two readers at different places, taking turns, and a one-off read between them.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut next_a, mut next_b) = (0, all[300].0);
        loop {
            let (got, n) = read_batches(&log, next_a, 64 * 1024, 1).await;
            a.extend(got);
            next_a = n;
            let (got, n) = read_batches(&log, next_b, 100 * 1024, 1).await;
            b.extend(got);
            next_b = n;
            let (one, _) = read_batches(&log, all[7].0, 1, 1).await;
            assert_eq!(one[0], all[7]);
            if a.len() >= 300 && b.len() >= 300 {
                break;
            }
        }
        assert_eq!(&a[..300], &all[..300]);
        assert_eq!(&b[..300], &all[300..]);
        let served = read_ahead_stats().reads_served - served_before;
        assert!(served > 100, "most reads were served from read-ahead windows ({served})");
        log.close().await.unwrap();
        // A window still being read is given back when its read ends.
        for _ in 0..1000 {
            if read_ahead_stats().bytes == 0 {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(read_ahead_stats().bytes, 0, "closing the log gives its windows back");
    });
}

#[test]
fn a_reader_that_repeats_each_read_is_served_from_its_windows_byte_for_byte() {
    run_in_dir(|dir| async move {
        let log = PartitionLog::open(config(&dir)).await.unwrap();
        let all = append(&log, 0, 400, 0).await;
        // Like a consumer of many partitions whose fetch responses drop this partition's data
        // every other time: each read is asked for twice before the reader moves on.
        let mut got = Vec::new();
        let mut next = 0;
        let (mut served, mut reads) = (0u64, 0u64);
        while got.len() < 300 {
            let first = log.read(next, 64 * 1024).await.unwrap().expect("data");
            let before = read_ahead_stats().reads_served;
            let again = log.read(next, 64 * 1024).await.unwrap().expect("data");
            served += read_ahead_stats().reads_served - before;
            reads += 1;
            let n = first.bytes.len().min(again.bytes.len());
            assert!(
                first.first_offset == again.first_offset && first.bytes[..n] == again.bytes[..n],
                "a repeated read at {next} returns the same batches: {} bytes to {} the first time, {} to {} again",
                first.bytes.len(),
                first.next_offset,
                again.bytes.len(),
                again.next_offset
            );
            got.extend(batches_in(&again.bytes));
            next = again.next_offset;
        }
        assert_eq!(&got[..], &all[..got.len()]);
        // A repeat misses only where its read used up a window (the window is then gone).
        assert!(
            served * 2 > reads,
            "{served} of {reads} repeated reads were served from read-ahead windows"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_reader_continuing_after_a_truncation_sees_the_new_batches() {
    run_in_dir(|dir| async move {
        let log = PartitionLog::open(config(&dir)).await.unwrap();
        let all = append(&log, 0, 300, 0).await;
        // The reader stops with windows read ahead of it, past where the log will be cut.
        let (got, next) = read_batches(&log, 0, 64 * 1024, 20).await;
        assert_eq!(&got[..], &all[..got.len()]);
        assert!(read_ahead_stats().bytes > 0, "windows are read ahead of the reader");
        let cut = all[got.len() + 3].0;
        assert_eq!(log.truncate_to(cut).await.unwrap(), cut);
        let again = append(&log, 1000, 1300, 1_000_000).await;
        let (rest, _) = read_batches(&log, next, 64 * 1024, usize::MAX).await;
        let expected: Vec<(u64, Vec<u8>)> = all[got.len()..got.len() + 3].iter().cloned().chain(again).collect();
        assert_eq!(rest.len(), expected.len());
        assert!(
            rest == expected,
            "the batches appended after the cut, not what was read ahead before it"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_reader_continuing_after_a_compaction_rewrite_sees_the_rewritten_segment() {
    run_in_dir(|dir| async move {
        let log = PartitionLog::open(config(&dir)).await.unwrap();
        let all = append(&log, 0, 400, 0).await;
        let first = log.sealed_segments()[0].clone();
        let (got, next) = read_batches(&log, 0, 64 * 1024, 10).await;
        assert_eq!(&got[..], &all[..got.len()]);
        // Keep only every third batch of the first segment.
        let in_first: Vec<&(u64, Vec<u8>)> = all.iter().filter(|(o, _)| *o < first.next_offset).collect();
        let kept: Vec<(u64, Vec<u8>)> = in_first.iter().step_by(3).map(|b| (*b).clone()).collect();
        let mut rewrite = log.rewrite_segment(first.base_offset).await.unwrap();
        for (_, bytes) in &kept {
            rewrite.push(bytes).await.unwrap();
        }
        assert!(rewrite.finish().await.unwrap());
        let (rest, _) = read_batches(&log, next, 64 * 1024, usize::MAX).await;
        let expected: Vec<(u64, Vec<u8>)> = kept
            .iter()
            .filter(|(o, _)| *o >= next)
            .cloned()
            .chain(all.iter().filter(|(o, _)| *o >= first.next_offset).cloned())
            .collect();
        assert_eq!(rest.len(), expected.len());
        assert!(
            rest == expected,
            "the rewritten segment, not what was read ahead before the rewrite"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_reader_of_one_byte_at_a_time_gets_every_batch_whole_in_order() {
    run_in_dir(|dir| async move {
        let log = PartitionLog::open(config(&dir)).await.unwrap();
        let all = append(&log, 0, 200, 0).await;
        // Each read continues where the last stopped, from the batch's own position: the first
        // without a window of its own asks for less than a batch header.
        let (got, _) = read_batches(&log, 0, 1, all.len() + 1).await;
        assert_eq!(got, all, "every batch once, whole and in order, then the end of the log");
        log.close().await.unwrap();
    });
}
