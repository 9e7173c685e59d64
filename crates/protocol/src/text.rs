//! Character classes that decide what a name may hold and what a client must
//! not show raw: the server's name rule and the clients' display use this
//! one definition.

/// Unicode general category Cf ("format"): characters with no glyph of their
/// own that change how the text around them is shown, such as zero-width
/// spaces and joiners (U+200B–U+200D), the bidirectional marks, embeddings,
/// overrides and isolates (U+200E, U+200F, U+202A–U+202E, U+2066–U+2069),
/// the word joiner (U+2060), the byte order mark (U+FEFF), the soft hyphen
/// and the tag characters. The table is that of Unicode 15.1.
pub fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// The line and paragraph separators (categories Zl and Zp), which some
/// programs break lines at.
pub fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// The bidirectional formatting characters: they reorder the text after
/// them, on some terminals up to the end of the line.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{61C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether `c` may not appear in a name: a control character (Cc), a format
/// character (Cf) or a line or paragraph separator (Zl, Zp). Each is either
/// interpreted by terminals or invisible, so a name holding one could pass
/// for another name or disturb what is shown around it.
pub fn is_forbidden_in_name(c: char) -> bool {
    c.is_control() || is_format(c) || is_line_separator(c)
}

/// At most `max_chars` characters of `s`: how much of a client's own text
/// an error message quotes back.
pub fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_characters_that_allow_impersonation_are_known() {
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
            '\u{FEFF}',
            '\u{2060}',
            '\u{AD}',
            '\u{E0041}',
        ] {
            assert!(is_format(c), "{:04X}", c as u32);
            assert!(is_forbidden_in_name(c), "{:04X}", c as u32);
        }
        // Every bidirectional control is a format character.
        for c in '\0'..=char::MAX {
            if is_bidi_control(c) {
                assert!(is_format(c), "{:04X}", c as u32);
            }
        }
    }

    #[test]
    fn letters_spaces_and_emoji_are_not_forbidden() {
        for c in "aZ0 é李ж🦀_-.'\u{FE0F}\u{301}".chars() {
            assert!(!is_forbidden_in_name(c), "{:04X}", c as u32);
        }
        for c in [
            '\0', '\n', '\u{1B}', '\u{7F}', '\u{85}', '\u{9B}', '\u{2028}', '\u{2029}',
        ] {
            assert!(is_forbidden_in_name(c), "{:04X}", c as u32);
        }
    }
}
