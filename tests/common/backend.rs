//! A real HTTP/1.1 backend on loopback for proxy tests: answers every request with a JSON
//! body naming itself and echoing what the proxy sent (`host`, `x-forwarded-*`, hop-by-hop
//! headers seen, body bytes counted, never stored), and can be killed (its port then refuses
//! connections).

use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};

/// A running backend.
pub struct Backend {
    /// Its name, echoed in every answer.
    pub name: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Requests answered so far.
    pub hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Backend {
    /// Starts a backend called `name`.
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let addr = listener.local_addr().expect("addr").to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let (who, counter) = (name.to_string(), Arc::clone(&hits));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let open = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let served = tokio::spawn(answer(socket, who.clone(), Arc::clone(&counter)));
                open.lock().expect("lock").push(served.abort_handle());
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            hits,
            task,
            connections,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Dies: open connections are closed and the port refuses new ones.
    pub fn kill(&self) {
        self.task.abort();
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Serves one connection: keep-alive until the client closes, one answer per request.
async fn answer(mut socket: tokio::net::TcpStream, name: String, hits: Arc<AtomicUsize>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        // Count the body without keeping it (content-length or chunked).
        let mut bytes: u64 = 0;
        if let Some(length) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            let mut left = length;
            let taken = (buf.len() as u64).min(left);
            buf.drain(..taken as usize);
            left -= taken;
            bytes += taken;
            while left > 0 {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let used = (n as u64).min(left);
                        bytes += used;
                        left -= used;
                        buf.extend_from_slice(&chunk[used as usize..n]);
                    }
                }
            }
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            match read_chunked(&mut socket, &mut buf, &mut chunk).await {
                Some(n) => bytes = n,
                None => return,
            }
        }
        hits.fetch_add(1, Ordering::Relaxed);
        if let Some(framed) = framed_answer(&request_line, header("expect").as_deref()) {
            match framed.send(&mut socket).await {
                Ok(true) => continue,
                _ => return,
            }
        }
        let head_only = request_line.starts_with("HEAD ");
        let body = serde_json::json!({
            "backend": name,
            "request": request_line,
            "host": header("host"),
            "x_forwarded_for": header("x-forwarded-for"),
            "x_forwarded_proto": header("x-forwarded-proto"),
            "x_forwarded_host": header("x-forwarded-host"),
            "connection": header("connection"),
            "keep_alive": header("keep-alive"),
            "bytes": bytes,
        })
        .to_string();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-backend: {name}\r\n\r\n{}",
            body.len(),
            if head_only { "" } else { body.as_str() }
        );
        if socket.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads a chunked body after the head, counting its bytes; `None` when the connection ends.
async fn read_chunked(
    socket: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> Option<u64> {
    let mut total = 0u64;
    loop {
        let line_end = loop {
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                break end;
            }
            let n = socket.read(chunk).await.ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = u64::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        // The chunk's data and its CRLF (a last chunk of 0 is followed by CRLF too).
        let mut need = size + 2;
        while need > 0 {
            if buf.is_empty() {
                let n = socket.read(chunk).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            let take = (buf.len() as u64).min(need);
            buf.drain(..take as usize);
            need -= take;
        }
        total += size;
        if size == 0 {
            return Some(total);
        }
    }
}

/// The answers framed on purpose, by request path (the body bytes are `b'a' + i % 26`):
/// `GET /chunked/N` (N bytes in 16 KiB chunks, then a trailer), `GET /close/N` (N bytes, no
/// length, ended by closing the connection), `GET /status/204`, and `GET /continue` with
/// `Expect: 100-continue` (an interim `100 Continue` before a 200).
enum Framed {
    Chunked(u64),
    Close(u64),
    NoContent,
    Continue,
}

fn framed_answer(request_line: &str, expect: Option<&str>) -> Option<Framed> {
    let path = request_line.split(' ').nth(1)?;
    let number = |prefix: &str| path.strip_prefix(prefix)?.parse::<u64>().ok();
    if let Some(n) = number("/chunked/") {
        Some(Framed::Chunked(n))
    } else if let Some(n) = number("/close/") {
        Some(Framed::Close(n))
    } else if path == "/status/204" {
        Some(Framed::NoContent)
    } else if path == "/continue" && expect.is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        Some(Framed::Continue)
    } else {
        None
    }
}

/// The body byte at `offset` of a framed answer.
pub fn pattern_byte(offset: u64) -> u8 {
    b'a' + (offset % 26) as u8
}

impl Framed {
    /// Sends the answer: `Ok(true)` when the connection stays open.
    async fn send(self, socket: &mut tokio::net::TcpStream) -> std::io::Result<bool> {
        const CHUNK: u64 = 16 * 1024;
        let piece = |from: u64, len: u64| (from..from + len).map(pattern_byte).collect::<Vec<u8>>();
        match self {
            Framed::Chunked(total) => {
                socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n",
                    )
                    .await?;
                let mut sent = 0;
                while sent < total {
                    let len = CHUNK.min(total - sent);
                    let mut framed = format!("{len:x};ext=1\r\n").into_bytes();
                    framed.extend_from_slice(&piece(sent, len));
                    framed.extend_from_slice(b"\r\n");
                    socket.write_all(&framed).await?;
                    sent += len;
                }
                socket.write_all(b"0\r\nx-sum: 1\r\n\r\n").await?;
                Ok(true)
            }
            Framed::Close(total) => {
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
                    .await?;
                let mut sent = 0;
                while sent < total {
                    let len = CHUNK.min(total - sent);
                    socket.write_all(&piece(sent, len)).await?;
                    sent += len;
                }
                socket.shutdown().await?;
                Ok(false)
            }
            Framed::NoContent => {
                socket
                    .write_all(b"HTTP/1.1 204 No Content\r\nx-backend: framed\r\n\r\n")
                    .await?;
                Ok(true)
            }
            Framed::Continue => {
                socket
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\ncontinued")
                    .await?;
                Ok(true)
            }
        }
    }
}
