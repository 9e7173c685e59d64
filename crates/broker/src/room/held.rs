//! Held places: the seats and queue places of dropped `resume` clients,
//! under their tokens, until they are taken back or the grace ends.
//!
//! The session of a dropped connection puts its place here (with its name
//! claim, so the name stays taken) before it tells admission. A `hello`
//! with the token takes it out; admission takes it out when the grace ends.
//! Whoever takes it first owns it, so a place is either resumed or
//! released, never both, and a token works once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::conn::handle::ConnId;
use crate::room::names::NameClaim;

/// One held place.
#[derive(Debug)]
pub struct HeldPlace {
    /// The connection that dropped.
    pub id: ConnId,
    /// Its name, as stored.
    pub name: Arc<str>,
    /// Keeps the name taken while the place is held.
    pub claim: Option<NameClaim>,
    /// The last `message` written to the old connection.
    pub written_id: u64,
}

/// The held places by token.
#[derive(Debug, Default)]
pub struct HeldPlaces {
    by_token: Mutex<HashMap<Box<str>, HeldPlace>>,
}

impl HeldPlaces {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, HeldPlace>> {
        // Every critical section is one map operation.
        self.by_token.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `place` under `token`.
    pub fn hold(&self, token: &str, place: HeldPlace) {
        self.lock().insert(token.into(), place);
    }

    /// A resuming `hello`: the place held under `token`, if its name is
    /// `name` (compared like names are). A wrong name leaves it held.
    pub fn take(&self, token: &str, name: &str) -> Option<HeldPlace> {
        let mut places = self.lock();
        let place = places.get(token)?;
        if place.name.to_lowercase() != name.to_lowercase() {
            return None;
        }
        places.remove(token)
    }

    /// The grace ended: the place under `token`, unless a `hello` took it.
    pub fn release(&self, token: &str) -> Option<HeldPlace> {
        self.lock().remove(token)
    }

    /// Places held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no place is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(id: ConnId, name: &str) -> HeldPlace {
        HeldPlace {
            id,
            name: name.into(),
            claim: None,
            written_id: 0,
        }
    }

    #[test]
    fn a_token_works_once_and_for_its_name_only() {
        let held = HeldPlaces::new();
        held.hold("t", place(1, "Ann"));
        assert!(held.take("t", "bob").is_none());
        assert!(held.take("x", "ann").is_none());
        assert_eq!(held.take("t", "aNN").map(|p| p.id), Some(1));
        assert!(held.take("t", "ann").is_none());
        assert!(held.release("t").is_none());
    }

    #[test]
    fn release_and_take_exclude_each_other() {
        let held = HeldPlaces::new();
        held.hold("t", place(1, "ann"));
        assert!(held.release("t").is_some());
        assert!(held.take("t", "ann").is_none());
        assert!(held.is_empty());
    }
}
