//! Holder for the top-level `benches/`; see `Cargo.toml` for the bench targets.
