//! Typed configuration of one partition log. The broker maps Kafka topic configs onto it.

use std::path::PathBuf;

use crate::constants::*;
use crate::error::{Error, Result};

/// How one partition log behaves. Build with [`LogConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The partition's directory; segments live directly in it.
    pub dir: PathBuf,
    /// Roll the active segment before it would exceed this many bytes (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll the active segment once it is this old, if it holds data (`segment.ms`).
    pub segment_ms: Option<i64>,
    /// Delete the oldest sealed segments while the log exceeds this size (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest batch is older than this (`retention.ms`).
    pub retention_ms: Option<i64>,
    /// Largest batch accepted on append (`max.message.bytes`).
    pub batch_bytes_max: usize,
    /// Bytes between sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Largest aligned write buffer, and so the largest full-buffer write. A log's buffer
    /// starts at `WRITE_BUFFER_BYTES_MIN` and grows to this while its commits fill it.
    pub write_buffer_bytes: usize,
    /// Writes in flight before an append waits.
    pub writes_in_flight_max: usize,
    /// Largest step by which a segment file grows (fallocate), to keep O_DIRECT writes off
    /// ext4's file-growing path. Steps start at one write buffer and double with the segment,
    /// so thousands of idle partitions do not each reserve a full step.
    pub preallocate_step_bytes: u64,
    /// Base offset of the first segment when the directory is empty.
    pub initial_offset: u64,
    /// Keep the data file of one segment that retention or `delete_records_before` removed,
    /// and reuse it as the next segment (see "Segment recycling" in `log.rs`): its blocks are
    /// already written, so commits into it need no metadata write, and deleting it costs no
    /// discard. Holds up to one segment's disk space more per partition.
    pub recycle_segments: bool,
    /// What a group commit syncs: the segment (fdatasync, the default) or the whole
    /// filesystem, once for every log of the thread on it (see `fs_sync.rs`).
    pub sync: SyncScope,
}

/// What makes a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncScope {
    /// An fdatasync of the active segment, for each log's commit.
    #[default]
    Segment,
    /// One `syncfs` shared by the commits of every log on the thread and filesystem. Fewer
    /// syncs and cache flushes; but it also writes back other programs' dirty pages on the
    /// filesystem, so it is for a data directory with a filesystem of its own.
    Filesystem,
}

impl LogConfig {
    /// Kafka's defaults where Kafka has one, and values measured on these machines elsewhere.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            batch_bytes_max: 1024 * 1024 + 12,
            index_interval_bytes: 4096,
            write_buffer_bytes: 1024 * 1024,
            writes_in_flight_max: 4,
            preallocate_step_bytes: 64 * 1024 * 1024,
            initial_offset: 0,
            recycle_segments: true,
            sync: SyncScope::Segment,
        }
    }

    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, value: String, reason: &'static str| Err(Error::Config { key, value, reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return bad(
                "segment_bytes",
                self.segment_bytes.to_string(),
                "must be between 64 KiB and 4 GiB - 1",
            );
        }
        if self.segment_ms.is_some_and(|ms| ms <= 0) {
            return bad("segment_ms", format!("{:?}", self.segment_ms), "must be positive");
        }
        if self.retention_ms.is_some_and(|ms| ms < 0) {
            return bad("retention_ms", format!("{:?}", self.retention_ms), "must not be negative");
        }
        if !(crate::constants::BATCH_HEADER_BYTES..=BATCH_BYTES_MAX).contains(&self.batch_bytes_max) {
            return bad(
                "batch_bytes_max",
                self.batch_bytes_max.to_string(),
                "must be between 61 bytes and 64 MiB",
            );
        }
        if u64::try_from(self.batch_bytes_max).is_ok_and(|b| b > self.segment_bytes) {
            return bad("batch_bytes_max", self.batch_bytes_max.to_string(), "must not exceed segment_bytes");
        }
        if self.index_interval_bytes < INDEX_INTERVAL_BYTES_MIN {
            return bad(
                "index_interval_bytes",
                self.index_interval_bytes.to_string(),
                "must be at least 1024",
            );
        }
        if !(WRITE_BUFFER_BYTES_MIN..=WRITE_BUFFER_BYTES_MAX).contains(&self.write_buffer_bytes) || self.write_buffer_bytes % 4096 != 0 {
            return bad(
                "write_buffer_bytes",
                self.write_buffer_bytes.to_string(),
                "must be a multiple of 4 KiB between 64 KiB and 16 MiB",
            );
        }
        if !(1..=WRITES_IN_FLIGHT_MAX).contains(&self.writes_in_flight_max) {
            return bad(
                "writes_in_flight_max",
                self.writes_in_flight_max.to_string(),
                "must be between 1 and 16",
            );
        }
        if !(self.write_buffer_bytes as u64..=PREALLOCATE_STEP_BYTES_MAX).contains(&self.preallocate_step_bytes) {
            return bad(
                "preallocate_step_bytes",
                self.preallocate_step_bytes.to_string(),
                "must be between write_buffer_bytes and 1 GiB",
            );
        }
        if self.initial_offset > i64::MAX as u64 / 2 {
            return bad(
                "initial_offset",
                self.initial_offset.to_string(),
                "is beyond the Kafka offset range",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        LogConfig::new("/tmp/x").validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = LogConfig::new("/tmp/x");
        c.write_buffer_bytes = 1000;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("write_buffer_bytes"), "{e}");
        let mut c = LogConfig::new("/tmp/x");
        c.segment_bytes = 10;
        assert!(c.validate().unwrap_err().to_string().contains("segment_bytes"));
        let mut c = LogConfig::new("/tmp/x");
        c.writes_in_flight_max = 0;
        assert!(c.validate().unwrap_err().to_string().contains("writes_in_flight_max"));
    }
}
