//! The partner side of Blindwatch. Runs on the partner's machine, with the partner's keys.
//!
//! [`seal`] streams an export through: read (CSV in UTF-8 or GBK/GB18030, or Parquet) →
//! check the header against the contract → per row, normalise and validate identifiers and
//! parse attributes (a bad row is rejected and reported by row number and reason, never by
//! value) → tokenise each distinct identifier once (batched through the [`Tokenizer`]) →
//! write a Parquet file with modular encryption (every column under its own key, keys
//! HPKE-wrapped to the platform) → sign a manifest. Raw identifiers never reach the output
//! unless the contract marks one revealable.
//!
//! This is the only crate that turns raw identifiers into tokens.

mod input;
mod rows;
mod seal;

pub use blindwatch_crypto::manifest::package_stem;
pub use input::{Encoding, InputFormat};
pub use rows::DEFAULT_TOKEN_CACHE_LIMIT;
pub use seal::{
    Package, SealError, SealOptions, SealOutcome, SealPermissions, rejects_dir, seal,
    seal_permitting,
};

use blindwatch_crypto::token::Tokenizer;

#[doc(hidden)]
pub fn _assert_object_safe(_: &dyn Tokenizer) {}
