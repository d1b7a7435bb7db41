//! What log compaction (`shard::compaction`) needs to know about Kafka records: which
//! partitions are compacted and with which settings, the keys of a stored batch, and how to
//! rebuild a batch with fewer records.
//!
//! A rebuilt batch keeps its header (base offset, last offset delta, timestamps, producer
//! fields, codec) and its surviving records byte for byte: their offset and timestamp deltas
//! are relative to the unchanged base, so each keeps its offset. Only the record count, the
//! length, the records (recompressed with the batch's codec) and the CRC change, as in Kafka.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use shard::compaction::{CompactionPolicy, Compactor, RecordKey};
use shard::TopicPartition;

use crate::metadata::MetaStore;
use crate::records::{compress, decompressed_records, split_records};

const HEADER_BYTES: usize = 61;
const ATTRIBUTE_CONTROL: i16 = 0x20;

/// The broker's `Compactor`: settings from the topic configs, keys from the records.
pub struct RecordCompactor {
    meta: Arc<MetaStore>,
}

impl RecordCompactor {
    pub fn new(meta: Arc<MetaStore>) -> RecordCompactor {
        RecordCompactor { meta }
    }
}

/// A 128-bit hash of a key: two SipHash runs with different prefixes. Kafka's cleaner keeps
/// 128-bit MD5s; a collision would drop a live record, so 64 bits are not enough.
fn key_hash(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

fn header(batch: &[u8]) -> Result<(i64, i16, i32), String> {
    if batch.len() < HEADER_BYTES {
        return Err(format!("batch of {} bytes has no header", batch.len()));
    }
    let base_offset = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    let count = i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes"));
    Ok((base_offset, attributes, count))
}

impl Compactor for RecordCompactor {
    fn policy(&self, tp: &TopicPartition) -> Option<CompactionPolicy> {
        let meta = self.meta.snapshot();
        let topic = meta.topics.get(&tp.topic)?;
        let effective = self.meta.effective(topic);
        effective.compacts().then(|| CompactionPolicy {
            delete_retention_ms: effective.delete_retention_ms(),
            min_cleanable_dirty_ratio: effective.min_cleanable_dirty_ratio(),
        })
    }

    fn records(&self, batch: &[u8], visit: &mut dyn FnMut(RecordKey)) -> Result<(), String> {
        let (base_offset, attributes, count) = header(batch)?;
        if attributes & ATTRIBUTE_CONTROL != 0 {
            return Ok(());
        }
        let records = decompressed_records(batch).map_err(|e| e.to_string())?;
        for r in split_records(&records, count).map_err(|e| e.to_string())? {
            visit(RecordKey {
                offset: (base_offset + r.offset_delta) as u64,
                key: r.key.map(key_hash),
                tombstone: r.value.is_none(),
            });
        }
        Ok(())
    }

    fn retain(&self, batch: &[u8], keep: &dyn Fn(u64) -> bool) -> Result<Option<Vec<u8>>, String> {
        let (base_offset, attributes, count) = header(batch)?;
        if attributes & ATTRIBUTE_CONTROL != 0 {
            return Ok(Some(batch.to_vec()));
        }
        let records = decompressed_records(batch).map_err(|e| e.to_string())?;
        let all = split_records(&records, count).map_err(|e| e.to_string())?;
        let kept: Vec<&[u8]> = all
            .iter()
            .filter(|r| keep((base_offset + r.offset_delta) as u64))
            .map(|r| r.raw)
            .collect();
        if kept.is_empty() {
            return Ok(None);
        }
        let body = compress(attributes & 0x07, &kept.concat()).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(&batch[..HEADER_BYTES]);
        out.extend_from_slice(&body);
        let length = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&length.to_be_bytes());
        out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
        let crc = iouring_storage::compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn compactor() -> RecordCompactor {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(dir.path(), 1, vec![]).unwrap();
        RecordCompactor::new(meta)
    }

    /// One batch of `records` (key, value) at base offset 100, with sequences set so that
    /// kafka-protocol writes a single batch.
    fn batch(records: &[(Option<&str>, Option<&str>)], compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 7,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: 100 + i as i64,
                sequence: i as i32,
                timestamp: 1000 + i as i64,
                key: k.map(|k| bytes::Bytes::copy_from_slice(k.as_bytes())),
                value: v.map(|v| bytes::Bytes::copy_from_slice(v.as_bytes())),
                headers: IndexMap::new(),
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(&mut out, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        out.to_vec()
    }

    #[test]
    fn keys_and_tombstones_are_listed_and_batches_rebuilt_with_every_codec() {
        let c = compactor();
        let input = [(Some("a"), Some("1")), (Some("b"), None), (None, Some("x")), (Some("a"), Some("2"))];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(&input, compression);
            let mut seen = Vec::new();
            c.records(&b, &mut |r| seen.push(r)).unwrap();
            let offsets: Vec<u64> = seen.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, vec![100, 101, 102, 103]);
            assert_eq!(seen[0].key, seen[3].key, "{compression:?}: one key, one hash");
            assert_ne!(seen[0].key, seen[1].key);
            assert_eq!(seen[2].key, None);
            assert!(seen[1].tombstone && !seen[0].tombstone);

            let rebuilt = c.retain(&b, &|o| o != 100 && o != 101).unwrap().unwrap();
            iouring_storage::validate(&rebuilt, 1 << 20, iouring_storage::CountCheck::AtMost).expect("a valid batch");
            let decoded = RecordBatchDecoder::decode(&mut bytes::Bytes::from(rebuilt)).unwrap();
            let kept: Vec<(i64, Option<String>)> = decoded
                .records
                .iter()
                .map(|r| (r.offset, r.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())))
                .collect();
            assert_eq!(kept, vec![(102, Some("x".into())), (103, Some("2".into()))], "{compression:?}");
            assert_eq!(decoded.records[0].producer_id, 7, "the header is kept");
            assert!(c.retain(&b, &|_| false).unwrap().is_none());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let c = compactor();
        let mut b = batch(&[(Some("k"), Some("v"))], Compression::None);
        b.truncate(b.len() - 2);
        assert!(c.records(&b, &mut |_| {}).is_err());
        assert!(c.records(&b[..10], &mut |_| {}).is_err());
        let mut lying = batch(&[(Some("k"), Some("v"))], Compression::None);
        lying[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(c.records(&lying, &mut |_| {}).is_err());
    }
}
