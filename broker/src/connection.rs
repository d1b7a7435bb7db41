//! One client connection: size-prefixed frames in, responses out in request order.
//!
//! A reader reads frames and starts each request's handler at once, so several requests are in
//! flight; a writer awaits the handlers in arrival order and writes their responses, as Kafka
//! requires. At most `requests_in_flight_max` requests are in flight: beyond that the reader
//! stops reading, and TCP pushes back on the client. A frame above `request_bytes_max`, a
//! frame whose header cannot be decoded, an unknown API key or an unsupported version (other
//! than ApiVersions, which answers with its v0 fallback) gets a log line and a closed
//! connection. A client that leaves mid-frame gets a log line. A handler that panics closes the
//! connection; so does a panic anywhere else in the connection's code: an uncaught panic in a
//! glommio task would end the shard's executor thread, and every connection and partition on it.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::BytesMut;
use futures::channel::oneshot;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use glommio::net::TcpStream;
use tracing::Instrument as _;

use crate::frame::Frame;
use crate::handlers::{self, Outcome};
use crate::server::Broker;

/// Serves one connection until the client leaves or misbehaves.
pub async fn serve(broker: Rc<Broker>, stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "unknown".into());
    if AssertUnwindSafe(serve_until_closed(broker, stream, peer.clone()))
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!(target: "broker", %peer, "connection code panicked; connection closed");
    }
}

async fn serve_until_closed(broker: Rc<Broker>, stream: TcpStream, peer: String) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!(target: "broker", %peer, error = %e, "cannot set TCP_NODELAY");
    }
    tracing::debug!(target: "broker", %peer, "connection opened");
    // An idle client, or one that stops halfway through a frame, is closed after the idle limit.
    let idle = std::time::Duration::from_millis(broker.config.connections_max_idle_ms);
    if let Err(e) = stream.set_read_timeout(Some(idle)) {
        tracing::warn!(target: "broker", %peer, error = %e, "cannot set the idle timeout");
    }
    let (mut reader, mut writer) = stream.split();
    let (queue_tx, queue_rx) = glommio::channels::local_channel::new_bounded(broker.config.requests_in_flight_max);
    // Its own task, whose panic would end the executor like any other: caught too.
    let write_responses = async move {
        let mut queue_rx = queue_rx.stream();
        while let Some(reply) = queue_rx.next().await {
            let reply: oneshot::Receiver<Reply> = reply;
            match reply.await.ok() {
                Some(Reply::Frame(response)) => {
                    if let Err(e) = write_frame(&mut writer, &response).await {
                        tracing::debug!(target: "broker", error = %e, "write failed; closing");
                        break;
                    }
                }
                // acks=0 produce: no response.
                Some(Reply::Nothing) => {}
                // Closing, or the handler went without answering: the stream is out of step,
                // close it.
                Some(Reply::Close) | None => break,
            }
        }
        // Shuts down our side; the client sees EOF and the reader stops.
        let _ = writer.close().await;
    };
    let writer_task = glommio::spawn_local(AssertUnwindSafe(write_responses).catch_unwind()).detach();

    loop {
        let size = match read_size(&mut reader).await {
            Ok(Some(size)) => size,
            // The client closed the connection between requests.
            Ok(None) => break,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    tracing::info!(target: "broker", %peer, "connection closed mid-request (in the size prefix)");
                } else if e.kind() == std::io::ErrorKind::TimedOut {
                    tracing::info!(target: "broker", %peer, idle_ms = broker.config.connections_max_idle_ms, "idle connection closed");
                } else {
                    tracing::debug!(target: "broker", %peer, error = %e, "read failed");
                }
                break;
            }
        };
        if size < 8 || size as usize > broker.config.request_bytes_max {
            tracing::warn!(target: "broker", %peer, size, max = broker.config.request_bytes_max, "request size out of bounds; closing connection");
            break;
        }
        let mut frame = BytesMut::zeroed(size as usize);
        if let Err(e) = reader.read_exact(&mut frame).await {
            tracing::info!(target: "broker", %peer, size, error = %e, "connection closed mid-request");
            break;
        }
        let frame = frame.freeze();
        let received = std::time::Instant::now();
        let request = match handlers::parse(&frame) {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(target: "broker", %peer, %reason, "bad request; closing connection");
                break;
            }
        };
        let broker2 = broker.clone();
        let peer2 = peer.clone();
        // The handler answers the writer through a same-thread oneshot, and its JoinHandle is
        // dropped here, before the task first runs. Awaiting and then dropping the JoinHandle
        // crashed the shard: glommio 0.9's `JoinHandle::drop` destroys the task when it reads
        // a reference count of 0, and a waker dropped on another shard (a mesh reply's
        // oneshot) passes through 0 before it re-queues itself, so the task was freed under a
        // waker still in flight (SIGSEGV in `process_foreign_wakes`). Dropped at spawn, the
        // handle takes glommio's early path, which never reads the count.
        let (answer, reply) = oneshot::channel();
        glommio::spawn_local(async move {
            let api = request.api_key;
            broker2.metrics.request_started(api, received.elapsed());
            // Exported as a trace when `otlp_endpoint` is set; otherwise disabled at its callsite.
            let span = tracing::debug_span!(target: "broker::trace", "kafka.request", api = ?api, version = request.version,
                correlation_id = request.header.correlation_id, shard = broker2.shard.0, peer = %peer2);
            let handled = handlers::handle(&broker2, request, frame).instrument(span);
            let reply = match AssertUnwindSafe(handled).catch_unwind().await {
                Ok(Outcome::Respond(frame)) => Reply::Frame(frame),
                Ok(Outcome::NoResponse) => Reply::Nothing,
                Ok(Outcome::Close(reason)) => {
                    tracing::warn!(target: "broker", peer = %peer2, %reason, "closing connection");
                    Reply::Close
                }
                Err(_) => {
                    tracing::error!(target: "broker", peer = %peer2, "request handler panicked; closing connection");
                    Reply::Close
                }
            };
            broker2
                .metrics
                .request_finished(api, received.elapsed(), matches!(reply, Reply::Close));
            // The writer is gone when the connection closed first; nothing waits for this.
            let _ = answer.send(reply);
        })
        .detach();
        if queue_tx.send(reply).await.is_err() {
            break;
        }
    }
    drop(queue_tx);
    if let Some(Err(_)) = writer_task.await {
        tracing::error!(target: "broker", %peer, "response writer panicked; connection closed");
    }
    tracing::debug!(target: "broker", %peer, "connection closed");
}

/// Reads a frame's size prefix: `None` if the connection ends cleanly before it, an
/// `UnexpectedEof` error if it ends inside it.
async fn read_size(reader: &mut (impl futures::AsyncRead + Unpin)) -> std::io::Result<Option<i32>> {
    let mut buf = [0u8; 4];
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    Ok(Some(i32::from_be_bytes(buf)))
}

/// Pieces below this size are gathered into one write; larger ones (record bytes) are written
/// from where they are.
const GATHER_BYTES_MAX: usize = 16 * 1024;

/// Writes a response frame: small encoded pieces gathered into one buffer, record bytes
/// straight from their own buffers, so TCP_NODELAY does not send a packet per piece.
async fn write_frame<W: futures::AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) -> std::io::Result<()> {
    let mut gathered = bytes::BytesMut::new();
    for piece in &frame.pieces {
        let slice = piece.as_slice();
        if slice.len() < GATHER_BYTES_MAX {
            gathered.extend_from_slice(slice);
            continue;
        }
        if !gathered.is_empty() {
            writer.write_all(&gathered).await?;
            gathered.clear();
        }
        writer.write_all(slice).await?;
    }
    if !gathered.is_empty() {
        writer.write_all(&gathered).await?;
    }
    Ok(())
}

/// What the writer does for one request, in order.
enum Reply {
    Frame(Frame),
    Nothing,
    Close,
}
