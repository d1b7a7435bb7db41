//! Sequential read-ahead for readers behind the tail, and the batch selection every read shares.
//!
//! A consumer that has fallen behind the shard's batch cache reads a segment front to back, one
//! fetch at a time. Read straight from the disk, each fetch waits for its own O_DIRECT read, the
//! disk idles while the response travels and the consumer asks again, and every read reads
//! again the partial batch the one before it left over: with 128 KiB batches and 512 KiB reads
//! a third more bytes than it serves. Kafka leaves this to the page cache's readahead; with
//! O_DIRECT the log does it itself.
//!
//! A log remembers where its recent readers stopped: a `Stream` per reader, at most
//! `READ_AHEAD_STREAMS_MAX`, the least recently used forgotten first. A read that starts exactly
//! where a stream stopped continues it; one that starts where the stream's last read started
//! repeats that read (a fetch response with no room left for the partition dropped it, and the
//! consumer asks again) and is served from the same windows, which it keeps. From a stream's
//! first continuing read on, it keeps up to `READ_AHEAD_WINDOWS_MAX` windows of the segment
//! read ahead of it in the background, each starting at the first batch the window before it
//! does not hold whole, so no byte is read twice but for alignment. Reads are served from a
//! window's buffer without a copy; a read near a window's end may return fewer bytes than
//! asked (whole batches only), and the next read continues in the next window.
//!
//! What a window holds is what was durable in its segment when it was read, and segment bytes
//! below the durable end never change except by truncation or a compaction rewrite, which
//! change the log's `generation`: a stream of an older generation is never used. Offsets below
//! the log start are refused before any stream is looked at.
//!
//! Memory: windows are counted per thread against `READ_AHEAD_BYTES_PER_THREAD_MAX`. A window
//! that does not fit is not read (the reader falls back to plain reads) unless streams idle
//! for `READ_AHEAD_IDLE_MS` on the thread can be dropped to make room.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::ReadResult;
use glommio::sync::{Semaphore, StaticPermit};

use crate::batch::BatchHeader;
use crate::constants::{
    BATCH_HEADER_BYTES, READ_AHEAD_BYTES_PER_THREAD_MAX, READ_AHEAD_IDLE_MS, READ_AHEAD_READS_IN_FLIGHT_MAX, READ_AHEAD_STREAMS_MAX,
    READ_AHEAD_WINDOWS_MAX, READ_AHEAD_WINDOW_BYTES_MAX, READ_AHEAD_WINDOW_BYTES_MIN, READ_AHEAD_WINDOW_READS,
};
use crate::log::ReadBatches;
use crate::notify::Notify;

/// What a buffer read from a segment holds for a read at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    /// Whole batches `[at, at + taken)`: the one holding `offset` first (it may start below
    /// `offset`), then the following ones while they fit in `max_bytes`, all below `limit`.
    Batches {
        at: usize,
        taken: usize,
        first_offset: u64,
        next_offset: u64,
    },
    /// The first batch wanted starts at `at`, but is not whole in the buffer.
    Partial { at: usize, total_bytes: usize },
    /// Every whole batch in the buffer ends before `offset`; the next one starts at `at`.
    Before { at: usize },
    /// The first batch wanted starts at or above `limit`.
    AtLimit,
}

/// Picks the batches a read at `offset` returns from `bytes`, which starts at a batch boundary.
/// The first batch is taken whole even beyond `max_bytes`. An error is a batch header that does
/// not parse, described with its position (`pos` is the file position of `bytes[0]`).
pub(crate) fn select(bytes: &[u8], pos: u64, offset: u64, max_bytes: usize, limit: u64) -> Result<Selection, String> {
    let header_at = |at: usize| BatchHeader::parse(&bytes[at..]).map_err(|e| format!("batch at {}: {e}", pos + at as u64));
    // Skip the batches that end before `offset`.
    let mut at = 0usize;
    let first = loop {
        if at + BATCH_HEADER_BYTES > bytes.len() {
            return Ok(Selection::Before { at });
        }
        let h = header_at(at)?;
        if h.last_offset() as u64 >= offset {
            break h;
        }
        at += h.total_bytes;
    };
    if first.base_offset as u64 >= limit {
        return Ok(Selection::AtLimit);
    }
    if at + first.total_bytes > bytes.len() {
        return Ok(Selection::Partial {
            at,
            total_bytes: first.total_bytes,
        });
    }
    let mut taken = first.total_bytes;
    let mut next_offset = first.last_offset() as u64 + 1;
    while at + taken + BATCH_HEADER_BYTES <= bytes.len() {
        let h = header_at(at + taken)?;
        let whole = at + taken + h.total_bytes <= bytes.len();
        if !whole || taken + h.total_bytes > max_bytes || h.base_offset as u64 >= limit {
            break;
        }
        taken += h.total_bytes;
        next_offset = h.last_offset() as u64 + 1;
    }
    Ok(Selection::Batches {
        at,
        taken,
        first_offset: first.base_offset as u64,
        next_offset,
    })
}

thread_local! {
    /// Turns to read a window: at most `READ_AHEAD_READS_IN_FLIGHT_MAX` at once per thread.
    static THREAD_READS: Rc<Semaphore> = Rc::new(Semaphore::new(READ_AHEAD_READS_IN_FLIGHT_MAX as u64));
    /// Bytes of read-ahead windows alive on this thread, over all its logs.
    static THREAD_BYTES: Cell<usize> = const { Cell::new(0) };
    /// Reads served from read-ahead windows on this thread.
    static THREAD_SERVED: Cell<u64> = const { Cell::new(0) };
}

/// Waits for a turn to read a window on this thread; the turn ends when the guard drops.
pub(crate) async fn read_turn() -> Option<StaticPermit> {
    let reads = THREAD_READS.with(Rc::clone);
    reads.acquire_static_permit(1).await.ok()
}

/// Read-ahead on the calling thread (a log never leaves its thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadAheadStats {
    /// Memory held by read-ahead windows now, at most `READ_AHEAD_BYTES_PER_THREAD_MAX`.
    pub bytes: usize,
    /// Reads served from a window since the thread started, without waiting for a read of
    /// their own.
    pub reads_served: u64,
}

/// Read-ahead on the calling thread, over all its logs.
pub fn read_ahead_stats() -> ReadAheadStats {
    ReadAheadStats {
        bytes: THREAD_BYTES.get(),
        reads_served: THREAD_SERVED.get(),
    }
}

/// A window's share of the thread's budget, given back when the window and its read are gone.
struct Reservation(usize);

impl Reservation {
    fn take(bytes: usize) -> Option<Reservation> {
        let held = THREAD_BYTES.get();
        if held + bytes > READ_AHEAD_BYTES_PER_THREAD_MAX {
            return None;
        }
        THREAD_BYTES.set(held + bytes);
        Some(Reservation(bytes))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        THREAD_BYTES.set(THREAD_BYTES.get() - self.0);
    }
}

/// Segment bytes read ahead of a stream, from `start` (a batch boundary) for up to `len` bytes.
pub(crate) struct Window {
    pub(crate) start: u64,
    pub(crate) len: usize,
    /// `None` while the read runs; then the bytes, or `None` inside if it failed (the reader
    /// then reads for itself and meets the error there).
    result: RefCell<Option<Option<ReadResult>>>,
    done: Notify,
    /// File position after the last batch the window holds whole, once known.
    whole_end: Cell<Option<u64>>,
    _reservation: Reservation,
}

impl Window {
    /// A window for `len` bytes from `start`, if the thread's budget has room for it.
    pub(crate) fn reserve(start: u64, len: usize) -> Option<Rc<Window>> {
        let reservation = Reservation::take(len)?;
        Some(Rc::new(Window {
            start,
            len,
            result: RefCell::new(None),
            done: Notify::default(),
            whole_end: Cell::new(None),
            _reservation: reservation,
        }))
    }

    /// Called by the read once it ends.
    pub(crate) fn complete(&self, bytes: Option<ReadResult>) {
        *self.result.borrow_mut() = Some(bytes);
        self.done.notify_all();
    }

    fn is_done(&self) -> bool {
        self.result.borrow().is_some()
    }

    /// The window's bytes once its read ends; `None` if it failed.
    pub(crate) async fn bytes(&self) -> Option<ReadResult> {
        loop {
            let listen = self.done.listen();
            if let Some(result) = self.result.borrow().as_ref() {
                return result.clone();
            }
            listen.await;
        }
    }

    /// Where the window's whole batches end (its start if it holds none, or failed); `None`
    /// while its read runs.
    fn whole_end(&self) -> Option<u64> {
        if let Some(end) = self.whole_end.get() {
            return Some(end);
        }
        let result = self.result.borrow();
        let bytes = result.as_ref()?;
        let mut at = 0usize;
        if let Some(bytes) = bytes {
            while at + BATCH_HEADER_BYTES <= bytes.len() {
                match BatchHeader::parse(&bytes[at..]) {
                    Ok(h) if at + h.total_bytes <= bytes.len() => at += h.total_bytes,
                    _ => break,
                }
            }
        }
        let end = self.start + at as u64;
        self.whole_end.set(Some(end));
        Some(end)
    }
}

/// Where one reader stopped, and the windows read ahead of it.
pub(crate) struct Stream {
    /// `PartitionLog`'s content generation when the stream began.
    pub(crate) generation: u64,
    /// Base offset of the segment the stream reads.
    pub(crate) base: u64,
    /// The offset the next read continues at, and its batch's file position.
    pub(crate) next_offset: u64,
    pub(crate) next_pos: u64,
    /// Where the last read started (offset, and the file position it read from): a read
    /// there repeats it.
    last_start: Option<(u64, u64)>,
    /// The reader has continued where it stopped at least once: read ahead of it.
    pub(crate) sequential: bool,
    pub(crate) windows: VecDeque<Rc<Window>>,
    last_used: Instant,
}

/// What a stream's windows made of a read.
pub(crate) enum Served {
    /// A window held the batches (a slice of its buffer), ending at file position `end_pos`.
    Batches { batches: ReadBatches, end_pos: u64 },
    /// Nothing is readable at the stream's position (the limit).
    AtLimit,
    /// No window holds the batch: read it from the segment.
    Miss,
}

impl Stream {
    pub(crate) fn new(generation: u64, base: u64, next_offset: u64, next_pos: u64) -> Stream {
        Stream {
            generation,
            base,
            next_offset,
            next_pos,
            last_start: None,
            sequential: false,
            windows: VecDeque::new(),
            last_used: Instant::now(),
        }
    }

    /// Serves a read at the stream's position from its windows, waiting for a window still
    /// being read if it covers the position. Errors are corrupt batch headers.
    pub(crate) async fn serve(&self, max_bytes: usize, limit: u64) -> Result<Served, String> {
        for w in &self.windows {
            if self.next_pos < w.start || self.next_pos >= w.start + w.len as u64 {
                continue;
            }
            let Some(bytes) = w.bytes().await else {
                return Ok(Served::Miss);
            };
            let at = (self.next_pos - w.start) as usize;
            if at >= bytes.len() {
                continue;
            }
            match select(&bytes[at..], self.next_pos, self.next_offset, max_bytes, limit)? {
                Selection::Batches {
                    at: skipped,
                    taken,
                    first_offset,
                    next_offset,
                } => {
                    let at = at + skipped;
                    THREAD_SERVED.set(THREAD_SERVED.get() + 1);
                    return Ok(Served::Batches {
                        batches: ReadBatches {
                            bytes: ReadResult::slice(&bytes, at, taken).expect("slice within the window"),
                            first_offset,
                            next_offset,
                        },
                        end_pos: w.start + (at + taken) as u64,
                    });
                }
                Selection::AtLimit => return Ok(Served::AtLimit),
                Selection::Partial { .. } | Selection::Before { .. } => continue,
            }
        }
        Ok(Served::Miss)
    }

    /// Moves the stream to where a read ended, and forgets the windows wholly behind it.
    pub(crate) fn advance(&mut self, base: u64, next_offset: u64, next_pos: u64) {
        if base != self.base {
            self.windows.clear();
            self.base = base;
            self.last_start = None;
        } else {
            self.last_start = Some((self.next_offset, self.next_pos));
        }
        self.next_offset = next_offset;
        self.next_pos = next_pos;
        self.last_used = Instant::now();
        while let Some(w) = self.windows.front() {
            match w.whole_end() {
                Some(end) if end <= next_pos => {
                    self.windows.pop_front();
                }
                _ => break,
            }
        }
    }

    /// The window to read next, if the stream should read further ahead: `(start, len)` within
    /// `segment_end` (the segment's durable bytes now), sized for reads of `max_bytes`.
    ///
    /// In the active segment only a whole window is read ahead: a reader less than a window
    /// behind the durable end is about to reach the batch cache, where what was read ahead
    /// would go unused, and windows cut short at a moving end would chase it in small reads.
    pub(crate) fn next_window(&self, segment_end: u64, active: bool, max_bytes: usize) -> Option<(u64, usize)> {
        if !self.sequential || self.windows.len() >= READ_AHEAD_WINDOWS_MAX {
            return None;
        }
        let start = match self.windows.back() {
            // One read at a time per stream: the next starts where this one's batches end.
            Some(w) if !w.is_done() => return None,
            Some(w) => {
                let end = w.whole_end().expect("the read is done");
                // A window without a whole batch (a batch larger than the window) makes no
                // progress: plain reads take it from here.
                if end <= w.start {
                    return None;
                }
                end
            }
            None => self.next_pos,
        };
        let len = max_bytes
            .saturating_mul(READ_AHEAD_WINDOW_READS)
            .clamp(READ_AHEAD_WINDOW_BYTES_MIN, READ_AHEAD_WINDOW_BYTES_MAX);
        let left = segment_end.saturating_sub(start);
        if left == 0 || (active && left < len as u64) {
            return None;
        }
        Some((start, len.min(left as usize)))
    }
}

/// The streams of one log, most recently used last.
#[derive(Default)]
pub(crate) struct ReadAhead {
    streams: Vec<Stream>,
}

impl ReadAhead {
    /// Takes out the stream a read at `offset` continues (one of this `generation` that stopped
    /// at `offset`; it is then `sequential`), or else the one whose last read it repeats,
    /// moved back to where that read started. The caller puts it back with `put`.
    pub(crate) fn take(&mut self, generation: u64, offset: u64) -> Option<Stream> {
        self.streams.retain(|s| s.generation == generation);
        if let Some(i) = self.streams.iter().position(|s| s.next_offset == offset) {
            let mut s = self.streams.remove(i);
            s.sequential = true;
            return Some(s);
        }
        let (i, pos) = self
            .streams
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.last_start.filter(|&(o, _)| o == offset).map(|(_, pos)| (i, pos)))?;
        let mut s = self.streams.remove(i);
        s.last_start = None;
        s.next_offset = offset;
        s.next_pos = pos;
        Some(s)
    }

    /// Keeps `stream` as the most recently used, forgetting the least recently used beyond
    /// `READ_AHEAD_STREAMS_MAX` and any other stream that stopped at the same offset.
    pub(crate) fn put(&mut self, stream: Stream) {
        self.streams.retain(|s| s.next_offset != stream.next_offset);
        if self.streams.len() >= READ_AHEAD_STREAMS_MAX {
            self.streams.remove(0);
        }
        self.streams.push(stream);
    }

    /// Forgets streams unused for `READ_AHEAD_IDLE_MS`, giving back their windows.
    pub(crate) fn drop_idle(&mut self, now: Instant) {
        let idle = Duration::from_millis(READ_AHEAD_IDLE_MS);
        self.streams.retain(|s| now.duration_since(s.last_used) < idle);
    }

    pub(crate) fn clear(&mut self) {
        self.streams.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{stamp, testing::build_batch};

    /// Three batches of offsets 0..10, 10..20 and 20..30, with `payload` bytes of records each.
    fn three(payload: usize) -> (Vec<u8>, usize) {
        let mut bytes = Vec::new();
        for i in 0..3 {
            let mut b = build_batch(10, payload, 0, 0);
            stamp(&mut b, i * 10, 0);
            bytes.extend_from_slice(&b);
        }
        let each = bytes.len() / 3;
        (bytes, each)
    }

    #[test]
    fn a_window_is_eight_reads_long_within_its_bounds() {
        let mut s = Stream::new(1, 0, 0, 0);
        s.sequential = true;
        let sealed = |max_bytes| s.next_window(1 << 30, false, max_bytes).map(|(_, len)| len);
        // A reader of 8 KiB from each of 1,000 partitions: 64 KiB windows, not 1 MiB ones.
        assert_eq!(sealed(8 * 1024), Some(64 * 1024));
        assert_eq!(sealed(100), Some(READ_AHEAD_WINDOW_BYTES_MIN));
        assert_eq!(sealed(128 * 1024), Some(1024 * 1024));
        assert_eq!(sealed(1024 * 1024), Some(READ_AHEAD_WINDOW_BYTES_MAX));
        // Cut at a sealed segment's end; in the active segment, only a whole window.
        assert_eq!(s.next_window(10_000, false, 8 * 1024), Some((0, 10_000)));
        assert_eq!(s.next_window(10_000, true, 8 * 1024), None);
        assert_eq!(s.next_window(64 * 1024, true, 8 * 1024), Some((0, 64 * 1024)));
    }

    #[test]
    fn select_takes_whole_batches_within_max_bytes_from_the_one_holding_the_offset() {
        let (bytes, each) = three(500);
        let got = select(&bytes, 0, 15, 2 * each, u64::MAX).unwrap();
        assert_eq!(
            got,
            Selection::Batches {
                at: each,
                taken: 2 * each,
                first_offset: 10,
                next_offset: 30
            }
        );
        // The first batch is whole even beyond max_bytes; the next one does not fit.
        let got = select(&bytes, 0, 0, 1, u64::MAX).unwrap();
        assert_eq!(
            got,
            Selection::Batches {
                at: 0,
                taken: each,
                first_offset: 0,
                next_offset: 10
            }
        );
    }

    #[test]
    fn select_stops_at_the_limit_and_says_when_the_buffer_falls_short() {
        let (bytes, each) = three(500);
        assert_eq!(
            select(&bytes, 0, 0, usize::MAX, 20).unwrap(),
            Selection::Batches {
                at: 0,
                taken: 2 * each,
                first_offset: 0,
                next_offset: 20
            }
        );
        assert_eq!(select(&bytes, 0, 20, usize::MAX, 20).unwrap(), Selection::AtLimit);
        let cut = &bytes[..2 * each + 100];
        assert_eq!(
            select(cut, 0, 25, usize::MAX, u64::MAX).unwrap(),
            Selection::Partial {
                at: 2 * each,
                total_bytes: each
            }
        );
        assert_eq!(
            select(&bytes[..2 * each + 10], 0, 25, usize::MAX, u64::MAX).unwrap(),
            Selection::Before { at: 2 * each }
        );
        assert_eq!(
            select(&bytes, 0, 30, usize::MAX, u64::MAX).unwrap(),
            Selection::Before { at: 3 * each }
        );
    }

    #[test]
    fn select_names_the_position_of_a_header_that_does_not_parse() {
        let (mut bytes, each) = three(500);
        bytes[each + 8..each + 12].copy_from_slice(&3i32.to_be_bytes()); // the second batch's length
        let err = select(&bytes, 4096, 15, usize::MAX, u64::MAX).unwrap_err();
        assert!(err.contains(&format!("batch at {}", 4096 + each)), "{err}");
    }

    #[test]
    fn the_thread_budget_refuses_a_window_beyond_it_and_gets_bytes_back_on_drop() {
        let before = read_ahead_stats().bytes;
        let w = Window::reserve(0, READ_AHEAD_BYTES_PER_THREAD_MAX - before).expect("fits");
        assert!(Window::reserve(0, 1).is_none());
        drop(w);
        assert_eq!(read_ahead_stats().bytes, before);
        assert!(Window::reserve(0, 1).is_some());
    }

    #[test]
    fn an_idle_reader_gives_its_windows_back_and_a_recent_one_keeps_them() {
        let now = Instant::now();
        let mut ra = ReadAhead::default();
        let before = read_ahead_stats().bytes;
        let half = (READ_AHEAD_BYTES_PER_THREAD_MAX - before) / 2;
        for (offset, idle_ms) in [(100, READ_AHEAD_IDLE_MS + 1), (200, 0)] {
            let mut s = Stream::new(1, 0, offset, 0);
            s.windows.push_back(Window::reserve(0, half).expect("fits"));
            s.last_used = now - Duration::from_millis(idle_ms);
            ra.put(s);
        }
        assert!(Window::reserve(0, half).is_none(), "the budget is spent");
        ra.drop_idle(now);
        assert!(ra.take(1, 100).is_none(), "the idle reader is forgotten");
        assert!(ra.take(1, 200).is_some(), "the recent one is kept");
        assert!(Window::reserve(0, half).is_some(), "the idle reader's bytes are free again");
    }

    #[test]
    fn a_read_where_the_last_one_started_takes_the_stream_back_there_with_its_windows() {
        let mut ra = ReadAhead::default();
        let mut s = Stream::new(1, 0, 10, 4096);
        s.advance(0, 20, 8192);
        s.windows.push_back(Window::reserve(8192, 4096).expect("fits"));
        ra.put(s);
        let s = ra.take(1, 10).expect("a read at 10 repeats the last one");
        assert_eq!((s.next_offset, s.next_pos, s.sequential), (10, 4096, false));
        assert_eq!(s.windows.len(), 1, "the windows stay");
        let mut s = s;
        s.advance(0, 20, 8192);
        ra.put(s);
        let mut s = ra.take(1, 10).expect("and again");
        assert_eq!((s.next_offset, s.next_pos), (10, 4096));
        s.advance(0, 20, 8192);
        ra.put(s);
        let mut s = ra.take(1, 20).expect("a read at 20 continues");
        assert!(s.sequential);
        s.advance(5, 30, 100);
        ra.put(s);
        assert!(ra.take(1, 20).is_none(), "a read that moved to another segment repeats nothing");
    }

    #[test]
    fn streams_are_found_by_offset_and_generation_and_the_oldest_goes_first() {
        let mut ra = ReadAhead::default();
        for i in 0..READ_AHEAD_STREAMS_MAX as u64 + 1 {
            ra.put(Stream::new(1, 0, 100 * (i + 1), 0));
        }
        assert!(ra.take(1, 100).is_none(), "the least recently used was forgotten");
        assert!(ra.take(2, 200).is_none(), "another generation drops them all");
        ra.put(Stream::new(2, 0, 300, 0));
        assert!(ra.take(2, 300).is_some());
        assert!(ra.take(2, 300).is_none(), "taken out until put back");
    }
}
