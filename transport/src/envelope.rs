//! The versioned envelope around every message.
//!
//! A frame's payload is `b"CFGN"`, the protocol version as a big-endian `u16`, then a bincode 2
//! (serde, standard config) body. The magic and the version are read before the body, so a peer
//! speaking another protocol or version gets a precise error instead of a decoding failure.
//! Every body starts with the sender's cluster id, checked before anything else is trusted.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::DecodeError;

/// The four bytes that open every payload.
pub const MAGIC: [u8; 4] = *b"CFGN";

/// The protocol version this build speaks. Bumped on any incompatible change of a message;
/// a peer with another version is refused with `unsupported_version`.
pub const PROTOCOL_VERSION: u16 = 7;

const HEADER: usize = MAGIC.len() + 2;

/// Encodes `body` behind the magic and version.
pub fn encode_payload<T: Serialize>(body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    // Encoding into a Vec only fails for types serde cannot represent; ours are plain data.
    bincode::serde::encode_into_std_write(body, &mut out, bincode::config::standard())
        .expect("plain-data messages always encode into a Vec");
    out
}

/// Checks the magic and version, then decodes the body. Trailing bytes are refused: a payload
/// is exactly one message.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    if payload.len() < HEADER || payload[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let theirs = u16::from_be_bytes([payload[4], payload[5]]);
    if theirs != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            theirs,
            ours: PROTOCOL_VERSION,
        });
    }
    let config = bincode::config::standard().with_limit::<{ crate::frame::MAX_FRAME_BYTES }>();
    let (body, used) = bincode::serde::decode_from_slice(&payload[HEADER..], config)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != payload.len() - HEADER {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after the message",
            payload.len() - HEADER - used
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Probe {
        cluster: String,
        n: u64,
        bytes: Vec<u8>,
    }

    #[test]
    fn round_trip_and_header_checks() {
        let probe = Probe {
            cluster: "c".into(),
            n: 7,
            bytes: vec![1, 2],
        };
        let payload = encode_payload(&probe);
        assert_eq!(decode_payload::<Probe>(&payload), Ok(probe));

        let mut other_version = payload.clone();
        other_version[5] = 99;
        assert!(matches!(
            decode_payload::<Probe>(&other_version),
            Err(DecodeError::UnsupportedVersion {
                theirs: 99,
                ours: PROTOCOL_VERSION
            })
        ));
        assert_eq!(
            decode_payload::<Probe>(b"HTTP/1.1 200"),
            Err(DecodeError::BadMagic)
        );
        assert_eq!(decode_payload::<Probe>(b""), Err(DecodeError::BadMagic));
        let mut trailing = payload.clone();
        trailing.push(0);
        assert!(matches!(
            decode_payload::<Probe>(&trailing),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn huge_declared_lengths_inside_the_body_do_not_allocate() {
        // A body claiming a 2^60-byte vector must fail cleanly, not abort on allocation.
        let mut payload = MAGIC.to_vec();
        payload.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        payload.extend_from_slice(&[
            0x00, 0x00, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f,
        ]);
        assert!(decode_payload::<Probe>(&payload).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut payload = MAGIC.to_vec();
            payload.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
            payload.extend_from_slice(&body);
            let _ = decode_payload::<Probe>(&payload);
        }
    }
}
