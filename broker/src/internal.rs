//! What the broker's internal topics (`__consumer_offsets`, `__transaction_state`) share:
//! which partition and shard a key belongs to, creating the topics, the uncompressed batches
//! their coordinators write, appending one durably, and replaying a partition at start-up. Also
//! the per-shard services that requests reach over the mesh (`on_shard`).
//!
//! A batch here is a v2 record batch without compression or producer id: the 61-byte header
//! (see `records.rs`), then each record as length varint, attributes i8 (0), timestamp delta
//! varlong, offset delta varint, key length varint and key, value length varint (-1: null) and
//! value, header count varint (0). Varints are zigzag LEB128.

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use shard::{Op, OpResult, Partitions, Router, ShardId, Task, TaskOutput, TopicPartition};

use crate::constants::OFFSETS_LOAD_READ_BYTES_MAX;
use crate::metadata::MetaStore;
use crate::server::Broker;

const HEADER_BYTES: usize = 61;

/// What one shard keeps besides its partitions, reached by `on_shard`.
pub struct ShardServices {
    pub groups: Rc<crate::groups::Coordinator>,
    pub txns: Rc<crate::txn::TxnCoordinator>,
}

/// Runs `work` on `shard` with its services and returns what it made; an error is the Kafka
/// error for the whole request (the shard is still loading, or gone).
pub async fn on_shard<R, F, Fut>(router: &Router, shard: ShardId, work: F) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: FnOnce(Rc<ShardServices>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let task = Task(Box::new(move |service| {
        let services = service
            .downcast::<ShardServices>()
            .expect("the broker registers its ShardServices on every shard");
        Box::pin(async move { Box::new(work(services).await) as TaskOutput })
    }));
    match router.call(shard, vec![Op::Run(task)]).await {
        Ok(mut results) => match results.pop() {
            Some(OpResult::Ran(Ok(out))) => Ok(*out.downcast::<R>().expect("a task returns its work's type")),
            Some(OpResult::Ran(Err(shard::Error::ServiceMissing(_)))) => Err(ResponseError::CoordinatorLoadInProgress),
            _ => Err(ResponseError::CoordinatorNotAvailable),
        },
        Err(_) => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// Runs `work` on the shard owning `key`'s partition of internal `topic` (the coordinator of
/// that group or transactional id).
pub async fn on_owner<R, F, Fut>(broker: &Broker, topic: &str, key: &str, work: F) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: FnOnce(Rc<ShardServices>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let shard = owner(broker, topic, key)?;
    on_shard(&broker.router, shard, work).await
}

/// Whether `topic` is one of the broker's internal topics: listed as internal, written only by
/// its coordinator, never deleted.
pub fn is_internal(topic: &str) -> bool {
    topic == crate::groups::OFFSETS_TOPIC || topic == crate::txn::TXN_TOPIC
}

/// Kafka's `Utils.abs(key.hashCode()) % partitions`, with Java's String hash over UTF-16.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in key.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

/// The partition of internal `topic` that `key` belongs to.
pub fn partition_of(meta: &MetaStore, topic: &str, key: &str) -> Option<TopicPartition> {
    let snapshot = meta.snapshot();
    let t = snapshot.topics.get(topic)?;
    Some(TopicPartition::new(topic.to_owned(), partition_for(key, t.partitions())))
}

/// The shard that owns `key`'s partition of internal `topic`, or the error to answer with.
pub fn owner(broker: &Broker, topic: &str, key: &str) -> Result<ShardId, ResponseError> {
    owner_shard(&broker.meta, topic, key).ok_or(ResponseError::CoordinatorNotAvailable)
}

/// The shard that owns `key`'s partition of internal `topic`.
pub fn owner_shard(meta: &MetaStore, topic: &str, key: &str) -> Option<ShardId> {
    let tp = partition_of(meta, topic, key)?;
    MetaStore::owner(&meta.snapshot(), &tp)
}

/// The partitions of internal `topic` that `shard` owns.
pub fn owned_partitions(meta: &MetaStore, topic: &str, shard: ShardId) -> Vec<i32> {
    meta.snapshot()
        .topics
        .get(topic)
        .map(|t| {
            t.placement
                .iter()
                .enumerate()
                .filter(|(_, &s)| s == shard.0)
                .map(|(p, _)| p as i32)
                .collect()
        })
        .unwrap_or_default()
}

/// Creates compacted internal `topic` with `partitions` unless it exists. An existing topic
/// keeps its partition count even if the setting changed: keys are mapped to partitions by
/// that count, so changing it would lose track of what they wrote.
pub fn ensure_topic(meta: &MetaStore, topic: &str, partitions: i32) -> Result<(), crate::metadata::MetaError> {
    if let Some(t) = meta.snapshot().topics.get(topic) {
        if t.partitions() != partitions {
            tracing::warn!(
                target: "broker",
                topic,
                existing = t.partitions(),
                configured = partitions,
                "the partition count of an internal topic differs from the setting; keeping the existing count"
            );
        }
        return Ok(());
    }
    meta.update(|m, shards| {
        if !m.topics.contains_key(topic) {
            let configs = BTreeMap::from([
                ("cleanup.policy".to_owned(), "compact".to_owned()),
                ("segment.bytes".to_owned(), (100 * 1024 * 1024).to_string()),
            ]);
            crate::metadata::add_topic(m, shards, topic, partitions, configs);
        }
        Ok::<_, std::convert::Infallible>(())
    })?
    .unwrap_or_else(|never| match never {});
    Ok(())
}

/// Appends a batch to `key`'s partition of internal `topic` (owned by this shard) and waits
/// until it is durable; returns the batch's base offset.
pub async fn append(
    partitions: &Partitions,
    meta: &MetaStore,
    topic: &str,
    key: &str,
    batch: Bytes,
    now_ms: i64,
) -> Result<u64, ResponseError> {
    let tp = partition_of(meta, topic, key).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let op = Op::Append {
        tp,
        batch,
        leader_epoch: 0,
        now_ms,
        durable: true,
    };
    match partitions.execute(op).await {
        OpResult::Appended(Ok((info, _))) => Ok(info.base_offset),
        OpResult::Appended(Err(e)) => {
            crate::errors::log_if_serious(&e);
            tracing::warn!(target: "broker", topic, key, error = %e, "writing to an internal topic failed");
            Err(ResponseError::CoordinatorNotAvailable)
        }
        _ => Err(ResponseError::UnknownServerError),
    }
}

/// Replays partition `p` of internal `topic` (owned by this shard) from its start, calling
/// `each(batch base offset, key, value)` for every record. Unreadable records are skipped with
/// a warning; a log that cannot be read is an error.
pub async fn replay(partitions: &Partitions, topic: &str, p: i32, mut each: impl FnMut(u64, &[u8], Option<&[u8]>)) -> anyhow::Result<()> {
    let tp = TopicPartition::new(topic.to_owned(), p);
    let OpResult::Offsets(offsets) = partitions.execute(Op::Offsets { tp: tp.clone() }).await else {
        anyhow::bail!("offsets of {tp}: unexpected answer");
    };
    let offsets = offsets.map_err(|e| anyhow::anyhow!("opening {tp}: {e}"))?;
    let mut next = offsets.log_start;
    while next < offsets.durable_end {
        let op = Op::Read {
            tp: tp.clone(),
            offset: next,
            max_bytes: OFFSETS_LOAD_READ_BYTES_MAX,
        };
        let OpResult::Read(read) = partitions.execute(op).await else {
            anyhow::bail!("reading {tp}: unexpected answer");
        };
        let Some(data) = read.map_err(|e| anyhow::anyhow!("reading {tp} at {next}: {e}"))?.0 else {
            break;
        };
        if data.next_offset <= next {
            break;
        }
        next = data.next_offset;
        if let Err(e) = for_each_record(&data.contiguous(), |base, key, value| each(base as u64, key, value)) {
            tracing::warn!(target: "broker", %tp, offset = next, error = %e, "skipping unreadable records of an internal topic");
        }
    }
    Ok(())
}

/// A cursor over big-endian fields and Kafka varints; every read is bounded by the input.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.take(8).map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    pub(crate) fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        self.take(len).and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned)
    }
    pub(crate) fn varint(&mut self) -> Option<i64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }
    /// A varint-length byte string; `Some(None)` for length -1.
    pub(crate) fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            n => Some(Some(self.take(usize::try_from(n).ok()?)?)),
        }
    }
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

/// One uncompressed v2 batch holding `records` (key, value), all stamped `timestamp_ms`.
pub fn build_batch(records: &[(Bytes, Option<Bytes>)], timestamp_ms: i64) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = BytesMut::new();
    for (delta, (key, value)) in records.iter().enumerate() {
        let mut r = BytesMut::with_capacity(16 + key.len() + value.as_ref().map_or(0, Bytes::len));
        r.put_i8(0);
        put_varint(&mut r, 0);
        put_varint(&mut r, delta as i64);
        put_varint(&mut r, key.len() as i64);
        r.put_slice(key);
        match value {
            Some(v) => {
                put_varint(&mut r, v.len() as i64);
                r.put_slice(v);
            }
            None => put_varint(&mut r, -1),
        }
        put_varint(&mut r, 0);
        put_varint(&mut body, r.len() as i64);
        body.put_slice(&r);
    }
    let mut b = BytesMut::with_capacity(HEADER_BYTES + body.len());
    b.put_i64(0);
    b.put_i32((HEADER_BYTES - 12 + body.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(0);
    b.put_i32(records.len() as i32 - 1);
    b.put_i64(timestamp_ms);
    b.put_i64(timestamp_ms);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(records.len() as i32);
    b.put_slice(&body);
    let crc = iouring_storage::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// Calls `each(batch base offset, key, value)` for every record of the batches in `bytes` (whole batches, as a
/// log read returns them). Only uncompressed batches are expected here, since only the
/// coordinator writes this topic; anything else is an error naming what is wrong.
pub fn for_each_record(mut bytes: &[u8], mut each: impl FnMut(i64, &[u8], Option<&[u8]>)) -> Result<(), String> {
    while bytes.len() >= HEADER_BYTES {
        let len = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let total = usize::try_from(len).map_err(|_| format!("batch length {len}"))? + 12;
        if total < HEADER_BYTES || total > bytes.len() {
            return Err(format!("batch of {total} bytes in {} left", bytes.len()));
        }
        let (batch, rest) = bytes.split_at(total);
        bytes = rest;
        let base_offset = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        if attributes & 0x07 != 0 {
            return Err(format!("compressed batch (attributes {attributes:#x})"));
        }
        if attributes & 0x20 != 0 {
            // A control batch (transaction marker) carries no offsets.
            continue;
        }
        let count = i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes"));
        let mut r = Reader(&batch[HEADER_BYTES..]);
        for _ in 0..count.max(0) {
            let len = r.varint().ok_or("bad record length")?;
            let record = r
                .take(usize::try_from(len).map_err(|_| "negative record length")?)
                .ok_or("record past batch end")?;
            let mut rec = Reader(record);
            rec.take(1).ok_or("record without attributes")?;
            rec.varint().ok_or("bad timestamp delta")?;
            rec.varint().ok_or("bad offset delta")?;
            let key = rec.bytes().ok_or("bad key")?.unwrap_or_default();
            let value = rec.bytes().ok_or("bad value")?;
            each(base_offset, key, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_match_kafka() {
        // Expected values from a separate implementation of Java's String.hashCode (Python,
        // over UTF-16 code units, masked with 0x7fffffff as Kafka's Utils.abs does).
        assert_eq!(partition_for("my-group", 50), 36);
        assert_eq!(partition_for("consumer-group-1", 50), 20);
        assert_eq!(partition_for("ünïcode", 7), 0);
        assert_eq!(partition_for("", 16), 0);
        let long = "x".repeat(1000);
        assert!((0..7).contains(&partition_for(&long, 7)));
    }
}
