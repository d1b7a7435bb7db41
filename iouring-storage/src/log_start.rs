//! The persisted log start offset of a partition: the first offset a reader may see, raised by
//! `PartitionLog::delete_records_before` (Kafka's DeleteRecords) above the first segment's base.
//!
//! Stored in `<partition dir>/log-start.offset`, written durably (temporary file, fdatasync,
//! rename, directory fsync) with O_DIRECT, zero padded to the device alignment. Little-endian:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | magic `KLSO` |
//! | 4..6   | format version u16 = 1 |
//! | 6..8   | reserved, zero |
//! | 8..16  | log start offset u64 |
//! | 16..20 | CRC-32C u32 of bytes 0..16 |
//!
//! The file is written before any segment below the new start is deleted, so after a crash it
//! is never behind the segments on disk; recovery deletes whole segments it left below the start.
//! A missing file means the start is the first segment's base. A damaged one (which the rename
//! protocol never produces; only a bad disk does) is reported and ignored: the start falls back
//! to the first segment's base, which exposes records deleted but never loses any.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::segment;

const MAGIC: &[u8; 4] = b"KLSO";
const FORMAT_VERSION: u16 = 1;
pub(crate) const LOG_START_BYTES: usize = 20;
const FILE_NAME: &str = "log-start.offset";

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

pub(crate) fn encode(offset: u64) -> [u8; LOG_START_BYTES] {
    let mut b = [0u8; LOG_START_BYTES];
    b[0..4].copy_from_slice(MAGIC);
    b[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the file's contents (padding included); the error says what is wrong.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<u64, String> {
    if bytes.len() < LOG_START_BYTES {
        return Err(format!("{} bytes, shorter than the {LOG_START_BYTES}-byte record", bytes.len()));
    }
    if &bytes[0..4] != MAGIC {
        return Err(format!("magic {:02x?} is not KLSO", &bytes[0..4]));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} is not {FORMAT_VERSION}"));
    }
    let stored = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&bytes[0..16]);
    if stored != computed {
        return Err(format!("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    if bytes[6..8] != [0, 0] || bytes[LOG_START_BYTES..].iter().any(|&b| b != 0) {
        return Err("reserved or padding bytes are not zero".into());
    }
    Ok(u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")))
}

/// Reads the persisted start: `Ok(None)` if there is none, `Ok(Some(Err(why)))` if damaged.
pub(crate) async fn load(dir: &Path) -> Result<Option<std::result::Result<u64, String>>> {
    Ok(segment::read_small_file(&path(dir)).await?.map(|b| decode(&b)))
}

/// Writes the start durably, the directory entry included.
pub(crate) async fn store(dir: &Path, offset: u64) -> Result<()> {
    segment::write_file_durably(&path(dir), &encode(offset)).await?;
    segment::sync_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn damaged_records_are_refused_with_a_reason() {
        let good = encode(42);
        assert_eq!(decode(&good), Ok(42));
        let mut padded = good.to_vec();
        padded.resize(4096, 0);
        assert_eq!(decode(&padded), Ok(42), "zero padding to the alignment is fine");
        assert!(decode(&good[..LOG_START_BYTES - 1]).unwrap_err().contains("shorter"));
        assert!(decode(&[]).is_err());
        for i in 0..LOG_START_BYTES {
            let mut bad = good;
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {i} went unnoticed");
        }
        let mut trailing = padded.clone();
        trailing[100] = 1;
        assert!(decode(&trailing).is_err());
        assert!(decode(&[0u8; 4096]).is_err(), "all zeros is not a record");
    }

    proptest! {
        #[test]
        fn round_trips(offset in any::<u64>()) {
            prop_assert_eq!(decode(&encode(offset)), Ok(offset));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
