//! Property tests over random and mutated input for every decoder a peer reaches before it is
//! authenticated: the frame decoder, the client request header and request, and the peer
//! handshake's hello and welcome (and, after it, the peer envelope). Each must return an error
//! or a value, never panic, and never allocate beyond its bound.
//!
//! A mutation starts from a valid encoding (so the decoders are driven deep, past the magic and
//! version) and flips, inserts, deletes or overwrites bytes, or declares huge lengths.

use cfgnode_transport::{
    ConfigRequest, FrameDecoder, MAX_HEADER_BYTES, MAX_HELLO_BYTES, PeerClaim, PeerEnvelope,
    PeerHello, PeerRequest, PeerWelcome, PushRequest, Request, RequestHeader, WireWatchRequest,
    WireWriteMode, decode_payload, encode_payload,
};
use proptest::prelude::*;

/// Valid payloads of every pre-authentication message, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let claim = PeerClaim {
        cluster_id: "cfgnode".into(),
        node_id: "n1".into(),
        generation: 7,
    };
    vec![
        encode_payload(&RequestHeader {
            cluster_id: "cfgnode".into(),
            request_id: 9,
            token: Some("t".repeat(64)),
            follow_redirects: true,
        }),
        encode_payload(&Request::Config(ConfigRequest::Put {
            namespace: "app".into(),
            key: "db/url".into(),
            value: vec![1, 2, 3],
            codec: "json".into(),
            mode: WireWriteMode::Create,
            if_version: Some(3),
        })),
        encode_payload(&Request::Push(PushRequest::Watch(WireWatchRequest {
            namespaces: vec![("a".into(), Some(4)), ("b".into(), None)],
            prefixes: vec!["x/".into()],
            progress_ms: 10,
        }))),
        encode_payload(&PeerHello {
            claim: claim.clone(),
            proof: [7; 32],
        }),
        encode_payload(&PeerWelcome {
            claim,
            proof: [9; 32],
        }),
        encode_payload(&PeerEnvelope {
            request_id: 1,
            request: PeerRequest::Forward {
                hops: 1,
                principal: "admin".into(),
                request: Request::Config(ConfigRequest::Get {
                    namespace: "a".into(),
                    key: "b".into(),
                }),
            },
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    /// Overwrite with the bytes of a huge varint length (bincode's `0xfd` + u64).
    HugeLength(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::HugeLength),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(i, b) => {
                if let Some(byte) = bytes.get_mut(i % len) {
                    *byte ^= b | 1;
                }
            }
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::Delete(i) => {
                if !bytes.is_empty() {
                    bytes.remove(i % len);
                }
            }
            Mutation::HugeLength(i) => {
                let at = i % (bytes.len() + 1);
                let huge = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
                bytes.splice(at..at, huge);
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

/// Runs every pre-authentication decoder over `payload` (each must not panic).
fn decode_all(payload: &[u8]) {
    let _ = decode_payload::<RequestHeader>(payload);
    let _ = decode_payload::<Request>(payload);
    let _ = decode_payload::<PeerHello>(payload);
    let _ = decode_payload::<PeerWelcome>(payload);
    let _ = decode_payload::<PeerEnvelope>(payload);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_messages_never_panic_a_decoder(
        seed in 0usize..6,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let payload = mutate(seeds()[seed].clone(), &mutations);
        decode_all(&payload);
    }

    #[test]
    fn random_bytes_never_panic_a_decoder(
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        // Behind a valid magic and version too, so the body decoders run.
        let mut payload = cfgnode_transport::MAGIC.to_vec();
        payload.extend_from_slice(&cfgnode_transport::PROTOCOL_VERSION.to_be_bytes());
        payload.extend_from_slice(&body);
        decode_all(&payload);
        decode_all(&body);
    }

    #[test]
    fn frames_before_authentication_stay_within_their_bounds(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2048), 0..16),
        bound in prop_oneof![Just(MAX_HEADER_BYTES), Just(MAX_HELLO_BYTES)],
    ) {
        let mut decoder = FrameDecoder::new(bound);
        for chunk in chunks {
            // A reader feeds at most what the decoder wants, as `read_frame` does.
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let take = decoder.wanted().max(1).min(rest.len());
                if decoder.push(&rest[..take]).is_err() {
                    return Ok(());
                }
                rest = &rest[take..];
                while let Ok(Some(frame)) = decoder.next_frame() {
                    prop_assert!(frame.len() <= bound);
                    decode_all(&frame);
                }
                prop_assert!(decoder.buffered() <= bound + cfgnode_transport::LENGTH_PREFIX);
            }
        }
    }
}

#[test]
fn every_seed_decodes_unmutated() {
    let seeds = seeds();
    assert!(decode_payload::<RequestHeader>(&seeds[0]).is_ok());
    assert!(decode_payload::<Request>(&seeds[1]).is_ok());
    assert!(decode_payload::<Request>(&seeds[2]).is_ok());
    assert!(decode_payload::<PeerHello>(&seeds[3]).is_ok());
    assert!(decode_payload::<PeerWelcome>(&seeds[4]).is_ok());
    assert!(decode_payload::<PeerEnvelope>(&seeds[5]).is_ok());
}
