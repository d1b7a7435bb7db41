//! One client connection: size-prefixed frames in, responses out in request order.
//!
//! A reader reads frames and starts each request's handler at once, so several requests are in
//! flight; a writer awaits the handlers in arrival order and writes their responses, as Kafka
//! requires. At most `requests_in_flight_max` requests are in flight: beyond that the reader
//! stops reading, and TCP pushes back on the client. A frame above `request_bytes_max`, a
//! frame whose header cannot be decoded, an unknown API key or an unsupported version (other
//! than ApiVersions, which answers with its v0 fallback) gets a log line and a closed
//! connection. A handler that panics closes the connection; the shard carries on.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use glommio::net::TcpStream;

use crate::handlers::{self, Outcome};
use crate::server::Broker;

/// Serves one connection until the client leaves or misbehaves.
pub async fn serve(broker: Rc<Broker>, stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "unknown".into());
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!(target: "broker", %peer, error = %e, "cannot set TCP_NODELAY");
    }
    tracing::debug!(target: "broker", %peer, "connection opened");
    let (mut reader, mut writer) = stream.split();
    let (queue_tx, queue_rx) = glommio::channels::local_channel::new_bounded(broker.config.requests_in_flight_max);
    let writer_task = glommio::spawn_local(async move {
        let mut queue_rx = queue_rx.stream();
        while let Some(task) = queue_rx.next().await {
            let task: glommio::task::JoinHandle<Reply> = task;
            match task.await {
                Some(Reply::Bytes(response)) => {
                    if let Err(e) = writer.write_all(&response).await {
                        tracing::debug!(target: "broker", error = %e, "write failed; closing");
                        break;
                    }
                }
                // acks=0 produce: no response.
                Some(Reply::Nothing) => {}
                // Closing, or the handler was cancelled: the stream is out of step, close it.
                Some(Reply::Close) | None => break,
            }
        }
        // Shuts down our side; the client sees EOF and the reader stops.
        let _ = writer.close().await;
    })
    .detach();

    let mut size_buf = [0u8; 4];
    loop {
        if let Err(e) = reader.read_exact(&mut size_buf).await {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                tracing::debug!(target: "broker", %peer, error = %e, "read failed");
            }
            break;
        }
        let size = i32::from_be_bytes(size_buf);
        if size < 8 || size as usize > broker.config.request_bytes_max {
            tracing::warn!(target: "broker", %peer, size, max = broker.config.request_bytes_max, "request size out of bounds; closing connection");
            break;
        }
        let mut frame = BytesMut::zeroed(size as usize);
        if let Err(e) = reader.read_exact(&mut frame).await {
            tracing::debug!(target: "broker", %peer, error = %e, "connection closed mid-request");
            break;
        }
        let frame = frame.freeze();
        let request = match handlers::parse(&frame) {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(target: "broker", %peer, %reason, "bad request; closing connection");
                break;
            }
        };
        let broker2 = broker.clone();
        let peer2 = peer.clone();
        let handle = glommio::spawn_local(async move {
            match AssertUnwindSafe(handlers::handle(&broker2, request, frame)).catch_unwind().await {
                Ok(Outcome::Respond(bytes)) => Reply::Bytes(bytes),
                Ok(Outcome::NoResponse) => Reply::Nothing,
                Ok(Outcome::Close(reason)) => {
                    tracing::warn!(target: "broker", peer = %peer2, %reason, "closing connection");
                    Reply::Close
                }
                Err(_) => {
                    tracing::error!(target: "broker", peer = %peer2, "request handler panicked; closing connection");
                    Reply::Close
                }
            }
        })
        .detach();
        if queue_tx.send(handle).await.is_err() {
            break;
        }
    }
    drop(queue_tx);
    let _ = writer_task.await;
    tracing::debug!(target: "broker", %peer, "connection closed");
}

/// What the writer does for one request, in order.
enum Reply {
    Bytes(Bytes),
    Nothing,
    Close,
}
