//! One consumer group's membership on the classic protocol: the state machine behind
//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup, and the check OffsetCommit makes.
//!
//! It does no I/O and reads no clock: every call takes `now_ms`, and the coordinator calls
//! `tick` to let deadlines pass, so tests drive it with a fake clock. JoinGroup and SyncGroup
//! answers that must wait (for the other members, for the leader's assignment) are oneshot
//! channels kept on the member and completed when the group moves on.
//!
//! States, as Kafka names them:
//!
//! ```text
//! Empty --join--> PreparingRebalance --all joined or timeout--> CompletingRebalance
//!   ^                  ^    ^                                         |
//!   |  last member     |    +------ join, leave, expiry --------------+ leader's sync
//!   +-- leaves --------+                                              v
//!                      +-------- join, leave, expiry ------------ Stable
//! ```
//!
//! Dead is a group being deleted. A group with no members but committed offsets is Empty.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::error::ResponseError;

use super::offsets::Committed;
use super::GroupConfig;
use crate::constants::GROUP_MEMBERS_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4 and later: a new dynamic member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinAnswer {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinAnswer {
    fn error(error: ResponseError, member_id: &str) -> JoinAnswer {
        JoinAnswer {
            error: error.code(),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncAnswer {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncAnswer {
    fn error(error: ResponseError) -> SyncAnswer {
        SyncAnswer {
            error: error.code(),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A SyncGroup request, decoded.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment, per member id; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// What DescribeGroups shows of a member.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The metadata of the group's chosen protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// The member is dropped if it sends nothing by then (unless it awaits an answer).
    session_deadline_ms: i64,
    join_reply: Option<oneshot::Sender<JoinAnswer>>,
    sync_reply: Option<oneshot::Sender<SyncAnswer>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn awaits_answer(&self) -> bool {
        self.join_reply.is_some() || self.sync_reply.is_some()
    }
}

/// One group: its members, generation and committed offsets.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// Ordered by id, so that protocol votes and the choice of leader are deterministic.
    members: BTreeMap<String, Member>,
    /// Instance id -> member id, for static members.
    instances: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until their deadline.
    pending: HashMap<String, i64>,
    /// PreparingRebalance ends by then at the latest; CompletingRebalance too (the leader's
    /// SyncGroup is overdue after it).
    rebalance_deadline_ms: i64,
    /// While a new group waits for more members to arrive (group.initial.rebalance.delay.ms),
    /// the end of that wait.
    initial_delay_until_ms: Option<i64>,
    /// Committed offsets by (topic, partition), each with the offset in `__consumer_offsets`
    /// of the batch that wrote it, so that a slower write never replaces a newer one.
    pub offsets: BTreeMap<(String, i32), (Committed, u64)>,
    /// Offsets committed inside transactions that have not ended, by producer id: visible
    /// once the transaction commits, gone if it aborts.
    pub pending_txn: BTreeMap<i64, BTreeMap<(String, i32), Committed>>,
    config: GroupConfig,
    member_ids_issued: u64,
}

impl Group {
    pub fn new(id: String, config: GroupConfig) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: None,
            offsets: BTreeMap::new(),
            pending_txn: BTreeMap::new(),
            config,
            member_ids_issued: 0,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or("")
    }

    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().unwrap_or("")
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Nothing left to keep: no members, no offsets.
    pub fn is_disposable(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty() && self.offsets.is_empty() && self.pending_txn.is_empty()
    }

    pub fn members(&self) -> Vec<MemberView> {
        let protocol = self.protocol();
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata_for(protocol),
                assignment: if self.state == GroupState::Stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect()
    }

    /// The metadata each member sent for the chosen protocol (for OffsetDelete's check of
    /// subscribed topics).
    pub fn member_metadata(&self) -> Vec<Bytes> {
        let protocol = self.protocol();
        self.members.values().map(|m| m.metadata_for(protocol)).collect()
    }

    /// Marks the group deleted: members get errors and nothing joins it any more.
    pub fn mark_dead(&mut self) {
        for (_, m) in std::mem::take(&mut self.members) {
            answer_gone(m, ResponseError::CoordinatorNotAvailable);
        }
        self.instances.clear();
        self.pending.clear();
        self.state = GroupState::Dead;
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.member_ids_issued += 1;
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    /// JoinGroup. The answer comes on the returned channel, at once or when the rebalance
    /// completes.
    pub fn join(&mut self, req: JoinRequest, now_ms: i64) -> oneshot::Receiver<JoinAnswer> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.check_join(&req) {
            let _ = tx.send(JoinAnswer::error(e, &req.member_id));
            return rx;
        }
        if req.member_id.is_empty() {
            if let Some(instance) = req.instance_id.clone() {
                match self.instances.get(&instance).cloned() {
                    Some(old_id) => self.rejoin_static(old_id, req, tx, now_ms),
                    None => {
                        let id = self.new_member_id(&req.client_id);
                        self.add_member(id, req, tx, now_ms);
                    }
                }
            } else if req.require_known_member_id {
                if self.members.len() + self.pending.len() >= GROUP_MEMBERS_MAX {
                    let _ = tx.send(JoinAnswer::error(ResponseError::GroupMaxSizeReached, ""));
                    return rx;
                }
                let id = self.new_member_id(&req.client_id);
                self.pending.insert(id.clone(), now_ms + i64::from(req.session_timeout_ms));
                let _ = tx.send(JoinAnswer::error(ResponseError::MemberIdRequired, &id));
            } else {
                let id = self.new_member_id(&req.client_id);
                self.add_member(id, req, tx, now_ms);
            }
            return rx;
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            self.add_member(id, req, tx, now_ms);
            return rx;
        }
        if let Err(e) = self.check_member(&req.member_id, req.instance_id.as_deref()) {
            let _ = tx.send(JoinAnswer::error(e, &req.member_id));
            return rx;
        }
        self.rejoin(req, tx, now_ms);
        rx
    }

    fn check_join(&self, req: &JoinRequest) -> Result<(), ResponseError> {
        let fail = Err;
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if req.session_timeout_ms < self.config.session_timeout_ms_min || req.session_timeout_ms > self.config.session_timeout_ms_max {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() {
            if self.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
            // The new member must share a protocol with every other member.
            let shared = req.protocols.iter().any(|(name, _)| {
                self.members
                    .iter()
                    .filter(|(id, _)| **id != req.member_id)
                    .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
            });
            if !shared {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
        }
        if req.member_id.is_empty()
            && req.instance_id.as_ref().is_none_or(|i| !self.instances.contains_key(i))
            && self.members.len() + self.pending.len() >= GROUP_MEMBERS_MAX
        {
            return fail(ResponseError::GroupMaxSizeReached);
        }
        Ok(())
    }

    /// UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID for a member id this group does not know, or a
    /// static member whose instance id now belongs to a newer member id.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            match self.instances.get(instance) {
                Some(current) if current != member_id => return Err(ResponseError::FencedInstanceId),
                Some(_) => return Ok(()),
                None => {}
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(ResponseError::UnknownMemberId)
        }
    }

    fn add_member(&mut self, id: String, req: JoinRequest, tx: oneshot::Sender<JoinAnswer>, now_ms: i64) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.instance_id {
            self.instances.insert(instance.clone(), id.clone());
        }
        let member = Member {
            instance_id: req.instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols,
            assignment: Bytes::new(),
            session_deadline_ms: now_ms + i64::from(req.session_timeout_ms),
            join_reply: Some(tx),
            sync_reply: None,
        };
        self.members.insert(id, member);
        if self.state == GroupState::PreparingRebalance {
            if let Some(until) = self.initial_delay_until_ms {
                // Each newcomer during the initial delay extends it, within the rebalance timeout.
                self.initial_delay_until_ms = Some(
                    (now_ms + self.config.initial_rebalance_delay_ms)
                        .min(self.rebalance_deadline_ms)
                        .max(until),
                );
            }
        } else {
            self.prepare_rebalance(now_ms);
        }
        self.try_complete_join(now_ms);
    }

    /// A static member comes back with a new id: the new id takes the old one's place. A
    /// request still waiting under the old id learns it was fenced.
    fn rejoin_static(&mut self, old_id: String, req: JoinRequest, tx: oneshot::Sender<JoinAnswer>, now_ms: i64) {
        let new_id = self.new_member_id(&req.client_id);
        let Some(mut member) = self.members.remove(&old_id) else {
            self.instances.remove(req.instance_id.as_deref().unwrap_or(""));
            self.add_member(new_id, req, tx, now_ms);
            return;
        };
        if let Some(old) = member.join_reply.take() {
            let _ = old.send(JoinAnswer::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(old) = member.sync_reply.take() {
            let _ = old.send(SyncAnswer::error(ResponseError::FencedInstanceId));
        }
        let unchanged = member.protocols == req.protocols;
        member.protocols = req.protocols.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_deadline_ms = now_ms + i64::from(req.session_timeout_ms);
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if let Some(instance) = &req.instance_id {
            self.instances.insert(instance.clone(), new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        if self.state == GroupState::Stable && unchanged {
            // No rebalance: the member keeps its assignment under its new id (KIP-345).
            let _ = tx.send(self.current_answer(&new_id, false));
            return;
        }
        let mut req = req;
        req.member_id = new_id;
        self.rejoin(req, tx, now_ms);
    }

    fn rejoin(&mut self, req: JoinRequest, tx: oneshot::Sender<JoinAnswer>, now_ms: i64) {
        let id = req.member_id.clone();
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let member = self.members.get_mut(&id).expect("checked member");
        let unchanged = member.protocols == req.protocols;
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.session_deadline_ms = now_ms + i64::from(req.session_timeout_ms);
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(old) = member.join_reply.replace(tx) {
                    let _ = old.send(JoinAnswer::error(ResponseError::UnknownMemberId, &id));
                }
                self.try_complete_join(now_ms);
            }
            GroupState::CompletingRebalance if unchanged => {
                // It lost our answer: send it again.
                let _ = tx.send(self.current_answer(&id, true));
            }
            GroupState::Stable if unchanged && !is_leader => {
                let _ = tx.send(self.current_answer(&id, false));
            }
            _ => {
                member.join_reply = Some(tx);
                self.prepare_rebalance(now_ms);
                self.try_complete_join(now_ms);
            }
        }
    }

    /// The current generation as a JoinGroup answer for `id`; the leader gets the members
    /// when `with_members`.
    fn current_answer(&self, id: &str, with_members: bool) -> JoinAnswer {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if with_members && leader == id {
            self.joined_members()
        } else {
            Vec::new()
        };
        JoinAnswer {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: id.to_owned(),
            members,
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol();
        self.members
            .iter()
            .map(|(id, m)| JoinedMember {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(protocol),
            })
            .collect()
    }

    fn prepare_rebalance(&mut self, now_ms: i64) {
        // Members waiting for an assignment that will not come must join again.
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync_reply.take() {
                let _ = tx.send(SyncAnswer::error(ResponseError::RebalanceInProgress));
            }
        }
        let rebalance_timeout_ms = self.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0);
        self.rebalance_deadline_ms = now_ms + rebalance_timeout_ms;
        self.initial_delay_until_ms = if self.state == GroupState::Empty {
            Some((now_ms + self.config.initial_rebalance_delay_ms).min(self.rebalance_deadline_ms))
        } else {
            None
        };
        self.state = GroupState::PreparingRebalance;
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_reply.is_some())
    }

    fn try_complete_join(&mut self, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let ready = match self.initial_delay_until_ms {
            Some(until) => now_ms >= until,
            None => self.all_joined() || now_ms >= self.rebalance_deadline_ms,
        };
        if ready {
            self.complete_join(now_ms);
        }
    }

    /// Ends PreparingRebalance: members that did not join again are dropped, the generation
    /// moves on, a protocol is chosen, and every member gets its JoinGroup answer.
    fn complete_join(&mut self, now_ms: i64) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_reply.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.initial_delay_until_ms = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let rebalance_timeout_ms = self.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0);
        self.rebalance_deadline_ms = now_ms + rebalance_timeout_ms;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let answer = self.current_answer(&id, true);
            let m = self.members.get_mut(&id).expect("listed member");
            m.assignment = Bytes::new();
            m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
            if let Some(tx) = m.join_reply.take() {
                let _ = tx.send(answer);
            }
        }
    }

    /// Kafka's choice: among the protocols every member supports, each member votes for the
    /// first in its own order, and the most votes win (ties: the earliest-voted name order).
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Vec<&str> = match self.members.values().next() {
            Some(first) => first.protocols.iter().map(|(n, _)| n.as_str()).collect(),
            None => return None,
        };
        candidates.retain(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)));
        let mut votes: Vec<(&str, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n.as_str())) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| *c == n) {
                    v.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, v)| *v).max()?;
        votes.iter().find(|(_, v)| *v == best).map(|(c, _)| (*c).to_owned())
    }

    /// SyncGroup. Followers wait for the leader's assignment; the leader's completes the
    /// rebalance.
    pub fn sync(&mut self, req: SyncRequest, now_ms: i64) -> oneshot::Receiver<SyncAnswer> {
        let (tx, rx) = oneshot::channel();
        let error = if self.state == GroupState::Dead {
            Some(ResponseError::CoordinatorNotAvailable)
        } else if let Err(e) = self.check_member(&req.member_id, req.instance_id.as_deref()) {
            Some(e)
        } else if req.generation != self.generation {
            Some(ResponseError::IllegalGeneration)
        } else if req.protocol_type.as_ref().is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || req.protocol_name.as_ref().is_some_and(|p| Some(p) != self.protocol.as_ref())
        {
            Some(ResponseError::InconsistentGroupProtocol)
        } else {
            None
        };
        if let Some(e) = error {
            let _ = tx.send(SyncAnswer::error(e));
            return rx;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(SyncAnswer::error(ResponseError::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                let _ = tx.send(SyncAnswer::error(ResponseError::RebalanceInProgress));
            }
            GroupState::Stable => {
                let m = &self.members[&req.member_id];
                let _ = tx.send(self.assignment_answer(m.assignment.clone()));
            }
            GroupState::CompletingRebalance => {
                let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
                let m = self.members.get_mut(&req.member_id).expect("checked member");
                m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
                if let Some(old) = m.sync_reply.replace(tx) {
                    let _ = old.send(SyncAnswer::error(ResponseError::RebalanceInProgress));
                }
                if is_leader {
                    let mut given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    let answers: Vec<(String, SyncAnswer)> = self
                        .members
                        .iter()
                        .map(|(id, m)| (id.clone(), self.assignment_answer(m.assignment.clone())))
                        .collect();
                    for (id, answer) in answers {
                        if let Some(tx) = self.members.get_mut(&id).and_then(|m| m.sync_reply.take()) {
                            let _ = tx.send(answer);
                        }
                    }
                }
            }
        }
        rx
    }

    fn assignment_answer(&self, assignment: Bytes) -> SyncAnswer {
        SyncAnswer {
            error: 0,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    /// Heartbeat: keeps the member alive and tells it whether to join again.
    pub fn heartbeat(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now_ms: i64) -> i16 {
        if self.state == GroupState::Dead {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        if let Err(e) = self.check_member(member_id, instance_id) {
            return e.code();
        }
        if self.state == GroupState::Empty {
            return ResponseError::UnknownMemberId.code();
        }
        if generation != self.generation {
            return ResponseError::IllegalGeneration.code();
        }
        let m = self.members.get_mut(member_id).expect("checked member");
        m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
        match self.state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            _ => 0,
        }
    }

    /// LeaveGroup for one member (by member id, or by instance id for a static member).
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now_ms: i64) -> i16 {
        if self.state == GroupState::Dead {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        let id = match instance_id {
            Some(instance) => match self.instances.get(instance) {
                Some(current) if !member_id.is_empty() && current != member_id => return ResponseError::FencedInstanceId.code(),
                Some(current) => current.clone(),
                None => return ResponseError::UnknownMemberId.code(),
            },
            None => member_id.to_owned(),
        };
        if self.pending.remove(&id).is_some() {
            self.try_complete_join(now_ms);
            return 0;
        }
        if !self.members.contains_key(&id) {
            return ResponseError::UnknownMemberId.code();
        }
        if let Some(m) = self.remove_member(&id) {
            answer_gone(m, ResponseError::UnknownMemberId);
        }
        self.membership_changed(now_ms);
        0
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id)?;
        if let Some(instance) = &m.instance_id {
            if self.instances.get(instance).map(String::as_str) == Some(id) {
                self.instances.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        Some(m)
    }

    /// After a member left or expired: rebalance the others, or finish the one under way.
    fn membership_changed(&mut self, now_ms: i64) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.prepare_rebalance(now_ms);
                    self.complete_join(now_ms);
                } else {
                    self.prepare_rebalance(now_ms);
                }
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Lets deadlines pass: expired sessions and pending ids, the end of a rebalance, an
    /// overdue leader's SyncGroup.
    pub fn tick(&mut self, now_ms: i64) {
        if self.state == GroupState::Dead {
            return;
        }
        self.pending.retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.awaits_answer() && m.session_deadline_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        let changed = !expired.is_empty();
        for id in expired {
            tracing::info!(target: "broker", group = %self.id, member = %id, "member session expired");
            if let Some(m) = self.remove_member(&id) {
                answer_gone(m, ResponseError::UnknownMemberId);
            }
        }
        if self.state == GroupState::CompletingRebalance && now_ms >= self.rebalance_deadline_ms {
            // The leader never sent its assignment: drop those that did not sync, start over.
            let unsynced: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| m.sync_reply.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in unsynced {
                if let Some(m) = self.remove_member(&id) {
                    answer_gone(m, ResponseError::UnknownMemberId);
                }
            }
            self.membership_changed(now_ms);
            return;
        }
        if changed {
            self.membership_changed(now_ms);
        } else {
            self.try_complete_join(now_ms);
        }
    }

    /// OffsetCommit's check: who may commit for this group now.
    pub fn check_commit(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.check_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(ResponseError::IllegalGeneration);
            }
            if self.state == GroupState::CompletingRebalance {
                // The member has its new generation but not yet its assignment.
                return Err(ResponseError::RebalanceInProgress);
            }
            Ok(())
        } else if self.state == GroupState::Empty {
            // A consumer that assigns partitions itself commits with no generation.
            Ok(())
        } else {
            Err(ResponseError::UnknownMemberId)
        }
    }
}

/// Answers whatever a removed member still waits for.
fn answer_gone(mut m: Member, error: ResponseError) {
    if let Some(tx) = m.join_reply.take() {
        let _ = tx.send(JoinAnswer::error(error, ""));
    }
    if let Some(tx) = m.sync_reply.take() {
        let _ = tx.send(SyncAnswer::error(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            session_timeout_ms_min: 1000,
            session_timeout_ms_max: 60_000,
            ..GroupConfig::default()
        }
    }

    fn join_req(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_owned(),
            instance_id: None,
            client_id: "c".to_owned(),
            client_host: "/127.0.0.1".to_owned(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".to_owned(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{member_id}-{p}"))))
                .collect(),
            require_known_member_id: true,
        }
    }

    fn now(rx: &mut oneshot::Receiver<JoinAnswer>) -> Option<JoinAnswer> {
        rx.try_recv().expect("not cancelled")
    }

    /// Joins a new dynamic member the v4 way: MEMBER_ID_REQUIRED, then again with the id.
    fn join_new(g: &mut Group, protocols: &[&str], t: i64) -> (String, oneshot::Receiver<JoinAnswer>) {
        let first = now(&mut g.join(join_req("", protocols), t)).unwrap();
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        assert!(!first.member_id.is_empty());
        let rx = g.join(join_req(&first.member_id, protocols), t);
        (first.member_id, rx)
    }

    fn sync(g: &mut Group, id: &str, generation: i32, assignments: Vec<(String, Bytes)>, t: i64) -> oneshot::Receiver<SyncAnswer> {
        g.sync(
            SyncRequest {
                member_id: id.to_owned(),
                instance_id: None,
                generation,
                protocol_type: Some("consumer".into()),
                protocol_name: None,
                assignments,
            },
            t,
        )
    }

    /// The leader's SyncGroup, which completes at once.
    fn lead_sync(g: &mut Group, id: &str, generation: i32, assignments: Vec<(String, Bytes)>, t: i64) {
        let answer = sync(g, id, generation, assignments, t)
            .try_recv()
            .unwrap()
            .expect("the leader's sync completes");
        assert_eq!(answer.error, 0);
    }

    #[test]
    fn one_member_joins_syncs_and_is_stable() {
        let mut g = Group::new("g".into(), config());
        let (id, mut rx) = join_new(&mut g, &["range"], 0);
        let a = now(&mut rx).expect("answered at once with no initial delay");
        assert_eq!(a.error, 0);
        assert_eq!(a.generation, 1);
        assert_eq!(a.leader, id);
        assert_eq!(a.protocol_name.as_deref(), Some("range"));
        assert_eq!(a.members.len(), 1);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let mut s = sync(&mut g, &id, 1, vec![(id.clone(), Bytes::from_static(b"A"))], 1);
        let s = s.try_recv().unwrap().unwrap();
        assert_eq!(s.error, 0);
        assert_eq!(&s.assignment[..], b"A");
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(g.heartbeat(&id, None, 1, 2), 0);
        assert_eq!(g.heartbeat(&id, None, 0, 2), ResponseError::IllegalGeneration.code());
        assert_eq!(g.heartbeat("nobody", None, 1, 2), ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn a_second_member_triggers_a_rebalance_that_waits_for_the_first() {
        let mut g = Group::new("g".into(), config());
        let (a, mut ra) = join_new(&mut g, &["range"], 0);
        now(&mut ra).unwrap();
        lead_sync(&mut g, &a, 1, vec![(a.clone(), Bytes::from_static(b"all"))], 0);
        let (b, mut rb) = join_new(&mut g, &["range"], 10);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert!(now(&mut rb).is_none(), "waits for the existing member");
        assert_eq!(g.heartbeat(&a, None, 1, 20), ResponseError::RebalanceInProgress.code());
        let mut ra = g.join(join_req(&a, &["range"]), 30);
        let (ja, jb) = (now(&mut ra).unwrap(), now(&mut rb).unwrap());
        assert_eq!((ja.generation, jb.generation), (2, 2));
        assert_eq!(ja.leader, a, "the leader stays the leader");
        assert_eq!(ja.members.len(), 2);
        assert!(jb.members.is_empty(), "only the leader sees the members");
        let mut sb = sync(&mut g, &b, 2, vec![], 40);
        assert!(sb.try_recv().unwrap().is_none(), "follower waits for the leader");
        let mut sa = sync(
            &mut g,
            &a,
            2,
            vec![(a.clone(), Bytes::from_static(b"p0")), (b.clone(), Bytes::from_static(b"p1"))],
            50,
        );
        assert_eq!(&sa.try_recv().unwrap().unwrap().assignment[..], b"p0");
        assert_eq!(&sb.try_recv().unwrap().unwrap().assignment[..], b"p1");
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let mut g = Group::new("g".into(), config());
        let (a, mut ra) = join_new(&mut g, &["range"], 0);
        now(&mut ra).unwrap();
        lead_sync(&mut g, &a, 1, vec![], 0);
        let (b, mut rb) = join_new(&mut g, &["range"], 100);
        // The old member keeps its session alive but never joins again.
        for t in [9_000, 18_000, 27_000] {
            assert_eq!(g.heartbeat(&a, None, 1, t), ResponseError::RebalanceInProgress.code());
            g.tick(t);
        }
        g.tick(100 + 29_999);
        assert!(now(&mut rb).is_none());
        g.tick(100 + 30_000);
        let jb = now(&mut rb).unwrap();
        assert_eq!(jb.generation, 2);
        assert_eq!(jb.leader, b);
        assert_eq!(jb.members.len(), 1);
        assert_eq!(g.heartbeat(&a, None, 2, 30_200), ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn sessions_expire_and_the_group_empties() {
        let mut g = Group::new("g".into(), config());
        let (a, mut ra) = join_new(&mut g, &["range"], 0);
        now(&mut ra).unwrap();
        lead_sync(&mut g, &a, 1, vec![], 0);
        g.tick(9_999);
        assert_eq!(g.state(), GroupState::Stable);
        g.tick(10_000);
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!(g.generation(), 2);
        assert!(g.is_disposable());
    }

    #[test]
    fn leaving_rebalances_the_rest() {
        let mut g = Group::new("g".into(), config());
        let (a, mut ra) = join_new(&mut g, &["range"], 0);
        now(&mut ra).unwrap();
        let (b, mut rb) = join_new(&mut g, &["range"], 0);
        let mut ra = g.join(join_req(&a, &["range"]), 0);
        now(&mut ra).unwrap();
        now(&mut rb).unwrap();
        lead_sync(&mut g, &a, 2, vec![], 0);
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(g.leave(&a, None, 5), 0);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        let mut rb = g.join(join_req(&b, &["range"]), 6);
        let jb = now(&mut rb).unwrap();
        assert_eq!((jb.generation, jb.leader.as_str()), (3, b.as_str()));
        assert_eq!(g.leave("nobody", None, 7), ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn protocols_must_be_shared_and_are_chosen_by_vote() {
        let mut g = Group::new("g".into(), config());
        let (a, mut ra) = join_new(&mut g, &["sticky", "range"], 0);
        now(&mut ra).unwrap();
        let bad = now(&mut g.join(join_req("", &["roundrobin"]), 1)).unwrap();
        assert_eq!(bad.error, ResponseError::InconsistentGroupProtocol.code());
        let (_b, mut rb) = join_new(&mut g, &["range", "sticky"], 2);
        let (_c, mut rc) = join_new(&mut g, &["range"], 2);
        let mut ra = g.join(join_req(&a, &["sticky", "range"]), 3);
        let ja = now(&mut ra).unwrap();
        now(&mut rb).unwrap();
        now(&mut rc).unwrap();
        assert_eq!(ja.protocol_name.as_deref(), Some("range"), "only range is shared by all");
        let mut other_type = join_req("", &["range"]);
        other_type.protocol_type = "connect".into();
        let e = now(&mut g.join(other_type, 4)).unwrap();
        assert_eq!(e.error, ResponseError::InconsistentGroupProtocol.code());
    }

    #[test]
    fn bad_session_timeouts_and_unknown_members_are_refused() {
        let mut g = Group::new("g".into(), config());
        let mut r = join_req("", &["range"]);
        r.session_timeout_ms = 10;
        assert_eq!(now(&mut g.join(r, 0)).unwrap().error, ResponseError::InvalidSessionTimeout.code());
        let e = now(&mut g.join(join_req("made-up", &["range"]), 0)).unwrap();
        assert_eq!(e.error, ResponseError::UnknownMemberId.code());
        let mut s = sync(&mut g, "made-up", 0, vec![], 0);
        assert_eq!(s.try_recv().unwrap().unwrap().error, ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn a_static_member_rejoins_without_a_rebalance_and_fences_its_old_id() {
        let mut g = Group::new("g".into(), config());
        let mut r = join_req("", &["range"]);
        r.instance_id = Some("i-1".into());
        let a = now(&mut g.join(r.clone(), 0)).unwrap();
        assert_eq!(a.error, 0, "static members need no MEMBER_ID_REQUIRED round");
        lead_sync(&mut g, &a.member_id, 1, vec![(a.member_id.clone(), Bytes::from_static(b"X"))], 0);
        assert_eq!(g.state(), GroupState::Stable);
        let again = now(&mut g.join(r, 100)).unwrap();
        assert_eq!(again.error, 0);
        assert_eq!(again.generation, 1, "no rebalance");
        assert_ne!(again.member_id, a.member_id);
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(
            g.heartbeat(&a.member_id, Some("i-1"), 1, 200),
            ResponseError::FencedInstanceId.code()
        );
        assert_eq!(g.heartbeat(&again.member_id, Some("i-1"), 1, 200), 0);
        let mut s = g.sync(
            SyncRequest {
                member_id: again.member_id.clone(),
                instance_id: Some("i-1".into()),
                generation: 1,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![],
            },
            300,
        );
        assert_eq!(&s.try_recv().unwrap().unwrap().assignment[..], b"X", "the assignment carries over");
        assert_eq!(g.leave("", Some("i-1"), 400), 0);
        assert_eq!(g.state(), GroupState::Empty);
    }

    #[test]
    fn the_initial_delay_gathers_members_into_one_generation() {
        let mut g = Group::new(
            "g".into(),
            GroupConfig {
                initial_rebalance_delay_ms: 3000,
                ..config()
            },
        );
        let (_a, mut ra) = join_new(&mut g, &["range"], 0);
        let (_b, mut rb) = join_new(&mut g, &["range"], 1000);
        g.tick(3999);
        assert!(now(&mut ra).is_none() && now(&mut rb).is_none());
        g.tick(4000);
        let (ja, jb) = (now(&mut ra).unwrap(), now(&mut rb).unwrap());
        assert_eq!((ja.generation, jb.generation), (1, 1));
        assert_eq!(ja.members.len() + jb.members.len(), 2);
    }

    #[test]
    fn commits_need_the_current_generation_unless_the_group_is_empty() {
        let mut g = Group::new("g".into(), config());
        assert!(g.check_commit("", None, -1).is_ok(), "standalone consumers commit to empty groups");
        let (a, mut ra) = join_new(&mut g, &["range"], 0);
        now(&mut ra).unwrap();
        assert_eq!(g.check_commit(&a, None, 1), Err(ResponseError::RebalanceInProgress));
        lead_sync(&mut g, &a, 1, vec![], 0);
        assert!(g.check_commit(&a, None, 1).is_ok());
        assert_eq!(g.check_commit(&a, None, 0), Err(ResponseError::IllegalGeneration));
        assert_eq!(g.check_commit("x", None, 1), Err(ResponseError::UnknownMemberId));
        assert_eq!(g.check_commit("", None, -1), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn pending_member_ids_expire() {
        let mut g = Group::new("g".into(), config());
        let first = now(&mut g.join(join_req("", &["range"]), 0)).unwrap();
        g.tick(10_001);
        let late = now(&mut g.join(join_req(&first.member_id, &["range"]), 10_002)).unwrap();
        assert_eq!(late.error, ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn a_leader_that_never_syncs_is_dropped() {
        let mut g = Group::new("g".into(), config());
        let (a, mut ra) = join_new(&mut g, &["range"], 0);
        now(&mut ra).unwrap();
        let (b, mut rb) = join_new(&mut g, &["range"], 0);
        let mut ra = g.join(join_req(&a, &["range"]), 0);
        now(&mut ra).unwrap();
        now(&mut rb).unwrap();
        let mut sb = sync(&mut g, &b, 2, vec![], 10);
        g.tick(30_000);
        assert_eq!(
            sb.try_recv().unwrap().unwrap().error,
            ResponseError::RebalanceInProgress.code(),
            "the follower is told to join again"
        );
        assert_eq!(g.heartbeat(&a, None, 2, 30_001), ResponseError::UnknownMemberId.code());
        assert_eq!(g.state(), GroupState::PreparingRebalance);
    }
}
