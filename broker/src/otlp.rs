//! OpenTelemetry trace export, off unless `otlp_endpoint` is set: a `tracing` layer that turns
//! closed spans of target `broker::trace` into OTLP spans, and a std thread that posts them in
//! batches to a collector as OTLP/HTTP with the JSON encoding (`POST /v1/traces`).
//!
//! Off, no layer is installed: the request spans are `debug` level on a target no other layer
//! enables, so creating one is a disabled-callsite check and nothing more. On, a full span
//! queue drops spans (counted, logged once a minute) rather than slow a shard down.
//!
//! Plain HTTP only (a collector on the host or a sidecar); no TLS, no retries. The
//! opentelemetry-otlp crate would bring tokio, hyper and reqwest into a build that has none.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The target of the spans exported; the request span in `connection.rs` uses it.
pub const TARGET: &str = "broker::trace";

/// Closed spans waiting for the exporter: at 10,000 requests a second, about a second's worth.
/// Full, spans are dropped: telemetry must never push back on a shard.
const SPAN_QUEUE_MAX: usize = 8192;

/// Most spans in one export request, to keep each POST small.
const EXPORT_BATCH_MAX: usize = 512;

/// How long a span may wait for its batch to fill before it is sent anyway.
const EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How long connecting to, writing to and hearing from the collector may take.
const COLLECTOR_TIMEOUT: Duration = Duration::from_secs(5);

/// How often export failures and drops are logged at most.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Where spans go: `http://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host_port: String,
    pub path: String,
}

impl Endpoint {
    /// Parses `http://host:port[/path]`; the path defaults to OTLP's `/v1/traces`.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{text}` does not start with http:// (TLS is not supported)"))?;
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/v1/traces"),
        };
        let (host, port) = host_port.rsplit_once(':').ok_or_else(|| format!("`{text}` has no port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("`{text}` is not http://host:port/path"));
        }
        Ok(Endpoint {
            host_port: host_port.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// A span's identity and what was recorded on it, kept in the span's extensions while open.
struct Open {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    start_ns: u64,
    attributes: Vec<(&'static str, String)>,
}

/// A closed span on its way to the collector.
struct Closed {
    open: Open,
    name: &'static str,
    end_ns: u64,
}

/// The layer; see the module comment.
pub struct OtlpLayer {
    queue: SyncSender<Closed>,
    dropped: Arc<AtomicU64>,
}

/// Starts the exporter thread and returns the layer that feeds it.
pub fn layer(endpoint: Endpoint) -> std::io::Result<OtlpLayer> {
    let (queue, spans) = sync_channel(SPAN_QUEUE_MAX);
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || export_loop(spans, endpoint, d))?;
    Ok(OtlpLayer { queue, dropped })
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..N]);
    out
}

/// Records a span's fields as OTLP string attributes.
struct Attrs<'a>(&'a mut Vec<(&'static str, String)>);

impl Visit for Attrs<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}")));
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Open>().map(|o| (o.trace_id, o.span_id)));
        let (trace_id, parent_id) = match parent {
            Some((trace, parent)) => (trace, Some(parent)),
            None => (random_bytes(), None),
        };
        let mut attributes = Vec::new();
        attrs.record(&mut Attrs(&mut attributes));
        span.extensions_mut().insert(Open {
            trace_id,
            span_id: random_bytes(),
            parent_id,
            start_ns: now_ns(),
            attributes,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(open) = span.extensions_mut().get_mut::<Open>() {
                values.record(&mut Attrs(&mut open.attributes));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let closed = Closed {
            open,
            name: span.metadata().name(),
            end_ns: now_ns(),
        };
        if let Err(TrySendError::Full(_)) = self.queue.try_send(closed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn export_loop(spans: Receiver<Closed>, endpoint: Endpoint, dropped: Arc<AtomicU64>) {
    let mut last_warning: Option<Instant> = None;
    let mut warn = |what: String| {
        if last_warning.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
            tracing::warn!(target: "broker", endpoint = %format!("http://{}{}", endpoint.host_port, endpoint.path), "{what}");
            last_warning = Some(Instant::now());
        }
    };
    loop {
        let Ok(first) = spans.recv() else { return };
        let mut batch = vec![first];
        let deadline = Instant::now() + EXPORT_INTERVAL;
        while batch.len() < EXPORT_BATCH_MAX {
            match spans.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Err(e) = post(&endpoint, &encode(&batch)) {
            warn(format!("exporting {} spans to the OTLP collector failed: {e}", batch.len()));
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            warn(format!("{lost} spans dropped: the OTLP export queue was full"));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An OTLP `ExportTraceServiceRequest` in the OTLP/JSON encoding: ids in hex, 64-bit times as
/// decimal strings, span kind SERVER (2) for the request spans.
fn encode(batch: &[Closed]) -> Vec<u8> {
    let spans: Vec<serde_json::Value> = batch
        .iter()
        .map(|c| {
            let attributes: Vec<serde_json::Value> = c
                .open
                .attributes
                .iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": {"stringValue": v}}))
                .collect();
            serde_json::json!({
                "traceId": hex(&c.open.trace_id),
                "spanId": hex(&c.open.span_id),
                "parentSpanId": c.open.parent_id.map(|p| hex(&p)).unwrap_or_default(),
                "name": c.name,
                "kind": 2,
                "startTimeUnixNano": c.open.start_ns.to_string(),
                "endTimeUnixNano": c.end_ns.to_string(),
                "attributes": attributes,
            })
        })
        .collect();
    let request = serde_json::json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "broker"}}]},
            "scopeSpans": [{"scope": {"name": "broker", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
        }]
    });
    serde_json::to_vec(&request).unwrap_or_default()
}

/// One POST, `Connection: close`; an answer other than 2xx is an error.
fn post(endpoint: &Endpoint, body: &[u8]) -> std::io::Result<()> {
    let addr = endpoint
        .host_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the collector's host resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, COLLECTOR_TIMEOUT)?;
    stream.set_read_timeout(Some(COLLECTOR_TIMEOUT))?;
    stream.set_write_timeout(Some(COLLECTOR_TIMEOUT))?;
    write!(
        stream,
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.host_port,
        body.len()
    )?;
    stream.write_all(body)?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let status = String::from_utf8_lossy(&head[..n]);
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        other => Err(std::io::Error::other(format!(
            "the collector answered {}",
            other.unwrap_or("nothing")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_a_default_path_and_refuse_what_cannot_work() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:4318").unwrap(),
            Endpoint {
                host_port: "127.0.0.1:4318".into(),
                path: "/v1/traces".into()
            }
        );
        assert_eq!(
            Endpoint::parse("http://collector:4318/otlp/v1/traces").unwrap().path,
            "/otlp/v1/traces"
        );
        for bad in ["https://c:4318", "c:4318", "http://c", "http://:4318", "http://c:port"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spans_encode_as_otlp_json_with_hex_ids_and_string_times() {
        let closed = Closed {
            open: Open {
                trace_id: [0xab; 16],
                span_id: [0x01; 8],
                parent_id: None,
                start_ns: 5,
                attributes: vec![("api", "Produce".into())],
            },
            name: "kafka.request",
            end_ns: 7,
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&[closed])).unwrap();
        let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "ab".repeat(16));
        assert_eq!(span["spanId"], "0101010101010101");
        assert_eq!(span["parentSpanId"], "");
        assert_eq!(span["startTimeUnixNano"], "5");
        assert_eq!(span["endTimeUnixNano"], "7");
        assert_eq!(span["attributes"][0]["value"]["stringValue"], "Produce");
    }
}
