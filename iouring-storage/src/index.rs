//! Sparse offset and time indexes of one segment, in memory and on disk.
//!
//! An entry is added before the first batch that starts at least `index_interval_bytes` after
//! the previous entry; position 0 is the implicit first entry. Both indexes share these points.
//!
//! On disk (little-endian), `.index` and `.timeindex` each hold a 48-byte header then entries:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | magic: `KOIX` (offset index) or `KTIX` (time index) |
//! | 4..6   | format version u16 = 1 |
//! | 6..8   | entry size u16: 8 for `.index`, 12 for `.timeindex` |
//! | 8..12  | entry count u32 |
//! | 12..16 | CRC-32C u32 of bytes 16..end of the last entry |
//! | 16..24 | segment data bytes u64 the index describes (must equal the `.log` size) |
//! | 24..32 | next offset u64 after the segment's last batch |
//! | 32..40 | largest batch max timestamp i64 in the segment (i64::MIN if none) |
//! | 40..48 | reserved, zero |
//!
//! `.index` entry: relative offset u32, position u32. `.timeindex` entry: timestamp i64 (largest
//! max timestamp of all batches before the point), relative offset u32 of the point.
//! The file may be padded with zeros past the last entry to the device alignment.

use crate::constants::INDEX_ENTRIES_MAX;

pub(crate) const INDEX_HEADER_BYTES: usize = 48;
const OFFSET_MAGIC: &[u8; 4] = b"KOIX";
const TIME_MAGIC: &[u8; 4] = b"KTIX";
const FORMAT_VERSION: u16 = 1;
const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// What a sealed segment's index records about the segment as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub data_bytes: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
}

/// One segment's sparse indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    interval_bytes: u32,
    bytes_since_entry: u64,
    /// (relative offset of the batch base, byte position of the batch).
    offsets: Vec<(u32, u32)>,
    /// (largest max timestamp of all batches before the point, relative offset of the point).
    times: Vec<(i64, u32)>,
    max_timestamp: i64,
}

impl SegmentIndex {
    pub fn new(interval_bytes: u32) -> Self {
        SegmentIndex {
            interval_bytes,
            bytes_since_entry: 0,
            offsets: Vec::new(),
            times: Vec::new(),
            max_timestamp: i64::MIN,
        }
    }

    /// Records a batch appended at `position` with base offset `relative_offset` (from the
    /// segment base).
    pub fn on_batch(&mut self, relative_offset: u32, position: u32, batch_bytes: u32, max_timestamp: i64) {
        if self.bytes_since_entry >= u64::from(self.interval_bytes) && position > 0 && self.offsets.len() < INDEX_ENTRIES_MAX {
            assert!(
                self.offsets.last().is_none_or(|&(r, p)| r < relative_offset && p < position),
                "index entries must grow"
            );
            self.offsets.push((relative_offset, position));
            if self.times.last().is_none_or(|&(t, _)| self.max_timestamp > t) {
                self.times.push((self.max_timestamp, relative_offset));
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(batch_bytes);
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// The indexed point at or before `relative_offset`: (relative offset, position).
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        let i = self.offsets.partition_point(|&(r, _)| r <= relative_offset);
        if i == 0 {
            (0, 0)
        } else {
            self.offsets[i - 1]
        }
    }

    /// The latest point before which every batch has a max timestamp below `timestamp`:
    /// (relative offset, position). A scan for the first batch at or after `timestamp` starts there.
    pub fn lookup_time(&self, timestamp: i64) -> (u32, u32) {
        let i = self.times.partition_point(|&(t, _)| t < timestamp);
        if i == 0 {
            return (0, 0);
        }
        let relative = self.times[i - 1].1;
        let j = self.offsets.partition_point(|&(r, _)| r < relative);
        assert!(
            j < self.offsets.len() && self.offsets[j].0 == relative,
            "time index points at offset index points"
        );
        self.offsets[j]
    }

    /// Position of the last index point (0 if none).
    pub(crate) fn last_point(&self) -> (u32, u32) {
        self.offsets.last().copied().unwrap_or((0, 0))
    }

    #[cfg(test)]
    pub(crate) fn entry_count(&self) -> usize {
        self.offsets.len()
    }

    /// Encodes `.index` and `.timeindex` contents.
    pub(crate) fn encode(&self, summary: SegmentSummary) -> (Vec<u8>, Vec<u8>) {
        let mut offsets = Vec::with_capacity(INDEX_HEADER_BYTES + self.offsets.len() * OFFSET_ENTRY_BYTES);
        let mut times = Vec::with_capacity(INDEX_HEADER_BYTES + self.times.len() * TIME_ENTRY_BYTES);
        write_header(&mut offsets, OFFSET_MAGIC, OFFSET_ENTRY_BYTES, self.offsets.len(), summary);
        for &(r, p) in &self.offsets {
            offsets.extend_from_slice(&r.to_le_bytes());
            offsets.extend_from_slice(&p.to_le_bytes());
        }
        seal_crc(&mut offsets);
        write_header(&mut times, TIME_MAGIC, TIME_ENTRY_BYTES, self.times.len(), summary);
        for &(t, r) in &self.times {
            times.extend_from_slice(&t.to_le_bytes());
            times.extend_from_slice(&r.to_le_bytes());
        }
        seal_crc(&mut times);
        (offsets, times)
    }

    /// Decodes both files; any inconsistency is an error naming it, so the caller rebuilds.
    pub(crate) fn decode(interval_bytes: u32, offsets: &[u8], times: &[u8]) -> Result<(SegmentIndex, SegmentSummary), String> {
        let (n_off, summary) = read_header(offsets, OFFSET_MAGIC, OFFSET_ENTRY_BYTES)?;
        let (n_time, time_summary) = read_header(times, TIME_MAGIC, TIME_ENTRY_BYTES)?;
        if summary != time_summary {
            return Err("offset and time index describe different segment states".into());
        }
        let mut index = SegmentIndex::new(interval_bytes);
        for e in offsets[INDEX_HEADER_BYTES..INDEX_HEADER_BYTES + n_off * OFFSET_ENTRY_BYTES].chunks_exact(OFFSET_ENTRY_BYTES) {
            let r = u32::from_le_bytes(e[0..4].try_into().expect("4 bytes"));
            let p = u32::from_le_bytes(e[4..8].try_into().expect("4 bytes"));
            if index.offsets.last().is_some_and(|&(lr, lp)| lr >= r || lp >= p) || u64::from(p) >= summary.data_bytes {
                return Err(format!("offset index entry ({r}, {p}) out of order or past the data"));
            }
            index.offsets.push((r, p));
        }
        for e in times[INDEX_HEADER_BYTES..INDEX_HEADER_BYTES + n_time * TIME_ENTRY_BYTES].chunks_exact(TIME_ENTRY_BYTES) {
            let t = i64::from_le_bytes(e[0..8].try_into().expect("8 bytes"));
            let r = u32::from_le_bytes(e[8..12].try_into().expect("4 bytes"));
            if index.times.last().is_some_and(|&(lt, lr)| lt >= t || lr >= r)
                || index.offsets.binary_search_by_key(&r, |&(x, _)| x).is_err()
            {
                return Err(format!("time index entry ({t}, {r}) out of order or not at an index point"));
            }
            index.times.push((t, r));
        }
        index.max_timestamp = summary.max_timestamp;
        index.bytes_since_entry = summary.data_bytes - u64::from(index.last_point().1);
        Ok((index, summary))
    }
}

fn write_header(out: &mut Vec<u8>, magic: &[u8; 4], entry_bytes: usize, count: usize, s: SegmentSummary) {
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(entry_bytes as u16).to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&s.data_bytes.to_le_bytes());
    out.extend_from_slice(&s.next_offset.to_le_bytes());
    out.extend_from_slice(&s.max_timestamp.to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    debug_assert_eq!(out.len(), INDEX_HEADER_BYTES);
}

fn seal_crc(out: &mut [u8]) {
    let crc = crc32c::crc32c(&out[16..]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn read_header(bytes: &[u8], magic: &[u8; 4], entry_bytes: usize) -> Result<(usize, SegmentSummary), String> {
    if bytes.len() < INDEX_HEADER_BYTES {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    }
    if &bytes[0..4] != magic {
        return Err("bad magic".into());
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(format!("unknown format version {version}"));
    }
    if usize::from(u16::from_le_bytes([bytes[6], bytes[7]])) != entry_bytes {
        return Err("wrong entry size".into());
    }
    let count = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let end = count
        .checked_mul(entry_bytes)
        .and_then(|n| n.checked_add(INDEX_HEADER_BYTES))
        .filter(|&end| end <= bytes.len());
    let Some(end) = end else {
        return Err(format!("{count} entries do not fit in {} bytes", bytes.len()));
    };
    let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&bytes[16..end]);
    if stored != computed {
        return Err(format!("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    let summary = SegmentSummary {
        data_bytes: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
        next_offset: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
        max_timestamp: i64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")),
    };
    Ok((count, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filled(n: u32) -> SegmentIndex {
        let mut idx = SegmentIndex::new(1024);
        for i in 0..n {
            idx.on_batch(i * 10, i * 600, 600, i64::from(i) * 100);
        }
        idx
    }

    #[test]
    fn lookup_finds_the_point_at_or_before() {
        let idx = filled(100);
        assert!(idx.entry_count() > 10);
        assert_eq!(idx.lookup(0), (0, 0));
        for target in [5u32, 10, 39, 400, 985, 5000] {
            let (r, p) = idx.lookup(target);
            assert!(r <= target);
            assert_eq!(p, r / 10 * 600);
            // No later point is also at or before the target.
            assert!(idx.offsets.iter().all(|&(x, _)| x <= r || x > target));
        }
    }

    #[test]
    fn lookup_time_starts_before_the_first_batch_at_or_after() {
        let idx = filled(100);
        for ts in [0i64, 50, 100, 2345, 9900, 20_000] {
            let (r, _) = idx.lookup_time(ts);
            // Every batch before the point has max timestamp below ts.
            let batches_before = r / 10;
            assert!(batches_before == 0 || i64::from(batches_before - 1) * 100 < ts);
        }
    }

    #[test]
    fn round_trip_through_bytes() {
        let idx = filled(50);
        let summary = SegmentSummary {
            data_bytes: 50 * 600,
            next_offset: 500,
            max_timestamp: 4900,
        };
        let (o, t) = idx.encode(summary);
        let (back, s) = SegmentIndex::decode(1024, &o, &t).unwrap();
        assert_eq!(s, summary);
        assert_eq!(back, idx);
    }

    #[test]
    fn zero_padding_after_entries_is_accepted() {
        let idx = filled(20);
        let summary = SegmentSummary {
            data_bytes: 20 * 600,
            next_offset: 200,
            max_timestamp: 1900,
        };
        let (mut o, mut t) = idx.encode(summary);
        o.resize(4096, 0);
        t.resize(4096, 0);
        assert!(SegmentIndex::decode(1024, &o, &t).is_ok());
    }

    #[test]
    fn damaged_index_is_detected() {
        let idx = filled(20);
        let summary = SegmentSummary {
            data_bytes: 20 * 600,
            next_offset: 200,
            max_timestamp: 1900,
        };
        let (o, t) = idx.encode(summary);
        for cut in [0, 10, 47, o.len() - 1] {
            assert!(SegmentIndex::decode(1024, &o[..cut], &t).is_err(), "cut at {cut}");
        }
        for pos in 0..o.len() {
            let mut bad = o.clone();
            bad[pos] ^= 0x40;
            assert!(SegmentIndex::decode(1024, &bad, &t).is_err(), "flip at {pos}");
        }
        let zeros = vec![0u8; 4096];
        assert!(SegmentIndex::decode(1024, &zeros, &t).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_decode(a in proptest::collection::vec(any::<u8>(), 0..300), b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SegmentIndex::decode(1024, &a, &b);
        }
    }
}
