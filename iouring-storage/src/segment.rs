//! One segment's files: naming, opening, scanning for valid batches, and durable index files.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use crate::batch::{self, BatchHeader, CountCheck};
use crate::constants::{BATCH_BYTES_MAX, BATCH_HEADER_BYTES, SCAN_CHUNK_BYTES};
use crate::error::{Error, Result};
use crate::index::{SegmentIndex, SegmentSummary};

/// File names of a segment: the base offset as 20 digits, as Kafka names them.
pub(crate) fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

pub(crate) fn time_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

thread_local! {
    /// Devices (st_dev) on which this thread's glommio reactor has probed I/O polling correctly.
    static PROBED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> = Default::default();
}

/// Makes glommio's I/O-poll probe for the device under `dir` read real data.
///
/// glommio 0.9 probes, once per device and thread, whether the device supports the IOPOLL
/// ring by reading one block at offset 0 of the first DMA file opened on it. When that file is
/// empty the read ends at EOF and "succeeds", so glommio wrongly marks a virtio disk pollable
/// and every later read fails with EOPNOTSUPP. Opening a non-empty file first makes the probe
/// reach the device.
pub(crate) async fn probe_device(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).map_err(|e| Error::io("inspecting directory", dir, e))?.dev();
    if PROBED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let path = dir.join(".device-probe");
    std::fs::write(&path, vec![0xa5u8; 64 * 1024]).map_err(|e| Error::io("writing device probe", &path, e))?;
    let opened = DmaFile::open(&path).await.map_err(|e| Error::io("opening device probe", &path, e));
    let _ = std::fs::remove_file(&path);
    let file = opened?;
    let _ = file.close().await;
    PROBED_DEVICES.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

/// Opens (or creates) a segment's data file for O_DIRECT reads and writes.
pub(crate) async fn open_data_file(path: &Path, create: bool) -> Result<Rc<DmaFile>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await
        .map_err(|e| Error::io("opening segment", path, e))?;
    Ok(Rc::new(file))
}

/// Where a scan stopped.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Byte position just after the last valid batch.
    pub valid_bytes: u64,
    /// Offset after the last valid batch.
    pub next_offset: u64,
    /// Why the scan stopped before `end`, if it did.
    pub stopped: Option<String>,
}

/// Reads batches from `from_pos` up to `end`, calling `visit(header, position)` for each valid
/// one until it returns false. With `verify`, each batch's length, magic, record count and CRC
/// are checked; without, only the header (for searches over data already verified).
/// Offsets must grow: a batch whose base offset is below the previous batch's next offset is
/// stale data from before a truncation and ends the scan like a torn or corrupt batch.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn scan(
    file: &DmaFile,
    path: &Path,
    from_pos: u64,
    from_offset: u64,
    end: u64,
    verify: bool,
    mut visit: impl FnMut(&BatchHeader, u64) -> bool,
) -> Result<ScanEnd> {
    let mut pos = from_pos;
    let mut expected = from_offset;
    let mut chunk_start = 0u64;
    let mut chunk: Option<glommio::io::ReadResult> = None;
    let stop = |pos, expected, why: String| {
        Ok(ScanEnd {
            valid_bytes: pos,
            next_offset: expected,
            stopped: Some(why),
        })
    };
    while pos < end {
        if end - pos < BATCH_HEADER_BYTES as u64 {
            return stop(pos, expected, format!("torn batch header: {} bytes left", end - pos));
        }
        let covered = |chunk: &Option<glommio::io::ReadResult>, chunk_start: u64, len: u64| {
            chunk
                .as_ref()
                .is_some_and(|c| pos >= chunk_start && pos + len <= chunk_start + c.len() as u64)
        };
        if !covered(&chunk, chunk_start, BATCH_HEADER_BYTES as u64) {
            let len = (end - pos).min(SCAN_CHUNK_BYTES as u64) as usize;
            chunk = Some(file.read_at(pos, len).await.map_err(|e| Error::io("scanning segment", path, e))?);
            chunk_start = pos;
            if chunk.as_ref().is_some_and(|c| c.len() < BATCH_HEADER_BYTES) {
                return stop(pos, expected, "file ends inside a batch header".into());
            }
        }
        let c = chunk.as_ref().expect("chunk was just read");
        let at = (pos - chunk_start) as usize;
        let head = &c[at..at + BATCH_HEADER_BYTES];
        let header = match BatchHeader::parse(head) {
            Ok(h) => h,
            Err(_) if head.iter().all(|&b| b == 0) => return stop(pos, expected, "zero padding".into()),
            Err(e) => return stop(pos, expected, format!("bad batch header: {e}")),
        };
        if header.total_bytes > BATCH_BYTES_MAX {
            return stop(
                pos,
                expected,
                format!("batch length {} beyond any accepted batch", header.total_bytes),
            );
        }
        if pos + header.total_bytes as u64 > end {
            return stop(
                pos,
                expected,
                format!("torn batch: {} bytes declared, {} left", header.total_bytes, end - pos),
            );
        }
        if header.base_offset < 0 || (header.base_offset as u64) < expected {
            return stop(
                pos,
                expected,
                format!("batch base offset {} below the expected {expected}", header.base_offset),
            );
        }
        if verify {
            let total = header.total_bytes as u64;
            if !covered(&chunk, chunk_start, total) {
                let len = (end - pos).min(total.max(SCAN_CHUNK_BYTES as u64)) as usize;
                chunk = Some(file.read_at(pos, len).await.map_err(|e| Error::io("scanning segment", path, e))?);
                chunk_start = pos;
                if chunk.as_ref().is_some_and(|c| (c.len() as u64) < total) {
                    return stop(pos, expected, "file ends inside a batch".into());
                }
            }
            let c = chunk.as_ref().expect("chunk was just read");
            let at = (pos - chunk_start) as usize;
            if let Err(e) = batch::validate(&c[at..at + header.total_bytes], BATCH_BYTES_MAX, CountCheck::AtMost) {
                return stop(pos, expected, format!("invalid batch at offset {}: {e}", header.base_offset));
            }
        }
        if !visit(&header, pos) {
            return Ok(ScanEnd {
                valid_bytes: pos,
                next_offset: expected,
                stopped: None,
            });
        }
        expected = header.last_offset() as u64 + 1;
        pos += header.total_bytes as u64;
    }
    Ok(ScanEnd {
        valid_bytes: pos,
        next_offset: expected,
        stopped: None,
    })
}

/// Writes `bytes` to `path` through a temporary file, fdatasync, then rename. The caller syncs
/// the directory. O_DIRECT: the write is padded with zeros to the device alignment.
pub(crate) async fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&tmp)
        .await
        .map_err(|e| Error::io("creating durable file", &tmp, e))?;
    let len = file.align_up(bytes.len() as u64) as usize;
    let mut buf = file.alloc_dma_buffer(len.max(file.alignment() as usize));
    let out = buf.as_bytes_mut();
    out[..bytes.len()].copy_from_slice(bytes);
    out[bytes.len()..].fill(0);
    let want = buf.len();
    let written = file
        .write_at(buf, 0)
        .await
        .map_err(|e| Error::io("writing durable file", &tmp, e))?;
    if written != want {
        return Err(Error::io(
            "writing durable file",
            &tmp,
            std::io::Error::other(format!("short write: {written} of {want}")),
        ));
    }
    file.fdatasync().await.map_err(|e| Error::io("syncing durable file", &tmp, e))?;
    file.close().await.map_err(|e| Error::io("closing durable file", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming durable file", path, e))?;
    Ok(())
}

/// Reads a whole small file with O_DIRECT; `None` if it does not exist.
pub(crate) async fn read_small_file(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match DmaFile::open(path).await {
        Ok(f) => f,
        Err(e) => {
            let e: std::io::Error = e.into();
            if e.kind() == std::io::ErrorKind::NotFound {
                return Ok(None);
            }
            return Err(Error::io("opening small file", path, e));
        }
    };
    let size = file.file_size().await.map_err(|e| Error::io("sizing small file", path, e))?;
    let bytes = if size == 0 {
        Vec::new()
    } else {
        file.read_at(0, size as usize)
            .await
            .map_err(|e| Error::io("reading small file", path, e))?
            .to_vec()
    };
    let _ = file.close().await;
    Ok(Some(bytes))
}

/// Loads a sealed segment's index files, or says why they cannot be trusted.
pub(crate) async fn load_index(
    dir: &Path,
    base_offset: u64,
    interval_bytes: u32,
    data_bytes: u64,
) -> Result<std::result::Result<(SegmentIndex, SegmentSummary), String>> {
    let Some(offsets) = read_small_file(&index_path(dir, base_offset)).await? else {
        return Ok(Err("offset index missing".into()));
    };
    let Some(times) = read_small_file(&time_index_path(dir, base_offset)).await? else {
        return Ok(Err("time index missing".into()));
    };
    Ok(SegmentIndex::decode(interval_bytes, &offsets, &times).and_then(|(index, summary)| {
        if summary.data_bytes != data_bytes {
            Err(format!(
                "index describes {} bytes but the segment holds {data_bytes}",
                summary.data_bytes
            ))
        } else if summary.next_offset < base_offset {
            Err(format!(
                "index says next offset {} below the segment base {base_offset}",
                summary.next_offset
            ))
        } else {
            Ok((index, summary))
        }
    }))
}

/// Writes both index files of a segment durably.
pub(crate) async fn store_index(dir: &Path, base_offset: u64, index: &SegmentIndex, summary: SegmentSummary) -> Result<()> {
    let (offsets, times) = index.encode(summary);
    let (offsets_path, times_path) = (index_path(dir, base_offset), time_index_path(dir, base_offset));
    // Both at once: each is a write and an fdatasync of its own file.
    futures_lite::future::try_zip(write_file_durably(&offsets_path, &offsets), write_file_durably(&times_path, &times)).await?;
    Ok(())
}

/// Removes a file on the executor's blocking thread, never the reactor's: on ext4 the unlink
/// that frees a file's blocks is slow (with online discard, 15 ms for 64 MiB and 260 ms for
/// 1 GiB on the CI machine), time every partition and connection of the shard would otherwise
/// wait. Close the file first, or the blocks are freed at its last close instead. A file that
/// is already gone is not an error; `op` names the deletion in any other.
pub(crate) async fn remove_file(op: &'static str, path: PathBuf) -> Result<()> {
    let p = path.clone();
    match glommio::executor().spawn_blocking(move || std::fs::remove_file(p)).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(op, path, e)),
    }
}

/// Deletes a whole segment: its data file (closed first when nothing else holds it, so that the
/// unlink is what frees the blocks; a read still holding it closes it later), both index files
/// and the producer snapshot taken at its base. The caller syncs the directory.
pub(crate) async fn delete_segment(op: &'static str, dir: &Path, base_offset: u64, file: Rc<DmaFile>) -> Result<()> {
    if let Ok(file) = Rc::try_unwrap(file) {
        let _ = file.close().await;
    }
    remove_file(op, log_path(dir, base_offset)).await?;
    delete_segment_companions(op, dir, base_offset).await
}

/// Deletes a segment's files other than its data: both index files and the producer snapshot
/// taken at its base. The caller syncs the directory.
pub(crate) async fn delete_segment_companions(op: &'static str, dir: &Path, base_offset: u64) -> Result<()> {
    for path in [
        index_path(dir, base_offset),
        time_index_path(dir, base_offset),
        crate::producer_state::snapshot_path(dir, base_offset),
    ] {
        remove_file(op, path).await?;
    }
    Ok(())
}

/// File name of a partition's spare segment file.
const SPARE_FILE_NAME: &str = "recycled.spare";

/// Where a partition keeps the data file of a deleted segment for reuse as its next segment
/// (see "Segment recycling" in `log.rs`). Never a segment name, so recovery does not scan it.
pub(crate) fn spare_path(dir: &Path) -> PathBuf {
    dir.join(SPARE_FILE_NAME)
}

/// Cuts a file to `len` bytes, durably (the truncation, then an fdatasync).
pub(crate) async fn truncate_durably(file: &DmaFile, len: u64) -> std::io::Result<()> {
    file.truncate(len).await?;
    Ok(file.fdatasync().await?)
}

/// fsync of the partition directory, so that created, renamed and removed names are durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| Error::io("opening directory", dir, e))?;
    d.sync().await.map_err(|e| Error::io("syncing directory", dir, e))?;
    let _ = d.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_strangers() {
        let p = log_path(Path::new("/d"), 42);
        assert_eq!(p, Path::new("/d/00000000000000000042.log"));
        assert_eq!(parse_log_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_name("0000000000000000042.log"), None);
        assert_eq!(parse_log_name("0000000000000000004x.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
        assert_eq!(parse_log_name("99999999999999999999.log"), None);
    }
}
