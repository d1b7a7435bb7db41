//! OpenTelemetry traces against the real broker binary: with `--otlp-endpoint` pointing at a
//! stand-in collector, a produce from librdkafka arrives as an OTLP/HTTP JSON export that
//! OpenTelemetry's own protobuf bindings parse (`opentelemetry-proto`, installed by
//! `scripts/ci-deps/22-opentelemetry-proto.sh`), with a `kafka.request` span for the Produce.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{run_client, BrokerProcess};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const WAIT_MAX: Duration = Duration::from_secs(90);

/// A stand-in collector: answers every POST with 200 and hands its body to the test.
fn collector() -> (u16, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send((request_line, body)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// Parses `body` as an `ExportTraceServiceRequest` with OpenTelemetry's Python bindings, which
/// refuse unknown fields and wrong types; prints the span names and `api` attributes.
fn parse_with_opentelemetry_proto(body: &[u8]) -> String {
    let script = r#"
import sys
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
request = json_format.Parse(sys.stdin.read(), ExportTraceServiceRequest())
for resource in request.resource_spans:
    for scope in resource.scope_spans:
        for span in scope.spans:
            attributes = {a.key: a.value.string_value for a in span.attributes}
            assert span.end_time_unix_nano >= span.start_time_unix_nano > 0, span
            print(span.name, attributes.get("api"), span.kind)
"#;
    let run = run_client(Command::new("python3").arg("-c").arg(script), body, Duration::from_secs(60));
    assert!(
        run.status.is_some_and(|s| s.success()),
        "opentelemetry-proto refused the export (see scripts/ci-deps/22-opentelemetry-proto.sh):\n{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        String::from_utf8_lossy(body)
    );
    String::from_utf8(run.stdout).unwrap()
}

#[test]
fn with_an_otlp_endpoint_request_spans_reach_the_collector_in_valid_otlp() {
    let (port, exports) = collector();
    let endpoint = format!("http://127.0.0.1:{port}/v1/traces");
    let broker = BrokerProcess::start(&["--otlp-endpoint", &endpoint]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "false")
        .create()
        .expect("create producer");
    producer
        .send(BaseRecord::<(), str>::to("traced").payload("hello"))
        .expect("queue a record");
    producer.flush(WAIT_MAX).expect("record delivered");

    let deadline = Instant::now() + WAIT_MAX;
    let mut seen = String::new();
    while !seen.lines().any(|l| l == "kafka.request Produce 2") {
        let left = deadline.saturating_duration_since(Instant::now());
        let (request_line, body) = exports
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no export with a Produce span; spans seen:\n{seen}\nbroker log:\n{}", broker.log()));
        assert!(request_line.starts_with("POST /v1/traces HTTP/1.1"), "{request_line}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // OTLP/JSON writes ids in hex (not protobuf's base64): 32 and 16 hex digits.
        for span in json["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().unwrap() {
            let trace_id = span["traceId"].as_str().unwrap();
            let span_id = span["spanId"].as_str().unwrap();
            assert!(
                trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{trace_id}"
            );
            assert!(span_id.len() == 16 && span_id.bytes().all(|b| b.is_ascii_hexdigit()), "{span_id}");
        }
        seen.push_str(&parse_with_opentelemetry_proto(&body));
    }
    let problems = broker.problems();
    assert!(problems.is_empty(), "{problems:#?}");
}
