//! The server's inbound frame decoder, fed arbitrary bytes in arbitrary chunks.
//!
//! Input: one byte picking the frame limit, one byte seeding how the stream
//! is cut into reads, then the stream itself. The decoder must agree with a
//! plain reading of the framing rule whatever the cut, and never hand out a
//! frame longer than the limit.

#![no_main]

use anteroom_protocol::{FrameDecoder, FrameError};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// The limits tried: tiny ones reach the oversize path with short inputs,
/// the last is the server's default.
const LIMITS: [usize; 8] = [0, 1, 2, 5, 16, 64, 1024, 65_536];

#[derive(Debug, PartialEq, Eq)]
enum Failure {
    TooLarge,
    /// The stream ended in the middle of a frame.
    Truncated,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    failure: Option<Failure>,
}

/// Decodes `stream` as a connection would, one read per chunk.
fn decode(stream: &[u8], limit: usize, chunks: impl Iterator<Item = usize>) -> Outcome {
    let mut codec = FrameDecoder::new(limit);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut chunks = chunks;
    let fail = |error: FrameError, at_eof: bool| match error {
        FrameError::TooLarge { limit: l } => {
            assert_eq!(l, limit);
            Failure::TooLarge
        }
        FrameError::Io(error) => {
            // Only the end of the stream is a transport error here.
            assert!(
                at_eof,
                "decode failed mid-stream with a non-length error: {error}"
            );
            Failure::Truncated
        }
    };
    while !rest.is_empty() {
        let n = chunks.next().unwrap_or(rest.len()).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= limit, "{} > {limit}", frame.len());
                    frames.push(frame.to_vec());
                }
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        frames,
                        failure: Some(fail(error, false)),
                    };
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => {
                assert!(frame.len() <= limit, "{} > {limit}", frame.len());
                frames.push(frame.to_vec());
            }
            Ok(None) => {
                return Outcome {
                    frames,
                    failure: None,
                };
            }
            Err(error) => {
                return Outcome {
                    frames,
                    failure: Some(fail(error, true)),
                };
            }
        }
    }
}

/// The framing rule read plainly: a 4-byte big-endian length, then the payload.
fn reference(mut stream: &[u8], limit: usize) -> Outcome {
    let mut frames = Vec::new();
    loop {
        if stream.is_empty() {
            return Outcome {
                frames,
                failure: None,
            };
        }
        if stream.len() < 4 {
            return Outcome {
                frames,
                failure: Some(Failure::Truncated),
            };
        }
        let len = u32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;
        if len > limit {
            return Outcome {
                frames,
                failure: Some(Failure::TooLarge),
            };
        }
        if stream.len() - 4 < len {
            return Outcome {
                frames,
                failure: Some(Failure::Truncated),
            };
        }
        frames.push(stream[4..4 + len].to_vec());
        stream = &stream[4 + len..];
    }
}

/// Read sizes from 0 to 15 bytes, drawn from a small generator.
fn cuts(seed: u8) -> impl Iterator<Item = usize> {
    let mut x = u32::from(seed) | 0x100;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        Some((x % 16) as usize)
    })
}

fuzz_target!(|data: &[u8]| {
    let [pick, seed, stream @ ..] = data else {
        return;
    };
    let limit = LIMITS[usize::from(*pick) % LIMITS.len()];
    let whole = decode(stream, limit, std::iter::empty());
    let bytewise = decode(stream, limit, std::iter::repeat(1));
    let cut = decode(stream, limit, cuts(*seed));
    assert_eq!(whole, reference(stream, limit));
    assert_eq!(whole, bytewise);
    assert_eq!(whole, cut);
});
