//! The HTTP admin port's accept loop: hyper's HTTP/1 connections under a connection cap and a
//! header-read timeout, with graceful shutdown.
//!
//! Why not `axum::serve`: it has neither a cap nor a header timeout, so a few thousand idle or
//! half-open connections (slowloris) hold sockets and file descriptors forever.
//!
//! - **Cap**: a semaphore of [`HttpLimits::max_connections`] slots. A connection that finds no
//!   slot is closed at once (counted in `cfgnode_http_connections_refused_total`): waiting for
//!   a slot would only queue a flood in the kernel's backlog and starve clients behind it.
//! - **Header timeout**: hyper closes a connection whose request line and headers have not all
//!   arrived within [`HttpLimits::header_read_timeout`]. hyper also arms it while a keep-alive
//!   connection waits for its next request, so idle connections let go of their slot too.
//! - **No whole-request timeout**: SSE streams and long-polls live for minutes. The request
//!   body has its own deadline (see `read_body_within` in the router).
//! - **Shutdown**: once `stop` turns true the listener is dropped (no new connections), every
//!   connection is told to finish its in-flight request and close, and [`serve`] returns when
//!   all of them have. An idle connection closes at once; one whose client is still sending
//!   headers closes when they are complete and answered, or at the header timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// Default of [`HttpLimits::max_connections`] (`--http-max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of [`HttpLimits::header_read_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a request body may take to arrive, from its first byte wait to its last.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the accept loop pauses after an error that is not about one connection (out of
/// file descriptors, typically): retrying at once would spin on the same error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The limits one HTTP admin port enforces on its connections.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Most connections open at once; more are closed as soon as they are accepted. Bounds the
    /// sockets, file descriptors and memory one client (or a flood) can hold.
    pub max_connections: usize,
    /// How long a client may take to send a request's line and headers (and how long an idle
    /// keep-alive connection may wait for its next request) before the connection is closed.
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` under `limits` until `stop` turns true, then lets in-flight
/// requests finish and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut connections = JoinSet::new();
    let mut stopping = stop.clone();
    // The borrow of the flag must not live in the loop's state (it is not `Send`).
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
    };
    let mut stopped = std::pin::pin!(stopped);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed; retrying shortly");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    // Dropping the stream closes it; the client sees the connection reset or
                    // closed before any answer.
                    metrics.http_connections_refused.inc();
                    tracing::debug!(
                        max = limits.max_connections,
                        "HTTP connection refused: at the connection cap (--http-max-connections)"
                    );
                    continue;
                };
                let connection = serve_connection(
                    stream,
                    builder.clone(),
                    app.clone(),
                    OpenConnection::new(slot, Arc::clone(&metrics)),
                    stop.clone(),
                );
                connections.spawn(connection);
            }
            () = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until the client closes it, hyper closes it (timeout, bad request),
/// or the node stops (then the request in flight, if any, finishes first).
async fn serve_connection(
    stream: TcpStream,
    builder: http1::Builder,
    app: Router,
    open: OpenConnection,
    mut stop: watch::Receiver<bool>,
) {
    // Small answers go out at once instead of waiting for Nagle's timer.
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let stopping = async move {
        // The borrow of the flag must not live across the await below (it is not `Send`).
        let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
    };
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = stopping => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        // Timeouts, resets and malformed requests: the client's problem, not the node's.
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
    drop(open);
}

/// One open connection: holds its slot under the cap and keeps the open-connections gauge
/// right however the connection ends.
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.http_connections_open.inc();
        OpenConnection {
            _slot: slot,
            metrics,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.http_connections_open.dec();
    }
}

/// Errors of `accept` that concern one connection only (it was reset before it was accepted):
/// the next accept may succeed at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
