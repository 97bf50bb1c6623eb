//! WinAnsi (Windows-1252) text for the standard Type1 fonts Helvetica and Helvetica-Bold: encoding
//! of Unicode text (anything outside WinAnsi becomes `?`) and the fonts' advance widths, so the
//! PDF can measure, wrap and right-align text without embedding a font. Tested with the crate:
//! `cargo test -p bss-present`.
//!
//! The widths are Adobe's Helvetica metrics (AFM, in 1/1000 em) for codes 32..=255 in WinAnsi
//! order; undefined codes have width 0 and are never produced by [`encode`].

/// Which of the two fonts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Font {
    Regular,
    Bold,
}

/// The byte for `c` in WinAnsiEncoding, if it has one.
fn byte(c: char) -> Option<u8> {
    let code = c as u32;
    match code {
        0x20..=0x7E | 0xA0..=0xFF => Some(code as u8),
        _ => HIGH.iter().find(|(u, _)| *u == c).map(|(_, b)| *b),
    }
}

/// WinAnsi codes 0x80..=0x9F and the Unicode characters they stand for.
const HIGH: [(char, u8); 27] = [
    ('€', 0x80),
    ('‚', 0x82),
    ('ƒ', 0x83),
    ('„', 0x84),
    ('…', 0x85),
    ('†', 0x86),
    ('‡', 0x87),
    ('ˆ', 0x88),
    ('‰', 0x89),
    ('Š', 0x8A),
    ('‹', 0x8B),
    ('Œ', 0x8C),
    ('Ž', 0x8E),
    ('‘', 0x91),
    ('’', 0x92),
    ('“', 0x93),
    ('”', 0x94),
    ('•', 0x95),
    ('–', 0x96),
    ('—', 0x97),
    ('˜', 0x98),
    ('™', 0x99),
    ('š', 0x9A),
    ('›', 0x9B),
    ('œ', 0x9C),
    ('ž', 0x9E),
    ('Ÿ', 0x9F),
];

/// `text` in WinAnsi: look-alikes for a few common characters (dashes, spaces, the minus sign),
/// a space for control characters, `?` for everything else WinAnsi lacks.
pub(crate) fn encode(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| {
            byte(c).unwrap_or(match c {
                '\u{2010}' | '\u{2011}' | '\u{2212}' => b'-',
                '\u{2002}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\t' | '\n' | '\r' => b' ',
                '\u{2032}' => b'\'',
                '\u{2033}' => b'"',
                _ => b'?',
            })
        })
        .collect()
}

/// Width of encoded `text` at `size` points.
pub(crate) fn width(text: &[u8], font: Font, size: f32) -> f32 {
    let table = match font {
        Font::Regular => &HELVETICA,
        Font::Bold => &HELVETICA_BOLD,
    };
    let units: u32 = text.iter().map(|&b| if b < 32 { 0 } else { u32::from(table[usize::from(b - 32)]) }).sum();
    units as f32 * size / 1000.0
}

/// Helvetica, codes 32..=255.
const HELVETICA: [u16; 224] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556,
    556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334,
    260, 334, 584, 0, 556, 0, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, 0, 222, 222, 333,
    333, 350, 556, 1000, 333, 1000, 500, 333, 944, 0, 500, 667, 278, 333, 556, 556, 556, 556, 260, 556, 333, 737, 370,
    556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 556, 537, 278, 333, 333, 365, 556, 834, 834, 834, 611, 667, 667,
    667, 667, 667, 667, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778,
    722, 722, 722, 722, 667, 667, 611, 556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500,
];
/// Helvetica-Bold, codes 32..=255.
const HELVETICA_BOLD: [u16; 224] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611,
    556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389,
    280, 389, 584, 0, 556, 0, 278, 556, 500, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, 0, 278, 278, 500,
    500, 350, 556, 1000, 333, 1000, 556, 333, 944, 0, 500, 667, 278, 333, 556, 556, 556, 556, 280, 556, 333, 737, 370,
    556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 611, 556, 278, 333, 333, 365, 556, 834, 834, 834, 611, 722, 722,
    722, 722, 722, 722, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778,
    722, 722, 722, 722, 667, 667, 611, 556, 556, 556, 556, 556, 556, 889, 556, 556, 556, 556, 556, 278, 278, 278, 278,
    611, 611, 611, 611, 611, 611, 611, 584, 611, 611, 611, 611, 611, 556, 611, 556,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_text_maps_and_the_rest_is_replaced() {
        assert_eq!(encode("Café 5 €"), b"Caf\xE9 5 \x80");
        assert_eq!(encode("Привет"), b"??????");
        assert_eq!(encode("a\u{2212}b\u{202F}c"), b"a-b c");
        assert_eq!(encode("“x” – y…"), b"\x93x\x94 \x96 y\x85");
    }

    #[test]
    fn every_encodable_byte_has_a_width() {
        for c in (0x20u32..0x3000).filter_map(char::from_u32) {
            if let Some(b) = byte(c) {
                assert!(width(&[b], Font::Regular, 1000.0) > 0.0, "{c:?}");
                assert!(width(&[b], Font::Bold, 1000.0) > 0.0, "{c:?}");
            }
        }
        assert_eq!(width(b"0", Font::Regular, 10.0), 5.56);
        assert_eq!(width(b"W", Font::Bold, 1.0), 0.944);
    }
}
