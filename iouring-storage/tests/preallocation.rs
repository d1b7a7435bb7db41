//! Disk reserved by preallocation grows with the data, so thousands of idle or small
//! partitions do not each reserve a full preallocation step.
//!
//! Regression: with a fixed 64 MiB step, a 1,000-partition topic reserved 64 GB of disk before
//! any data arrived and filled the machine's disk during the client tests.

use std::os::unix::fs::MetadataExt;

use iouring_storage::testing::build_batch;
use iouring_storage::{LogConfig, PartitionLog};

/// Bytes of disk actually allocated to the file (not its apparent size).
fn allocated_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn small_partitions_reserve_little_and_busy_ones_grow_in_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let cfg = LogConfig::new(&path);
            assert_eq!(cfg.preallocate_step_bytes, 64 * 1024 * 1024, "the default this test is about");
            let log = PartitionLog::open(cfg.clone()).await.unwrap();
            let segment = path.join("00000000000000000000.log");
            assert!(allocated_bytes(&segment) == 0, "an empty partition reserves nothing");
            log.append(&build_batch(1, 100, 0, 0), 0, 0).await.unwrap();
            log.commit().await.unwrap();
            let small = allocated_bytes(&segment);
            assert!(
                small <= cfg.write_buffer_bytes as u64 + 4096,
                "one small batch reserved {small} bytes"
            );

            // A busy partition still preallocates ahead of its writes, in growing steps.
            let batch = build_batch(10, 256 * 1024, 0, 0);
            for _ in 0..64 {
                log.append(&batch, 0, 0).await.unwrap();
            }
            log.commit().await.unwrap();
            let data = log.size_bytes();
            let reserved = allocated_bytes(&segment);
            assert!(reserved >= data, "reserved {reserved} < data {data}");
            assert!(
                reserved <= 2 * data + cfg.write_buffer_bytes as u64,
                "reserved {reserved} for {data} bytes of data"
            );
        })
        .unwrap()
        .join()
        .unwrap();
}
