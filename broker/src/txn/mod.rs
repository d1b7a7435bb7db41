//! The transaction coordinator: transactional ids, their producer ids and epochs, the
//! partitions and groups of each open transaction, and the commit or abort that ends it.
//!
//! Like the group coordinator, a transactional id belongs to the partition of
//! `__transaction_state` that Kafka's hash picks, and its coordinator is the shard owning that
//! partition (`on_coordinator`). State changes are durable records of that topic
//! (`state.rs`) before they are answered; a shard replays its partitions at start-up and then
//! finishes any transaction it finds half-ended.
//!
//! Ending a transaction: the state becomes PrepareCommit or PrepareAbort (durable), a marker
//! is written to every data partition of the transaction (`shard::Op::WriteTxnMarker`, on
//! the partitions' owners, durable), the groups of the transaction make its offsets visible or
//! drop them, and the state becomes CompleteCommit or CompleteAbort (durable). A failure on the
//! way leaves the Prepare state, which the coordinator's tick completes later; the client gets
//! the error and may retry EndTxn. Fencing: InitProducerId for a transactional id bumps its
//! epoch (aborting an open transaction first), so an older instance's requests get
//! PRODUCER_FENCED; a transaction open longer than its timeout is aborted with a bumped epoch.
//!
//! Requests on one shard's transactional ids are serialized by one lock: control requests are
//! few, and a transaction's steps must not interleave.

pub mod state;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;
use kafka_protocol::error::ResponseError;
use shard::{Op, OpResult, Partitions, Router, ShardId, TopicPartition};

use crate::internal;
use crate::metadata::MetaStore;
use crate::server::Broker;
use state::{TxnMeta, TxnState};

/// The internal topic of transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// The coordinator's settings, with Kafka's names in the docs.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`, used when the topic is first created.
    pub state_partitions: i32,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a producer may ask for.
    pub timeout_ms_max: i32,
}

impl Default for TxnConfig {
    fn default() -> TxnConfig {
        TxnConfig {
            state_partitions: 16,
            timeout_ms_max: 900_000,
        }
    }
}

/// The shard coordinating `transactional_id`, or the error to answer with.
pub fn coordinator_shard(broker: &Broker, transactional_id: &str) -> Result<ShardId, ResponseError> {
    internal::owner(broker, TXN_TOPIC, transactional_id)
}

/// Runs `work` on the coordinator of `transactional_id`.
pub async fn on_coordinator<R, F, Fut>(broker: &Broker, transactional_id: &str, work: F) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: FnOnce(Rc<TxnCoordinator>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    internal::on_owner(broker, TXN_TOPIC, transactional_id, move |services| work(services.txns.clone())).await
}

/// What DescribeTransactions and ListTransactions show of one transactional id.
#[derive(Debug, Clone)]
pub struct TxnView {
    pub transactional_id: String,
    pub meta: TxnMeta,
}

/// The transactional ids one shard coordinates.
pub struct TxnCoordinator {
    meta: Arc<MetaStore>,
    partitions: Rc<Partitions>,
    router: Router,
    config: TxnConfig,
    txns: RefCell<HashMap<String, TxnMeta>>,
    lock: Semaphore,
}

impl std::fmt::Debug for TxnCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnCoordinator").field("txns", &self.txns.borrow().len()).finish()
    }
}

impl TxnCoordinator {
    pub fn new(meta: Arc<MetaStore>, partitions: Rc<Partitions>, router: Router, config: TxnConfig) -> TxnCoordinator {
        TxnCoordinator {
            meta,
            partitions,
            router,
            config,
            txns: RefCell::new(HashMap::new()),
            lock: Semaphore::new(1),
        }
    }

    /// Replays this shard's partitions of `__transaction_state`. Returns the ids loaded.
    pub async fn load(&self, owned: &[i32]) -> anyhow::Result<usize> {
        for &p in owned {
            internal::replay(&self.partitions, TXN_TOPIC, p, |base, key, value| match state::decode(key, value) {
                Ok((id, Some(m))) => {
                    self.txns.borrow_mut().insert(id, m);
                }
                Ok((id, None)) => {
                    self.txns.borrow_mut().remove(&id);
                }
                Err(e) => {
                    tracing::warn!(target: "broker", partition = p, offset = base, error = %e, "skipping an unreadable transaction record")
                }
            })
            .await?;
        }
        Ok(self.txns.borrow().len())
    }

    async fn locked(&self) -> Result<glommio::sync::Permit<'_>, ResponseError> {
        self.lock
            .acquire_permit(1)
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)
    }

    /// Makes `m` the durable state of `id`.
    async fn persist(&self, id: &str, m: TxnMeta, now_ms: i64) -> Result<(), ResponseError> {
        let record = (state::encode_key(id), Some(state::encode_value(&m)));
        let batch = internal::build_batch(&[record], now_ms);
        internal::append(&self.partitions, &self.meta, TXN_TOPIC, id, batch, now_ms).await?;
        self.txns.borrow_mut().insert(id.to_owned(), m);
        Ok(())
    }

    fn get(&self, id: &str) -> Option<TxnMeta> {
        self.txns.borrow().get(id).cloned()
    }

    /// InitProducerId for a transactional id: its producer id with a new epoch, after aborting
    /// any transaction the previous instance left open.
    pub async fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        given: Option<(i64, i16)>,
        now_ms: i64,
    ) -> Result<(i64, i16), ResponseError> {
        if timeout_ms <= 0 || timeout_ms > self.config.timeout_ms_max {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let _permit = self.locked().await?;
        let Some(mut m) = self.get(id) else {
            let producer_id = crate::metadata::allocate_producer_id(&self.meta).await.map_err(|e| {
                tracing::error!(target: "broker", error = %e, "reserving producer ids failed");
                ResponseError::UnknownServerError
            })?;
            let m = TxnMeta {
                producer_id,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: Default::default(),
                groups: Default::default(),
                last_update_ms: now_ms,
                start_ms: -1,
            };
            self.persist(id, m, now_ms).await?;
            return Ok((producer_id, 0));
        };
        if let Some((pid, epoch)) = given {
            // KIP-360: a producer that names itself must be the current one.
            if pid != m.producer_id {
                return Err(ResponseError::InvalidProducerIdMapping);
            }
            if epoch != m.producer_epoch {
                return Err(ResponseError::ProducerFenced);
            }
        }
        if m.state.preparing() {
            self.complete(id, now_ms).await?;
            m = self.get(id).expect("still known");
        }
        if m.state == TxnState::Ongoing {
            // Fence the previous instance: its open transaction is aborted under a newer epoch.
            m.producer_epoch += 1;
            self.end(id, m, false, now_ms).await?;
            m = self.get(id).expect("still known");
        }
        let mut next = m;
        if next.producer_epoch >= i16::MAX - 1 {
            next.producer_id = crate::metadata::allocate_producer_id(&self.meta)
                .await
                .map_err(|_| ResponseError::UnknownServerError)?;
            next.producer_epoch = 0;
        } else {
            next.producer_epoch += 1;
        }
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next.partitions.clear();
        next.groups.clear();
        next.last_update_ms = now_ms;
        let answer = (next.producer_id, next.producer_epoch);
        self.persist(id, next, now_ms).await?;
        Ok(answer)
    }

    /// AddPartitionsToTxn: per partition, the error (0 for added).
    pub async fn add_partitions(
        &self,
        id: &str,
        producer: (i64, i16),
        partitions: Vec<(String, i32)>,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let _permit = self.locked().await?;
        let mut m = self.get(id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        m.check_producer(producer.0, producer.1)?;
        m.check_can_add()?;
        let before = m.clone();
        m.begin_if_idle(now_ms);
        m.partitions.extend(partitions);
        if m.partitions != before.partitions || m.state != before.state {
            self.persist(id, m, now_ms).await?;
        }
        Ok(())
    }

    /// AddOffsetsToTxn: the group's offsets join the transaction.
    pub async fn add_offsets(&self, id: &str, producer: (i64, i16), group: String, now_ms: i64) -> Result<(), ResponseError> {
        let _permit = self.locked().await?;
        let mut m = self.get(id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        m.check_producer(producer.0, producer.1)?;
        m.check_can_add()?;
        let before = m.clone();
        m.begin_if_idle(now_ms);
        m.groups.insert(group);
        if m != before {
            self.persist(id, m, now_ms).await?;
        }
        Ok(())
    }

    /// EndTxn: commits or aborts the open transaction.
    pub async fn end_txn(&self, id: &str, producer: (i64, i16), commit: bool, now_ms: i64) -> Result<(), ResponseError> {
        let _permit = self.locked().await?;
        let m = self.get(id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        m.check_producer(producer.0, producer.1)?;
        if !m.check_end(commit)? {
            return Ok(());
        }
        self.end(id, m, commit, now_ms).await
    }

    /// Prepare, markers, groups, complete. Called with the lock held.
    async fn end(&self, id: &str, mut m: TxnMeta, commit: bool, now_ms: i64) -> Result<(), ResponseError> {
        m.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        m.last_update_ms = now_ms;
        self.persist(id, m, now_ms).await?;
        self.complete(id, now_ms).await
    }

    /// Writes the markers and settles the groups of a transaction in a Prepare state, then
    /// records it complete. Called with the lock held.
    async fn complete(&self, id: &str, now_ms: i64) -> Result<(), ResponseError> {
        let mut m = self.get(id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        let commit = match m.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return Ok(()),
        };
        self.write_markers(&m, commit, now_ms).await?;
        for group in &m.groups {
            let (group, pid) = (group.clone(), m.producer_id);
            let shard =
                internal::owner_shard(&self.meta, crate::groups::OFFSETS_TOPIC, &group).ok_or(ResponseError::CoordinatorNotAvailable)?;
            internal::on_shard(&self.router, shard, move |s| async move {
                s.groups.complete_txn(&group, pid, commit, now_ms).await
            })
            .await??;
        }
        m.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        m.partitions.clear();
        m.groups.clear();
        m.last_update_ms = now_ms;
        self.persist(id, m, now_ms).await?;
        tracing::debug!(target: "broker", transactional_id = id, commit, "transaction ended");
        Ok(())
    }

    /// One marker per data partition of the transaction, on the partitions' owners, durable.
    /// A partition whose topic was deleted meanwhile needs none.
    async fn write_markers(&self, m: &TxnMeta, commit: bool, now_ms: i64) -> Result<(), ResponseError> {
        let snapshot = self.meta.snapshot();
        let mut by_owner: BTreeMap<ShardId, Vec<Op>> = BTreeMap::new();
        for (topic, p) in &m.partitions {
            let tp = TopicPartition::new(topic.clone(), *p);
            let Some(owner) = MetaStore::owner(&snapshot, &tp) else {
                continue;
            };
            by_owner.entry(owner).or_default().push(Op::WriteTxnMarker {
                tp,
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                commit,
                coordinator_epoch: 0,
                now_ms,
            });
        }
        let calls = by_owner.into_iter().map(|(owner, ops)| self.router.call(owner, ops));
        for answer in futures::future::join_all(calls).await {
            let results = answer.map_err(|e| crate::errors::response_error(&e))?;
            for r in results {
                match r {
                    OpResult::MarkerWritten(Ok(_)) => {}
                    OpResult::MarkerWritten(Err(shard::Error::UnknownPartition(_))) => {}
                    OpResult::MarkerWritten(Err(e)) => {
                        crate::errors::log_if_serious(&e);
                        tracing::warn!(target: "broker", producer_id = m.producer_id, error = %e, "writing a transaction marker failed");
                        return Err(crate::errors::response_error(&e));
                    }
                    other => {
                        tracing::error!(target: "broker", ?other, "a marker op answered with something else");
                        return Err(ResponseError::UnknownServerError);
                    }
                }
            }
        }
        Ok(())
    }

    /// Aborts transactions open past their timeout (with a bumped epoch, fencing their
    /// producer) and finishes those a failure left half-ended.
    pub async fn tick(&self, now_ms: i64) {
        let due: Vec<(String, TxnMeta)> = self
            .txns
            .borrow()
            .iter()
            .filter(|(_, m)| m.state.preparing() || (m.state == TxnState::Ongoing && m.start_ms + i64::from(m.timeout_ms) < now_ms))
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        for (id, m) in due {
            let Ok(_permit) = self.locked().await else { return };
            // The state may have moved while waiting for the lock.
            let Some(current) = self.get(&id) else { continue };
            if current != m {
                continue;
            }
            let result = if m.state.preparing() {
                self.complete(&id, now_ms).await
            } else {
                tracing::info!(target: "broker", transactional_id = %id, producer_id = m.producer_id, "transaction timed out; aborting it");
                let mut fenced = m;
                fenced.producer_epoch = fenced.producer_epoch.saturating_add(1);
                self.end(&id, fenced, false, now_ms).await
            };
            if let Err(e) = result {
                tracing::warn!(target: "broker", transactional_id = %id, error = ?e, "ending a transaction failed; will retry");
            }
        }
    }

    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        self.get(id)
    }

    pub fn list(&self) -> Vec<TxnView> {
        self.txns
            .borrow()
            .iter()
            .map(|(id, m)| TxnView {
                transactional_id: id.clone(),
                meta: m.clone(),
            })
            .collect()
    }
}
