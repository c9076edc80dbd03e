//! The shipped policies, built into the binary so that `keys init` can lay them out in a
//! fresh data directory (the "embedded default").

use std::path::Path;

use anyhow::Context;
use blindwatch_common::fsutil;

macro_rules! shipped {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../policies/", $path)))),*]
    };
}

/// (path under `policies/`, contents) of the contracts and settings.
pub const SHIPPED: &[(&str, &str)] = shipped![
    "datasets/hospital.visits.toml",
    "datasets/insurance.claims.toml",
    "datasets/police.incidents.toml",
    "datasets/police.mental_health_registry.toml",
    "datasets/police.wanted.toml",
    "datasets/tax.employment.toml",
    "privacy.toml",
    "org.toml",
];

/// Every shipped file: the contracts and settings above, and the access crate's Cedar
/// schema and policies (listed once, there).
fn shipped() -> impl Iterator<Item = (&'static str, &'static str)> {
    SHIPPED
        .iter()
        .copied()
        .chain([(
            blindwatch_access::SCHEMA_FILE,
            blindwatch_access::shipped::SCHEMA,
        )])
        .chain(blindwatch_access::shipped::POLICIES.iter().copied())
}

/// Writes every shipped policy file that `dir` does not have yet; never overwrites.
pub fn install(dir: &Path) -> anyhow::Result<usize> {
    let mut written = 0;
    for (rel, text) in shipped() {
        let path = dir.join(rel);
        if !path.exists() {
            fsutil::write_new(&path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            written += 1;
        }
    }
    Ok(written)
}
