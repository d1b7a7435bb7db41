//! Cluster metadata: topics, their ids, configs and partition placement, persisted across
//! restarts and shared by every shard as an immutable snapshot.
//!
//! Readers load the current snapshot without a lock (`ArcSwap`). Writers (admin requests,
//! rare) serialize on a mutex, write the whole document durably (temporary file, fsync,
//! rename, directory fsync), then publish the new snapshot. The document is small: it lists
//! topics, not data. On disk: `<data_dir>/__cluster_metadata/cluster.json`.
//!
//! Beside it a reserve file (`reserve`, at least `RESERVE_BYTES_MIN` of written zeros) holds
//! space for a metadata write that frees space: on a full disk, deleting a topic gives up the
//! reserve to write the document, then its partitions' files go. Without it, DeleteTopics on a
//! full disk failed (its write needs a new file), and an operator could not free space through
//! Kafka's API. The reserve is written again at the next metadata write that finds room.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use iouring_storage::LogConfig;
use serde::{Deserialize, Serialize};
use shard::{ShardId, TopicPartition};

use crate::topic_config::Effective;

const FORMAT_VERSION: u32 = 1;
const META_DIR: &str = "__cluster_metadata";
const META_FILE: &str = "cluster.json";
const RESERVE_FILE: &str = "reserve";
/// The reserve holds at least this much, and twice the document when that is more.
const RESERVE_BYTES_MIN: usize = 1024 * 1024;

/// Producer ids reserved in the metadata at a time, as Kafka's controller hands them to
/// brokers: one metadata write (an fsync) per this many InitProducerId requests.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// One topic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    /// Topic id (KIP-516), as the 16 bytes of a UUID.
    pub id: [u8; 16],
    /// Owner shard of each partition, by partition index.
    pub placement: Vec<usize>,
    /// Configs set on this topic (not defaults).
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.id)
    }

    pub fn partitions(&self) -> i32 {
        self.placement.len() as i32
    }
}

/// The whole metadata document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterMeta {
    pub format_version: u32,
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Every producer id below this may have been handed out (InitProducerId); ids are
    /// reserved here, durably, a block at a time before any id of the block is used, so no id
    /// is ever handed out twice, restarts included. Absent in files written before it existed.
    #[serde(default)]
    pub producer_ids_reserved: i64,
}

impl ClusterMeta {
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == *id.as_bytes())
    }

    /// Partitions per shard today.
    pub fn shard_load(&self, shards: usize) -> Vec<usize> {
        let mut counts = vec![0; shards];
        for t in self.topics.values() {
            for &s in &t.placement {
                if s < shards {
                    counts[s] += 1;
                }
            }
        }
        counts
    }
}

/// Why a metadata change failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is unreadable: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("every producer id has been handed out")]
    ProducerIdsExhausted,
}

/// The metadata of this broker, shared by all shards.
pub struct MetaStore {
    dir: PathBuf,
    current: ArcSwap<ClusterMeta>,
    write_lock: Mutex<()>,
    /// The producer ids reserved and not yet handed out: `next..end`.
    producer_ids: Mutex<std::ops::Range<i64>>,
    shards: usize,
    broker_defaults: Vec<(String, String)>,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore")
            .field("dir", &self.dir)
            .field("topics", &self.current.load().topics.len())
            .finish()
    }
}

/// Kafka's rules for topic names.
pub fn valid_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be `.` or `..`".into());
    }
    if name.len() > 249 {
        return Err(format!("topic name is {} characters, more than 249", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "topic name contains `{c}`; only ASCII letters, digits, `.`, `_` and `-` are legal"
        ));
    }
    Ok(())
}

impl MetaStore {
    /// Loads the metadata of `data_dir`, creating an empty cluster on first start. Partitions
    /// placed on shards that no longer exist (fewer cores now) move to the least loaded ones.
    pub fn open(data_dir: &Path, shards: usize, broker_defaults: Vec<(String, String)>) -> Result<Arc<MetaStore>, MetaError> {
        let dir = data_dir.join(META_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| MetaError::Io {
            op: "creating",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(META_FILE);
        let _ = std::fs::remove_file(dir.join(format!("{META_FILE}.tmp")));
        let _ = std::fs::remove_file(dir.join(format!("{RESERVE_FILE}.tmp")));
        let (mut meta, fresh) = match std::fs::read(&path) {
            Ok(bytes) => {
                let meta: ClusterMeta = serde_json::from_slice(&bytes).map_err(|e| MetaError::Corrupt {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                if meta.format_version != FORMAT_VERSION {
                    return Err(MetaError::Corrupt {
                        path,
                        detail: format!("format version {} is not {FORMAT_VERSION}", meta.format_version),
                    });
                }
                (meta, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                ClusterMeta {
                    format_version: FORMAT_VERSION,
                    cluster_id: uuid::Uuid::new_v4().simple().to_string(),
                    topics: BTreeMap::new(),
                    producer_ids_reserved: 0,
                },
                true,
            ),
            Err(source) => {
                return Err(MetaError::Io {
                    op: "reading",
                    path,
                    source,
                })
            }
        };
        let mut moved = 0;
        let mut load = meta.shard_load(shards);
        for t in meta.topics.values_mut() {
            for s in t.placement.iter_mut() {
                if *s >= shards {
                    let new = shard::placement::assign(&load, 1)[0].0;
                    load[new] += 1;
                    *s = new;
                    moved += 1;
                }
            }
        }
        let store = MetaStore {
            dir,
            current: ArcSwap::from_pointee(meta.clone()),
            write_lock: Mutex::new(()),
            // Nothing reserved by this process yet: the first id reserves a block after every
            // id an earlier process may have handed out.
            producer_ids: Mutex::new(0..0),
            shards,
            broker_defaults,
        };
        if fresh || moved > 0 {
            store.persist(&meta, false)?;
        } else {
            store.keep_reserve(serde_json::to_vec_pretty(&meta).expect("metadata serializes").len());
        }
        if moved > 0 {
            tracing::info!(target: "broker", moved, shards, "partitions moved to existing shards");
        }
        Ok(Arc::new(store))
    }

    pub fn snapshot(&self) -> Arc<ClusterMeta> {
        self.current.load_full()
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn broker_defaults(&self) -> &[(String, String)] {
        &self.broker_defaults
    }

    /// Effective configs of a topic.
    pub fn effective(&self, topic: &TopicMeta) -> Effective {
        Effective::resolve(&self.broker_defaults, &topic.configs)
    }

    /// The owner shard of a partition, if it exists.
    pub fn owner(meta: &ClusterMeta, tp: &TopicPartition) -> Option<ShardId> {
        let t = meta.topics.get(&tp.topic)?;
        usize::try_from(tp.partition)
            .ok()
            .and_then(|p| t.placement.get(p))
            .map(|&s| ShardId(s))
    }

    /// The log configuration of a partition, or `None` if it does not exist (the shard's
    /// provider).
    pub fn log_config(&self, tp: &TopicPartition) -> Option<LogConfig> {
        let meta = self.current.load();
        let t = meta.topics.get(&tp.topic)?;
        if tp.partition < 0 || tp.partition >= t.partitions() {
            return None;
        }
        Some(self.effective(t).log_config())
    }

    /// A producer id from the block already reserved, if one is left and nobody else is
    /// reserving. Never blocks: for the reactor, before falling back to `next_producer_id`.
    pub fn try_next_producer_id(&self) -> Option<i64> {
        let mut ids = self.producer_ids.try_lock().ok()?;
        ids.next()
    }

    /// A producer id never handed out before, by this process or an earlier one. When the
    /// reserved block is used up, reserves the next one durably first. Blocking (fsync):
    /// call from a blocking thread.
    pub fn next_producer_id(&self) -> Result<i64, MetaError> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(id) = ids.next() {
            return Ok(id);
        }
        let start = self.update(|m, _| {
            let start = m.producer_ids_reserved;
            m.producer_ids_reserved = start.checked_add(PRODUCER_ID_BLOCK_SIZE).ok_or(MetaError::ProducerIdsExhausted)?;
            Ok(start)
        })??;
        tracing::debug!(target: "broker", start, size = PRODUCER_ID_BLOCK_SIZE, "producer id block reserved");
        *ids = start..start + PRODUCER_ID_BLOCK_SIZE;
        Ok(ids.next().expect("a fresh block is not empty"))
    }

    /// Applies `change` to a copy of the metadata; if it returns Ok, persists and publishes
    /// the copy. Blocking (fsync): call from a blocking thread, not a shard's reactor.
    pub fn update<R, E>(&self, change: impl FnOnce(&mut ClusterMeta, usize) -> Result<R, E>) -> Result<Result<R, E>, MetaError> {
        self.update_inner(change, false)
    }

    /// `update` for a change that frees disk space (deleting a topic): on a full disk its
    /// write may take the reserve's space (see the module comment).
    pub fn update_freeing<R, E>(&self, change: impl FnOnce(&mut ClusterMeta, usize) -> Result<R, E>) -> Result<Result<R, E>, MetaError> {
        self.update_inner(change, true)
    }

    fn update_inner<R, E>(
        &self,
        change: impl FnOnce(&mut ClusterMeta, usize) -> Result<R, E>,
        may_use_reserve: bool,
    ) -> Result<Result<R, E>, MetaError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = (*self.current.load_full()).clone();
        let r = match change(&mut next, self.shards) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        self.persist(&next, may_use_reserve)?;
        self.current.store(Arc::new(next));
        Ok(Ok(r))
    }

    /// Writes the document durably; on a full disk, when allowed, gives up the reserve and
    /// tries once more. Then keeps the reserve, if there is room for it.
    fn persist(&self, meta: &ClusterMeta, may_use_reserve: bool) -> Result<(), MetaError> {
        let bytes = serde_json::to_vec_pretty(meta).expect("metadata serializes");
        match self.write_document(&bytes) {
            Err(MetaError::Io { source, .. })
                if may_use_reserve && source.kind() == std::io::ErrorKind::StorageFull && self.give_up_reserve() =>
            {
                tracing::warn!(target: "broker", "disk full: the metadata write takes the reserved space");
                self.write_document(&bytes)?;
            }
            written => written?,
        }
        self.keep_reserve(bytes.len());
        Ok(())
    }

    fn write_document(&self, bytes: &[u8]) -> Result<(), MetaError> {
        let path = self.dir.join(META_FILE);
        let tmp = self.dir.join(format!("{META_FILE}.tmp"));
        let written = write_durably(&tmp, |f| f.write_all(bytes)).and_then(|()| {
            std::fs::rename(&tmp, &path).map_err(io_error("renaming", &path))?;
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error("syncing", &self.dir))
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Deletes the reserve; whether there was one to delete.
    fn give_up_reserve(&self) -> bool {
        std::fs::remove_file(self.dir.join(RESERVE_FILE)).is_ok()
    }

    /// Makes sure the reserve holds at least `RESERVE_BYTES_MIN` and twice a document of
    /// `document_bytes`. A full disk leaves it missing or short, with a warning, until a later
    /// metadata write finds room.
    fn keep_reserve(&self, document_bytes: usize) {
        let path = self.dir.join(RESERVE_FILE);
        let want = RESERVE_BYTES_MIN.max(2 * document_bytes);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= want as u64) {
            return;
        }
        let tmp = self.dir.join(format!("{RESERVE_FILE}.tmp"));
        let zeros = |f: &mut std::fs::File| std::io::copy(&mut std::io::repeat(0).take(want as u64), f).map(|_| ());
        let kept = write_durably(&tmp, zeros).and_then(|()| std::fs::rename(&tmp, &path).map_err(io_error("renaming", &path)));
        if let Err(e) = kept {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(target: "broker", error = %e, bytes = want,
                "cannot keep the metadata reserve; on a full disk DeleteTopics fails until space frees");
        }
    }
}

/// Creates `path`, fills it with `fill` and fsyncs it.
fn write_durably(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<(), MetaError> {
    let mut f = std::fs::File::create(path).map_err(io_error("creating", path))?;
    fill(&mut f).map_err(io_error("writing", path))?;
    f.sync_all().map_err(io_error("syncing", path))
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MetaError {
    let path = path.to_owned();
    move |source| MetaError::Io { op, path, source }
}

/// A fresh producer id: from the reserved block on the reactor when one is left, else on a
/// blocking thread (reserving the next block fsyncs the metadata).
pub async fn allocate_producer_id(meta: &Arc<MetaStore>) -> Result<i64, MetaError> {
    if let Some(id) = meta.try_next_producer_id() {
        return Ok(id);
    }
    let meta = meta.clone();
    glommio::executor().spawn_blocking(move || meta.next_producer_id()).await
}

/// Adds a topic to `meta`, placing its partitions on the least loaded shards.
pub fn add_topic(meta: &mut ClusterMeta, shards: usize, name: &str, partitions: i32, configs: BTreeMap<String, String>) -> TopicMeta {
    let load = meta.shard_load(shards);
    let placement = shard::placement::assign(&load, partitions as usize)
        .into_iter()
        .map(|s| s.0)
        .collect();
    let topic = TopicMeta {
        name: name.to_owned(),
        id: *uuid::Uuid::new_v4().as_bytes(),
        placement,
        configs,
    };
    meta.topics.insert(name.to_owned(), topic.clone());
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_survive_reopen_and_move_off_vanished_shards() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path(), 4, vec![]).unwrap();
        store
            .update(|m, n| Ok::<_, ()>(add_topic(m, n, "t", 8, BTreeMap::new())))
            .unwrap()
            .unwrap();
        let before = store.snapshot();
        assert_eq!(before.shard_load(4), vec![2, 2, 2, 2]);
        drop(store);
        let again = MetaStore::open(dir.path(), 4, vec![]).unwrap();
        assert_eq!(*again.snapshot(), *before);
        drop(again);
        let fewer = MetaStore::open(dir.path(), 2, vec![]).unwrap();
        let t = &fewer.snapshot().topics["t"];
        assert!(t.placement.iter().all(|&s| s < 2));
        assert_eq!(fewer.snapshot().shard_load(2), vec![4, 4]);
    }

    #[test]
    fn a_failed_change_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path(), 1, vec![]).unwrap();
        let r = store.update(|m, n| {
            add_topic(m, n, "x", 1, BTreeMap::new());
            Err::<(), _>("no")
        });
        assert!(matches!(r, Ok(Err("no"))));
        assert!(store.snapshot().topics.is_empty());
    }

    #[test]
    fn corrupt_metadata_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
        std::fs::write(dir.path().join(META_DIR).join(META_FILE), b"{ not json").unwrap();
        assert!(matches!(MetaStore::open(dir.path(), 1, vec![]), Err(MetaError::Corrupt { .. })));
    }

    #[test]
    fn producer_ids_are_unique_across_threads_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2 {
            let store = MetaStore::open(dir.path(), 1, vec![]).unwrap();
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        (0..600)
                            .map(|_| store.try_next_producer_id().unwrap_or_else(|| store.next_producer_id().unwrap()))
                            .collect::<Vec<i64>>()
                    })
                })
                .collect();
            for t in threads {
                for id in t.join().unwrap() {
                    assert!(id >= 0);
                    assert!(seen.insert(id), "producer id {id} handed out twice");
                }
            }
            // A restart never reuses the rest of a reserved block.
            assert!(store.snapshot().producer_ids_reserved >= 2400);
        }
        assert_eq!(seen.len(), 4800);
    }

    #[test]
    fn metadata_written_before_producer_ids_existed_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
        let old = r#"{"format_version": 1, "cluster_id": "c", "topics": {}}"#;
        std::fs::write(dir.path().join(META_DIR).join(META_FILE), old).unwrap();
        let store = MetaStore::open(dir.path(), 1, vec![]).unwrap();
        assert_eq!(store.next_producer_id().unwrap(), 0);
        assert_eq!(store.snapshot().producer_ids_reserved, PRODUCER_ID_BLOCK_SIZE);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(valid_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(valid_topic_name(bad).is_err(), "{bad}");
        }
    }
}
