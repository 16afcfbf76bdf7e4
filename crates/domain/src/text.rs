//! The one check of text a client sends: free-text fields (names, notes, reasons,
//! descriptions, phones) and idempotency keys.
//!
//! Free text is shown to caseworkers and written to logs and exports, so it must not be able
//! to hide or reorder what surrounds it: control characters (which can forge line breaks in
//! a log or a terminal) and the bidirectional formatting characters (which make text render
//! in another order than it is stored, "trojan source") are refused, as is a name made of
//! whitespace only.

use crate::Invalid;

/// Longest request id (idempotency key), in characters.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// What a free-text field may hold besides printable characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line: a name, a phone number. No control character at all.
    Line,
    /// Prose that may run over several lines: a note, a reason, a description. Line feeds
    /// and tabs are allowed; every other control character is refused.
    Paragraph,
}

/// The bidirectional formatting characters: embeddings and overrides (U+202A–U+202E),
/// isolates (U+2066–U+2069) and the directional marks (U+200E, U+200F, U+061C).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Checks a free-text field of at most `max_chars` characters (empty is allowed; see
/// [`check_name`] for fields that must hold something).
pub fn check_text(
    field: &str,
    value: &str,
    max_chars: usize,
    kind: TextKind,
) -> Result<(), Invalid> {
    if value.chars().count() > max_chars {
        return Err(Invalid::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    for c in value.chars() {
        if c.is_control() && !(kind == TextKind::Paragraph && matches!(c, '\n' | '\t')) {
            return Err(Invalid::new(
                field,
                format!(
                    "must not contain control characters (found U+{:04X})",
                    u32::from(c)
                ),
            ));
        }
        if is_bidi_control(c) {
            return Err(Invalid::new(
                field,
                format!(
                    "must not contain bidirectional formatting characters (found U+{:04X})",
                    u32::from(c)
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a one-line name of 1 to `max_chars` characters that is not whitespace only.
pub fn check_name(field: &str, value: &str, max_chars: usize) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    check_text(field, value, max_chars, TextKind::Line)?;
    if value.chars().all(char::is_whitespace) {
        return Err(Invalid::new(field, "must not be whitespace only"));
    }
    Ok(())
}

/// Checks an idempotency key: 1 to [`MAX_REQUEST_ID_CHARS`] printable characters.
pub fn check_request_id(field: &str, value: &str) -> Result<(), Invalid> {
    let n = value.chars().count();
    if n == 0
        || n > MAX_REQUEST_ID_CHARS
        || value.chars().any(|c| c.is_control() || is_bidi_control(c))
    {
        return Err(Invalid::new(
            field,
            format!("must be 1 to {MAX_REQUEST_ID_CHARS} printable characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn refusals_name_the_field() {
        let e = check_text("note", "ok\u{202E}txt", 10, TextKind::Paragraph).unwrap_err();
        assert_eq!(e.field, "note");
        assert!(e.reason.contains("bidirectional"), "{e}");
        let e = check_text("note", "a\u{7}b", 10, TextKind::Paragraph).unwrap_err();
        assert!(e.reason.contains("control"), "{e}");
        assert!(check_text("note", "line one\nline\ttwo", 20, TextKind::Paragraph).is_ok());
        assert!(check_text("phone", "1\n2", 20, TextKind::Line).is_err());
        assert!(check_text("note", "abc", 2, TextKind::Paragraph).is_err());
        assert_eq!(
            check_name("name", " \u{3000} ", 10).unwrap_err().reason,
            "must not be whitespace only"
        );
        assert_eq!(
            check_name("name", "", 10).unwrap_err().reason,
            "must not be empty"
        );
        assert!(check_name("name", "王 小明", 10).is_ok());
        assert!(check_request_id("request_id", "").is_err());
        assert!(check_request_id("request_id", &"x".repeat(129)).is_err());
        assert!(check_request_id("request_id", &"x".repeat(128)).is_ok());
    }

    fn forbidden() -> impl Strategy<Value = char> {
        prop_oneof![
            (0u32..0x20).prop_filter("lf and tab are prose", |c| *c != 0x0A && *c != 0x09),
            0x7Fu32..0xA0,
            0x202Au32..=0x202E,
            0x2066u32..=0x2069,
            Just(0x200E),
            Just(0x200F),
        ]
        .prop_map(|c| char::from_u32(c).unwrap())
    }

    proptest! {
        /// Printable text without formatting characters passes; one forbidden character
        /// anywhere in it is refused, in either kind of field.
        #[test]
        fn one_forbidden_character_is_refused(
            text in "[a-zA-Z0-9 ,.\u{4e00}-\u{9fff}]{0,40}",
            bad in forbidden(),
            at in any::<prop::sample::Index>(),
        ) {
            prop_assert!(check_text("f", &text, 100, TextKind::Line).is_ok());
            let mut chars: Vec<char> = text.chars().collect();
            chars.insert(at.index(chars.len() + 1), bad);
            let tainted: String = chars.into_iter().collect();
            prop_assert!(check_text("f", &tainted, 100, TextKind::Line).is_err());
            prop_assert!(check_text("f", &tainted, 100, TextKind::Paragraph).is_err());
            prop_assert!(check_name("f", &tainted, 100).is_err());
        }

        /// Whitespace-only names are refused, whatever the whitespace.
        #[test]
        fn blank_names_are_refused(blank in "[ \u{3000}\u{00A0}\u{2003}]{1,10}") {
            prop_assert!(check_name("f", &blank, 64).is_err());
        }
    }
}
