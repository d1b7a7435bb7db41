//! A minimal Kafka client over blocking sockets: framing, and the few admin calls a run needs
//! (Metadata to find leaders, CreateTopics, ListOffsets, DeleteTopics). Produce and Fetch are driven by
//! `run`, which pipelines them.
//!
//! Versions are fixed and old enough for any Kafka 2.4+ compatible broker (flexible versions,
//! topic names rather than ids): Produce v9, Fetch v11, Metadata v9, CreateTopics v5,
//! ListOffsets v5, DeleteTopics v4.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::batch::{put_uvarint, Batch};
use crate::constants::{RESPONSE_BYTES_MAX, SOCKET_TIMEOUT_MS, TOPIC_READY_TIMEOUT_MS};
use crate::{Error, Result};

pub const PRODUCE_VERSION: i16 = 9;
pub const FETCH_VERSION: i16 = 11;
pub const METADATA_VERSION: i16 = 9;
pub const CREATE_TOPICS_VERSION: i16 = 5;
pub const LIST_OFFSETS_VERSION: i16 = 5;
pub const DELETE_TOPICS_VERSION: i16 = 4;

/// Kafka's "topic already exists" error code.
const TOPIC_ALREADY_EXISTS: i16 = 36;

const CLIENT_ID: &str = "perf";

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// Opens a TCP connection with Nagle off (each request is one write) and a read timeout.
pub fn connect(addr: &str) -> Result<TcpStream> {
    let io = |op| {
        move |source| Error::Io {
            op,
            addr: addr.to_owned(),
            source,
        }
    };
    let s = TcpStream::connect(addr).map_err(io("connecting to"))?;
    s.set_nodelay(true).map_err(io("setting TCP_NODELAY on"))?;
    s.set_read_timeout(Some(Duration::from_millis(SOCKET_TIMEOUT_MS)))
        .map_err(io("setting a read timeout on"))?;
    Ok(s)
}

/// Appends a whole request frame (size prefix, header, body) to `buf`.
pub fn encode_request<R: Encodable>(buf: &mut BytesMut, key: ApiKey, version: i16, correlation: i32, body: &R) -> Result<()> {
    let start = buf.len();
    buf.put_i32(0);
    let api = api_name(key);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(buf, key.request_header_version(version))
        .map_err(|e| encoding(api, e))?;
    body.encode(buf, version).map_err(|e| encoding(api, e))?;
    let size = (buf.len() - start - 4) as i32;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// A Produce request (v9, `PRODUCE_VERSION`) to one topic whose record batches are not copied:
/// the frame's pieces in wire order, the encoded bytes (in `buf`) around each batch and the
/// batch's own pieces (`Batch::pieces`), to be sent with vectored writes. Encoding the request through kafka-protocol
/// copies every batch into the frame, which took a fifth of perf's CPU at maximum rate. The
/// header goes through kafka-protocol; the body is written here (its field encoders are
/// private to the crate). `encode_request` of the same `ProduceRequest` gives the same bytes
/// (tested).
pub fn encode_produce<'a>(
    buf: &'a mut BytesMut,
    correlation: i32,
    topic: &str,
    acks: i16,
    timeout_ms: i32,
    batches: impl ExactSizeIterator<Item = (i32, &'a Batch)> + Clone,
) -> Result<Vec<&'a [u8]>> {
    buf.clear();
    buf.put_i32(0); // size, filled below
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(buf, ApiKey::Produce.request_header_version(PRODUCE_VERSION))
        .map_err(|e| encoding("Produce", e))?;
    // Body: transactional id (null), acks, timeout, one topic. Compact lengths are the count
    // plus one, as unsigned varints.
    put_uvarint(buf, 0);
    buf.put_i16(acks);
    buf.put_i32(timeout_ms);
    put_uvarint(buf, 2);
    put_uvarint(buf, topic.len() as u64 + 1);
    buf.put_slice(topic.as_bytes());
    put_uvarint(buf, batches.len() as u64 + 1);
    // Where each batch goes between the encoded bytes.
    let mut cuts = Vec::with_capacity(batches.len());
    let mut records_bytes = 0;
    for (i, (partition, records)) in batches.clone().enumerate() {
        if i > 0 {
            put_uvarint(buf, 0); // the previous partition's tagged fields
        }
        buf.put_i32(partition);
        put_uvarint(buf, records.len() as u64 + 1);
        cuts.push(buf.len());
        records_bytes += records.len();
    }
    if !cuts.is_empty() {
        put_uvarint(buf, 0); // the last partition's tagged fields
    }
    put_uvarint(buf, 0); // the topic's
    put_uvarint(buf, 0); // the request's
    let size = buf.len() - 4 + records_bytes;
    buf[..4].copy_from_slice(&(size as i32).to_be_bytes());
    let encoded: &'a BytesMut = buf;
    let mut pieces = Vec::with_capacity(cuts.len() + 1 + batches.clone().map(|(_, b)| b.pieces_len()).sum::<usize>());
    let mut from = 0;
    for (cut, (_, records)) in cuts.into_iter().zip(batches) {
        pieces.push(&encoded[from..cut]);
        pieces.extend(records.pieces());
        from = cut;
    }
    pieces.push(&encoded[from..]);
    Ok(pieces)
}

fn encoding(api: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Protocol {
        api,
        message: format!("encoding: {e}"),
    }
}

/// Reads one response frame.
pub fn read_frame(stream: &mut TcpStream, addr: &str) -> Result<Bytes> {
    let io = |source| Error::Io {
        op: "reading a response from",
        addr: addr.to_owned(),
        source,
    };
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).map_err(io)?;
    let size = i32::from_be_bytes(size);
    if size < 4 || size as usize > RESPONSE_BYTES_MAX {
        return Err(Error::Protocol {
            api: "response",
            message: format!("frame size {size} from {addr} is out of bounds"),
        });
    }
    // Into spare capacity: zeroing each fetch response first was 4.5% of perf's samples at the
    // fixed-rate workload (450,000 msg/s); without it perf used 0.48 to 0.52 cores against
    // 0.51 to 0.56 (3 alternating runs).
    let mut body = Vec::with_capacity(size as usize);
    stream.take(size as u64).read_to_end(&mut body).map_err(io)?;
    if body.len() != size as usize {
        return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(body.into())
}

/// Decodes a response frame's header and body; checks the correlation id.
pub fn decode_response<T: Decodable>(mut frame: Bytes, key: ApiKey, version: i16, correlation: i32) -> Result<T> {
    let api = api_name(key);
    let header = ResponseHeader::decode(&mut frame, key.response_header_version(version)).map_err(|e| Error::Protocol {
        api,
        message: format!("decoding the header: {e}"),
    })?;
    if header.correlation_id != correlation {
        return Err(Error::Protocol {
            api,
            message: format!("correlation id {} where {correlation} was expected", header.correlation_id),
        });
    }
    T::decode(&mut frame, version).map_err(|e| Error::Protocol {
        api,
        message: format!("decoding: {e}"),
    })
}

pub fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::Metadata => "Metadata",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::DeleteTopics => "DeleteTopics",
        _ => "request",
    }
}

/// A connection for one request at a time.
#[derive(Debug)]
pub struct Conn {
    pub addr: String,
    stream: TcpStream,
    correlation: i32,
    buf: BytesMut,
}

impl Conn {
    pub fn open(addr: &str) -> Result<Conn> {
        Ok(Conn {
            addr: addr.to_owned(),
            stream: connect(addr)?,
            correlation: 0,
            buf: BytesMut::new(),
        })
    }

    pub fn call<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, version: i16, body: &Req) -> Result<Resp> {
        self.correlation += 1;
        self.buf.clear();
        encode_request(&mut self.buf, key, version, self.correlation, body)?;
        self.stream.write_all(&self.buf).map_err(|source| Error::Io {
            op: "sending a request to",
            addr: self.addr.clone(),
            source,
        })?;
        let frame = read_frame(&mut self.stream, &self.addr)?;
        decode_response(frame, key, version, self.correlation)
    }
}

/// Where each partition of some topics lives.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Broker id to "host:port".
    pub brokers: BTreeMap<i32, String>,
    /// Topic to the leader's address of each partition, by partition index.
    pub leaders: BTreeMap<String, Vec<String>>,
}

/// Asks for the metadata of `topics` until every partition has a leader.
pub fn wait_for_leaders(conn: &mut Conn, topics: &[String]) -> Result<Cluster> {
    let deadline = Instant::now() + Duration::from_millis(TOPIC_READY_TIMEOUT_MS);
    loop {
        let request = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let response: MetadataResponse = conn.call(ApiKey::Metadata, METADATA_VERSION, &request)?;
        match cluster_of(&response, topics) {
            Ok(cluster) => return Ok(cluster),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn cluster_of(response: &MetadataResponse, topics: &[String]) -> Result<Cluster> {
    let mut cluster = Cluster::default();
    for b in &response.brokers {
        cluster.brokers.insert(b.node_id.0, format!("{}:{}", b.host, b.port));
    }
    for name in topics {
        let not_ready = |code| Error::Broker {
            api: "Metadata",
            resource: name.clone(),
            code,
        };
        let t = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .ok_or_else(|| not_ready(-1))?;
        if t.error_code != 0 {
            return Err(not_ready(t.error_code));
        }
        let mut leaders = vec![String::new(); t.partitions.len()];
        for p in &t.partitions {
            let addr = cluster.brokers.get(&p.leader_id.0);
            match (usize::try_from(p.partition_index).ok().filter(|&i| i < leaders.len()), addr) {
                (Some(i), Some(addr)) if p.error_code == 0 => leaders[i] = addr.clone(),
                _ => return Err(not_ready(p.error_code)),
            }
        }
        if leaders.is_empty() || leaders.iter().any(|l| l.is_empty()) {
            return Err(not_ready(-1));
        }
        cluster.leaders.insert(name.clone(), leaders);
    }
    Ok(cluster)
}

/// Creates the topics with `configs` (replication factor: the broker's default), tolerating
/// "already exists".
pub fn create_topics(conn: &mut Conn, topics: &[String], partitions: u32, configs: &BTreeMap<String, String>) -> Result<()> {
    let request = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(
        topics
            .iter()
            .map(|t| {
                CreatableTopic::default()
                    .with_name(topic_name(t))
                    .with_num_partitions(partitions as i32)
                    .with_replication_factor(-1)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string(k.clone()))
                                    .with_value(Some(StrBytes::from_string(v.clone())))
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &request)?;
    for t in &response.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            return Err(Error::Broker {
                api: "CreateTopics",
                resource: format!(
                    "{}{}",
                    t.name.0,
                    t.error_message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
                ),
                code: t.error_code,
            });
        }
    }
    Ok(())
}

/// Deletes the topics, so that a long benchmark does not fill the disk.
pub fn delete_topics(conn: &mut Conn, topics: &[String]) -> Result<()> {
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topic_names(topics.iter().map(|t| topic_name(t)).collect());
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, DELETE_TOPICS_VERSION, &request)?;
    for t in &response.responses {
        if t.error_code != 0 {
            return Err(Error::Broker {
                api: "DeleteTopics",
                resource: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                code: t.error_code,
            });
        }
    }
    Ok(())
}

/// The earliest (`timestamp` -2) or latest (-1) offset of each partition of one topic.
pub fn list_offsets(conn: &mut Conn, topic: &str, partitions: &[i32], timestamp: i64) -> Result<BTreeMap<i32, i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(
            partitions
                .iter()
                .map(|&p| ListOffsetsPartition::default().with_partition_index(p).with_timestamp(timestamp))
                .collect(),
        )]);
    let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, LIST_OFFSETS_VERSION, &request)?;
    let mut offsets = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(Error::Broker {
                    api: "ListOffsets",
                    resource: format!("{topic}-{}", p.partition_index),
                    code: p.error_code,
                });
            }
            offsets.insert(p.partition_index, p.offset);
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, Compression, SharedPayload};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::ProduceRequest;

    /// kafka-protocol's encoder is the oracle: the pieces, joined, are the bytes it writes for
    /// the same request, with one-byte and multi-byte lengths (a 200-byte topic name, batches of
    /// 5 bytes and 100 KB), and a batch that refers to a shared payload sends it where it goes.
    #[test]
    fn the_produce_pieces_join_into_kafka_protocols_encoding() {
        let mut sharing = BatchBuilder::new(Compression::None).sharing(SharedPayload::new(Bytes::from(vec![9u8; 1000])));
        for i in 0..3 {
            sharing.append_with_payload(i, None, b"stamp");
        }
        let sharing = sharing.finish().unwrap().expect("a batch");
        assert_eq!(sharing.shared_payloads(), 3);
        for (topic, sizes) in [("t".to_owned(), vec![5]), ("x".repeat(200), vec![100_000, 5, 300])] {
            let mut batches: Vec<(i32, Batch)> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    (
                        i as i32 * 7,
                        Batch::whole(Bytes::from((0..n).map(|b| b as u8).collect::<Vec<u8>>())),
                    )
                })
                .collect();
            batches.push((99, sharing.clone()));
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(&topic)).with_partition_data(
                    batches
                        .iter()
                        .map(|(p, b)| PartitionProduceData::default().with_index(*p).with_records(Some(b.to_bytes())))
                        .collect(),
                )]);
            let mut want = BytesMut::new();
            encode_request(&mut want, ApiKey::Produce, PRODUCE_VERSION, 42, &request).unwrap();
            let mut frame = BytesMut::new();
            let pieces = encode_produce(&mut frame, 42, &topic, -1, 30_000, batches.iter().map(|(p, b)| (*p, b))).unwrap();
            // Around each batch's pieces, one of the encoded frame's; the batches' are theirs.
            let mut at = 0;
            for (i, (_, b)) in batches.iter().enumerate() {
                at += 1;
                for own in b.pieces() {
                    assert_eq!(pieces[at].as_ptr(), own.as_ptr(), "batch {i} is not copied");
                    at += 1;
                }
            }
            assert_eq!(pieces.len(), at + 1);
            assert_eq!(pieces.concat(), want.to_vec(), "topic of {} bytes, batches {sizes:?}", topic.len());
        }
    }
}
