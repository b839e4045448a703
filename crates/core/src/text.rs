//! Caller-chosen text on hot paths: every evidence request checks and
//! clips a handful of strings before it is audited.
//!
//! `str::chars` decodes one character at a time; these look at bytes first,
//! which the compiler vectorises, and decode only where the bytes leave a
//! doubt (docs/PROFILING.md: clipping four short strings of a
//! request took ~4k instructions, checking nine ~1.8k, a character at a
//! time).

/// Whether `text` holds a control character (`char::is_control`: U+0000 to
/// U+001F and U+007F to U+009F). In UTF-8 those are the bytes below 0x20,
/// 0x7F, and 0xC2 followed by 0x80 to 0x9F; text without such a byte is
/// answered without decoding it.
pub fn has_control(text: &str) -> bool {
    // A fold, not `any`: without the early exit the loop vectorises, and
    // the texts checked are short.
    let suspect = text.bytes().fold(false, |seen, b| {
        seen | (b < 0x20) | (b == 0x7F) | (b == 0xC2)
    });
    suspect && text.chars().any(char::is_control)
}

/// The first `max_chars` characters of `text`, whole characters only.
pub fn clipped(text: &str, max_chars: usize) -> String {
    // A character is at least one byte: text no longer in bytes fits.
    if text.len() <= max_chars {
        return text.to_owned();
    }
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_those_of_char_is_control() {
        for c in (0..=0x3000u32).filter_map(char::from_u32) {
            for text in [c.to_string(), format!("ab{c}é"), format!("\u{a0}{c}")] {
                assert_eq!(
                    has_control(&text),
                    text.chars().any(char::is_control),
                    "{:?}",
                    c
                );
            }
        }
        assert!(!has_control(""));
        assert!(!has_control("Aziza Karimova, tug'ilgan joyi: Тошкент"));
        assert!(has_control("line\nbreak"));
        assert!(has_control("c1 \u{85} next line"));
    }

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clipped("abc", 3), "abc");
        assert_eq!(clipped("abcd", 3), "abc");
        assert_eq!(clipped("", 0), "");
        assert_eq!(clipped("abc", 0), "");
        // Two bytes per character: five bytes, three characters, fits.
        assert_eq!(clipped("ёжй", 3), "ёжй");
        assert_eq!(clipped("ёжйк", 3), "ёжй");
        assert_eq!(clipped("aё€😀b", 4), "aё€😀");
        for max in 0..8 {
            let text = "жa😀ё€bв";
            assert_eq!(
                clipped(text, max),
                text.chars().take(max).collect::<String>(),
                "{max}"
            );
        }
    }
}
