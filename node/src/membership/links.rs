//! [`DatagramLinks`]: a QUIC connection per peer, used for SWIM datagrams both ways.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cfgnode_transport::SERVER_NAME;
use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;

/// How long dialing a peer may take before its datagrams are dropped (SWIM tolerates loss).
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to peers, keyed by the peer's QUIC address. Accepted connections are adopted
/// too: a node's one endpoint dials from its listening port, so the remote address of an
/// accepted connection is the peer's own address.
#[derive(Clone)]
pub struct DatagramLinks {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    connections: Mutex<HashMap<SocketAddr, Connection>>,
    dialing: Mutex<HashSet<SocketAddr>>,
    inbox: mpsc::Sender<Vec<u8>>,
}

impl std::fmt::Debug for DatagramLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatagramLinks { .. }")
    }
}

impl DatagramLinks {
    /// Links over `endpoint`; every datagram received goes to `inbox` (dropped when it is full:
    /// a SWIM packet is worth nothing late).
    pub fn new(endpoint: Endpoint, inbox: mpsc::Sender<Vec<u8>>) -> Self {
        DatagramLinks {
            inner: Arc::new(Inner {
                endpoint,
                connections: Mutex::default(),
                dialing: Mutex::default(),
                inbox,
            }),
        }
    }

    /// Uses `connection` for this peer from now on and reads its datagrams.
    pub fn adopt(&self, connection: Connection) {
        let remote = connection.remote_address();
        if let Ok(mut map) = self.inner.connections.lock() {
            map.insert(remote, connection.clone());
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            while let Ok(datagram) = connection.read_datagram().await {
                let _ = inner.inbox.try_send(datagram.to_vec());
            }
            if let Ok(mut map) = inner.connections.lock()
                && map
                    .get(&remote)
                    .is_some_and(|c| c.stable_id() == connection.stable_id())
            {
                map.remove(&remote);
            }
        });
    }

    /// Sends a datagram to `to`, dialing first when there is no live connection. Never blocks;
    /// a datagram that cannot go now is dropped.
    pub fn send(&self, to: SocketAddr, datagram: Vec<u8>) {
        let live = self
            .inner
            .connections
            .lock()
            .ok()
            .and_then(|map| map.get(&to).filter(|c| c.close_reason().is_none()).cloned());
        if let Some(connection) = live {
            if let Err(e) = connection.send_datagram(Bytes::from(datagram)) {
                tracing::debug!(%to, error = %e, "SWIM datagram not sent");
            }
            return;
        }
        let first = self
            .inner
            .dialing
            .lock()
            .map(|mut d| d.insert(to))
            .unwrap_or(false);
        if !first {
            return;
        }
        let links = self.clone();
        tokio::spawn(async move {
            let dialed = match links.inner.endpoint.connect(to, SERVER_NAME) {
                Ok(connecting) => tokio::time::timeout(DIAL_TIMEOUT, connecting)
                    .await
                    .ok()
                    .and_then(Result::ok),
                Err(_) => None,
            };
            if let Ok(mut dialing) = links.inner.dialing.lock() {
                dialing.remove(&to);
            }
            match dialed {
                Some(connection) => {
                    let _ = connection.send_datagram(Bytes::from(datagram));
                    links.adopt(connection);
                }
                None => tracing::debug!(%to, "SWIM peer unreachable"),
            }
        });
    }

    /// Closes every link (at shutdown).
    pub fn close(&self) {
        if let Ok(mut map) = self.inner.connections.lock() {
            for (_, connection) in map.drain() {
                connection.close(0u32.into(), b"leaving");
            }
        }
    }
}
