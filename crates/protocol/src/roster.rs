//! A room's names encoded once, for `welcome` frames.
//!
//! Every `welcome` lists the whole room, so a join storm of N members sends
//! N rosters of up to N names. Encoding each name again for every welcome
//! made that quadratic in encoding work; [`EncodedNames`] keeps the names
//! encoded back to back as they join, and a `welcome` copies them in one
//! piece around a few fields encoded by hand (checked against the derived
//! encoding in the tests).

use bytes::Bytes;

use super::server::ServerMessage;

/// The room's names, in join order, as the elements of a MessagePack array.
#[derive(Debug, Default, Clone)]
pub struct EncodedNames {
    bytes: Vec<u8>,
    count: u32,
}

impl EncodedNames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a name: the newest member.
    pub fn push(&mut self, name: &str) {
        // Writing to a `Vec` cannot fail.
        let _ = rmp::encode::write_str(&mut self.bytes, name);
        self.count += 1;
    }

    /// Forgets every name, keeping the buffer: a departure from the middle
    /// of the room means encoding them again.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }

    /// Names held.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encodes `welcome` as a complete frame whose `users` are these names.
    /// The `users` of `welcome` itself are ignored; any other message is
    /// encoded as it is.
    pub fn welcome_frame(&self, welcome: &ServerMessage<'_>) -> Bytes {
        let ServerMessage::Welcome {
            name,
            users: _,
            capacity,
            text,
            features,
            upload_token,
            max_upload_bytes,
            resume,
            resumed,
            resume_grace_s,
        } = welcome
        else {
            return welcome.to_frame();
        };
        let fields = 5
            + u32::from(features.is_some())
            + u32::from(upload_token.is_some())
            + u32::from(max_upload_bytes.is_some())
            + u32::from(resume.is_some())
            + u32::from(resumed.is_some())
            + u32::from(resume_grace_s.is_some());
        let mut out = Vec::with_capacity(self.bytes.len() + 160 + name.len());
        out.extend_from_slice(&[0; 4]);
        // Writes to a `Vec` cannot fail: the results are ignored.
        let w = &mut out;
        let _ = rmp::encode::write_map_len(w, fields);
        let _ = rmp::encode::write_str(w, "type");
        let _ = rmp::encode::write_str(w, "welcome");
        let _ = rmp::encode::write_str(w, "name");
        let _ = rmp::encode::write_str(w, name);
        let _ = rmp::encode::write_str(w, "users");
        let _ = rmp::encode::write_array_len(w, self.count);
        w.extend_from_slice(&self.bytes);
        let _ = rmp::encode::write_str(w, "capacity");
        let _ = rmp::encode::write_uint(w, *capacity);
        let _ = rmp::encode::write_str(w, "text");
        let _ = rmp::encode::write_str(w, text);
        if let Some(features) = features {
            let _ = rmp::encode::write_str(w, "features");
            let _ = rmp::encode::write_array_len(w, features.len() as u32);
            for feature in features {
                let _ = rmp::encode::write_str(w, feature);
            }
        }
        if let Some(token) = upload_token {
            let _ = rmp::encode::write_str(w, "upload_token");
            let _ = rmp::encode::write_str(w, token);
        }
        if let Some(max) = max_upload_bytes {
            let _ = rmp::encode::write_str(w, "max_upload_bytes");
            let _ = rmp::encode::write_uint(w, *max);
        }
        if let Some(token) = resume {
            let _ = rmp::encode::write_str(w, "resume");
            let _ = rmp::encode::write_str(w, token);
        }
        if let Some(resumed) = resumed {
            let _ = rmp::encode::write_str(w, "resumed");
            let _ = rmp::encode::write_bool(w, *resumed);
        }
        if let Some(grace) = resume_grace_s {
            let _ = rmp::encode::write_str(w, "resume_grace_s");
            let _ = rmp::encode::write_uint(w, *grace);
        }
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;

    fn welcome<'a>(
        users: Vec<Cow<'a, str>>,
        options: (bool, bool, bool, bool, Option<bool>, bool),
    ) -> ServerMessage<'a> {
        let (features, upload, max, resume, resumed, grace) = options;
        ServerMessage::Welcome {
            name: "ann".into(),
            users,
            capacity: 100_000,
            text: crate::server::WELCOME_DIRECT.into(),
            features: features.then(|| vec!["history".into(), "presence_batch".into()]),
            upload_token: upload.then(|| "tok".into()),
            max_upload_bytes: max.then_some(1 << 33),
            resume: resume.then(|| "r3sume".into()),
            resumed,
            resume_grace_s: grace.then_some(30),
        }
    }

    proptest! {
        #[test]
        fn matches_the_derived_encoding(
            names in proptest::collection::vec("[a-zé_0-9]{1,40}", 0..300),
            options in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<Option<bool>>(), any::<bool>()),
        ) {
            let mut encoded = EncodedNames::new();
            for name in &names {
                encoded.push(name);
            }
            let users = names.iter().map(|n| Cow::Borrowed(n.as_str())).collect();
            prop_assert_eq!(
                encoded.welcome_frame(&welcome(Vec::new(), options)),
                welcome(users, options).to_frame()
            );
        }
    }

    #[test]
    fn other_messages_are_encoded_as_they_are() {
        let pong = ServerMessage::Pong { id: None };
        assert_eq!(EncodedNames::new().welcome_frame(&pong), pong.to_frame());
    }

    #[test]
    fn clear_forgets_the_names() {
        let mut encoded = EncodedNames::new();
        encoded.push("ann");
        encoded.clear();
        encoded.push("bob");
        let users = vec![Cow::Borrowed("bob")];
        let options = (false, false, false, false, None, false);
        assert_eq!(
            encoded.welcome_frame(&welcome(Vec::new(), options)),
            welcome(users, options).to_frame()
        );
    }
}
