//! Messy input at a controlled, recorded rate.
//!
//! Each written row is messy with probability `messy_rate`; a messy row gets exactly one
//! mess, drawn (by weight) from the kinds that apply to it. Harmless kinds undo under
//! `blindwatch_common::normalise`; harmful kinds are offered only for rows that no planted
//! scenario (and no background guarantee) depends on. A duplicate is a byte-identical copy
//! of the row, written a few rows later.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::rng::stream;

/// One kind of mess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessKind {
    /// Harmless: ID or phone digits (and `X`) written full width (`１３８…`).
    FullwidthDigits,
    /// Harmless: an ID number of someone born 1940–1999 in the legacy 15-digit form.
    Legacy15DigitId,
    /// Harmless: a final `X` check character written `x`.
    LowercaseX,
    /// Harmless: leading/trailing ASCII or ideographic (U+3000) spaces.
    Padded,
    /// Harmless: `+86`, `+86 ` or `0086` before a mobile number.
    PhoneCountryPrefix,
    /// Harmless: a mobile number written `138-1234-5678`.
    PhoneDashes,
    /// Harmless: one inner space of an address doubled.
    AddressDoubleSpace,
    /// Harmful: an 18-digit ID number whose check character is wrong.
    WrongCheckDigit,
    /// Harmful: a required ID or phone field left blank.
    BlankIdentifier,
    /// Harmful: a phone field holding something that is no mobile number.
    GarbagePhone,
    /// An exact copy of an earlier row (same row id).
    DuplicateRow,
}

impl MessKind {
    pub const ALL: [MessKind; 11] = [
        MessKind::FullwidthDigits,
        MessKind::Legacy15DigitId,
        MessKind::LowercaseX,
        MessKind::Padded,
        MessKind::PhoneCountryPrefix,
        MessKind::PhoneDashes,
        MessKind::AddressDoubleSpace,
        MessKind::WrongCheckDigit,
        MessKind::BlankIdentifier,
        MessKind::GarbagePhone,
        MessKind::DuplicateRow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessKind::FullwidthDigits => "fullwidth_digits",
            MessKind::Legacy15DigitId => "legacy_15_digit_id",
            MessKind::LowercaseX => "lowercase_x",
            MessKind::Padded => "padded",
            MessKind::PhoneCountryPrefix => "phone_country_prefix",
            MessKind::PhoneDashes => "phone_dashes",
            MessKind::AddressDoubleSpace => "address_double_space",
            MessKind::WrongCheckDigit => "wrong_check_digit",
            MessKind::BlankIdentifier => "blank_identifier",
            MessKind::GarbagePhone => "garbage_phone",
            MessKind::DuplicateRow => "duplicate_row",
        }
    }

    pub fn is_harmful(self) -> bool {
        matches!(
            self,
            MessKind::WrongCheckDigit | MessKind::BlankIdentifier | MessKind::GarbagePhone
        )
    }

    fn weight(self) -> u32 {
        match self {
            MessKind::DuplicateRow => 3,
            k if k.is_harmful() => 1,
            _ => 2,
        }
    }
}

/// What an identifier-bearing field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// An 18-digit ID number; `required` fields are never blank by design.
    Id {
        birth_year: i32,
        required: bool,
    },
    Phone {
        required: bool,
    },
    Address,
    Name,
}

/// A field that mess may hit.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub kind: FieldKind,
    pub value: &'a str,
}

/// The mess drawn for one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    /// Write `value` instead of field `field`.
    Replace {
        field: usize,
        value: String,
    },
    /// Write the row again `delay` rows later.
    Duplicate {
        delay: u32,
    },
}

/// The mess source of one file, with its counts.
#[derive(Debug)]
pub struct Mess {
    rng: ChaCha8Rng,
    rate: f64,
    counts: [u64; MessKind::ALL.len()],
}

fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '0'..='9' => char::from_u32(0xFF10 + (c as u32 - '0' as u32)).unwrap_or(c),
            'X' => 'Ｘ',
            other => other,
        })
        .collect()
}

impl Mess {
    pub fn new(seed: u64, dataset: &str, rate: f64) -> Self {
        Mess {
            rng: stream(seed, &format!("mess/{dataset}")),
            rate,
            counts: [0; MessKind::ALL.len()],
        }
    }

    /// Draws the mess of one row whose identifier-bearing fields are `fields`.
    /// `harmful_ok`: the row is background that nothing depends on.
    pub fn draw(&mut self, fields: &[Field<'_>], harmful_ok: bool) -> Outcome {
        if self.rate <= 0.0 || self.rng.r#gen::<f64>() >= self.rate {
            return Outcome::Clean;
        }
        let mut candidates: Vec<(MessKind, usize)> = vec![(MessKind::DuplicateRow, 0)];
        for (i, f) in fields.iter().enumerate() {
            if f.value.is_empty() {
                continue;
            }
            let mut add = |k: MessKind| {
                if harmful_ok || !k.is_harmful() {
                    candidates.push((k, i));
                }
            };
            match f.kind {
                FieldKind::Id {
                    birth_year,
                    required,
                } => {
                    add(MessKind::FullwidthDigits);
                    if birth_year <= 1999 && f.value.len() == 18 {
                        add(MessKind::Legacy15DigitId);
                    }
                    if f.value.ends_with('X') {
                        add(MessKind::LowercaseX);
                    }
                    add(MessKind::Padded);
                    add(MessKind::WrongCheckDigit);
                    if required {
                        add(MessKind::BlankIdentifier);
                    }
                }
                FieldKind::Phone { required } => {
                    add(MessKind::FullwidthDigits);
                    add(MessKind::PhoneCountryPrefix);
                    add(MessKind::PhoneDashes);
                    add(MessKind::Padded);
                    add(MessKind::GarbagePhone);
                    if required {
                        add(MessKind::BlankIdentifier);
                    }
                }
                FieldKind::Address => {
                    if f.value.contains(' ') {
                        add(MessKind::AddressDoubleSpace);
                    }
                    add(MessKind::Padded);
                }
                FieldKind::Name => add(MessKind::Padded),
            }
        }
        let weights: Vec<u32> = candidates.iter().map(|(k, _)| k.weight()).collect();
        let (kind, field) = candidates[crate::rng::pick(&mut self.rng, &weights)];
        if let Some(slot) = MessKind::ALL.iter().position(|k| *k == kind) {
            self.counts[slot] += 1;
        }
        if kind == MessKind::DuplicateRow {
            return Outcome::Duplicate {
                delay: self.rng.gen_range(1..=40),
            };
        }
        let value = fields.get(field).map_or("", |f| f.value);
        Outcome::Replace {
            field,
            value: self.apply(kind, value),
        }
    }

    fn apply(&mut self, kind: MessKind, v: &str) -> String {
        let rng = &mut self.rng;
        match kind {
            MessKind::FullwidthDigits => fullwidth(v),
            MessKind::Legacy15DigitId => {
                let (region, rest) = v.split_at(6);
                format!("{region}{}", rest.get(2..11).unwrap_or(""))
            }
            MessKind::LowercaseX => format!("{}x", v.strip_suffix('X').unwrap_or(v)),
            MessKind::Padded => match rng.gen_range(0..5) {
                0 => format!(" {v}"),
                1 => format!("{v} "),
                2 => format!("  {v}  "),
                3 => format!("{v}\u{3000}"),
                _ => format!("\u{3000}{v}"),
            },
            MessKind::PhoneCountryPrefix => match rng.gen_range(0..3) {
                0 => format!("+86{v}"),
                1 => format!("+86 {v}"),
                _ => format!("0086{v}"),
            },
            MessKind::PhoneDashes => {
                let (a, rest) = v.split_at(3.min(v.len()));
                let (b, c) = rest.split_at(4.min(rest.len()));
                format!("{a}-{b}-{c}")
            }
            MessKind::AddressDoubleSpace => {
                let spaces: Vec<usize> = v.match_indices(' ').map(|(i, _)| i).collect();
                let at = spaces[rng.gen_range(0..spaces.len())];
                format!("{} {}", &v[..at], &v[at..])
            }
            MessKind::WrongCheckDigit => {
                const CHECKS: &[u8; 11] = b"0123456789X";
                let (first17, last) = v.split_at(17.min(v.len()));
                let mut c = CHECKS[rng.gen_range(0..CHECKS.len())];
                if last.as_bytes().first() == Some(&c) {
                    c = CHECKS[(CHECKS.iter().position(|x| *x == c).unwrap_or(0) + 1) % 11];
                }
                format!("{first17}{}", char::from(c))
            }
            MessKind::BlankIdentifier => String::new(),
            MessKind::GarbagePhone => match rng.gen_range(0..5) {
                0 => format!("{}", rng.gen_range(1_000_000..10_000_000u32)),
                1 => format!("0571-{}", rng.gen_range(8_000_000..9_000_000u32)),
                2 => format!("12{:09}", rng.gen_range(0..1_000_000_000u32)),
                3 => format!("13{:08}", rng.gen_range(0..100_000_000u32)),
                _ => "无".to_owned(),
            },
            MessKind::DuplicateRow => v.to_owned(),
        }
    }

    /// Counts per kind (every kind listed, zeros included).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        MessKind::ALL
            .iter()
            .zip(self.counts)
            .map(|(k, n)| (k.as_str().to_owned(), n))
            .collect()
    }

    pub fn messy_rows(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindwatch_common::{IdentifierKind, normalise};

    const ID: &str = "11010519491231002X";
    const PHONE: &str = "13812345678";
    const ADDR: &str = "临江区东城街道 和平路12号 3栋2单元1201室";

    #[test]
    fn harmless_mess_normalises_back_and_harmful_does_not() {
        let mut m = Mess::new(3, "t", 1.0);
        for kind in MessKind::ALL {
            for _ in 0..20 {
                for (ik, v) in [
                    (IdentifierKind::Person, ID),
                    (IdentifierKind::Phone, PHONE),
                    (IdentifierKind::Address, ADDR),
                ] {
                    let applicable = match (kind, ik) {
                        (MessKind::DuplicateRow, _) => false,
                        (MessKind::AddressDoubleSpace, k) => k == IdentifierKind::Address,
                        (MessKind::Padded | MessKind::BlankIdentifier, _) => true,
                        (MessKind::FullwidthDigits, k) => k != IdentifierKind::Address,
                        (
                            MessKind::Legacy15DigitId
                            | MessKind::LowercaseX
                            | MessKind::WrongCheckDigit,
                            k,
                        ) => k == IdentifierKind::Person,
                        (
                            MessKind::PhoneCountryPrefix
                            | MessKind::PhoneDashes
                            | MessKind::GarbagePhone,
                            k,
                        ) => k == IdentifierKind::Phone,
                    };
                    if !applicable {
                        continue;
                    }
                    let messy = m.apply(kind, v);
                    let got = normalise(ik, &messy).map(|r| r.reveal_value().to_owned());
                    if kind.is_harmful() {
                        assert!(got.is_err(), "{kind:?} {messy:?}");
                    } else {
                        assert_eq!(got.as_deref(), Ok(v), "{kind:?} {messy:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn rate_is_respected_and_counted() {
        let mut m = Mess::new(9, "t", 0.1);
        let fields = [Field {
            kind: FieldKind::Phone { required: true },
            value: PHONE,
        }];
        let messy = (0..20_000)
            .filter(|_| m.draw(&fields, false) != Outcome::Clean)
            .count() as u64;
        assert_eq!(messy, m.messy_rows());
        assert!((1_800..2_200).contains(&messy), "{messy}");
        assert_eq!(m.counts()["garbage_phone"], 0);
    }
}
