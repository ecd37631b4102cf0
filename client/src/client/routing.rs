//! Routing a namespace request to its holder: the holder learned from redirects is asked
//! directly (at most [`MAX_REDIRECTS`] hops per call), and a holder this client cannot reach is
//! left to the nodes' forwarding for [`UNREACHABLE_FOR`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cfgnode_transport::{Request, Response};

use crate::breaker::CircuitBreaker;
use crate::error::ClientError;

use super::connection::AttemptError;
use super::{Client, MAX_REDIRECTS, NodeSlot, UNREACHABLE_FOR};

impl Client {
    /// Sends a namespace request to its holder: the cached one, or where redirects lead.
    pub(super) async fn route_call(&self, request: Request) -> Result<Response, ClientError> {
        let namespace = match request.routed_namespace() {
            Some(ns) if self.inner.follow_redirects => ns.to_string(),
            _ => return self.call_with_retries(request, false).await,
        };
        let mut target = self.cached_holder(&namespace);
        let mut redirects = 0;
        loop {
            let response = match target {
                None => self.call_with_retries(request.clone(), true).await?,
                Some(addr) => match self.direct(addr, &request).await {
                    Ok(response) => response,
                    Err(None) => {
                        // The holder cannot be reached from here: let a node forward.
                        self.forget_holder(&namespace, addr);
                        return self.call_with_retries(request, false).await;
                    }
                    Err(Some(error)) => return Err(error),
                },
            };
            let Response::Redirect(redirect) = response else {
                return Ok(response);
            };
            redirects += 1;
            let addr: Option<SocketAddr> = redirect.quic_addr.parse().ok();
            match addr {
                Some(addr) if redirects <= MAX_REDIRECTS && !self.is_unreachable(addr) => {
                    if let Ok(mut holders) = self.inner.holders.lock() {
                        holders.insert(namespace.clone(), addr);
                    }
                    target = Some(addr);
                }
                Some(_) if redirects <= MAX_REDIRECTS => {
                    return self.call_with_retries(request, false).await;
                }
                _ => {
                    return Err(ClientError::Server {
                        code: "namespace_moving".to_string(),
                        message: format!(
                            "namespace {namespace:?} is moving between nodes (redirected {redirects} times); retry"
                        ),
                    });
                }
            }
        }
    }

    fn cached_holder(&self, namespace: &str) -> Option<SocketAddr> {
        let addr = *self.inner.holders.lock().ok()?.get(namespace)?;
        (!self.is_unreachable(addr)).then_some(addr)
    }

    fn is_unreachable(&self, addr: SocketAddr) -> bool {
        self.inner.unreachable.lock().is_ok_and(|mut map| {
            map.retain(|_, since| since.elapsed() < UNREACHABLE_FOR);
            map.contains_key(&addr)
        })
    }

    fn forget_holder(&self, namespace: &str, addr: SocketAddr) {
        if let Ok(mut holders) = self.inner.holders.lock() {
            holders.remove(namespace);
        }
        if let Ok(mut map) = self.inner.unreachable.lock() {
            map.insert(addr, Instant::now());
        }
    }

    /// One attempt straight at a holder. `Err(None)`: it could not be reached (nothing was
    /// applied, or the call is a read): fall back to forwarding. `Err(Some(e))`: final.
    async fn direct(
        &self,
        addr: SocketAddr,
        request: &Request,
    ) -> Result<Response, Option<ClientError>> {
        let slot = self.holder_slot(addr);
        let payload = self.encode(request, true).map_err(Some)?;
        match self.attempt(&slot, &payload).await {
            Ok(response) => response.result.map_err(|e| Some(ClientError::from_wire(e))),
            Err(AttemptError::Answered(error)) if error.code == "unavailable" => Err(None),
            Err(AttemptError::Answered(error)) => Err(Some(ClientError::from_wire(error))),
            Err(AttemptError::NotSent(_)) => Err(None),
            Err(AttemptError::MaybeApplied(reason)) if !request.is_idempotent() => {
                Err(Some(ClientError::Unavailable(format!(
                    "{addr}: {reason}; the write may or may not have been applied: read before \
                     writing again"
                ))))
            }
            Err(AttemptError::MaybeApplied(_)) => Err(None),
        }
    }

    /// The slot of a node: one of the configured ones, or one made for a holder.
    fn holder_slot(&self, addr: SocketAddr) -> Arc<NodeSlot> {
        let mut slots = self
            .inner
            .holder_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(addr).or_insert_with(|| {
            Arc::new(NodeSlot {
                addr,
                connection: tokio::sync::Mutex::new(None),
                last_answer: Mutex::new(Instant::now()),
                breaker: Mutex::new(CircuitBreaker::new(
                    self.inner.breaker_threshold,
                    self.inner.breaker_cooldown,
                )),
            })
        }))
    }
}
