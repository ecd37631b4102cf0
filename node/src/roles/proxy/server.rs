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
//! Backend connections are kept alive in one pool per backend (hyper's client), so a busy
//! route does not pay a TCP handshake per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use cfgnode_transport::codes;

use super::follow::ProxyState;
use super::table::{Entry, host_of};
use crate::metrics::{Metrics, ProxyLabels, RouteLabels};

/// The body of a forwarded request or answer.
type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// How long connecting to a backend may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle backend connections kept per backend.
const POOL_IDLE_PER_BACKEND: usize = 512;

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
    client: Client<HttpConnector, ProxyBody>,
    metrics: Arc<Metrics>,
    /// `https` when the listener terminates TLS (for `X-Forwarded-Proto`), else `http`.
    proto: &'static str,
}

impl Proxy {
    /// A proxy routing with `state`'s table; `tls` says whether its listener terminates TLS.
    pub fn new(state: Arc<ProxyState>, metrics: Arc<Metrics>, tls: bool) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(POOL_IDLE_PER_BACKEND)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Proxy {
            state,
            client,
            metrics,
            proto: if tls { "https" } else { "http" },
        }
    }
}

/// Serves the proxy on `listener` (through `tls` when given) until `stop` turns true, then
/// lets requests in flight end.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
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
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "proxy accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let proxy = Arc::clone(&proxy);
                let builder = builder.clone();
                let mut stop = stop.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let proxy = Arc::clone(&proxy);
                        async move { Ok::<_, std::convert::Infallible>(handle(&proxy, peer, request).await) }
                    });
                    let ended = match &tls {
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
    drop(listener);
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

impl<I, S> GracefulShutdown for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Answers one request.
async fn handle(
    proxy: &Proxy,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let table = proxy.state.table();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "the request names no host (send a Host header)",
        );
    };
    let Some(entry) = table.find(host_of(&host), request.uri().path()) else {
        return error(
            StatusCode::NOT_FOUND,
            codes::NO_ROUTE,
            &format!(
                "no route for host {host:?} and path {:?}",
                request.uri().path()
            ),
        );
    };
    let entry = Arc::clone(entry);
    let route_label = RouteLabels {
        route: format!("{}/{}", entry.namespace, entry.name),
    };
    let response = forward(proxy, &entry, &route_label, peer, &host, request).await;
    let status = response.status().as_u16();
    proxy
        .metrics
        .proxy_requests
        .get_or_create(&ProxyLabels {
            route: route_label.route.clone(),
            class: status_class(status),
        })
        .inc();
    proxy
        .metrics
        .proxy_duration
        .get_or_create(&route_label)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Sends a request along its route, with retries where safe.
async fn forward(
    proxy: &Proxy,
    entry: &Entry,
    route_label: &RouteLabels,
    peer: SocketAddr,
    host: &str,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    if let Some(limiter) = &entry.limiter
        && let Err(wait) = limiter.take(peer.ip(), Instant::now())
    {
        proxy
            .metrics
            .proxy_rate_limited
            .get_or_create(route_label)
            .inc();
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
    let bodyless = has_no_body(&parts.headers);
    let idempotent = parts.method.is_idempotent();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    add_forwarded(&mut parts.headers, peer, host, proxy.proto);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // The body goes to the first backend tried; a retry is made only for a bodyless request.
    let mut body = Some(body.boxed());
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let Some((index, backend)) = entry.pool.pick(Instant::now(), &tried) else {
            return if tried.is_empty() {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::NO_HEALTHY_BACKEND,
                    &format!(
                        "route {}/{} has no healthy backend",
                        entry.namespace, entry.name
                    ),
                )
            } else {
                error(
                    StatusCode::BAD_GATEWAY,
                    codes::BACKEND_UNAVAILABLE,
                    "every backend tried refused the connection",
                )
            };
        };
        tried.push(index);
        let uri = match format!("http://{backend}{path}").parse() {
            Ok(uri) => uri,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    codes::INVALID_REQUEST,
                    "the request path is not valid",
                );
            }
        };
        let outgoing_body = match body.take() {
            Some(body) => body,
            None => Empty::new().map_err(|never| match never {}).boxed(),
        };
        let mut outgoing = Request::from_parts(parts.clone(), outgoing_body);
        *outgoing.uri_mut() = uri;
        let sent = tokio::time::timeout(entry.route.timeout, proxy.client.request(outgoing)).await;
        let answer = match sent {
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    codes::BACKEND_TIMEOUT,
                    &format!(
                        "the backend did not answer within {}",
                        humantime::format_duration(entry.route.timeout)
                    ),
                );
            }
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                // Any failure below HTTP (refused, reset, closed mid-answer) says the backend
                // is in trouble: skip it for a while.
                entry.pool.mark_down(index, Instant::now());
                let connect = e.is_connect();
                tracing::debug!(backend, error = %e, "proxy: backend request failed");
                // Safe to send again: nothing reached the backend (connect failed), or the
                // method is idempotent; and there is no body to resend.
                let may_retry = bodyless
                    && (connect || idempotent)
                    && tried.len() <= entry.route.retries as usize;
                if may_retry {
                    proxy.metrics.proxy_retries.get_or_create(route_label).inc();
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
        };
        return relay(answer, client_upgrade);
    }
}

/// The backend's answer, cleaned of hop-by-hop headers, streamed back; a `101` splices the two
/// upgraded connections.
fn relay(
    mut answer: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let backend_upgrade = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            let (Ok(client), Ok(backend)) = (client_upgrade.await, backend_upgrade.await) else {
                return;
            };
            let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
        let (parts, _) = answer.into_parts();
        return Response::from_parts(parts, Empty::new().map_err(|never| match never {}).boxed());
    }
    let (mut parts, body) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, body.boxed())
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

/// Whether a request carries no body (so it can be sent again).
fn has_no_body(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

/// Removes hop-by-hop headers, and every header the `Connection` header names; an upgrade
/// keeps `Connection: upgrade` and `Upgrade` (they are the point).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let upgrade_value = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// Sets `X-Forwarded-For` (appending the client to any list already there),
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr, host: &str, proto: &'static str) {
    let client = peer.ip().to_canonical().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {client}"),
        _ => client,
    };
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", value);
    }
}

/// A proxy error in the API's JSON shape.
fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
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
        let peer: SocketAddr = "10.0.0.9:5555".parse().expect("addr");
        add_forwarded(&mut headers, peer, "shop.example.com", "http");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.9");
        add_forwarded(
            &mut headers,
            "[::ffff:10.0.0.8]:1".parse().expect("addr"),
            "shop.example.com",
            "http",
        );
        assert_eq!(headers["x-forwarded-for"], "10.0.0.9, 10.0.0.8");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "shop.example.com");
    }

    #[test]
    fn only_bodyless_requests_are_retried() {
        let mut headers = HeaderMap::new();
        assert!(has_no_body(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(has_no_body(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(!has_no_body(&headers));
        let mut chunked = HeaderMap::new();
        chunked.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(!has_no_body(&chunked));
    }
}
