//! Kafka record batch (format v2, magic 2) header: parsing and validation without decompression.
//!
//! The log stores batches byte for byte as producers sent them. Layout (big-endian, as on the wire):
//!
//! | bytes  | field                | covered by CRC |
//! |--------|----------------------|----------------|
//! | 0..8   | baseOffset i64       | no (the log stamps it) |
//! | 8..12  | batchLength i32      | no (bytes after this field) |
//! | 12..16 | partitionLeaderEpoch i32 | no (the log stamps it) |
//! | 16     | magic i8 = 2         | no |
//! | 17..21 | crc u32, CRC-32C (Castagnoli) of bytes 21.. | - |
//! | 21..23 | attributes i16       | yes |
//! | 23..27 | lastOffsetDelta i32  | yes |
//! | 27..35 | baseTimestamp i64    | yes |
//! | 35..43 | maxTimestamp i64     | yes |
//! | 43..51 | producerId i64       | yes |
//! | 51..53 | producerEpoch i16    | yes |
//! | 53..57 | baseSequence i32     | yes |
//! | 57..61 | recordsCount i32     | yes |
//! | 61..   | records (possibly compressed) | yes |
//!
//! Only this header is Kafka knowledge inside the storage crate, with one exception: the
//! transaction markers (control batches) that the log writes itself (`control_batch`) and
//! reads back when it rebuilds producer state (`parse_marker`). Client records are never
//! parsed here.
//!
//! A transaction marker is Kafka's control batch: attributes `0x30` (control and
//! transactional), the producer's id and epoch, base sequence -1, one uncompressed record:
//!
//! | bytes (after the 61-byte header) | field |
//! |-------|-------|
//! | 0     | record length, zigzag varint = 16 |
//! | 1     | record attributes i8 = 0 |
//! | 2     | timestamp delta, zigzag varlong = 0 |
//! | 3     | offset delta, zigzag varint = 0 |
//! | 4     | key length, zigzag varint = 4 |
//! | 5..9  | key: version i16 = 0, type i16 (0 abort, 1 commit) |
//! | 9     | value length, zigzag varint = 6 |
//! | 10..16| value: version i16 = 0, coordinator epoch i32 |
//! | 16    | header count, zigzag varint = 0 |

use crate::constants::{BATCH_CRC_START, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES};
use crate::error::BatchError;

/// Attribute bit of a transactional batch.
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;

/// Attribute bit of a control batch (a transaction marker, written only by the log).
pub const ATTRIBUTE_CONTROL: i16 = 0x20;

/// Control record type of an abort marker (Kafka's `ControlRecordType.ABORT`).
const MARKER_TYPE_ABORT: i16 = 0;

/// Control record type of a commit marker (`ControlRecordType.COMMIT`).
const MARKER_TYPE_COMMIT: i16 = 1;

/// What a transaction marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The fields of a batch header that the log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, header included (`batchLength` + 12).
    pub total_bytes: usize,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Parses the header from the start of `bytes`. Checks only that the header is present and
    /// that `batchLength` is plausible; it does not need the whole batch.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::TooShort {
                len: bytes.len(),
                min: BATCH_HEADER_BYTES,
            });
        }
        let batch_length = i64::from(be_i32(bytes, 8));
        let min_length = (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i64;
        if batch_length < min_length {
            return Err(BatchError::LengthMismatch {
                declared: batch_length,
                actual: bytes.len() - BATCH_LENGTH_PREFIX_BYTES,
            });
        }
        Ok(BatchHeader {
            base_offset: be_i64(bytes, 0),
            total_bytes: batch_length as usize + BATCH_LENGTH_PREFIX_BYTES,
            partition_leader_epoch: be_i32(bytes, 12),
            magic: bytes[16] as i8,
            crc: u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]),
            attributes: i16::from_be_bytes([bytes[21], bytes[22]]),
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp: be_i64(bytes, 27),
            max_timestamp: be_i64(bytes, 35),
            producer_id: be_i64(bytes, 43),
            producer_epoch: i16::from_be_bytes([bytes[51], bytes[52]]),
            base_sequence: be_i32(bytes, 53),
            records_count: be_i32(bytes, 57),
        })
    }
}

/// How strictly to check the record count of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountCheck {
    /// Producer batches: exactly `lastOffsetDelta + 1` records.
    Exact,
    /// Batches already in a log (recovery): compaction may have removed records, so only
    /// `0 <= recordsCount <= lastOffsetDelta + 1` and `lastOffsetDelta >= 0` are required.
    AtMost,
}

/// Validates one whole batch in `bytes` (exactly one batch, nothing after it): length, magic,
/// CRC-32C over the covered region and the record count. Does not decompress.
pub fn validate(bytes: &[u8], max_bytes: usize, count: CountCheck) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.total_bytes > max_bytes {
        return Err(BatchError::TooLarge {
            len: header.total_bytes,
            max: max_bytes,
        });
    }
    if header.total_bytes != bytes.len() {
        return Err(BatchError::LengthMismatch {
            declared: (header.total_bytes - BATCH_LENGTH_PREFIX_BYTES) as i64,
            actual: bytes.len() - BATCH_LENGTH_PREFIX_BYTES,
        });
    }
    if header.magic != 2 {
        return Err(BatchError::BadMagic { magic: header.magic });
    }
    let count_ok = match count {
        CountCheck::Exact => header.last_offset_delta >= 0 && i64::from(header.records_count) == i64::from(header.last_offset_delta) + 1,
        CountCheck::AtMost => {
            header.last_offset_delta >= 0
                && header.records_count >= 0
                && i64::from(header.records_count) <= i64::from(header.last_offset_delta) + 1
        }
    };
    if !count_ok {
        return Err(BatchError::CountMismatch {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let computed = crc32c::crc32c(&bytes[BATCH_CRC_START..]);
    if computed != header.crc {
        return Err(BatchError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// A transaction marker as Kafka writes one (format in the module documentation), base offset
/// 0 until the log stamps it.
pub fn control_batch(producer_id: i64, producer_epoch: i16, marker: Marker, timestamp: i64) -> Vec<u8> {
    let kind = if marker.commit { MARKER_TYPE_COMMIT } else { MARKER_TYPE_ABORT };
    let mut record = vec![32u8, 0, 0, 0, 8];
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&kind.to_be_bytes());
    record.push(12);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    record.push(0);
    let total = BATCH_HEADER_BYTES + record.len();
    let mut b = vec![0u8; BATCH_HEADER_BYTES];
    b[8..12].copy_from_slice(&((total - BATCH_LENGTH_PREFIX_BYTES) as i32).to_be_bytes());
    b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    b[16] = 2;
    b[21..23].copy_from_slice(&(ATTRIBUTE_CONTROL | ATTRIBUTE_TRANSACTIONAL).to_be_bytes());
    b[27..35].copy_from_slice(&timestamp.to_be_bytes());
    b[35..43].copy_from_slice(&timestamp.to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&record);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Reads a zigzag varint (at most 10 bytes) at `*at`, moving past it.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

/// The transaction marker in a whole control batch, or `None` when it is not one (another
/// control record type, such as KRaft's, or a malformed record). Reads the first record's key
/// and value only.
pub fn parse_marker(batch: &[u8]) -> Option<Marker> {
    let h = BatchHeader::parse(batch).ok()?;
    if !h.is_control() || h.records_count < 1 || batch.len() < h.total_bytes {
        return None;
    }
    let records = &batch[BATCH_HEADER_BYTES..h.total_bytes];
    let mut at = 0;
    let _length = read_varint(records, &mut at)?;
    at += 1; // record attributes
    let _timestamp_delta = read_varint(records, &mut at)?;
    let _offset_delta = read_varint(records, &mut at)?;
    // Kafka's key is version and type (4 bytes); a newer version may add fields after them.
    let key_len = usize::try_from(read_varint(records, &mut at)?).ok()?;
    if key_len < 4 {
        return None;
    }
    let key = records.get(at..at.checked_add(key_len)?)?;
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        MARKER_TYPE_ABORT => false,
        MARKER_TYPE_COMMIT => true,
        _ => return None,
    };
    at += key_len;
    let value_len = read_varint(records, &mut at)?;
    let coordinator_epoch = if value_len >= 6 {
        let v = records.get(at..at + 6)?;
        i32::from_be_bytes([v[2], v[3], v[4], v[5]])
    } else {
        -1
    };
    Some(Marker { commit, coordinator_epoch })
}

/// Writes the fields the log owns (base offset, partition leader epoch) into a batch. They lie
/// outside the CRC-covered region, so the batch stays valid.
pub fn stamp(bytes: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES, "stamp needs a whole batch header");
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
    bytes[12..16].copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// Computes the CRC-32C that a batch header should carry (over bytes 21..).
pub fn compute_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(&bytes[BATCH_CRC_START..])
}

fn be_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(b)
}

/// Builds valid v2 batches for tests and benchmarks. The records region is opaque filler: the
/// log never looks inside it.
pub mod testing {
    use super::*;

    /// A batch with `records_count` records, `payload_bytes` of record area, and the given
    /// timestamps. The base offset is 0 until the log stamps it.
    pub fn build_batch(records_count: i32, payload_bytes: usize, base_timestamp: i64, max_timestamp: i64) -> Vec<u8> {
        assert!(records_count >= 1);
        let total = BATCH_HEADER_BYTES + payload_bytes;
        let mut b = vec![0u8; total];
        b[8..12].copy_from_slice(&((total - BATCH_LENGTH_PREFIX_BYTES) as i32).to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(records_count - 1).to_be_bytes());
        b[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
        b[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[57..61].copy_from_slice(&records_count.to_be_bytes());
        for (i, byte) in b[BATCH_HEADER_BYTES..].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(31).wrapping_add(records_count as u8);
        }
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::testing::build_batch;
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    /// The oracle: a table-driven CRC-32C from a different crate than the one the log uses.
    fn oracle_crc(bytes: &[u8]) -> u32 {
        crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(bytes)
    }

    #[test]
    fn markers_round_trip_and_garbage_is_no_marker() {
        for (commit, coordinator_epoch) in [(true, 0), (false, 7), (true, i32::MAX), (false, -1)] {
            let m = Marker { commit, coordinator_epoch };
            let b = control_batch(42, 3, m, 1000);
            let h = validate(&b, MAX, CountCheck::Exact).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence, h.records_count), (42, 3, -1, 1));
            assert_eq!(b.len(), 78, "Kafka's marker batch is 78 bytes");
            assert_eq!(parse_marker(&b), Some(m));
            for n in 0..b.len() {
                let _ = parse_marker(&b[..n]);
            }
        }
        // Not a control batch, or another control record type: no marker.
        assert_eq!(parse_marker(&build_batch(1, 20, 0, 0)), None);
        let mut other = control_batch(
            1,
            0,
            Marker {
                commit: true,
                coordinator_epoch: 0,
            },
            0,
        );
        other[BATCH_HEADER_BYTES + 8] = 2;
        assert_eq!(parse_marker(&other), None);
    }

    proptest! {
        #[test]
        fn parse_marker_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut b = control_batch(1, 0, Marker { commit: false, coordinator_epoch: 0 }, 0);
            b.truncate(BATCH_HEADER_BYTES);
            b.extend_from_slice(&tail);
            let total = b.len() as i32 - BATCH_LENGTH_PREFIX_BYTES as i32;
            b[8..12].copy_from_slice(&total.to_be_bytes());
            let _ = parse_marker(&b);
        }
    }

    #[test]
    fn valid_batch_passes() {
        let b = build_batch(5, 100, 1000, 1004);
        let h = validate(&b, MAX, CountCheck::Exact).unwrap();
        assert_eq!(h.records_count, 5);
        assert_eq!(h.last_offset_delta, 4);
        assert_eq!(h.total_bytes, b.len());
        assert_eq!(h.max_timestamp, 1004);
    }

    #[test]
    fn crc_matches_the_oracle_on_a_known_vector() {
        // RFC 3720 B.4: CRC-32C of 32 zero bytes.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(oracle_crc(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn truncated_batches_are_refused() {
        let b = build_batch(3, 50, 0, 0);
        for cut in 0..b.len() {
            let err = validate(&b[..cut], MAX, CountCheck::Exact).unwrap_err();
            assert!(
                matches!(err, BatchError::TooShort { .. } | BatchError::LengthMismatch { .. }),
                "cut {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut b = build_batch(3, 50, 0, 0);
        b.push(0);
        assert!(matches!(
            validate(&b, MAX, CountCheck::Exact),
            Err(BatchError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn bad_magic_is_named() {
        let mut b = build_batch(1, 10, 0, 0);
        b[16] = 1;
        assert_eq!(validate(&b, MAX, CountCheck::Exact), Err(BatchError::BadMagic { magic: 1 }));
    }

    #[test]
    fn negative_or_tiny_length_is_refused() {
        let mut b = build_batch(1, 10, 0, 0);
        b[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate(&b, MAX, CountCheck::Exact),
            Err(BatchError::LengthMismatch { declared: -5, .. })
        ));
    }

    #[test]
    fn oversized_batch_is_refused_before_hashing() {
        let b = build_batch(1, 1000, 0, 0);
        assert!(matches!(validate(&b, 500, CountCheck::Exact), Err(BatchError::TooLarge { .. })));
    }

    #[test]
    fn count_mismatch_is_refused() {
        let mut b = build_batch(4, 10, 0, 0);
        b[57..61].copy_from_slice(&3i32.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate(&b, MAX, CountCheck::Exact),
            Err(BatchError::CountMismatch {
                records_count: 3,
                last_offset_delta: 3
            })
        );
        // Compaction may legitimately leave fewer records than the delta implies.
        assert!(validate(&b, MAX, CountCheck::AtMost).is_ok());
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut b = build_batch(2, 40, 0, 0);
        stamp(&mut b, 123_456, 7);
        let h = validate(&b, MAX, CountCheck::Exact).unwrap();
        assert_eq!(h.base_offset, 123_456);
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.last_offset(), 123_457);
    }

    proptest! {
        #[test]
        fn crc32c_agrees_with_oracle(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            prop_assert_eq!(crc32c::crc32c(&data), oracle_crc(&data));
        }

        #[test]
        fn any_single_byte_flip_in_the_covered_region_is_caught(
            payload in 0usize..300, pos_seed in any::<usize>(), flip in 1u8..=255
        ) {
            let mut b = build_batch(3, payload, 10, 20);
            let pos = BATCH_CRC_START + pos_seed % (b.len() - BATCH_CRC_START);
            b[pos] ^= flip;
            prop_assert!(validate(&b, MAX, CountCheck::Exact).is_err());
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = validate(&data, MAX, CountCheck::Exact);
            let _ = BatchHeader::parse(&data);
        }
    }
}
