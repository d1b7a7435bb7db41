//! The group coordinator: consumer groups on the classic protocol and their committed offsets.
//!
//! A group belongs to one partition of `__consumer_offsets` (Kafka's choice: the Java hash of
//! its id, modulo the partition count), and its coordinator is the shard that owns that
//! partition. Each shard runs a `Coordinator` for its own groups; handlers on other shards
//! reach it with `on_coordinator`, one mesh message (`shard::Op::Run`) per request.
//!
//! Committed offsets are durable records of `__consumer_offsets` (format in `offsets.rs`): a
//! commit is answered after the group commit that covers its batch, and a shard replays its
//! partitions of the topic at start-up before it serves any group request (until then the
//! answer is COORDINATOR_LOAD_IN_PROGRESS, which clients retry). Membership is not persisted:
//! after a restart members learn they are unknown and join again, keeping their offsets.
//!
//! The coordinator keeps groups in a map by id, each a state machine (`group.rs`) that does no
//! I/O. A KIP-848 consumer group would be a second kind of state machine in the same map,
//! reached by ConsumerGroupHeartbeat through the same routing and persisted the same way.

pub mod group;
pub mod offsets;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use shard::{Op, OpResult, Partitions, Router, ShardId, TopicPartition};

use crate::constants::GROUPS_PER_SHARD_MAX;
use crate::internal;
use crate::metadata::MetaStore;
use crate::server::Broker;
use group::{Group, GroupState, JoinAnswer, JoinRequest, MemberView, SyncAnswer, SyncRequest};
use offsets::{Committed, OffsetRecord};

/// The internal topic of committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The coordinator's settings, with Kafka's names in the docs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`, used when the topic is first created.
    pub offsets_topic_partitions: i32,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            offsets_topic_partitions: 16,
            initial_rebalance_delay_ms: 3000,
            session_timeout_ms_min: 6000,
            session_timeout_ms_max: 1_800_000,
            offset_metadata_bytes_max: 4096,
        }
    }
}

/// The shard coordinating `group_id`, or the error to answer with.
pub fn coordinator_shard(broker: &Broker, group_id: &str) -> Result<ShardId, ResponseError> {
    internal::owner(broker, OFFSETS_TOPIC, group_id)
}

/// Runs `work` on the coordinator of `group_id` and returns what it made; an error is the
/// Kafka error for the whole request (not loaded yet, not reachable).
pub async fn on_coordinator<R, F, Fut>(broker: &Broker, group_id: &str, work: F) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: FnOnce(Rc<Coordinator>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    internal::on_owner(broker, OFFSETS_TOPIC, group_id, move |services| work(services.groups.clone())).await
}

/// What DescribeGroups shows of a group.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

/// One offset asked for by OffsetFetch, answered.
pub type FetchedOffset = (String, i32, Option<Committed>);

/// The groups one shard coordinates.
pub struct Coordinator {
    shard: ShardId,
    meta: Arc<MetaStore>,
    partitions: Rc<Partitions>,
    config: GroupConfig,
    groups: RefCell<HashMap<String, Group>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("shard", &self.shard)
            .field("groups", &self.groups.borrow().len())
            .finish()
    }
}

impl Coordinator {
    pub fn new(shard: ShardId, meta: Arc<MetaStore>, partitions: Rc<Partitions>, config: GroupConfig) -> Coordinator {
        Coordinator {
            shard,
            meta,
            partitions,
            config,
            groups: RefCell::new(HashMap::new()),
        }
    }

    /// Replays this shard's partitions of `__consumer_offsets`. Returns the groups loaded.
    pub async fn load(&self, owned: &[i32]) -> anyhow::Result<usize> {
        for &p in owned {
            internal::replay(&self.partitions, OFFSETS_TOPIC, p, |base, key, value| match offsets::decode(key, value) {
                Ok(Some(record)) => self.apply(&mut self.groups.borrow_mut(), record, base),
                Ok(None) => {}
                Err(e) => tracing::warn!(target: "broker", partition = p, offset = base, error = %e, "skipping an unreadable committed offset"),
            })
            .await?;
        }
        Ok(self.groups.borrow().len())
    }

    fn apply(&self, groups: &mut HashMap<String, Group>, record: OffsetRecord, log_offset: u64) {
        let group = match &record {
            OffsetRecord::Commit { group, .. } | OffsetRecord::Pending { group, .. } => group.clone(),
        };
        let g = groups
            .entry(group.clone())
            .or_insert_with(|| Group::new(group, self.config.clone()));
        match record {
            OffsetRecord::Commit {
                topic, partition, value, ..
            } => {
                let key = (topic, partition);
                if g.offsets.get(&key).is_some_and(|(_, at)| *at > log_offset) {
                    return;
                }
                match value {
                    Some(c) => {
                        g.offsets.insert(key, (c, log_offset));
                    }
                    None => {
                        g.offsets.remove(&key);
                    }
                }
            }
            OffsetRecord::Pending {
                topic,
                partition,
                producer_id,
                value,
                ..
            } => match value {
                Some(c) => {
                    g.pending_txn.entry(producer_id).or_default().insert((topic, partition), c);
                }
                None => {
                    if let Some(pending) = g.pending_txn.get_mut(&producer_id) {
                        pending.remove(&(topic, partition));
                        if pending.is_empty() {
                            g.pending_txn.remove(&producer_id);
                        }
                    }
                }
            },
        }
    }

    fn with_group<R>(&self, group_id: &str, create: bool, f: impl FnOnce(&mut Group) -> R) -> Option<R> {
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if !create || groups.len() >= GROUPS_PER_SHARD_MAX {
                return None;
            }
            groups.insert(group_id.to_owned(), Group::new(group_id.to_owned(), self.config.clone()));
        }
        groups.get_mut(group_id).map(f)
    }

    pub async fn join(&self, group_id: &str, req: JoinRequest, now_ms: i64) -> JoinAnswer {
        let member_id = req.member_id.clone();
        let Some(rx) = self.with_group(group_id, true, |g| g.join(req, now_ms)) else {
            return error_join(ResponseError::CoordinatorNotAvailable, &member_id);
        };
        rx.await
            .unwrap_or_else(|_| error_join(ResponseError::CoordinatorNotAvailable, &member_id))
    }

    pub async fn sync(&self, group_id: &str, req: SyncRequest, now_ms: i64) -> SyncAnswer {
        let Some(rx) = self.with_group(group_id, false, |g| g.sync(req, now_ms)) else {
            return error_sync(ResponseError::UnknownMemberId);
        };
        rx.await.unwrap_or_else(|_| error_sync(ResponseError::CoordinatorNotAvailable))
    }

    pub fn heartbeat(&self, group_id: &str, member_id: &str, instance_id: Option<&str>, generation: i32, now_ms: i64) -> i16 {
        self.with_group(group_id, false, |g| g.heartbeat(member_id, instance_id, generation, now_ms))
            .unwrap_or(ResponseError::UnknownMemberId.code())
    }

    /// LeaveGroup for each (member id, instance id).
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)], now_ms: i64) -> Result<Vec<i16>, ResponseError> {
        self.with_group(group_id, false, |g| {
            members.iter().map(|(m, i)| g.leave(m, i.as_deref(), now_ms)).collect()
        })
        .ok_or(ResponseError::UnknownMemberId)
    }

    /// OffsetCommit: checks the member, writes one batch durably, then updates the cache.
    /// Per offset, the error code (0 for success).
    /// With `txn` (a producer id), a TxnOffsetCommit: the offsets stay pending until the
    /// transaction ends (`complete_txn`).
    pub async fn commit(
        &self,
        group_id: &str,
        member: (String, Option<String>, i32),
        commits: Vec<(String, i32, Committed)>,
        txn: Option<i64>,
        now_ms: i64,
    ) -> Vec<i16> {
        let (member_id, instance_id, generation) = member;
        // A transactional commit without group membership (generation -1) is accepted in any
        // state, as Kafka accepts it from producers that are not group members.
        let unchecked = txn.is_some() && generation < 0 && member_id.is_empty() && instance_id.is_none();
        let check = self.with_group(group_id, generation < 0, |g| {
            if unchecked {
                Ok(())
            } else {
                g.check_commit(&member_id, instance_id.as_deref(), generation)
            }
        });
        let check = match check {
            Some(c) => c,
            // Unknown group, committing as a member of some generation: Kafka says
            // ILLEGAL_GENERATION, and the client joins again.
            None if generation >= 0 => Err(ResponseError::IllegalGeneration),
            None => Err(ResponseError::CoordinatorNotAvailable),
        };
        if let Err(e) = check {
            return vec![e.code(); commits.len()];
        }
        let mut codes = vec![0i16; commits.len()];
        let mut records = Vec::new();
        for (i, (topic, partition, c)) in commits.iter().enumerate() {
            if c.metadata.len() > self.config.offset_metadata_bytes_max {
                codes[i] = ResponseError::OffsetMetadataTooLarge.code();
            } else {
                let record = match txn {
                    None => offsets::encode(group_id, topic, *partition, Some(c)),
                    Some(pid) => offsets::encode_pending(group_id, topic, *partition, pid, Some(c)),
                };
                records.push((i, record));
            }
        }
        if records.is_empty() {
            return codes;
        }
        let batch = internal::build_batch(&records.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), now_ms);
        match self.append(group_id, batch, now_ms).await {
            Ok(log_offset) => {
                let mut groups = self.groups.borrow_mut();
                for &(i, _) in &records {
                    let (topic, partition, c) = &commits[i];
                    let (group, topic, partition, value) = (group_id.to_owned(), topic.clone(), *partition, Some(c.clone()));
                    let record = match txn {
                        None => OffsetRecord::Commit {
                            group,
                            topic,
                            partition,
                            value,
                        },
                        Some(producer_id) => OffsetRecord::Pending {
                            group,
                            topic,
                            partition,
                            producer_id,
                            value,
                        },
                    };
                    self.apply(&mut groups, record, log_offset);
                }
            }
            Err(e) => {
                for &(i, _) in &records {
                    codes[i] = e.code();
                }
            }
        }
        codes
    }

    /// Appends a batch of offset records to the group's partition and waits until it is durable.
    async fn append(&self, group_id: &str, batch: Bytes, now_ms: i64) -> Result<u64, ResponseError> {
        internal::append(&self.partitions, &self.meta, OFFSETS_TOPIC, group_id, batch, now_ms).await
    }

    /// Ends the offsets `producer_id` committed to the group inside a transaction: with
    /// `commit` they become the group's committed offsets, else they are dropped. One durable
    /// batch does both the commit records and the end of the pending ones. Nothing pending is
    /// fine (a retry, or a transaction that committed no offsets here).
    pub async fn complete_txn(&self, group_id: &str, producer_id: i64, commit: bool, now_ms: i64) -> Result<(), ResponseError> {
        let pending: Vec<((String, i32), Committed)> =
            match self.groups.borrow().get(group_id).and_then(|g| g.pending_txn.get(&producer_id)) {
                Some(p) => p.iter().map(|(k, c)| (k.clone(), c.clone())).collect(),
                None => return Ok(()),
            };
        let mut records = Vec::new();
        for ((t, p), c) in &pending {
            if commit {
                records.push(offsets::encode(group_id, t, *p, Some(c)));
            }
            records.push(offsets::encode_pending(group_id, t, *p, producer_id, None));
        }
        let log_offset = self.append(group_id, internal::build_batch(&records, now_ms), now_ms).await?;
        let mut groups = self.groups.borrow_mut();
        for ((topic, partition), c) in pending {
            if commit {
                let record = OffsetRecord::Commit {
                    group: group_id.to_owned(),
                    topic: topic.clone(),
                    partition,
                    value: Some(c),
                };
                self.apply(&mut groups, record, log_offset);
            }
            let end = OffsetRecord::Pending {
                group: group_id.to_owned(),
                topic,
                partition,
                producer_id,
                value: None,
            };
            self.apply(&mut groups, end, log_offset);
        }
        Ok(())
    }

    /// OffsetFetch: the committed offsets of `topics` (every one committed when `None`).
    pub fn fetch(&self, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Vec<FetchedOffset> {
        let groups = self.groups.borrow();
        let offsets = groups.get(group_id).map(|g| &g.offsets);
        match topics {
            Some(topics) => topics
                .into_iter()
                .flat_map(|(t, ps)| {
                    ps.into_iter()
                        .map(|p| {
                            let c = offsets.and_then(|o| o.get(&(t.clone(), p))).map(|(c, _)| c.clone());
                            (t.clone(), p, c)
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|((t, p), (c, _))| (t.clone(), *p, Some(c.clone())))
                .collect(),
        }
    }

    /// ListGroups: (id, protocol type, state) of every group here.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .borrow()
            .values()
            .filter(|g| g.state() != GroupState::Dead)
            .map(|g| (g.id.clone(), g.protocol_type().to_owned(), g.state()))
            .collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        self.groups.borrow().get(group_id).map(|g| GroupView {
            state: g.state(),
            protocol_type: g.protocol_type().to_owned(),
            protocol: if g.state() == GroupState::Stable || g.state() == GroupState::CompletingRebalance {
                g.protocol().to_owned()
            } else {
                String::new()
            },
            members: g.members(),
        })
    }

    /// DeleteGroups for one group: only an empty group; its offsets are deleted durably.
    pub async fn delete_group(&self, group_id: &str, now_ms: i64) -> i16 {
        let keys = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(group_id) else {
                return ResponseError::GroupIdNotFound.code();
            };
            match g.state() {
                GroupState::Dead => return ResponseError::GroupIdNotFound.code(),
                GroupState::Empty => {}
                _ => return ResponseError::NonEmptyGroup.code(),
            }
            g.mark_dead();
            g.offsets.keys().cloned().collect::<Vec<_>>()
        };
        let result = self.write_tombstones(group_id, &keys, now_ms).await;
        let mut groups = self.groups.borrow_mut();
        let dead = groups.remove(group_id);
        match result {
            Ok(()) => 0,
            Err(e) => {
                // The offsets stay, and the group may be used again.
                let mut g = Group::new(group_id.to_owned(), self.config.clone());
                if let Some(dead) = dead {
                    g.offsets = dead.offsets;
                }
                groups.insert(group_id.to_owned(), g);
                e.code()
            }
        }
    }

    /// OffsetDelete: the group's offsets of `topics`, unless a member still subscribes to
    /// the topic. A group-level error, or per (topic, partition) a code.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
        now_ms: i64,
    ) -> Result<Vec<(String, i32, i16)>, ResponseError> {
        let (subscribed, protocol_type) = {
            let groups = self.groups.borrow();
            let g = groups
                .get(group_id)
                .filter(|g| g.state() != GroupState::Dead)
                .ok_or(ResponseError::GroupIdNotFound)?;
            let mut subscribed = Vec::new();
            for m in g.member_metadata() {
                subscribed.extend(subscribed_topics(&m));
            }
            (subscribed, g.protocol_type().to_owned())
        };
        if !protocol_type.is_empty() && protocol_type != "consumer" {
            // Only the consumer protocol's subscriptions can be read.
            let has_members = self.groups.borrow().get(group_id).is_some_and(Group::has_members);
            if has_members {
                return Err(ResponseError::NonEmptyGroup);
            }
        }
        let mut answers = Vec::new();
        let mut keys = Vec::new();
        for (t, ps) in topics {
            let busy = subscribed.contains(&t);
            for p in ps {
                if busy {
                    answers.push((t.clone(), p, ResponseError::GroupSubscribedToTopic.code()));
                } else {
                    keys.push((t.clone(), p));
                    answers.push((t.clone(), p, 0));
                }
            }
        }
        if !keys.is_empty() {
            self.write_tombstones(group_id, &keys, now_ms).await?;
        }
        Ok(answers)
    }

    async fn write_tombstones(&self, group_id: &str, keys: &[(String, i32)], now_ms: i64) -> Result<(), ResponseError> {
        if keys.is_empty() {
            return Ok(());
        }
        let records: Vec<_> = keys.iter().map(|(t, p)| offsets::encode(group_id, t, *p, None)).collect();
        let log_offset = self.append(group_id, internal::build_batch(&records, now_ms), now_ms).await?;
        let mut groups = self.groups.borrow_mut();
        for (t, p) in keys {
            let record = OffsetRecord::Commit {
                group: group_id.to_owned(),
                topic: t.clone(),
                partition: *p,
                value: None,
            };
            if groups.contains_key(group_id) {
                self.apply(&mut groups, record, log_offset);
            }
        }
        Ok(())
    }

    /// Lets every group's deadlines pass and forgets groups with nothing left.
    pub fn tick(&self, now_ms: i64) {
        let mut groups = self.groups.borrow_mut();
        for g in groups.values_mut() {
            g.tick(now_ms);
        }
        groups.retain(|_, g| !(g.state() == GroupState::Empty && g.is_disposable()));
    }

    /// Publishes the consumer lag of this shard's groups that are Stable or Empty (as MSK
    /// reports it) for every partition they committed an offset for: the high watermark minus
    /// the committed offset, and how old the batch holding the committed offset is (its base
    /// timestamp, or its append time under LogAppendTime), 0 once caught up. One mesh message
    /// per owner shard: a one-batch read at the committed offset gives both.
    pub async fn publish_lag(&self, router: &Router, now_ms: i64) {
        let committed: Vec<(String, String, i32, i64)> = self
            .groups
            .borrow()
            .values()
            .filter(|g| matches!(g.state(), GroupState::Stable | GroupState::Empty))
            .flat_map(|g| g.offsets.iter().map(|((t, p), (c, _))| (g.id.clone(), t.clone(), *p, c.offset)))
            .collect();
        let snapshot = self.meta.snapshot();
        let mut by_owner: BTreeMap<ShardId, (Vec<Op>, Vec<usize>)> = BTreeMap::new();
        for (i, (_, topic, partition, offset)) in committed.iter().enumerate() {
            let tp = TopicPartition::new(topic.clone(), *partition);
            let Some(owner) = MetaStore::owner(&snapshot, &tp) else {
                continue;
            };
            let entry = by_owner.entry(owner).or_default();
            entry.0.push(Op::Read {
                tp,
                offset: (*offset).max(0) as u64,
                max_bytes: 1,
            });
            entry.1.push(i);
        }
        let calls = by_owner
            .into_iter()
            .map(|(owner, (ops, idx))| async move { (router.call(owner, ops).await, idx) });
        for (answer, idx) in futures::future::join_all(calls).await {
            let Ok(results) = answer else { continue };
            for (result, i) in results.into_iter().zip(idx) {
                // A committed offset outside the log (deleted records, a reset) has no lag to report.
                let OpResult::Read(Ok((data, offsets))) = result else { continue };
                let (group, topic, partition, offset) = &committed[i];
                let lag_offsets = offsets.durable_end.saturating_sub((*offset).max(0) as u64);
                let lag_seconds = match data {
                    Some(data) if lag_offsets > 0 => batch_age_seconds(&data.contiguous(), now_ms),
                    _ => 0.0,
                };
                crate::metrics::record_consumer_lag(group, topic, *partition, lag_offsets, lag_seconds);
            }
        }
    }
}

/// Seconds since the first batch in `bytes` was written: its base timestamp, or under
/// LogAppendTime (attribute bit 3) its max timestamp, which is then the append time.
fn batch_age_seconds(bytes: &[u8], now_ms: i64) -> f64 {
    if bytes.len() < 43 {
        return 0.0;
    }
    let attributes = i16::from_be_bytes([bytes[21], bytes[22]]);
    let at = if attributes & 0x08 != 0 { 35 } else { 27 };
    let timestamp = i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    (now_ms.saturating_sub(timestamp)).max(0) as f64 / 1000.0
}

fn error_join(e: ResponseError, member_id: &str) -> JoinAnswer {
    JoinAnswer {
        error: e.code(),
        generation: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id: member_id.to_owned(),
        members: Vec::new(),
    }
}

fn error_sync(e: ResponseError) -> SyncAnswer {
    SyncAnswer {
        error: e.code(),
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

/// The topics in a consumer protocol subscription (member metadata of protocol type
/// "consumer"): version i16, then an array of topic strings. Unreadable metadata names none.
fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = Bytes::copy_from_slice(metadata);
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    match ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
        Ok(s) => s.topics.into_iter().map(|t| t.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}
