//! Committed offsets as records of `__consumer_offsets`, in Kafka's own format, and the
//! record batches that carry them.
//!
//! Key, version 1 (an offset commit), big-endian, strings as i16 length + UTF-8:
//!
//! ```text
//! version i16 (1) | group string | topic string | partition i32
//! ```
//!
//! Value, version 3; a null value (a tombstone) deletes the offset:
//!
//! ```text
//! version i16 (3) | offset i64 | leader epoch i32 | metadata string | commit timestamp i64
//! ```
//!
//! Keys of version 2 (group metadata) may appear in a log written by Kafka; they are skipped.
//! The batches that carry them are `internal::build_batch`'s.

use bytes::{BufMut, Bytes, BytesMut};

use crate::internal::Reader;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A record of `__consumer_offsets` this broker understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetRecord {
    Commit {
        group: String,
        topic: String,
        partition: i32,
        /// `None`: the offset was deleted.
        value: Option<Committed>,
    },
    /// An offset committed inside a transaction that has not ended (TxnOffsetCommit).
    Pending {
        group: String,
        topic: String,
        partition: i32,
        producer_id: i64,
        /// `None`: the transaction ended (its commit, if any, is a `Commit` record in the same batch).
        value: Option<Committed>,
    },
}

const KEY_VERSION_COMMIT: i16 = 1;
const KEY_VERSION_COMMIT_V0: i16 = 0;
const VALUE_VERSION: i16 = 3;
/// This broker's own key for a pending transactional offset, a version Kafka never writes
/// (Kafka writes such offsets as transactional batches): version i16 (100) | group string |
/// topic string | partition i32 | producer id i64, with a commit value (or null once ended).
const KEY_VERSION_PENDING: i16 = 100;

pub(crate) fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).expect("strings checked against i16 length");
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
}

/// The key and value of a commit (or tombstone) record.
pub fn encode(group: &str, topic: &str, partition: i32, value: Option<&Committed>) -> (Bytes, Option<Bytes>) {
    let mut key = BytesMut::with_capacity(8 + group.len() + topic.len());
    key.put_i16(KEY_VERSION_COMMIT);
    put_string(&mut key, group);
    put_string(&mut key, topic);
    key.put_i32(partition);
    (key.freeze(), encode_value(value))
}

/// The key and value of a pending transactional offset (or of its end, with `None`).
pub fn encode_pending(group: &str, topic: &str, partition: i32, producer_id: i64, value: Option<&Committed>) -> (Bytes, Option<Bytes>) {
    let mut key = BytesMut::with_capacity(16 + group.len() + topic.len());
    key.put_i16(KEY_VERSION_PENDING);
    put_string(&mut key, group);
    put_string(&mut key, topic);
    key.put_i32(partition);
    key.put_i64(producer_id);
    (key.freeze(), encode_value(value))
}

fn encode_value(value: Option<&Committed>) -> Option<Bytes> {
    value.map(|c| {
        let mut v = BytesMut::with_capacity(24 + c.metadata.len());
        v.put_i16(VALUE_VERSION);
        v.put_i64(c.offset);
        v.put_i32(c.leader_epoch);
        put_string(&mut v, &c.metadata);
        v.put_i64(c.commit_timestamp_ms);
        v.freeze()
    })
}

/// Decodes one record; `Ok(None)` for a key this broker does not use (group metadata).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<OffsetRecord>, String> {
    let mut k = Reader(key);
    let version = k.i16().ok_or("key too short")?;
    if version != KEY_VERSION_COMMIT && version != KEY_VERSION_COMMIT_V0 && version != KEY_VERSION_PENDING {
        return Ok(None);
    }
    let group = k.string().ok_or("bad group in key")?;
    let topic = k.string().ok_or("bad topic in key")?;
    let partition = k.i32().ok_or("bad partition in key")?;
    let producer_id = if version == KEY_VERSION_PENDING {
        Some(k.i64().ok_or("bad producer id in key")?)
    } else {
        None
    };
    let value = match value {
        None => None,
        Some(v) => {
            let mut r = Reader(v);
            let version = r.i16().ok_or("value too short")?;
            let offset = r.i64().ok_or("bad offset")?;
            // Version 3 added the leader epoch; versions 0-2 lack it.
            let leader_epoch = if version >= 3 { r.i32().ok_or("bad leader epoch")? } else { -1 };
            let metadata = r.string().ok_or("bad metadata")?;
            let commit_timestamp_ms = r.i64().ok_or("bad commit timestamp")?;
            Some(Committed {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
            })
        }
    };
    Ok(Some(match producer_id {
        None => OffsetRecord::Commit {
            group,
            topic,
            partition,
            value,
        },
        Some(producer_id) => OffsetRecord::Pending {
            group,
            topic,
            partition,
            producer_id,
            value,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internal::{build_batch, for_each_record};
    use proptest::prelude::*;

    #[test]
    fn batches_validate_and_round_trip() {
        let c = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let records = vec![encode("g", "t", 0, Some(&c)), encode("g", "t", 1, None)];
        let batch = build_batch(&records, 5);
        let header = iouring_storage::validate(&batch, 1 << 20, iouring_storage::CountCheck::Exact).expect("a valid batch");
        assert_eq!(header.records_count, 2);
        let mut seen = Vec::new();
        for_each_record(&batch, |_, k, v| seen.push(decode(k, v).unwrap().unwrap())).unwrap();
        assert_eq!(
            seen,
            vec![
                OffsetRecord::Commit {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 0,
                    value: Some(c)
                },
                OffsetRecord::Commit {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 1,
                    value: None
                },
            ]
        );
    }

    #[test]
    fn kafka_protocol_decodes_our_batches() {
        let records = vec![encode("group", "topic", 7, None)];
        let mut batch = build_batch(&records, 9);
        let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch).unwrap();
        assert_eq!(decoded.records.len(), 1);
        assert_eq!(decoded.records[0].key.as_deref(), Some(&records[0].0[..]));
        assert!(decoded.records[0].value.is_none());
    }

    #[test]
    fn pending_transactional_offsets_round_trip() {
        let c = Committed {
            offset: 9,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        };
        for value in [Some(c), None] {
            let (k, v) = encode_pending("g", "t", 3, 77, value.as_ref());
            assert_eq!(
                decode(&k, v.as_deref()).unwrap(),
                Some(OffsetRecord::Pending {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 3,
                    producer_id: 77,
                    value
                })
            );
        }
    }

    #[test]
    fn group_metadata_keys_are_skipped() {
        let mut key = BytesMut::new();
        key.put_i16(2);
        put_string(&mut key, "g");
        assert_eq!(decode(&key, Some(b"whatever")).unwrap(), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = for_each_record(&bytes, |_, k, v| { let _ = decode(k, v); });
            let _ = decode(&bytes, Some(&bytes));
        }

        #[test]
        fn commits_round_trip(group in "[a-z]{0,20}", topic in "[a-z]{1,20}", partition in any::<i32>(),
                              offset in any::<i64>(), epoch in any::<i32>(), metadata in ".{0,40}", ts in any::<i64>()) {
            let c = Committed { offset, leader_epoch: epoch, metadata, commit_timestamp_ms: ts };
            let (k, v) = encode(&group, &topic, partition, Some(&c));
            let back = decode(&k, v.as_deref()).unwrap().unwrap();
            prop_assert_eq!(back, OffsetRecord::Commit { group, topic, partition, value: Some(c) });
        }
    }
}
