//! One partition's log on disk: segments of Kafka v2 record batches written with O_DIRECT
//! through glommio DMA files (io_uring), sparse offset and time indexes, group commit,
//! recovery, retention and truncation.
//!
//! Architecture invariant: this crate knows the record batch header (to validate and stamp it)
//! and the transaction marker it writes itself, and nothing else of Kafka: it never parses
//! client records, never decompresses, never speaks the wire protocol, and never talks to an
//! object store.
//!
//! Architecture invariant: the page cache is never used for segment data or indexes; every file
//! is opened with O_DIRECT, and alignment comes from the device (`DmaFile::alignment`).

mod batch;
mod config;
pub mod constants;
mod error;
mod fs_sync;
mod index;
mod log;
mod log_start;
mod notify;
mod producer_state;
mod read_ahead;
mod recovery;
mod rewrite;
mod segment;
mod writer;

pub use batch::{compute_crc, control_batch, parse_marker, stamp, testing, validate, BatchHeader, CountCheck, Marker};
pub use config::{LogConfig, SyncScope};
pub use error::{BatchError, Error, ProducerError, Result};
pub use fs_sync::filesystem_syncs;
pub use log::{release_spares_if_wanted, AppendInfo, LogOffsets, LogStats, PartitionLog, ReadBatches, SegmentInfo, TimestampHit};
pub use producer_state::AbortedTxn;
pub use read_ahead::{read_ahead_stats, ReadAheadStats};
pub use rewrite::SegmentRewrite;

#[doc(hidden)]
pub mod bench_support {
    //! Internals exposed for the crate's own criterion benchmarks only.
    pub use crate::index::SegmentIndex;
}
