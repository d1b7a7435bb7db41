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

use std::sync::Arc;

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

/// A payload at least this long is referenced by an uncompressed batch instead of copied into
/// it (`BatchBuilder::sharing`): the copy of each 1 KiB value into its batch was 18% of perf's
/// CPU samples at the fixed-rate workload (`perf record`, 2026-11-28). Shorter ones are copied,
/// as librdkafka copies messages below its `message.copy.max.bytes`: each referred payload adds
/// two pieces to the vectored send. Where the two costs cross was not measured; 512 bytes keeps
/// the workloads' 1 KiB values referred and the keyed workload's 100 B ones copied.
pub const SHARED_PAYLOAD_BYTES_MIN: usize = 512;

/// Bytes of a batch's own buffer per record when values end with the shared payload: the
/// record's overhead and a value head and key of up to 16 bytes (the buffer grows past it).
const OWN_BYTES_PER_SHARING_RECORD: usize = RECORD_OVERHEAD_BYTES_MAX + 16;

/// A payload that uncompressed batches refer to instead of copying it into every record, with
/// what a batch's CRC needs to cover it without reading it again.
#[derive(Debug, Clone)]
pub struct SharedPayload {
    bytes: Bytes,
    /// The CRC register (no inversions) after the payload, from a zero register.
    raw_crc: u32,
    /// The register after `bytes.len()` zero bytes, from each byte value at each of the
    /// register's four byte positions: a linear map, so the register after the payload from
    /// any register is four lookups and `raw_crc`.
    shift: Arc<[[u32; 256]; 4]>,
}

impl SharedPayload {
    pub fn new(bytes: Bytes) -> SharedPayload {
        let zeros = vec![0u8; bytes.len()];
        let through_zeros = |register: u32| !crc32c::crc32c_append(!register, &zeros);
        let bit: Vec<u32> = (0..32).map(|i| through_zeros(1 << i)).collect();
        let mut shift = [[0u32; 256]; 4];
        for (k, table) in shift.iter_mut().enumerate() {
            for (b, entry) in table.iter_mut().enumerate() {
                *entry = (0..8).filter(|j| b >> j & 1 == 1).fold(0, |acc, j| acc ^ bit[8 * k + j]);
            }
        }
        SharedPayload {
            raw_crc: !crc32c::crc32c_append(u32::MAX, &bytes),
            bytes,
            shift: Arc::new(shift),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `crc32c_append(crc, payload)`, without reading the payload.
    fn crc_append(&self, crc: u32) -> u32 {
        let r = !crc;
        let s = &self.shift;
        !(s[0][(r & 0xff) as usize]
            ^ s[1][(r >> 8 & 0xff) as usize]
            ^ s[2][(r >> 16 & 0xff) as usize]
            ^ s[3][(r >> 24) as usize]
            ^ self.raw_crc)
    }
}

/// A finished record batch: its own bytes, with a shared payload in each of its gaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    own: Bytes,
    /// Where in `own` the payload goes, ascending: every record whose value ends with it.
    gaps: Vec<u32>,
    payload: Bytes,
}

impl Batch {
    /// A batch whose bytes are all in `bytes`.
    pub fn whole(bytes: Bytes) -> Batch {
        Batch {
            own: bytes,
            gaps: Vec::new(),
            payload: Bytes::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.own.len() + self.gaps.len() * self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times the batch refers to its payload instead of holding a copy.
    pub fn shared_payloads(&self) -> usize {
        self.gaps.len()
    }

    /// How many slices `pieces` gives.
    pub fn pieces_len(&self) -> usize {
        2 * self.gaps.len() + 1
    }

    /// The batch's bytes in order, as slices for a vectored write.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut from = 0usize;
        let tail_from = self.gaps.last().map_or(0, |&g| g as usize);
        self.gaps
            .iter()
            .flat_map(move |&g| {
                let own = &self.own[from..g as usize];
                from = g as usize;
                [own, &self.payload[..]]
            })
            .chain(std::iter::once(&self.own[tail_from..]))
    }

    /// The batch's bytes in one buffer: its own, or a copy when it refers to a payload.
    pub fn to_bytes(&self) -> Bytes {
        if self.gaps.is_empty() {
            return self.own.clone();
        }
        let mut out = BytesMut::with_capacity(self.len());
        for p in self.pieces() {
            out.extend_from_slice(p);
        }
        out.freeze()
    }
}

/// Builds one record batch at a time. Records go in after room left for the header, so an
/// uncompressed batch is finished in place and handed out without a copy, and refers to the
/// builder's shared payload (`sharing`) where its values end with it.
#[derive(Debug)]
pub struct BatchBuilder {
    compression: Compression,
    /// `HEADER_BYTES` of room for the header (once the first record is in), then the encoded
    /// records, uncompressed, appended as they come, less each referenced payload.
    buf: BytesMut,
    /// Where in `buf` the shared payload goes (`Batch::gaps`).
    gaps: Vec<u32>,
    /// What `append_with_payload` ends each value with (`sharing`).
    payload: Option<SharedPayload>,
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
            gaps: Vec::new(),
            payload: None,
            capacity,
            count: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
        }
    }

    /// The builder with `payload` as the end of every value `append_with_payload` appends. An
    /// uncompressed batch refers to it when it is at least `SHARED_PAYLOAD_BYTES_MIN` long,
    /// else it is copied into each record.
    pub fn sharing(mut self, payload: SharedPayload) -> BatchBuilder {
        self.payload = Some(payload);
        self
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
            self.buf.len() + self.gaps.len() * self.payload_len()
        }
    }

    /// Appends one record whose value is the concatenation of `value_parts`.
    pub fn append(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value_parts: &[&[u8]]) {
        self.append_record(timestamp_ms, key, value_parts, false);
    }

    /// Appends one record whose value is `head` followed by the shared payload (`sharing`).
    pub fn append_with_payload(&mut self, timestamp_ms: i64, key: Option<&[u8]>, head: &[u8]) {
        self.append_record(timestamp_ms, key, &[head], true);
    }

    fn payload_len(&self) -> usize {
        self.payload.as_ref().map_or(0, SharedPayload::len)
    }

    fn refers_to_payload(&self) -> bool {
        self.compression == Compression::None && self.payload_len() >= SHARED_PAYLOAD_BYTES_MIN
    }

    fn append_record(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value_parts: &[&[u8]], with_payload: bool) {
        if self.count == 0 {
            self.first_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
            self.buf.clear();
            self.gaps.clear();
            let reserve = if self.refers_to_payload() {
                HEADER_BYTES + (self.capacity / self.payload_len() + 1) * OWN_BYTES_PER_SHARING_RECORD
            } else {
                self.capacity.max(HEADER_BYTES)
            };
            self.buf.reserve(reserve);
            self.buf.put_bytes(0, HEADER_BYTES);
        }
        let payload_len = if with_payload { self.payload_len() } else { 0 };
        let value_len: usize = value_parts.iter().map(|p| p.len()).sum::<usize>() + payload_len;
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
        let referred = self.refers_to_payload();
        self.buf.reserve(body_len - if referred { payload_len } else { 0 } + 5);
        put_varint(&mut self.buf, body_len as i32);
        self.buf.extend_from_slice(&head[..head_len]);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        self.buf.extend_from_slice(&value_head[..value_head_len]);
        for p in value_parts {
            self.buf.extend_from_slice(p);
        }
        if let Some(payload) = self.payload.as_ref().filter(|_| with_payload) {
            if referred {
                self.gaps.push(self.buf.len() as u32);
            } else {
                self.buf.extend_from_slice(&payload.bytes);
            }
        }
        self.buf.put_u8(0);
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        self.count += 1;
    }

    /// The finished batch, or `None` for an empty builder; the next append starts a new one.
    /// Uncompressed, the header is written into the room left for it and the batch leaves
    /// without a copy; compressed, the records are compressed after a new header.
    pub fn finish(&mut self) -> Result<Option<Batch>> {
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
        // A builder that copies its values allocates no gaps.
        let gaps = if self.gaps.is_empty() {
            Vec::new()
        } else {
            std::mem::replace(&mut self.gaps, Vec::with_capacity(self.count as usize))
        };
        let length = (out.len() + gaps.len() * self.payload_len() - 12) as i32;
        out[8..12].copy_from_slice(&length.to_be_bytes());
        let mut crc = 0;
        let mut from = CRC_START;
        if let Some(payload) = &self.payload {
            for &g in &gaps {
                crc = crc32c::crc32c_append(crc, &out[from..g as usize]);
                crc = payload.crc_append(crc);
                from = g as usize;
            }
        }
        crc = crc32c::crc32c_append(crc, &out[from..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        self.count = 0;
        let payload = match &self.payload {
            Some(p) if !gaps.is_empty() => p.bytes.clone(),
            _ => Bytes::new(),
        };
        Ok(Some(Batch {
            own: out.freeze(),
            gaps,
            payload,
        }))
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
        assert_eq!(out.shared_payloads(), 0);
        out.to_bytes()
    }

    /// The register arithmetic gives what reading the payload gives, from any CRC.
    #[test]
    fn a_shared_payloads_crc_step_is_crc32c_append() {
        for len in [1, 7, 512, 1016, 4096] {
            let bytes = Bytes::from((0..len).map(|i| (i * 13 + 5) as u8).collect::<Vec<u8>>());
            let shared = SharedPayload::new(bytes.clone());
            for crc in [0, 1, 0xdead_beef, u32::MAX, crc32c::crc32c(b"attributes")] {
                assert_eq!(
                    shared.crc_append(crc),
                    crc32c::crc32c_append(crc, &bytes),
                    "{len} bytes from {crc:#x}"
                );
            }
        }
    }

    /// A batch that refers to the shared payload has the bytes, CRC and lengths included, of
    /// one that copies it into every record, batch after batch; a short payload or a compressed
    /// batch copies it.
    #[test]
    fn a_referred_payload_gives_the_bytes_of_a_copied_one() {
        let payload = Bytes::from((0..1016).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
        for (compression, len, referred) in [
            (Compression::None, 1016, true),
            (Compression::None, SHARED_PAYLOAD_BYTES_MIN, true),
            (Compression::None, SHARED_PAYLOAD_BYTES_MIN - 1, false),
            (Compression::Lz4, 1016, false),
        ] {
            let payload = payload.slice(..len);
            let mut sharing = BatchBuilder::with_capacity(compression, 16 * 1024).sharing(SharedPayload::new(payload.clone()));
            let mut copying = BatchBuilder::with_capacity(compression, 16 * 1024);
            for round in 0..2 {
                for i in 0..40 {
                    let key = format!("key-{i}");
                    let key = (i % 3 == 0).then_some(key.as_bytes());
                    let stamp = (i as u64 + round * 1000).to_be_bytes();
                    let at = 1_700_000_000_000 + i as i64;
                    sharing.append_with_payload(at, key, &stamp);
                    copying.append(at, key, &[&stamp, &payload]);
                    assert_eq!(sharing.uncompressed_bytes(), copying.uncompressed_bytes());
                }
                let s = sharing.finish().unwrap().expect("a batch");
                let c = copying.finish().unwrap().expect("a batch");
                let what = format!("{compression:?}, {len} B, batch {round}");
                assert_eq!(s.shared_payloads(), if referred { 40 } else { 0 }, "{what}");
                assert_eq!(s.len(), c.len(), "{what}");
                assert_eq!(s.pieces().map(<[u8]>::len).sum::<usize>(), s.len(), "{what}");
                assert_eq!(s.pieces().count(), s.pieces_len(), "{what}");
                assert_eq!(s.to_bytes(), c.to_bytes(), "{what}");
                let mut bytes = s.to_bytes();
                let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
                let values: Vec<_> = sets[0].records.iter().map(|r| r.value.clone().unwrap()).collect();
                assert_eq!(values.len(), 40);
                assert_eq!(&values[39][8..], &payload[..], "{what}");
            }
        }
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
