//! Idempotent producer state through the log on a real filesystem: duplicates answered with
//! their original offsets, gaps and old epochs refused, and all of it after a clean reopen, a
//! crash, lost or damaged snapshots, truncation and retention.

mod common;

use common::{run_in_dir, small_config, snapshots};

use iouring_storage::testing::build_batch;
use iouring_storage::{compute_crc, Error, PartitionLog, ProducerError};

/// A batch of `records` records from producer `pid` at `epoch` starting at sequence `seq`.
fn idem_batch(pid: i64, epoch: i16, seq: i32, records: i32) -> Vec<u8> {
    let mut b = build_batch(records, 3000, 1_000 + i64::from(seq), 1_000 + i64::from(seq));
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Batch `i` of producer `pid` (2 records each, so sequence `2 * i`).
fn nth(pid: i64, i: i32) -> Vec<u8> {
    idem_batch(pid, 0, 2 * i, 2)
}

/// Appends batches `from..to` of producers 1 and 2 interleaved; returns (pid, i, base offset).
async fn append_both(log: &PartitionLog, from: i32, to: i32) -> Vec<(i64, i32, u64)> {
    let mut out = Vec::new();
    for i in from..to {
        for pid in [1, 2] {
            let info = log.append(&nth(pid, i), 0, 0).await.expect("append");
            assert!(!info.duplicate);
            out.push((pid, i, info.base_offset));
        }
    }
    log.commit().await.unwrap();
    out
}

/// Retries each of the last five batches of both producers: each is answered with its original
/// offsets and nothing is appended.
async fn assert_last_five_are_duplicates(log: &PartitionLog, written: &[(i64, i32, u64)]) {
    let end = log.offsets().log_end;
    for pid in [1, 2] {
        let mine: Vec<_> = written.iter().filter(|w| w.0 == pid).collect();
        for &&(_, i, base) in &mine[mine.len() - 5..] {
            let info = log.append(&nth(pid, i), 0, 0).await.expect("a retry is answered");
            assert!(info.duplicate, "producer {pid} batch {i} is a duplicate");
            assert_eq!((info.base_offset, info.last_offset), (base, base + 1));
        }
        // Older than the last five: out of order, as in Kafka.
        let &(_, old, _) = mine[mine.len() - 6];
        assert!(matches!(
            log.append(&nth(pid, old), 0, 0).await,
            Err(Error::Producer(ProducerError::OutOfOrderSequence { .. }))
        ));
    }
    assert_eq!(log.offsets().log_end, end, "duplicates append nothing");
}

#[test]
fn duplicates_gaps_and_old_epochs_are_handled_before_anything_is_written() {
    run_in_dir(|path| async move {
        let log = PartitionLog::open(small_config(&path)).await.unwrap();
        let written = append_both(&log, 0, 10).await;
        assert_last_five_are_duplicates(&log, &written).await;
        let end = log.offsets().log_end;
        // A gap.
        assert!(matches!(
            log.append(&nth(1, 11), 0, 0).await,
            Err(Error::Producer(ProducerError::OutOfOrderSequence { .. }))
        ));
        // A new epoch must start at 0; then the old epoch is fenced.
        assert!(matches!(
            log.append(&idem_batch(1, 1, 5, 1), 0, 0).await,
            Err(Error::Producer(ProducerError::OutOfOrderSequence { .. }))
        ));
        let bumped = log.append(&idem_batch(1, 1, 0, 1), 0, 0).await.unwrap();
        assert_eq!(bumped.base_offset, end);
        assert!(matches!(
            log.append(&nth(1, 10), 0, 0).await,
            Err(Error::Producer(ProducerError::InvalidEpoch { .. }))
        ));
        // A sequence below zero with a producer id.
        assert!(matches!(
            log.append(&idem_batch(3, 0, -1, 1), 0, 0).await,
            Err(Error::Producer(ProducerError::InvalidSequence { .. }))
        ));
        assert_eq!(log.offsets().log_end, end + 1, "refused batches append nothing");
        // Batches without a producer id are never duplicates.
        let plain = build_batch(1, 10, 0, 0);
        let a = log.append(&plain, 0, 0).await.unwrap();
        let b = log.append(&plain, 0, 0).await.unwrap();
        assert!(!a.duplicate && !b.duplicate && b.base_offset == a.base_offset + 1);
    });
}

#[test]
fn producer_state_survives_reopen_crash_and_lost_or_damaged_snapshots() {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        // About 6 KiB per pair of batches: several rolls.
        let mut written = append_both(&log, 0, 40).await;
        assert!(log.stats().segments > 3);
        assert_eq!(snapshots(&path).len(), log.stats().segments - 1, "one snapshot per roll");
        log.close().await.unwrap();
        drop(log);

        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_last_five_are_duplicates(&log, &written).await;
        written.extend(append_both(&log, 40, 45).await);
        drop(log); // a crash after the commit: no close
                   // A crash during a roll after its snapshot was written, before its segment was made:
                   // the snapshot belongs to no segment and goes at open.
        let orphan = path.join(format!("{:020}.snapshot", 1));
        std::fs::copy(snapshots(&path).pop().unwrap(), &orphan).unwrap();

        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_last_five_are_duplicates(&log, &written).await;
        assert!(!orphan.exists(), "orphan snapshot removed");
        assert_eq!(snapshots(&path).len(), log.stats().segments - 1);
        drop(log);

        // The newest snapshot damaged: an older one and more replay give the same answers.
        let newest = snapshots(&path).pop().unwrap();
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[30] ^= 0xff;
        std::fs::write(&newest, bytes).unwrap();
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_last_five_are_duplicates(&log, &written).await;
        drop(log);

        // Every snapshot lost: replay of the whole log.
        for s in snapshots(&path) {
            std::fs::remove_file(s).unwrap();
        }
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_last_five_are_duplicates(&log, &written).await;
        // And the sequence goes on from where it was.
        let next = log.append(&nth(1, 45), 0, 0).await.unwrap();
        assert!(!next.duplicate);
    });
}

#[test]
fn truncation_forgets_the_removed_batches_and_their_snapshots() {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_both(&log, 0, 40).await;
        let snapshots_before = snapshots(&path).len();
        // Cut at producer 1's batch 20: it and everything after are gone.
        let &(_, _, cut) = written.iter().find(|w| w.0 == 1 && w.1 == 20).unwrap();
        assert_eq!(log.truncate_to(cut).await.unwrap(), cut);
        assert!(snapshots(&path).len() < snapshots_before);
        assert!(snapshots(&path)
            .iter()
            .all(|p| p.file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap() <= cut));
        // Batch 19 is still a duplicate; batch 20 is new again and lands at the cut.
        assert!(log.append(&nth(1, 19), 0, 0).await.unwrap().duplicate);
        let again = log.append(&nth(1, 20), 0, 0).await.unwrap();
        assert_eq!((again.base_offset, again.duplicate), (cut, false));
        // Producer 2's batch 20 came after the cut too: its next sequence is 40, not 42.
        assert!(matches!(
            log.append(&nth(2, 21), 0, 0).await,
            Err(Error::Producer(ProducerError::OutOfOrderSequence { .. }))
        ));
        assert!(!log.append(&nth(2, 20), 0, 0).await.unwrap().duplicate);
        log.commit().await.unwrap();
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        assert!(log.append(&nth(1, 20), 0, 0).await.unwrap().duplicate);
        assert!(log.append(&nth(2, 20), 0, 0).await.unwrap().duplicate);
    });
}

#[test]
fn retention_deletes_snapshots_with_their_segments_and_keeps_the_newest() {
    run_in_dir(|path| async move {
        let mut cfg = small_config(&path);
        cfg.retention_bytes = Some(1);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let written = append_both(&log, 0, 40).await;
        let deleted = log.enforce_retention(0).await.unwrap();
        assert!(!deleted.is_empty());
        let left = snapshots(&path);
        assert_eq!(left.len(), 1, "only the active segment's snapshot stays: {left:?}");
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_last_five_are_duplicates(&log, &written).await;
    });
}
