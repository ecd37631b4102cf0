//! QUIC endpoints and framed streams.
//!
//! One endpoint per node is both server and client: it accepts connections with its server
//! config and dials peers with its default client config, from the same UDP socket.
//! [`read_frame`] reads no more than the current frame needs, so a peer can make a reader hold
//! at most one frame (and an oversized frame costs only its 4-byte prefix); [`write_frame`]
//! refuses frames over the limit before sending anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{ClientConfig, Endpoint, RecvStream, SendStream, ServerConfig, TransportConfig};

use crate::error::FrameError;
use crate::frame::{FrameDecoder, MAX_FRAME_BYTES, encode_frame};
use crate::tls::{ClientTls, ServerTls, TlsError, client_crypto, client_crypto_for, server_crypto};

/// Idle connections close after this long without traffic (keep-alives prevent it while both
/// ends live).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Keep-alive interval: well under the idle timeout, so a live but quiet connection survives.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Bidirectional streams a peer may have open at once on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Bytes a peer may send on one stream ahead of what the node has read.
pub const STREAM_RECEIVE_WINDOW: u32 = 2 * 1024 * 1024;
/// Bytes a peer may send on all streams of one connection ahead of what the node has read:
/// with [`MAX_CONCURRENT_STREAMS`], what bounds quinn's buffering per connection (quinn's
/// default is unbounded).
pub const CONNECTION_RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;
/// Datagram bytes buffered per connection in each direction before the oldest are dropped
/// (SWIM tolerates loss; memory stays bounded).
const DATAGRAM_BUFFER_BYTES: usize = 1024 * 1024;

/// Why a stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The frame is over the limit or cut short.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading failed (connection lost, stream reset by the peer).
    #[error("reading the stream failed: {}", detail_read(.0))]
    Read(#[from] quinn::ReadError),
    /// Writing failed.
    #[error("writing the stream failed: {}", detail_write(.0))]
    Write(#[from] quinn::WriteError),
}

/// The read error with the connection's own reason (e.g. the TLS alert of a refused
/// certificate), which quinn's message alone leaves out.
fn detail_read(e: &quinn::ReadError) -> String {
    match e {
        quinn::ReadError::ConnectionLost(reason) => format!("connection lost: {reason}"),
        other => other.to_string(),
    }
}

fn detail_write(e: &quinn::WriteError) -> String {
    match e {
        quinn::WriteError::ConnectionLost(reason) => format!("connection lost: {reason}"),
        other => other.to_string(),
    }
}

/// Why an endpoint could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind QUIC on {addr}: {source}; is another process using it?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The transport parameters were refused.
    #[error("QUIC transport configuration refused: {0}")]
    Config(String),
}

/// Transport parameters for a LAN, used by both the client and the server side:
///
/// - idle timeout [`IDLE_TIMEOUT`] with keep-alives every [`KEEP_ALIVE`], so a dead peer is
///   noticed within the timeout while a quiet live one stays connected;
/// - at most [`MAX_CONCURRENT_STREAMS`] bidirectional streams per connection (one per request or
///   watch), so a peer cannot make us hold unbounded per-stream state; more wait for credit;
/// - at most [`STREAM_RECEIVE_WINDOW`] unread bytes per stream and
///   [`CONNECTION_RECEIVE_WINDOW`] per connection, so what a peer can park in our buffers is
///   bounded whatever it opens;
/// - no unidirectional streams: the protocol does not use them, and a peer must not be able to
///   park data in streams nobody reads;
/// - datagrams on, with bounded buffers: SWIM membership messages ride them.
pub fn transport_config() -> Result<Arc<TransportConfig>, EndpointError> {
    let mut transport = TransportConfig::default();
    let idle = IDLE_TIMEOUT
        .try_into()
        .map_err(|e: quinn::VarIntBoundsExceeded| EndpointError::Config(e.to_string()))?;
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_concurrent_bidi_streams(MAX_CONCURRENT_STREAMS.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(CONNECTION_RECEIVE_WINDOW.into())
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER_BYTES))
        .datagram_send_buffer_size(DATAGRAM_BUFFER_BYTES);
    Ok(Arc::new(transport))
}

/// The quinn client config for `tls`, with [`transport_config`].
pub fn client_config(tls: &ClientTls) -> Result<ClientConfig, EndpointError> {
    let mut config = ClientConfig::new(Arc::new(client_crypto(tls)?));
    config.transport_config(transport_config()?);
    Ok(config)
}

/// The quinn client config a node dials its peers with: ALPN
/// [`PEER_ALPN`](crate::PEER_ALPN), so the peer expects the cluster-key handshake.
pub fn peer_client_config(tls: &ClientTls) -> Result<ClientConfig, EndpointError> {
    let crypto = client_crypto_for(tls, crate::peer_auth::PEER_ALPN)?;
    let mut config = ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config()?);
    Ok(config)
}

/// The quinn server config for `tls`, with [`transport_config`]. It accepts no 0-RTT data
/// (see [`server_crypto`]).
pub fn server_config(tls: &ServerTls) -> Result<ServerConfig, EndpointError> {
    let mut config = ServerConfig::with_crypto(Arc::new(server_crypto(tls)?));
    config.transport_config(transport_config()?);
    Ok(config)
}

/// Binds a node's or client's endpoint on `addr`: it accepts connections when `server` is
/// given, and dials with `client` either way. Builds the configs with [`server_config`] and
/// [`client_config`].
pub fn bind_endpoint(
    addr: SocketAddr,
    server: Option<&ServerTls>,
    client: &ClientTls,
) -> Result<Endpoint, EndpointError> {
    let server = server.map(server_config).transpose()?;
    bind_endpoint_with(addr, server, client_config(client)?)
}

/// Binds a node's endpoint on `addr`: it accepts clients and peers with `server`, dials peers
/// with [`peer_client_config`], and signs QUIC stateless resets with `reset_key`. A key that
/// stays the same across restarts (the node derives it from the cluster key and its id) lets a
/// restarted node reset the connections its previous life had at once, instead of peers waiting
/// for the idle timeout on a connection nobody answers. The connection-id generator's key is
/// derived from it too, so the restarted node recognises those connections' ids as its own
/// and answers them with a reset rather than dropping them.
pub fn bind_node_endpoint(
    addr: SocketAddr,
    server: &ServerTls,
    client: &ClientTls,
    reset_key: [u8; 32],
) -> Result<Endpoint, EndpointError> {
    let bind_error = |source| EndpointError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind_error)?;
    let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_key);
    let cid_key = connection_id_key(&hmac);
    let mut config = quinn::EndpointConfig::new(Arc::new(hmac));
    // quinn checks the connection id of a packet for an unknown connection against its
    // generator's key, and drops it unanswered when the check fails. Its default generator draws
    // that key at random per process, so a restarted node would drop its previous life's
    // packets instead of resetting them, and the reset key would never be used.
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let runtime = quinn::default_runtime()
        .ok_or_else(|| EndpointError::Config("no async runtime for QUIC".to_string()))?;
    let mut endpoint =
        Endpoint::new(config, Some(server_config(server)?), socket, runtime).map_err(bind_error)?;
    endpoint.set_default_client_config(peer_client_config(client)?);
    Ok(endpoint)
}

/// The key of a node's connection-id generator, derived from its stateless-reset key so it is
/// the same in every life of the node. The generator's check only filters stray packets (a
/// forged id earns at most a reset, smaller than the packet that asked for it and rate-limited
/// by quinn); the reset key behind it is what a reset must prove.
fn connection_id_key(reset_key: &ring::hmac::Key) -> u64 {
    let tag = ring::hmac::sign(reset_key, b"quic connection id generator");
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&tag.as_ref()[..8]);
    u64::from_le_bytes(bytes)
}

/// Binds an endpoint on `addr` with ready-made quinn configs: a server when `server` is given,
/// and `client` as the default for outgoing connections. For callers that adjust the configs
/// [`bind_endpoint`] would build.
pub fn bind_endpoint_with(
    addr: SocketAddr,
    server: Option<ServerConfig>,
    client: ClientConfig,
) -> Result<Endpoint, EndpointError> {
    let bind_error = |source| EndpointError::Bind { addr, source };
    let mut endpoint = match server {
        Some(config) => Endpoint::server(config, addr).map_err(bind_error)?,
        None => Endpoint::client(addr).map_err(bind_error)?,
    };
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Reads one frame of at most `max_frame` bytes (capped at [`MAX_FRAME_BYTES`]).
///
/// Returns `Ok(None)` when the stream ended cleanly before any byte of a frame,
/// [`FrameError::Truncated`] when it ended inside one, and [`FrameError::TooLarge`] as soon as
/// the 4-byte prefix declares too much: nothing of the body is read or allocated, and the
/// caller answers with an error frame and resets the stream. Reads never go past the current
/// frame, so the next call starts exactly at the next frame.
///
/// Not cancel-safe: dropping the future mid-frame loses the bytes read so far, so a caller
/// that times out must abandon (reset) the stream.
pub async fn read_frame(
    recv: &mut RecvStream,
    max_frame: usize,
) -> Result<Option<Vec<u8>>, StreamError> {
    let mut decoder = FrameDecoder::new(max_frame.min(MAX_FRAME_BYTES));
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        // `wanted` is at least 1 here: a complete frame would have been returned above.
        match recv.read_chunk(decoder.wanted().max(1), true).await? {
            Some(chunk) => decoder.push(&chunk.bytes)?,
            None if decoder.buffered() == 0 => return Ok(None),
            None => {
                return Err(FrameError::Truncated {
                    buffered: decoder.buffered(),
                }
                .into());
            }
        }
    }
}

/// Writes one frame (length prefix and `payload`). Refuses a payload over [`MAX_FRAME_BYTES`]
/// before sending anything. Does not finish the stream: call `finish` after the last frame.
pub async fn write_frame(send: &mut SendStream, payload: &[u8]) -> Result<(), StreamError> {
    let frame = encode_frame(payload, MAX_FRAME_BYTES)?;
    send.write_all(&frame).await?;
    Ok(())
}
