//! A Kafka endpoint that stores nothing: it acknowledges every produce request as soon as it has
//! read it. perf's producers run against it to show how fast perf alone can send on this
//! machine, so the report can say whether perf or the broker set the pace at maximum rate.
//!
//! It answers the calls perf's producer side makes (Metadata, CreateTopics, Produce,
//! DeleteTopics, at perf's versions or any other kafka-protocol knows) on one thread per
//! connection, and counts the records it acknowledged, so the harness can check that perf's
//! count of acknowledged messages is no larger. Any other call closes the connection, which
//! fails perf's run: the sink measures producers only.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::constants::{SINK_PARTITIONS_MAX, SINK_REQUEST_BYTES_MAX};

/// Kafka's error for a topic the broker does not have.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Kafka's error for a partition count out of bounds.
const INVALID_PARTITIONS: i16 = 37;

/// Offset 57 of a v2 record batch holds its record count; 61 is the header's length.
const BATCH_COUNT_AT: usize = 57;
const BATCH_HEADER_BYTES: usize = 61;

/// Topics and their next offsets, per partition.
type Topics = BTreeMap<String, Vec<i64>>;

/// A running sink; stops when dropped.
pub struct Sink {
    pub addr: String,
    stop: Arc<AtomicBool>,
    records: Arc<AtomicU64>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the sink")?;
        let local: SocketAddr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(AtomicU64::new(0));
        let topics: Arc<Mutex<Topics>> = Arc::default();
        let acceptor = {
            let (stop, records) = (stop.clone(), records.clone());
            std::thread::Builder::new().name("sink-accept".into()).spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (topics, records) = (topics.clone(), records.clone());
                    let _ = std::thread::Builder::new().name("sink-conn".into()).spawn(move || {
                        if let Err(e) = serve(stream, local, &topics, &records) {
                            eprintln!("sink: connection closed: {e:#}");
                        }
                    });
                }
            })?
        };
        Ok(Sink {
            addr: local.to_string(),
            stop,
            records,
            acceptor: Some(acceptor),
        })
    }

    /// Records acknowledged so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Acquire)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// Answers one connection's requests in order until the client closes it.
fn serve(mut stream: TcpStream, local: SocketAddr, topics: &Mutex<Topics>, records: &AtomicU64) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut out = BytesMut::new();
    loop {
        let mut size = [0u8; 4];
        match stream.read_exact(&mut size) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let size = i32::from_be_bytes(size);
        if !(8..=SINK_REQUEST_BYTES_MAX).contains(&size) {
            bail!("request frame of {size} bytes");
        }
        // Read into spare capacity: no zeroing, as a broker would not zero either.
        let mut frame = Vec::with_capacity(size as usize);
        (&mut stream).take(size as u64).read_to_end(&mut frame)?;
        if frame.len() != size as usize {
            bail!("the client closed the connection inside a request");
        }
        let mut body = Bytes::from(frame);
        let key = ApiKey::try_from(i16::from_be_bytes([body[0], body[1]])).map_err(|_| anyhow::anyhow!("unknown API key"))?;
        let version = i16::from_be_bytes([body[2], body[3]]);
        let header = RequestHeader::decode(&mut body, key.request_header_version(version))?;
        // Size (filled in below), header, then the body straight after them.
        out.clear();
        out.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(header.correlation_id)
            .encode(&mut out, key.response_header_version(version))?;
        if answer(key, version, body, local, topics, records, &mut out)? {
            let n = (out.len() - 4) as i32;
            out[..4].copy_from_slice(&n.to_be_bytes());
            stream.write_all(&out)?;
        }
    }
}

/// Appends the body of the answer to one request to `out`; false for a produce with acks=0,
/// which gets none.
fn answer(
    key: ApiKey,
    version: i16,
    mut body: Bytes,
    local: SocketAddr,
    topics: &Mutex<Topics>,
    records: &AtomicU64,
    out: &mut BytesMut,
) -> Result<bool> {
    let lock = || topics.lock().expect("no sink thread panics holding the topics");
    match key {
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut body, version)?;
            let mut topics = lock();
            let mut responses = Vec::with_capacity(request.topic_data.len());
            for t in &request.topic_data {
                let mut offsets = topics.get_mut(t.name.as_str());
                let mut partitions = Vec::with_capacity(t.partition_data.len());
                for p in &t.partition_data {
                    let next = offsets.as_deref_mut().and_then(|o| o.get_mut(p.index as usize));
                    let response = PartitionProduceResponse::default().with_index(p.index);
                    partitions.push(match next {
                        Some(next) => {
                            let count = p.records.as_ref().map_or(0, count_records);
                            let base = *next;
                            *next += count as i64;
                            records.fetch_add(count, Ordering::AcqRel);
                            response.with_base_offset(base).with_log_append_time_ms(-1)
                        }
                        None => response.with_error_code(UNKNOWN_TOPIC_OR_PARTITION).with_base_offset(-1),
                    });
                }
                responses.push(
                    TopicProduceResponse::default()
                        .with_name(t.name.clone())
                        .with_partition_responses(partitions),
                );
            }
            if request.acks == 0 {
                return Ok(false);
            }
            ProduceResponse::default().with_responses(responses).encode(out, version)?;
        }
        ApiKey::Metadata => {
            let request = MetadataRequest::decode(&mut body, version)?;
            let topics = lock();
            let names: Vec<String> = match request.topics {
                Some(ts) => ts.iter().filter_map(|t| t.name.as_ref().map(|n| n.to_string())).collect(),
                None => topics.keys().cloned().collect(),
            };
            let listed = names
                .into_iter()
                .map(|name| {
                    let topic = MetadataResponseTopic::default().with_name(Some(topic_name(&name)));
                    match topics.get(&name) {
                        Some(offsets) => topic.with_partitions(
                            (0..offsets.len() as i32)
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(BrokerId(0))
                                        .with_replica_nodes(vec![BrokerId(0)])
                                        .with_isr_nodes(vec![BrokerId(0)])
                                })
                                .collect(),
                        ),
                        None => topic.with_error_code(UNKNOWN_TOPIC_OR_PARTITION),
                    }
                })
                .collect();
            MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(0))
                    .with_host(StrBytes::from_string(local.ip().to_string()))
                    .with_port(i32::from(local.port()))])
                .with_controller_id(BrokerId(0))
                .with_topics(listed)
                .encode(out, version)?;
        }
        ApiKey::CreateTopics => {
            let request = CreateTopicsRequest::decode(&mut body, version)?;
            let mut topics = lock();
            let results = request
                .topics
                .iter()
                .map(|t| {
                    let result = CreatableTopicResult::default().with_name(t.name.clone());
                    let partitions = t.num_partitions.max(1);
                    if partitions > SINK_PARTITIONS_MAX {
                        return result.with_error_code(INVALID_PARTITIONS);
                    }
                    topics.insert(t.name.to_string(), vec![0; partitions as usize]);
                    result.with_num_partitions(partitions).with_replication_factor(1)
                })
                .collect();
            CreateTopicsResponse::default().with_topics(results).encode(out, version)?;
        }
        ApiKey::DeleteTopics => {
            let request = DeleteTopicsRequest::decode(&mut body, version)?;
            let mut topics = lock();
            let mut names: Vec<TopicName> = request.topic_names;
            names.extend(request.topics.into_iter().filter_map(|t| t.name));
            let results = names
                .into_iter()
                .map(|n| {
                    let code = if topics.remove(n.as_str()).is_some() {
                        0
                    } else {
                        UNKNOWN_TOPIC_OR_PARTITION
                    };
                    DeletableTopicResult::default().with_name(Some(n)).with_error_code(code)
                })
                .collect();
            DeleteTopicsResponse::default().with_responses(results).encode(out, version)?;
        }
        other => bail!("{other:?} is not a producer's call; the sink answers producers only"),
    }
    Ok(true)
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// Records in a produce request's record batches, from each v2 batch header; a truncated
/// batch at the end counts nothing.
fn count_records(batches: &Bytes) -> u64 {
    let mut rest = &batches[..];
    let mut count = 0;
    while rest.len() >= BATCH_HEADER_BYTES {
        let length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let total = 12 + length.max(0) as usize;
        if total < BATCH_HEADER_BYTES || total > rest.len() {
            break;
        }
        let n = i32::from_be_bytes(rest[BATCH_COUNT_AT..BATCH_COUNT_AT + 4].try_into().expect("4 bytes"));
        count += n.max(0) as u64;
        rest.advance(total);
    }
    count
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    use super::*;

    /// Writes one request frame.
    fn send<Req: Encodable>(s: &mut TcpStream, key: ApiKey, version: i16, correlation: i32, req: &Req) {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        let n = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&n.to_be_bytes());
        s.write_all(&buf).unwrap();
    }

    fn call<Req: Encodable, Resp: Decodable>(s: &mut TcpStream, key: ApiKey, version: i16, correlation: i32, req: &Req) -> Resp {
        send(s, key, version, correlation, req);
        let mut size = [0u8; 4];
        s.read_exact(&mut size).unwrap();
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        s.read_exact(&mut frame).unwrap();
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation);
        Resp::decode(&mut frame, version).unwrap()
    }

    /// `batches` v2 record batches of `per_batch` records each.
    fn batches(batches: usize, per_batch: usize) -> Bytes {
        let mut buf = BytesMut::new();
        for b in 0..batches {
            let records: Vec<Record> = (0..per_batch)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: (b * per_batch + i) as i64,
                    sequence: i as i32,
                    timestamp: 0,
                    key: None,
                    value: Some(Bytes::from_static(b"value")),
                    headers: Default::default(),
                    delete_horizon: false,
                })
                .collect();
            let options = RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            };
            RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        }
        buf.freeze()
    }

    fn produce(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
        ProduceRequest::default()
            .with_acks(acks)
            .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(
                vec![PartitionProduceData::default().with_index(partition).with_records(Some(records))],
            )])
    }

    #[test]
    fn the_sink_answers_a_producers_calls_and_counts_what_it_acknowledged() {
        let sink = Sink::start().unwrap();
        let mut s = TcpStream::connect(&sink.addr).unwrap();
        let created: CreateTopicsResponse = call(
            &mut s,
            ApiKey::CreateTopics,
            5,
            1,
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(topic_name("t"))
                .with_num_partitions(2)
                .with_replication_factor(1)]),
        );
        assert_eq!(created.topics[0].error_code, 0);
        assert_eq!(created.topics[0].num_partitions, 2);
        // A partition count no workload asks for is refused, not allocated.
        let huge: CreateTopicsResponse = call(
            &mut s,
            ApiKey::CreateTopics,
            5,
            12,
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(topic_name("huge"))
                .with_num_partitions(i32::MAX)]),
        );
        assert_eq!(huge.topics[0].error_code, INVALID_PARTITIONS);

        let request = |names: &[&str]| {
            MetadataRequest::default().with_topics(Some(
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                    .collect(),
            ))
        };
        let meta: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, 2, &request(&["t", "missing"]));
        assert_eq!(meta.brokers.len(), 1);
        assert_eq!(format!("{}:{}", meta.brokers[0].host, meta.brokers[0].port), sink.addr);
        assert_eq!(meta.topics[0].partitions.len(), 2);
        assert_eq!(meta.topics[0].partitions[1].leader_id, BrokerId(0));
        assert_eq!(meta.topics[1].error_code, UNKNOWN_TOPIC_OR_PARTITION);

        // Offsets advance by the records of every batch of a request, per partition.
        for (correlation, partition, base) in [(3, 0, 0), (4, 0, 6), (5, 1, 0)] {
            let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, correlation, &produce("t", partition, batches(2, 3), -1));
            let p = &r.responses[0].partition_responses[0];
            assert_eq!((p.index, p.error_code, p.base_offset), (partition, 0, base));
        }
        assert_eq!(sink.records(), 18);
        let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, 6, &produce("missing", 0, batches(1, 1), 1));
        assert_eq!(r.responses[0].partition_responses[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
        assert_eq!(sink.records(), 18, "nothing counted for a topic the sink does not have");

        let deleted: DeleteTopicsResponse = call(
            &mut s,
            ApiKey::DeleteTopics,
            4,
            7,
            &DeleteTopicsRequest::default().with_topic_names(vec![topic_name("t"), topic_name("t")]),
        );
        let codes: Vec<i16> = deleted.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, [0, UNKNOWN_TOPIC_OR_PARTITION]);

        // acks=0 gets no answer; the next request's answer is the next thing on the socket.
        let created: CreateTopicsResponse = call(
            &mut s,
            ApiKey::CreateTopics,
            5,
            8,
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default().with_name(topic_name("u")).with_num_partitions(1)]),
        );
        assert_eq!(created.topics[0].error_code, 0);
        send(&mut s, ApiKey::Produce, 9, 9, &produce("u", 0, batches(1, 4), 0));
        let meta: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, 10, &request(&["u"]));
        assert_eq!(meta.topics[0].partitions.len(), 1);
        assert_eq!(sink.records(), 22);

        // A consumer's call closes the connection: the sink measures producers only.
        send(&mut s, ApiKey::Fetch, 11, 11, &kafka_protocol::messages::FetchRequest::default());
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).unwrap(), 0, "closed without an answer");
    }
}
