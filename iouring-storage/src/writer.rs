//! The active segment's write pipeline: an aligned staging buffer and the writes in flight.
//!
//! Appends copy batches into the buffer, which is sized from the writes before it (see
//! `Writer::next_capacity`). A full buffer is written whole; a commit writes the
//! dirty tail rounded up to the write alignment (zero padded). The partial last block it leaves
//! becomes the head: later bytes complete it first, and it is rewritten by a write of its own,
//! one block long, while the bytes after it go in a buffer that starts on the next block. Two
//! writes that cover the same block are never in flight together: io_uring does not order them.
//!
//! Why the head is written apart, and why the alignment is the filesystem block: a direct
//! write on ext4 that spans a block already written and preallocated (unwritten) blocks after
//! it, or that does not cover whole filesystem blocks of an unwritten extent, needs the inode
//! lock exclusively. io_uring cannot take it without blocking, so it punts the write to an
//! io-wq worker thread, which wakes up on the shard's core for every commit. Whole-block writes
//! that each stay within written or within preallocated blocks are issued inline.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile};

use crate::constants::WRITE_BUFFER_BYTES_MIN;
use crate::notify::Notify;

/// The smallest buffer a writer holds: `WRITE_BUFFER_BYTES_MIN`, at least one block, at most
/// `capacity_max`.
fn capacity_floor(align: u64, capacity_max: usize) -> usize {
    WRITE_BUFFER_BYTES_MIN.max(align as usize).min(capacity_max)
}

/// One write submitted to io_uring, observable by any number of waiters.
pub(crate) struct WriteOp {
    pub(crate) start: u64,
    pub(crate) end: u64,
    result: RefCell<Option<std::result::Result<(), String>>>,
    done: Notify,
}

impl WriteOp {
    pub(crate) fn is_done(&self) -> bool {
        self.result.borrow().is_some()
    }

    pub(crate) fn failed(&self) -> Option<String> {
        self.result.borrow().as_ref().and_then(|r| r.as_ref().err().cloned())
    }

    /// Waits for the write to finish; the error text names the failure.
    pub(crate) async fn wait(&self) -> std::result::Result<(), String> {
        loop {
            if let Some(r) = self.result.borrow().clone() {
                return r;
            }
            self.done.listen().await;
        }
    }

    /// Starts writing `buf` at `pos` in the background.
    pub(crate) fn submit(file: Rc<DmaFile>, buf: DmaBuffer, pos: u64) -> Rc<WriteOp> {
        let len = buf.len();
        let op = Rc::new(WriteOp {
            start: pos,
            end: pos + len as u64,
            result: RefCell::new(None),
            done: Notify::default(),
        });
        let op2 = op.clone();
        glommio::spawn_local(async move {
            let r = match file.write_rc_at(Rc::new(buf), pos).await {
                Ok(n) if n == len => Ok(()),
                Ok(n) => Err(format!("short write at {pos}: {n} of {len} bytes")),
                Err(e) => Err(format!("write of {len} bytes at {pos}: {e}")),
            };
            *op2.result.borrow_mut() = Some(r);
            op2.done.notify_all();
        })
        .detach();
        op
    }
}

/// The alignment of every write: the device's O_DIRECT alignment, raised to the filesystem
/// block when that is a larger power of two that divides the write buffer (see the module
/// comment for why).
async fn write_alignment(file: &DmaFile, capacity: usize) -> std::io::Result<u64> {
    let device = file.alignment();
    let fs_block = u64::from(file.stat().await?.fs_cluster_size);
    let raised = fs_block.is_power_of_two() && fs_block > device && capacity as u64 % fs_block == 0;
    Ok(if raised { fs_block } else { device })
}

/// Write state of the active segment. Only touched under the log's append lock.
///
/// The data not yet written in full starts at `pos`, an aligned file position. When a write
/// already covered part of the block at `pos` (`head_flushed > 0`), that block is the head and
/// `buf` starts one block later; otherwise there is no head and `buf` starts at `pos`.
pub(crate) struct Writer {
    pub(crate) file: Rc<DmaFile>,
    align: u64,
    /// The buffer's size now: see `next_capacity`.
    capacity: usize,
    /// `write_buffer_bytes`: the most the buffer grows to.
    capacity_max: usize,
    pos: u64,
    /// One block: the head's bytes.
    head: DmaBuffer,
    head_len: usize,
    /// Leading bytes of the head already on their way to disk; 0 when there is no head.
    head_flushed: usize,
    buf: DmaBuffer,
    buf_len: usize,
    /// File size after preallocation.
    pub(crate) allocated: u64,
    in_flight: VecDeque<Rc<WriteOp>>,
}

impl Writer {
    /// A writer for `file`, whose data ends at `data_end` and which is `allocated` bytes long.
    /// Reads back the partial last block, if any, to rewrite it.
    pub(crate) async fn open(file: Rc<DmaFile>, capacity: usize, data_end: u64, allocated: u64) -> std::io::Result<Writer> {
        let align = write_alignment(&file, capacity).await?;
        assert!(
            capacity as u64 % align == 0,
            "write buffer must be a multiple of the write alignment {align}"
        );
        let pos = data_end - data_end % align;
        let head_len = (data_end - pos) as usize;
        let mut head = file.alloc_dma_buffer(align as usize);
        if head_len > 0 {
            let tail = file.read_at(pos, head_len).await?;
            if tail.len() != head_len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the partial block at {pos} read {} of {head_len} bytes", tail.len()),
                ));
            }
            head.as_bytes_mut()[..head_len].copy_from_slice(&tail);
        }
        let capacity_max = capacity;
        let capacity = capacity_floor(align, capacity_max);
        let buf = file.alloc_dma_buffer(capacity);
        Ok(Writer {
            file,
            align,
            capacity,
            capacity_max,
            pos,
            head,
            head_len,
            head_flushed: head_len,
            buf,
            buf_len: 0,
            allocated,
            in_flight: VecDeque::new(),
        })
    }

    fn has_head(&self) -> bool {
        self.head_flushed > 0
    }

    fn buf_pos(&self) -> u64 {
        if self.has_head() {
            self.pos + self.align
        } else {
            self.pos
        }
    }

    /// Logical end of the data: everything appended so far.
    pub(crate) fn data_end(&self) -> u64 {
        if self.buf_len > 0 || !self.has_head() {
            self.buf_pos() + self.buf_len as u64
        } else {
            self.pos + self.head_len as u64
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.buf_len == self.capacity
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.buf_len > 0 || self.head_len > self.head_flushed
    }

    /// Copies as much of `data` as fits: into the head until it is a whole block, then into
    /// the buffer. Returns how much.
    pub(crate) fn copy_in(&mut self, data: &[u8]) -> usize {
        let mut copied = 0;
        if self.has_head() {
            let n = data.len().min(self.align as usize - self.head_len);
            self.head.as_bytes_mut()[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
            self.head_len += n;
            copied = n;
            if self.head_len < self.align as usize {
                return copied;
            }
        }
        let data = &data[copied..];
        let n = data.len().min(self.capacity - self.buf_len);
        self.buf.as_bytes_mut()[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
        self.buf_len += n;
        copied + n
    }

    /// The file end the next submit's writes reach.
    pub(crate) fn next_write_end(&self) -> u64 {
        if self.buf_len > 0 {
            self.buf_pos() + self.padded(self.buf_len) as u64
        } else {
            self.pos + self.align
        }
    }

    fn padded(&self, len: usize) -> usize {
        let a = self.align as usize;
        len.div_ceil(a) * a
    }

    /// How many writes the next submit issues: the head's, the buffer's, or both.
    fn writes_next(&self) -> usize {
        usize::from(self.head_len > self.head_flushed) + usize::from(self.buf_len > 0)
    }

    /// The in-flight write the next submit must wait for, if any: one covering the block where
    /// the next submit starts writing, or the oldest while the next submit's writes would pass
    /// the in-flight bound.
    pub(crate) fn must_wait_for(&self, in_flight_max: usize) -> Option<Rc<WriteOp>> {
        if let Some(last) = self.in_flight.back() {
            if last.end > self.pos && !last.is_done() {
                return Some(last.clone());
            }
        }
        if self.in_flight.len() + self.writes_next() > in_flight_max {
            return self.in_flight.front().cloned();
        }
        None
    }

    /// Drops finished writes from the front; returns the first failure.
    pub(crate) fn reap(&mut self) -> std::result::Result<(), String> {
        while let Some(op) = self.in_flight.front() {
            if !op.is_done() {
                break;
            }
            if let Some(e) = op.failed() {
                return Err(e);
            }
            self.in_flight.pop_front();
        }
        Ok(())
    }

    /// Submits the dirty head (one block, zero padded) and the buffer (rounded up to the
    /// alignment, zero padded) as separate writes; the partial last block becomes the new head.
    /// The caller has already waited per `must_wait_for`.
    pub(crate) fn submit(&mut self) {
        let a = self.align as usize;
        if self.head_len > self.head_flushed {
            // The head keeps taking appends after this write, so the write gets a copy.
            let mut block = self.file.alloc_dma_buffer(a);
            block.as_bytes_mut()[..self.head_len].copy_from_slice(&self.head.as_bytes()[..self.head_len]);
            block.as_bytes_mut()[self.head_len..].fill(0);
            self.start_write(block, self.pos);
            self.head_flushed = self.head_len;
        }
        if self.buf_len == 0 {
            if self.head_len == a {
                self.pos += self.align;
                self.head_len = 0;
                self.head_flushed = 0;
            }
            return;
        }
        let buf_pos = self.buf_pos();
        let padded = self.padded(self.buf_len);
        let keep_from = self.buf_len / a * a;
        let tail = self.buf_len - keep_from;
        self.head.as_bytes_mut()[..tail].copy_from_slice(&self.buf.as_bytes()[keep_from..self.buf_len]);
        self.capacity = self.next_capacity();
        let mut full = std::mem::replace(&mut self.buf, self.file.alloc_dma_buffer(self.capacity));
        full.as_bytes_mut()[self.buf_len..padded].fill(0);
        full.trim_to_size(padded);
        self.start_write(full, buf_pos);
        self.pos = buf_pos + keep_from as u64;
        self.head_len = tail;
        self.head_flushed = tail;
        self.buf_len = 0;
    }

    /// The size of the buffer that replaces the one being submitted. It doubles after a full
    /// buffer, up to `capacity_max`, and after a commit's partial buffer it is twice that
    /// commit's size (a power of two, at least `WRITE_BUFFER_BYTES_MIN`). A busy partition
    /// soon writes in large buffers; an idle one, of thousands, holds a small one.
    fn next_capacity(&self) -> usize {
        let want = if self.buf_len == self.capacity {
            self.capacity * 2
        } else {
            self.padded(self.buf_len).next_power_of_two() * 2
        };
        want.clamp(capacity_floor(self.align, self.capacity_max), self.capacity_max)
    }

    fn start_write(&mut self, buf: DmaBuffer, pos: u64) {
        let end = pos + buf.len() as u64;
        assert!(
            self.in_flight.iter().all(|op| op.is_done() || op.end <= pos || op.start >= end),
            "a write at {pos}..{end} would overlap one in flight"
        );
        self.in_flight.push_back(WriteOp::submit(self.file.clone(), buf, pos));
    }

    /// All writes submitted so far.
    pub(crate) fn pending(&self) -> Vec<Rc<WriteOp>> {
        self.in_flight.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn wait_all(w: &mut Writer) {
        for op in w.pending() {
            op.wait().await.expect("write succeeds");
        }
        w.reap().expect("no failed write");
    }

    fn ranges(w: &Writer) -> Vec<(u64, u64)> {
        w.in_flight.iter().map(|op| (op.start, op.end)).collect()
    }

    #[test]
    fn the_buffer_grows_while_commits_fill_it_and_shrinks_to_their_size() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).spawn(|| async {
            let dir = tempfile::tempdir().expect("temp dir");
            crate::segment::probe_device(dir.path()).await.expect("probe");
            let file = crate::segment::open_data_file(&dir.path().join("segment"), true)
                .await
                .expect("create");
            let max = 1024 * 1024;
            let mut w = Writer::open(file.clone(), max, 0, 0).await.expect("writer");
            let min = WRITE_BUFFER_BYTES_MIN;
            assert_eq!(w.capacity, min, "a new log starts small");
            let mut written = 0usize;
            // Full buffers: each next one twice as large, up to the maximum.
            for want in [2 * min, 4 * min, 8 * min, 16 * min, max, max] {
                let data = vec![7u8; w.capacity];
                assert_eq!(w.copy_in(&data), data.len());
                assert!(w.is_full());
                w.submit();
                wait_all(&mut w).await;
                written += data.len();
                assert_eq!(w.capacity, want);
            }
            // A commit of 100 KiB: the next buffer is twice its size, rounded to a power of two.
            assert_eq!(w.copy_in(&vec![8u8; 100 * 1024]), 100 * 1024);
            w.submit();
            assert_eq!(w.capacity, 256 * 1024);
            // A small commit: back to the smallest buffer.
            assert_eq!(w.copy_in(&[9u8; 10]), 10);
            w.submit();
            assert_eq!(w.capacity, min);
            wait_all(&mut w).await;
            written += 100 * 1024 + 10;
            assert_eq!(w.data_end(), written as u64);
            let got = file.read_at(0, written).await.expect("read back");
            assert!(got[..written - 100 * 1024 - 10].iter().all(|&b| b == 7));
            assert!(got[written - 100 * 1024 - 10..written - 10].iter().all(|&b| b == 8));
            assert_eq!(&got[written - 10..], &[9u8; 10]);
        });
        executor.expect("spawn executor").join().expect("executor ran");
    }

    #[test]
    fn a_partial_block_is_rewritten_by_a_write_of_its_own() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).spawn(|| async {
            let dir = tempfile::tempdir().expect("temp dir");
            crate::segment::probe_device(dir.path()).await.expect("probe");
            let path = dir.path().join("segment");
            let file = crate::segment::open_data_file(&path, true).await.expect("create");
            let capacity = 64 * 1024;
            let mut w = Writer::open(file.clone(), capacity, 0, 0).await.expect("writer");
            let a = w.align;
            assert!(a >= file.alignment() && a.is_power_of_two(), "alignment {a}");

            // A commit inside the first block: one write, padded to the block.
            assert_eq!(w.copy_in(&[1; 100]), 100);
            w.submit();
            assert_eq!(ranges(&w), vec![(0, a)]);
            wait_all(&mut w).await;

            // The next bytes complete that block first; the block and what follows it go out as
            // two writes, so neither spans the written block and the blocks after it.
            let more = vec![2u8; 3 * a as usize];
            assert_eq!(w.copy_in(&more), more.len());
            assert_eq!(w.data_end(), 100 + 3 * a);
            assert!(w.must_wait_for(8).is_none());
            w.submit();
            assert_eq!(ranges(&w), vec![(0, a), (a, 4 * a)]);
            assert_eq!(w.data_end(), 100 + 3 * a);
            wait_all(&mut w).await;

            // A commit that only touches the partial block rewrites just that block.
            assert_eq!(w.copy_in(&[3; 10]), 10);
            w.submit();
            assert_eq!(ranges(&w), vec![(3 * a, 4 * a)]);
            wait_all(&mut w).await;

            // Completing the block exactly leaves no head: the next write starts after it.
            let fill = (4 * a - (110 + 3 * a)) as usize;
            assert_eq!(w.copy_in(&vec![4u8; fill]), fill);
            w.submit();
            assert_eq!(ranges(&w), vec![(3 * a, 4 * a)]);
            wait_all(&mut w).await;
            assert_eq!(w.copy_in(&[5; 7]), 7);
            w.submit();
            assert_eq!(ranges(&w), vec![(4 * a, 5 * a)]);
            wait_all(&mut w).await;

            let end = w.data_end();
            assert_eq!(end, 4 * a + 7);
            let mut want = vec![1u8; 100];
            want.extend(&more);
            want.extend([3u8; 10]);
            want.extend(vec![4u8; fill]);
            want.extend([5u8; 7]);
            let got = file.read_at(0, end as usize).await.expect("read back");
            assert_eq!(&got[..], &want[..]);

            // Reopened mid-block (as after recovery), the writer reads that block back and
            // completes it before anything else.
            let mut w = Writer::open(file.clone(), capacity, end, 5 * a).await.expect("reopen");
            assert_eq!(w.data_end(), end);
            assert_eq!(w.copy_in(&[6; 5]), 5);
            w.submit();
            assert_eq!(ranges(&w), vec![(4 * a, 5 * a)]);
            wait_all(&mut w).await;
            want.extend([6u8; 5]);
            let got = file.read_at(0, end as usize + 5).await.expect("read back");
            assert_eq!(&got[..], &want[..]);
        });
        executor.expect("spawn executor").join().expect("executor ran");
    }
}
