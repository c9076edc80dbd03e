//! Resident identity card numbers (GB 11643-1999): check digit, validation, 15 → 18 upgrade.

/// ISO 7064 MOD 11-2 weights of the first 17 digits.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS: [u8; 11] = *b"10X98765432";

/// The check character (`0`–`9` or `X`) for the first 17 digits of an ID number.
/// Returns `None` unless `first17` is exactly 17 ASCII digits.
pub fn check_digit(first17: &[u8]) -> Option<u8> {
    if first17.len() != 17 || !first17.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK_CHARS.get((sum % 11) as usize).copied()
}

/// Why an ID number was refused. Carries no part of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum IdCardError {
    #[error("an ID number must have 18 characters (or 15 for a legacy number)")]
    Length,
    #[error("an ID number may hold only digits and a final X")]
    Character,
    #[error("the ID number's birth date is not a real date")]
    BirthDate,
    #[error("the ID number's check digit does not match (GB 11643-1999)")]
    CheckDigit,
}

/// Validates an already width-normalised, whitespace-free ID number and returns its
/// canonical 18-character form (upper-case `X`; legacy 15-digit numbers upgraded).
pub fn canonical(value: &str) -> Result<String, IdCardError> {
    let bytes = value.as_bytes();
    match bytes.len() {
        15 => {
            if !bytes.iter().all(u8::is_ascii_digit) {
                return Err(IdCardError::Character);
            }
            // Legacy numbers carry a two-digit year of the 1900s and no check digit.
            let mut first17 = Vec::with_capacity(17);
            first17.extend_from_slice(&bytes[..6]);
            first17.extend_from_slice(b"19");
            first17.extend_from_slice(&bytes[6..]);
            check_birth_date(&first17[6..14])?;
            let check = check_digit(&first17).ok_or(IdCardError::Character)?;
            first17.push(check);
            String::from_utf8(first17).map_err(|_| IdCardError::Character)
        }
        18 => {
            let (first17, last) = bytes.split_at(17);
            if !first17.iter().all(u8::is_ascii_digit) {
                return Err(IdCardError::Character);
            }
            let last = last[0].to_ascii_uppercase();
            if !(last.is_ascii_digit() || last == b'X') {
                return Err(IdCardError::Character);
            }
            check_birth_date(&first17[6..14])?;
            if check_digit(first17) != Some(last) {
                return Err(IdCardError::CheckDigit);
            }
            let mut out = first17.to_vec();
            out.push(last);
            String::from_utf8(out).map_err(|_| IdCardError::Character)
        }
        _ => Err(IdCardError::Length),
    }
}

fn check_birth_date(yyyymmdd: &[u8]) -> Result<(), IdCardError> {
    let num = |r: std::ops::Range<usize>| -> u32 {
        yyyymmdd[r]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0..4), num(4..6), num(6..8));
    if !(1850..=2100).contains(&year) || !(1..=12).contains(&month) {
        return Err(IdCardError::BirthDate);
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day == 0 || day > days {
        return Err(IdCardError::BirthDate);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_of_published_examples() {
        // Checked against an independent computation of ISO 7064 MOD 11-2.
        for (first17, check) in [
            ("11010519491231002", b'X'),
            ("44052418800101001", b'4'),
            ("11010119900307803", b'X'),
            ("11010119900307801", b'3'),
        ] {
            assert_eq!(check_digit(first17.as_bytes()), Some(check), "{first17}");
        }
        assert_eq!(check_digit(b"1234"), None);
        assert_eq!(check_digit(b"1101051949123100A"), None);
    }

    #[test]
    fn canonical_table() {
        let cases: &[(&str, Result<&str, IdCardError>)] = &[
            ("11010519491231002X", Ok("11010519491231002X")),
            ("11010519491231002x", Ok("11010519491231002X")),
            ("440524188001010014", Ok("440524188001010014")),
            ("440524188001010015", Err(IdCardError::CheckDigit)),
            // 15-digit legacy number: 1949-12-31 → 19491231, check digit computed.
            ("110105491231002", Ok("11010519491231002X")),
            ("11010519491331002X", Err(IdCardError::BirthDate)),
            ("11010519490230002X", Err(IdCardError::BirthDate)),
            ("1101051949123100", Err(IdCardError::Length)),
            ("", Err(IdCardError::Length)),
            ("1101051949123100AX", Err(IdCardError::Character)),
            ("11010519491231002Y", Err(IdCardError::Character)),
            ("11010A491231002", Err(IdCardError::Character)),
        ];
        for (input, want) in cases {
            assert_eq!(canonical(input).as_deref(), want.as_deref(), "{input}");
        }
    }
}
