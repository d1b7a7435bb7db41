//! Looking inside a v2 record batch without trusting it: the first record at or after a
//! timestamp, for ListOffsets.
//!
//! A batch that passed the CRC check at Produce is intact, not benign: its records were written
//! by a client. kafka-protocol's `RecordBatchDecoder` sizes collections from counts found in the
//! data (one record declaring 2^31 - 1 headers made it fill 4 GiB of hash-table control bytes)
//! and inflates a compressed batch whole into memory (a 33 KiB zstd stream of RLE blocks holds
//! 1 GiB). So this walks the records itself, streaming: it keeps no record, allocates nothing
//! that a count in the data sizes, stops at the first match, and reads at most
//! `SCAN_BYTES_MAX` decompressed bytes.
//!
//! The batch header (all big-endian), as `iouring_storage::BatchHeader` reads it:
//!
//! ```text
//! 0  base offset i64      8  batch length i32     12 partition leader epoch i32
//! 16 magic i8 (2)         17 CRC-32C u32          21 attributes i16
//! 23 last offset delta i32                        27 base timestamp i64
//! 35 max timestamp i64    43 producer id i64      51 producer epoch i16
//! 53 base sequence i32    57 records count i32    61 records
//! ```
//!
//! Attributes: bits 0-2 compression (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), bit 3 the
//! timestamp type (1: LogAppendTime, every record's timestamp is the max timestamp). Each
//! record: length varint, attributes i8, timestamp delta varlong, offset delta varint, then key,
//! value and headers, which this skips. Varints are zigzag LEB128.

use std::io::{self, Read};

/// Most decompressed bytes one lookup reads. A legitimate batch is at most `max.message.bytes`
/// (1 MiB by default) compressed; 64 MiB leaves room for any honest compression ratio. Past it
/// the caller answers at batch granularity.
pub const SCAN_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Largest zstd window accepted (2^24 = 16 MiB): the decoder allocates the window the stream
/// asks for, up to zstd's default limit of 128 MiB. Producers use 2^21 or less.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

const HEADER_BYTES: usize = 61;
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;

/// The (offset, timestamp) of the first record in `batch` whose timestamp is at or after
/// `timestamp`, or `None` if no record is. An error means the batch could not be walked within
/// the bounds (malformed, unknown compression, or more than `SCAN_BYTES_MAX`).
pub fn first_at_or_after(batch: &[u8], timestamp: i64) -> io::Result<Option<(i64, i64)>> {
    if batch.len() < HEADER_BYTES {
        return Err(invalid(format!("batch of {} bytes has no header", batch.len())));
    }
    if batch[16] != 2 {
        return Err(invalid(format!("magic {} is not 2", batch[16] as i8)));
    }
    let base_offset = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    let base_timestamp = i64::from_be_bytes(batch[27..35].try_into().expect("8 bytes"));
    let max_timestamp = i64::from_be_bytes(batch[35..43].try_into().expect("8 bytes"));
    let count = i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes"));
    let log_append_time = attributes & ATTRIBUTE_LOG_APPEND_TIME != 0;
    // Buffered: the walk reads a byte at a time, which a decompressor does not do cheaply.
    let mut input = io::BufReader::new(decompressor(batch)?).take(SCAN_BYTES_MAX);
    for _ in 0..count.max(0) {
        let len = varint(&mut input)?;
        let len = u64::try_from(len).map_err(|_| invalid(format!("record length {len}")))?;
        let mut record = (&mut input).take(len);
        let _attributes = read_u8(&mut record)?;
        let timestamp_delta = varint(&mut record)?;
        let offset_delta = varint(&mut record)?;
        let record_timestamp = if log_append_time {
            max_timestamp
        } else {
            base_timestamp.wrapping_add(timestamp_delta)
        };
        if record_timestamp >= timestamp {
            return Ok(Some((base_offset.wrapping_add(offset_delta), record_timestamp)));
        }
        let left = record.limit();
        if io::copy(&mut record, &mut io::sink())? != left {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(None)
}

/// The records of a batch (after its 61-byte header), decompressed as they are read.
fn decompressor(batch: &[u8]) -> io::Result<Box<dyn Read + '_>> {
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    let records = &batch[HEADER_BYTES..];
    Ok(match attributes & 0x07 {
        0 => Box::new(records),
        1 => Box::new(flate2::read::GzDecoder::new(records)),
        2 => Box::new(SnappyReader::new(records)),
        3 => Box::new(lz4::Decoder::new(records)?),
        4 => {
            let mut d = zstd::stream::read::Decoder::new(records)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
        other => return Err(invalid(format!("unknown compression {other}"))),
    })
}

/// One record of a batch, borrowed from its decompressed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The whole record as stored: length varint, attributes, deltas, key, value, headers.
    pub raw: &'a [u8],
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// A batch's records, decompressed whole, at most `SCAN_BYTES_MAX` bytes (more is an error):
/// for background work (compaction) that needs every record's bytes, one batch at a time.
pub fn decompressed_records(batch: &[u8]) -> io::Result<Vec<u8>> {
    if batch.len() < HEADER_BYTES {
        return Err(invalid(format!("batch of {} bytes has no header", batch.len())));
    }
    if batch[16] != 2 {
        return Err(invalid(format!("magic {} is not 2", batch[16] as i8)));
    }
    let mut out = Vec::new();
    decompressor(batch)?.take(SCAN_BYTES_MAX + 1).read_to_end(&mut out)?;
    if out.len() as u64 > SCAN_BYTES_MAX {
        return Err(invalid(format!("records inflate beyond {SCAN_BYTES_MAX} bytes")));
    }
    Ok(out)
}

/// Splits decompressed records into `count` records; an error if they do not parse exactly.
pub fn split_records(mut records: &[u8], count: i32) -> io::Result<Vec<RecordRef<'_>>> {
    // The count is checked against the bytes, not trusted to size anything: each record takes
    // at least 7 bytes.
    if count < 0 || count as usize > records.len() / 7 + 1 {
        return Err(invalid(format!("{count} records cannot fit in {} bytes", records.len())));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let whole = records;
        let len = varint(&mut records)?;
        let len = usize::try_from(len).map_err(|_| invalid(format!("record length {len}")))?;
        let header_len = whole.len() - records.len();
        if len > records.len() {
            return Err(invalid(format!("record of {len} bytes with {} left", records.len())));
        }
        let (mut body, rest) = records.split_at(len);
        records = rest;
        let raw = &whole[..header_len + len];
        let _attributes = read_u8(&mut body)?;
        let _timestamp_delta = varint(&mut body)?;
        let offset_delta = varint(&mut body)?;
        let key = bytes_field(&mut body)?;
        let value = bytes_field(&mut body)?;
        out.push(RecordRef {
            raw,
            offset_delta,
            key,
            value,
        });
    }
    if !records.is_empty() {
        return Err(invalid(format!("{} bytes after the last record", records.len())));
    }
    Ok(out)
}

/// A varint-length byte string of a record; `None` for length -1.
fn bytes_field<'a>(body: &mut &'a [u8]) -> io::Result<Option<&'a [u8]>> {
    let len = varint(body)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| invalid(format!("field length {len}")))?;
    if len > body.len() {
        return Err(invalid(format!("field of {len} bytes with {} left", body.len())));
    }
    let (field, rest) = body.split_at(len);
    *body = rest;
    Ok(Some(field))
}

/// Compresses records with a batch's codec (attributes bits 0-2) as Kafka's clients do:
/// gzip, snappy in xerial framing, LZ4 frames, zstd.
pub fn compress(codec: i16, records: &[u8]) -> io::Result<Vec<u8>> {
    use std::io::Write;
    match codec {
        0 => Ok(records.to_vec()),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(records)?;
            e.finish()
        }
        2 => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in records.chunks(SNAPPY_BLOCK_BYTES) {
                let compressed = encoder.compress_vec(block).map_err(|e| invalid(e.to_string()))?;
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new())?;
            e.write_all(records)?;
            let (out, result) = e.finish();
            result.map(|()| out)
        }
        4 => zstd::bulk::compress(records, 3),
        other => Err(invalid(format!("unknown compression {other}"))),
    }
}

/// Block size of snappy's xerial framing, as the Java client writes it.
const SNAPPY_BLOCK_BYTES: usize = 32 * 1024;

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

/// A zigzag LEB128 varint or varlong, at most 10 bytes.
fn varint(r: &mut impl Read) -> io::Result<i64> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = read_u8(r)?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err(invalid("varint longer than 10 bytes".to_owned()))
}

/// Kafka's snappy: xerial framing (a 16-byte magic header, then blocks of a big-endian u32
/// length and a raw snappy block), or, without the magic, one raw snappy block. Inflates one
/// block at a time, each at most `SCAN_BYTES_MAX`.
struct SnappyReader<'a> {
    input: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    at: usize,
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        let framed = input.len() >= XERIAL_HEADER_BYTES && input.starts_with(XERIAL_MAGIC);
        let input = if framed { &input[XERIAL_HEADER_BYTES..] } else { input };
        SnappyReader {
            input,
            framed,
            block: Vec::new(),
            at: 0,
        }
    }

    /// Inflates the next block into `self.block`; false at the end of the input.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.input.is_empty() {
            return Ok(false);
        }
        let compressed = if self.framed {
            if self.input.len() < 4 {
                return Err(invalid("truncated snappy block length".to_owned()));
            }
            let len = u32::from_be_bytes(self.input[..4].try_into().expect("4 bytes")) as usize;
            let rest = &self.input[4..];
            if rest.len() < len {
                return Err(invalid("truncated snappy block".to_owned()));
            }
            self.input = &rest[len..];
            &rest[..len]
        } else {
            std::mem::take(&mut self.input)
        };
        let len = snap::raw::decompress_len(compressed).map_err(|e| invalid(e.to_string()))?;
        if len as u64 > SCAN_BYTES_MAX {
            return Err(invalid(format!("snappy block of {len} bytes")));
        }
        self.block.resize(len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|e| invalid(e.to_string()))?;
        self.at = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    use proptest::prelude::*;

    fn batch(timestamps: &[i64], compression: Compression, timestamp_type: TimestampType) -> Bytes {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, &t)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type,
                offset: 100 + i as i64,
                // kafka-protocol starts a new batch where offset - sequence changes.
                sequence: i as i32,
                timestamp: t,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![i as u8; 300])),
                headers: IndexMap::from([(
                    kafka_protocol::protocol::StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"v")),
                )]),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.freeze()
    }

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn finds_the_first_record_at_or_after_in_every_compression() {
        // Not in timestamp order: the first match in offset order wins, as in Kafka.
        let ts = [10, 30, 20, 40];
        for c in ALL {
            let b = batch(&ts, c, TimestampType::Creation);
            assert_eq!(first_at_or_after(&b, 5).unwrap(), Some((100, 10)), "{c:?}");
            assert_eq!(first_at_or_after(&b, 10).unwrap(), Some((100, 10)), "{c:?}");
            assert_eq!(first_at_or_after(&b, 11).unwrap(), Some((101, 30)), "{c:?}");
            assert_eq!(first_at_or_after(&b, 31).unwrap(), Some((103, 40)), "{c:?}");
            assert_eq!(first_at_or_after(&b, 41).unwrap(), None, "{c:?}");
        }
    }

    #[test]
    fn log_append_time_uses_the_max_timestamp() {
        let mut b = batch(&[10, 20], Compression::None, TimestampType::Creation).to_vec();
        let attributes = i16::from_be_bytes([b[21], b[22]]) | ATTRIBUTE_LOG_APPEND_TIME;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[35..43].copy_from_slice(&500i64.to_be_bytes());
        assert_eq!(first_at_or_after(&b, 400).unwrap(), Some((100, 500)));
        assert_eq!(first_at_or_after(&b, 501).unwrap(), None);
    }

    fn zigzag_varint(v: i64, out: &mut Vec<u8>) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push(z as u8 | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    /// A batch header (base offset 100, base timestamp 1000) around `records` as given.
    fn raw_batch(attributes: i16, count: i32, records: &[u8]) -> Vec<u8> {
        let mut b = batch(&[1000], Compression::None, TimestampType::Creation)[..HEADER_BYTES].to_vec();
        b[0..8].copy_from_slice(&100i64.to_be_bytes());
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[27..35].copy_from_slice(&1000i64.to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        b.extend_from_slice(records);
        b
    }

    #[test]
    fn a_record_declaring_2_31_headers_costs_nothing() {
        // Record 0 (timestamp 1000) declares i32::MAX headers and holds none; record 1 (1010)
        // follows. The walk skips record 0 by its length and never reads the count.
        let mut records = Vec::new();
        for (ts_delta, offset_delta, headers) in [(0i64, 0i64, i64::from(i32::MAX)), (10, 1, 0)] {
            let mut r = vec![0u8];
            zigzag_varint(ts_delta, &mut r);
            zigzag_varint(offset_delta, &mut r);
            zigzag_varint(-1, &mut r); // null key
            zigzag_varint(-1, &mut r); // null value
            zigzag_varint(headers, &mut r);
            zigzag_varint(r.len() as i64, &mut records);
            records.extend_from_slice(&r);
        }
        let b = raw_batch(0, 2, &records);
        assert_eq!(first_at_or_after(&b, 1005).unwrap(), Some((101, 1010)));
    }

    #[test]
    fn a_compression_bomb_stops_at_the_scan_limit() {
        // zstd RLE blocks: 4 bytes for each 128 KiB, 1024 of them for 128 MiB of 0x7e. As
        // records, 0x7e repeated is length 63, timestamp delta 63, offset delta 63, and 60
        // bytes of filler: well formed, never at or after the target, i32::MAX of them
        // declared. The walk stops at SCAN_BYTES_MAX.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
        for i in 0..1024u32 {
            let header: u32 = (128 * 1024) << 3 | 1 << 1 | u32::from(i == 1023);
            frame.extend_from_slice(&header.to_le_bytes()[..3]);
            frame.push(0x7e);
        }
        let b = raw_batch(4, i32::MAX, &frame);
        let e = first_at_or_after(&b, 2000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        // The same stream, asked for an early timestamp, answers with its first record.
        assert_eq!(first_at_or_after(&b, 0).unwrap(), Some((163, 1063)));
    }

    #[test]
    fn truncated_and_unknown_batches_are_errors() {
        let b = batch(&[10, 20], Compression::Zstd, TimestampType::Creation);
        assert!(first_at_or_after(&b[..60], 0).is_err());
        assert!(first_at_or_after(&b[..70], 15).is_err());
        let mut unknown = b.to_vec();
        unknown[22] |= 0x07;
        assert!(first_at_or_after(&unknown, 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// On valid batches the walk answers what kafka-protocol's full decoder answers.
        #[test]
        fn agrees_with_the_full_decoder(
            timestamps in prop::collection::vec(-1000i64..1000, 1..20),
            codec in 0usize..5,
            target in -1100i64..1100,
        ) {
            let b = batch(&timestamps, ALL[codec], TimestampType::Creation);
            let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut b.clone()).unwrap();
            let expected = decoded.records.iter().find(|r| r.timestamp >= target).map(|r| (r.offset, r.timestamp));
            prop_assert_eq!(first_at_or_after(&b, target).unwrap(), expected);
        }

        /// Mutated batches of every compression: an answer or an error, never a panic.
        #[test]
        fn mutated_batches_never_panic(
            codec in 0usize..5,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            target in any::<i64>(),
        ) {
            let mut b = batch(&[10, 20, 30], ALL[codec], TimestampType::Creation).to_vec();
            for (at, byte) in edits {
                let i = at.index(b.len());
                b[i] = byte;
            }
            b.truncate(HEADER_BYTES.max(cut.index(b.len() + 1)));
            let _ = first_at_or_after(&b, target);
        }
    }
}
