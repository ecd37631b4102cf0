//! Framed streams and transport limits on real QUIC endpoints on 127.0.0.1:0.

use std::net::SocketAddr;
use std::time::Duration;

use cfgnode_transport::{
    ClientTls, FrameError, Identity, MAX_CONCURRENT_STREAMS, MAX_FRAME_BYTES, SERVER_NAME,
    ServerTls, StreamError, bind_endpoint, bind_node_endpoint, read_frame, write_frame,
};
use quinn::{Connection, Endpoint};

const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `f` to completion or fails the test at the deadline.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A connected pair: `client` dialed `server`. The endpoints and temp dir live as long as it.
struct Pair {
    client: Connection,
    server: Connection,
    _endpoints: (Endpoint, Endpoint),
    _dir: tempfile::TempDir,
}

async fn connect() -> Pair {
    let dir = tempfile::tempdir().expect("tempdir");
    let (identity, _) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let insecure = ClientTls::Insecure { identity: None };
    let server_endpoint =
        bind_endpoint(loopback, Some(&ServerTls::SelfSigned(identity)), &insecure)
            .expect("server endpoint");
    let client_endpoint = bind_endpoint(loopback, None, &insecure).expect("client endpoint");
    let target = server_endpoint.local_addr().expect("addr");
    let accept = async {
        server_endpoint
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("server handshake")
    };
    let dial = async {
        client_endpoint
            .connect(target, SERVER_NAME)
            .expect("connect")
            .await
            .expect("client handshake")
    };
    let (server, client) = within("handshake", async { tokio::join!(accept, dial) }).await;
    Pair {
        client,
        server,
        _endpoints: (server_endpoint, client_endpoint),
        _dir: dir,
    }
}

#[tokio::test]
async fn frames_follow_each_other_on_a_stream_and_a_clean_end_is_none() {
    let pair = connect().await;
    let big = vec![7u8; 1024 * 1024];
    let (mut send, mut recv_back) = pair.client.open_bi().await.expect("open");
    write_frame(&mut send, b"first").await.expect("write");
    write_frame(&mut send, &big).await.expect("write");
    write_frame(&mut send, b"").await.expect("write");
    send.finish().expect("finish");

    let (mut reply, mut recv) = within("accept", pair.server.accept_bi())
        .await
        .expect("accept");
    let limit = 2 * 1024 * 1024;
    // Each read stops at its frame's end, so the next one starts at the next frame.
    let first = within("read", read_frame(&mut recv, limit)).await;
    assert_eq!(first.expect("read").as_deref(), Some(&b"first"[..]));
    let second = within("read", read_frame(&mut recv, limit)).await;
    assert_eq!(second.expect("read"), Some(big));
    let third = within("read", read_frame(&mut recv, limit)).await;
    assert_eq!(
        third.expect("read"),
        Some(Vec::new()),
        "an empty frame is a frame"
    );
    let end = within("read", read_frame(&mut recv, limit)).await;
    assert_eq!(end.expect("clean end"), None);

    // And the other direction of the same stream.
    write_frame(&mut reply, b"answer").await.expect("write");
    reply.finish().expect("finish");
    let answer = within("read", read_frame(&mut recv_back, 1024)).await;
    assert_eq!(answer.expect("read").as_deref(), Some(&b"answer"[..]));
}

#[tokio::test]
async fn an_oversized_prefix_is_refused_without_reading_the_body() {
    let pair = connect().await;
    let (mut send, _recv) = pair.client.open_bi().await.expect("open");
    // Declares 1 GiB and sends a few bytes of it, leaving the stream open: the reader must
    // answer from the prefix alone, not wait for (or buffer) the body.
    send.write_all(&(1u32 << 30).to_be_bytes())
        .await
        .expect("write");
    send.write_all(b"body").await.expect("write");

    let (_reply, mut recv) = within("accept", pair.server.accept_bi())
        .await
        .expect("accept");
    let result = within("read", read_frame(&mut recv, 1024)).await;
    assert!(
        matches!(
            result,
            Err(StreamError::Frame(FrameError::TooLarge {
                size: 1_073_741_824,
                limit: 1024
            }))
        ),
        "{result:?}"
    );
    // Only the prefix was consumed: the body bytes are still waiting in the stream.
    let rest = within("rest", recv.read_chunk(usize::MAX, true)).await;
    let rest = rest.expect("read").expect("not finished");
    assert_eq!(&rest.bytes[..], b"body");

    // The connection carries on: another stream works.
    let (mut send, _recv) = pair.client.open_bi().await.expect("open");
    write_frame(&mut send, b"next").await.expect("write");
    send.finish().expect("finish");
    let (_reply, mut recv) = within("accept", pair.server.accept_bi())
        .await
        .expect("accept");
    let next = within("read", read_frame(&mut recv, 1024)).await;
    assert_eq!(next.expect("read").as_deref(), Some(&b"next"[..]));
}

#[tokio::test]
async fn a_stream_ending_inside_a_frame_is_truncated() {
    let pair = connect().await;
    for (bytes, buffered) in [(&[0u8, 0, 0, 10, 1, 2, 3][..], 7), (&[0u8, 0][..], 2)] {
        let (mut send, _recv) = pair.client.open_bi().await.expect("open");
        send.write_all(bytes).await.expect("write");
        send.finish().expect("finish");
        let (_reply, mut recv) = within("accept", pair.server.accept_bi())
            .await
            .expect("accept");
        let result = within("read", read_frame(&mut recv, 1024)).await;
        assert!(
            matches!(
                result,
                Err(StreamError::Frame(FrameError::Truncated { buffered: b })) if b == buffered
            ),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn an_oversized_payload_is_refused_before_anything_is_sent() {
    let pair = connect().await;
    let (mut send, _recv) = pair.client.open_bi().await.expect("open");
    let result = write_frame(&mut send, &vec![0u8; MAX_FRAME_BYTES + 1]).await;
    assert!(
        matches!(result, Err(StreamError::Frame(FrameError::TooLarge { .. }))),
        "{result:?}"
    );
    // Nothing of it went out: the first thing the peer reads is the next frame.
    write_frame(&mut send, b"small").await.expect("write");
    send.finish().expect("finish");
    let (_reply, mut recv) = within("accept", pair.server.accept_bi())
        .await
        .expect("accept");
    let frame = within("read", read_frame(&mut recv, 1024)).await;
    assert_eq!(frame.expect("read").as_deref(), Some(&b"small"[..]));
}

#[tokio::test]
async fn a_lost_connection_is_a_read_error() {
    let pair = connect().await;
    let (mut send, mut recv) = pair.client.open_bi().await.expect("open");
    write_frame(&mut send, b"hello").await.expect("write");
    within("accept", pair.server.accept_bi())
        .await
        .expect("accept");
    pair.server.close(0u32.into(), b"bye");
    let result = within("read", read_frame(&mut recv, 1024)).await;
    assert!(matches!(result, Err(StreamError::Read(_))), "{result:?}");
    let text = result.expect_err("lost").to_string();
    assert!(text.contains("connection lost"), "{text}");
}

#[tokio::test]
async fn datagrams_are_on_and_streams_are_bounded() {
    let pair = connect().await;
    // Datagrams (for SWIM) flow both ways.
    assert!(pair.client.max_datagram_size().is_some());
    assert!(pair.server.max_datagram_size().is_some());
    pair.client
        .send_datagram(b"swim".to_vec().into())
        .expect("send datagram");
    let datagram = within("datagram", pair.server.read_datagram()).await;
    assert_eq!(&datagram.expect("datagram")[..], b"swim");

    // A peer may hold MAX_CONCURRENT_STREAMS bidirectional streams, and no more.
    let mut open = Vec::new();
    for _ in 0..MAX_CONCURRENT_STREAMS {
        open.push(within("open", pair.client.open_bi()).await.expect("open"));
    }
    tokio::select! {
        biased;
        _ = pair.client.open_bi() => panic!("a stream over the limit opened"),
        () = std::future::ready(()) => {}
    }
    // Unidirectional streams are not part of the protocol: no credit at all.
    tokio::select! {
        biased;
        _ = pair.client.open_uni() => panic!("a unidirectional stream opened"),
        () = std::future::ready(()) => {}
    }
    drop(open);
}

/// A node endpoint restarted on the same address with the same reset key resets the
/// connections of its previous life at the first packet they send: the peer sees
/// `ConnectionError::Reset` at once, instead of `TimedOut` after the 30 s idle timeout. (Before
/// the endpoint kept its connection-id key across lives, the new endpoint dropped those packets
/// unanswered and this test timed out.)
#[tokio::test]
async fn a_restarted_node_endpoint_resets_its_previous_lifes_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reset_key = [0x5e; 32];
    let insecure = ClientTls::Insecure { identity: None };
    let server_tls = || {
        let (identity, _) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
        ServerTls::SelfSigned(identity)
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    // The first life runs its QUIC drivers on a runtime of its own, so it can die without a
    // word (no CONNECTION_CLOSE), as under kill -9, by shutting that runtime down.
    let first_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("the first life's runtime");
    let first_life = {
        let _inside = first_runtime.enter();
        bind_node_endpoint(loopback, &server_tls(), &insecure, reset_key).expect("first life")
    };
    let addr = first_life.local_addr().expect("addr");
    let client_endpoint = bind_endpoint(loopback, None, &insecure).expect("client endpoint");
    // quinn spawns a connection's driver on the runtime that accepts it: accept there too.
    let accepting = first_life.clone();
    let accept = first_runtime.spawn(async move {
        let connection = accepting
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("server handshake");
        let (mut send, _recv) = connection.accept_bi().await.expect("accept");
        write_frame(&mut send, b"hello").await.expect("write");
        let _ = send.finish();
        connection
    });
    let accept = async { accept.await.expect("the accepting task") };
    let dial = async {
        let connection = client_endpoint
            .connect(addr, SERVER_NAME)
            .expect("connect")
            .await
            .expect("client handshake");
        let (mut send, mut recv) = connection.open_bi().await.expect("open");
        write_frame(&mut send, b"hi").await.expect("write");
        let frame = read_frame(&mut recv, 1024).await.expect("read");
        assert_eq!(frame.as_deref(), Some(&b"hello"[..]));
        connection
    };
    let (old_server_side, client) = within("handshake", async { tokio::join!(accept, dial) }).await;

    // Stop the first life's drivers for good before its handles go: dropped while a driver
    // still ran, the last handle would make it send CONNECTION_CLOSE.
    tokio::task::spawn_blocking(move || first_runtime.shutdown_timeout(DEADLINE))
        .await
        .expect("shut the first life's runtime down");
    drop((old_server_side, first_life));
    let second_life = within("the address to be free", async {
        loop {
            match bind_node_endpoint(addr, &server_tls(), &insecure, reset_key) {
                Ok(endpoint) => break endpoint,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;

    // The client's next packet on the old connection reaches the second life.
    let (mut send, _recv) = client.open_bi().await.expect("open");
    write_frame(&mut send, b"anyone?").await.expect("write");
    let closed = within("the old connection to be reset", client.closed()).await;
    assert!(
        matches!(closed, quinn::ConnectionError::Reset),
        "the second life resets the first life's connection: {closed:?}"
    );
    drop(second_life);
}
