//! Entries of the cluster's log and owners of names, as plain types: what
//! the scripts write, read back without a network.

use std::sync::Arc;

use anteroom_protocol::LeftReason;

use crate::conn::handle::ConnId;

/// Who holds a name: a connection on a node. Written by the scripts as
/// `node|conn|flags|name`; the name comes last, so it may hold `|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: Arc<str>,
    pub conn: ConnId,
    /// The connection was granted `whisper`.
    pub whisper: bool,
    /// The name as the client chose it.
    pub name: Arc<str>,
}

impl Owner {
    /// The form stored in Redis.
    pub fn encode(node: &str, conn: ConnId, whisper: bool, name: &str) -> String {
        let flags = if whisper { "w" } else { "" };
        format!("{node}|{conn}|{flags}|{name}")
    }

    pub fn parse(raw: &str) -> Option<Owner> {
        let mut parts = raw.splitn(4, '|');
        let node = parts.next()?;
        let conn = parts.next()?.parse().ok()?;
        let flags = parts.next()?;
        let name = parts.next()?;
        Some(Owner {
            node: node.into(),
            conn,
            whisper: flags.contains('w'),
            name: name.into(),
        })
    }
}

/// The key a name is held under across the cluster: names are unique
/// case-insensitively, as on one node.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// One entry of the log (or of a node's inbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A client took a seat, directly or from the queue.
    Joined { owner: Owner, from_queue: bool },
    /// A member left.
    Left { owner: Owner, reason: LeftReason },
    /// A member said something; `id` is the message id.
    Message {
        owner: Owner,
        text: Arc<str>,
        ts: u64,
        id: u64,
    },
    /// A direct message for `to`, a member of the reading node.
    Whisper {
        from: Arc<str>,
        to: Owner,
        text: Arc<str>,
        ts: u64,
    },
}

/// An entry that does not read as one: written by a newer or broken node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable cluster log entry (field `{0}`)")]
pub struct Unreadable(pub &'static str);

/// The reason as the wire spells it; an unknown one reads as
/// `disconnected`.
pub fn reason(raw: &str) -> LeftReason {
    [
        LeftReason::Bye,
        LeftReason::Disconnected,
        LeftReason::IdleTimeout,
        LeftReason::SlowConsumer,
        LeftReason::ProtocolError,
        LeftReason::Shutdown,
    ]
    .into_iter()
    .find(|r| r.as_str() == raw)
    .unwrap_or(LeftReason::Disconnected)
}

impl Entry {
    /// Reads an entry from its fields; `seq` is the log's sequence number
    /// (absent in inboxes).
    pub fn parse(
        field: impl Fn(&str) -> Option<String>,
    ) -> Result<(Option<u64>, Entry), Unreadable> {
        let need = |name: &'static str| field(name).ok_or(Unreadable(name));
        let number = |name: &'static str| -> Result<u64, Unreadable> {
            need(name)?.parse().map_err(|_| Unreadable(name))
        };
        let owner = || Owner::parse(&need("o")?).ok_or(Unreadable("o"));
        let seq = field("s").and_then(|s| s.parse().ok());
        let entry = match need("k")?.as_str() {
            "j" => Entry::Joined {
                owner: owner()?,
                from_queue: need("q")? == "1",
            },
            "l" => Entry::Left {
                owner: owner()?,
                reason: reason(&need("r")?),
            },
            "m" => Entry::Message {
                owner: owner()?,
                text: need("t")?.into(),
                ts: number("ts")?,
                id: number("i")?,
            },
            "w" => Entry::Whisper {
                from: need("f")?.into(),
                to: owner()?,
                text: need("t")?.into(),
                ts: number("ts")?,
            },
            _ => return Err(Unreadable("k")),
        };
        Ok((seq, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(fields: &[(&str, &str)]) -> Result<(Option<u64>, Entry), Unreadable> {
        let map: HashMap<&str, &str> = fields.iter().copied().collect();
        Entry::parse(|k| map.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn owners_round_trip_with_bars_in_the_name() {
        let raw = Owner::encode("node-1", 42, true, "a|b");
        let owner = Owner::parse(&raw).unwrap();
        assert_eq!(&*owner.node, "node-1");
        assert_eq!(owner.conn, 42);
        assert!(owner.whisper);
        assert_eq!(&*owner.name, "a|b");
        assert!(
            !Owner::parse(&Owner::encode("n", 1, false, "x"))
                .unwrap()
                .whisper
        );
        assert_eq!(Owner::parse("n|notanumber||x"), None);
        assert_eq!(Owner::parse("n|1"), None);
    }

    #[test]
    fn entries_read_back() {
        let o = Owner::encode("a", 7, false, "Ann");
        let (seq, e) = parse(&[("s", "3"), ("k", "j"), ("o", &o), ("q", "1")]).unwrap();
        assert_eq!(seq, Some(3));
        assert!(matches!(e, Entry::Joined { from_queue: true, ref owner } if owner.conn == 7));
        let (_, e) = parse(&[("s", "4"), ("k", "l"), ("o", &o), ("r", "idle_timeout")]).unwrap();
        assert_eq!(
            e,
            Entry::Left {
                owner: Owner::parse(&o).unwrap(),
                reason: LeftReason::IdleTimeout
            }
        );
        let (_, e) = parse(&[
            ("s", "5"),
            ("k", "m"),
            ("o", &o),
            ("t", "hi"),
            ("ts", "10"),
            ("i", "99"),
        ])
        .unwrap();
        assert!(matches!(e, Entry::Message { id: 99, ts: 10, .. }));
        let (seq, e) = parse(&[
            ("k", "w"),
            ("f", "Bob"),
            ("o", &o),
            ("t", "psst"),
            ("ts", "1"),
        ])
        .unwrap();
        assert_eq!(seq, None);
        assert!(matches!(e, Entry::Whisper { ref from, .. } if &**from == "Bob"));
    }

    #[test]
    fn broken_entries_are_refused_not_guessed() {
        assert_eq!(parse(&[("k", "x")]), Err(Unreadable("k")));
        assert_eq!(parse(&[("k", "j"), ("q", "0")]), Err(Unreadable("o")));
        let o = Owner::encode("a", 7, false, "Ann");
        assert_eq!(
            parse(&[
                ("k", "m"),
                ("o", &o),
                ("t", "x"),
                ("ts", "later"),
                ("i", "1")
            ]),
            Err(Unreadable("ts"))
        );
        assert_eq!(reason("something new"), LeftReason::Disconnected);
    }
}
