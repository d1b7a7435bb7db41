//! perf's own Kafka v2 record-batch builder, and a walker that reads values back out of fetched
//! batches.
//!
//! Why not kafka-protocol's `RecordBatchEncoder`: it writes one batch per record when records
//! carry sequence -1 (no idempotence), and it wants a `Record` struct with owned `Bytes` per
//! message. This builder appends records straight into one reused buffer.
//!
//! Batch layout (Kafka's `DefaultRecordBatch`, big-endian):
//!
//! | bytes | field |
//! |---:|---|
//! | 0..8 | base offset (0; the broker assigns) |
//! | 8..12 | batch length: bytes after this field |
//! | 12..16 | partition leader epoch (-1) |
//! | 16 | magic (2) |
//! | 17..21 | CRC-32C (Castagnoli) of bytes 21..end |
//! | 21..23 | attributes: compression in bits 0-2, create-time timestamps |
//! | 23..27 | last offset delta (records - 1) |
//! | 27..35 | first timestamp (ms) |
//! | 35..43 | max timestamp (ms) |
//! | 43..51 | producer id (-1) |
//! | 51..53 | producer epoch (-1) |
//! | 53..57 | base sequence (-1) |
//! | 57..61 | record count |
//! | 61.. | records, compressed as a whole if attributes say so |
//!
//! Record: length (varint), attributes (0), timestamp delta (varlong), offset delta (varint),
//! key length (varint, -1 for null) and key, value length (varint) and value, header count
//! (varint 0). Varints are zigzag-encoded, as in Kafka.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::RecordBatchDecoder;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Size of the batch header, up to and including the record count.
pub const HEADER_BYTES: usize = 61;

/// Where the bytes covered by the CRC start (the attributes).
const CRC_START: usize = 21;

/// A record's worst-case overhead besides key and value: five varints and the attributes byte.
pub const RECORD_OVERHEAD_BYTES_MAX: usize = 1 + 5 + 10 + 5 + 5 + 5 + 5;

/// The compression codec of a batch, as a workload names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec's number in the attributes field.
    pub fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Builds one record batch at a time. Records go in after room left for the header, so an
/// uncompressed batch is finished in place and handed out without a copy.
#[derive(Debug)]
pub struct BatchBuilder {
    compression: Compression,
    /// `HEADER_BYTES` of room for the header (once the first record is in), then the encoded
    /// records, uncompressed, appended as they come.
    buf: BytesMut,
    /// Bytes reserved when a batch starts, so that it does not grow by reallocation.
    capacity: usize,
    count: i32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchBuilder {
    pub fn new(compression: Compression) -> BatchBuilder {
        BatchBuilder::with_capacity(compression, 0)
    }

    /// A builder that reserves `capacity` bytes when a batch starts: a producer's batch size,
    /// or one record when that is larger. Grown by doubling instead, a 128 KiB batch was
    /// reallocated and copied a dozen times.
    pub fn with_capacity(compression: Compression, capacity: usize) -> BatchBuilder {
        BatchBuilder {
            compression,
            buf: BytesMut::new(),
            capacity,
            count: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
        }
    }

    /// Records appended since the last `finish`.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch's size if finished now without compression: the bound a producer's
    /// `batch_bytes` is checked against, as Kafka's producer does before compression ratios
    /// are known.
    pub fn uncompressed_bytes(&self) -> usize {
        if self.count == 0 {
            HEADER_BYTES
        } else {
            self.buf.len()
        }
    }

    /// Appends one record whose value is the concatenation of `value_parts`.
    pub fn append(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value_parts: &[&[u8]]) {
        if self.count == 0 {
            self.first_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
            self.buf.clear();
            self.buf.reserve(self.capacity.max(HEADER_BYTES));
            self.buf.put_bytes(0, HEADER_BYTES);
        }
        let value_len: usize = value_parts.iter().map(|p| p.len()).sum();
        let key_len = key.map_or(0, |k| k.len());
        // The body first into a small stack buffer for its length prefix: varints make the
        // length depend on the fields, so encode the fixed part, then measure.
        let mut head = [0u8; RECORD_OVERHEAD_BYTES_MAX];
        let mut h = &mut head[..];
        h.put_u8(0); // attributes
        put_varlong(&mut h, timestamp_ms - self.first_timestamp_ms);
        put_varint(&mut h, self.count);
        match key {
            Some(k) => put_varint(&mut h, k.len() as i32),
            None => put_varint(&mut h, -1),
        }
        let head_len = RECORD_OVERHEAD_BYTES_MAX - h.len();
        let mut value_head = [0u8; 5];
        let mut v = &mut value_head[..];
        put_varint(&mut v, value_len as i32);
        let value_head_len = 5 - v.len();
        // One header count byte (0) at the end.
        let body_len = head_len + key_len + value_head_len + value_len + 1;
        self.buf.reserve(body_len + 5);
        put_varint(&mut self.buf, body_len as i32);
        self.buf.extend_from_slice(&head[..head_len]);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        self.buf.extend_from_slice(&value_head[..value_head_len]);
        for p in value_parts {
            self.buf.extend_from_slice(p);
        }
        self.buf.put_u8(0);
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        self.count += 1;
    }

    /// The finished batch, or `None` for an empty builder; the next append starts a new one.
    /// Uncompressed, the header is written into the room left for it and the batch leaves
    /// without a copy; compressed, the records are compressed after a new header.
    pub fn finish(&mut self) -> Result<Option<Bytes>> {
        if self.count == 0 {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_BYTES];
        let mut h = &mut header[..];
        h.put_i64(0);
        h.put_i32(0); // length, filled below
        h.put_i32(-1);
        h.put_i8(2);
        h.put_u32(0); // CRC, filled below
        h.put_i16(self.compression.attribute());
        h.put_i32(self.count - 1);
        h.put_i64(self.first_timestamp_ms);
        h.put_i64(self.max_timestamp_ms);
        h.put_i64(-1);
        h.put_i16(-1);
        h.put_i32(-1);
        h.put_i32(self.count);
        let mut out = match self.compression {
            Compression::None => {
                let mut out = self.buf.split();
                out[..HEADER_BYTES].copy_from_slice(&header);
                out
            }
            Compression::Gzip => self.compressed::<Gzip>(&header)?,
            Compression::Snappy => self.compressed::<Snappy>(&header)?,
            Compression::Lz4 => self.compressed::<Lz4>(&header)?,
            Compression::Zstd => self.compressed::<Zstd>(&header)?,
        };
        let length = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        self.count = 0;
        Ok(Some(out.freeze()))
    }

    /// `header`, then the records compressed with `C`; the builder's buffer is emptied.
    fn compressed<C>(&mut self, header: &[u8]) -> Result<BytesMut>
    where
        C: Compressor<BytesMut, BufMut = BytesMut>,
    {
        let mut out = BytesMut::with_capacity(self.buf.len() / 2);
        out.extend_from_slice(header);
        let records = &self.buf[HEADER_BYTES..];
        // kafka-protocol's compressors take a closure that fills their input buffer.
        C::compress(&mut out, |b: &mut BytesMut| {
            b.extend_from_slice(records);
            Ok(())
        })
        .map_err(|e| Error::Batch(format!("compressing with {:?}: {e}", self.compression)))?;
        self.buf.clear();
        Ok(out)
    }
}

fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_uvarint(buf, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

fn put_varlong(buf: &mut impl BufMut, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// An unsigned varint: the zigzag varints of records, and the compact lengths and
/// tagged-field counts of flexible protocol versions.
pub(crate) fn put_uvarint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Reads a zigzag varint of at most `max_bytes`; `None` if truncated or too long.
fn get_varlong(buf: &mut &[u8], max_bytes: usize) -> Option<i64> {
    let mut z: u64 = 0;
    for i in 0..max_bytes {
        let b = *buf.first()?;
        buf.advance(1);
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

fn get_varint(buf: &mut &[u8]) -> Option<i64> {
    get_varlong(buf, 5)
}

/// What a walk over fetched record bytes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Walked {
    /// Records seen (control batches excluded).
    pub records: u64,
    /// Bytes of record values seen.
    pub value_bytes: u64,
    /// The offset after the last whole batch, if there was one.
    pub next_offset: Option<i64>,
}

/// Calls `on_value` with every record value in the whole batches of `data` (a fetch
/// response's records). A partial batch at the end (the broker cut at a byte limit) is ignored,
/// as Kafka consumers do. Compressed batches are decoded by kafka-protocol; uncompressed ones
/// are walked in place, without allocating.
pub fn walk_values(data: &Bytes, mut on_value: impl FnMut(&[u8])) -> Result<Walked> {
    let mut walked = Walked::default();
    let mut pos = 0usize;
    while data.len() - pos >= HEADER_BYTES {
        let b = &data[pos..];
        let length = i32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        if length < (HEADER_BYTES - 12) as i32 {
            return Err(Error::Batch(format!("batch length {length} below the header size")));
        }
        let total = 12 + length as usize;
        if total > b.len() {
            break;
        }
        let batch = &b[..total];
        if batch[16] != 2 {
            return Err(Error::Batch(format!("magic {} (only v2 batches are read)", batch[16])));
        }
        let base_offset = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes"));
        let count = i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes"));
        let control = attributes & 0x20 != 0;
        if !control {
            if attributes & 0x07 == 0 {
                let mut r = &batch[HEADER_BYTES..];
                for _ in 0..count {
                    let value =
                        record_value(&mut r).ok_or_else(|| Error::Batch(format!("record truncated in batch at offset {base_offset}")))?;
                    walked.value_bytes += value.len() as u64;
                    on_value(value);
                }
            } else {
                let mut whole = data.slice(pos..pos + total);
                let set = RecordBatchDecoder::decode(&mut whole)
                    .map_err(|e| Error::Batch(format!("decoding batch at offset {base_offset}: {e}")))?;
                for rec in &set.records {
                    let value = rec.value.as_deref().unwrap_or(&[]);
                    walked.value_bytes += value.len() as u64;
                    on_value(value);
                }
            }
            walked.records += count.max(0) as u64;
        }
        walked.next_offset = Some(base_offset + i64::from(last_delta) + 1);
        pos += total;
    }
    Ok(walked)
}

/// Reads one record from `r`, returning its value (empty for a null value).
fn record_value<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(get_varint(r)?).ok()?;
    if r.len() < len {
        return None;
    }
    let mut body = &r[..len];
    r.advance(len);
    body.get_u8_checked()?; // attributes
    get_varlong(&mut body, 10)?; // timestamp delta
    get_varint(&mut body)?; // offset delta
    let key_len = get_varint(&mut body)?;
    if key_len > 0 {
        let k = usize::try_from(key_len).ok()?;
        if body.len() < k {
            return None;
        }
        body.advance(k);
    }
    let value_len = get_varint(&mut body)?;
    if value_len <= 0 {
        return Some(&[]);
    }
    let v = usize::try_from(value_len).ok()?;
    body.get(..v)
}

trait GetChecked {
    fn get_u8_checked(&mut self) -> Option<u8>;
}

impl GetChecked for &[u8] {
    fn get_u8_checked(&mut self) -> Option<u8> {
        let b = *self.first()?;
        self.advance(1);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(compression: Compression, n: usize) -> Bytes {
        let mut b = BatchBuilder::new(compression);
        for i in 0..n {
            let key = format!("key-{i}");
            let stamp = (i as u64).to_be_bytes();
            b.append(
                1_700_000_000_000 + i as i64,
                (i % 2 == 0).then_some(key.as_bytes()),
                &[&stamp, b"payload"],
            );
        }
        let out = b.finish().unwrap().expect("a batch");
        assert!(b.is_empty(), "finish starts a new batch");
        assert_eq!(b.finish().unwrap(), None, "an empty builder finishes nothing");
        out
    }

    /// kafka-protocol's decoder is the oracle: it checks the CRC, the lengths and the records.
    #[test]
    fn kafka_protocol_decodes_what_the_builder_writes() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut bytes = build(compression, 100);
            let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(sets.len(), 1, "{compression:?}: one batch, not one per record");
            let records = &sets[0].records;
            assert_eq!(records.len(), 100);
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
                let want_key = (i % 2 == 0).then(|| Bytes::from(format!("key-{i}")));
                assert_eq!(r.key, want_key);
                let mut want = (i as u64).to_be_bytes().to_vec();
                want.extend_from_slice(b"payload");
                assert_eq!(r.value.as_deref(), Some(&want[..]));
                assert!(r.headers.is_empty());
            }
        }
    }

    #[test]
    fn the_crc_is_castagnoli_over_attributes_to_end() {
        let bytes = build(Compression::None, 3);
        let crc = u32::from_be_bytes(bytes[17..21].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&bytes[21..]));
        let length = i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(length + 12, bytes.len());
    }

    #[test]
    fn walk_reads_every_value_of_whole_batches_and_skips_a_partial_tail() {
        for compression in [Compression::None, Compression::Zstd] {
            let one = build(compression, 10);
            let mut data = BytesMut::new();
            data.extend_from_slice(&one);
            data.extend_from_slice(&one);
            data.extend_from_slice(&one[..one.len() - 1]); // cut by the broker's byte limit
            let mut stamps = Vec::new();
            let walked = walk_values(&data.freeze(), |v| stamps.push(u64::from_be_bytes(v[..8].try_into().unwrap()))).unwrap();
            assert_eq!(walked.records, 20, "{compression:?}");
            assert_eq!(stamps.len(), 20);
            assert_eq!(walked.value_bytes, 20 * 15);
            assert_eq!(&stamps[..10], &(0..10).collect::<Vec<u64>>()[..]);
            // Both batches say base offset 0 (the builder leaves offsets to the broker).
            assert_eq!(walked.next_offset, Some(10));
        }
    }

    #[test]
    fn walk_rejects_a_truncated_record_and_a_foreign_magic() {
        let one = build(Compression::None, 2);
        let mut bad = one.to_vec();
        // Claim a longer first record than the batch holds.
        bad[HEADER_BYTES] = 0x7e;
        assert!(walk_values(&Bytes::from(bad), |_| {}).is_err());
        let mut old = one.to_vec();
        old[16] = 1;
        let err = walk_values(&Bytes::from(old), |_| {}).unwrap_err();
        assert!(err.to_string().contains("magic 1"), "{err}");
        assert_eq!(walk_values(&Bytes::new(), |_| {}).unwrap(), Walked::default());
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0i64, 1, -1, 63, -64, 64, i32::MAX as i64, i32::MIN as i64, i64::MAX, i64::MIN] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            let mut r = &buf[..];
            assert_eq!(get_varlong(&mut r, 10), Some(v));
            assert!(r.is_empty());
        }
        let mut truncated: &[u8] = &[0x80, 0x80];
        assert_eq!(get_varlong(&mut truncated, 10), None);
    }
}
