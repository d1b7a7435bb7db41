//! Rewriting one sealed segment with fewer batches or records, for compaction: the caller
//! (which knows what a record key is; this crate does not) pushes the batches to keep, in
//! offset order, and `finish` swaps the new segment in.
//!
//! Crash safety: the new data goes to `<base>.log.cleaned.tmp`, which recovery deletes like
//! any `.tmp` file, and is made durable before one rename puts it in place of `<base>.log`.
//! The index files are rewritten after the rename; a crash between the two leaves index files
//! that describe the old, larger data, which recovery detects (their recorded size differs)
//! and rebuilds. A segment whose batches all go stays as an empty file, so the offsets it
//! covered remain accounted for.
//!
//! Readers never see a mixture: a read takes the segment's file handle and index position
//! together, and the swap replaces both under the append lock; a read already under way keeps
//! the old file open and reads the old data.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::batch::{self, BatchHeader, CountCheck};
use crate::constants::{BATCH_BYTES_MAX, REWRITE_BUFFER_BYTES};
use crate::error::{Error, Result};
use crate::index::{SegmentIndex, SegmentSummary};
use crate::log::PartitionLog;

/// A rewrite of one sealed segment in progress. Dropping it unfinished deletes the new file.
pub struct SegmentRewrite {
    log: PartitionLog,
    base_offset: u64,
    /// The original segment's next offset, which the rewritten one keeps.
    next_offset: u64,
    /// The original data size: the swap only happens if the segment still has it.
    original_bytes: u64,
    tmp_path: PathBuf,
    file: Option<Rc<DmaFile>>,
    buf: Option<DmaBuffer>,
    filled: usize,
    /// Bytes already written to the file (whole buffers).
    written: u64,
    data_bytes: u64,
    index: SegmentIndex,
    /// Offset after the last batch pushed.
    expected: u64,
}

impl std::fmt::Debug for SegmentRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentRewrite")
            .field("base_offset", &self.base_offset)
            .field("data_bytes", &self.data_bytes)
            .finish()
    }
}

impl SegmentRewrite {
    pub(crate) async fn start(
        log: PartitionLog,
        base_offset: u64,
        next_offset: u64,
        original_bytes: u64,
        index_interval_bytes: u32,
    ) -> Result<SegmentRewrite> {
        let dir = log.dir_path();
        let tmp_path = dir.join(format!("{:020}.log.cleaned.tmp", base_offset));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&tmp_path)
            .await
            .map_err(|e| Error::io("creating rewritten segment", &tmp_path, e))?;
        let buf = file.alloc_dma_buffer(REWRITE_BUFFER_BYTES);
        Ok(SegmentRewrite {
            log,
            base_offset,
            next_offset,
            original_bytes,
            tmp_path,
            file: Some(Rc::new(file)),
            buf: Some(buf),
            filled: 0,
            written: 0,
            data_bytes: 0,
            index: SegmentIndex::new(index_interval_bytes),
            expected: base_offset,
        })
    }

    /// Bytes pushed so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Appends one batch, exactly as it should be stored (its base offset already stamped).
    /// It must be valid, lie inside the original segment's offsets, and follow the previous one.
    pub async fn push(&mut self, bytes: &[u8]) -> Result<()> {
        let h: BatchHeader = batch::validate(bytes, BATCH_BYTES_MAX, CountCheck::AtMost)?;
        let (first, last) = (h.base_offset as u64, h.last_offset() as u64);
        if h.base_offset < 0 || first < self.expected || last >= self.next_offset {
            return Err(Error::Corrupt {
                what: "rewritten batch",
                path: self.tmp_path.clone(),
                detail: format!(
                    "offsets {first}..={last} are outside [{}, {}) of segment {}",
                    self.expected, self.next_offset, self.base_offset
                ),
            });
        }
        self.index.on_batch(
            (first - self.base_offset) as u32,
            self.data_bytes as u32,
            bytes.len() as u32,
            h.max_timestamp,
        );
        let mut rest = bytes;
        while !rest.is_empty() {
            let buf = self.buf.as_mut().expect("a buffer until finish");
            let n = rest.len().min(REWRITE_BUFFER_BYTES - self.filled);
            buf.as_bytes_mut()[self.filled..self.filled + n].copy_from_slice(&rest[..n]);
            self.filled += n;
            rest = &rest[n..];
            if self.filled == REWRITE_BUFFER_BYTES {
                self.write_buffer().await?;
            }
        }
        self.data_bytes += bytes.len() as u64;
        self.expected = last + 1;
        Ok(())
    }

    /// Writes the buffer (padded with zeros to the device alignment) and starts a fresh one.
    async fn write_buffer(&mut self) -> Result<()> {
        let file = self.file.clone().expect("a file until finish");
        let mut buf = self.buf.take().expect("a buffer until finish");
        let len = file.align_up(self.filled as u64) as usize;
        buf.as_bytes_mut()[self.filled..len].fill(0);
        buf.trim_to_size(len);
        let written = file
            .write_at(buf, self.written)
            .await
            .map_err(|e| Error::io("writing rewritten segment", &self.tmp_path, e))?;
        if written != len {
            return Err(Error::io(
                "writing rewritten segment",
                &self.tmp_path,
                std::io::Error::other(format!("short write: {written} of {len}")),
            ));
        }
        self.written += self.filled as u64;
        self.filled = 0;
        self.buf = Some(file.alloc_dma_buffer(REWRITE_BUFFER_BYTES));
        Ok(())
    }

    /// Makes the new segment durable and puts it in place of the original. Returns false, and
    /// changes nothing, if the original changed meanwhile (retention or truncation removed it).
    pub async fn finish(mut self) -> Result<bool> {
        if self.filled > 0 {
            self.write_buffer().await?;
        }
        let file = self.file.take().expect("a file until finish");
        crate::segment::truncate_durably(&file, self.data_bytes)
            .await
            .map_err(|e| Error::io("truncating rewritten segment", &self.tmp_path, e))?;
        drop(file);
        let summary = SegmentSummary {
            data_bytes: self.data_bytes,
            next_offset: self.next_offset,
            max_timestamp: self.index.max_timestamp(),
        };
        let installed = self
            .log
            .install_rewrite(self.base_offset, self.original_bytes, &self.tmp_path, self.index.clone(), summary)
            .await?;
        if installed {
            // The temporary name is gone; nothing left for Drop to remove.
            self.tmp_path = PathBuf::new();
        }
        Ok(installed)
    }
}

impl Drop for SegmentRewrite {
    fn drop(&mut self) {
        if !self.tmp_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

impl PartitionLog {
    /// Starts rewriting the sealed segment whose base offset is `base_offset`.
    pub async fn rewrite_segment(&self, base_offset: u64) -> Result<SegmentRewrite> {
        let found = self.sealed_segments().into_iter().find(|s| s.base_offset == base_offset);
        let Some(info) = found else {
            return Err(Error::OffsetOutOfRange {
                offset: base_offset,
                log_start: self.offsets().log_start,
                log_end: self.offsets().log_end,
            });
        };
        let interval = self.config().index_interval_bytes;
        SegmentRewrite::start(self.clone(), base_offset, info.next_offset, info.size_bytes, interval).await
    }
}
