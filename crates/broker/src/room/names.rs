//! User names: the validity rule and the registry of names held by connected
//! clients (in the room or in the queue).
//!
//! The registry is a `DashMap` because every session claims and releases
//! names concurrently, and a claim must be atomic: two clients saying `hello`
//! with the same name at the same instant must not both get it.

use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::conn::handle::ConnId;

/// Longest name, in Unicode scalar values, after trimming.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must be 1 to 32 characters after trimming white space")]
    Length,
    #[error("name must not contain control characters")]
    Control,
    #[error("name is already in use")]
    Taken,
}

/// Trims `raw` and checks it against the naming rule; returns the stored form.
pub fn validate(raw: &str) -> Result<&str, NameError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(NameError::Length);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(name)
}

/// Names held by connected clients, compared case-insensitively.
#[derive(Debug, Default)]
pub struct Names {
    held: DashMap<String, ConnId>,
}

impl Names {
    pub fn new() -> Self {
        Self::default()
    }

    /// Claims `name` for `owner`; the claim lasts until the returned guard drops.
    pub fn claim(self: &Arc<Self>, name: &str, owner: ConnId) -> Result<NameClaim, NameError> {
        let key = name.to_lowercase();
        match self.held.entry(key.clone()) {
            Entry::Occupied(_) => Err(NameError::Taken),
            Entry::Vacant(slot) => {
                slot.insert(owner);
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

impl Drop for NameClaim {
    fn drop(&mut self) {
        self.names
            .held
            .remove_if(&self.key, |_, owner| *owner == self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn claims_are_case_insensitive_and_released_on_drop() {
        let names = Arc::new(Names::new());
        let claim = names.claim("Ünïcode", 1).unwrap();
        assert_eq!(names.claim("üNÏCODE", 2).unwrap_err(), NameError::Taken);
        drop(claim);
        assert!(names.claim("üNÏCODE", 2).is_ok());
    }
}
