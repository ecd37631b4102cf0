//! foca's wire items (headers and members) as bincode 2, and the datagram envelope.
//!
//! A SWIM datagram is `b"CFGS"`, the membership protocol version (u16, big-endian), the
//! cluster id (u8 length + bytes), then foca's payload. Anything else is dropped before foca
//! sees it, so a stranger or another cluster cannot inject members.

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member};

use super::peer::Peer;

/// Opens every SWIM datagram.
const MAGIC: [u8; 4] = *b"CFGS";
/// The membership wire version.
const VERSION: u16 = 1;

/// foca's codec: bincode 2 with the standard configuration, bounded decoding.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BincodeCodec;

/// Why an item did not encode or decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("encode: {0}")]
    Encode(String),
    #[error("decode: {0}")]
    Decode(String),
    #[error("not enough room in the packet")]
    NoRoom,
}

const LIMIT: usize = 64 * 1024;

fn encode<T: serde::Serialize>(item: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
    let bytes = bincode::serde::encode_to_vec(item, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if buf.remaining_mut() < bytes.len() {
        return Err(CodecError::NoRoom);
    }
    buf.put_slice(&bytes);
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (item, used) = bincode::serde::decode_from_slice(buf.chunk(), config)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    buf.advance(used);
    Ok(item)
}

impl Codec<Peer> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<Peer>, buf: impl BufMut) -> Result<(), CodecError> {
        encode(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<Peer>, CodecError> {
        decode(buf)
    }

    fn encode_member(&mut self, member: &Member<Peer>, buf: impl BufMut) -> Result<(), CodecError> {
        encode(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<Peer>, CodecError> {
        decode(buf)
    }
}

/// Wraps a foca payload for the wire.
pub(crate) fn seal(cluster_id: &str, payload: &[u8]) -> Vec<u8> {
    let id = cluster_id.as_bytes();
    let id_len = u8::try_from(id.len()).unwrap_or(u8::MAX);
    let mut out = Vec::with_capacity(7 + id.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.push(id_len);
    out.extend_from_slice(&id[..usize::from(id_len)]);
    out.extend_from_slice(payload);
    out
}

/// The foca payload of a datagram from our cluster, or `None` for anything else.
pub(crate) fn open<'a>(cluster_id: &str, datagram: &'a [u8]) -> Option<&'a [u8]> {
    let rest = datagram.strip_prefix(&MAGIC)?;
    let (version, rest) = rest.split_first_chunk::<2>()?;
    if u16::from_be_bytes(*version) != VERSION {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (id, payload) = rest.split_at_checked(usize::from(len))?;
    (id == cluster_id.as_bytes()).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_of_other_clusters_versions_or_protocols_are_dropped() {
        let sealed = seal("prod", b"swim");
        assert_eq!(open("prod", &sealed), Some(&b"swim"[..]));
        assert_eq!(open("test", &sealed), None);
        let mut other_version = sealed.clone();
        other_version[5] = 9;
        assert_eq!(open("prod", &other_version), None);
        assert_eq!(open("prod", b"garbage"), None);
        assert_eq!(open("prod", b""), None);
        assert_eq!(open("prod", &sealed[..7]), None);
    }

    #[test]
    fn members_round_trip_and_garbage_fails_cleanly() {
        let addr = "127.0.0.1:1".parse().expect("addr");
        let member = Member::alive(Peer {
            id: "n1".into(),
            quic: addr,
            http: addr,
            generation: 2,
        });
        let mut buf = Vec::new();
        BincodeCodec
            .encode_member(&member, &mut buf)
            .expect("encode");
        let back = BincodeCodec.decode_member(&buf[..]).expect("decode");
        assert_eq!(back, member);
        assert!(BincodeCodec.decode_member(&[0xff, 0xff, 0xff][..]).is_err());
    }

    /// A real SWIM packet (an announce from `a` to `b`), sealed for cluster `prod`.
    fn real_packet() -> Vec<u8> {
        use rand::SeedableRng;
        let addr = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let peer = |id: &str, port| Peer {
            id: id.into(),
            quic: addr(port),
            http: addr(port),
            generation: 1,
        };
        let mut a = foca::Foca::new(
            peer("a", 1),
            foca::Config::simple(),
            rand::rngs::StdRng::seed_from_u64(1),
            BincodeCodec,
        );
        let mut runtime = foca::AccumulatingRuntime::new();
        a.announce(peer("b", 2), &mut runtime).expect("announce");
        let (_, data) = runtime.to_send().expect("a packet");
        seal("prod", &data)
    }

    /// A fresh foca for member `b`, as a receiving node would have.
    fn fresh_foca() -> foca::Foca<Peer, BincodeCodec, rand::rngs::StdRng, foca::NoCustomBroadcast> {
        use rand::SeedableRng;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 2));
        let me = Peer {
            id: "b".into(),
            quic: addr,
            http: addr,
            generation: 1,
        };
        foca::Foca::new(
            me,
            foca::Config::simple(),
            rand::rngs::StdRng::seed_from_u64(2),
            BincodeCodec,
        )
    }

    /// Feeds a datagram to a fresh foca, as the membership task does (open, then handle_data).
    fn feed(datagram: &[u8]) {
        let mut b = fresh_foca();
        let mut runtime = foca::AccumulatingRuntime::new();
        if let Some(payload) = open("prod", datagram) {
            let _ = b.handle_data(payload, &mut runtime);
        }
    }

    #[test]
    fn a_real_packet_is_accepted() {
        let packet = real_packet();
        let mut b = fresh_foca();
        let mut runtime = foca::AccumulatingRuntime::new();
        let payload = open("prod", &packet).expect("ours");
        b.handle_data(payload, &mut runtime)
            .expect("a valid packet");
        assert_eq!(b.num_members(), 1, "the announcer is now a member");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, ..Default::default() })]

        /// Mutated real packets and random bytes never panic the datagram path.
        #[test]
        fn mutated_and_random_datagrams_never_panic(
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..8),
            cut in proptest::prelude::any::<usize>(),
            random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1200),
        ) {
            let mut packet = real_packet();
            let len = packet.len();
            for (i, b) in flips {
                packet[i % len] ^= b | 1;
            }
            packet.truncate(cut % (len + 1));
            feed(&packet);
            feed(&random);
            feed(&seal("prod", &random));
        }
    }
}
