//! The storage crate's error type: every variant says what was being done and where.

use std::path::PathBuf;

/// Result of a storage operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a record batch was refused. Each names the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is {len} bytes, shorter than the {min}-byte header")]
    TooShort { len: usize, min: usize },
    #[error("batchLength field says {declared} bytes but {actual} bytes follow it")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("batch of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("magic byte is {magic}, only record batch format v2 (magic 2) is accepted")]
    BadMagic { magic: i8 },
    #[error("CRC-32C mismatch: header says {stored:#010x}, batch hashes to {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("record count {records_count} does not match lastOffsetDelta {last_offset_delta}")]
    CountMismatch { records_count: i32, last_offset_delta: i32 },
    #[error("control batches (attributes {attributes:#06x}) are written by the log only, never by a client")]
    ControlFromClient { attributes: i16 },
}

/// Why an idempotent producer's batch was refused (see `producer_state.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("producer {producer_id} sent epoch {epoch}, older than its current epoch {current_epoch}")]
    InvalidEpoch { producer_id: i64, epoch: i16, current_epoch: i16 },
    #[error("producer {producer_id} epoch {epoch} sent sequence {sequence} after sequence {last_sequence} of epoch {current_epoch}")]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        last_sequence: i32,
        current_epoch: i16,
    },
    #[error("producer {producer_id} sent base sequence {sequence}; a batch with a producer id needs one of 0 or more")]
    InvalidSequence { producer_id: i64, sequence: i32 },
    #[error(
        "transaction marker for producer {producer_id} from coordinator epoch {coordinator_epoch}, older than {current_coordinator_epoch}"
    )]
    CoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current_coordinator_epoch: i32,
    },
}

/// Errors of the partition log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("refused record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("refused producer batch: {0}")]
    Producer(#[from] ProducerError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("partition log {dir} is poisoned after a failed {cause}; it refuses writes until reopened")]
    Poisoned { dir: PathBuf, cause: String },
    #[error("offset {offset} is out of range: the log holds [{log_start}, {log_end})")]
    OffsetOutOfRange { offset: u64, log_start: u64, log_end: u64 },
    #[error("invalid log config: {key} = {value}: {reason}")]
    Config {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("log {dir} is closed")]
    Closed { dir: PathBuf },
    #[error("corrupt {what} in {path}: {detail}")]
    Corrupt { what: &'static str, path: PathBuf, detail: String },
}

impl Error {
    /// Whether this is the filesystem saying it is full (ENOSPC).
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}
