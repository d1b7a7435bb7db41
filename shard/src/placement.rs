//! Placement of partitions on shards: balanced by count, and recorded by the caller so that it
//! survives restarts and can change later.

use crate::ShardId;

/// Picks a shard for each of `new_partitions` partitions, given how many each of the
/// `shards` owns today, always taking the least loaded (lowest id on ties).
pub fn assign(current_counts: &[usize], new_partitions: usize) -> Vec<ShardId> {
    assert!(!current_counts.is_empty(), "at least one shard");
    let mut counts = current_counts.to_vec();
    (0..new_partitions)
        .map(|_| {
            let (i, _) = counts.iter().enumerate().min_by_key(|&(i, &c)| (c, i)).expect("non-empty");
            counts[i] += 1;
            ShardId(i)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_evenly_and_fills_the_emptiest_first() {
        let a = assign(&[0, 0], 5);
        assert_eq!(a.iter().filter(|s| s.0 == 0).count(), 3);
        assert_eq!(a.iter().filter(|s| s.0 == 1).count(), 2);
        let b = assign(&[10, 2, 5], 6);
        assert!(b[..3].iter().all(|s| s.0 == 1));
        let mut counts = [10, 2, 5];
        for s in &b {
            counts[s.0] += 1;
        }
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 5);
    }
}
