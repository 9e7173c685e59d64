//! Bounds on what decoding a frame may build, checked before decoding.
//!
//! A MessagePack payload is compact: an empty string is one byte, yet every
//! value becomes an allocation-sized object once decoded (serde buffers the
//! fields of a tagged map before it knows the variant, then builds a `Vec` of
//! owned strings). A 16 MiB server frame holding millions of empty strings
//! would decode into about a gigabyte. [`check`] walks the payload's structure
//! without allocating (its only state is a stack no deeper than the depth
//! limit) and refuses a frame with too many values or too deep a nesting, so
//! that decoding costs memory in proportion to what a legitimate frame needs.

/// Limits for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most MessagePack values in the frame, containers and their elements
    /// together (each map entry counts its key and its value).
    pub max_values: usize,
    /// Most containers nested inside each other (the top-level map is 1).
    pub max_depth: usize,
}

/// Limits for a frame from the server. The largest legitimate frame is a
/// `welcome` or `users` listing the room: one value per member plus a few,
/// so 200,000 values admit rooms far larger than one server holds, while a
/// hostile frame can make decoding build at most about 20 MB of values.
/// Server frames nest two levels (a map holding a list of names); the
/// depth limit leaves room for fields a newer server may add.
pub const SERVER_FRAME: Limits = Limits {
    max_values: 200_000,
    max_depth: 16,
};

/// Why a payload was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("frame holds more than {limit} values")]
    TooManyValues { limit: usize },
    #[error("frame nests deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("frame is not valid MessagePack: {0}")]
    Malformed(&'static str),
}

/// Checks the first MessagePack value of `payload` against `limits`.
/// Bytes after that value are not looked at.
pub fn check(payload: &[u8], limits: Limits) -> Result<(), ShapeError> {
    let mut input = Input(payload);
    let mut values = 0usize;
    // Elements still to read in each open container, innermost last.
    let mut open: Vec<u64> = Vec::new();
    loop {
        values += 1;
        if values > limits.max_values {
            return Err(ShapeError::TooManyValues {
                limit: limits.max_values,
            });
        }
        let elements = input.value()?;
        if elements > 0 {
            if open.len() >= limits.max_depth {
                return Err(ShapeError::TooDeep {
                    limit: limits.max_depth,
                });
            }
            // Refused from the header alone: a claimed count is never
            // walked, so a 4-billion-element header costs nothing.
            let room = (limits.max_values - values) as u64;
            if elements > room {
                return Err(ShapeError::TooManyValues {
                    limit: limits.max_values,
                });
            }
            open.push(elements);
            continue;
        }
        // A complete value: it completes its container when it is the last
        // element, and so on outwards.
        loop {
            let Some(left) = open.last_mut() else {
                return Ok(());
            };
            *left -= 1;
            if *left > 0 {
                break;
            }
            open.pop();
        }
    }
}

/// The unread rest of a payload.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ShapeError> {
        if self.0.len() < n {
            return Err(ShapeError::Malformed("the frame ends inside a value"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A big-endian length of `width` bytes.
    fn length(&mut self, width: usize) -> Result<u64, ShapeError> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    }

    fn skip_length(&mut self, width: usize, extra: usize) -> Result<(), ShapeError> {
        let n = self.length(width)?;
        let n = usize::try_from(n)
            .map_err(|_| ShapeError::Malformed("the frame ends inside a value"))?;
        self.take(n.saturating_add(extra))?;
        Ok(())
    }

    /// Reads one value's header and skips its scalar content; returns how
    /// many elements follow it (0 for scalars and empty containers).
    fn value(&mut self) -> Result<u64, ShapeError> {
        let marker = self.take(1)?[0];
        match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Ok(0),
            0x80..=0x8f => Ok(2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => Ok(u64::from(marker & 0x0f)),
            0xa0..=0xbf => self.take(usize::from(marker & 0x1f)).map(|_| 0),
            0xc1 => Err(ShapeError::Malformed("reserved marker 0xc1")),
            // bin 8/16/32 and str 8/16/32: a length, then the bytes.
            0xc4 | 0xd9 => self.skip_length(1, 0).map(|_| 0),
            0xc5 | 0xda => self.skip_length(2, 0).map(|_| 0),
            0xc6 | 0xdb => self.skip_length(4, 0).map(|_| 0),
            // ext 8/16/32: a length, a type byte, then the bytes.
            0xc7 => self.skip_length(1, 1).map(|_| 0),
            0xc8 => self.skip_length(2, 1).map(|_| 0),
            0xc9 => self.skip_length(4, 1).map(|_| 0),
            0xcc | 0xd0 => self.take(1).map(|_| 0),
            0xcd | 0xd1 => self.take(2).map(|_| 0),
            0xca | 0xce | 0xd2 => self.take(4).map(|_| 0),
            0xcb | 0xcf | 0xd3 => self.take(8).map(|_| 0),
            // fixext 1/2/4/8/16: a type byte, then the bytes.
            0xd4 => self.take(2).map(|_| 0),
            0xd5 => self.take(3).map(|_| 0),
            0xd6 => self.take(5).map(|_| 0),
            0xd7 => self.take(9).map(|_| 0),
            0xd8 => self.take(17).map(|_| 0),
            0xdc => self.length(2),
            0xdd => self.length(4),
            0xde => Ok(2 * self.length(2)?),
            0xdf => Ok(2 * self.length(4)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    const SMALL: Limits = Limits {
        max_values: 10,
        max_depth: 3,
    };

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn counts_every_value_of_every_kind() {
        let scalars = vec![
            Value::Nil,
            Value::from(true),
            Value::from(-3),
            Value::from(200u8),
            Value::from(70_000u32),
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::F32(1.5),
            Value::F64(2.5),
            Value::from("x".repeat(40)),
            Value::from("y".repeat(300)),
            Value::Binary(vec![1; 70_000]),
            Value::Ext(1, vec![0; 4]),
            Value::Ext(2, vec![0; 3]),
            Value::Ext(3, vec![0; 300]),
        ];
        let n = scalars.len();
        let payload = encode(&Value::Array(scalars));
        let exact = Limits {
            max_values: n + 1,
            max_depth: 1,
        };
        assert_eq!(check(&payload, exact), Ok(()));
        assert!(
            check(
                &payload,
                Limits {
                    max_values: n,
                    ..exact
                }
            )
            .is_err()
        );
    }

    #[test]
    fn map_entries_count_key_and_value() {
        let map = Value::Map(vec![("a".into(), 1.into()), ("b".into(), 2.into())]);
        let payload = encode(&map);
        let limits = |max_values| Limits {
            max_values,
            max_depth: 1,
        };
        assert_eq!(check(&payload, limits(5)), Ok(()));
        assert_eq!(
            check(&payload, limits(4)),
            Err(ShapeError::TooManyValues { limit: 4 })
        );
    }

    #[test]
    fn depth_is_limited() {
        let mut v = Value::from(1);
        for _ in 0..3 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(check(&encode(&v), SMALL), Ok(()));
        let v = Value::Array(vec![v]);
        assert_eq!(
            check(&encode(&v), SMALL),
            Err(ShapeError::TooDeep { limit: 3 })
        );
        // Empty containers do not open a level.
        let v = Value::Array(vec![Value::Array(vec![]); 2]);
        assert_eq!(check(&encode(&v), SMALL), Ok(()));
    }

    #[test]
    fn a_huge_claimed_count_is_refused_from_its_header() {
        // array 32 claiming 4 billion elements, none present.
        assert_eq!(
            check(&[0xdd, 0xff, 0xff, 0xff, 0xff], SERVER_FRAME),
            Err(ShapeError::TooManyValues { limit: 200_000 })
        );
        // map 32: twice as many values as entries, no overflow.
        assert!(check(&[0xdf, 0xff, 0xff, 0xff, 0xff], SERVER_FRAME).is_err());
    }

    #[test]
    fn truncated_and_reserved_input_is_malformed() {
        for payload in [
            &[][..],
            &[0xc1],
            &[0x92, 0x01],
            &[0xa3, b'a'],
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            &[0xcf, 0, 0],
        ] {
            assert!(
                matches!(check(payload, SERVER_FRAME), Err(ShapeError::Malformed(_))),
                "{payload:?}"
            );
        }
    }

    #[test]
    fn only_the_first_value_is_checked() {
        assert_eq!(check(&[0x01, 0xc1, 0xc1], SMALL), Ok(()));
    }
}
