//! The one place where shard and storage errors become Kafka error codes.

use iouring_storage::{BatchError, Error as StorageError, ProducerError};
use kafka_protocol::error::ResponseError;
use shard::Error as ShardError;

/// The Kafka error code for a failed partition operation.
pub fn code(e: &ShardError) -> i16 {
    response_error(e).code()
}

/// The Kafka error for a failed partition operation.
pub fn response_error(e: &ShardError) -> ResponseError {
    match e {
        ShardError::UnknownPartition(_) => ResponseError::UnknownTopicOrPartition,
        // The owner is going away (shutdown): a retriable error sends the client back to
        // Metadata and another attempt.
        ShardError::ShardGone(_) => ResponseError::NotLeaderOrFollower,
        ShardError::TooManyPartitions { .. } => ResponseError::KafkaStorageError,
        // A coordinator that has not finished loading: clients retry.
        ShardError::ServiceMissing(_) => ResponseError::CoordinatorLoadInProgress,
        ShardError::Startup { .. } | ShardError::Compaction { .. } => ResponseError::UnknownServerError,
        ShardError::Storage { source, .. } => match source {
            StorageError::InvalidBatch(b) => match b {
                BatchError::BadCrc { .. } | BatchError::LengthMismatch { .. } | BatchError::TooShort { .. } => {
                    ResponseError::CorruptMessage
                }
                BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
                BatchError::BadMagic { .. } => ResponseError::UnsupportedForMessageFormat,
                // Kafka's LogValidator refuses control batches from clients with INVALID_RECORD.
                BatchError::CountMismatch { .. } | BatchError::ControlFromClient { .. } => ResponseError::InvalidRecord,
            },
            // As Kafka's ProducerAppendInfo and LogValidator answer (3.x): an old epoch is
            // INVALID_PRODUCER_EPOCH (since 2.7, not the fatal PRODUCER_FENCED), a gap or a new
            // epoch not starting at 0 OUT_OF_ORDER_SEQUENCE_NUMBER, a negative sequence with a
            // producer id INVALID_RECORD.
            StorageError::Producer(p) => match p {
                ProducerError::InvalidEpoch { .. } => ResponseError::InvalidProducerEpoch,
                ProducerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
                ProducerError::InvalidSequence { .. } => ResponseError::InvalidRecord,
                // A transaction marker from a coordinator that lost its partition (Kafka's
                // `checkCoordinatorEpoch`).
                ProducerError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
            },
            StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            StorageError::Closed { .. } => ResponseError::NotLeaderOrFollower,
            StorageError::Poisoned { .. } | StorageError::Io { .. } | StorageError::Corrupt { .. } => ResponseError::KafkaStorageError,
            StorageError::Config { .. } => ResponseError::InvalidConfig,
        },
    }
}

/// Logs errors an operator must see (storage failures); the rest are the client's business.
pub fn log_if_serious(e: &ShardError) {
    if let ShardError::Storage {
        source: StorageError::Poisoned { .. } | StorageError::Io { .. } | StorageError::Corrupt { .. },
        tp,
    } = e
    {
        tracing::error!(target: "broker", %tp, error = %e, "partition storage failure");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        assert_eq!(code(&ShardError::UnknownPartition("t-0".into())), 3);
        let crc = ShardError::Storage {
            tp: "t-0".into(),
            source: StorageError::InvalidBatch(BatchError::BadCrc { stored: 1, computed: 2 }),
        };
        assert_eq!(code(&crc), 2);
        let big = ShardError::Storage {
            tp: "t-0".into(),
            source: StorageError::InvalidBatch(BatchError::TooLarge { len: 2, max: 1 }),
        };
        assert_eq!(code(&big), 10);
        let range = ShardError::Storage {
            tp: "t-0".into(),
            source: StorageError::OffsetOutOfRange {
                offset: 9,
                log_start: 0,
                log_end: 1,
            },
        };
        assert_eq!(code(&range), 1);
        let producer = |e| ShardError::Storage {
            tp: "t-0".into(),
            source: StorageError::Producer(e),
        };
        let epoch = producer(ProducerError::InvalidEpoch {
            producer_id: 1,
            epoch: 0,
            current_epoch: 1,
        });
        assert_eq!(code(&epoch), 47);
        let gap = producer(ProducerError::OutOfOrderSequence {
            producer_id: 1,
            epoch: 0,
            sequence: 5,
            last_sequence: 2,
            current_epoch: 0,
        });
        assert_eq!(code(&gap), 45);
        let negative = producer(ProducerError::InvalidSequence {
            producer_id: 1,
            sequence: -1,
        });
        assert_eq!(code(&negative), 87);
        let fenced = producer(ProducerError::CoordinatorFenced {
            producer_id: 1,
            coordinator_epoch: 0,
            current_coordinator_epoch: 1,
        });
        assert_eq!(code(&fenced), 52);
        let control = ShardError::Storage {
            tp: "t-0".into(),
            source: StorageError::InvalidBatch(BatchError::ControlFromClient { attributes: 0x30 }),
        };
        assert_eq!(code(&control), 87);
    }
}
