//! The wire protocols as the fan-out's lean subscriber reads them.
//!
//! Every broker's member runs the same reader loop over raw bytes (see
//! [`super::members`]); what differs is only where a frame ends and where
//! its payload is, which each parser below finds with as little work as its
//! protocol allows. Equal, minimal client work per delivery is the point:
//! with a full client library per broker the load generator would spend a
//! different amount of CPU per delivery on each, and a ratio between brokers
//! would partly measure the clients.
//!
//! A parser looks at the unread bytes and returns the first complete frame
//! and its length, `None` if more bytes are needed, or an error when the
//! bytes cannot be this protocol or announce a frame beyond [`MAX_FRAME`]:
//! nothing from the network makes it panic or buffer without bound.

use std::fmt;
use std::io::Write;

/// Longest payload a member accepts; a longer one is a protocol error and
/// the member disconnects. The bench sends a few hundred bytes.
pub(super) const MAX_FRAME: usize = 1 << 20;

/// Longest control line (a RESP header, a NATS `MSG` or `INFO` line).
pub(super) const MAX_LINE: usize = 64 * 1024;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    /// A 4-byte big-endian length, then a MessagePack map.
    Anteroom,
    /// Redis RESP2, as a subscribed connection receives it.
    Resp,
    /// NATS core's text protocol.
    Nats,
    /// Anteroom over WebSocket: unmasked server frames, each binary
    /// message one MessagePack map.
    Ws,
}

/// One frame, as much of it as the reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    /// A published message: its payload, to be timed.
    Message(&'a [u8]),
    /// The subscription is in place (Redis' `subscribe` reply, NATS' `PONG`
    /// to the `PING` sent after `SUB`): the member counts as ready.
    Ready,
    /// The server's greeting (NATS `INFO`); the first one is answered with
    /// `CONNECT`.
    Greeting,
    /// The server's keep-alive (NATS `PING`), owed a `PONG`.
    Ping,
    /// Anteroom's `ping` map (over WebSocket), owed a `pong` map echoing
    /// its `id`: the map, for the reader to answer.
    MapPing(&'a [u8]),
    /// The server closed the WebSocket: the reader ends.
    Closed,
    /// Anything else (anteroom's `joined`, `left`, `welcome`; Redis integer
    /// replies; NATS `+OK`, `-ERR`): skipped.
    Other,
}

/// Why a connection's bytes cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// A frame or line beyond [`MAX_FRAME`] or [`MAX_LINE`].
    TooLong,
    /// Bytes that are not this protocol.
    Malformed(&'static str),
    /// The server answered with an error (Redis `-ERR ...`).
    Refused(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLong => write!(f, "frame longer than {MAX_FRAME} bytes"),
            WireError::Malformed(what) => write!(f, "malformed frame: {what}"),
            WireError::Refused(text) => write!(f, "server error: {text}"),
        }
    }
}

impl std::error::Error for WireError {}

/// A complete frame and the bytes it took, `None` if incomplete.
pub(super) type Parsed<'a> = Result<Option<(Frame<'a>, usize)>, WireError>;

impl Wire {
    /// Reads the first frame at the head of `buf`.
    pub(super) fn parse(self, buf: &[u8]) -> Parsed<'_> {
        match self {
            Wire::Anteroom => anteroom(buf),
            Wire::Resp => resp(buf),
            Wire::Nats => nats(buf),
            Wire::Ws => ws(buf),
        }
    }

    /// What a member sends once connected, before anything is read: Redis'
    /// `SUBSCRIBE` (NATS waits for the server's `INFO`; an anteroom member
    /// has joined already).
    pub(super) fn subscribe_first(self) -> &'static [u8] {
        match self {
            Wire::Resp => b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nroom\r\n",
            Wire::Anteroom | Wire::Nats | Wire::Ws => b"",
        }
    }

    /// What a member answers to the server's greeting: NATS' `CONNECT`
    /// (no `+OK` per command), `SUB` and a `PING` whose `PONG` says the
    /// subscription is in place.
    pub(super) fn subscribe_on_greeting(self) -> &'static [u8] {
        match self {
            Wire::Nats => {
                b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB room 1\r\nPING\r\n"
            }
            Wire::Anteroom | Wire::Resp | Wire::Ws => b"",
        }
    }
}

/// The `CONNECT` of a NATS publisher: no `+OK` per `PUB`, and a `PING`
/// whose `PONG` says the server has read it.
pub(super) const NATS_PUBLISHER_CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n";

/// NATS' answer to the server's `PING`.
pub(super) const NATS_PONG: &[u8] = b"PONG\r\n";

/// Appends a Redis `PUBLISH room <payload>` command to `out`.
pub(super) fn resp_publish(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$");
    let _ = write!(out, "{}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends a NATS `PUB room <len>` with its payload to `out`.
pub(super) fn nats_publish(out: &mut Vec<u8>, payload: &[u8]) {
    let _ = write!(out, "PUB room {}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

// --- anteroom -------------------------------------------------------------

fn anteroom(buf: &[u8]) -> Parsed<'_> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLong);
    }
    let Some(payload) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    // The framing is intact whatever the payload holds: a payload that is
    // not a message is skipped, not an error.
    let frame = message_text(payload).map_or(Frame::Other, Frame::Message);
    Ok(Some((frame, 4 + len)))
}

/// The `text` of a `{"type": "message", ...}` map; `None` for any other
/// payload. Walks the map's pairs, skipping scalar values, and gives up at
/// the first `type` that is not `message` (the server writes `type` first,
/// so `joined`, `left` and the rest cost one key).
fn message_text(payload: &[u8]) -> Option<&[u8]> {
    let mut r = Pack(payload);
    let pairs = r.map_len()?;
    let (mut is_message, mut text) = (false, None);
    for _ in 0..pairs {
        match r.str()? {
            b"type" => {
                if r.str()? != b"message" {
                    return None;
                }
                is_message = true;
            }
            b"text" => text = Some(r.str()?),
            _ => r.skip_scalar()?,
        }
        if is_message && text.is_some() {
            return text;
        }
    }
    None
}

/// Whether a map is anteroom's `{"type": "ping", ...}` (the server writes
/// `type` first).
fn is_ping(payload: &[u8]) -> bool {
    let mut r = Pack(payload);
    r.map_len().is_some() && r.str() == Some(b"type") && r.str() == Some(b"ping")
}

/// A cursor over MessagePack bytes, reading only what [`message_text`] needs.
struct Pack<'a>(&'a [u8]);

impl<'a> Pack<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Option<usize> {
        let bytes = self.take(n)?;
        Some(bytes.iter().fold(0usize, |v, &b| (v << 8) | usize::from(b)))
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            s @ 0xa0..=0xbf => usize::from(s & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(len)
    }

    /// Skips nil, booleans, numbers, strings and binaries; `None` for
    /// anything else (a message frame holds nothing else).
    fn skip_scalar(&mut self) -> Option<()> {
        let skip = match self.byte()? {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            s @ 0xa0..=0xbf => usize::from(s & 0x1f),
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xca | 0xce | 0xd2 => 4,
            0xcb | 0xcf | 0xd3 => 8,
            0xc4 | 0xd9 => self.be(1)?,
            0xc5 | 0xda => self.be(2)?,
            0xc6 | 0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(skip).map(|_| ())
    }
}

// --- anteroom over WebSocket ---------------------------------------------

/// A server WebSocket frame, as much of it as a client needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsFrame<'a> {
    /// A complete binary message: one MessagePack map.
    Binary(&'a [u8]),
    /// A ping or pong control frame (the server's WebSocket layer answers
    /// pings itself and sends none of its own): skipped.
    Control,
    /// A close frame: the session is over.
    Close,
}

/// The first server frame at the head of `buf` and the bytes it took:
/// FIN and opcode, then the mask bit (never set by a server) and a length
/// of 7 bits, or 126 and 16 bits, or 127 and 64 bits, then the payload.
/// A fragmented or text message, a masked frame, reserved bits (no
/// extension is negotiated) or an unknown opcode is malformed.
pub(crate) fn ws_frame(buf: &[u8]) -> Result<Option<(WsFrame<'_>, usize)>, WireError> {
    let Some(&[first, second]) = buf.get(..2) else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(WireError::Malformed("WebSocket frame with reserved bits"));
    }
    if second & 0x80 != 0 {
        return Err(WireError::Malformed(
            "masked WebSocket frame from the server",
        ));
    }
    let fin = first & 0x80 != 0;
    let opcode = first & 0x0f;
    let (len, head) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(&[a, b, c, d, e, f, g, h]) => (u64::from_be_bytes([a, b, c, d, e, f, g, h]), 10),
            _ => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let frame = match opcode {
        0x2 if fin => WsFrame::Binary(&[]),
        0x8..=0xa if !fin || len > 125 => {
            return Err(WireError::Malformed("bad WebSocket control frame"));
        }
        0x8 => WsFrame::Close,
        0x9 | 0xa => WsFrame::Control,
        0x0..=0x2 => {
            return Err(WireError::Malformed("fragmented or text WebSocket message"));
        }
        _ => return Err(WireError::Malformed("unknown WebSocket opcode")),
    };
    if len > MAX_FRAME as u64 {
        return Err(WireError::TooLong);
    }
    let end = head + len as usize;
    let Some(payload) = buf.get(head..end) else {
        return Ok(None);
    };
    let frame = match frame {
        WsFrame::Binary(_) => WsFrame::Binary(payload),
        other => other,
    };
    Ok(Some((frame, end)))
}

fn ws(buf: &[u8]) -> Parsed<'_> {
    Ok(ws_frame(buf)?.map(|(frame, took)| {
        let frame = match frame {
            // As over TCP, a map that is not a message is skipped.
            WsFrame::Binary(payload) => match message_text(payload) {
                Some(text) => Frame::Message(text),
                None if is_ping(payload) => Frame::MapPing(payload),
                None => Frame::Other,
            },
            WsFrame::Control => Frame::Other,
            WsFrame::Close => Frame::Closed,
        };
        (frame, took)
    }))
}

// --- shared by the text protocols ----------------------------------------

/// The line at the head of `buf` without its CRLF, and the bytes it took
/// with it; `None` while incomplete.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => match buf[..end].strip_suffix(b"\r") {
            Some(line) => Ok(Some((line, end + 1))),
            None => Err(WireError::Malformed("line without CR")),
        },
        None if buf.len() >= MAX_LINE => Err(WireError::TooLong),
        None => Ok(None),
    }
}

/// A non-negative decimal, as lengths are written; `None` for anything else.
fn decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    digits.iter().try_fold(0usize, |v, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        v.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

/// The `len` payload bytes after a header of `head` bytes, followed by CRLF;
/// with the total taken.
fn payload_after(buf: &[u8], head: usize, len: usize) -> Result<Option<(&[u8], usize)>, WireError> {
    if len > MAX_FRAME {
        return Err(WireError::TooLong);
    }
    let end = head + len;
    match buf.get(end..end + 2) {
        None => Ok(None),
        Some(b"\r\n") => Ok(Some((&buf[head..end], end + 2))),
        Some(_) => Err(WireError::Malformed("payload not followed by CRLF")),
    }
}

// --- Redis RESP2 ----------------------------------------------------------

/// Most elements in an array a subscriber is sent (`pmessage` has 4).
const RESP_MAX_ELEMENTS: usize = 8;

fn resp(buf: &[u8]) -> Parsed<'_> {
    let Some((head, mut at)) = line(buf)? else {
        return Ok(None);
    };
    let (kind, rest) = head
        .split_first()
        .ok_or(WireError::Malformed("empty RESP line"))?;
    match kind {
        b'*' => {}
        b'+' | b':' => return Ok(Some((Frame::Other, at))),
        b'-' => {
            return Err(WireError::Refused(
                String::from_utf8_lossy(rest).into_owned(),
            ));
        }
        _ => return Err(WireError::Malformed("not a RESP2 reply")),
    }
    let count = decimal(rest).ok_or(WireError::Malformed("bad RESP array length"))?;
    if count > RESP_MAX_ELEMENTS {
        return Err(WireError::Malformed("RESP array too long for a subscriber"));
    }
    // Each element is a bulk string or an integer; the first is the kind
    // of push, the last a message's payload.
    let (mut first, mut last): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    for i in 0..count {
        let Some((element, took)) = line(&buf[at..])? else {
            return Ok(None);
        };
        let value = match element.split_first() {
            Some((b'$', len)) => {
                let len = decimal(len).ok_or(WireError::Malformed("bad RESP bulk length"))?;
                match payload_after(buf, at + took, len)? {
                    Some((value, end)) => {
                        at = end;
                        value
                    }
                    None => return Ok(None),
                }
            }
            Some((b':', _)) => {
                at += took;
                element
            }
            _ => return Err(WireError::Malformed("unexpected RESP array element")),
        };
        if i == 0 {
            first = Some(value);
        }
        last = Some(value);
    }
    let frame = match (count, first) {
        (3, Some(b"message")) => Frame::Message(last.unwrap_or_default()),
        (3, Some(b"subscribe")) => Frame::Ready,
        _ => Frame::Other,
    };
    Ok(Some((frame, at)))
}

// --- NATS -----------------------------------------------------------------

fn nats(buf: &[u8]) -> Parsed<'_> {
    let Some((head, took)) = line(buf)? else {
        return Ok(None);
    };
    let mut words = head
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty());
    let op = words.next().unwrap_or_default();
    let is = |name: &[u8]| op.eq_ignore_ascii_case(name);
    if is(b"MSG") || is(b"HMSG") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
        // Counted and the last kept, without collecting: this runs once per
        // delivery.
        let (count, last) = words.fold((0, &b""[..]), |(n, _), word| (n + 1, word));
        let range = if is(b"MSG") { 3..=4 } else { 4..=5 };
        if !range.contains(&count) {
            return Err(WireError::Malformed("bad NATS MSG line"));
        }
        let len = decimal(last).ok_or(WireError::Malformed("bad NATS payload length"))?;
        return Ok(payload_after(buf, took, len)?.map(|(payload, end)| {
            // A member never asks for headers; a message with them is
            // skipped rather than timed with its headers in front.
            let frame = if is(b"MSG") {
                Frame::Message(payload)
            } else {
                Frame::Other
            };
            (frame, end)
        }));
    }
    let frame = if is(b"PING") {
        Frame::Ping
    } else if is(b"PONG") {
        Frame::Ready
    } else if is(b"INFO") {
        Frame::Greeting
    } else if is(b"+OK") || is(b"-ERR") {
        Frame::Other
    } else {
        return Err(WireError::Malformed("unknown NATS operation"));
    };
    Ok(Some((frame, took)))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
