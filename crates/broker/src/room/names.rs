//! User names: the validity rule and the registry of names held by connected
//! clients (in the room or in the queue).
//!
//! The registry is a `DashMap` because every session claims and releases
//! names concurrently, and a claim must be atomic: two clients saying `hello`
//! with the same name at the same instant must not both get it.

use std::sync::{Arc, Weak};

use anteroom_protocol::text;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::conn::handle::{ConnId, Peer};

/// Longest name, in Unicode scalar values, after trimming.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must be 1 to 32 characters after trimming white space")]
    Length,
    #[error("name must not contain control characters")]
    Control,
    #[error(
        "name must not contain invisible formatting characters (zero-width, bidirectional and the like) or line separators"
    )]
    Invisible,
    #[error("name is already in use")]
    Taken,
}

/// Trims `raw` and checks it against the naming rule; returns the stored form.
///
/// Beyond the contract's rule (1 to 32 characters, no control characters),
/// format characters (Unicode category Cf: zero-width characters,
/// bidirectional overrides and isolates, the byte order mark, ...) and line
/// and paragraph separators are refused too: they are invisible or reorder
/// what is shown around them, so `ann` followed by a zero-width space, or a
/// name reversed by an override, could pass for someone else.
pub fn validate(raw: &str) -> Result<&str, NameError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(NameError::Length);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if name.chars().any(text::is_forbidden_in_name) {
        return Err(NameError::Invisible);
    }
    Ok(name)
}

/// Names held by connected clients, compared case-insensitively.
#[derive(Debug, Default)]
pub struct Names {
    held: DashMap<String, Holder>,
}

/// Who holds a name: the connection, for whispers to find it.
#[derive(Debug)]
struct Holder {
    owner: ConnId,
    name: Arc<str>,
    peer: Weak<Peer>,
}

impl Names {
    pub fn new() -> Self {
        Self::default()
    }

    /// Claims `name` for `owner`; the claim lasts until the returned guard drops.
    pub fn claim(self: &Arc<Self>, name: &str, owner: ConnId) -> Result<NameClaim, NameError> {
        self.claim_with(name, owner, Weak::new())
    }

    /// Claims `name` for `peer`, which [`Names::holder`] then finds.
    pub fn claim_for(
        self: &Arc<Self>,
        name: &str,
        peer: &Arc<Peer>,
    ) -> Result<NameClaim, NameError> {
        self.claim_with(name, peer.id, Arc::downgrade(peer))
    }

    /// The connection holding `name` (matched like names are) and the
    /// name as it holds it.
    pub fn holder(&self, name: &str) -> Option<(Arc<str>, Arc<Peer>)> {
        let held = self.held.get(&name.trim().to_lowercase())?;
        Some((held.name.clone(), held.peer.upgrade()?))
    }

    fn claim_with(
        self: &Arc<Self>,
        name: &str,
        owner: ConnId,
        peer: Weak<Peer>,
    ) -> Result<NameClaim, NameError> {
        let key = name.to_lowercase();
        match self.held.entry(key.clone()) {
            Entry::Occupied(_) => Err(NameError::Taken),
            Entry::Vacant(slot) => {
                slot.insert(Holder {
                    owner,
                    name: name.into(),
                    peer,
                });
                Ok(NameClaim {
                    names: Arc::clone(self),
                    key,
                    owner,
                })
            }
        }
    }

    /// Names currently held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// A held name; releases it on drop.
#[derive(Debug)]
pub struct NameClaim {
    names: Arc<Names>,
    key: String,
    owner: ConnId,
}

impl NameClaim {
    /// The same claim, now held by `peer`: a resumed connection takes its
    /// name over without ever letting it go.
    pub fn hand_over(mut self, peer: &Arc<Peer>) -> NameClaim {
        if let Some(mut held) = self.names.held.get_mut(&self.key)
            && held.owner == self.owner
        {
            held.owner = peer.id;
            held.peer = Arc::downgrade(peer);
        }
        self.owner = peer.id;
        self
    }
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        self.names
            .held
            .remove_if(&self.key, |_, held| held.owner == self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation_trims_and_counts_scalar_values() {
        assert_eq!(validate("  ann \t"), Ok("ann"));
        assert_eq!(validate("   "), Err(NameError::Length));
        assert_eq!(validate(&"é".repeat(32)), Ok(&*"é".repeat(32)));
        assert_eq!(validate(&"é".repeat(33)), Err(NameError::Length));
        assert_eq!(
            validate("🦀".repeat(32).as_str()).map(|s| s.chars().count()),
            Ok(32)
        );
        assert_eq!(validate("a\u{7}b"), Err(NameError::Control));
        assert_eq!(validate("a\u{85}b"), Err(NameError::Control)); // C1
    }

    #[test]
    fn invisible_and_reordering_characters_are_refused() {
        for c in [
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{AD}',
            '\u{E0041}',
        ] {
            for name in [format!("ann{c}"), format!("{c}ann"), format!("a{c}nn")] {
                assert_eq!(validate(&name), Err(NameError::Invisible), "{name:?}");
            }
        }
        // Line and paragraph separators are white space: trimmed at the ends,
        // refused inside.
        for c in ['\u{2028}', '\u{2029}'] {
            assert_eq!(validate(&format!("ann{c}")), Ok("ann"));
            assert_eq!(validate(&format!("a{c}nn")), Err(NameError::Invisible));
        }
        // `ann` reversed on screen by a right-to-left override.
        assert_eq!(validate("\u{202E}nna"), Err(NameError::Invisible));
        // Every format character, anywhere in the name.
        for c in ('\0'..=char::MAX).filter(|c| text::is_format(*c)) {
            assert_eq!(validate(&format!("x{c}y")), Err(NameError::Invisible));
        }
    }

    #[test]
    fn letters_marks_and_emoji_of_every_script_stay_valid() {
        for name in [
            "Zoë",
            "李雷",
            "Фёдор",
            "🦀",
            "ann b",
            "e\u{301}",
            "❤\u{FE0F}",
            "o'neil-2",
        ] {
            assert_eq!(validate(name), Ok(name));
        }
    }

    fn forbidden() -> impl Strategy<Value = char> {
        prop_oneof![
            (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
            (0x7fu32..0xa0).prop_map(|c| char::from_u32(c).unwrap()),
            prop::sample::select(
                ('\0'..=char::MAX)
                    .filter(|c| text::is_format(*c) || text::is_line_separator(*c))
                    .collect::<Vec<_>>()
            ),
        ]
    }

    proptest! {
        /// Whatever the input, an accepted name keeps the rule.
        #[test]
        fn an_accepted_name_keeps_the_rule(raw in any::<String>()) {
            if let Ok(name) = validate(&raw) {
                prop_assert!((1..=MAX_NAME_CHARS).contains(&name.chars().count()));
                prop_assert_eq!(name, name.trim());
                prop_assert!(!name.chars().any(text::is_forbidden_in_name), "{:?}", name);
                prop_assert!(raw.contains(name));
                prop_assert_eq!(validate(name), Ok(name));
            }
        }

        /// One forbidden character anywhere in a valid name makes it invalid.
        #[test]
        fn one_forbidden_character_spoils_a_name(
            name in "[a-zA-Z0-9é李🦀]{1,20}",
            c in forbidden(),
            at in 0usize..=20,
        ) {
            prop_assert_eq!(validate(&name), Ok(name.as_str()));
            let mut spoiled: Vec<char> = name.chars().collect();
            let at = at.min(spoiled.len());
            spoiled.insert(at, c);
            let spoiled: String = spoiled.into_iter().collect();
            // At either end, white space among them is trimmed away instead.
            if !(c.is_whitespace() && (at == 0 || at == name.chars().count())) {
                prop_assert!(validate(&spoiled).is_err(), "{:?}", spoiled);
            }
        }
    }

    #[test]
    fn claims_are_case_insensitive_and_released_on_drop() {
        let names = Arc::new(Names::new());
        let claim = names.claim("Ünïcode", 1).unwrap();
        assert_eq!(names.claim("üNÏCODE", 2).unwrap_err(), NameError::Taken);
        drop(claim);
        assert!(names.claim("üNÏCODE", 2).is_ok());
    }
}
