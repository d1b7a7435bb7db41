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

/// Most read rounds per fetch (see `read_rounds`).
const READ_ROUNDS_MAX: usize = 3;

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

    // Per partition, what each read round gave: records and the number of offsets they span
    // (records, for metrics).
    let mut data: Vec<Vec<(Records, u64)>> = (0..wanted.len()).map(|_| Vec::new()).collect();
    loop {
        let (total, errors) = read_rounds(broker, &wanted, &mut responses, &mut data, max_bytes, committed, request.version).await;
        let left = wait.saturating_sub(started.elapsed());
        if errors {
            broker.metrics.request_error(kafka_protocol::messages::ApiKey::Fetch);
        }
        if total >= min_bytes || errors || left.is_zero() || wanted.is_empty() {
            break;
        }
        // Long poll: park on the owners until one of them has data for us, or time is up.
        let mut by_owner: BTreeMap<ShardId, Vec<(TopicPartition, u64)>> = BTreeMap::new();
        for w in &wanted {
            by_owner.entry(w.owner).or_default().push((w.tp.clone(), w.offset));
        }
        let waits = by_owner
            .into_iter()
            .map(|(owner, watches)| Box::pin(broker.router.call(owner, vec![Op::WaitData { watches, timeout: left }])));
        let _ = futures::future::select_all(waits).await;
    }

    // Keep partitions in request order within max_bytes, each with the rounds of its reads
    // that fit (a prefix, so its offsets stay contiguous); the first non-empty round always.
    let mut budget = max_bytes;
    let mut first = true;
    let mut spliced = Vec::new();
    for (w, rounds) in wanted.iter().zip(data) {
        let (mut kept, mut messages) = (Records::default(), 0);
        for (records, spanned) in rounds {
            let len = records.len();
            let later_round = !kept.is_empty();
            if !first && (len > budget || (later_round && kept.len() + len > w.max_bytes)) {
                break;
            }
            budget = budget.saturating_sub(len);
            first = false;
            kept.append(records);
            messages += spanned;
        }
        if kept.is_empty() {
            continue;
        }
        // A non-empty placeholder marks where `encode_fetch` splices the records in.
        responses[w.topic].partitions[w.partition].records = Some(Bytes::from_static(b"records"));
        broker.metrics.fetched(&w.tp.topic, kept.len() as u64, messages);
        spliced.push(kept);
    }
    let response = FetchResponse::default().with_session_id(0).with_responses(responses);
    frame::encode_fetch(request.version, request.header.correlation_id, response, spliced)
}

/// Reads every wanted partition from its requested offset into `data` (replacing what an
/// earlier pass read), a list of rounds per partition, and fills in each answer's offsets or error. Returns the record bytes
/// read and whether any partition failed.
///
/// The reads run at once, in rounds, so that the disk reads stay near `max_bytes` rather than
/// `max_bytes` per partition: the first round gives each partition an equal share of the
/// response (at most its own `partition_max_bytes`); each later round shares what is left
/// among the partitions that have more data and room for another batch as large as their
/// largest so far. A partition's first batch is always read whole, so a share smaller than a
/// batch still makes progress (KIP-74); the response then keeps only the rounds that fit.
#[allow(clippy::too_many_arguments)]
async fn read_rounds(
    broker: &Broker,
    wanted: &[Wanted],
    responses: &mut [FetchableTopicResponse],
    data: &mut [Vec<(Records, u64)>],
    max_bytes: usize,
    committed: bool,
    version: i16,
) -> (usize, bool) {
    data.iter_mut().for_each(Vec::clear);
    // Per partition: the next offset to read and the bytes read so far.
    let mut progress: Vec<(u64, usize)> = wanted.iter().map(|w| (w.offset, 0)).collect();
    // Per partition, the largest batch read so far: a later round that cannot fit one more
    // would read a batch only to drop it.
    let mut largest = vec![0usize; wanted.len()];
    let mut candidates: Vec<usize> = (0..wanted.len()).collect();
    let (mut total, mut errors) = (0usize, false);
    for round in 0..READ_ROUNDS_MAX {
        let budget = max_bytes.saturating_sub(total);
        if round > 0 && !candidates.is_empty() {
            let share = budget / candidates.len();
            candidates.retain(|&i| largest[i] <= share.min(wanted[i].max_bytes.saturating_sub(progress[i].1)));
        }
        if candidates.is_empty() || budget == 0 {
            break;
        }
        let share = (budget / candidates.len()).max(1);
        let reads: Vec<Read> = candidates
            .iter()
            .map(|&i| Read {
                wanted: i,
                offset: progress[i].0,
                max_bytes: wanted[i].max_bytes.saturating_sub(progress[i].1).min(share).max(1),
            })
            .collect();
        let mut next_candidates = Vec::new();
        for (read, result) in reads.iter().zip(read_round(broker, wanted, &reads, committed).await) {
            let i = read.wanted;
            let w = &wanted[i];
            let answer = &mut responses[w.topic].partitions[w.partition];
            let (records, offsets, aborted) = match result {
                Ok(r) => r,
                Err(e) => {
                    crate::errors::log_if_serious(&e);
                    // A later round only loses the rest of its partition's share.
                    if round == 0 {
                        answer.error_code = crate::errors::code(&e);
                        errors = true;
                    }
                    continue;
                }
            };
            answer.error_code = 0;
            answer.high_watermark = offsets.durable_end as i64;
            answer.last_stable_offset = offsets.last_stable as i64;
            if version >= 5 {
                answer.log_start_offset = offsets.log_start as i64;
            }
            let listed = answer.aborted_transactions.get_or_insert_with(Vec::new);
            if round == 0 {
                listed.clear();
            }
            listed.extend(aborted.iter().map(|a| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(a.producer_id))
                    .with_first_offset(a.first_offset as i64)
            }));
            let Some(got) = records else { continue };
            let len = got.records.len();
            total += len;
            progress[i] = (got.next_offset, progress[i].1 + len);
            largest[i] = largest[i].max(got.records.largest_batch());
            data[i].push((got.records, got.next_offset - got.first_offset));
            let limit = if committed { offsets.last_stable } else { offsets.durable_end };
            if got.next_offset < limit && progress[i].1 < w.max_bytes {
                next_candidates.push(i);
            }
        }
        candidates = next_candidates;
    }
    (total, errors)
}

/// One partition's read in a round.
struct Read {
    wanted: usize,
    offset: u64,
    max_bytes: usize,
}

/// Records read from one partition: whole batches from `first_offset` up to `next_offset`.
struct Got {
    records: Records,
    first_offset: u64,
    next_offset: u64,
}

/// One round of reads, all at once: this shard's partitions in place (from the batch cache,
/// or keeping the O_DIRECT buffer), other shards' over the mesh as shared bytes, one mesh
/// call per owner. Results come back in the order of `reads`.
async fn read_round(broker: &Broker, wanted: &[Wanted], reads: &[Read], committed: bool) -> Vec<ReadOutcome> {
    let mut by_owner: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
    for (r, read) in reads.iter().enumerate() {
        by_owner.entry(wanted[read.wanted].owner).or_default().push(r);
    }
    let calls = by_owner.into_iter().map(|(owner, idx)| async move {
        let results: Vec<ReadOutcome> = if owner == broker.shard {
            let local = idx.iter().map(|&r| {
                let read = &reads[r];
                read_local(broker, &wanted[read.wanted].tp, read.offset, read.max_bytes, committed)
            });
            futures::future::join_all(local).await
        } else {
            let ops = idx
                .iter()
                .map(|&r| {
                    let read = &reads[r];
                    let (tp, offset, max_bytes) = (wanted[read.wanted].tp.clone(), read.offset, read.max_bytes);
                    if committed {
                        Op::ReadCommitted { tp, offset, max_bytes }
                    } else {
                        Op::Read { tp, offset, max_bytes }
                    }
                })
                .collect();
            let shared = |d: shard::ReadData| Got {
                records: Records::shared(d.chunks),
                first_offset: d.first_offset,
                next_offset: d.next_offset,
            };
            match broker.router.call(owner, ops).await {
                Ok(results) => results
                    .into_iter()
                    .map(|r| match r {
                        OpResult::Read(Ok((d, offsets))) => Ok((d.map(shared), offsets, Vec::new())),
                        OpResult::ReadCommitted(Ok(r)) => Ok((r.data.map(shared), r.offsets, r.aborted)),
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
    let mut out: Vec<Option<ReadOutcome>> = (0..reads.len()).map(|_| None).collect();
    for (results, idx) in futures::future::join_all(calls).await {
        for (result, r) in results.into_iter().zip(idx) {
            out[r] = Some(result);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or(Err(shard::Error::ShardGone(broker.shard.0))))
        .collect()
}

/// What one partition's read gave: its records (if any), the log's offsets, and (for
/// read_committed) the aborted transactions overlapping the records.
type ReadOutcome = Result<(Option<Got>, iouring_storage::LogOffsets, Vec<iouring_storage::AbortedTxn>), shard::Error>;

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
        LocalRead::Cached(data) => Got {
            records: Records::shared(data.chunks),
            first_offset: data.first_offset,
            next_offset: data.next_offset,
        },
        LocalRead::Log(r) => Got {
            records: Records::log(r.bytes),
            first_offset: r.first_offset,
            next_offset: r.next_offset,
        },
    });
    Ok((records, offsets, aborted))
}
