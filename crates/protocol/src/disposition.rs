//! The `Content-Disposition` of a file in the room, written the same way
//! by the client that uploads it and the server that serves it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters a `filename*` value may carry unencoded (RFC 8187's
/// `attr-char`); everything else is percent-encoded from UTF-8.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition: attachment` for a file called `name`: the name in
/// any script travels as percent-encoded UTF-8 (`filename*`), with an ASCII
/// stand-in (`filename`) for software that reads only that; quotes,
/// semicolons or line breaks in a name cannot break the header.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' ' => ' ',
            '"' | '\\' => '_',
            c if c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR_CHAR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_name_makes_one_safe_header_value() {
        assert_eq!(
            content_disposition("été \"x\";\r\n.txt"),
            "attachment; filename=\"_t_ _x_;__.txt\"; filename*=UTF-8''%C3%A9t%C3%A9%20%22x%22%3B%0D%0A.txt"
        );
    }
}
