//! QUIC endpoints and framed streams.
//!
//! One endpoint per node is both server and client. [`read_frame`] reads no more than the
//! current frame needs, so a peer can make a reader hold at most one frame; [`write_frame`]
//! refuses frames over the limit before sending anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{ClientConfig, Endpoint, RecvStream, SendStream, ServerConfig, TransportConfig};

use crate::error::FrameError;
use crate::frame::{FrameDecoder, MAX_FRAME_BYTES, encode_frame};
use crate::tls::{ClientTls, ServerTls, TlsError, client_crypto, server_crypto};

/// Idle connections close after this long without traffic (keep-alives prevent it while both
/// ends live).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Keep-alive interval: well under the idle timeout, so a live but quiet connection survives.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Streams a peer may have open at once on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

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

/// Transport parameters for a LAN: short keep-alives, bounded streams, datagrams on (SWIM will
/// ride them).
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
        .datagram_receive_buffer_size(Some(1024 * 1024))
        .datagram_send_buffer_size(1024 * 1024);
    Ok(Arc::new(transport))
}

/// The quinn client config for `tls`.
pub fn client_config(tls: &ClientTls) -> Result<ClientConfig, EndpointError> {
    let mut config = ClientConfig::new(Arc::new(client_crypto(tls)?));
    config.transport_config(transport_config()?);
    Ok(config)
}

/// The quinn server config for `tls`.
pub fn server_config(tls: &ServerTls) -> Result<ServerConfig, EndpointError> {
    let mut config = ServerConfig::with_crypto(Arc::new(server_crypto(tls)?));
    config.transport_config(transport_config()?);
    Ok(config)
}

/// Binds an endpoint on `addr`: a server when `server` is given, and a client with `client`
/// as its default configuration either way.
pub fn bind_endpoint(
    addr: SocketAddr,
    server: Option<&ServerTls>,
    client: &ClientTls,
) -> Result<Endpoint, EndpointError> {
    let bind_error = |source| EndpointError::Bind { addr, source };
    let mut endpoint = match server {
        Some(tls) => Endpoint::server(server_config(tls)?, addr).map_err(bind_error)?,
        None => Endpoint::client(addr).map_err(bind_error)?,
    };
    endpoint.set_default_client_config(client_config(client)?);
    Ok(endpoint)
}

/// Reads one frame. `Ok(None)` when the stream ended cleanly before any byte of a frame.
pub async fn read_frame(
    recv: &mut RecvStream,
    max_frame: usize,
) -> Result<Option<Vec<u8>>, StreamError> {
    let mut decoder = FrameDecoder::new(max_frame.min(MAX_FRAME_BYTES));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        let want = decoder.wanted().clamp(1, buf.len());
        match recv.read(&mut buf[..want]).await? {
            Some(n) => decoder.push(&buf[..n])?,
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

/// Writes one frame.
pub async fn write_frame(send: &mut SendStream, payload: &[u8]) -> Result<(), StreamError> {
    let frame = encode_frame(payload, MAX_FRAME_BYTES)?;
    send.write_all(&frame).await?;
    Ok(())
}
