//! Text from the server, shown harmlessly.
//!
//! Names and messages are written by other people (and frames by a server
//! that may be hostile). A terminal interprets control characters: an escape
//! sequence can recolour, move the cursor, retitle the window or rewrite what
//! is already on screen, and a newline starts what looks like another line,
//! so a member could print a forged `[12:00] <admin> ...`. Bidirectional
//! controls reorder what follows them on terminals that apply them. So every
//! such character is shown as a visible escape (`\n`, `\x1b`, `\u{202e}`)
//! and never handed to the terminal. An escape is plain printable ASCII, so
//! escaping twice changes nothing.

use std::borrow::Cow;
use std::fmt::Write;

use crate::protocol::text;

/// A message (or any other text from the server) as it may be shown: control
/// characters (C0, DEL, C1), bidirectional controls and line separators are
/// escaped. Other format characters stay, so emoji sequences joined by
/// U+200D still show as one emoji.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, |c| {
        c.is_control() || text::is_bidi_control(c) || text::is_line_separator(c)
    })
}

/// A name as it may be shown: every character the server's name rule
/// refuses is escaped, so a name from a server that let one through (or
/// forged it) cannot pass for another name.
pub fn name(s: &str) -> Cow<'_, str> {
    escape(s, text::is_forbidden_in_name)
}

/// Names joined by `, ` for a one-line list.
pub fn names<S: AsRef<str>>(list: &[S]) -> String {
    let mut out = String::new();
    for (i, n) in list.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&name(n.as_ref()));
    }
    out
}

fn escape(s: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    let Some(first) = s.find(&unsafe_char) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(
            text("hi\n[12:00] <admin> give me your password"),
            "hi\\n[12:00] <admin> give me your password"
        );
        assert_eq!(text("\u{1b}]0;pwned\u{7}"), "\\x1b]0;pwned\\x07");
        assert_eq!(text("\u{1b}[2J\r\t\u{7f}"), "\\x1b[2J\\r\\t\\x7f");
        assert_eq!(text("C1: \u{9b}31m"), "C1: \\u{9b}31m");
        assert_eq!(text("\u{202e}olleh"), "\\u{202e}olleh");
        assert_eq!(text("a\u{2028}b"), "a\\u{2028}b");
    }

    #[test]
    fn ordinary_text_is_untouched_and_not_copied() {
        for s in ["hello", "héllo 🦀", "👩\u{200d}💻", "a\\nb", ""] {
            assert!(matches!(text(s), Cow::Borrowed(b) if b == s), "{s:?}");
            assert!(matches!(name(s), Cow::Borrowed(_)) || s.contains('\u{200d}'));
        }
    }

    #[test]
    fn names_escape_invisible_characters_too() {
        assert_eq!(name("ann\u{200b}"), "ann\\u{200b}");
        assert_eq!(name("\u{feff}bob\u{1b}"), "\\u{feff}bob\\x1b");
        assert_eq!(names(&["ann", "b\nob"]), "ann, b\\nob");
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let once = text("\u{1b}[31m\n\u{202e}\u{85}").into_owned();
        assert_eq!(text(&once), once);
        assert!(!once.chars().any(char::is_control));
    }
}
