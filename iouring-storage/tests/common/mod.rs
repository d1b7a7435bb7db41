//! What the log's integration tests share: an executor per test body, a fresh directory, a
//! small-segment config, and the snapshot files in a partition directory.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};

use iouring_storage::LogConfig;

/// Runs an async test body on a fresh glommio executor and surfaces its panics.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor ran");
}

/// Runs an async test body on a fresh glommio executor with a fresh directory, removed after.
pub fn run_in_dir<F, Fut>(f: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    run(move || f(path));
}

/// Small segments (64 KiB), buffers and index intervals, so a few batches roll segments.
pub fn small_config(dir: &Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes = 64 * 1024;
    c.write_buffer_bytes = 64 * 1024;
    c.preallocate_step_bytes = 64 * 1024;
    c.index_interval_bytes = 1024;
    c.batch_bytes_max = 32 * 1024;
    c
}

/// The producer-state snapshot files in `dir`, oldest first.
pub fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .collect();
    v.sort();
    v
}
