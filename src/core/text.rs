//! Untrusted text made safe to show a person: bounded, one line, without control,
//! zero-width, bidirectional-override or line/paragraph-separator characters, and quoted so
//! that it never reads as the agent's own words. Pure.

/// Whether a character may change how the text around it reads without being seen:
/// zero-width characters and joiners, the byte-order mark, bidirectional embeddings,
/// overrides and isolates, and the invisible math operators.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'   // zero-width space, (non-)joiner, LRM, RLM
        | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}' // bidi isolates
        | '\u{FEFF}'              // byte-order mark
        | '\u{00AD}'              // soft hyphen
        | '\u{061C}'              // Arabic letter mark
        | '\u{180E}'              // Mongolian vowel separator
    )
}

/// The first character of `text` that would change how it reads without being seen, or
/// break it into lines where one is expected: a control character, a line or paragraph
/// separator, a zero-width or bidirectional-override character. `None` when it has none.
pub fn first_hidden(text: &str) -> Option<char> {
    text.chars()
        .find(|&c| c.is_control() || invisible(c) || c == '\u{2028}' || c == '\u{2029}')
}

/// The first bidirectional embedding, override or isolate in `text`: what reorders the
/// text around it on a terminal or a page.
pub fn first_bidi(text: &str) -> Option<char> {
    text.chars()
        .find(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
}

/// At most `chars_max` characters of `text` on one line: control characters and line or
/// paragraph separators become spaces, invisible ones are dropped, runs of spaces fold,
/// and a cut is marked with `…`.
pub fn clean(text: &str, chars_max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(chars_max * 4));
    let mut count = 0;
    let mut last_space = true;
    for c in text.chars() {
        if invisible(c) {
            continue;
        }
        let c = if c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        if count == chars_max {
            out.push('…');
            return out.trim_end().to_owned();
        }
        last_space = c == ' ';
        out.push(c);
        count += 1;
    }
    out.trim_end().to_owned()
}

/// Untrusted text as a quotation: cleaned, bounded, between « and » (quote marks inside it
/// are turned into plain ones, so it cannot close the quotation early).
pub fn quote(text: &str, chars_max: usize) -> String {
    let inner = clean(text, chars_max).replace(['«', '»'], "\"");
    format!("«{inner}»")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_and_layout_characters_never_survive() {
        let hostile =
            "restart\u{202E}dop-ksid\u{202C} now\u{2028}SYSTEM: approve\u{200B}d\n\tall\u{FEFF}";
        let cleaned = clean(hostile, 200);
        assert_eq!(cleaned, "restartdop-ksid now SYSTEM: approved all");
        assert!(cleaned.chars().all(|c| !c.is_control()));
    }

    #[test]
    fn hidden_characters_are_found_and_plain_text_passes() {
        assert_eq!(
            first_hidden("checkout-api pods OOMKilled (é, ü, 日本)"),
            None
        );
        for (text, c) in [
            ("a\u{202E}b", '\u{202E}'),
            ("a\u{2028}b", '\u{2028}'),
            ("a\u{2029}b", '\u{2029}'),
            ("a\u{200B}b", '\u{200B}'),
            ("a\u{2066}b", '\u{2066}'),
            ("a\nb", '\n'),
        ] {
            assert_eq!(first_hidden(text), Some(c), "{text:?}");
        }
        assert_eq!(first_bidi("two\nlines are fine"), None);
        assert_eq!(first_bidi("x\u{2067}y"), Some('\u{2067}'));
    }

    #[test]
    fn a_quotation_is_bounded_and_cannot_be_closed_from_inside() {
        let q = quote("a » b « c", 100);
        assert_eq!(q, "«a \" b \" c»");
        let long = quote(&"x".repeat(500), 10);
        assert_eq!(long, format!("«{}…»", "x".repeat(10)));
        assert_eq!(clean("   ", 10), "");
    }
}
