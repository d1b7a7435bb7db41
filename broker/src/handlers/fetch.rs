//! Fetch (key 1), versions 4-17: reads from each partition's owner; if fewer than `min_bytes`
//! are ready, parks on the owners (long poll) until data arrives or `max_wait_ms` passes.
//! Sessionless: every response has session id 0, so clients send full requests.
//!
//! Isolation (KIP-98): read_uncommitted (0) reads up to the high watermark (the durable end);
//! read_committed (1) only below the last stable offset, and lists the aborted transactions
//! (producer id, first offset) that overlap the batches returned, so the client drops those
//! producers' batches up to each abort marker. Both report the last stable offset.
//!
//! Byte limits: each partition reads at most `partition_max_bytes`; the response keeps whole
//! partitions in request order while they fit in `max_bytes`, and always the first non-empty
//! one whole, even if larger (KIP-74), so a consumer can always make progress.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use shard::{LocalRead, Op, OpResult, ShardId, TopicPartition};

use super::{decode_body, Request};
use crate::frame::{self, Frame, Records};
use crate::metadata::MetaStore;
use crate::server::Broker;

/// Longest long poll honoured, whatever the client asks.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// One partition being fetched.
struct Wanted {
    topic: usize,
    partition: usize,
    tp: TopicPartition,
    owner: ShardId,
    offset: u64,
    max_bytes: usize,
}

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Frame> {
    let req: FetchRequest = decode_body(body, request.version)?;
    let meta = broker.meta.snapshot();
    let started = Instant::now();
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 { usize::MAX } else { req.max_bytes as usize }.min(broker.config.fetch_bytes_max);
    let committed = req.isolation_level == 1;

    let mut responses = Vec::with_capacity(req.topics.len());
    let mut wanted = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = if request.version >= 13 {
            meta.topic_by_id(t.topic_id)
        } else {
            meta.topics.get(t.topic.0.as_str())
        };
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let answer = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_records(Some(Bytes::new()));
            let missing = if request.version >= 13 {
                ResponseError::UnknownTopicId
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            let Some(topic) = topic else {
                partitions.push(answer.with_error_code(missing.code()));
                continue;
            };
            let tp = TopicPartition::new(topic.name.clone(), p.partition);
            let Some(owner) = MetaStore::owner(&meta, &tp) else {
                partitions.push(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            if p.fetch_offset < 0 {
                partitions.push(answer.with_error_code(ResponseError::OffsetOutOfRange.code()));
                continue;
            }
            partitions.push(answer);
            wanted.push(Wanted {
                topic: ti,
                partition: pi,
                tp,
                owner,
                offset: p.fetch_offset as u64,
                max_bytes: p.partition_max_bytes.max(0) as usize,
            });
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }

    // Each partition's records with the number of offsets they span (records, for metrics).
    let mut data: Vec<Option<(Records, u64)>> = (0..wanted.len()).map(|_| None).collect();
    loop {
        let mut by_owner: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
        for (i, w) in wanted.iter().enumerate() {
            by_owner.entry(w.owner).or_default().push(i);
        }
        let read_max = |w: &Wanted| w.max_bytes.min(max_bytes).max(1);
        let (wanted_ref, read_max) = (&wanted, &read_max);
        // This shard's partitions are read in place (from the batch cache, or keeping the
        // O_DIRECT buffer); other shards' come back over the mesh as shared bytes.
        let calls = by_owner.iter().map(|(&owner, idx)| async move {
            let results: Vec<ReadOutcome> = if owner == broker.shard {
                let reads = idx.iter().map(|&i| {
                    let w = &wanted_ref[i];
                    read_local(broker, &w.tp, w.offset, read_max(w), committed)
                });
                futures::future::join_all(reads).await
            } else {
                let ops = idx
                    .iter()
                    .map(|&i| {
                        let (tp, offset, max_bytes) = (wanted_ref[i].tp.clone(), wanted_ref[i].offset, read_max(&wanted_ref[i]));
                        if committed {
                            Op::ReadCommitted { tp, offset, max_bytes }
                        } else {
                            Op::Read { tp, offset, max_bytes }
                        }
                    })
                    .collect();
                match broker.router.call(owner, ops).await {
                    Ok(results) => results
                        .into_iter()
                        .map(|r| match r {
                            OpResult::Read(Ok((d, offsets))) => Ok((
                                d.map(|d| (Records::Shared(d.chunks), d.next_offset - d.first_offset)),
                                offsets,
                                Vec::new(),
                            )),
                            OpResult::ReadCommitted(Ok(r)) => Ok((
                                r.data.map(|d| (Records::Shared(d.chunks), d.next_offset - d.first_offset)),
                                r.offsets,
                                r.aborted,
                            )),
                            OpResult::Read(Err(e)) | OpResult::ReadCommitted(Err(e)) => Err(e),
                            other => Err(shard::Error::UnknownPartition(format!("read answered with {other:?}"))),
                        })
                        .collect(),
                    Err(e) => {
                        tracing::debug!(target: "broker", shard = owner.0, error = %e, "fetch from another shard failed");
                        idx.iter().map(|_| Err(shard::Error::ShardGone(owner.0))).collect()
                    }
                }
            };
            (results, idx)
        });
        let mut total = 0usize;
        let mut errors = false;
        for (results, idx) in futures::future::join_all(calls).await {
            for (result, &i) in results.into_iter().zip(idx) {
                let w = &wanted[i];
                let answer = &mut responses[w.topic].partitions[w.partition];
                match result {
                    Ok((records, offsets, aborted)) => {
                        answer.error_code = 0;
                        answer.high_watermark = offsets.durable_end as i64;
                        answer.last_stable_offset = offsets.last_stable as i64;
                        answer.aborted_transactions = Some(
                            aborted
                                .iter()
                                .map(|a| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(a.producer_id))
                                        .with_first_offset(a.first_offset as i64)
                                })
                                .collect(),
                        );
                        if request.version >= 5 {
                            answer.log_start_offset = offsets.log_start as i64;
                        }
                        total += records.as_ref().map_or(0, |(r, _)| r.len());
                        data[i] = records;
                    }
                    Err(e) => {
                        crate::errors::log_if_serious(&e);
                        answer.error_code = crate::errors::code(&e);
                        data[i] = None;
                        errors = true;
                    }
                }
            }
        }
        let left = wait.saturating_sub(started.elapsed());
        if errors {
            broker.metrics.request_error(kafka_protocol::messages::ApiKey::Fetch);
        }
        if total >= min_bytes || errors || left.is_zero() || wanted.is_empty() {
            break;
        }
        // Long poll: park on the owners until one of them has data for us, or time is up.
        let waits = by_owner.iter().map(|(&owner, idx)| {
            let watches = idx.iter().map(|&i| (wanted[i].tp.clone(), wanted[i].offset)).collect();
            Box::pin(broker.router.call(owner, vec![Op::WaitData { watches, timeout: left }]))
        });
        let _ = futures::future::select_all(waits).await;
    }

    // Keep whole partitions in request order within max_bytes; the first non-empty one always.
    let mut budget = max_bytes;
    let mut first = true;
    let mut spliced = Vec::new();
    for (w, records) in wanted.iter().zip(data) {
        let Some((records, messages)) = records.filter(|(r, _)| !r.is_empty()) else {
            continue;
        };
        let len = records.len();
        if first || len <= budget {
            budget = budget.saturating_sub(len);
            first = false;
            // A non-empty placeholder marks where `encode_fetch` splices the records in.
            responses[w.topic].partitions[w.partition].records = Some(Bytes::from_static(b"records"));
            broker.metrics.fetched(&w.tp.topic, len as u64, messages);
            spliced.push(records);
        }
    }
    let response = FetchResponse::default().with_session_id(0).with_responses(responses);
    frame::encode_fetch(request.version, request.header.correlation_id, response, spliced)
}

/// What one partition's read gave: its records (if any) with the number of offsets they span
/// (for metrics), the log's offsets, and (for read_committed) the aborted transactions
/// overlapping the records.
type ReadOutcome = Result<
    (
        Option<(Records, u64)>,
        iouring_storage::LogOffsets,
        Vec<iouring_storage::AbortedTxn>,
    ),
    shard::Error,
>;

/// Reads a partition this shard owns: from the shard's batch cache when it holds the data
/// (shared, no disk I/O), else keeping the O_DIRECT read buffer for the response.
async fn read_local(broker: &Broker, tp: &TopicPartition, offset: u64, max_bytes: usize, committed: bool) -> ReadOutcome {
    let (read, offsets, aborted) = if committed {
        broker.partitions.read_local_committed(tp, offset, max_bytes).await?
    } else {
        let (read, offsets) = broker.partitions.read_local(tp, offset, max_bytes).await?;
        (read, offsets, Vec::new())
    };
    let records = read.map(|r| match r {
        LocalRead::Cached(data) => (Records::Shared(data.chunks), data.next_offset - data.first_offset),
        LocalRead::Log(r) => (Records::Log(r.bytes), r.next_offset - r.first_offset),
    });
    Ok((records, offsets, aborted))
}
