//! Starting one pinned executor per shard, checking that each is really up, and routing ops
//! to a partition's owner.

use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Instant;

use futures::channel::oneshot;
use futures::StreamExt;
use glommio::channels::shared_channel::ConnectedSender;
use glommio::{CpuSet, ExecutorJoinHandle, LocalExecutorBuilder, Placement, PoolPlacement};

use crate::constants::{BLOCKING_THREADS_PER_SHARD, MESH_CHANNEL_DEPTH_MAX, STARTUP_WAIT_MAX};
use crate::mesh::{self, Envelope};
use crate::ops::{Op, OpResult};
use crate::partitions::{LogConfigProvider, Partitions};
use crate::{Error, Result, ShardId};

/// How many shards to run and where.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// One shard per core; `shards` executors.
    pub shards: usize,
    /// Pin shard `i` to CPU `i`.
    pub pin: bool,
    /// Parent of every partition directory.
    pub data_dir: PathBuf,
    /// Budget of each shard's batch cache (see `batch_cache.rs`).
    pub batch_cache_bytes: usize,
}

/// What a shard's main future gets.
pub struct ShardContext {
    pub id: ShardId,
    pub shard_count: usize,
    pub router: Router,
    pub partitions: Rc<Partitions>,
}

/// Sends ops to the shard that owns a partition: in place if it is this shard, else over the
/// mesh as one message per destination.
#[derive(Clone)]
pub struct Router {
    me: ShardId,
    to: Rc<Vec<Option<ConnectedSender<Envelope>>>>,
    partitions: Rc<Partitions>,
    /// Messages this shard sent to others: registered once with this shard's label, so the
    /// count is bumped by this core only.
    mesh_messages: metrics::Counter,
}

/// Name of the counter of cross-core messages, one series per sending shard. Counted here
/// through the `metrics` facade; the broker installs the recorder that exports it.
pub const MESH_MESSAGES_METRIC: &str = "broker_mesh_messages_total";

impl Router {
    pub fn me(&self) -> ShardId {
        self.me
    }

    /// Runs `ops` on `shard`, concurrently, and returns their results in order.
    pub async fn call(&self, shard: ShardId, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        if shard == self.me {
            return Ok(execute_all(&self.partitions, ops).await);
        }
        let sender = self.to.get(shard.0).and_then(|s| s.as_ref()).ok_or(Error::ShardGone(shard.0))?;
        let (reply, answer) = oneshot::channel();
        self.mesh_messages.increment(1);
        if sender.send(Envelope { ops, reply }).await.is_err() {
            return Err(Error::ShardGone(shard.0));
        }
        answer.await.map_err(|_| Error::ShardGone(shard.0))
    }
}

async fn execute_all(partitions: &Partitions, ops: Vec<Op>) -> Vec<OpResult> {
    futures::future::join_all(ops.into_iter().map(|op| partitions.execute(op))).await
}

/// The running shards.
pub struct ShardSet {
    handles: Vec<ExecutorJoinHandle<()>>,
}

impl ShardSet {
    /// Waits for every shard's main future to finish. Returns at the first shard that fails
    /// (a panic kills its executor thread): the others cannot reach its partitions, so the
    /// process should exit and be restarted rather than limp on.
    pub fn join(self) -> Result<()> {
        let n = self.handles.len();
        let (tx, rx) = mpsc::channel();
        for (i, h) in self.handles.into_iter().enumerate() {
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("join-shard-{i}"))
                .spawn(move || {
                    let _ = tx.send((i, h.join().map_err(|e| e.to_string())));
                })
                .map_err(|e| Error::Startup {
                    shard: i,
                    detail: format!("spawning a join thread: {e}"),
                })?;
        }
        drop(tx);
        for _ in 0..n {
            match rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((i, Err(detail))) => {
                    return Err(Error::Startup {
                        shard: i,
                        detail: format!("executor failed: {detail}"),
                    })
                }
                Err(_) => break,
            }
        }
        Ok(())
    }
}

/// Starts `config.shards` executors and runs `main(ctx)` on each. Returns once every executor
/// has reported that it runs (glommio's spawn succeeds even when a reactor cannot start; the
/// failure only shows at join, so start-up waits for each to check in).
pub fn start<F, Fut>(config: RuntimeConfig, provider: LogConfigProvider, main: F) -> Result<ShardSet>
where
    F: Fn(ShardContext) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    assert!(config.shards >= 1, "at least one shard");
    let ends = mesh::build(config.shards, MESH_CHANNEL_DEPTH_MAX);
    let (ready_tx, ready_rx) = mpsc::channel::<usize>();
    let mut handles = Vec::with_capacity(config.shards);
    for (i, ends) in ends.into_iter().enumerate() {
        let (placement, pool) = if config.pin {
            let core = CpuSet::online()
                .map_err(|e| Error::Startup {
                    shard: i,
                    detail: format!("listing online cores: {e}"),
                })?
                .filter(|c| c.cpu == i);
            (Placement::Fixed(i), PoolPlacement::Custom(vec![core; BLOCKING_THREADS_PER_SHARD]))
        } else {
            (Placement::Unbound, PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD))
        };
        let (main, provider, ready, data_dir, n, cache_bytes) = (
            main.clone(),
            provider.clone(),
            ready_tx.clone(),
            config.data_dir.clone(),
            config.shards,
            config.batch_cache_bytes,
        );
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            .blocking_thread_pool_placement(pool)
            .spawn(move || async move {
                let mesh = ends.connect().await;
                let partitions = Rc::new(Partitions::with_cache_bytes_max(ShardId(i), data_dir, provider, cache_bytes));
                for rx in mesh.from {
                    let partitions = partitions.clone();
                    glommio::spawn_local(async move {
                        let mut rx = rx;
                        while let Some(env) = rx.next().await {
                            let partitions = partitions.clone();
                            glommio::spawn_local(async move {
                                let results = execute_all(&partitions, env.ops).await;
                                let _ = env.reply.send(results);
                            })
                            .detach();
                        }
                    })
                    .detach();
                }
                let router = Router {
                    me: ShardId(i),
                    to: Rc::new(mesh.to),
                    partitions: partitions.clone(),
                    mesh_messages: metrics::counter!(MESH_MESSAGES_METRIC, "shard" => i.to_string()),
                };
                let _ = ready.send(i);
                main(ShardContext {
                    id: ShardId(i),
                    shard_count: n,
                    router,
                    partitions,
                })
                .await;
            })
            .map_err(|e| Error::Startup {
                shard: i,
                detail: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    let deadline = Instant::now() + STARTUP_WAIT_MAX;
    let mut up = vec![false; config.shards];
    while up.iter().any(|u| !u) {
        let left = deadline.saturating_duration_since(Instant::now());
        match ready_rx.recv_timeout(left) {
            Ok(i) => up[i] = true,
            Err(_) => {
                let missing = up.iter().position(|u| !u).expect("some shard missing");
                // A shard that never checked in has failed; its join says why.
                let detail = match handles.remove(missing).join() {
                    Err(e) => format!("executor failed: {e}"),
                    Ok(()) => "exited before reporting ready".to_owned(),
                };
                return Err(Error::Startup { shard: missing, detail });
            }
        }
    }
    tracing::info!(target: "shard", shards = config.shards, pinned = config.pin, "all shards up");
    Ok(ShardSet { handles })
}
