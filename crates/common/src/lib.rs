//! Shared vocabulary of Blindwatch.
//!
//! The one type that matters most here is [`RawIdentifier`]: a normalised identifier value
//! (an ID number, a phone number, a name, an address, a plate). It implements none of
//! `Debug`, `Display` or `Serialize`, zeroes its memory on drop, and hands its bytes
//! out only as the domain-separated input of a tokenizer. Raw values therefore cannot end up
//! in a log line, an error message, a JSON document or a file by accident.

pub mod fsutil;
pub mod idcard;
pub mod identifier;

pub use identifier::{IdentifierKind, NormaliseError, RawIdentifier, normalise};
