//! A raw Kafka client for tests: our own framing over a blocking socket, with kafka-protocol's
//! client-side encoders, so a test can send exactly the bytes it wants; and the checks that a
//! broker survived a test (it runs, serves a well-behaved client, and logged what it should).

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use crate::common::BrokerProcess;

/// How long a test waits for a response, or for the broker to close a connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw Kafka connection over a blocking socket.
pub struct Conn {
    pub stream: TcpStream,
    next_correlation: i32,
}

impl Conn {
    pub fn open(b: &BrokerProcess) -> Conn {
        let stream = TcpStream::connect(b.bootstrap()).expect("connect to the broker");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            next_correlation: 1,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the broker");
    }

    /// Sends one request and returns its correlation id.
    pub fn send<R: Encodable>(&mut self, key: ApiKey, version: i16, body: &R) -> i32 {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let bytes = frame(key, version, correlation, "hostile-test", body);
        self.send_raw(&bytes);
        correlation
    }

    pub fn recv_frame(&mut self) -> std::io::Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(body.into())
    }

    pub fn recv<T: Decodable>(&mut self, key: ApiKey, header_version_of: i16, body_version: i16, correlation: i32) -> T {
        let mut f = self.recv_frame().expect("a response");
        let header = ResponseHeader::decode(&mut f, key.response_header_version(header_version_of)).unwrap();
        assert_eq!(header.correlation_id, correlation, "responses come back in request order");
        T::decode(&mut f, body_version).unwrap()
    }

    pub fn call<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, version: i16, body: &Req) -> Resp {
        let correlation = self.send(key, version, body);
        self.recv(key, version, version, correlation)
    }

    /// True if the broker closed the connection without answering: end of stream (or a reset)
    /// before any response byte, within `IO_TIMEOUT`.
    pub fn closed_by_broker(&mut self) -> bool {
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => panic!("expected a closed connection, got {n} bytes of response"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
            Err(e) => panic!("the broker neither answered nor closed the connection: {e}"),
        }
    }
}

/// Size prefix, request header, body.
pub fn frame<R: Encodable>(key: ApiKey, version: i16, correlation: i32, client_id: &str, body: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

/// A frame from raw parts: size prefix (as given), then the bytes.
pub fn raw_frame(size: i32, bytes: &[u8]) -> Vec<u8> {
    let mut v = size.to_be_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

/// A v0/v1 request header (key, version, correlation id, null client id) and then `body`,
/// with a correct size prefix.
pub fn header_v1_frame(key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&key.to_be_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&7i32.to_be_bytes());
    v.extend_from_slice(&(-1i16).to_be_bytes());
    v.extend_from_slice(body);
    raw_frame(v.len() as i32, &v)
}

pub fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// The broker runs and serves a well-behaved client: ApiVersions, then Metadata for a topic
/// (created on first use).
pub fn assert_serves(b: &mut BrokerProcess) {
    assert!(b.is_running(), "the broker died:\n{}", b.log());
    let mut c = Conn::open(b);
    let versions: ApiVersionsResponse = c.call(
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("hostile-test"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    assert_eq!(versions.error_code, 0);
    assert!(versions.api_keys.iter().any(|k| k.api_key == ApiKey::Metadata as i16));
    let metadata: MetadataResponse = c.call(ApiKey::Metadata, 12, &metadata_request("well-behaved"));
    assert_eq!(metadata.topics.len(), 1);
    assert_eq!(metadata.topics[0].error_code, 0, "{metadata:?}");
    assert_eq!(metadata.topics[0].partitions.len(), 1);
    assert!(b.is_running());
}

pub fn metadata_request(name: &str) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic(name)))]))
        .with_allow_auto_topic_creation(true)
}

/// Nothing in the log says a panic happened, and nothing is an error.
pub fn assert_no_panic_or_error(b: &BrokerProcess) {
    let log = b.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
    let errors: Vec<String> = b.problems().into_iter().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "errors in the log: {errors:#?}");
}

/// A log line without its terminal colour codes, so that `key=value` can be matched.
pub fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until the log has a line at `level` (or any level, for "") containing `needle`: the
/// broker writes its log asynchronously.
pub fn assert_log_line(b: &BrokerProcess, level: &str, needle: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        if b.log().lines().map(plain).any(|l| l.contains(level) && l.contains(needle)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {level} log line containing `{needle}`:\n{}", plain(&b.log()));
}

pub fn assert_warned(b: &BrokerProcess, needle: &str) {
    assert_log_line(b, "WARN", needle);
}

pub fn assert_logged(b: &BrokerProcess, needle: &str) {
    assert_log_line(b, "", needle);
}

/// A field of /proc/<pid>/status in bytes, e.g. VmRSS (resident now) or VmHWM (peak resident).
pub fn memory_bytes(b: &BrokerProcess, field: &str) -> u64 {
    let pid = b.pid().expect("the broker runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A v2 batch of uncompressed records with the given values, built by kafka-protocol.
pub fn batch(values: &[&[u8]], timestamp: i64) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp,
            key: None,
            value: Some(Bytes::copy_from_slice(v)),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

/// One batch of `count` records from producer `pid` at `epoch`, sequences from `seq`, with the
/// transactional attribute when `transactional` and the control one when `control`.
pub fn producer_batch(pid: i64, epoch: i16, seq: i32, count: i32, transactional: bool, control: bool) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional,
            control,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: seq + i,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("seq {}", seq + i))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

/// Produces one batch to partition 0 of `name` with acks=all; returns (error code, base offset).
pub fn produce(c: &mut Conn, name: &str, batch: Bytes) -> (i16, i64) {
    produce_to(c, name, 0, batch)
}

/// Produces one batch to `partition` of `name` with acks=all; returns (error code, base offset).
pub fn produce_to(c: &mut Conn, name: &str, partition: i32, batch: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic(name)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(batch)),
        ])]);
    let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}
