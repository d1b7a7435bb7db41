//! One transactional id's state, the checks every transaction request makes against it, and
//! its record in `__transaction_state` (Kafka's TransactionLog format).
//!
//! Key, version 0 (big-endian, strings as i16 length + UTF-8):
//!
//! ```text
//! version i16 (0) | transactional id string
//! ```
//!
//! Value, version 0; a null value (tombstone) forgets the transactional id:
//!
//! ```text
//! version i16 (0) | producer id i64 | producer epoch i16 | timeout ms i32 | state i8
//! | partitions: count i32 (-1: none), each topic string, count i32, partition i32...
//! | last update ms i64 | start ms i64
//! ```
//!
//! States, as Kafka numbers them: 0 Empty, 1 Ongoing, 2 PrepareCommit, 3 PrepareAbort,
//! 4 CompleteCommit, 5 CompleteAbort, 6 Dead, 7 PrepareEpochFence.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;

use crate::groups::offsets::put_string;
use crate::internal::Reader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
}

impl TxnState {
    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    fn from_i8(v: i8) -> Option<TxnState> {
        Some(match v {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    /// Markers are being written: the transaction cannot change until they are.
    pub fn preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// What the coordinator knows of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Data partitions in the open transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the open transaction commits (AddOffsetsToTxn). Kept in the
    /// partitions list on disk as `__consumer_offsets` entries named by group, as Kafka keeps
    /// the group's offsets partition there.
    pub groups: BTreeSet<String>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

impl TxnMeta {
    /// Checks the producer id and epoch a request names: INVALID_PRODUCER_ID_MAPPING for
    /// another producer id, PRODUCER_FENCED for an older epoch (a newer instance took over).
    pub fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), ResponseError> {
        if producer_id != self.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(())
    }

    /// Whether partitions may be added now; CONCURRENT_TRANSACTIONS while markers are written.
    pub fn check_can_add(&self) -> Result<(), ResponseError> {
        if self.state.preparing() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(())
    }

    /// EndTxn's decision: `Ok(true)` to write markers, `Ok(false)` when this is a retry of
    /// an end that already completed, or the error to answer with.
    pub fn check_end(&self, commit: bool) -> Result<bool, ResponseError> {
        match (self.state, commit) {
            (TxnState::Ongoing, _) => Ok(true),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(false),
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => Err(ResponseError::ConcurrentTransactions),
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// Moves into the transaction (AddPartitionsToTxn / AddOffsetsToTxn).
    pub fn begin_if_idle(&mut self, now_ms: i64) {
        if self.state != TxnState::Ongoing {
            self.state = TxnState::Ongoing;
            self.start_ms = now_ms;
            self.partitions.clear();
            self.groups.clear();
        }
        self.last_update_ms = now_ms;
    }
}

/// The offsets partition entry that stands for a group in the stored partition list.
const GROUP_ENTRY_TOPIC: &str = "__consumer_offsets";

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut k = BytesMut::with_capacity(4 + transactional_id.len());
    k.put_i16(0);
    put_string(&mut k, transactional_id);
    k.freeze()
}

pub fn encode_value(m: &TxnMeta) -> Bytes {
    let mut v = BytesMut::new();
    v.put_i16(0);
    v.put_i64(m.producer_id);
    v.put_i16(m.producer_epoch);
    v.put_i32(m.timeout_ms);
    v.put_i8(m.state as i8);
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.last_mut() {
            Some((last, ps)) if *last == t.as_str() => ps.push(*p),
            _ => topics.push((t.as_str(), vec![*p])),
        }
    }
    // Groups are stored as entries of the offsets topic, partition -1, named by group: Kafka
    // stores the group's offsets partition; the group id is what this coordinator needs.
    let groups: Vec<&String> = m.groups.iter().collect();
    v.put_i32((topics.len() + groups.len()) as i32);
    for (t, ps) in topics {
        put_string(&mut v, t);
        v.put_i32(ps.len() as i32);
        for p in ps {
            v.put_i32(p);
        }
    }
    for g in groups {
        put_string(&mut v, &format!("{GROUP_ENTRY_TOPIC}/{g}"));
        v.put_i32(1);
        v.put_i32(-1);
    }
    v.put_i64(m.last_update_ms);
    v.put_i64(m.start_ms);
    v.freeze()
}

/// Decodes a record: the transactional id and its state (`None` for a tombstone).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<(String, Option<TxnMeta>), String> {
    let mut k = Reader(key);
    let version = k.i16().ok_or("key too short")?;
    if version != 0 {
        return Err(format!("unknown key version {version}"));
    }
    let id = k.string().ok_or("bad transactional id")?;
    let Some(value) = value else {
        return Ok((id, None));
    };
    let mut r = Reader(value);
    r.i16().ok_or("value too short")?;
    let producer_id = r.i64().ok_or("bad producer id")?;
    let producer_epoch = r.i16().ok_or("bad producer epoch")?;
    let timeout_ms = r.i32().ok_or("bad timeout")?;
    let state = r.take(1).and_then(|b| TxnState::from_i8(b[0] as i8)).ok_or("bad state")?;
    let count = r.i32().ok_or("bad partition count")?;
    let mut partitions = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for _ in 0..count.max(0) {
        let topic = r.string().ok_or("bad topic")?;
        let n = r.i32().ok_or("bad partition list")?;
        for _ in 0..n.max(0) {
            let p = r.i32().ok_or("bad partition")?;
            match topic.strip_prefix(&format!("{GROUP_ENTRY_TOPIC}/")) {
                Some(group) => {
                    groups.insert(group.to_owned());
                }
                None => {
                    partitions.insert((topic.clone(), p));
                }
            }
        }
    }
    let last_update_ms = r.i64().ok_or("bad update time")?;
    let start_ms = r.i64().ok_or("bad start time")?;
    Ok((
        id,
        Some(TxnMeta {
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            groups,
            last_update_ms,
            start_ms,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(state: TxnState) -> TxnMeta {
        TxnMeta {
            producer_id: 7,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state,
            partitions: [("a".to_owned(), 0), ("a".to_owned(), 2), ("b".to_owned(), 1)]
                .into_iter()
                .collect(),
            groups: ["g".to_owned()].into_iter().collect(),
            last_update_ms: 5,
            start_ms: 4,
        }
    }

    #[test]
    fn records_round_trip() {
        for state in [TxnState::Empty, TxnState::Ongoing, TxnState::PrepareAbort, TxnState::CompleteCommit] {
            let m = meta(state);
            let (id, back) = decode(&encode_key("txn-1"), Some(&encode_value(&m))).unwrap();
            assert_eq!((id.as_str(), back), ("txn-1", Some(m)));
        }
        assert_eq!(decode(&encode_key("gone"), None).unwrap(), ("gone".to_owned(), None));
    }

    #[test]
    fn requests_are_checked_as_kafka_does() {
        let m = meta(TxnState::Ongoing);
        assert_eq!(m.check_producer(8, 3), Err(ResponseError::InvalidProducerIdMapping));
        assert_eq!(m.check_producer(7, 2), Err(ResponseError::ProducerFenced));
        assert_eq!(m.check_producer(7, 3), Ok(()));
        assert_eq!(m.check_end(true), Ok(true));
        assert_eq!(meta(TxnState::CompleteCommit).check_end(true), Ok(false), "a retried commit");
        assert_eq!(meta(TxnState::CompleteCommit).check_end(false), Err(ResponseError::InvalidTxnState));
        assert_eq!(meta(TxnState::Empty).check_end(true), Err(ResponseError::InvalidTxnState));
        assert_eq!(
            meta(TxnState::PrepareCommit).check_end(true),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            meta(TxnState::PrepareAbort).check_can_add(),
            Err(ResponseError::ConcurrentTransactions)
        );
        let mut m = meta(TxnState::CompleteAbort);
        m.begin_if_idle(100);
        assert_eq!((m.state, m.start_ms, m.partitions.len()), (TxnState::Ongoing, 100, 0));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(key in proptest::collection::vec(any::<u8>(), 0..64), value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&key, Some(&value));
            let _ = decode(&key, None);
        }
    }
}
