//! The shard's cache of recently appended record batches, so tailing consumers are served
//! without disk I/O and without copying record bytes.
//!
//! An entry is the batch exactly as the producer sent it (`Bytes`, a slice of the produce
//! request) plus its first 16 header bytes as the log stored them: the log stamps the base
//! offset (bytes 0..8) and the partition leader epoch (bytes 12..16), both outside the CRC. A
//! read answers each batch as two chunks, that stamped head and `batch.slice(16..)`, so the
//! bytes a consumer gets equal the log's byte for byte.
//!
//! Only durable batches are served (below the log's durable end, the rule `PartitionLog::read`
//! follows), and only when the cache holds a contiguous run of batches starting with the one
//! containing the requested offset; anything else is a miss and the caller reads the log.
//!
//! Memory: entries are charged their batch length plus `ENTRY_OVERHEAD_BYTES`, and the oldest
//! entries across the shard's partitions go first once the charge would pass the budget. The
//! charge is a lower bound of what is really kept alive: a batch's `Bytes` shares the produce
//! request frame it came in, so the frame (its other partitions' batches and the request's own
//! fields) lives until the last of its batches leaves every shard's cache. Produce frames are
//! bounded by the broker's `request_bytes_max`; copying small batches out of big frames would
//! tighten the bound at the cost of a copy per append and is not done.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use iouring_storage::constants::BATCH_HEADER_BYTES;
use iouring_storage::LogOffsets;

use crate::TopicPartition;

/// Bytes of the header prefix the log rewrites: base offset (0..8), batch length (8..12) and
/// partition leader epoch (12..16). Everything after it is stored as the producer sent it.
pub(crate) const STAMPED_HEAD_BYTES: usize = 16;

/// What an entry costs beyond its batch bytes: the entry itself, its stamped head and its
/// place in the eviction order (a `TopicPartition` with its topic name).
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// Hit and miss counts of one shard's cache. A miss is a read of durable data the cache could
/// not serve; reads at or past the durable end (nothing to serve) count as neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Bytes charged against the budget.
    pub bytes: usize,
    pub entries: usize,
}

/// Whole batches served from the cache, as chunks to send in order.
#[derive(Debug)]
pub(crate) struct CachedBatches {
    pub chunks: Vec<Bytes>,
    pub first_offset: u64,
    pub next_offset: u64,
}

struct Entry {
    base_offset: u64,
    last_offset: u64,
    /// The batch's first `STAMPED_HEAD_BYTES` as the log stored them.
    head: Bytes,
    /// The batch as the producer sent it (bytes 0..16 unstamped).
    batch: Bytes,
    charged: usize,
}

#[derive(Default)]
struct State {
    /// Per partition, entries in offset order (the order appends are assigned offsets).
    partitions: HashMap<TopicPartition, VecDeque<Entry>>,
    /// Every entry's partition and base offset, oldest first, across partitions. Per
    /// partition it follows that partition's own order, so the oldest entry overall is always
    /// the front of its partition's queue.
    order: VecDeque<(TopicPartition, u64)>,
    bytes: usize,
}

/// One shard's batch cache. Single-threaded: it lives in the shard's `Partitions`.
pub(crate) struct BatchCache {
    bytes_max: usize,
    state: RefCell<State>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl BatchCache {
    pub(crate) fn new(bytes_max: usize) -> Self {
        BatchCache {
            bytes_max,
            state: RefCell::new(State::default()),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    pub(crate) fn stats(&self) -> BatchCacheStats {
        let st = self.state.borrow();
        BatchCacheStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            bytes: st.bytes,
            entries: st.order.len(),
        }
    }

    /// Keeps a batch the log has just assigned `base_offset..=last_offset` and stamped with
    /// `leader_epoch`. Call in offset order per partition, before anything else can append.
    pub(crate) fn insert(&self, tp: &TopicPartition, batch: Bytes, base_offset: u64, last_offset: u64, leader_epoch: i32) {
        assert!(
            batch.len() >= BATCH_HEADER_BYTES,
            "the log accepted a batch shorter than its header"
        );
        assert!(last_offset >= base_offset);
        let charged = batch.len() + ENTRY_OVERHEAD_BYTES;
        if charged > self.bytes_max {
            // It could only be kept by emptying the cache, for one read.
            return;
        }
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(&batch[..BATCH_HEADER_BYTES]);
        iouring_storage::stamp(&mut head, base_offset as i64, leader_epoch);
        let head = Bytes::copy_from_slice(&head[..STAMPED_HEAD_BYTES]);

        let mut st = self.state.borrow_mut();
        let went_back = st
            .partitions
            .get(tp)
            .and_then(|q| q.back())
            .is_some_and(|last| last.last_offset >= base_offset);
        if went_back {
            // Offsets only go back after a truncation; whatever is cached above it is stale.
            Self::remove_locked(&mut st, tp);
        }
        while st.bytes + charged > self.bytes_max {
            Self::evict_oldest_locked(&mut st);
        }
        st.bytes += charged;
        st.order.push_back((tp.clone(), base_offset));
        st.partitions.entry(tp.clone()).or_default().push_back(Entry {
            base_offset,
            last_offset,
            head,
            batch,
            charged,
        });
    }

    fn evict_oldest_locked(st: &mut State) {
        let (tp, base) = st.order.pop_front().expect("the charge is over zero only with entries");
        let queue = st.partitions.get_mut(&tp).expect("every ordered entry has its partition");
        let entry = queue.pop_front().expect("every ordered entry is in its partition");
        assert_eq!(entry.base_offset, base, "eviction order follows each partition's order");
        st.bytes -= entry.charged;
        if queue.is_empty() {
            st.partitions.remove(&tp);
        }
    }

    fn remove_locked(st: &mut State, tp: &TopicPartition) {
        if let Some(queue) = st.partitions.remove(tp) {
            st.bytes -= queue.iter().map(|e| e.charged).sum::<usize>();
            st.order.retain(|(t, _)| t != tp);
        }
    }

    /// Forgets every entry of `tp`: its log was truncated, dropped or reconfigured.
    pub(crate) fn remove(&self, tp: &TopicPartition) {
        Self::remove_locked(&mut self.state.borrow_mut(), tp);
    }

    /// Forgets every entry (shutdown).
    pub(crate) fn clear(&self) {
        *self.state.borrow_mut() = State::default();
    }

    /// Forgets the entries of `tp` wholly below `log_start` (retention moved it up).
    pub(crate) fn discard_below(&self, tp: &TopicPartition, log_start: u64) {
        let mut st = self.state.borrow_mut();
        let below = st
            .partitions
            .get(tp)
            .is_some_and(|q| q.front().is_some_and(|e| e.last_offset < log_start));
        if below {
            // Rare (once per retention pass that deleted cached data): rebuild rather than
            // search the global order for each entry.
            let queue = st.partitions.get_mut(tp).expect("checked above");
            let mut freed = 0;
            while queue.front().is_some_and(|e| e.last_offset < log_start) {
                freed += queue.pop_front().expect("checked").charged;
            }
            if queue.is_empty() {
                st.partitions.remove(tp);
            }
            st.bytes -= freed;
            st.order.retain(|(t, base)| t != tp || *base >= log_start);
        }
    }

    /// Whole durable batches of `tp` from `offset`, up to `max_bytes` (the first batch whole
    /// even if larger), if the cache holds the batch containing `offset`. `offsets` are the
    /// log's current ones: only batches below `durable_end` are served, and nothing below
    /// `log_start`.
    pub(crate) fn read(&self, tp: &TopicPartition, offset: u64, max_bytes: usize, offsets: LogOffsets) -> Option<CachedBatches> {
        if offset < offsets.log_start || offset >= offsets.durable_end {
            // Out of range or nothing durable yet: the log answers without I/O.
            return None;
        }
        let found = self.read_durable(tp, offset, max_bytes, offsets.durable_end);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.set(counter.get() + 1);
        found
    }

    fn read_durable(&self, tp: &TopicPartition, offset: u64, max_bytes: usize, durable_end: u64) -> Option<CachedBatches> {
        let st = self.state.borrow();
        let queue = st.partitions.get(tp)?;
        let first = queue.partition_point(|e| e.last_offset < offset);
        let entry = queue.get(first)?;
        if entry.base_offset > offset || entry.last_offset >= durable_end {
            return None;
        }
        let mut chunks = Vec::new();
        let mut len = 0usize;
        let mut next_offset = entry.base_offset;
        for e in queue.range(first..) {
            let contiguous = e.base_offset == next_offset;
            let fits = len == 0 || len + e.batch.len() <= max_bytes;
            if !contiguous || !fits || e.last_offset >= durable_end {
                break;
            }
            chunks.push(e.head.clone());
            chunks.push(e.batch.slice(STAMPED_HEAD_BYTES..));
            len += e.batch.len();
            next_offset = e.last_offset + 1;
        }
        Some(CachedBatches {
            chunks,
            first_offset: entry.base_offset,
            next_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iouring_storage::testing::build_batch;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    /// A batch of `records` records whose header fields the log will overwrite hold junk, as a
    /// producer may send them.
    fn batch(records: i32, payload: usize) -> Bytes {
        let mut b = build_batch(records, payload, 1, 2);
        b[0..8].copy_from_slice(&[0xAB; 8]);
        b[12..16].copy_from_slice(&[0xCD; 4]);
        Bytes::from(b)
    }

    fn offsets(log_start: u64, durable_end: u64) -> LogOffsets {
        LogOffsets {
            log_start,
            durable_end,
            log_end: durable_end + 100,
            last_stable: durable_end,
        }
    }

    fn join(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.to_vec()).collect()
    }

    /// Inserts `n` batches of 2 records each from offset `from`; returns them stamped.
    fn fill(cache: &BatchCache, tp: &TopicPartition, from: u64, n: u64, payload: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let b = batch(2, payload);
                let base = from + 2 * i;
                cache.insert(tp, b.clone(), base, base + 1, 7);
                let mut stored = b.to_vec();
                iouring_storage::stamp(&mut stored, base as i64, 7);
                stored
            })
            .collect()
    }

    #[test]
    fn serves_a_contiguous_run_with_stamped_headers_zero_copy() {
        let cache = BatchCache::new(1 << 20);
        let stored = fill(&cache, &tp(0), 10, 4, 100);
        // Offset 13 lies inside the second batch (12..=13): it comes first, whole.
        let got = cache.read(&tp(0), 13, usize::MAX, offsets(0, 18)).expect("a hit");
        assert_eq!((got.first_offset, got.next_offset), (12, 18));
        assert_eq!(join(&got.chunks), stored[1..].concat());
        assert_eq!(got.chunks.len(), 6, "two chunks per batch");
        assert_eq!(got.chunks[0].len(), STAMPED_HEAD_BYTES);
        // The body chunk points into the producer's bytes: nothing was copied.
        let original = cache.state.borrow().partitions[&tp(0)][1].batch.clone();
        assert_eq!(got.chunks[1].as_ptr(), original[STAMPED_HEAD_BYTES..].as_ptr());
        assert_eq!(cache.stats().hits, 1);
    }

    #[test]
    fn only_durable_batches_are_served() {
        let cache = BatchCache::new(1 << 20);
        fill(&cache, &tp(0), 0, 3, 10);
        // Durable end 4: batches 0..=1 and 2..=3 only.
        let got = cache.read(&tp(0), 0, usize::MAX, offsets(0, 4)).unwrap();
        assert_eq!(got.next_offset, 4);
        assert_eq!(got.chunks.len(), 4);
        // At or past the durable end: not served, and not a miss either.
        assert!(cache.read(&tp(0), 4, usize::MAX, offsets(0, 4)).is_none());
        assert!(cache.read(&tp(0), 5, usize::MAX, offsets(0, 4)).is_none());
        // Below the log start: the log answers (with an error).
        assert!(cache.read(&tp(0), 0, usize::MAX, offsets(2, 6)).is_none());
        assert_eq!(
            cache.stats(),
            BatchCacheStats {
                hits: 1,
                misses: 0,
                ..cache.stats()
            }
        );
    }

    #[test]
    fn max_bytes_keeps_whole_batches_and_the_first_always() {
        let cache = BatchCache::new(1 << 20);
        let stored = fill(&cache, &tp(0), 0, 3, 100);
        let one = stored[0].len();
        let got = cache.read(&tp(0), 0, 1, offsets(0, 6)).unwrap();
        assert_eq!((got.next_offset, join(&got.chunks).len()), (2, one));
        let got = cache.read(&tp(0), 0, 2 * one + one / 2, offsets(0, 6)).unwrap();
        assert_eq!((got.next_offset, join(&got.chunks).len()), (4, 2 * one));
    }

    #[test]
    fn a_gap_ends_the_run_and_a_missing_first_batch_is_a_miss() {
        let cache = BatchCache::new(1 << 20);
        fill(&cache, &tp(0), 10, 2, 10);
        fill(&cache, &tp(0), 20, 1, 10);
        let got = cache.read(&tp(0), 10, usize::MAX, offsets(0, 30)).unwrap();
        assert_eq!(got.next_offset, 14, "the run stops before the gap");
        assert!(
            cache.read(&tp(0), 9, usize::MAX, offsets(0, 30)).is_none(),
            "before the first entry"
        );
        assert!(cache.read(&tp(0), 15, usize::MAX, offsets(0, 30)).is_none(), "inside the gap");
        assert!(cache.read(&tp(1), 0, usize::MAX, offsets(0, 30)).is_none(), "another partition");
        assert_eq!(cache.stats().misses, 3);
    }

    #[test]
    fn the_budget_evicts_the_oldest_entries_across_partitions() {
        let one = batch(2, 1000).len() + ENTRY_OVERHEAD_BYTES;
        let cache = BatchCache::new(3 * one);
        fill(&cache, &tp(0), 0, 1, 1000);
        fill(&cache, &tp(1), 0, 1, 1000);
        fill(&cache, &tp(0), 2, 1, 1000);
        assert_eq!(cache.stats().bytes, 3 * one);
        // A fourth entry pushes out the oldest: partition 0's first batch.
        fill(&cache, &tp(1), 2, 1, 1000);
        let s = cache.stats();
        assert_eq!((s.bytes, s.entries), (3 * one, 3));
        assert!(cache.read(&tp(0), 0, usize::MAX, offsets(0, 10)).is_none());
        assert_eq!(cache.read(&tp(0), 2, usize::MAX, offsets(0, 10)).unwrap().next_offset, 4);
        assert_eq!(cache.read(&tp(1), 0, usize::MAX, offsets(0, 10)).unwrap().next_offset, 4);
        // A batch larger than the whole budget is not kept, and evicts nothing.
        cache.insert(&tp(2), batch(1, 4 * one), 0, 0, 0);
        assert_eq!(cache.stats().entries, 3);
    }

    #[test]
    fn stale_entries_go_on_remove_truncation_and_retention() {
        let cache = BatchCache::new(1 << 20);
        fill(&cache, &tp(0), 0, 5, 10);
        fill(&cache, &tp(1), 0, 2, 10);
        cache.discard_below(&tp(0), 4);
        assert!(cache.read(&tp(0), 2, usize::MAX, offsets(0, 10)).is_none());
        assert_eq!(cache.read(&tp(0), 4, usize::MAX, offsets(4, 10)).unwrap().next_offset, 10);
        assert_eq!(cache.stats().entries, 5);

        // Offsets going back (a truncation the cache was not told of) drop what was above.
        let b = batch(2, 10);
        cache.insert(&tp(0), b.clone(), 6, 7, 9);
        assert_eq!(cache.stats().entries, 3);
        let got = cache.read(&tp(0), 6, usize::MAX, offsets(0, 8)).unwrap();
        let mut stored = b.to_vec();
        iouring_storage::stamp(&mut stored, 6, 9);
        assert_eq!(join(&got.chunks), stored);

        cache.remove(&tp(0));
        assert!(cache.read(&tp(0), 6, usize::MAX, offsets(0, 8)).is_none());
        let s = cache.stats();
        assert_eq!((s.entries, s.bytes), (2, 2 * (b.len() + ENTRY_OVERHEAD_BYTES)));
        // Eviction still works after removals: the order holds no stale entries.
        let small = BatchCache::new(s.bytes);
        fill(&small, &tp(0), 0, 2, 10);
        small.remove(&tp(0));
        fill(&small, &tp(1), 0, 3, 10);
        assert_eq!(small.stats().entries, 2);
        cache.clear();
        assert_eq!(cache.stats().entries, 0);
    }
}
