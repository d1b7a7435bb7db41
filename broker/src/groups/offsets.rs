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
//! The batch is a v2 record batch without compression or producer id: the 61-byte header
//! (see `records.rs`), then each record as length varint, attributes i8 (0), timestamp delta
//! varlong, offset delta varint, key length varint and key, value length varint (-1: null) and
//! value, header count varint (0). Varints are zigzag LEB128.

use bytes::{BufMut, Bytes, BytesMut};

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
}

const KEY_VERSION_COMMIT: i16 = 1;
const KEY_VERSION_COMMIT_V0: i16 = 0;
const VALUE_VERSION: i16 = 3;
const HEADER_BYTES: usize = 61;

fn put_string(buf: &mut BytesMut, s: &str) {
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
    let value = value.map(|c| {
        let mut v = BytesMut::with_capacity(24 + c.metadata.len());
        v.put_i16(VALUE_VERSION);
        v.put_i64(c.offset);
        v.put_i32(c.leader_epoch);
        put_string(&mut v, &c.metadata);
        v.put_i64(c.commit_timestamp_ms);
        v.freeze()
    });
    (key.freeze(), value)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8).map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        self.take(len).and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned)
    }
    fn varint(&mut self) -> Option<i64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }
    /// A varint-length byte string; `Some(None)` for length -1.
    fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            n => Some(Some(self.take(usize::try_from(n).ok()?)?)),
        }
    }
}

/// Decodes one record; `Ok(None)` for a key this broker does not use (group metadata).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<OffsetRecord>, String> {
    let mut k = Reader(key);
    let version = k.i16().ok_or("key too short")?;
    if version != KEY_VERSION_COMMIT && version != KEY_VERSION_COMMIT_V0 {
        return Ok(None);
    }
    let group = k.string().ok_or("bad group in key")?;
    let topic = k.string().ok_or("bad topic in key")?;
    let partition = k.i32().ok_or("bad partition in key")?;
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
    Ok(Some(OffsetRecord::Commit {
        group,
        topic,
        partition,
        value,
    }))
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

/// One uncompressed v2 batch holding `records` (key, value), all stamped `timestamp_ms`.
pub fn build_batch(records: &[(Bytes, Option<Bytes>)], timestamp_ms: i64) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = BytesMut::new();
    for (delta, (key, value)) in records.iter().enumerate() {
        let mut r = BytesMut::with_capacity(16 + key.len() + value.as_ref().map_or(0, Bytes::len));
        r.put_i8(0);
        put_varint(&mut r, 0);
        put_varint(&mut r, delta as i64);
        put_varint(&mut r, key.len() as i64);
        r.put_slice(key);
        match value {
            Some(v) => {
                put_varint(&mut r, v.len() as i64);
                r.put_slice(v);
            }
            None => put_varint(&mut r, -1),
        }
        put_varint(&mut r, 0);
        put_varint(&mut body, r.len() as i64);
        body.put_slice(&r);
    }
    let mut b = BytesMut::with_capacity(HEADER_BYTES + body.len());
    b.put_i64(0);
    b.put_i32((HEADER_BYTES - 12 + body.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(0);
    b.put_i32(records.len() as i32 - 1);
    b.put_i64(timestamp_ms);
    b.put_i64(timestamp_ms);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(records.len() as i32);
    b.put_slice(&body);
    let crc = iouring_storage::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// Calls `each(batch base offset, key, value)` for every record of the batches in `bytes` (whole batches, as a
/// log read returns them). Only uncompressed batches are expected here, since only the
/// coordinator writes this topic; anything else is an error naming what is wrong.
pub fn for_each_record(mut bytes: &[u8], mut each: impl FnMut(i64, &[u8], Option<&[u8]>)) -> Result<(), String> {
    while bytes.len() >= HEADER_BYTES {
        let len = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let total = usize::try_from(len).map_err(|_| format!("batch length {len}"))? + 12;
        if total < HEADER_BYTES || total > bytes.len() {
            return Err(format!("batch of {total} bytes in {} left", bytes.len()));
        }
        let (batch, rest) = bytes.split_at(total);
        bytes = rest;
        let base_offset = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        if attributes & 0x07 != 0 {
            return Err(format!("compressed batch (attributes {attributes:#x})"));
        }
        if attributes & 0x20 != 0 {
            // A control batch (transaction marker) carries no offsets.
            continue;
        }
        let count = i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes"));
        let mut r = Reader(&batch[HEADER_BYTES..]);
        for _ in 0..count.max(0) {
            let len = r.varint().ok_or("bad record length")?;
            let record = r
                .take(usize::try_from(len).map_err(|_| "negative record length")?)
                .ok_or("record past batch end")?;
            let mut rec = Reader(record);
            rec.take(1).ok_or("record without attributes")?;
            rec.varint().ok_or("bad timestamp delta")?;
            rec.varint().ok_or("bad offset delta")?;
            let key = rec.bytes().ok_or("bad key")?.unwrap_or_default();
            let value = rec.bytes().ok_or("bad value")?;
            each(base_offset, key, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
