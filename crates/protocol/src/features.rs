//! Version 1.1 features: what a client asks for in `hello` and the server
//! grants in `welcome` and the first `queued`.
//!
//! A set of features is a small bit set, so a connection carries its grant
//! in one byte and a check on the hot path is one `and`.

/// One feature a client can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The chat log: `history` after `welcome`, and the `history` request.
    History,
    /// Direct messages between members.
    Whisper,
    /// File transfer through the web listener.
    Files,
    /// A dropped connection keeps its seat or queue place for a while.
    Resume,
    /// An estimated wait in `queued`.
    Eta,
    /// `presence` frames instead of `joined` and `left`.
    PresenceBatch,
    /// A warning before being cut off as a slow consumer.
    Lagging,
}

impl Feature {
    /// Every feature, in the order the contract lists them.
    pub const ALL: [Feature; 7] = [
        Feature::History,
        Feature::Whisper,
        Feature::Files,
        Feature::Resume,
        Feature::Eta,
        Feature::PresenceBatch,
        Feature::Lagging,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::History => "history",
            Feature::Whisper => "whisper",
            Feature::Files => "files",
            Feature::Resume => "resume",
            Feature::Eta => "eta",
            Feature::PresenceBatch => "presence_batch",
            Feature::Lagging => "lagging",
        }
    }

    /// The feature with this wire spelling, if it is one this version knows.
    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u8);

impl Features {
    /// No feature: a version-1 client.
    pub const NONE: Features = Features(0);

    /// The known features among `names`; unknown names are ignored, as the
    /// contract asks, so a newer client can talk to this server.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Features {
        names
            .into_iter()
            .filter_map(Feature::parse)
            .fold(Features::NONE, Features::with)
    }

    /// This set with `feature` added.
    pub fn with(self, feature: Feature) -> Features {
        Features(self.0 | feature.bit())
    }

    /// Whether `feature` is in the set.
    pub fn has(self, feature: Feature) -> bool {
        self.0 & feature.bit() != 0
    }

    /// The features in both sets.
    pub fn intersect(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The features in the set, in the contract's order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.has(*f))
    }

    /// The wire spellings, as `welcome.features` lists them.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Feature::as_str).collect()
    }
}

impl FromIterator<Feature> for Features {
    fn from_iter<I: IntoIterator<Item = Feature>>(iter: I) -> Self {
        iter.into_iter().fold(Features::NONE, Features::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_ignored() {
        let set = Features::from_names(["whisper", "telepathy", "history", "history"]);
        assert_eq!(set.names(), ["history", "whisper"]);
        assert!(set.has(Feature::History) && !set.has(Feature::Files));
        for f in Feature::ALL {
            assert_eq!(Feature::parse(f.as_str()), Some(f));
        }
        let all: Features = Feature::ALL.into_iter().collect();
        assert_eq!(all.names().len(), 7);
        assert_eq!(
            all.intersect(Features::NONE.with(Feature::Eta)).names(),
            ["eta"]
        );
        assert!(Features::from_names([]).is_empty());
    }
}
