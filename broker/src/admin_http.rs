//! The admin HTTP listener, on its own port and its own std thread, off the shard cores:
//! `GET /metrics` (Prometheus text format), `GET /health` (liveness: the process answers) and
//! `GET /ready` (503 until every shard has recovered its partitions and listens).
//!
//! A minimal HTTP/1.1 server: one request per connection (`Connection: close`), handled one at
//! a time with read and write timeouts. Scrapers and probes send a request every few seconds;
//! nothing here needs an async runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

/// Largest request head read; a probe's request line and headers are a few hundred bytes.
const REQUEST_BYTES_MAX: usize = 8 * 1024;

/// How long a client may take to send its request or read the answer, so that a stalled one
/// cannot hold the single admin thread for long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the recorder's histograms are drained when nobody scrapes: samples wait in
/// lock-free buckets until then, so without it memory would grow with every request.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What the admin listener serves from.
pub struct AdminState {
    /// Set once every shard has reported that it recovered and bound its listener.
    pub ready: AtomicBool,
    /// `None` when metrics are turned off.
    pub metrics: Option<PrometheusHandle>,
    /// The filesystem whose free space `/metrics` reports.
    pub data_dir: PathBuf,
}

/// Binds the admin address plainly (no SO_REUSEPORT), so that a port in use is an error at
/// start-up rather than a listener shared with another process.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves admin requests on `listener` from a new thread, for the life of the process; also
/// starts the recorder's upkeep thread.
pub fn spawn(listener: TcpListener, state: Arc<AdminState>) -> std::io::Result<()> {
    if let Some(handle) = state.metrics.clone() {
        std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        })?;
    }
    std::thread::Builder::new().name("admin-http".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(e) = serve_one(stream, &state) {
                        tracing::debug!(target: "broker", error = %e, "admin request failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "broker", error = %e, "admin accept failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    })?;
    Ok(())
}

fn serve_one(mut stream: TcpStream, state: &AdminState) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let response = respond(&head, state);
    stream.write_all(&response)?;
    stream.flush()
}

/// Reads until the blank line that ends the request head, or `REQUEST_BYTES_MAX`, or EOF.
fn read_head(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while head.len() < REQUEST_BYTES_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// The whole HTTP response to a request head.
pub fn respond(head: &[u8], state: &AdminState) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return http(405, "Method Not Allowed", "text/plain", b"only GET is served\n");
    }
    match path {
        "/health" => http(200, "OK", "text/plain", b"ok\n"),
        "/ready" => {
            if state.ready.load(Ordering::Acquire) {
                http(200, "OK", "text/plain", b"ready\n")
            } else {
                http(503, "Service Unavailable", "text/plain", b"recovering\n")
            }
        }
        "/metrics" => match &state.metrics {
            Some(handle) => {
                crate::metrics::sample_process(&state.data_dir, state.ready.load(Ordering::Acquire));
                http(200, "OK", "text/plain; version=0.0.4; charset=utf-8", handle.render().as_bytes())
            }
            None => http(
                404,
                "Not Found",
                "text/plain",
                b"metrics are turned off (metrics_enabled = false)\n",
            ),
        },
        _ => http(404, "Not Found", "text/plain", b"not found; try /metrics, /health or /ready\n"),
    }
}

fn http(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(ready: bool) -> AdminState {
        AdminState {
            ready: AtomicBool::new(ready),
            metrics: None,
            data_dir: PathBuf::from("."),
        }
    }

    fn status(response: &[u8]) -> String {
        let text = String::from_utf8_lossy(response);
        text.lines().next().unwrap_or("").to_owned()
    }

    #[test]
    fn ready_answers_503_until_the_shards_are_up_and_health_always_200() {
        let s = state(false);
        assert_eq!(
            status(&respond(b"GET /ready HTTP/1.1\r\n\r\n", &s)),
            "HTTP/1.1 503 Service Unavailable"
        );
        assert_eq!(status(&respond(b"GET /health HTTP/1.1\r\n\r\n", &s)), "HTTP/1.1 200 OK");
        s.ready.store(true, Ordering::Release);
        assert_eq!(status(&respond(b"GET /ready?verbose HTTP/1.1\r\n\r\n", &s)), "HTTP/1.1 200 OK");
    }

    #[test]
    fn other_methods_paths_garbage_and_disabled_metrics_get_errors() {
        let s = state(true);
        assert_eq!(
            status(&respond(b"POST /health HTTP/1.1\r\n\r\n", &s)),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(status(&respond(b"GET /nope HTTP/1.1\r\n\r\n", &s)), "HTTP/1.1 404 Not Found");
        assert_eq!(status(&respond(b"GET /metrics HTTP/1.1\r\n\r\n", &s)), "HTTP/1.1 404 Not Found");
        assert_eq!(status(&respond(b"", &s)), "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(status(&respond(&[0xff, 0x00, b'\n'], &s)), "HTTP/1.1 405 Method Not Allowed");
        let r = String::from_utf8(respond(b"GET /health HTTP/1.1\r\n\r\n", &s)).unwrap();
        assert!(r.ends_with("\r\n\r\nok\n") && r.contains("Content-Length: 3\r\n"), "{r}");
    }

    #[test]
    fn a_head_is_read_to_its_blank_line_and_no_further_than_the_bound() {
        let mut short: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody that is not read";
        let head = read_head(&mut short).unwrap();
        assert!(head.starts_with(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        let endless = vec![b'a'; 10 * REQUEST_BYTES_MAX];
        let head = read_head(&mut &endless[..]).unwrap();
        assert!(head.len() < REQUEST_BYTES_MAX + 1024, "{}", head.len());
    }
}
