//! Behaviour of one partition log on a real filesystem: append and read, group commit, roll,
//! retention, timestamps, truncation, and one test per crash scenario, each made by damaging
//! the files the way a crash or a bad disk would and reopening.

mod common;

use common::{run, run_in_dir, small_config};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use iouring_storage::testing::build_batch;
use iouring_storage::{filesystem_syncs, stamp, validate, BatchHeader, CountCheck, Error, LogConfig, PartitionLog, SyncScope};

/// The batch the `i`-th test append sends: sizes vary so batches straddle blocks and buffers.
fn nth_batch(i: u64) -> Vec<u8> {
    let records = 1 + (i % 7) as i32;
    let payload = 40 + ((i * 7919) % 3000) as usize;
    build_batch(records, payload, 1_000 + i as i64 * 10, 1_000 + i as i64 * 10 + 5)
}

/// What the log should hold for a batch appended at `base`.
fn stamped(mut batch: Vec<u8>, base: u64) -> Vec<u8> {
    stamp(&mut batch, base as i64, 0);
    batch
}

/// Appends batches `from..to` of `nth_batch`, commits, and returns (base offset, bytes) of each.
async fn append_range(log: &PartitionLog, from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
    append_each(log, from, to, nth_batch).await
}

/// Appends `batch(i)` for each i in `from..to`, commits, and returns (base offset, bytes) of each.
async fn append_each(log: &PartitionLog, from: u64, to: u64, batch: fn(u64) -> Vec<u8>) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for i in from..to {
        let b = batch(i);
        let info = log.append(&b, 0, 0).await.expect("append");
        out.push((info.base_offset, stamped(b, info.base_offset)));
    }
    log.commit().await.expect("commit");
    out
}

/// Reads the whole durable log batch by batch and returns (base offset, bytes) of each, checking
/// contiguity and validity along the way.
async fn read_all(log: &PartitionLog) -> Vec<(u64, Vec<u8>)> {
    let offsets = log.offsets();
    let mut out = Vec::new();
    let mut next = offsets.log_start;
    while let Some(r) = log.read(next, 1).await.expect("read") {
        let h = BatchHeader::parse(&r.bytes).expect("header");
        validate(&r.bytes, usize::MAX, CountCheck::AtMost).expect("every served batch is valid");
        assert_eq!(h.total_bytes, r.bytes.len(), "max_bytes 1 still returns exactly one whole batch");
        assert!(h.base_offset as u64 >= next || out.is_empty(), "batches are in order");
        out.push((h.base_offset as u64, r.bytes.to_vec()));
        next = r.next_offset;
    }
    assert_eq!(next.max(offsets.log_start), offsets.durable_end, "the walk ends at the durable end");
    out
}

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Byte positions of the batches in a segment file (only the data part, up to zero padding).
fn batch_positions(path: &Path) -> Vec<(u64, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut pos = 0usize;
    let mut out = Vec::new();
    while pos + 61 <= bytes.len() {
        let Ok(h) = BatchHeader::parse(&bytes[pos..]) else { break };
        if h.magic != 2 || pos + h.total_bytes > bytes.len() {
            break;
        }
        out.push((pos as u64, h.total_bytes));
        pos += h.total_bytes;
    }
    out
}

#[test]
fn appended_batches_read_back_byte_for_byte() {
    run_in_dir(|path| async move {
        let log = PartitionLog::open(small_config(&path)).await.unwrap();
        let written = append_range(&log, 0, 300).await;
        assert!(log.stats().segments > 3, "small segments rolled");
        assert_eq!(read_all(&log).await, written);
        // Reading from an offset in the middle of a batch returns the batch holding it.
        let (base, bytes) = &written[10];
        let h = BatchHeader::parse(bytes).unwrap();
        if h.last_offset_delta > 0 {
            let r = log.read(base + 1, 1).await.unwrap().unwrap();
            assert_eq!(r.first_offset, *base);
            assert_eq!(&r.bytes[..], &bytes[..]);
        }
        // max_bytes bounds the read, whole batches only.
        let r = log.read(0, 10_000).await.unwrap().unwrap();
        assert!(r.bytes.len() <= 10_000);
        assert_eq!(
            validate(&r.bytes[..written[0].1.len()], usize::MAX, CountCheck::Exact)
                .unwrap()
                .base_offset,
            0
        );
        log.close().await.unwrap();
    });
}

/// A read starts at the index entry below its offset and skips the batches before it in
/// memory. An index sparser than the current interval (written before `set_config` lowered
/// it) makes the skipped batches outgrow the first buffer, and a batch larger than
/// `max_bytes` does not end inside it: each read must still return the batch holding its
/// offset, whole, then whole batches within `max_bytes`.
#[test]
fn reads_from_any_offset_return_the_batch_holding_it_however_sparse_the_index() {
    run_in_dir(|path| async move {
        let mut cfg = small_config(&path);
        cfg.segment_bytes = 1024 * 1024;
        cfg.index_interval_bytes = 256 * 1024;
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_range(&log, 0, 120).await;
        cfg.index_interval_bytes = 1024;
        log.set_config(cfg).unwrap();
        let end = log.offsets().durable_end;
        for max_bytes in [1, 5_000, 40_000] {
            for offset in 0..end {
                let r = log.read(offset, max_bytes).await.unwrap().expect("data at every offset");
                let first = batch_holding(&written, offset);
                assert_eq!(r.first_offset, written[first].0, "offset {offset}");
                let mut want = written[first].1.clone();
                for (_, b) in &written[first + 1..] {
                    if want.len() + b.len() > max_bytes {
                        break;
                    }
                    want.extend_from_slice(b);
                }
                assert!(r.bytes.len() <= want.len(), "offset {offset}, max {max_bytes}: no more than fits");
                assert_eq!(&r.bytes[..], &want[..r.bytes.len()], "offset {offset}, max {max_bytes}");
                assert!(r.bytes.len() >= written[first].1.len(), "the first batch whole");
                let batches = written[first..].iter().scan(0, |n, (_, b)| {
                    *n += b.len();
                    Some(*n)
                });
                assert!(batches.into_iter().any(|n| n == r.bytes.len()), "whole batches only");
            }
        }
        log.close().await.unwrap();
    });
}

#[test]
fn reads_see_only_durable_data_and_refuse_offsets_outside_the_log() {
    run_in_dir(|path| async move {
        let log = PartitionLog::open(small_config(&path)).await.unwrap();
        let info = log.append(&nth_batch(0), 0, 0).await.unwrap();
        assert_eq!(log.offsets().durable_end, 0);
        assert!(log.read(0, 1 << 20).await.unwrap().is_none(), "not durable yet, not served");
        let durable = log.wait_durable(info.last_offset + 1).await.unwrap();
        assert_eq!(durable, info.last_offset + 1);
        assert!(log.read(0, 1 << 20).await.unwrap().is_some());
        assert!(
            log.read(durable, 1 << 20).await.unwrap().is_none(),
            "the durable end is empty, not an error"
        );
        assert!(matches!(log.read(durable + 1, 1 << 20).await, Err(Error::OffsetOutOfRange { .. })));
        assert!(matches!(log.wait_durable(durable + 100).await, Err(Error::OffsetOutOfRange { .. })));
    });
}

#[test]
fn corrupt_batches_are_refused_and_never_reach_the_log() {
    run_in_dir(|path| async move {
        let log = PartitionLog::open(small_config(&path)).await.unwrap();
        append_range(&log, 0, 3).await;
        let before = log.offsets();
        let good = nth_batch(9);
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        let mut bad_magic = good.clone();
        bad_magic[16] = 1;
        let truncated = good[..good.len() - 5].to_vec();
        let mut too_long = good.clone();
        too_long.extend_from_slice(&[0; 8]);
        for (name, b) in [
            ("crc", bad_crc),
            ("magic", bad_magic),
            ("truncated", truncated),
            ("trailing", too_long),
            ("empty", vec![]),
        ] {
            let err = log.append(&b, 0, 0).await.expect_err(name);
            assert!(matches!(err, Error::InvalidBatch(_)), "{name}: {err}");
        }
        let big = build_batch(1, 40 * 1024, 0, 0);
        assert!(matches!(
            log.append(&big, 0, 0).await,
            Err(Error::InvalidBatch(iouring_storage::BatchError::TooLarge { .. }))
        ));
        assert_eq!(log.offsets(), before);
        log.commit().await.unwrap();
        assert_eq!(read_all(&log).await.len(), 3);
    });
}

#[test]
fn concurrent_appenders_share_fdatasyncs_and_learn_their_offsets_are_durable() {
    run_in_dir(|path| async move {
        let log = PartitionLog::open(LogConfig::new(&path)).await.unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let mut acked = Vec::new();
                    for j in 0..20 {
                        let b = nth_batch(i * 100 + j);
                        let info = log.append(&b, 0, 0).await.unwrap();
                        let durable = log.wait_durable(info.last_offset + 1).await.unwrap();
                        assert!(durable > info.last_offset);
                        acked.push((info.base_offset, stamped(b, info.base_offset)));
                    }
                    acked
                })
            })
            .collect();
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await);
        }
        let stats = log.stats();
        let commits = stats.group_commits;
        assert!(commits > 0, "group commits are counted");
        assert!(commits < 64 * 20 / 2, "1280 appends took {commits} fdatasyncs: no grouping");
        assert_eq!(stats.appended_batches, 64 * 20);
        assert_eq!(stats.committed_bytes, stats.size_bytes, "every appended byte was committed once");
        acked.sort();
        assert_eq!(read_all(&log).await, acked);
    });
}

#[test]
fn logs_syncing_the_filesystem_share_one_syncfs_and_keep_every_acknowledged_batch() {
    run_in_dir(|path| async move {
        let dirs: Vec<PathBuf> = (0..8).map(|i| path.join(format!("p-{i}"))).collect();
        let open = |dir: PathBuf| async move {
            let mut c = LogConfig::new(dir);
            c.sync = SyncScope::Filesystem;
            PartitionLog::open(c).await.unwrap()
        };
        let mut logs = Vec::new();
        for d in &dirs {
            logs.push(open(d.clone()).await);
        }
        let syncs_before = filesystem_syncs();
        let tasks: Vec<_> = logs
            .iter()
            .enumerate()
            .flat_map(|(p, log)| {
                (0..4u64).map(move |t| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        let mut acked = Vec::new();
                        for j in 0..10 {
                            let b = nth_batch(p as u64 * 1000 + t * 100 + j);
                            let info = log.append(&b, 0, 0).await.unwrap();
                            assert!(log.wait_durable(info.last_offset + 1).await.unwrap() > info.last_offset);
                            acked.push((info.base_offset, stamped(b, info.base_offset)));
                        }
                        (p, acked)
                    })
                })
            })
            .collect();
        let mut acked: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); logs.len()];
        for t in tasks {
            let (p, a) = t.await;
            acked[p].extend(a);
        }
        let syncs = filesystem_syncs() - syncs_before;
        let commits: u64 = logs.iter().map(|l| l.stats().group_commits).sum();
        assert!(syncs > 0, "commits ran syncfs");
        assert!(
            syncs < commits,
            "{commits} commits of 8 logs took {syncs} syncfs calls: the logs did not share them"
        );
        for log in logs.drain(..) {
            log.close().await.unwrap();
        }
        for (d, mut a) in dirs.into_iter().zip(acked) {
            let log = open(d).await;
            a.sort();
            assert_eq!(read_all(&log).await, a, "every acknowledged batch is read back after reopening");
        }
    });
}

#[test]
fn segments_roll_by_size_and_age_and_are_announced_once_sealed() {
    run_in_dir(|path| async move {
        let mut cfg = small_config(&path);
        cfg.segment_ms = Some(1_000);
        let log = PartitionLog::open(cfg).await.unwrap();
        let sealed = Rc::new(std::cell::RefCell::new(Vec::new()));
        let s2 = sealed.clone();
        log.set_seal_listener(move |info| {
            // Announced only once its files are complete and durable.
            assert_eq!(std::fs::metadata(&info.log_path).unwrap().len(), info.size_bytes);
            assert!(info.index_path.exists() && info.time_index_path.exists());
            s2.borrow_mut().push(info.clone());
        });
        // Age: two small appends far apart in time roll once.
        log.append(&nth_batch(0), 0, 0).await.unwrap();
        log.append(&nth_batch(1), 0, 500).await.unwrap();
        assert_eq!(log.stats().segments, 1);
        log.append(&nth_batch(2), 0, 1_500).await.unwrap();
        assert_eq!(log.stats().segments, 2);
        // Size: each segment stays within segment_bytes.
        for i in 3..400 {
            log.append(&nth_batch(i), 0, 1_600).await.unwrap();
        }
        log.commit().await.unwrap();
        let sealed = sealed.borrow().clone();
        assert_eq!(sealed, log.sealed_segments());
        assert!(sealed.len() > 3);
        for w in sealed.windows(2) {
            assert_eq!(w[0].next_offset, w[1].base_offset, "segments are contiguous");
            assert!(w[1].size_bytes <= 64 * 1024);
        }
    });
}

#[test]
fn retention_deletes_whole_old_segments_by_size_and_by_age() {
    run_in_dir(|path| async move {
        let mut cfg = small_config(&path);
        cfg.retention_bytes = Some(300 * 1024);
        cfg.retention_ms = None;
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_range(&log, 0, 800).await;
        let total_before = log.size_bytes();
        assert!(total_before > 1_000_000);
        let deleted = log.enforce_retention(0).await.unwrap();
        assert!(!deleted.is_empty());
        assert!(log.size_bytes() >= 300 * 1024, "never below the limit");
        assert!(log.size_bytes() < 300 * 1024 + 64 * 1024, "within one segment of it");
        let start = log.offsets().log_start;
        assert!(start > 0);
        assert!(matches!(log.read(0, 100).await, Err(Error::OffsetOutOfRange { .. })));
        let kept: Vec<_> = written.into_iter().filter(|(b, _)| *b >= start).collect();
        assert_eq!(read_all(&log).await, kept);
        for b in &deleted {
            assert!(!path.join(format!("{b:020}.log")).exists());
            assert!(!path.join(format!("{b:020}.index")).exists());
        }
        drop(log);
        // By age: segments whose newest batch is older than retention_ms go, the active one stays.
        cfg.retention_bytes = None;
        cfg.retention_ms = Some(1_000);
        let log = PartitionLog::open(cfg).await.unwrap();
        let newest_ts = 1_000 + 800 * 10 + 5;
        log.enforce_retention(newest_ts - 10).await.unwrap();
        assert!(log.stats().segments >= 2, "young segments stay");
        log.enforce_retention(newest_ts + 1_000_000).await.unwrap();
        assert_eq!(log.stats().segments, 1, "only the active segment is left");
        assert!(log.read(log.offsets().log_start, 100).await.unwrap().is_some());
    });
}

/// Retention deletes its files after letting go of the append lock. Appends and a truncation
/// issued while it runs still land in order (the truncation waits for the deletion), and the
/// log reads back, before and after reopening, with none of the deleted files left.
#[test]
fn appends_and_a_truncation_during_retention_keep_the_log_whole() {
    run_in_dir(|path| async move {
        let mut cfg = small_config(&path);
        cfg.retention_bytes = Some(300 * 1024);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_range(&log, 0, 800).await;
        let retention = glommio::spawn_local({
            let log = log.clone();
            async move { log.enforce_retention(0).await.unwrap() }
        });
        // Issued while the retention task runs: it yields at its first I/O.
        let during = append_range(&log, 800, 810).await;
        let cut = written[790].0;
        assert_eq!(log.truncate_to(cut).await.unwrap(), cut);
        let after = append_range(&log, 900, 905).await;
        let deleted = retention.await;
        assert!(!deleted.is_empty());
        for b in &deleted {
            for ext in ["log", "index", "timeindex"] {
                assert!(!path.join(format!("{b:020}.{ext}")).exists(), "{b}.{ext} deleted");
            }
        }
        let start = log.offsets().log_start;
        assert!(start > 0 && start <= cut);
        let expected: Vec<(u64, Vec<u8>)> = written
            .into_iter()
            .chain(during)
            .filter(|(b, _)| (start..cut).contains(b))
            .chain(after)
            .collect();
        assert_eq!(read_all(&log).await, expected);
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets().log_start, start);
        assert_eq!(read_all(&log).await, expected);
    });
}

#[test]
fn timestamp_search_finds_the_first_batch_at_or_after() {
    run_in_dir(|path| async move {
        let log = PartitionLog::open(small_config(&path)).await.unwrap();
        let written = append_range(&log, 0, 500).await;
        for i in [0u64, 1, 77, 250, 499] {
            let ts = 1_000 + i as i64 * 10 + 3;
            let hit = log.find_by_timestamp(ts).await.unwrap().unwrap();
            assert_eq!(hit.batch_base_offset, written[i as usize].0, "ts {ts}");
        }
        assert_eq!(log.find_by_timestamp(0).await.unwrap().unwrap().batch_base_offset, 0);
        assert!(log.find_by_timestamp(1_000_000).await.unwrap().is_none());
        let max = log.max_timestamp().await.unwrap().unwrap();
        assert_eq!(max.batch_base_offset, written[499].0);
    });
}

#[test]
fn truncation_removes_the_tail_and_appends_continue_from_there() {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_range(&log, 0, 400).await;
        let segments_before = log.stats().segments;
        // Cut in the middle of an early batch: the batch holding the offset goes whole.
        let (cut_base, cut_bytes) = &written[40];
        let delta = BatchHeader::parse(cut_bytes).unwrap().last_offset_delta as u64;
        let new_end = log.truncate_to(cut_base + delta).await.unwrap();
        assert_eq!(new_end, *cut_base);
        assert!(log.stats().segments < segments_before);
        assert_eq!(log.offsets().log_end, *cut_base);
        assert_eq!(read_all(&log).await, written[..40].to_vec());
        let more = append_range(&log, 1000, 1100).await;
        assert_eq!(more[0].0, *cut_base);
        log.close().await.unwrap();
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        let mut expect = written[..40].to_vec();
        expect.extend(more);
        assert_eq!(read_all(&log).await, expect);
    });
}

#[test]
fn reopen_after_close_keeps_everything_and_continues_offsets() {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let mut written = append_range(&log, 0, 200).await;
        log.close().await.unwrap();
        assert!(matches!(log.append(&nth_batch(0), 0, 0).await, Err(Error::Closed { .. })));
        drop(log);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_eq!(read_all(&log).await, written);
        let next = log.offsets().log_end;
        let more = append_range(&log, 200, 300).await;
        assert_eq!(more[0].0, next);
        written.extend(more);
        drop(log); // no close: a crash after the last commit
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_eq!(read_all(&log).await, written);
    });
}

/// One block exactly, so that a new segment's data can end where a stale batch of a recycled
/// file begins, with no zero padding in between to stop a scan.
fn block_batch(i: u64) -> Vec<u8> {
    build_batch(1, 4096 - 61, 1_000 + i as i64, 1_000 + i as i64)
}

/// Small segments that hold 16 block batches each, and retention by size down to two of them.
fn two_segment_retention(path: &Path) -> LogConfig {
    let mut cfg = small_config(path);
    cfg.retention_bytes = Some(128 * 1024);
    cfg.retention_ms = None;
    cfg
}

async fn append_blocks(log: &PartitionLog, from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
    append_each(log, from, to, block_batch).await
}

/// Retention keeps one deleted segment's file and the next roll reuses it. The recycled file
/// still holds its old batches, each one block: the new data ends exactly where one of them
/// begins, CRC intact, and only its old offset gives it away. It is never read, a crash
/// (drop without close) recovers exactly what was committed, and a clean close cuts the stale
/// tail so the next open finds a clean end.
#[test]
fn a_recycled_segment_file_never_serves_its_stale_batches() {
    run_in_dir(|path| async move {
        assert_eq!(block_batch(0).len(), 4096);
        let cfg = two_segment_retention(&path);
        let spare = path.join("recycled.spare");
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        // 16 batches per 64 KiB segment: four full segments, the last one active.
        let mut written = append_blocks(&log, 0, 64).await;
        let deleted = log.enforce_retention(0).await.unwrap();
        assert_eq!(deleted, vec![0, 16]);
        assert!(spare.exists(), "one deleted segment's file is kept");
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 64 * 1024);
        written.retain(|(b, _)| *b >= 32);

        // The next append rolls into the spare: 4 new batches over 16 stale ones.
        written.extend(append_blocks(&log, 64, 68).await);
        assert_eq!(log.stats().segments_recycled, 1);
        assert!(!spare.exists(), "the spare became the new segment");
        let active = path.join(format!("{:020}.log", 64));
        assert_eq!(std::fs::metadata(&active).unwrap().len(), 64 * 1024, "reused whole, not recreated");
        assert_eq!(read_all(&log).await, written);
        assert_eq!(log.offsets().log_end, 68);
        assert!(log.read(68, 4096).await.unwrap().is_none(), "nothing past the end");

        drop(log); // a crash after the commit
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_eq!(log.offsets().log_end, 68, "recovery stops at the first stale batch");
        assert_eq!(read_all(&log).await, written);
        assert_eq!(std::fs::metadata(&active).unwrap().len(), 4 * 4096, "the stale tail is cut");
        written.extend(append_blocks(&log, 68, 70).await);

        // Again, ending with a clean close: it cuts the recycled file to its data.
        written.extend(append_blocks(&log, 70, 90).await);
        let deleted = log.enforce_retention(0).await.unwrap();
        assert!(!deleted.is_empty());
        let start = log.offsets().log_start;
        written.retain(|(b, _)| *b >= start);
        assert!(spare.exists());
        written.extend(append_blocks(&log, 90, 105).await);
        assert_eq!(log.stats().segments_recycled, 1, "counted since this open");
        let active = segment_files(&path, "log").pop().unwrap();
        let base: u64 = active.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let data_bytes = (log.offsets().log_end - base) * 4096;
        log.close().await.unwrap();
        assert_eq!(std::fs::metadata(&active).unwrap().len(), data_bytes, "close cuts the stale tail");
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_eq!(read_all(&log).await, written);
    });
}

/// With recycling off, retention deletes every file of the segments it removes.
#[test]
fn without_recycling_retention_keeps_no_spare() {
    run_in_dir(|path| async move {
        let mut cfg = two_segment_retention(&path);
        cfg.recycle_segments = false;
        let log = PartitionLog::open(cfg).await.unwrap();
        append_blocks(&log, 0, 64).await;
        assert_eq!(log.enforce_retention(0).await.unwrap(), vec![0, 16]);
        assert!(!path.join("recycled.spare").exists());
        append_blocks(&log, 64, 68).await;
        assert_eq!(log.stats().segments_recycled, 0);
        assert_eq!(segment_files(&path, "log").len(), 3);
    });
}

/// Writes a log, drops it without closing (as a crash would, after a commit), lets `damage`
/// change the files, reopens, and returns what was written and the reopened log.
fn crash_scenario(
    damage: impl FnOnce(&Path, &[(u64, Vec<u8>)]) + Send + 'static,
    check: impl FnOnce(PartitionLog, Vec<(u64, Vec<u8>)>) -> std::pin::Pin<Box<dyn Future<Output = ()>>> + Send + 'static,
) {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_range(&log, 0, 150).await;
        drop(log);
        damage(&path, &written);
        let log = PartitionLog::open(cfg).await.expect("recovery opens the log");
        check(log, written).await;
    });
}

fn active_segment(dir: &Path) -> PathBuf {
    segment_files(dir, "log").pop().unwrap()
}

/// Cuts the active segment right after its last whole batch and writes `tail` there, as a
/// crash or an earlier truncation could leave it.
fn replace_after_last_batch(dir: &Path, tail: &[u8]) {
    let seg = active_segment(dir);
    let end = batch_positions(&seg).last().map(|&(p, l)| p + l as u64).unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.truncate(end as usize);
    bytes.extend_from_slice(tail);
    std::fs::write(&seg, bytes).unwrap();
}

#[test]
fn crash_torn_tail_drops_only_the_torn_batch() {
    crash_scenario(
        |dir, _| {
            let seg = active_segment(dir);
            let pos = batch_positions(&seg);
            let (p, len) = *pos.last().unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
            f.set_len(p + len as u64 / 2).unwrap();
        },
        |log, written| {
            Box::pin(async move {
                let all = read_all(&log).await;
                assert_eq!(all, written[..written.len() - 1].to_vec());
                assert_eq!(log.offsets().log_end, written.last().unwrap().0);
                // The log accepts appends again, at the torn batch's offset.
                let info = log.append(&nth_batch(7), 0, 0).await.unwrap();
                assert_eq!(info.base_offset, written.last().unwrap().0);
            })
        },
    );
}

#[test]
fn crash_bad_crc_in_the_middle_ends_the_log_before_it() {
    crash_scenario(
        |dir, _| {
            let seg = active_segment(dir);
            let pos = batch_positions(&seg);
            assert!(pos.len() > 4);
            let (p, len) = pos[pos.len() / 2];
            let mut bytes = std::fs::read(&seg).unwrap();
            bytes[p as usize + len - 3] ^= 0xff;
            std::fs::write(&seg, bytes).unwrap();
        },
        |log, written| {
            Box::pin(async move {
                let all = read_all(&log).await;
                assert!(all.len() < written.len());
                assert_eq!(all, written[..all.len()].to_vec(), "a prefix survives, byte for byte");
                // Nothing after the bad batch is served, even though later batches were intact.
                assert_eq!(log.offsets().log_end, written[all.len()].0);
            })
        },
    );
}

#[test]
fn crash_zero_padding_after_the_last_batch_is_ignored() {
    crash_scenario(
        |dir, _| {
            let seg = active_segment(dir);
            let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len + 1024 * 1024).unwrap();
        },
        |log, written| {
            Box::pin(async move {
                assert_eq!(read_all(&log).await, written);
                let more = append_range(&log, 500, 520).await;
                assert_eq!(
                    more[0].0,
                    written
                        .last()
                        .map(|(b, w)| b + BatchHeader::parse(w).unwrap().last_offset_delta as u64 + 1)
                        .unwrap()
                );
            })
        },
    );
}

#[test]
fn crash_garbage_after_the_last_batch_is_cut() {
    crash_scenario(
        |dir, _| {
            let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            replace_after_last_batch(dir, &garbage);
        },
        |log, written| Box::pin(async move { assert_eq!(read_all(&log).await, written) }),
    );
}

#[test]
fn crash_stale_batch_with_an_old_offset_after_the_end_is_not_served() {
    // After a truncation, an older valid batch can sit right after the new end. Its CRC is fine
    // but its offset goes backwards: recovery must stop there.
    crash_scenario(
        |dir, written| {
            replace_after_last_batch(dir, &written[0].1);
        },
        |log, written| Box::pin(async move { assert_eq!(read_all(&log).await, written) }),
    );
}

#[test]
fn crash_missing_index_of_a_sealed_segment_is_rebuilt() {
    crash_scenario(
        |dir, _| {
            let idx = segment_files(dir, "index");
            assert!(idx.len() >= 2);
            std::fs::remove_file(&idx[0]).unwrap();
            std::fs::remove_file(segment_files(dir, "timeindex")[1].clone()).unwrap();
        },
        |log, written| {
            Box::pin(async move {
                assert_eq!(read_all(&log).await, written);
                let dir = log.config().dir.clone();
                assert_eq!(segment_files(&dir, "index").len(), log.stats().segments - 1, "indexes rewritten");
                let hit = log.find_by_timestamp(1_000 + 20 * 10).await.unwrap().unwrap();
                assert_eq!(hit.batch_base_offset, written[20].0);
            })
        },
    );
}

#[test]
fn crash_damaged_index_is_rebuilt() {
    crash_scenario(
        |dir, _| {
            let idx = segment_files(dir, "index");
            let mut bytes = std::fs::read(&idx[0]).unwrap();
            bytes[50] ^= 0x55;
            std::fs::write(&idx[0], bytes).unwrap();
            std::fs::write(&segment_files(dir, "timeindex")[1], b"garbage").unwrap();
        },
        |log, written| Box::pin(async move { assert_eq!(read_all(&log).await, written) }),
    );
}

#[test]
fn crash_during_roll_before_the_index_was_written() {
    // The crash came after the new segment file was created (empty, preallocated) but before
    // the sealed segment's index files were renamed into place: a temp file is left behind.
    crash_scenario(
        |dir, _| {
            let logs = segment_files(dir, "log");
            let sealed = &logs[logs.len() - 1];
            let stem = sealed.file_stem().unwrap().to_str().unwrap().to_owned();
            std::fs::remove_file(dir.join(format!("{stem}.index"))).ok();
            std::fs::remove_file(dir.join(format!("{stem}.timeindex"))).ok();
            std::fs::write(dir.join(format!("{stem}.index.tmp")), b"half written").unwrap();
            // The next segment exists, zero-filled by preallocation.
            let bytes = std::fs::read(sealed).unwrap();
            let last = batch_positions(sealed).last().copied().unwrap();
            let h = BatchHeader::parse(&bytes[last.0 as usize..]).unwrap();
            let new = dir.join(format!("{:020}.log", h.last_offset() + 1));
            std::fs::write(&new, vec![0u8; 128 * 1024]).unwrap();
        },
        |log, written| {
            Box::pin(async move {
                assert_eq!(read_all(&log).await, written);
                let dir = log.config().dir.clone();
                assert!(segment_files(&dir, "tmp").is_empty(), "temporaries removed");
                let more = append_range(&log, 600, 610).await;
                let mut expect = written.clone();
                expect.extend(more);
                assert_eq!(read_all(&log).await, expect);
            })
        },
    );
}

#[test]
fn crash_corruption_in_a_sealed_segment_without_index_drops_everything_after() {
    crash_scenario(
        |dir, _| {
            let logs = segment_files(dir, "log");
            assert!(logs.len() >= 3);
            let victim = &logs[1];
            let stem = victim.file_stem().unwrap().to_str().unwrap().to_owned();
            std::fs::remove_file(dir.join(format!("{stem}.index"))).unwrap();
            let pos = batch_positions(victim);
            let (p, _) = pos[pos.len() / 2];
            let mut bytes = std::fs::read(victim).unwrap();
            bytes[p as usize + 30] ^= 0x01;
            std::fs::write(victim, bytes).unwrap();
        },
        |log, written| {
            Box::pin(async move {
                let all = read_all(&log).await;
                assert!(all.len() < written.len());
                assert_eq!(all, written[..all.len()].to_vec());
                assert_eq!(log.stats().segments, 2, "the segments after the corrupt one are gone");
                assert_eq!(log.offsets().log_end, written[all.len()].0);
            })
        },
    );
}

/// A tmpfs mount of `bytes`, unmounted on drop (lazily: glommio closes files in the background,
/// so a descriptor may outlive the executor by a moment). Needs root, as CI and these machines run.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(bytes: u64) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a small tmpfs for the disk-full test needs root");
        SmallFs { dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Appends `nth_batch`es, each waited durable, until one fails. Returns the acknowledged
/// batches (base offset, bytes) and the failure.
async fn append_until_failure(log: &PartitionLog) -> (Vec<(u64, Vec<u8>)>, Error) {
    let mut acked = Vec::new();
    for i in 0..100_000u64 {
        let b = nth_batch(i);
        let r = match log.append(&b, 0, 0).await {
            Ok(info) => log.wait_durable(info.last_offset + 1).await.map(|_| info),
            Err(e) => Err(e),
        };
        match r {
            Ok(info) => acked.push((info.base_offset, stamped(b, info.base_offset))),
            Err(e) => return (acked, e),
        }
    }
    panic!("the filesystem never filled up");
}

#[test]
fn full_disk_poisons_the_log_and_acknowledged_data_survives_reopen() {
    let fs = SmallFs::new(2 * 1024 * 1024);
    let path = fs.dir.path().join("p-0");
    run(move || async move {
        let mut cfg = small_config(&path);
        cfg.segment_bytes = 64 * 1024 * 1024;
        cfg.preallocate_step_bytes = 64 * 1024;
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let (acked, failure) = append_until_failure(&log).await;
        assert!(matches!(failure, Error::Poisoned { .. }), "{failure}");
        assert!(log.poisoned().is_some());
        assert!(log.poisoned_by_full_disk(), "the cause was ENOSPC: {failure}");
        // Poisoned means refused, every time, with the cause.
        let again = log.append(&nth_batch(1), 0, 0).await.unwrap_err();
        assert!(again.to_string().contains("poisoned"), "{again}");
        assert!(matches!(log.commit().await, Err(Error::Poisoned { .. })));
        drop(log);
        // Reopen: every acknowledged batch is there.
        let log = PartitionLog::open(cfg).await.unwrap();
        let all = read_all(&log).await;
        assert!(all.len() >= acked.len());
        assert_eq!(all[..acked.len()], acked[..]);
    });
    drop(fs);
}

/// Preallocation that finds no room for its step falls back to what the write needs, so a
/// log fills the disk to within a write buffer before a full disk poisons it; and once space
/// is freed, closing the poisoned log and opening it again brings it back: every acknowledged
/// batch is there and appends go on.
#[test]
fn a_log_poisoned_by_a_full_disk_comes_back_when_reopened_with_room() {
    let fs = SmallFs::new(4 * 1024 * 1024);
    let path = fs.dir.path().join("p-0");
    let ballast = fs.dir.path().join("ballast");
    run(move || async move {
        std::fs::write(&ballast, vec![1u8; 512 * 1024]).unwrap();
        let mut cfg = small_config(&path);
        cfg.segment_bytes = 64 * 1024 * 1024;
        // Steps double up to 2 MiB, more than the filesystem has left when the log reaches 2 MiB.
        cfg.preallocate_step_bytes = 2 * 1024 * 1024;
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let (acked, failure) = append_until_failure(&log).await;
        assert!(log.poisoned_by_full_disk(), "{failure}");
        assert!(acked.len() > 100, "only {} batches before the disk was full", acked.len());
        assert!(!log.has_room_to_append(), "the log filled the disk to within a write buffer");

        std::fs::remove_file(&ballast).unwrap();
        assert!(log.has_room_to_append());
        log.close().await.unwrap();
        let log = PartitionLog::open(cfg).await.unwrap();
        assert!(log.poisoned().is_none());
        let all = read_all(&log).await;
        assert!(all.len() >= acked.len());
        assert_eq!(all[..acked.len()], acked[..]);
        // Appends go on at whatever end recovery found.
        let end = log.offsets().log_end;
        let more = append_each(&log, 0, 20, nth_batch).await;
        assert_eq!(more[0].0, end);
        let mut expect = all;
        expect.extend(more);
        assert_eq!(read_all(&log).await, expect);
    });
    drop(fs);
}

/// A log in `dir` with 256 KiB segments that holds a spare: two full segments of one-block
/// batches and 4 blocks of a third, the first two deleted (one of their files is kept). Returns
/// the log, the batches it still holds, and the spare's path.
async fn log_with_spare(dir: &Path) -> (PartitionLog, Vec<(u64, Vec<u8>)>, PathBuf) {
    let mut cfg = small_config(dir);
    cfg.segment_bytes = 256 * 1024;
    let log = PartitionLog::open(cfg).await.unwrap();
    let mut written = append_blocks(&log, 0, 132).await;
    log.delete_records_before(128).await.unwrap();
    let spare = dir.join("recycled.spare");
    assert!(spare.exists(), "one deleted segment's file is kept");
    written.retain(|(b, _)| *b >= 128);
    (log, written, spare)
}

/// Fills the filesystem holding `path` by appending to that file until a write fails.
fn fill_filesystem(path: &Path) {
    let mut fill = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let chunk = vec![7u8; 4096];
    while std::io::Write::write_all(&mut fill, &chunk).is_ok() {}
}

/// With the filesystem full, an append that needs more preallocated space deletes the
/// partition's spare segment file (its own reserve) and goes on, where it would otherwise
/// poison the log.
#[test]
fn a_full_disk_takes_back_the_spare_before_failing_an_append() {
    let fs = SmallFs::new(2 * 1024 * 1024);
    let path = fs.dir.path().join("p-0");
    let filler = fs.dir.path().join("filler");
    run(move || async move {
        let (log, mut written, spare) = log_with_spare(&path).await;
        // Fill the filesystem: the active segment has preallocated space for 12 more blocks.
        fill_filesystem(&filler);

        written.extend(append_blocks(&log, 132, 160).await);
        assert!(log.poisoned().is_none());
        assert!(!spare.exists(), "the spare gave its blocks back");
        assert!(!path.join("recycled.spare.tmp").exists());
        assert_eq!(read_all(&log).await, written);
    });
    drop(fs);
}

#[test]
fn a_full_disk_takes_back_the_spares_of_other_logs_on_the_thread() {
    let fs = SmallFs::new(2 * 1024 * 1024);
    let (full, holder) = (fs.dir.path().join("p-0"), fs.dir.path().join("p-1"));
    let filler = fs.dir.path().join("filler");
    run(move || async move {
        let (other, _, spare) = log_with_spare(&holder).await;
        let mut cfg = small_config(&full);
        cfg.segment_bytes = 256 * 1024;
        let log = PartitionLog::open(cfg).await.unwrap();
        let mut written = append_blocks(&log, 0, 4).await;
        fill_filesystem(&filler);

        // This log has no spare of its own: the other's blocks make room for it.
        written.extend(append_blocks(&log, 4, 40).await);
        assert!(log.poisoned().is_none());
        assert!(!spare.exists(), "the other log's spare gave its blocks back");
        assert_eq!(read_all(&log).await, written);
        // The other log carries on without its spare.
        assert!(other.poisoned().is_none());
        other.roll().await.unwrap();
    });
    drop(fs);
}

/// A log's spare never leaves its thread. A write that finds the disk full with no spare left
/// on its own thread asks the others, which give theirs back when they next look
/// (`release_spares_if_wanted`, a shard's periodic task in the broker); the poisoned log then
/// has room to be opened again.
#[test]
fn a_full_disk_asks_the_other_threads_for_their_spares() {
    use std::sync::mpsc::channel;
    let fs = SmallFs::new(2 * 1024 * 1024);
    let (full, holder) = (fs.dir.path().join("p-0"), fs.dir.path().join("p-1"));
    let filler = fs.dir.path().join("filler");
    let (holding, spare_held) = channel::<PathBuf>();
    let (poisoned, log_poisoned) = channel::<()>();
    let (answered, spares_answered) = channel::<bool>();
    let other_thread = std::thread::spawn(move || {
        run(move || async move {
            // Catch up with requests from earlier tests in this process before holding a spare.
            iouring_storage::release_spares_if_wanted().await;
            let (other, _, spare) = log_with_spare(&holder).await;
            holding.send(spare).unwrap();
            log_poisoned.recv().unwrap();
            answered.send(iouring_storage::release_spares_if_wanted().await).unwrap();
            // The other log carries on without its spare.
            assert!(other.poisoned().is_none());
            other.roll().await.unwrap();
        });
    });
    let spare = spare_held.recv().unwrap();
    run(move || async move {
        let log = PartitionLog::open(small_config(&full)).await.unwrap();
        fill_filesystem(&filler);
        let (_, failure) = append_until_failure(&log).await;
        assert!(log.poisoned_by_full_disk(), "{failure}");
        assert!(spare.exists(), "a spare on another thread is not this thread's to delete");
        assert!(!log.has_room_to_append());
        poisoned.send(()).unwrap();
        assert!(spares_answered.recv().unwrap(), "the other thread gave its spare back");
        assert!(!spare.exists());
        assert!(log.has_room_to_append(), "the spare's blocks are free");
    });
    other_thread.join().expect("the other thread's executor ran");
    drop(fs);
}

/// DeleteRecords must persist the new log start. On a full disk it takes the spares back, as an
/// append does; with none left it refuses, and the log stays as it was and writable.
#[test]
fn delete_records_on_a_full_disk_uses_the_spares_or_refuses_without_poisoning() {
    let fs = SmallFs::new(2 * 1024 * 1024);
    let (path, holder) = (fs.dir.path().join("p-0"), fs.dir.path().join("p-1"));
    let filler = fs.dir.path().join("filler");
    run(move || async move {
        let (_other, _, spare) = log_with_spare(&holder).await;
        // No spare of its own (recycling off), so only the other log's can make room.
        let mut cfg = small_config(&path);
        cfg.recycle_segments = false;
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_blocks(&log, 0, 40).await;
        fill_filesystem(&filler);
        assert_eq!(log.delete_records_before(20).await.unwrap(), 20);
        assert!(!spare.exists(), "the other log's spare gave its blocks back");

        fill_filesystem(&filler);
        let refused = log.delete_records_before(30).await.unwrap_err();
        assert!(refused.is_storage_full(), "{refused}");
        assert!(log.poisoned().is_none(), "a refused DeleteRecords leaves the log writable");
        assert_eq!(log.offsets().log_start, 20);
        let first = batch_holding(&written, 20);
        assert_eq!(read_all(&log).await, written[first..].to_vec());

        std::fs::remove_file(&filler).unwrap();
        assert_eq!(log.delete_records_before(30).await.unwrap(), 30);
        append_blocks(&log, 40, 44).await;
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets().log_start, 30, "the start survives a reopen");
    });
    drop(fs);
}

/// The base offset of the first batch whose offsets reach past `offset`, and that batch's index.
fn batch_holding(written: &[(u64, Vec<u8>)], offset: u64) -> usize {
    written
        .iter()
        .position(|(b, bytes)| b + BatchHeader::parse(bytes).unwrap().last_offset_delta as u64 >= offset)
        .unwrap()
}

#[test]
fn delete_records_moves_the_log_start_and_deletes_whole_segments_below_it() {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_range(&log, 0, 300).await;
        let sealed = log.sealed_segments();
        assert!(sealed.len() > 4);
        // An offset inside a batch in the middle of the fourth segment.
        let target = sealed[3].base_offset + (sealed[3].next_offset - sealed[3].base_offset) / 2 + 1;
        assert_eq!(log.delete_records_before(target).await.unwrap(), target);
        assert_eq!(log.offsets().log_start, target);
        for s in &sealed[..3] {
            assert!(!s.log_path.exists() && !s.index_path.exists() && !s.time_index_path.exists());
        }
        assert!(sealed[3].log_path.exists(), "the segment holding the new start stays");
        assert!(path.join("log-start.offset").exists());
        assert!(matches!(
            log.read(target - 1, 100).await,
            Err(Error::OffsetOutOfRange { log_start, .. }) if log_start == target
        ));
        // Reading at the start returns the whole batch holding it, as Kafka does.
        let first = batch_holding(&written, target);
        assert_eq!(read_all(&log).await, written[first..].to_vec());
        // Searches by timestamp never answer below the start.
        let hit = log.find_by_timestamp(0).await.unwrap().unwrap();
        assert_eq!(hit.batch_base_offset, written[first].0);
        // At or below the start: nothing changes. Beyond the high watermark: refused.
        assert_eq!(log.delete_records_before(5).await.unwrap(), target);
        let end = log.offsets().durable_end;
        assert!(matches!(
            log.delete_records_before(end + 1).await,
            Err(Error::OffsetOutOfRange { offset, .. }) if offset == end + 1
        ));
        assert_eq!(log.offsets().log_start, target);

        // The start survives a clean reopen and a crash (drop without close).
        log.close().await.unwrap();
        drop(log);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_eq!(log.offsets().log_start, target);
        assert!(log.read(target - 1, 100).await.is_err());
        assert_eq!(read_all(&log).await, written[first..].to_vec());
        // Deleting everything up to the high watermark keeps the active segment, empty to readers.
        let end = log.offsets().durable_end;
        assert_eq!(log.delete_records_before(end).await.unwrap(), end);
        assert_eq!(log.stats().segments, 1);
        assert!(log.read(end, 100).await.unwrap().is_none());
        let more = append_range(&log, 300, 310).await;
        assert_eq!(more[0].0, end);
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets().log_start, end);
        assert_eq!(read_all(&log).await, more);
    });
}

#[test]
fn set_config_applies_to_later_appends_and_retention_and_keeps_the_write_path() {
    run_in_dir(|path| async move {
        let mut cfg = small_config(&path);
        cfg.segment_bytes = 4 * 1024 * 1024;
        cfg.retention_bytes = None;
        cfg.retention_ms = None;
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let mut written = append_range(&log, 0, 100).await;
        assert_eq!(log.stats().segments, 1);

        // Smaller segments: the next append rolls, and later segments keep to the new size.
        let mut smaller = cfg.clone();
        smaller.segment_bytes = 64 * 1024;
        smaller.batch_bytes_max = 16 * 1024;
        // Write-path sizing of the open log is kept whatever the new config says.
        smaller.write_buffer_bytes = 128 * 1024;
        smaller.preallocate_step_bytes = 128 * 1024;
        smaller.recycle_segments = !cfg.recycle_segments;
        smaller.dir = "/nowhere".into();
        log.set_config(smaller).unwrap();
        let now = log.config();
        assert_eq!(now.segment_bytes, 64 * 1024);
        assert_eq!(now.write_buffer_bytes, cfg.write_buffer_bytes);
        assert_eq!(now.preallocate_step_bytes, cfg.preallocate_step_bytes);
        assert_eq!(now.recycle_segments, cfg.recycle_segments);
        assert_eq!(now.dir, path);
        written.extend(append_range(&log, 100, 300).await);
        let sealed = log.sealed_segments();
        assert!(sealed.len() > 3);
        assert!(sealed[1..].iter().all(|s| s.size_bytes <= 64 * 1024));
        let big = iouring_storage::testing::build_batch(1, 20 * 1024, 0, 0);
        assert!(matches!(log.append(&big, 0, 0).await, Err(Error::InvalidBatch(_))));

        // Retention switched on later applies at the next run.
        assert!(log.enforce_retention(0).await.unwrap().is_empty());
        let mut retained = log.config();
        retained.retention_bytes = Some(200 * 1024);
        log.set_config(retained.clone()).unwrap();
        assert!(!log.enforce_retention(0).await.unwrap().is_empty());
        assert!(log.size_bytes() < 200 * 1024 + 64 * 1024);
        let start = log.offsets().log_start;
        assert_eq!(
            read_all(&log).await,
            written.iter().filter(|(b, _)| *b >= start).cloned().collect::<Vec<_>>()
        );

        // An invalid config is refused whole and changes nothing.
        let mut bad = retained.clone();
        bad.segment_bytes = 10;
        bad.retention_bytes = Some(1);
        assert!(matches!(log.set_config(bad), Err(Error::Config { key: "segment_bytes", .. })));
        assert_eq!(log.config().retention_bytes, Some(200 * 1024));
        assert_eq!(log.config().segment_bytes, 64 * 1024);
    });
}

/// Sets a log start in the middle of a 150-batch log, then lets `damage` change the files and
/// reopens: returns the log, what was written, the start that was set, and the bases of the
/// segments that were below it.
fn log_start_scenario(
    damage: impl FnOnce(&Path, &[PathBuf]) + Send + 'static,
    check: impl FnOnce(PartitionLog, Vec<(u64, Vec<u8>)>, u64) -> std::pin::Pin<Box<dyn Future<Output = ()>>> + Send + 'static,
) {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_range(&log, 0, 150).await;
        let sealed = log.sealed_segments();
        assert!(sealed.len() >= 3);
        // Keep copies of what delete_records_before deletes, to put back as a crash would leave it.
        let saved: Vec<(PathBuf, Vec<u8>)> = sealed[..2]
            .iter()
            .flat_map(|s| [s.log_path.clone(), s.index_path.clone(), s.time_index_path.clone()])
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        let target = sealed[2].base_offset + 1;
        log.delete_records_before(target).await.unwrap();
        drop(log);
        for (p, bytes) in &saved {
            assert!(!p.exists());
            std::fs::write(p, bytes).unwrap();
        }
        let restored: Vec<PathBuf> = saved.into_iter().map(|(p, _)| p).collect();
        damage(&path, &restored);
        let log = PartitionLog::open(cfg).await.expect("recovery opens the log");
        check(log, written, target).await;
    });
}

#[test]
fn crash_after_persisting_the_log_start_before_deleting_segments() {
    log_start_scenario(
        |_, _| {},
        |log, written, target| {
            Box::pin(async move {
                assert_eq!(log.offsets().log_start, target);
                let first = batch_holding(&written, target);
                assert_eq!(read_all(&log).await, written[first..].to_vec());
                let sealed = log.sealed_segments();
                assert!(sealed[0].base_offset <= target && target < sealed[0].next_offset);
                assert!(sealed[0].base_offset > 0, "segments below the start were deleted");
                assert!(!log.config().dir.join(format!("{:020}.log", 0)).exists());
            })
        },
    );
}

#[test]
fn crash_missing_log_start_file_starts_at_the_first_segment() {
    log_start_scenario(
        |dir, restored| {
            std::fs::remove_file(dir.join("log-start.offset")).unwrap();
            for p in restored {
                std::fs::remove_file(p).unwrap();
            }
        },
        |log, written, target| {
            Box::pin(async move {
                let start = log.offsets().log_start;
                assert!(start < target && start > 0, "the first kept segment's base");
                let first = batch_holding(&written, start);
                assert_eq!(read_all(&log).await, written[first..].to_vec());
                // A later DeleteRecords works as before.
                assert_eq!(log.delete_records_before(target).await.unwrap(), target);
            })
        },
    );
}

#[test]
fn crash_damaged_log_start_file_is_ignored_and_removed() {
    log_start_scenario(
        |dir, _| {
            let p = dir.join("log-start.offset");
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[9] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
            // A half-written replacement left by a crash goes too.
            std::fs::write(dir.join("log-start.offset.tmp"), b"junk").unwrap();
        },
        |log, written, target| {
            Box::pin(async move {
                let dir = log.config().dir;
                assert!(!dir.join("log-start.offset").exists());
                assert!(!dir.join("log-start.offset.tmp").exists());
                // Nothing is lost: the log starts at its first segment, which crash put back.
                assert_eq!(log.offsets().log_start, 0);
                assert_eq!(read_all(&log).await, written);
                assert_eq!(log.delete_records_before(target).await.unwrap(), target);
                assert_eq!(log.offsets().log_start, target);
            })
        },
    );
}

#[test]
fn crash_losing_data_above_the_log_start_lowers_it_to_the_log_end() {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        append_range(&log, 0, 150).await;
        let end = log.offsets().durable_end;
        log.delete_records_before(end).await.unwrap();
        drop(log);
        // A bad disk eats the tail of the active segment: the log ends below the start.
        let seg = active_segment(&path);
        let (p, _) = batch_positions(&seg)[1];
        std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(p + 10).unwrap();
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let o = log.offsets();
        assert!(o.log_end < end);
        assert_eq!(o.log_start, o.log_end);
        let info = log.append(&nth_batch(1), 0, 0).await.unwrap();
        log.commit().await.unwrap();
        assert_eq!(info.base_offset, o.log_end);
        drop(log);
        // The lowered start was persisted: the new batch is readable after reopening.
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets().log_start, o.log_end);
        assert!(log.read(o.log_end, 1).await.unwrap().is_some());
    });
}

#[test]
fn truncation_below_the_log_start_lowers_it_with_the_log_end() {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_range(&log, 0, 150).await;
        // Start and cut both inside the second segment, which DeleteRecords keeps.
        let seg = log.sealed_segments()[1].clone();
        let inside: Vec<u64> = written
            .iter()
            .map(|(b, _)| *b)
            .filter(|b| (seg.base_offset..seg.next_offset).contains(b))
            .collect();
        assert!(inside.len() >= 3);
        let (cut, start) = (inside[inside.len() / 3], inside[2 * inside.len() / 3]);
        log.delete_records_before(start).await.unwrap();
        let new_end = log.truncate_to(cut).await.unwrap();
        assert_eq!(new_end, cut);
        assert_eq!(log.offsets().log_start, new_end, "the log never starts after its end");
        let more = append_range(&log, 100, 105).await;
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets().log_start, new_end);
        assert_eq!(read_all(&log).await, more);
    });
}

/// Compaction's rewrite: a sealed segment replaced by some of its batches reads back as
/// exactly those, before and after reopening, and also when a crash came between the rename
/// of the new data and the rewrite of its index files (the old index files are still there).
#[test]
fn a_rewritten_segment_reads_back_and_survives_reopen_and_a_stale_index() {
    run_in_dir(|dir| async move {
        let log = PartitionLog::open(small_config(&dir)).await.unwrap();
        let mut all = Vec::new();
        while log.sealed_segments().len() < 2 {
            let from = all.len() as u64;
            all.extend(append_range(&log, from, from + 10).await);
        }
        let first = log.sealed_segments()[0].clone();
        let (old_index, old_time_index) = (
            std::fs::read(&first.index_path).unwrap(),
            std::fs::read(&first.time_index_path).unwrap(),
        );
        let in_first: Vec<&(u64, Vec<u8>)> = all.iter().filter(|(o, _)| *o < first.next_offset).collect();
        assert!(in_first.len() >= 4, "the first segment holds several batches");
        // Keep every other batch of the first segment.
        let dropped: Vec<u64> = in_first.iter().skip(1).step_by(2).map(|(o, _)| *o).collect();
        let mut rewrite = log.rewrite_segment(first.base_offset).await.unwrap();
        for (o, bytes) in &in_first {
            if !dropped.contains(o) {
                rewrite.push(bytes).await.unwrap();
            }
        }
        // A batch out of order is refused.
        let (_, last) = in_first[0];
        assert!(rewrite.push(last).await.is_err());
        assert!(rewrite.finish().await.unwrap());
        let expected: Vec<(u64, Vec<u8>)> = all.iter().filter(|(o, _)| !dropped.contains(o)).cloned().collect();
        assert_eq!(read_all(&log).await, expected);
        assert_eq!(
            log.sealed_segments()[0].next_offset,
            first.next_offset,
            "the segment keeps its offset range"
        );
        assert!(log.sealed_segments()[0].size_bytes < first.size_bytes);
        // Appends go on after a rewrite.
        let from = all.len() as u64;
        let more = append_range(&log, from, from + 3).await;
        let expected: Vec<(u64, Vec<u8>)> = expected.into_iter().chain(more).collect();
        log.close().await.unwrap();

        let log = PartitionLog::open(small_config(&dir)).await.unwrap();
        assert_eq!(read_all(&log).await, expected, "after reopening");
        log.close().await.unwrap();

        std::fs::write(&first.index_path, &old_index).unwrap();
        std::fs::write(&first.time_index_path, &old_time_index).unwrap();
        let log = PartitionLog::open(small_config(&dir)).await.unwrap();
        assert_eq!(read_all(&log).await, expected, "with the index files from before the rewrite");
        log.close().await.unwrap();
    });
}

/// A rewrite abandoned midway leaves nothing behind, and one whose segment retention deleted
/// meanwhile changes nothing.
#[test]
fn an_abandoned_or_outdated_rewrite_changes_nothing() {
    run_in_dir(|dir| async move {
        let mut cfg = small_config(&dir);
        cfg.retention_ms = Some(1);
        let log = PartitionLog::open(cfg).await.unwrap();
        let mut all = Vec::new();
        while log.sealed_segments().len() < 2 {
            let from = all.len() as u64;
            all.extend(append_range(&log, from, from + 10).await);
        }
        let first = log.sealed_segments()[0].clone();
        let mut abandoned = log.rewrite_segment(first.base_offset).await.unwrap();
        abandoned.push(&all[0].1).await.unwrap();
        drop(abandoned);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(read_all(&log).await, all);

        let mut outdated = log.rewrite_segment(first.base_offset).await.unwrap();
        outdated.push(&all[0].1).await.unwrap();
        let deleted = log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert!(deleted.contains(&first.base_offset));
        assert!(
            !outdated.finish().await.unwrap(),
            "the segment is gone, so the rewrite is not installed"
        );
        assert!(log.read(first.base_offset, 1).await.is_err(), "the deleted range stays deleted");
        log.close().await.unwrap();
    });
}
