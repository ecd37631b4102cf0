//! Connections and attempts: one cached QUIC connection per node, one request per stream,
//! failover along the node list, retries with backoff and jitter (idempotent requests only:
//! a write whose answer was lost is reported, never resent), a circuit breaker per node, and
//! the call deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use cfgnode_transport::{
    MAX_FRAME_BYTES, PushRequest, Request, RequestHeader, Response, ResponseEnvelope, SERVER_NAME,
    WireError, WireWatchRequest, decode_payload, encode_request, read_frame,
};
use quinn::{Connection, RecvStream};

use crate::backoff::{Backoff, unit_random};
use crate::error::ClientError;

use super::{Client, ConnectionEvent, NodeSlot};

/// How one attempt on one node failed.
pub(super) enum AttemptError {
    /// The request never left: safe to retry anything elsewhere.
    NotSent(String),
    /// The request may have reached the node: only idempotent calls may be retried.
    MaybeApplied(String),
    /// The node answered with an error.
    Answered(WireError),
}

impl Client {
    /// Sends one request, with failover, retries (idempotent requests only) and the call
    /// deadline. The building block of every typed method.
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        self.call_within(request, self.inner.timeout).await
    }

    /// [`call`](Self::call) with its own deadline: for a long-poll, which is meant to outlast
    /// the usual one (the wait plus the client's timeout).
    pub(crate) async fn call_within(
        &self,
        request: Request,
        deadline: std::time::Duration,
    ) -> Result<Response, ClientError> {
        let started = Instant::now();
        match tokio::time::timeout(deadline, self.route_call(request)).await {
            Ok(result) => result,
            Err(_) => {
                self.drop_silent_connections(started).await;
                Err(ClientError::Timeout(deadline))
            }
        }
    }

    /// Drops the connections of nodes that have not answered anything since `since`: after a
    /// timed-out call they are likely dead (a killed node never closes its connections, and
    /// QUIC would otherwise only notice at the idle timeout). The next call reconnects.
    async fn drop_silent_connections(&self, since: Instant) {
        let holders = self.holder_slots_now();
        for node in self.inner.nodes.iter().chain(holders.iter().map(|n| &**n)) {
            let silent = node.last_answer.lock().is_ok_and(|at| *at < since);
            if silent {
                self.forget(node, "no answer within the call deadline")
                    .await;
            }
        }
    }

    /// The two frames of a request (header with the token, then the request itself).
    pub(super) fn encode(
        &self,
        request: &Request,
        follow_redirects: bool,
    ) -> Result<Vec<u8>, ClientError> {
        let header = RequestHeader {
            cluster_id: self.inner.cluster_id.clone(),
            request_id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            token: self.inner.token.clone(),
            follow_redirects,
        };
        encode_request(&header, request).map_err(|e| {
            ClientError::Invalid {
                code: "frame_too_large".to_string(),
                message: format!(
                    "the request cannot be sent ({e}); values must fit the node's limit and tokens are short"
                ),
            }
        })
    }

    pub(super) async fn call_with_retries(
        &self,
        request: Request,
        follow_redirects: bool,
    ) -> Result<Response, ClientError> {
        let idempotent = request.is_idempotent();
        let payload = self.encode(&request, follow_redirects)?;
        let mut backoff = Backoff::new(self.inner.retry.base_delay, self.inner.retry.max_delay);
        let mut last_error = String::from("every node's circuit breaker is open");
        let count = self.inner.nodes.len();
        for round in 0..self.inner.retry.max_rounds.max(1) {
            if round > 0 {
                tokio::time::sleep(backoff.next_delay(unit_random())).await;
            }
            let first = self.inner.preferred.load(Ordering::Relaxed) % count;
            for offset in 0..count {
                let index = (first + offset) % count;
                let node = &self.inner.nodes[index];
                let allowed = node
                    .breaker
                    .lock()
                    .map(|mut b| b.try_acquire(Instant::now()));
                if !allowed.unwrap_or(true) {
                    continue;
                }
                match self.attempt(node, &payload).await {
                    Ok(response) => {
                        self.record(node, true);
                        self.inner.preferred.store(index, Ordering::Relaxed);
                        return response.result.map_err(ClientError::from_wire);
                    }
                    Err(AttemptError::Answered(error)) => {
                        self.record(node, true);
                        let retryable = error.code == "unavailable";
                        if !retryable {
                            return Err(ClientError::from_wire(error));
                        }
                        last_error = format!("{}: {}", node.addr, error.message);
                    }
                    Err(AttemptError::NotSent(reason)) => {
                        self.record(node, false);
                        last_error = format!("{}: {reason}", node.addr);
                    }
                    Err(AttemptError::MaybeApplied(reason)) => {
                        self.record(node, false);
                        if !idempotent {
                            return Err(ClientError::Unavailable(format!(
                                "{}: {reason}; the write may or may not have been applied: read \
                                 before writing again",
                                node.addr
                            )));
                        }
                        last_error = format!("{}: {reason}", node.addr);
                    }
                }
            }
        }
        Err(ClientError::Unavailable(last_error))
    }

    pub(super) fn record(&self, node: &NodeSlot, reached: bool) {
        if let Ok(mut breaker) = node.breaker.lock() {
            if reached {
                breaker.on_success();
            } else {
                breaker.on_failure(Instant::now());
            }
        }
    }

    fn notify(&self, event: ConnectionEvent) {
        tracing::debug!(?event, "cfgnode client connection change");
        if let Some(callback) = &self.inner.on_change {
            callback(&event);
        }
    }

    /// A live connection to `node`, reusing the cached one.
    async fn connection(&self, node: &NodeSlot) -> Result<Connection, String> {
        let mut cached = node.connection.lock().await;
        if let Some(connection) = cached.as_ref()
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        if let Some(old) = cached.take() {
            let reason = old
                .close_reason()
                .map(|r| r.to_string())
                .unwrap_or_default();
            self.notify(ConnectionEvent::Disconnected {
                addr: node.addr,
                reason,
            });
        }
        let connecting = self
            .inner
            .endpoint
            .connect(node.addr, SERVER_NAME)
            .map_err(|e| format!("cannot connect: {e}"))?;
        let connection = tokio::time::timeout(self.inner.connect_timeout, connecting)
            .await
            .map_err(|_| format!("no handshake within {:?}", self.inner.connect_timeout))?
            .map_err(|e| format!("handshake failed: {e}"))?;
        *cached = Some(connection.clone());
        self.notify(ConnectionEvent::Connected { addr: node.addr });
        Ok(connection)
    }

    async fn forget(&self, node: &NodeSlot, reason: &str) {
        if node.connection.lock().await.take().is_some() {
            self.notify(ConnectionEvent::Disconnected {
                addr: node.addr,
                reason: reason.to_string(),
            });
        }
    }

    pub(super) async fn attempt(
        &self,
        node: &NodeSlot,
        payload: &[u8],
    ) -> Result<ResponseEnvelope, AttemptError> {
        let connection = self.connection(node).await.map_err(AttemptError::NotSent)?;
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                let reason = format!("cannot open a stream: {e}");
                self.forget(node, &reason).await;
                return Err(AttemptError::NotSent(reason));
            }
        };
        let exchange = async {
            send.write_all(payload).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            read_frame(&mut recv, MAX_FRAME_BYTES)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the node closed the stream without answering".to_string())
        };
        let frame = match exchange.await {
            Ok(frame) => frame,
            Err(reason) => {
                self.forget(node, &reason).await;
                return Err(AttemptError::MaybeApplied(reason));
            }
        };
        if let Ok(mut at) = node.last_answer.lock() {
            *at = Instant::now();
        }
        let envelope: ResponseEnvelope = decode_payload(&frame)
            .map_err(|e| AttemptError::MaybeApplied(format!("unreadable answer: {e}")))?;
        match envelope.result {
            Err(error) => Err(AttemptError::Answered(error)),
            Ok(_) => Ok(envelope),
        }
    }

    /// Opens a watch stream on the `turn`-th node after the preferred one: sends the request
    /// and hands back the stream to read frames from, with the node's address.
    pub(crate) async fn open_watch_stream(
        &self,
        turn: usize,
        request: WireWatchRequest,
    ) -> Result<(SocketAddr, RecvStream), String> {
        let count = self.inner.nodes.len();
        let first = self.inner.preferred.load(Ordering::Relaxed);
        let node = &self.inner.nodes[(first + turn) % count];
        let connection = self.connection(node).await?;
        let (mut send, recv) = match connection.open_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                let reason = format!("cannot open a stream: {e}");
                self.forget(node, &reason).await;
                return Err(reason);
            }
        };
        let payload = self
            .encode(&Request::Push(PushRequest::Watch(request)), false)
            .map_err(|e| e.to_string())?;
        send.write_all(&payload)
            .await
            .map_err(|e| format!("{}: {e}", node.addr))?;
        send.finish().map_err(|e| format!("{}: {e}", node.addr))?;
        Ok((node.addr, recv))
    }

    /// Closes every open connection (calls and watches reconnect on their own). For a client
    /// that knows its network changed, and for tests that cut connections.
    pub async fn close_connections(&self) {
        let holders = self.holder_slots_now();
        for node in self.inner.nodes.iter().chain(holders.iter().map(|n| &**n)) {
            if let Some(connection) = node.connection.lock().await.take() {
                connection.close(0u32.into(), b"closed by the client");
                self.notify(ConnectionEvent::Disconnected {
                    addr: node.addr,
                    reason: "closed by the client".to_string(),
                });
            }
        }
    }

    /// The slots made for holders outside the address list, as they are now.
    fn holder_slots_now(&self) -> Vec<Arc<NodeSlot>> {
        self.inner
            .holder_slots
            .lock()
            .map(|slots| slots.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets the connection to `addr` (a watch found it broken).
    pub(crate) async fn forget_addr(&self, addr: SocketAddr, reason: &str) {
        if let Some(node) = self.inner.nodes.iter().find(|n| n.addr == addr) {
            self.forget(node, reason).await;
        }
    }

    /// Closes every connection; later calls reconnect.
    pub async fn close(&self) {
        for node in &self.inner.nodes {
            if let Some(connection) = node.connection.lock().await.take() {
                connection.close(0u32.into(), b"client closed");
            }
        }
    }
}
