//! The node's QUIC front end against raw streams: garbage, oversized frames, another protocol
//! version, another cluster and a missing token each get an error frame on their own stream,
//! and never disturb other streams or connections.

use std::time::Duration;

use cfgnode_node::Node;
use cfgnode_tests::{node_token, start_single_node};
use cfgnode_transport::{
    ClientTls, ConfigRequest, MAGIC, MAX_HEADER_BYTES, PROTOCOL_VERSION, Request, RequestHeader,
    Response, ResponseEnvelope, SERVER_NAME, bind_endpoint, decode_payload, encode_frame,
    encode_payload, encode_request, read_frame,
};
use quinn::Connection;

async fn start() -> (tempfile::TempDir, Node, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_single_node(dir.path(), |_| {}).await;
    let token = node_token(&node);
    (dir, node, token)
}

async fn connect(node: &Node) -> Connection {
    let client = bind_endpoint(
        "127.0.0.1:0".parse().expect("addr"),
        None,
        &ClientTls::Insecure { identity: None },
    )
    .expect("client endpoint");
    client
        .connect(node.quic_addr(), SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake")
}

/// Sends raw bytes on a new stream and decodes the node's answer.
async fn raw(connection: &Connection, bytes: &[u8]) -> ResponseEnvelope {
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(bytes).await.expect("write");
    send.finish().expect("finish");
    let frame = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv, 1 << 24))
        .await
        .expect("answer in time")
        .expect("readable")
        .expect("an answer frame");
    decode_payload(&frame).expect("the answer is a valid envelope")
}

fn header(token: &str, cluster: &str) -> RequestHeader {
    RequestHeader {
        cluster_id: cluster.to_string(),
        request_id: 7,
        token: Some(token.to_string()),
        follow_redirects: false,
    }
}

fn request(token: &str, cluster: &str, request: Request) -> Vec<u8> {
    encode_request(&header(token, cluster), &request).expect("frames")
}

fn code(answer: &ResponseEnvelope) -> &str {
    match &answer.result {
        Err(e) => &e.code,
        Ok(r) => panic!("expected an error, got {r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_on_its_own_stream() {
    let (_dir, node, token) = start().await;
    let connection = connect(&node).await;

    // A long-lived good stream opened first must survive everything below.
    let (mut held_send, mut held_recv) = connection.open_bi().await.expect("stream");

    let garbage = raw(
        &connection,
        &encode_frame(b"GET / HTTP/1.1\r\n\r\n", 1024).expect("frame"),
    )
    .await;
    assert_eq!(code(&garbage), "malformed");
    assert_eq!(garbage.request_id, 0);

    let oversized = raw(&connection, &(64u32 << 20).to_be_bytes()).await;
    assert_eq!(code(&oversized), "frame_too_large");

    let mut other_version = MAGIC.to_vec();
    other_version.extend_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    other_version.extend_from_slice(b"future body");
    let version = raw(
        &connection,
        &encode_frame(&other_version, 1024).expect("frame"),
    )
    .await;
    assert_eq!(code(&version), "unsupported_version");

    let mut bad_body = MAGIC.to_vec();
    bad_body.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    bad_body.extend_from_slice(&[0xff; 40]);
    let body = raw(&connection, &encode_frame(&bad_body, 1024).expect("frame")).await;
    assert_eq!(code(&body), "malformed");

    let truncated = raw(&connection, &[0, 0, 0, 50, 1, 2, 3]).await;
    assert_eq!(code(&truncated), "malformed");

    let cluster = raw(
        &connection,
        &request(&token, "another-cluster", Request::Ping),
    )
    .await;
    assert_eq!(code(&cluster), "wrong_cluster");

    let unauthenticated = raw(&connection, &request("wrong", "cfgnode", Request::Ping)).await;
    assert_eq!(code(&unauthenticated), "unauthenticated");
    assert_eq!(
        unauthenticated.request_id, 7,
        "a decoded request's id is echoed"
    );

    let put = Request::Config(ConfigRequest::Put {
        namespace: "q".into(),
        key: "k".into(),
        value: b"{nope".to_vec(),
        codec: "json".into(),
        mode: Default::default(),
        if_version: None,
    });
    let invalid = raw(&connection, &request(&token, "cfgnode", put)).await;
    assert_eq!(code(&invalid), "codec_mismatch");

    // The held stream, and the connection, still work.
    let ping = request(&token, "cfgnode", Request::Ping);
    held_send.write_all(&ping).await.expect("write");
    held_send.finish().expect("finish");
    let frame = read_frame(&mut held_recv, 1 << 20)
        .await
        .expect("read")
        .expect("frame");
    let answer: ResponseEnvelope = decode_payload(&frame).expect("envelope");
    assert_eq!(answer.result, Ok(Response::Pong));
    assert_eq!(answer.node_id, node.node_id());
    let good = raw(&connection, &request(&token, "cfgnode", Request::Ping)).await;
    assert_eq!(good.result, Ok(Response::Pong));

    // The rejected write changed nothing.
    let get = Request::Config(ConfigRequest::Get {
        namespace: "q".into(),
        key: "k".into(),
    });
    assert_eq!(
        code(&raw(&connection, &request(&token, "cfgnode", get)).await),
        "key_not_found"
    );
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_finishes_its_request_does_not_block_others() {
    let (_dir, node, token) = start().await;
    let slow = connect(&node).await;
    // Declares 100 bytes, sends 3, and then sits there.
    let (mut send, _recv) = slow.open_bi().await.expect("stream");
    send.write_all(&[0, 0, 0, 100, 1, 2, 3])
        .await
        .expect("write");

    let other = connect(&node).await;
    let answer = raw(&other, &request(&token, "cfgnode", Request::Ping)).await;
    assert_eq!(answer.result, Ok(Response::Pong));
    let same_connection = raw(&slow, &request(&token, "cfgnode", Request::Ping)).await;
    assert_eq!(same_connection.result, Ok(Response::Pong));
    drop(send);
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_big_is_read_before_the_token_is_checked() {
    let (_dir, node, token) = start().await;
    let connection = connect(&node).await;

    // A header over the small pre-authentication bound is refused from its length prefix.
    let big_header = vec![0u8; MAX_HEADER_BYTES + 1];
    let answer = raw(
        &connection,
        &encode_frame(&big_header, 1 << 24).expect("frame"),
    )
    .await;
    assert_eq!(code(&answer), "frame_too_large");

    // A wrong token is answered before the (here, 8 MiB) request frame is read: the node
    // answers at once, and the stream's body is never buffered.
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    let head = encode_frame(&encode_payload(&header("wrong", "cfgnode")), 4096).expect("frame");
    send.write_all(&head).await.expect("write");
    // The node may already have refused the header and stopped the stream (that is the point):
    // then this write is refused with `Stopped`, which is no failure.
    match send.write_all(&(8u32 << 20).to_be_bytes()).await {
        Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
        Err(e) => panic!("write: {e:?}"),
    }
    let frame = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv, 1 << 20))
        .await
        .expect("answered without the body")
        .expect("readable")
        .expect("frame");
    let answer: ResponseEnvelope = decode_payload(&frame).expect("envelope");
    assert_eq!(code(&answer), "unauthenticated");
    drop(send);

    // The frame that used to overflow the stack: a request nested in 50 000 forwards (the
    // encoding of the old recursive `Forward { hops, request: Box<Request> }`, variant 23).
    // `Request` is not recursive any more, so it is just a malformed request.
    let mut nested = MAGIC.to_vec();
    nested.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    for _ in 0..50_000 {
        nested.extend_from_slice(&[23, 1]);
    }
    nested.push(0);
    let mut bytes = encode_frame(&encode_payload(&header(&token, "cfgnode")), 4096).expect("frame");
    bytes.extend(encode_frame(&nested, 1 << 24).expect("frame"));
    let answer = raw(&connection, &bytes).await;
    assert_eq!(code(&answer), "malformed");

    // The node keeps serving.
    let good = raw(&connection, &request(&token, "cfgnode", Request::Ping)).await;
    assert_eq!(good.result, Ok(Response::Pong));
    node.shutdown().await.expect("shutdown");
}
