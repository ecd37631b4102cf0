//! The proxy's listener (`--proxy ADDR`): plain HTTP/1.1, answered by the node that received
//! the request (no forwarding between nodes), from its own [`Table`].
//!
//! Per request: find the route by `Host` and path; take a token from the route's rate limit
//! (429 with `Retry-After`); pick the next healthy backend round robin; forward with hop-by-hop
//! headers removed and `X-Forwarded-For/-Proto/-Host` set, bodies streamed both ways; answer
//! 504 when the backend does not start answering within the route's timeout. A backend that
//! fails below HTTP (refused, reset, closed mid-answer) is marked down locally at once, and
//! the request is tried on the next backend when that is safe: it has no body to resend, and
//! either nothing reached the backend (the connection was refused) or its method is
//! idempotent; up to the route's `retries`. Upgrades (WebSocket) are passed through: after the backend's `101` both
//! connections are spliced. Errors use the API's JSON shape (`{"error":{"code","message"}}`):
//! `no_route` 404, `rate_limited` 429, `no_healthy_backend` 503, `backend_unavailable` 502,
//! `backend_timeout` 504.
//!
//! Backend connections are kept alive in a pool per backend and proxy thread (the proxy's own
//! HTTP/1.1 client, [`super::backend`]: driven by the request's task, no task per connection;
//! at most [`POOL_IDLE_PER_BACKEND`] idle, closed after [`POOL_IDLE_TIMEOUT`] idle), so a busy
//! route does not pay a TCP handshake per request. The proxy runs on one thread per core, each
//! with a single-threaded runtime (see [`serve`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use cfgnode_transport::codes;

use super::backend::{
    AnswerHead, BackendConnection, Decoder, ExchangeError, RequestFraming, request_framing,
    write_head,
};
use super::follow::ProxyState;
use super::route::MAX_RETRIES;
use super::table::{Served, host_of};
use crate::metrics::{Metrics, ProxyLabels, RouteLabels};

/// The body of an answer to a client: the backend's, streamed, or the proxy's own.
type ProxyBody = Either<Answer, Full<Bytes>>;

/// How long connecting to a backend may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle backend connections kept per backend.
const POOL_IDLE_PER_BACKEND: usize = 512;
/// How long an idle backend connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often connections idle for longer than [`POOL_IDLE_TIMEOUT`] are closed.
const POOL_SWEEP_EVERY: Duration = Duration::from_secs(15);

// Header names as constants: naming a header by `&str` in an insert allocates its name.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never forwarded (RFC 9110, 7.6.1), plus the
/// de-facto ones.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What every proxied request shares.
pub struct Proxy {
    state: Arc<ProxyState>,
    metrics: Arc<Metrics>,
    /// `https` when the listener terminates TLS (for `X-Forwarded-Proto`), else `http`.
    proto: &'static str,
}

impl Proxy {
    /// A proxy routing with `state`'s table; `tls` says whether its listener terminates TLS.
    pub fn new(state: Arc<ProxyState>, metrics: Arc<Metrics>, tls: bool) -> Proxy {
        Proxy {
            state,
            metrics,
            proto: if tls { "https" } else { "http" },
        }
    }
}

/// A route's metric handles, looked up in the metric families once (on the route's first
/// request) instead of hashing its labels on every request. Each series is created on first
/// use, as a lookup per request would.
#[derive(Debug)]
pub struct RouteMetrics {
    /// Requests by status class, in [`status_class`] order.
    requests: [OnceLock<Counter>; 5],
    duration: Histogram,
    retries: OnceLock<Counter>,
    rate_limited: OnceLock<Counter>,
}

impl RouteMetrics {
    fn new(metrics: &Metrics, label: &str) -> RouteMetrics {
        let route = RouteLabels {
            route: label.to_string(),
        };
        RouteMetrics {
            requests: Default::default(),
            duration: metrics.proxy_duration.get_or_create(&route).clone(),
            retries: OnceLock::new(),
            rate_limited: OnceLock::new(),
        }
    }

    fn request(&self, metrics: &Metrics, label: &str, status: u16) -> &Counter {
        let (index, class) = status_class(status);
        self.requests[index].get_or_init(|| {
            let labels = ProxyLabels {
                route: label.to_string(),
                class,
            };
            metrics.proxy_requests.get_or_create(&labels).clone()
        })
    }

    fn retry(&self, metrics: &Metrics, label: &str) -> &Counter {
        self.retries
            .get_or_init(|| route_counter(&metrics.proxy_retries, label))
    }

    fn rate_limit(&self, metrics: &Metrics, label: &str) -> &Counter {
        self.rate_limited
            .get_or_init(|| route_counter(&metrics.proxy_rate_limited, label))
    }
}

fn route_counter(
    family: &prometheus_client::metrics::family::Family<RouteLabels, Counter>,
    label: &str,
) -> Counter {
    family
        .get_or_create(&RouteLabels {
            route: label.to_string(),
        })
        .clone()
}

/// Idle keep-alive connections to the backends, by `host:port`. A request takes the most
/// recently used one (so few stay warm), and the end of its answer puts it back; a connection
/// the backend closed is dropped when found.
#[derive(Default)]
struct Connections {
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    by_backend: HashMap<String, IdleList>,
    swept: Option<Instant>,
}

struct IdleList {
    /// The backend, shared by every answer that will put a connection back.
    key: Arc<str>,
    connections: Vec<(BackendConnection, Instant)>,
}

/// Why a request reached no backend's answer.
enum SendError {
    /// No connection to the backend: nothing reached it; the body is handed back.
    Connect(std::io::Error, Option<Incoming>),
    /// The connection failed while the request was sent or answered, or the answer was not
    /// HTTP.
    Exchange(ExchangeError),
}

/// One request as it goes to a backend: its head written once (the same for every backend
/// tried), its body sent to the first.
struct Outgoing {
    head: Vec<u8>,
    body: Option<Incoming>,
    framing: RequestFraming,
    head_request: bool,
    idempotent: bool,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The backend's key, and an idle connection to it not idle for too long.
    fn take(&self, backend: &str, now: Instant) -> (Arc<str>, Option<BackendConnection>) {
        let mut idle = self.lock();
        let list = match idle.by_backend.get_mut(backend) {
            Some(list) => list,
            None => idle
                .by_backend
                .entry(backend.to_string())
                .or_insert_with(|| IdleList {
                    key: Arc::from(backend),
                    connections: Vec::new(),
                }),
        };
        while let Some((mut connection, since)) = list.connections.pop() {
            if now.saturating_duration_since(since) < POOL_IDLE_TIMEOUT && connection.is_reusable()
            {
                return (Arc::clone(&list.key), Some(connection));
            }
        }
        (Arc::clone(&list.key), None)
    }

    /// Puts back a connection whose answer has ended; now and then closes the connections
    /// idle for too long (of every backend, so a backend no longer routed to keeps none).
    fn put(&self, key: Arc<str>, connection: BackendConnection) {
        let now = Instant::now();
        let mut idle = self.lock();
        let list = idle
            .by_backend
            .entry(key.to_string())
            .or_insert_with(|| IdleList {
                key,
                connections: Vec::new(),
            });
        if list.connections.len() < POOL_IDLE_PER_BACKEND {
            list.connections.push((connection, now));
        }
        if idle
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= POOL_SWEEP_EVERY)
        {
            idle.swept = Some(now);
            idle.by_backend.retain(|_, list| {
                list.connections
                    .retain(|(_, since)| now.saturating_duration_since(*since) < POOL_IDLE_TIMEOUT);
                !list.connections.is_empty()
            });
        }
    }

    /// Sends `request` to `backend` on an idle connection, or a new one when none is left, and
    /// reads the answer's head. A pooled connection that fails before any byte of an answer
    /// arrived (the backend closed it while idle, as the request went out) is no failure of
    /// the backend: an idempotent request without a body goes again on the next one.
    async fn send(
        &self,
        backend: &str,
        request: &mut Outgoing,
    ) -> Result<(Arc<str>, BackendConnection, AnswerHead), SendError> {
        let (key, mut pooled) = self.take(backend, Instant::now());
        loop {
            let reused = pooled.is_some();
            let mut connection = match pooled.take() {
                Some(connection) => connection,
                None => match BackendConnection::connect(backend, CONNECT_TIMEOUT).await {
                    Ok(connection) => connection,
                    Err(e) => return Err(SendError::Connect(e, request.body.take())),
                },
            };
            let bodyless = request.framing == RequestFraming::Empty;
            let sent = connection
                .exchange(
                    &request.head,
                    request.body.take(),
                    request.framing,
                    request.head_request,
                )
                .await;
            match sent {
                Ok(answer) => return Ok((key, connection, answer)),
                Err(ExchangeError::Io {
                    answered_any: false,
                    ..
                }) if reused && bodyless && request.idempotent => {
                    pooled = self.take(backend, Instant::now()).1;
                }
                Err(e) => return Err(SendError::Exchange(e)),
            }
        }
    }
}

/// A backend's answer body, streamed to the client; when it ends, its connection goes back to
/// the idle pool if the backend keeps it open (dropped unfinished, the connection closes with
/// it).
pub struct Answer {
    connection: Option<BackendConnection>,
    decoder: Decoder,
    keep_alive: bool,
    give_back: Option<(Arc<Connections>, Arc<str>)>,
}

impl Answer {
    fn ended(&mut self) {
        if let (Some(connection), Some((connections, key))) =
            (self.connection.take(), self.give_back.take())
            && self.keep_alive
        {
            connections.put(key, connection);
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let Some(connection) = this.connection.as_mut() else {
            return Poll::Ready(None);
        };
        match connection.poll_body(&mut this.decoder, cx) {
            Poll::Ready(Some(Ok(data))) => {
                // The server stops polling once the body says it has ended: give the
                // connection back with the last bytes.
                if this.decoder.ended() {
                    this.ended();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => {
                this.ended();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.connection = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(left) => SizeHint::with_exact(left),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Serves the proxy on `listener` until `stop` turns true, then lets requests in flight end.
///
/// The proxy runs on threads of its own, one per core (`threads` overrides), each with a
/// single-threaded runtime and its own backend connections, like nginx's workers: a request,
/// its backend connection and its answer then stay on one thread, with no wake-up handed
/// between threads (which costs more than the forwarding itself on a busy proxy). This task
/// accepts connections on the node's runtime and hands them to the threads in turn, so each
/// gets its share (threads sharing one listening socket let whichever wakes first take a
/// burst of them, and `SO_REUSEPORT` would let another process bind the same port unnoticed).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    threads: Option<usize>,
    stop: watch::Receiver<bool>,
) {
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let mut workers = Vec::new();
    let mut running = Vec::new();
    for n in 0..threads {
        let (hand, handed) = tokio::sync::mpsc::unbounded_channel();
        let (ended, done) = tokio::sync::oneshot::channel::<()>();
        let (proxy, stop, tls) = (Arc::clone(&proxy), stop.clone(), tls.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("cfgnode-proxy-{n}"))
            .spawn(move || {
                worker(handed, proxy, tls, stop);
                let _ = ended.send(());
            });
        match spawned {
            Ok(_) => {
                workers.push(hand);
                running.push(done);
            }
            Err(e) => tracing::error!(error = %e, "proxy: cannot start a thread"),
        }
    }
    if workers.is_empty() {
        tracing::error!("proxy: no thread started; the proxy does not serve");
        return;
    }
    let mut stopping = stop.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
    };
    let mut stopped = std::pin::pin!(stopped);
    let mut next = 0usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "proxy accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // A std stream (non-blocking) moves between runtimes; the worker registers it.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "proxy: cannot hand over a connection");
                        continue;
                    }
                };
                // A thread that ended (its runtime failed) drops its receiver: try the next.
                let mut handed = Some((stream, peer));
                for _ in 0..workers.len() {
                    let worker = &workers[next % workers.len()];
                    next = next.wrapping_add(1);
                    match handed.take().map(|connection| worker.send(connection)) {
                        Some(Err(returned)) => handed = Some(returned.0),
                        _ => break,
                    }
                }
                if handed.is_some() {
                    tracing::error!("proxy: every proxy thread has stopped; the proxy does not serve");
                    break;
                }
            }
            () = &mut stopped => break,
        }
    }
    drop(listener);
    drop(workers);
    // Each is sent or dropped when its thread ends: either way that thread has stopped.
    for done in running {
        let _ = done.await;
    }
}

/// A connection accepted by [`serve`], on its way to a proxy thread.
type Handed = (std::net::TcpStream, SocketAddr);

/// One proxy thread: its runtime, serving the connections handed to it until `stop`.
fn worker(
    handed: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "proxy: cannot start a thread's runtime");
            return;
        }
    };
    runtime.block_on(serve_handed(handed, proxy, tls, stop));
}

/// Serves the connections handed to this thread until `stop` turns true (or the acceptor is
/// gone), then lets requests in flight end.
async fn serve_handed(
    mut handed: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let backends = Arc::new(Connections::default());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    let mut stopping = stop.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
    };
    let mut stopped = std::pin::pin!(stopped);
    loop {
        tokio::select! {
            next = handed.recv() => {
                let Some((stream, peer)) = next else { break };
                let stream = match TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "proxy: cannot register a connection");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let client = forwarded_for(peer);
                let proxy = Arc::clone(&proxy);
                let backends = Arc::clone(&backends);
                let builder = builder.clone();
                let mut stop = stop.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (proxy, backends) = (Arc::clone(&proxy), Arc::clone(&backends));
                        let client = client.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&proxy, &backends, peer, &client, request).await) }
                    });
                    let ended = match tls {
                        None => {
                            let connection = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades();
                            until_done(connection, &mut stop).await
                        }
                        Some(tls) => {
                            let stream = match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "proxy TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                            let connection = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades();
                            until_done(connection, &mut stop).await
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "proxy connection ended with an error");
                    }
                });
            }
            () = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(handed);
    while connections.join_next().await.is_some() {}
}

/// Drives one connection until it ends, or (once `stop` turns true) until its request in
/// flight is answered.
async fn until_done<C>(connection: C, stop: &mut watch::Receiver<bool>) -> Result<(), hyper::Error>
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + GracefulShutdown,
{
    let mut connection = std::pin::pin!(connection);
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
    };
    tokio::select! {
        ended = connection.as_mut() => ended,
        () = stopping => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// A connection that can be asked to finish its request in flight and close.
trait GracefulShutdown {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulShutdown for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Answers one request from `peer` (`client`: its address as `X-Forwarded-For` names it).
async fn handle(
    proxy: &Proxy,
    connections: &Arc<Connections>,
    peer: SocketAddr,
    client: &HeaderValue,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let table = proxy.state.table();
    // A clone of a parsed header value shares the request's buffer: no copy.
    let host = match request.headers().get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let Some((host, host_name)) = host.as_ref().and_then(|h| Some((h, h.to_str().ok()?))) else {
        return error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "the request names no host (send a Host header)",
        );
    };
    let Some(served) = table.find(host_of(host_name), request.uri().path()) else {
        return error(
            StatusCode::NOT_FOUND,
            codes::NO_ROUTE,
            &format!(
                "no route for host {host_name:?} and path {:?}",
                request.uri().path()
            ),
        );
    };
    let served = Arc::clone(served);
    drop(table);
    let metrics = served
        .metrics
        .get_or_init(|| RouteMetrics::new(&proxy.metrics, &served.label));
    let response = forward(
        proxy,
        connections,
        &served,
        metrics,
        peer,
        client,
        host.clone(),
        request,
    )
    .await;
    metrics
        .request(&proxy.metrics, &served.label, response.status().as_u16())
        .inc();
    metrics.duration.observe(started.elapsed().as_secs_f64());
    response
}

/// Sends a request along its route, with retries where safe.
#[allow(clippy::too_many_arguments)]
async fn forward(
    proxy: &Proxy,
    connections: &Arc<Connections>,
    served: &Served,
    metrics: &RouteMetrics,
    peer: SocketAddr,
    client: &HeaderValue,
    host: HeaderValue,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    if let Some(limiter) = &served.limiter
        && let Err(wait) = limiter.take(peer.ip(), Instant::now())
    {
        metrics.rate_limit(&proxy.metrics, &served.label).inc();
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            "too many requests from this client; retry after the time in Retry-After",
        );
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return response;
    }
    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let framing = request_framing(&parts.headers);
    let bodyless = framing == RequestFraming::Empty;
    let idempotent = parts.method.is_idempotent();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if framing == RequestFraming::Chunked {
        // Sent chunked: a length next to it would contradict the framing (RFC 9112, 6.3).
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    if !parts.headers.contains_key(header::HOST) {
        parts.headers.insert(header::HOST, host.clone());
    }
    set_forwarded(&mut parts.headers, client, host, proxy.proto);
    // Backends get the origin form (`/path?query`), whatever form the client used.
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(256);
    write_head(&mut head, &parts.method, path, &parts.headers, framing);
    // The body goes to the first backend tried; a retry is made only for a bodyless request.
    let mut outgoing = Outgoing {
        head,
        body: Some(body),
        framing,
        head_request: parts.method == Method::HEAD,
        idempotent,
    };
    // Backends tried so far (a route makes at most `MAX_RETRIES` retries).
    let mut tried = [0usize; MAX_RETRIES as usize + 1];
    let mut attempts = 0;
    loop {
        let Some((index, backend)) = served.pool.pick(Instant::now(), &tried[..attempts]) else {
            return if attempts == 0 {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::NO_HEALTHY_BACKEND,
                    &format!("route {} has no healthy backend", served.label),
                )
            } else {
                error(
                    StatusCode::BAD_GATEWAY,
                    codes::BACKEND_UNAVAILABLE,
                    "every backend tried refused the connection",
                )
            };
        };
        let Some(slot) = tried.get_mut(attempts) else {
            return error(
                StatusCode::BAD_GATEWAY,
                codes::BACKEND_UNAVAILABLE,
                "every backend tried failed",
            );
        };
        *slot = index;
        attempts += 1;
        let sent = tokio::time::timeout(
            served.route.timeout,
            connections.send(backend, &mut outgoing),
        )
        .await;
        let (connect, failure) = match sent {
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    codes::BACKEND_TIMEOUT,
                    &format!(
                        "the backend did not answer within {}",
                        humantime::format_duration(served.route.timeout)
                    ),
                );
            }
            Ok(Ok((key, connection, answer))) => {
                return relay(answer, connection, client_upgrade, connections, key);
            }
            Ok(Err(SendError::Connect(e, unsent))) => {
                // Nothing reached the backend: the same request may go to the next one.
                outgoing.body = unsent;
                (true, e.to_string())
            }
            Ok(Err(SendError::Exchange(ExchangeError::ClientBody(e)))) => {
                // The client went away while its body was sent: nothing wrong with the backend.
                tracing::debug!(backend, error = %e, "proxy: the client's body failed");
                return error(
                    StatusCode::BAD_REQUEST,
                    codes::INVALID_REQUEST,
                    "the request's body ended before its end",
                );
            }
            Ok(Err(SendError::Exchange(e))) => (false, e.to_string()),
        };
        // Any failure below HTTP (refused, reset, closed mid-answer) says the backend is in
        // trouble: skip it for a while.
        served.pool.mark_down(index, Instant::now());
        tracing::debug!(backend, error = %failure, "proxy: backend request failed");
        // Safe to send again: nothing reached the backend (connect failed), or the method is
        // idempotent; and there is no body to resend.
        let may_retry =
            bodyless && (connect || idempotent) && attempts <= served.route.retries as usize;
        if may_retry {
            metrics.retry(&proxy.metrics, &served.label).inc();
            continue;
        }
        return error(
            StatusCode::BAD_GATEWAY,
            codes::BACKEND_UNAVAILABLE,
            if connect {
                "the backend refused the connection"
            } else {
                "the backend failed to answer"
            },
        );
    }
}

/// The backend's answer, cleaned of hop-by-hop headers, streamed back (its connection back in
/// the pool when it ends); a `101` splices the two connections.
fn relay(
    answer: AnswerHead,
    connection: BackendConnection,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    connections: &Arc<Connections>,
    key: Arc<str>,
) -> Response<ProxyBody> {
    let AnswerHead {
        status,
        mut headers,
        decoder,
        keep_alive,
        ..
    } = answer;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return error(
                StatusCode::BAD_GATEWAY,
                codes::BACKEND_UNAVAILABLE,
                "the backend switched protocols without being asked to",
            );
        };
        // The connection now belongs to the splice; it never goes back to the pool. What the
        // backend sent after its head already belongs to the new protocol: it goes first.
        tokio::spawn(async move {
            let (mut backend, early) = connection.into_parts();
            let Ok(client) = client_upgrade.await else {
                return;
            };
            let mut client = TokioIo::new(client);
            if !early.is_empty() && client.write_all(&early).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return response;
    }
    strip_hop_by_hop(&mut headers, false);
    let mut body = Answer {
        connection: Some(connection),
        decoder,
        keep_alive,
        give_back: Some((Arc::clone(connections), key)),
    };
    if body.decoder.ended() {
        // No body to wait for (204, 304, HEAD, `Content-Length: 0`): reusable at once.
        body.ended();
    }
    let mut response = Response::new(Either::Left(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Whether the client asks to switch protocols (WebSocket).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Removes hop-by-hop headers, and every header the `Connection` header names; an upgrade
/// keeps `Connection: upgrade` and `Upgrade` (they are the point).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Copies of the values share their bytes (no allocation), and names are looked up as
    // `&str` (no allocation either): this runs twice per proxied request.
    let mut values = headers.get_all(header::CONNECTION).iter();
    let first = values.next().cloned();
    let more: Vec<HeaderValue> = values.cloned().collect();
    let upgrade_value = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for value in first.iter().chain(&more) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if !token.is_empty() {
                headers.remove(token);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// A client's address as `X-Forwarded-For` names it (computed once per connection).
fn forwarded_for(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .expect("an IP address is a valid header value")
}

/// Sets `X-Forwarded-For` (appending the client to any list already there),
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    host: HeaderValue,
    proto: &'static str,
) {
    let chain = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(earlier) if !earlier.trim_ascii().is_empty() => {
            let mut chain = Vec::with_capacity(earlier.len() + 2 + client.len());
            chain.extend_from_slice(earlier);
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&chain).ok()
        }
        _ => Some(client.clone()),
    };
    if let Some(chain) = chain {
        headers.insert(X_FORWARDED_FOR, chain);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(X_FORWARDED_HOST, host);
}

/// A proxy error in the API's JSON shape.
fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A status's class label, and its index in [`RouteMetrics`]' counters.
fn status_class(status: u16) -> (usize, &'static str) {
    match status {
        100..=199 => (0, "1xx"),
        200..=299 => (1, "2xx"),
        300..=399 => (2, "3xx"),
        400..=499 => (3, "4xx"),
        _ => (4, "5xx"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<_> = headers.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(names, ["x-kept"]);
        let mut ws = HeaderMap::new();
        ws.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        ws.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&ws));
        strip_hop_by_hop(&mut ws, true);
        assert_eq!(ws[header::UPGRADE], "websocket");
        assert_eq!(ws[header::CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_headers_append_the_client() {
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_static("shop.example.com");
        let peer: SocketAddr = "10.0.0.9:5555".parse().expect("addr");
        set_forwarded(&mut headers, &forwarded_for(peer), host.clone(), "http");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.9");
        let mapped: SocketAddr = "[::ffff:10.0.0.8]:1".parse().expect("addr");
        set_forwarded(&mut headers, &forwarded_for(mapped), host, "http");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.9, 10.0.0.8");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "shop.example.com");
    }
}
