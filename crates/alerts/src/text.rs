//! Officers' free text (comments, close notes, reveal justifications, silence reasons) stays
//! free text: it may not carry a phone, ID-card or bank-card number, however written.
//!
//! The text is compared in a canonical form: NFKC (full-width, circled, superscript and
//! mathematical digits become ASCII ones), invisible characters removed (format characters
//! such as zero-width spaces and joiners, soft hyphens, bidirectional controls; combining
//! marks), and Chinese numerals (〇一二…, the financial 壹贰叁…, and the radio digits 洞幺两拐勾)
//! read as digits. Then every Unicode decimal digit (`\p{Nd}`: Arabic-Indic, Devanagari,
//! Thai, …) is a digit, and up to three separators — spaces, dashes, dots, brackets, slashes —
//! may stand between two digits of one number. Eleven or more digits in one number (a mobile
//! number has 11, an ID-card number 18) are refused: the audit log's own rule for ids.

use std::sync::LazyLock;

use blindwatch_audit::MAX_DIGIT_RUN;
use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Characters that change nothing visible: format characters and combining marks.
// PANIC SAFETY: a constant pattern, checked by the tests.
#[allow(clippy::expect_used)]
static INVISIBLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\p{Cf}\p{Mn}\p{Me}]+").expect("a valid pattern"));

/// A number of more than [`MAX_DIGIT_RUN`] digits, with at most three separators between
/// two of its digits.
// PANIC SAFETY: a constant pattern, checked by the tests.
#[allow(clippy::expect_used)]
static LONG_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    let separator = r"[\p{White_Space}\p{Pd}\x{2212}.·•・。‧∙⋅()\[\]{}【】〔〕/\\+_~*#,，、]";
    Regex::new(&format!(
        r"\p{{Nd}}(?:{separator}{{0,3}}\p{{Nd}}){{{MAX_DIGIT_RUN},}}"
    ))
    .expect("a valid pattern")
});

/// The digit a Chinese numeral stands for, as written in numbers read digit by digit.
fn chinese_digit(c: char) -> Option<char> {
    Some(match c {
        '〇' | '零' | '洞' => '0',
        '一' | '壹' | '幺' | '弌' => '1',
        '二' | '贰' | '貳' | '两' | '兩' | '弍' => '2',
        '三' | '叁' | '參' | '叄' | '弎' => '3',
        '四' | '肆' => '4',
        '五' | '伍' => '5',
        '六' | '陆' | '陸' => '6',
        '七' | '柒' | '拐' => '7',
        '八' | '捌' => '8',
        '九' | '玖' | '勾' => '9',
        _ => return None,
    })
}

/// The form identifiers are looked for in (see the module documentation).
fn canonical(text: &str) -> String {
    let nfkc: String = text.nfkc().collect();
    INVISIBLE
        .replace_all(&nfkc, "")
        .chars()
        .map(|c| chinese_digit(c).unwrap_or(c))
        .collect()
}

/// Whether `text` holds a number of 11 or more digits, in any script or spelling, with
/// separators between its digits (see the module documentation).
pub fn looks_like_identifier(text: &str) -> bool {
    LONG_NUMBER.is_match(&canonical(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Unicode decimal digit block: its zero (digits are contiguous 0-9 in Nd).
    fn digit_zeros() -> Vec<char> {
        let nd = Regex::new(r"^\p{Nd}$").unwrap();
        let mut zeros = Vec::new();
        let mut run = 0u32;
        for cp in 0..=0x10FFFFu32 {
            let Some(c) = char::from_u32(cp) else {
                run = 0;
                continue;
            };
            if nd.is_match(c.encode_utf8(&mut [0; 4])) {
                if run.is_multiple_of(10) {
                    zeros.push(c);
                }
                run += 1;
            } else {
                run = 0;
            }
        }
        zeros
    }

    fn in_script(zero: char, digits: &str) -> Vec<char> {
        digits
            .bytes()
            .map(|d| char::from_u32(zero as u32 + u32::from(d - b'0')).unwrap())
            .collect()
    }

    fn join(digits: &[char], separator: &str, every: &[usize]) -> String {
        let mut out = String::new();
        for (i, d) in digits.iter().enumerate() {
            if i > 0 && every.contains(&i) {
                out.push_str(separator);
            }
            out.push(*d);
        }
        out
    }

    const PHONE: &str = "13800138000";
    const ID: &str = "110105194912310029";
    const TEN: &str = "2024050112";

    const SEPARATORS: [&str; 24] = [
        " ",
        "  ",
        "-",
        ".",
        "\u{200B}",
        "\u{200C}",
        "\u{200D}",
        "\u{2060}",
        "\u{FEFF}",
        "\u{00AD}",
        "\u{3000}",
        "\u{2013}",
        "\u{2014}",
        "\u{2212}",
        "·",
        "．",
        "－",
        "\t",
        "\n",
        " - ",
        "(",
        ")",
        "/",
        "\u{200B}\u{200B}\u{200B}\u{200B}\u{200B}\u{200B}",
    ];

    #[test]
    fn patterns_compile() {
        assert!(!looks_like_identifier(""));
    }

    #[test]
    fn eleven_digits_in_every_decimal_script_are_refused_and_ten_pass() {
        let zeros = digit_zeros();
        // ASCII, Arabic-Indic, Devanagari, full width, mathematical bold … (Unicode 15+: 60+).
        assert!(zeros.len() >= 60, "{}", zeros.len());
        for zero in [
            '0',
            '\u{0660}',
            '\u{06F0}',
            '\u{0966}',
            '\u{FF10}',
            '\u{1D7CE}',
        ] {
            assert!(zeros.contains(&zero), "{zero:?}");
        }
        for zero in zeros {
            for number in [PHONE, ID] {
                let digits = in_script(zero, number);
                for (sep, groups) in [("", vec![]), (" ", vec![3, 7]), ("-", vec![3, 7])] {
                    let text = format!("电话 {} 已核实", join(&digits, sep, &groups));
                    assert!(
                        looks_like_identifier(&text),
                        "U+{:04X} {sep:?}",
                        zero as u32
                    );
                }
            }
            let ten: String = in_script(zero, TEN).into_iter().collect();
            assert!(
                !looks_like_identifier(&format!("case {ten} closed")),
                "U+{:04X}",
                zero as u32
            );
        }
    }

    #[test]
    fn separators_between_digits_do_not_hide_a_number() {
        let scripts = ['0', '\u{FF10}', '\u{0660}', '\u{0966}', '\u{1D7CE}'];
        for zero in scripts {
            for number in [PHONE, ID] {
                let digits = in_script(zero, number);
                let every: Vec<usize> = (1..digits.len()).collect();
                for sep in SEPARATORS {
                    for groups in [vec![3, 7], every.clone()] {
                        let text = join(&digits, sep, &groups);
                        assert!(looks_like_identifier(&text), "{text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn chinese_numerals_are_digits() {
        let spellings: [[char; 10]; 3] = [
            ['〇', '一', '二', '三', '四', '五', '六', '七', '八', '九'],
            ['零', '壹', '贰', '叁', '肆', '伍', '陆', '柒', '捌', '玖'],
            ['洞', '幺', '两', '三', '四', '五', '六', '拐', '八', '勾'],
        ];
        for spelling in spellings {
            for number in [PHONE, ID] {
                let digits: Vec<char> = number
                    .bytes()
                    .map(|d| spelling[usize::from(d - b'0')])
                    .collect();
                for sep in ["", " ", "-", "\u{200B}"] {
                    let text = format!("报警人{}", join(&digits, sep, &[3, 7]));
                    assert!(looks_like_identifier(&text), "{text}");
                }
                // Mixed: every other digit Chinese.
                let mixed: String = number
                    .bytes()
                    .enumerate()
                    .map(|(i, d)| {
                        if i % 2 == 0 {
                            spelling[usize::from(d - b'0')]
                        } else {
                            char::from(d)
                        }
                    })
                    .collect();
                assert!(looks_like_identifier(&mixed), "{mixed}");
            }
        }
    }

    #[test]
    fn mixed_scripts_within_one_number_are_one_number() {
        let zeros = digit_zeros();
        for offset in 0..zeros.len() {
            let digits: Vec<char> = PHONE
                .bytes()
                .enumerate()
                .map(|(i, d)| {
                    let zero = zeros[(offset + i * 7) % zeros.len()];
                    char::from_u32(zero as u32 + u32::from(d - b'0')).unwrap()
                })
                .collect();
            assert!(looks_like_identifier(&join(&digits, " ", &[3, 7])));
        }
    }

    #[test]
    fn ordinary_notes_pass() {
        for text in [
            "visited 2026-11-30 14:05, nobody home",
            "回访 2026年11月30日 14:05，家中无人",
            "两次报警，三个人在场，一人受伤",
            "case 2024050112 reviewed",
            "call back after 18:00 on 12/01",
            "警情编号见系统，地址已核实",
            "",
            "第一二三四五六七八九十次", // 9 digit-like in a row, then 十
            "rooms 101 to 104",
        ] {
            assert!(!looks_like_identifier(text), "{text}");
        }
    }

    #[test]
    fn more_than_three_visible_separators_split_a_number() {
        let digits: Vec<char> = PHONE.chars().collect();
        assert!(!looks_like_identifier(&join(&digits, " -- - ", &[6])));
        assert!(looks_like_identifier(&join(&digits, " - ", &[6])));
    }
}
