//! Message keys: `key-{k}` for each `k` below the workload's key space, and the partition each
//! goes to (CRC-32C of the key, modulo the topic's partitions).
//!
//! A key space of up to `KEY_TABLE_KEYS_MAX` keys is computed once, before the run, and shared
//! by the producers: formatting and hashing every message's key took a fifth of perf's CPU in
//! the keyed workload (100 B messages at 2.6 million a second, `perf record`), which perf then
//! did not have for producing. A larger key space is computed per message, as before.

use std::io::Write as _;

use crate::constants::KEY_TABLE_KEYS_MAX;

/// Longest key: "key-" and the 20 digits of `u64::MAX`.
pub const KEY_BYTES_MAX: usize = 24;

/// The keys of a key space and their partitions.
#[derive(Debug)]
pub struct Keys {
    partitions: usize,
    table: Option<Table>,
}

/// Every key's bytes, back to back, and its partition.
#[derive(Debug)]
struct Table {
    text: Vec<u8>,
    /// Where key `k` ends in `text`; it starts where key `k - 1` ends.
    ends: Vec<u32>,
    partition: Vec<u32>,
}

impl Keys {
    /// Keys below `key_space` over `partitions` partitions (at least one), tabled if the space
    /// is small enough.
    pub fn new(key_space: u64, partitions: usize) -> Keys {
        let partitions = partitions.max(1);
        let table = (key_space <= KEY_TABLE_KEYS_MAX).then(|| {
            let n = key_space as usize;
            let mut t = Table {
                text: Vec::with_capacity(n * 10),
                ends: Vec::with_capacity(n),
                partition: Vec::with_capacity(n),
            };
            let mut buf = [0u8; KEY_BYTES_MAX];
            for k in 0..key_space {
                let key = format(k, &mut buf);
                t.text.extend_from_slice(key);
                t.ends.push(t.text.len() as u32);
                t.partition.push(partition_of(key, partitions) as u32);
            }
            t
        });
        Keys { partitions, table }
    }

    /// Key `k`'s bytes (from the table, or formatted into `scratch`) and its partition.
    pub fn get<'a>(&'a self, k: u64, scratch: &'a mut [u8; KEY_BYTES_MAX]) -> (&'a [u8], usize) {
        if let Some(t) = &self.table {
            if let Some(&end) = t.ends.get(k as usize) {
                let start = if k == 0 { 0 } else { t.ends[k as usize - 1] as usize };
                return (&t.text[start..end as usize], t.partition[k as usize] as usize);
            }
        }
        let key = format(k, scratch);
        (key, partition_of(key, self.partitions))
    }
}

fn format(k: u64, buf: &mut [u8; KEY_BYTES_MAX]) -> &[u8] {
    let mut cursor = &mut buf[..];
    // Cannot fail: the longest key fits in the buffer.
    let _ = write!(cursor, "key-{k}");
    let len = KEY_BYTES_MAX - cursor.len();
    &buf[..len]
}

fn partition_of(key: &[u8], partitions: usize) -> usize {
    crc32c::crc32c(key) as usize % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table gives what formatting and hashing give, and a key space too large for a table
    /// computes the same per key.
    #[test]
    fn tabled_and_computed_keys_agree() {
        let tabled = Keys::new(5000, 64);
        let computed = Keys::new(KEY_TABLE_KEYS_MAX + 1, 64);
        assert!(tabled.table.is_some() && computed.table.is_none());
        let (mut a, mut b) = ([0u8; KEY_BYTES_MAX], [0u8; KEY_BYTES_MAX]);
        for k in [0, 1, 9, 10, 99, 100, 4999] {
            let (key, p) = tabled.get(k, &mut a);
            assert_eq!(key, format!("key-{k}").as_bytes());
            assert_eq!(p, crc32c::crc32c(key) as usize % 64);
            assert_eq!((key.to_vec(), p), {
                let (key, p) = computed.get(k, &mut b);
                (key.to_vec(), p)
            });
        }
        let (key, _) = computed.get(u64::MAX, &mut b);
        assert_eq!(key, format!("key-{}", u64::MAX).as_bytes());
    }
}
