//! The proxy's HTTP/1.1 client to its backends: one keep-alive TCP connection per request in
//! flight, driven by that request's own task (docs/proxy.md, "Backend connections").
//!
//! Why not hyper's client connection: hyper drives each client connection from a task of its
//! own and hands it every request, and the answer back, through a channel, so one proxied
//! request wakes two tasks and crosses the channel twice on top of the server side's work
//! (docs/benchmarks.md, "Proxy": cfgnode's user-space CPU per request was about 1.7× nginx's,
//! with the dispatch channel and the client state machine among the top entries). Here the
//! request's task writes the head and body and reads the answer's head itself, and the
//! answer's body reads the connection as the client side polls it; nothing is spawned.
//!
//! The codec is pure and tested on its own ([`write_head`], [`parse_answer_head`],
//! [`Decoder`]); [`BackendConnection`] is the IO around it. What it speaks, by RFC 9112:
//! requests in origin form with `Content-Length` or chunked bodies; answers framed by
//! `Transfer-Encoding: chunked`, `Content-Length` or the connection's close, with no body for
//! `HEAD`, 1xx, 204 and 304; interim 1xx answers (`100 Continue`) skipped; a `101` handed over
//! with the connection for an upgrade. A backend that breaks the framing gets its connection
//! closed and the request an error.

use std::io;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most headers an answer may have.
const MAX_HEADERS: usize = 100;
/// The largest answer head (status line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE_BYTES: usize = 4096;
/// The most trailer bytes accepted (they are read and dropped).
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// How much is read from a backend at a time (at least).
const READ_CHUNK: usize = 16 * 1024;

/// How a request's body is framed on its way to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// The client's `Content-Length` (kept in the headers): the bytes go as they come.
    Length,
    /// The client sent it chunked (or in any transfer coding hyper decoded): it goes chunked.
    Chunked,
}

/// How a request's body is framed, from the client's headers (before the hop-by-hop ones are
/// removed). A `Transfer-Encoding` wins over a `Content-Length` (RFC 9112, 6.3), and the
/// caller then drops the length.
pub fn request_framing(headers: &HeaderMap) -> RequestFraming {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        RequestFraming::Chunked
    } else if headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
    {
        RequestFraming::Length
    } else {
        RequestFraming::Empty
    }
}

/// Appends a request head to `out`: the request line in origin form, every header of
/// `headers` (hop-by-hop ones already removed), and `Transfer-Encoding: chunked` when the body
/// goes chunked. Pure.
pub fn write_head(
    out: &mut Vec<u8>,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == RequestFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A backend's answer head, parsed.
#[derive(Debug)]
pub struct AnswerHead {
    /// The status.
    pub status: StatusCode,
    /// Every header, as sent (the caller removes the hop-by-hop ones).
    pub headers: HeaderMap,
    /// How the body is framed.
    pub decoder: Decoder,
    /// Whether the connection can carry another request once this body has been read.
    pub keep_alive: bool,
}

/// Why an answer could not be understood: the backend broke HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the backend's answer is malformed: {0}")]
pub struct Malformed(pub String);

/// Parses an answer head at the start of `buf`: `Ok(None)` when more bytes are needed, else
/// the head and its length in bytes. `head_request` says whether the request was a `HEAD`
/// (its answer has no body whatever its headers say). Header values share `buf`'s bytes. Pure.
pub fn parse_answer_head(
    buf: &Bytes,
    head_request: bool,
) -> Result<Option<(AnswerHead, usize)>, Malformed> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let length = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Malformed(format!(
                "its head is over {MAX_HEAD_BYTES} bytes"
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Malformed(e.to_string())),
    };
    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| Malformed(format!("status {code} is out of range")))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Malformed(format!("header name {:?} is invalid", field.name)))?;
        // The value's place in `buf` (httparse hands out slices of it): shared, not copied.
        let start = field.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(buf.slice(start..start + field.value.len()))
            .map_err(|_| Malformed(format!("the value of header {name} is invalid")))?;
        headers.append(name, value);
    }
    let decoder = answer_decoder(code, head_request, &headers)?;
    let keep_alive = decoder != Decoder::UntilClose && connection_persists(version, &headers);
    Ok(Some((
        AnswerHead {
            status,
            headers,
            decoder,
            keep_alive,
        },
        length,
    )))
}

/// The length of the answer head at the start of `buf`, once it is all there. Pure.
fn head_length(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Response::new(&mut slots).parse(buf) {
        Ok(httparse::Status::Complete(length)) => Ok(Some(length)),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => Err(Malformed(format!(
            "its head is over {MAX_HEAD_BYTES} bytes"
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(Malformed(e.to_string())),
    }
}

/// How an answer's body is framed (RFC 9112, 6.3). Pure.
fn answer_decoder(
    status: u16,
    head_request: bool,
    headers: &HeaderMap,
) -> Result<Decoder, Malformed> {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Decoder::Length(0));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Chunked only when it is the last coding; any other ends with the connection.
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => {
                Decoder::Chunked(Chunked::Size)
            }
            _ => Decoder::UntilClose,
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let item = item.trim_ascii();
            let parsed = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| Malformed("its Content-Length is not a number".into()))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(Malformed("it has two different Content-Lengths".into()));
            }
            length = Some(parsed);
        }
    }
    Ok(length.map_or(Decoder::UntilClose, Decoder::Length))
}

/// Whether the backend keeps the connection open after this answer. Pure.
fn connection_persists(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// Where a body being read stands: how many bytes are left, where a chunked one is, or
/// whether it ends with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes left (`Content-Length`; 0: ended).
    Length(u64),
    /// A chunked body.
    Chunked(Chunked),
    /// Everything until the backend closes the connection.
    UntilClose,
    /// Ended.
    Done,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, this many data bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one (this many bytes seen so far).
    Trailers(usize),
}

/// What one step of a [`Decoder`] gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// More must be read from the connection first.
    NeedMore,
    /// The body has ended.
    End,
}

impl Decoder {
    /// Takes the next body bytes (or framing) out of `buf`. Pure.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self {
                Decoder::Done | Decoder::Length(0) => {
                    *self = Decoder::Done;
                    return Ok(Decoded::End);
                }
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= take as u64;
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Decoder::Chunked(Chunked::Size) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    *self = Decoder::Chunked(if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    });
                }
                Decoder::Chunked(Chunked::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Decoder::Chunked(Chunked::DataEnd);
                    }
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Decoder::Chunked(Chunked::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("a chunk's data does not end with CRLF".into()));
                    }
                    let _ = buf.split_to(2);
                    *self = Decoder::Chunked(Chunked::Size);
                }
                Decoder::Chunked(Chunked::Trailers(seen)) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        *self = Decoder::Done;
                        return Ok(Decoded::End);
                    }
                    let seen = *seen + line.len() + 2;
                    if seen > MAX_TRAILER_BYTES {
                        return Err(Malformed(format!(
                            "its trailers are over {MAX_TRAILER_BYTES} bytes"
                        )));
                    }
                    *self = Decoder::Chunked(Chunked::Trailers(seen));
                }
            }
        }
    }

    /// Whether the body has ended.
    pub fn ended(&self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }
}

/// Takes one CRLF-terminated line (without its CRLF) off `buf`, if a whole one is there.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, Malformed> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        Some(_) => Err(Malformed("a line ends with a bare LF".into())),
        None if buf.len() > MAX_LINE_BYTES => Err(Malformed(format!(
            "a chunk-size or trailer line is over {MAX_LINE_BYTES} bytes"
        ))),
        None => Ok(None),
    }
}

/// A chunk-size line's size (extensions after `;` are ignored).
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(Malformed(format!(
            "chunk size {:?} is not a hex number",
            String::from_utf8_lossy(line)
        )));
    }
    let text = std::str::from_utf8(digits).map_err(|_| Malformed("chunk size".into()))?;
    u64::from_str_radix(text, 16).map_err(|_| Malformed("chunk size".into()))
}

/// Why an exchange with a backend did not give an answer head.
#[derive(Debug)]
pub enum ExchangeError {
    /// The connection failed. `answered_any`: some bytes of an answer had arrived.
    Io {
        /// What failed.
        error: io::Error,
        /// Whether any byte of an answer had arrived.
        answered_any: bool,
    },
    /// The client's body failed while it was being sent (the client went away).
    ClientBody(hyper::Error),
    /// The backend's answer broke HTTP/1.1.
    Malformed(Malformed),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Io { error, .. } => write!(f, "{error}"),
            ExchangeError::ClientBody(e) => write!(f, "the client's body failed: {e}"),
            ExchangeError::Malformed(e) => write!(f, "{e}"),
        }
    }
}

/// One keep-alive connection to a backend.
pub struct BackendConnection {
    stream: TcpStream,
    /// Bytes read from the backend and not consumed yet.
    read: BytesMut,
}

impl std::fmt::Debug for BackendConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConnection")
            .field("peer", &self.stream.peer_addr().ok())
            .field("buffered", &self.read.len())
            .finish()
    }
}

impl BackendConnection {
    /// A new connection to `backend` (`host:port`), given up after `timeout`.
    pub async fn connect(backend: &str, timeout: Duration) -> io::Result<BackendConnection> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(backend))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connecting to the backend took too long",
                )
            })??;
        stream.set_nodelay(true)?;
        Ok(BackendConnection {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    /// Whether an idle connection can carry another request: the backend sent nothing and did
    /// not close it meanwhile. Costs no system call unless the socket was reported readable.
    pub fn is_reusable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false; // Bytes nobody asked for: the connection is out of step.
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: data, an end of stream or an error; or only a stale readiness.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends a request (`head`, from [`write_head`], then `body` framed as `framing`) and reads
    /// the answer's head, skipping interim 1xx answers other than `101`. A backend that
    /// answers while the body is still being sent (and stops reading it) is answered from
    /// what it sent, with the connection closed after.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: Option<Incoming>,
        framing: RequestFraming,
        head_request: bool,
    ) -> Result<AnswerHead, ExchangeError> {
        let io = |error| ExchangeError::Io {
            error,
            answered_any: false,
        };
        self.stream.write_all(head).await.map_err(io)?;
        let mut body_sent = true;
        if let Some(body) = body
            && framing != RequestFraming::Empty
        {
            match self.send_body(body, framing).await {
                Ok(()) => {}
                Err(ExchangeError::Io { error, .. }) => {
                    // It may have answered (and stopped reading): look before giving up.
                    body_sent = false;
                    if self.read_head(head_request).await.is_err() {
                        return Err(io(error));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut answer = self.read_head(head_request).await?;
        if !body_sent {
            answer.keep_alive = false;
        }
        Ok(answer)
    }

    async fn send_body(
        &mut self,
        mut body: Incoming,
        framing: RequestFraming,
    ) -> Result<(), ExchangeError> {
        use http_body_util::BodyExt;
        let io = |error| ExchangeError::Io {
            error,
            answered_any: false,
        };
        let mut framed = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ExchangeError::ClientBody)?;
            let Ok(data) = frame.into_data() else {
                continue; // Trailers: not forwarded.
            };
            if data.is_empty() {
                continue;
            }
            if framing == RequestFraming::Chunked {
                framed.clear();
                framed.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                framed.extend_from_slice(&data);
                framed.extend_from_slice(b"\r\n");
                self.stream.write_all(&framed).await.map_err(io)?;
            } else {
                self.stream.write_all(&data).await.map_err(io)?;
            }
        }
        if framing == RequestFraming::Chunked {
            self.stream.write_all(b"0\r\n\r\n").await.map_err(io)?;
        }
        Ok(())
    }

    /// Reads until an answer head other than an interim 1xx is parsed.
    async fn read_head(&mut self, head_request: bool) -> Result<AnswerHead, ExchangeError> {
        let mut answered_any = !self.read.is_empty();
        loop {
            if let Some(length) = head_length(&self.read).map_err(ExchangeError::Malformed)? {
                // Split off first, so that header values share the head's bytes.
                let bytes = self.read.split_to(length).freeze();
                let (head, _) = parse_answer_head(&bytes, head_request)
                    .map_err(ExchangeError::Malformed)?
                    .ok_or_else(|| {
                        ExchangeError::Malformed(Malformed("a head cut short".into()))
                    })?;
                let interim = head.status.is_informational()
                    && head.status != StatusCode::SWITCHING_PROTOCOLS;
                if !interim {
                    return Ok(head);
                }
                continue;
            }
            if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
                self.read.reserve(READ_CHUNK);
            }
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) => {
                    return Err(ExchangeError::Io {
                        error: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the backend closed the connection before it answered",
                        ),
                        answered_any,
                    });
                }
                Ok(_) => answered_any = true,
                Err(error) => {
                    return Err(ExchangeError::Io {
                        error,
                        answered_any,
                    });
                }
            }
        }
    }

    /// Reads the next piece of a body framed by `decoder`: `None` once it has ended. An end
    /// of stream ends an [`Decoder::UntilClose`] body and is an error for any other.
    pub fn poll_body(
        &mut self,
        decoder: &mut Decoder,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match decoder.decode(&mut self.read) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))));
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if *decoder == Decoder::UntilClose => {
                    *decoder = Decoder::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the backend closed the connection in the middle of its answer",
                    ))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    /// Reads what the socket has into the buffer (0: the backend closed it).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        loop {
            match self.stream.try_read_buf(&mut self.read) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.stream.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The socket and the bytes already read past the answer's head: for a `101`, whose
    /// connection is spliced to the client's.
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, head_request: bool) -> Result<Option<(AnswerHead, usize)>, Malformed> {
        parse_answer_head(&Bytes::copy_from_slice(text.as_bytes()), head_request)
    }

    fn decode_all(decoder: &mut Decoder, input: &[u8]) -> Result<(Vec<u8>, bool), Malformed> {
        let mut buf = BytesMut::from(input);
        let mut body = Vec::new();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::NeedMore => return Ok((body, false)),
                Decoded::End => return Ok((body, true)),
            }
        }
    }

    #[test]
    fn a_request_head_is_written_in_origin_form_with_its_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop"));
        headers.append("x-tag", HeaderValue::from_static("a"));
        headers.append("x-tag", HeaderValue::from_static("b"));
        let mut out = Vec::new();
        write_head(
            &mut out,
            &Method::POST,
            "/cart?x=1",
            &headers,
            RequestFraming::Chunked,
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "POST /cart?x=1 HTTP/1.1\r\nhost: shop\r\nx-tag: a\r\nx-tag: b\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut te = HeaderMap::new();
        te.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        te.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(request_framing(&te), RequestFraming::Chunked);
        let mut cl = HeaderMap::new();
        cl.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(request_framing(&cl), RequestFraming::Length);
        cl.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert_eq!(request_framing(&cl), RequestFraming::Empty);
        assert_eq!(request_framing(&HeaderMap::new()), RequestFraming::Empty);
    }

    #[test]
    fn answer_heads_are_framed_by_rfc_9112() {
        let (head, length) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: b1\r\n\r\nok",
            false,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(length, 53, "the head without its body");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.decoder, Decoder::Length(2));
        assert!(head.keep_alive);
        assert_eq!(head.headers["x-backend"], "b1");
        let framing = |text: &str, head_request| {
            parse(text, head_request)
                .expect("valid")
                .expect("complete")
                .0
        };
        let chunked = framing(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(chunked.decoder, Decoder::Chunked(Chunked::Size));
        let gzip = framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!(gzip.decoder, Decoder::UntilClose);
        assert!(!gzip.keep_alive, "a body that ends with the connection");
        let bare = framing("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(bare.decoder, Decoder::UntilClose);
        for empty in [
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert_eq!(framing(empty, false).decoder, Decoder::Length(0), "{empty}");
        }
        let head = framing("HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", true);
        assert_eq!(
            head.decoder,
            Decoder::Length(0),
            "a HEAD answer has no body"
        );
        assert_eq!(head.headers["content-length"], "500", "its length is kept");
        let close = framing(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!close.keep_alive);
        let old = framing("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!old.keep_alive, "HTTP/1.0 closes unless told otherwise");
        let old = framing(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(old.keep_alive);
        let same = framing(
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
            false,
        );
        assert_eq!(same.decoder, Decoder::Length(3));
    }

    #[test]
    fn broken_answer_heads_are_refused_and_partial_ones_wait() {
        assert!(
            parse("HTTP/1.1 200 OK\r\nContent-Le", false)
                .expect("valid so far")
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 99 Low\r\n\r\n",
            "SMTP 220 hello\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(parse(bad, false).is_err(), "{bad:?}");
        }
        let endless = format!("HTTP/1.1 200 OK\r\nX-Long: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(parse(&endless, false).is_err(), "an endless head");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).is_err());
    }

    #[test]
    fn chunked_bodies_decode_across_any_split_and_bad_ones_are_refused() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
        let (body, ended) = decode_all(&mut Decoder::Chunked(Chunked::Size), wire).expect("valid");
        assert_eq!((body.as_slice(), ended), (&b"hello world"[..], true));
        // Fed byte by byte, as slow networks deliver it: the same body.
        let mut decoder = Decoder::Chunked(Chunked::Size);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut ended = false;
        for byte in wire {
            buf.extend_from_slice(&[*byte]);
            loop {
                match decoder.decode(&mut buf).expect("valid") {
                    Decoded::Data(data) => body.extend_from_slice(&data),
                    Decoded::NeedMore => break,
                    Decoded::End => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        assert_eq!((body.as_slice(), ended), (&b"hello world"[..], true));
        for bad in [
            &b"zz\r\nhello\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(
                decode_all(&mut Decoder::Chunked(Chunked::Size), bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'1'; MAX_LINE_BYTES + 1];
        assert!(decode_all(&mut Decoder::Chunked(Chunked::Size), &long).is_err());
        let trailers: Vec<u8> = b"0\r\n"
            .iter()
            .copied()
            .chain((0..2000).flat_map(|_| b"X-T: vvvvvvvv\r\n".iter().copied()))
            .collect();
        assert!(decode_all(&mut Decoder::Chunked(Chunked::Size), &trailers).is_err());
    }

    #[test]
    fn length_and_close_bodies_take_what_is_theirs() {
        let mut decoder = Decoder::Length(5);
        let mut buf = BytesMut::from(&b"helloHTTP/1.1 200"[..]);
        assert_eq!(
            decoder.decode(&mut buf).expect("valid"),
            Decoded::Data(Bytes::from_static(b"hello"))
        );
        assert_eq!(decoder.decode(&mut buf).expect("valid"), Decoded::End);
        assert_eq!(&buf[..], b"HTTP/1.1 200", "the next answer's bytes stay");
        assert!(decoder.ended());
        let (body, ended) = decode_all(&mut Decoder::UntilClose, b"all of it").expect("valid");
        assert_eq!((body.as_slice(), ended), (&b"all of it"[..], false));
    }
}
