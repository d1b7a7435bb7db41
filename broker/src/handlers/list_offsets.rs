//! ListOffsets (key 2), versions 1-10: earliest, latest (the high watermark, or the last
//! stable offset for isolation level 1, read_committed), max timestamp, and the first record
//! at or after a timestamp (none at or past the last stable offset for read_committed, as
//! Kafka answers). The log finds the batch; this handler walks
//! the batch's records (`crate::records`, bounded, since a client wrote them) to find the exact
//! record, and answers with the batch if it cannot.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, ResponseKind};
use shard::{Op, OpResult, TopicPartition};

use super::{decode_body, Request};
use crate::metadata::MetaStore;
use crate::server::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: ListOffsetsRequest = decode_body(body, request.version)?;
    let meta = broker.meta.snapshot();
    let committed = request.version >= 2 && req.isolation_level == 1;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
            let answer = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            // leader_epoch exists from v4; a set field an older version lacks fails to encode.
            let answer = if request.version >= 4 {
                answer.with_leader_epoch(0)
            } else {
                answer
            };
            let answer = match MetaStore::owner(&meta, &tp) {
                None => answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Some(owner) => match lookup(broker, owner, tp, p.timestamp, committed).await {
                    Ok((offset, timestamp)) => answer.with_offset(offset).with_timestamp(timestamp),
                    Err(code) => answer.with_error_code(code),
                },
            };
            partitions.push(answer);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions));
    }
    Ok(Some(ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics))))
}

/// (offset, timestamp) for one partition, or a Kafka error code.
async fn lookup(broker: &Broker, owner: shard::ShardId, tp: TopicPartition, timestamp: i64, committed: bool) -> Result<(i64, i64), i16> {
    let call = |op: Op| async move {
        let mut r = broker.router.call(owner, vec![op]).await.map_err(|e| crate::errors::code(&e))?;
        Ok::<OpResult, i16>(r.pop().expect("one result per op"))
    };
    let offsets = match call(Op::Offsets { tp: tp.clone() }).await? {
        OpResult::Offsets(Ok(o)) => o,
        OpResult::Offsets(Err(e)) => return Err(crate::errors::code(&e)),
        _ => return Err(ResponseError::UnknownServerError.code()),
    };
    let hit = match timestamp {
        LATEST if committed => return Ok((offsets.last_stable as i64, -1)),
        LATEST => return Ok((offsets.durable_end as i64, -1)),
        EARLIEST | EARLIEST_LOCAL => return Ok((offsets.log_start as i64, -1)),
        LATEST_TIERED => return Ok((-1, -1)),
        MAX_TIMESTAMP => call(Op::MaxTimestamp { tp: tp.clone() }).await?,
        t if t >= 0 => {
            call(Op::FindTimestamp {
                tp: tp.clone(),
                timestamp: t,
            })
            .await?
        }
        _ => return Err(ResponseError::InvalidRequest.code()),
    };
    let hit = match hit {
        // read_committed readers cannot see at or past the last stable offset.
        OpResult::Timestamp(Ok(Some(h))) if committed && h.batch_base_offset >= offsets.last_stable => return Ok((-1, -1)),
        OpResult::Timestamp(Ok(Some(h))) => h,
        OpResult::Timestamp(Ok(None)) => return Ok((-1, -1)),
        OpResult::Timestamp(Err(e)) => return Err(crate::errors::code(&e)),
        _ => return Err(ResponseError::UnknownServerError.code()),
    };
    let batch = match call(Op::Read {
        tp,
        offset: hit.batch_base_offset,
        max_bytes: 1,
    })
    .await?
    {
        OpResult::Read(Ok((Some(d), _))) => d.contiguous(),
        OpResult::Read(Ok((None, _))) => return Ok((-1, -1)),
        OpResult::Read(Err(e)) => return Err(crate::errors::code(&e)),
        _ => return Err(ResponseError::UnknownServerError.code()),
    };
    let target = if timestamp == MAX_TIMESTAMP { hit.max_timestamp } else { timestamp };
    let batch_answer = (hit.batch_base_offset as i64, hit.max_timestamp);
    match crate::records::first_at_or_after(&batch, target) {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Ok(batch_answer),
        Err(e) => {
            tracing::debug!(target: "broker", offset = hit.batch_base_offset, error = %e, "cannot walk a batch's records; answering with the batch");
            Ok(batch_answer)
        }
    }
}
