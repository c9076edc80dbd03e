//! Identifier kinds, normalisation and the leak-proof [`RawIdentifier`].

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::idcard::{self, IdCardError};

/// What an identifier column holds. The kind is bound into every token, so the same
/// string as a name and as an address never yields the same token.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum IdentifierKind {
    /// A resident identity card number (18 digits, GB 11643-1999).
    Person,
    /// A Chinese mobile number.
    Phone,
    /// A free-text postal address.
    Address,
    /// A vehicle licence plate.
    Plate,
    /// A person's name. Weak as a join key; usually dropped or kept only for reveal.
    Name,
}

impl IdentifierKind {
    pub const ALL: [IdentifierKind; 5] = [
        IdentifierKind::Person,
        IdentifierKind::Phone,
        IdentifierKind::Address,
        IdentifierKind::Plate,
        IdentifierKind::Name,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Person => "person",
            IdentifierKind::Phone => "phone",
            IdentifierKind::Address => "address",
            IdentifierKind::Plate => "plate",
            IdentifierKind::Name => "name",
        }
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IdentifierKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdentifierKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown identifier kind `{s}`: use person, phone, address, plate or name")
            })
    }
}

/// Why a value was refused as an identifier. It never carries the value itself, so it is
/// safe to print and to count by [`NormaliseError::reason_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NormaliseError {
    #[error("the identifier is blank")]
    Blank,
    #[error(transparent)]
    IdCard(#[from] IdCardError),
    #[error("not a Chinese mobile number (11 digits starting 13–19, optional +86)")]
    Phone,
    #[error("not a vehicle plate (province character, letter, 5 or 6 letters/digits)")]
    Plate,
    #[error("the value holds control characters")]
    ControlCharacter,
    #[error("the value is longer than {max} characters")]
    TooLong { max: usize },
}

impl NormaliseError {
    /// A stable, value-free code for counting rejected rows by reason.
    pub fn reason_code(&self) -> &'static str {
        match self {
            NormaliseError::Blank => "blank",
            NormaliseError::IdCard(IdCardError::Length) => "id_length",
            NormaliseError::IdCard(IdCardError::Character) => "id_character",
            NormaliseError::IdCard(IdCardError::BirthDate) => "id_birth_date",
            NormaliseError::IdCard(IdCardError::CheckDigit) => "id_check_digit",
            NormaliseError::Phone => "phone_invalid",
            NormaliseError::Plate => "plate_invalid",
            NormaliseError::ControlCharacter => "control_character",
            NormaliseError::TooLong { .. } => "too_long",
        }
    }
}

/// A normalised, validated identifier value.
///
/// Deliberately implements none of `Debug`, `Display`, `Serialize`: the value can
/// reach a tokenizer ([`RawIdentifier::tokenizer_input`]) and, for columns a contract marks
/// revealable, the sealed file ([`RawIdentifier::reveal_value`]) — nothing else. Its memory
/// is zeroed on drop.
///
/// These lock that in: each must fail to compile, while the same value used as intended
/// compiles.
///
/// ```
/// use blindwatch_common::{IdentifierKind, normalise};
/// let raw = normalise(IdentifierKind::Phone, "13800138000").unwrap();
/// let _input = raw.tokenizer_input();
/// ```
///
/// No `Debug`:
///
/// ```compile_fail
/// use blindwatch_common::{IdentifierKind, normalise};
/// let raw = normalise(IdentifierKind::Phone, "13800138000").unwrap();
/// let _ = format!("{raw:?}");
/// ```
///
/// No `Display` (nor `to_string`):
///
/// ```compile_fail
/// use blindwatch_common::{IdentifierKind, normalise};
/// let raw = normalise(IdentifierKind::Phone, "13800138000").unwrap();
/// let _ = format!("{raw}");
/// ```
///
/// No `Serialize`:
///
/// ```compile_fail
/// use blindwatch_common::{IdentifierKind, normalise};
/// fn serialise<T: serde::Serialize>(_: &T) {}
/// let raw = normalise(IdentifierKind::Phone, "13800138000").unwrap();
/// serialise(&raw);
/// ```
///
/// The check itself compiles with a type that has it (so the failures above are the
/// missing traits, not the harness):
///
/// ```
/// fn serialise<T: serde::Serialize>(_: &T) {}
/// serialise(&blindwatch_common::IdentifierKind::Phone);
/// let _ = format!("{:?}", blindwatch_common::IdentifierKind::Phone);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Zeroize, ZeroizeOnDrop)]
pub struct RawIdentifier {
    #[zeroize(skip)]
    kind: IdentifierKind,
    value: String,
}

impl RawIdentifier {
    pub fn kind(&self) -> IdentifierKind {
        self.kind
    }

    /// The bytes a tokenizer evaluates: the kind, a separator, the normalised value. The
    /// kind is bound in so that tokens of different kinds never collide.
    pub fn tokenizer_input(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut input = Vec::with_capacity(self.kind.as_str().len() + 1 + self.value.len());
        input.extend_from_slice(self.kind.as_str().as_bytes());
        input.push(0x1f);
        input.extend_from_slice(self.value.as_bytes());
        zeroize::Zeroizing::new(input)
    }

    /// The normalised value, for an identifier column that the partner's own contract marks
    /// revealable (it is then sealed into the contribution, encrypted like every column).
    pub fn reveal_value(&self) -> &str {
        &self.value
    }
}

/// Longest accepted name or address, in characters; beyond it a value is garbage.
const MAX_TEXT_CHARS: usize = 256;

/// Normalises and validates `input` as an identifier of `kind`.
///
/// Every kind: Unicode NFKC (full-width digits and letters become ASCII), trimmed, inner
/// whitespace collapsed. Then per kind: ID numbers are checked and upgraded to 18 digits,
/// phone numbers lose their country prefix and separators, plates are upper-cased without
/// separators.
pub fn normalise(kind: IdentifierKind, input: &str) -> Result<RawIdentifier, NormaliseError> {
    let mut folded: String = input.nfkc().collect();
    let result = normalise_folded(kind, &folded);
    folded.zeroize();
    result.map(|value| RawIdentifier { kind, value })
}

fn normalise_folded(kind: IdentifierKind, folded: &str) -> Result<String, NormaliseError> {
    if folded.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(NormaliseError::ControlCharacter);
    }
    let compact = || {
        folded
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
    };
    let value = match kind {
        IdentifierKind::Person => idcard::canonical(&compact())?,
        IdentifierKind::Phone => phone(&compact())?,
        IdentifierKind::Plate => plate(&compact())?,
        IdentifierKind::Name => text(folded, true)?,
        IdentifierKind::Address => text(folded, false)?,
    };
    if value.is_empty() {
        return Err(NormaliseError::Blank);
    }
    Ok(value)
}

fn phone(compact: &str) -> Result<String, NormaliseError> {
    if compact.is_empty() {
        return Err(NormaliseError::Blank);
    }
    let digits: String = compact
        .chars()
        .filter(|c| !matches!(c, '-' | '(' | ')' | '.'))
        .collect();
    let national = digits
        .strip_prefix("+86")
        .or_else(|| digits.strip_prefix("0086"))
        .or_else(|| {
            (digits.len() == 13)
                .then(|| digits.strip_prefix("86"))
                .flatten()
        })
        .unwrap_or(&digits);
    let bytes = national.as_bytes();
    let valid = bytes.len() == 11
        && bytes.iter().all(u8::is_ascii_digit)
        && bytes[0] == b'1'
        && (b'3'..=b'9').contains(&bytes[1]);
    if valid {
        Ok(national.to_owned())
    } else {
        Err(NormaliseError::Phone)
    }
}

/// Provincial abbreviations that open a civilian plate.
const PLATE_PROVINCES: &str = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼";

fn plate(compact: &str) -> Result<String, NormaliseError> {
    if compact.is_empty() {
        return Err(NormaliseError::Blank);
    }
    let chars: Vec<char> = compact
        .chars()
        .filter(|c| !matches!(c, '-' | '·' | '•' | '.'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let (Some(province), Some(letter)) = (chars.first(), chars.get(1)) else {
        return Err(NormaliseError::Plate);
    };
    let rest = &chars[2..];
    let valid = PLATE_PROVINCES.contains(*province)
        && letter.is_ascii_uppercase()
        && (rest.len() == 5 || rest.len() == 6)
        && rest
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if valid {
        Ok(chars.into_iter().collect())
    } else {
        Err(NormaliseError::Plate)
    }
}

fn text(folded: &str, is_name: bool) -> Result<String, NormaliseError> {
    let mut out = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if is_name {
        // Transliterated minority names use many look-alike middle dots; keep one.
        out = out
            .chars()
            .map(|c| {
                if matches!(c, '•' | '・' | '‧' | '∙' | '.') {
                    '·'
                } else {
                    c
                }
            })
            .collect();
    }
    if out.is_empty() {
        return Err(NormaliseError::Blank);
    }
    if out.chars().count() > MAX_TEXT_CHARS {
        return Err(NormaliseError::TooLong {
            max: MAX_TEXT_CHARS,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentifierKind::*;

    fn norm(kind: IdentifierKind, input: &str) -> Result<String, NormaliseError> {
        normalise(kind, input).map(|raw| raw.reveal_value().to_owned())
    }

    #[test]
    fn normalisation_table() {
        let cases: &[(IdentifierKind, &str, Result<&str, NormaliseError>)] = &[
            // ID numbers: padding, full-width digits, lower-case x, legacy 15 digits.
            (Person, " 11010519491231002X ", Ok("11010519491231002X")),
            (
                Person,
                "１１０１０５１９４９１２３１００２ｘ",
                Ok("11010519491231002X"),
            ),
            (Person, "110105 1949 1231 002x", Ok("11010519491231002X")),
            (Person, "110105491231002", Ok("11010519491231002X")),
            (
                Person,
                "110105194912310021",
                Err(NormaliseError::IdCard(IdCardError::CheckDigit)),
            ),
            (
                Person,
                "   ",
                Err(NormaliseError::IdCard(IdCardError::Length)),
            ),
            // Phones: country prefixes, separators, full width.
            (Phone, "13812345678", Ok("13812345678")),
            (Phone, "+86 138-1234-5678", Ok("13812345678")),
            (Phone, "0086 13812345678", Ok("13812345678")),
            (Phone, "8613812345678", Ok("13812345678")),
            (Phone, "１３８１２３４５６７８", Ok("13812345678")),
            (Phone, "(138) 1234 5678", Ok("13812345678")),
            (Phone, "12812345678", Err(NormaliseError::Phone)),
            (Phone, "010-12345678", Err(NormaliseError::Phone)),
            (Phone, "", Err(NormaliseError::Blank)),
            // Names and addresses: NFKC, trimmed, collapsed whitespace.
            (Name, "  张  三 ", Ok("张 三")),
            (Name, "买买提•艾力", Ok("买买提·艾力")),
            (Name, "\t", Err(NormaliseError::Blank)),
            (Name, "李\u{0007}四", Err(NormaliseError::ControlCharacter)),
            (Address, "  东城区 　和平路１２号 ", Ok("东城区 和平路12号")),
            // Plates: upper case, separators dropped, new-energy 6-character plates.
            (Plate, "京a·12345", Ok("京A12345")),
            (Plate, "粤B D12345", Ok("粤BD12345")),
            (Plate, "ＸA12345", Err(NormaliseError::Plate)),
            (Plate, "京A1234", Err(NormaliseError::Plate)),
        ];
        for (kind, input, want) in cases {
            assert_eq!(
                norm(*kind, input).as_deref(),
                want.as_deref(),
                "{kind} {input:?}"
            );
        }
    }

    #[test]
    fn too_long_text_is_refused() {
        let long = "路".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(
            norm(Address, &long),
            Err(NormaliseError::TooLong {
                max: MAX_TEXT_CHARS
            })
        );
    }

    #[test]
    fn tokenizer_input_binds_the_kind() {
        let a = normalise(Name, "东城").unwrap();
        let b = normalise(Address, "东城").unwrap();
        assert_ne!(*a.tokenizer_input(), *b.tokenizer_input());
        assert!(a.tokenizer_input().starts_with(b"name\x1f"));
    }

    #[test]
    fn errors_never_echo_the_value() {
        let secret = "110105194912310021";
        let err = normalise(Person, secret).err().unwrap();
        assert!(!err.to_string().contains(secret));
        assert!(!format!("{err:?}").contains(secret));
    }
}
