//! The broker's bounds, each with its reason.

/// Members (plus ids handed out and not yet used) one group holds. Kafka's group.max.size is
/// unbounded by default; a bound keeps one misbehaving client from growing a group without end.
pub const GROUP_MEMBERS_MAX: usize = 10_000;

/// Groups one shard coordinates, counting those that hold only committed offsets.
pub const GROUPS_PER_SHARD_MAX: usize = 1_000_000;

/// Bytes of `__consumer_offsets` read per step while a shard loads its groups at start-up.
pub const OFFSETS_LOAD_READ_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How often a shard lets its groups' deadlines pass (sessions, rebalances). Kafka's timers
/// are exact; a 100 ms tick is well inside the shortest session timeout allowed (1 s).
pub const GROUP_TICK_MS: u64 = 100;

/// How often a shard looks whether a write on another shard found the disk full, to give back
/// its partitions' spare segment files (`iouring_storage::release_spares_if_wanted`: one atomic
/// load when nothing was asked). A partition that failed meanwhile comes back at its first
/// write after that.
pub const SPARES_CHECK_MS: u64 = 1000;

/// How often a shard looks for transactions past their timeout (Kafka checks every 10 s,
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`).
pub const TXN_TICK_MS: u64 = 1000;

/// How often a shard publishes the consumer lag of its groups: well inside the 2 minutes after
/// which an unrefreshed gauge disappears (`metrics::GAUGE_IDLE_MAX`).
pub const LAG_PUBLISH_MS: u64 = 5000;

const _: () = assert!(GROUP_TICK_MS < 1000);
