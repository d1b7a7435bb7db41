//! Transactions through the log on a real filesystem: the last stable offset held by open
//! transactions, markers ending them, the aborted transactions listed for read_committed
//! readers, fencing by epoch, and all of it after a reopen, a crash, damaged snapshots,
//! truncation and retention.

mod common;

use common::{run_in_dir, small_config, snapshots};

use iouring_storage::testing::build_batch;
use iouring_storage::{compute_crc, AbortedTxn, BatchError, Error, Marker, PartitionLog, ProducerError};

/// A batch of `records` records from producer `pid` at `epoch`, sequence `seq`, with the given
/// attributes.
fn batch(pid: i64, epoch: i16, seq: i32, records: i32, attributes: i16) -> Vec<u8> {
    let mut b = build_batch(records, 3000, 1_000, 1_000);
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn txn(pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    batch(pid, epoch, seq, 2, 0x10)
}

async fn marker(log: &PartitionLog, pid: i64, epoch: i16, commit: bool) -> Result<u64, Error> {
    let m = Marker {
        commit,
        coordinator_epoch: 0,
    };
    let (info, _) = log.append_marker(pid, epoch, m, 0, 5).await?;
    log.commit().await?;
    Ok(info.base_offset)
}

async fn append(log: &PartitionLog, b: &[u8]) -> u64 {
    let info = log.append(b, 0, 0).await.expect("append");
    log.commit().await.unwrap();
    info.base_offset
}

fn aborted(pid: i64, first: u64, last: u64) -> AbortedTxn {
    AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: last,
    }
}

#[test]
fn the_last_stable_offset_follows_open_committed_and_aborted_transactions() {
    run_in_dir(|path| async move {
        let log = PartitionLog::open(small_config(&path)).await.unwrap();
        let plain = build_batch(1, 10, 0, 0);
        append(&log, &plain).await; // 0
        assert_eq!(log.offsets().last_stable, 1);
        let p1 = append(&log, &txn(1, 0, 0)).await; // 1..=2
        assert_eq!(log.offsets().last_stable, p1, "producer 1's open transaction holds it");
        let p2 = append(&log, &txn(2, 0, 0)).await; // 3..=4
        append(&log, &plain).await; // 5
        append(&log, &txn(1, 0, 2)).await; // 6..=7, same transaction
        assert_eq!((log.offsets().last_stable, log.offsets().durable_end), (p1, 8));
        // A read_committed reader stops before the open transaction; others read everything.
        let r = log.read_committed(0, 1 << 20).await.unwrap().unwrap();
        assert_eq!((r.first_offset, r.next_offset), (0, 1));
        assert!(log.read_committed(p1, 1 << 20).await.unwrap().is_none());
        let r = log.read(0, 1 << 20).await.unwrap().unwrap();
        assert_eq!(r.next_offset, 8);

        // Producer 1 commits: producer 2's transaction holds the offset now.
        let c1 = marker(&log, 1, 0, true).await.unwrap(); // 8
        assert_eq!(log.offsets().last_stable, p2);
        // Producer 2 aborts: nothing is open, the last stable offset is the durable end.
        let a2 = marker(&log, 2, 0, false).await.unwrap(); // 9
        assert_eq!(log.offsets().last_stable, log.offsets().durable_end);
        assert_eq!(log.aborted_transactions(0, u64::MAX), vec![aborted(2, p2, a2)]);
        let r = log.read_committed(0, 1 << 20).await.unwrap().unwrap();
        assert_eq!(r.next_offset, 10, "markers are read like any batch");

        // The next transaction of producer 1 starts a new one at its first batch; an abort of
        // it is listed with that first offset.
        let p1b = append(&log, &txn(1, 0, 4)).await; // 10..=11
        assert_eq!(log.offsets().last_stable, p1b);
        let a1 = marker(&log, 1, 0, false).await.unwrap(); // 12
                                                           // An abort with no open transaction (and of an unknown producer) is written and
                                                           // covers the marker alone, as Kafka does.
        let lone = marker(&log, 7, 0, false).await.unwrap(); // 13
        let all = vec![aborted(2, p2, a2), aborted(1, p1b, a1), aborted(7, lone, lone)];
        assert_eq!(log.aborted_transactions(0, u64::MAX), all);
        // Ranges: an aborted transaction is listed when it overlaps [from, to).
        assert_eq!(log.aborted_transactions(a2 + 1, u64::MAX), all[1..].to_vec());
        assert_eq!(log.aborted_transactions(0, p2), Vec::<AbortedTxn>::new());
        assert_eq!(log.aborted_transactions(0, p2 + 1), all[..1].to_vec());
        assert_eq!(log.aborted_transactions(a2, p1b + 1), all[..2].to_vec());
        assert_eq!(log.aborted_transactions(lone + 1, u64::MAX), Vec::<AbortedTxn>::new());
        assert_eq!(c1, 8);
    });
}

#[test]
fn stale_epochs_coordinators_and_client_control_batches_are_refused() {
    run_in_dir(|path| async move {
        let log = PartitionLog::open(small_config(&path)).await.unwrap();
        append(&log, &txn(1, 3, 0)).await;
        let end = log.offsets().log_end;
        // A marker below the producer's epoch is refused and writes nothing.
        assert!(matches!(
            marker(&log, 1, 2, true).await,
            Err(Error::Producer(ProducerError::InvalidEpoch {
                epoch: 2,
                current_epoch: 3,
                ..
            }))
        ));
        assert_eq!(log.offsets().log_end, end);
        // A transactional batch below it too.
        assert!(matches!(
            log.append(&txn(1, 2, 2), 0, 0).await,
            Err(Error::Producer(ProducerError::InvalidEpoch { .. }))
        ));
        // A newer coordinator wrote a marker; the older one is fenced.
        let m = |ce| Marker {
            commit: false,
            coordinator_epoch: ce,
        };
        log.append_marker(1, 3, m(5), 0, 0).await.unwrap();
        assert!(matches!(
            log.append_marker(1, 3, m(4), 0, 0).await,
            Err(Error::Producer(ProducerError::CoordinatorFenced { .. }))
        ));
        // A marker at a newer epoch (the coordinator bumped it on abort) moves the producer
        // to it: its next batch starts at sequence 0 and the old epoch is fenced.
        log.append_marker(1, 4, m(5), 0, 0).await.unwrap();
        assert!(matches!(
            log.append(&txn(1, 3, 2), 0, 0).await,
            Err(Error::Producer(ProducerError::InvalidEpoch { .. }))
        ));
        assert!(matches!(
            log.append(&txn(1, 4, 2), 0, 0).await,
            Err(Error::Producer(ProducerError::OutOfOrderSequence { .. }))
        ));
        append(&log, &txn(1, 4, 0)).await;
        // Control batches come only from the log.
        let end = log.offsets().log_end;
        for attributes in [0x20, 0x30] {
            assert!(matches!(
                log.append(&batch(9, 0, 0, 1, attributes), 0, 0).await,
                Err(Error::InvalidBatch(BatchError::ControlFromClient { .. }))
            ));
        }
        assert_eq!(log.offsets().log_end, end);
    });
}

/// Rounds of `history`: enough for several segments.
const ROUNDS: u64 = 20;

/// Writes a history over several segments: aborted and committed transactions of three
/// producers, with plain batches between, and producer 3's transaction left open across rolls.
/// Returns the aborted transactions and the open one's first offset, and the first offset
/// of producer 1's transaction that was open when producer 3's began.
async fn history(log: &PartitionLog) -> (Vec<AbortedTxn>, u64, u64) {
    let mut expected = Vec::new();
    let mut seq = [0i32; 4];
    let mut open = None;
    let mut overlapping = None;
    for round in 0..ROUNDS {
        for pid in 1..=2i64 {
            let first = append(log, &txn(pid, 0, seq[pid as usize])).await;
            seq[pid as usize] += 2;
            append(log, &txn(pid, 0, seq[pid as usize])).await;
            seq[pid as usize] += 2;
            append(log, &build_batch(1, 3000, 0, 0)).await;
            if round == ROUNDS / 2 && pid == 1 {
                open = Some(append(log, &txn(3, 0, 0)).await);
                overlapping = Some(first);
            }
            let commit = (round + pid as u64) % 2 == 0;
            let at = marker(log, pid, 0, commit).await.unwrap();
            if !commit {
                expected.push(aborted(pid, first, at));
            }
        }
    }
    assert!(log.stats().segments > 4, "the history spans several segments");
    (expected, open.unwrap(), overlapping.unwrap())
}

async fn assert_state(log: &PartitionLog, expected: &[AbortedTxn], open: u64) {
    assert_eq!(log.aborted_transactions(0, u64::MAX), expected);
    assert_eq!(
        log.offsets().last_stable,
        open,
        "the open transaction still holds the last stable offset"
    );
}

#[test]
fn transactions_survive_reopen_crash_and_damaged_or_lost_snapshots() {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let (expected, open, _) = history(&log).await;
        assert_state(&log, &expected, open).await;
        assert!(
            snapshots(&path).len() > 2,
            "the open transaction and some aborts are only in snapshots"
        );
        log.close().await.unwrap();
        drop(log);

        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_state(&log, &expected, open).await;
        // More after the reopen, then a crash (no close).
        let first = append(&log, &txn(2, 0, 4 * ROUNDS as i32)).await;
        let at = marker(&log, 2, 0, false).await.unwrap();
        let mut expected = expected;
        expected.push(aborted(2, first, at));
        drop(log);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_state(&log, &expected, open).await;
        drop(log);

        // The newest snapshot damaged: an older one and a longer replay.
        let newest = snapshots(&path).pop().unwrap();
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[40] ^= 0xff;
        std::fs::write(&newest, bytes).unwrap();
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_state(&log, &expected, open).await;
        drop(log);

        // Every snapshot lost: the whole log is replayed, markers included.
        for s in snapshots(&path) {
            std::fs::remove_file(s).unwrap();
        }
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_state(&log, &expected, open).await;
        // Producer 3 commits at last: nothing is open.
        marker(&log, 3, 0, true).await.unwrap();
        assert_eq!(log.offsets().last_stable, log.offsets().durable_end);
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets().last_stable, log.offsets().durable_end);
        assert_eq!(log.aborted_transactions(0, u64::MAX), expected);
    });
}

#[test]
fn truncation_reopens_a_transaction_whose_marker_it_removed() {
    run_in_dir(|path| async move {
        let cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let (expected, open, overlapping) = history(&log).await;
        // Cut at the last abort's marker: that transaction is open again, and it is older
        // than producer 3's only if it started before it.
        let last = *expected.last().unwrap();
        log.truncate_to(last.last_offset).await.unwrap();
        assert_eq!(log.aborted_transactions(0, u64::MAX), expected[..expected.len() - 1]);
        assert_eq!(log.offsets().last_stable, open.min(last.first_offset));
        // Cut at producer 3's first batch: its transaction is gone with it, and producer 1's,
        // whose marker came after it, is open again.
        let before_open: Vec<AbortedTxn> = expected.iter().copied().filter(|a| a.last_offset < open).collect();
        log.truncate_to(open).await.unwrap();
        assert_eq!(log.aborted_transactions(0, u64::MAX), before_open);
        assert_eq!(log.offsets().last_stable, overlapping);
        drop(log);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_eq!(log.aborted_transactions(0, u64::MAX), before_open);
        assert_eq!(log.offsets().last_stable, overlapping);
        // Cut at that transaction's start: nothing is open.
        log.truncate_to(overlapping).await.unwrap();
        assert_eq!(log.offsets().last_stable, log.offsets().durable_end);
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets().last_stable, log.offsets().durable_end);
    });
}

#[test]
fn retention_and_delete_records_forget_aborts_below_the_log_start() {
    run_in_dir(|path| async move {
        let mut cfg = small_config(&path);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        let (expected, open, _) = history(&log).await;
        // Commit producer 3, so retention is not held back by reads of an open transaction.
        marker(&log, 3, 0, true).await.unwrap();
        cfg.retention_bytes = Some(150 * 1024);
        log.set_config(cfg.clone()).unwrap();
        assert!(!log.enforce_retention(0).await.unwrap().is_empty());
        let start = log.offsets().log_start;
        let kept: Vec<AbortedTxn> = expected.iter().copied().filter(|a| a.last_offset >= start).collect();
        assert!(
            !kept.is_empty() && kept.len() < expected.len(),
            "retention took some aborts, not all"
        );
        assert_eq!(log.aborted_transactions(0, u64::MAX), kept);
        drop(log);
        let log = PartitionLog::open(cfg.clone()).await.unwrap();
        assert_eq!(log.aborted_transactions(0, u64::MAX), kept);
        // Delete records past one more abort.
        let cut = kept[0].last_offset + 1;
        log.delete_records_before(cut).await.unwrap();
        assert_eq!(log.aborted_transactions(0, u64::MAX), kept[1..]);
        assert!(open < cut);
        drop(log);
        let log = PartitionLog::open(cfg).await.unwrap();
        let left = log.aborted_transactions(0, u64::MAX);
        // The snapshot may still list the deleted one; the log start hides it at open.
        assert_eq!(left, kept[1..]);
    });
}
