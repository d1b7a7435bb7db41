//! One shard's part of the broker: its listener (SO_REUSEPORT, so the kernel spreads
//! connections over shards), its connections, and its housekeeping.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures::future::{select, Either};
use shard::{Partitions, Router, ShardContext, ShardId, TopicPartition};

use crate::config::Config;
use crate::metadata::MetaStore;

/// What every handler on a shard can reach.
pub struct Broker {
    pub config: Arc<Config>,
    pub meta: Arc<MetaStore>,
    pub router: Router,
    pub shard: ShardId,
    pub partitions: Rc<Partitions>,
    /// This shard's metric handles.
    pub metrics: crate::metrics::ShardMetrics,
    connections: Cell<usize>,
}

impl Broker {
    /// Client connections open on this shard.
    pub fn open_connections(&self) -> usize {
        self.connections.get()
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("shard", &self.shard).finish()
    }
}

/// How often a shard looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

pub(crate) async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL).await;
    }
}

/// Runs `work` every `interval` until `stop` is set.
fn every<F, Fut>(interval: Duration, stop: Arc<AtomicBool>, mut work: F) -> glommio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::spawn_local(async move {
        loop {
            let tick = glommio::timer::sleep(interval);
            futures::pin_mut!(tick);
            let halt = stopped(&stop);
            futures::pin_mut!(halt);
            if let Either::Right(_) = select(tick, halt).await {
                return;
            }
            work().await;
        }
    })
    .detach()
}

/// Runs one shard of the broker until `stop` is set; reports start-up (recovery and bind)
/// through `started`.
pub async fn run_shard(
    ctx: ShardContext,
    config: Arc<Config>,
    meta: Arc<MetaStore>,
    stop: Arc<AtomicBool>,
    started: mpsc::Sender<Result<usize, String>>,
) {
    let me = ctx.id;
    // Recover every partition this shard owns before serving.
    let snapshot = meta.snapshot();
    let mut recovered = 0;
    for t in snapshot.topics.values() {
        for (p, &s) in t.placement.iter().enumerate() {
            if s == me.0 {
                let tp = TopicPartition::new(t.name.clone(), p as i32);
                if let Err(e) = ctx.partitions.get(&tp).await {
                    let _ = started.send(Err(format!("shard {}: recovering {tp}: {e}", me.0)));
                    return;
                }
                recovered += 1;
            }
        }
    }
    let listener = match glommio::net::TcpListener::bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            // The same words as the start-up check in main.rs: the port can be taken between
            // that check and this bind, and whoever started us retries on "cannot listen".
            let _ = started.send(Err(format!("shard {}: cannot listen on {}: {e}", me.0, config.listen)));
            return;
        }
    };
    // This shard's groups and transactional ids: replay its partitions of the internal topics
    // before serving them.
    let coordinator = Rc::new(crate::groups::Coordinator::new(
        me,
        meta.clone(),
        ctx.partitions.clone(),
        config.groups.clone(),
    ));
    let txns = Rc::new(crate::txn::TxnCoordinator::new(
        meta.clone(),
        ctx.partitions.clone(),
        ctx.router.clone(),
        config.txns.clone(),
    ));
    let loaded = async {
        let groups = coordinator
            .load(&crate::internal::owned_partitions(&meta, crate::groups::OFFSETS_TOPIC, me))
            .await?;
        let transactions = txns
            .load(&crate::internal::owned_partitions(&meta, crate::txn::TXN_TOPIC, me))
            .await?;
        anyhow::Ok((groups, transactions))
    };
    match loaded.await {
        Ok((groups, transactions)) => tracing::info!(target: "broker", shard = me.0, groups, transactions, "coordinators loaded"),
        Err(e) => {
            let _ = started.send(Err(format!("shard {}: loading coordinators: {e:#}", me.0)));
            return;
        }
    }
    ctx.partitions.set_service(Rc::new(crate::internal::ShardServices {
        groups: coordinator.clone(),
        txns: txns.clone(),
    }));
    let _ = started.send(Ok(recovered));
    let broker = Rc::new(Broker {
        config: config.clone(),
        meta,
        router: ctx.router.clone(),
        shard: me,
        partitions: ctx.partitions.clone(),
        metrics: crate::metrics::ShardMetrics::new(me.0, config.metrics_enabled),
        connections: Cell::new(0),
    });
    let sampler = config
        .metrics_enabled
        .then(|| glommio::spawn_local(crate::metrics::run_sampler(broker.clone(), stop.clone())));

    let housekeeping = {
        let partitions = ctx.partitions.clone();
        every(Duration::from_millis(config.retention_check_interval_ms), stop.clone(), move || {
            let partitions = partitions.clone();
            async move { partitions.enforce_retention(crate::handlers::now_ms()).await }
        })
    };
    // A full disk on another shard asks for this shard's spare segment files.
    let spares = every(Duration::from_millis(crate::constants::SPARES_CHECK_MS), stop.clone(), || async {
        if iouring_storage::release_spares_if_wanted().await {
            tracing::warn!(target: "broker", "the disk is full on another shard: gave back this shard's spare segment files");
        }
    });
    let group_timers = {
        let coordinator = coordinator.clone();
        every(Duration::from_millis(crate::constants::GROUP_TICK_MS), stop.clone(), move || {
            coordinator.tick(crate::handlers::now_ms());
            async {}
        })
    };
    // Consumer lag of the groups this shard coordinates, for /metrics.
    let lag = config.metrics_enabled.then(|| {
        let (coordinator, router) = (coordinator.clone(), ctx.router.clone());
        every(Duration::from_millis(crate::constants::LAG_PUBLISH_MS), stop.clone(), move || {
            let (coordinator, router) = (coordinator.clone(), router.clone());
            async move { coordinator.publish_lag(&router, crate::handlers::now_ms()).await }
        })
    });
    // Transaction timeouts, and transactions a failure (or a restart) left half-ended.
    let txn_timers = {
        let txns = txns.clone();
        every(Duration::from_millis(crate::constants::TXN_TICK_MS), stop.clone(), move || {
            let txns = txns.clone();
            async move { txns.tick(crate::handlers::now_ms()).await }
        })
    };
    let compaction = {
        let partitions = ctx.partitions.clone();
        partitions.set_compactor(Arc::new(crate::compaction::RecordCompactor::new(broker.meta.clone())));
        every(
            Duration::from_millis(config.compaction_check_interval_ms),
            stop.clone(),
            move || {
                let partitions = partitions.clone();
                async move {
                    partitions.compact(crate::handlers::now_ms()).await;
                }
            },
        )
    };

    let per_shard_max = config.connections_max.div_ceil(ctx.shard_count).max(1);
    loop {
        let accept = listener.accept();
        futures::pin_mut!(accept);
        let halt = stopped(&stop);
        futures::pin_mut!(halt);
        match select(accept, halt).await {
            Either::Right(_) => break,
            Either::Left((Err(e), _)) => {
                tracing::warn!(target: "broker", shard = me.0, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            Either::Left((Ok(stream), _)) => {
                if broker.connections.get() >= per_shard_max {
                    tracing::warn!(target: "broker", shard = me.0, max = per_shard_max, "too many connections; refusing one");
                    drop(stream);
                    continue;
                }
                broker.connections.set(broker.connections.get() + 1);
                broker.metrics.set_connections(broker.connections.get());
                let b = broker.clone();
                glommio::spawn_local(async move {
                    crate::connection::serve(b.clone(), stream).await;
                    b.connections.set(b.connections.get() - 1);
                    b.metrics.set_connections(b.connections.get());
                })
                .detach();
            }
        }
    }
    let _ = housekeeping.await;
    let _ = spares.await;
    let _ = group_timers.await;
    let _ = compaction.await;
    let _ = txn_timers.await;
    if let Some(lag) = lag {
        let _ = lag.await;
    }
    if let Some(sampler) = sampler {
        sampler.await;
    }
    // Clean stop: everything appended becomes durable before the process exits.
    ctx.partitions.close_all().await;
    tracing::info!(target: "broker", shard = me.0, "shard stopped");
}
