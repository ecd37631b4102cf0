//! Framing: every message on a QUIC stream is a 4-byte big-endian length, then that many bytes.
//!
//! [`FrameDecoder`] is sans-IO: feed it whatever bytes arrived and take complete frames out. It
//! refuses a declared length over its limit before buffering the body, so a peer cannot make us
//! allocate more than `max_frame + 4` bytes per stream, whatever it sends.

use crate::error::FrameError;

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// The hard ceiling on a frame's payload: 16 MiB. A node's `--max-value-bytes` must leave room
/// for the envelope under this.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The bound on a client request's first frame, its header (cluster id, request id, token):
/// read before the token is checked, so it is all an unauthenticated caller can make a node
/// buffer per stream.
pub const MAX_HEADER_BYTES: usize = 4 * 1024;

/// Prefixes `payload` with its length.
pub fn encode_frame(payload: &[u8], max_frame: usize) -> Result<Vec<u8>, FrameError> {
    if payload.len() > max_frame {
        return Err(FrameError::TooLarge {
            size: payload.len(),
            limit: max_frame,
        });
    }
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        size: payload.len(),
        limit: max_frame,
    })?;
    let mut out = Vec::with_capacity(LENGTH_PREFIX + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    buffer: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max_frame` bytes (capped at [`MAX_FRAME_BYTES`]).
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            max_frame: max_frame.min(MAX_FRAME_BYTES),
            buffer: Vec::new(),
        }
    }

    /// Appends bytes that arrived. Fails (and keeps failing) once the stream declared a frame
    /// over the limit; the caller answers with an error frame and closes the stream.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.buffer.extend_from_slice(bytes);
        self.check_declared_length()
    }

    /// Takes the next complete frame's payload, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(len) = self.declared_length()? else {
            return Ok(None);
        };
        if self.buffer.len() < LENGTH_PREFIX + len {
            return Ok(None);
        }
        let payload = self.buffer[LENGTH_PREFIX..LENGTH_PREFIX + len].to_vec();
        self.buffer.drain(..LENGTH_PREFIX + len);
        Ok(Some(payload))
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// How many more bytes the decoder wants before it can return the next frame: the rest of
    /// the prefix, or the rest of the body. Lets a reader size its reads without over-reading.
    pub fn wanted(&self) -> usize {
        match self.declared_length() {
            Ok(Some(len)) => (LENGTH_PREFIX + len).saturating_sub(self.buffer.len()),
            Ok(None) => LENGTH_PREFIX - self.buffer.len(),
            Err(_) => 0,
        }
    }

    fn declared_length(&self) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buffer.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let mut len = [0u8; LENGTH_PREFIX];
        len.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                size: len,
                limit: self.max_frame,
            });
        }
        Ok(Some(len))
    }

    fn check_declared_length(&self) -> Result<(), FrameError> {
        self.declared_length().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_across_arbitrary_splits() {
        let a = encode_frame(b"hello", 1024).expect("fits");
        let b = encode_frame(b"", 1024).expect("fits");
        let c = encode_frame(&[7u8; 300], 1024).expect("fits");
        let stream: Vec<u8> = [a, b, c].concat();
        for split in 1..stream.len() {
            let mut d = FrameDecoder::new(1024);
            let mut frames = Vec::new();
            for chunk in stream.chunks(split) {
                d.push(chunk).expect("within limit");
                while let Some(f) = d.next_frame().expect("valid") {
                    frames.push(f);
                }
            }
            assert_eq!(frames, vec![b"hello".to_vec(), Vec::new(), vec![7u8; 300]]);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversized_declared_length_is_refused_before_buffering_the_body() {
        let mut d = FrameDecoder::new(100);
        let err = d.push(&1000u32.to_be_bytes()).expect_err("over limit");
        assert!(matches!(
            err,
            FrameError::TooLarge {
                size: 1000,
                limit: 100
            }
        ));
        assert!(encode_frame(&[0u8; 101], 100).is_err());
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder and never make it hold more than one frame
        /// plus a prefix.
        #[test]
        fn arbitrary_bytes_are_bounded(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..64)) {
            let limit = 128;
            let mut d = FrameDecoder::new(limit);
            for chunk in chunks {
                if d.push(&chunk).is_err() {
                    break;
                }
                while let Ok(Some(frame)) = d.next_frame() {
                    prop_assert!(frame.len() <= limit);
                }
                prop_assert!(d.buffered() <= limit + LENGTH_PREFIX + 64);
            }
        }
    }
}
