//! The active segment's write pipeline: an aligned staging buffer and the writes in flight.
//!
//! Appends copy batches into the buffer. A full buffer is written whole; a commit writes the
//! dirty tail rounded up to the device alignment (zero padded) and starts a fresh buffer that
//! begins with the partial last block, so the next write rewrites that block. Two writes that
//! cover the same block are never in flight together: io_uring does not order them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile};

use crate::notify::Notify;

/// One write submitted to io_uring, observable by any number of waiters.
pub(crate) struct WriteOp {
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

/// Write state of the active segment. Only touched under the log's append lock.
pub(crate) struct Writer {
    pub(crate) file: Rc<DmaFile>,
    pub(crate) align: u64,
    capacity: usize,
    buf: DmaBuffer,
    /// Aligned file position of `buf[0]`.
    pub(crate) buf_pos: u64,
    pub(crate) buf_len: usize,
    /// Leading bytes of `buf` already on their way to disk.
    flushed_len: usize,
    /// File size after preallocation.
    pub(crate) allocated: u64,
    pub(crate) in_flight: VecDeque<Rc<WriteOp>>,
}

impl Writer {
    /// A writer whose data ends at `data_end`; `tail` holds the bytes of the partial last
    /// block, from `align_down(data_end)`.
    pub(crate) fn new(file: Rc<DmaFile>, capacity: usize, data_end: u64, tail: &[u8], allocated: u64) -> Writer {
        let align = file.alignment();
        assert!(
            capacity as u64 % align == 0,
            "write buffer must be a multiple of the device alignment {align}"
        );
        let buf_pos = data_end - data_end % align;
        assert_eq!(tail.len() as u64, data_end - buf_pos);
        let mut buf = file.alloc_dma_buffer(capacity);
        buf.as_bytes_mut()[..tail.len()].copy_from_slice(tail);
        Writer {
            file,
            align,
            capacity,
            buf,
            buf_pos,
            buf_len: tail.len(),
            flushed_len: tail.len(),
            allocated,
            in_flight: VecDeque::new(),
        }
    }

    /// Logical end of the data: everything appended so far.
    pub(crate) fn data_end(&self) -> u64 {
        self.buf_pos + self.buf_len as u64
    }

    pub(crate) fn room(&self) -> usize {
        self.capacity - self.buf_len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.buf_len == self.capacity
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.buf_len > self.flushed_len
    }

    /// Copies as much of `data` as fits; returns how much.
    pub(crate) fn copy_in(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.buf.as_bytes_mut()[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
        self.buf_len += n;
        n
    }

    /// The file end the next write reaches.
    pub(crate) fn next_write_end(&self) -> u64 {
        self.buf_pos + self.padded_len() as u64
    }

    fn padded_len(&self) -> usize {
        let a = self.align as usize;
        self.buf_len.div_ceil(a) * a
    }

    /// The in-flight write the next write must wait for, if any: one covering the block where
    /// the next write starts, or the oldest when the in-flight bound is reached.
    pub(crate) fn must_wait_for(&self, in_flight_max: usize) -> Option<Rc<WriteOp>> {
        if let Some(last) = self.in_flight.back() {
            if last.end > self.buf_pos && !last.is_done() {
                return Some(last.clone());
            }
        }
        if self.in_flight.len() >= in_flight_max {
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

    /// Submits the buffer (rounded up to the alignment, zero padded) and starts a new one with
    /// the partial last block. The caller has already waited per `must_wait_for`.
    pub(crate) fn submit(&mut self) {
        let a = self.align as usize;
        let padded = self.padded_len();
        let keep_from = self.buf_len / a * a;
        let mut next = self.file.alloc_dma_buffer(self.capacity);
        let tail = self.buf_len - keep_from;
        next.as_bytes_mut()[..tail].copy_from_slice(&self.buf.as_bytes()[keep_from..self.buf_len]);
        let mut full = std::mem::replace(&mut self.buf, next);
        full.as_bytes_mut()[self.buf_len..padded].fill(0);
        full.trim_to_size(padded);
        let op = WriteOp::submit(self.file.clone(), full, self.buf_pos);
        self.in_flight.push_back(op);
        self.buf_pos += keep_from as u64;
        self.buf_len = tail;
        self.flushed_len = tail;
    }

    /// All writes submitted so far.
    pub(crate) fn pending(&self) -> Vec<Rc<WriteOp>> {
        self.in_flight.iter().cloned().collect()
    }
}
