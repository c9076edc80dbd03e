//! Per-partner quotas, from the `[token_authority]` section of `policies/privacy.toml`.
//! Other sections of that file belong to other parts of the platform and are ignored here.
//!
//! ```toml
//! [token_authority]
//! max_batch = 16384                                  # blinded elements per request (≤ 65535)
//! rate = { per_second = 20, burst = 40 }             # requests per partner
//! default = { per_day = 5000000, total = 100000000 } # partners not listed below
//!
//! [token_authority.partners]                         # each must be a registered partner
//! police = { per_day = 20000000, total = 500000000 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use blindwatch_crypto::blind::MAX_BATCH;
use serde::Deserialize;

/// A partner's limits, in evaluated elements: per UTC day and in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub per_day: u64,
    pub total: u64,
}

impl Limits {
    pub const UNLIMITED: Limits = Limits {
        per_day: u64::MAX,
        total: u64::MAX,
    };
}

/// Requests per partner: a token bucket refilled at `per_second`, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    pub const DEFAULT: RateLimit = RateLimit {
        per_second: 20,
        burst: 40,
    };
}

/// The authority's quota settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    /// Most elements a single request may carry.
    pub max_batch: usize,
    /// Requests per partner.
    pub rate: RateLimit,
    /// Limits for partners without their own entry.
    pub default: Limits,
    /// Limits per partner.
    pub partners: BTreeMap<String, Limits>,
}

pub const DEFAULT_MAX_BATCH: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the privacy settings {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the privacy settings {path} are not valid: {why}; fix the [token_authority] section")]
    Invalid { path: PathBuf, why: String },
    #[error(
        "the privacy settings {path} have no [token_authority] section: add one with `default = {{ per_day = N, total = N }}` (see README)"
    )]
    Missing { path: PathBuf },
    #[error(
        "[token_authority.partners] names `{name}`, which is not a registered partner of this authority (registered: {registered}): fix the name, or register the partner with `blindwatch tokens add-partner` first"
    )]
    UnknownPartner { name: String, registered: String },
}

#[derive(Deserialize)]
struct PrivacyFile {
    // Every other section is someone else's: serde ignores unknown fields here.
    token_authority: Option<Section>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    max_batch: Option<usize>,
    rate: Option<RateLimit>,
    default: Limits,
    #[serde(default)]
    partners: BTreeMap<String, Limits>,
}

impl Quotas {
    /// No limits (tests, benchmarks).
    pub fn unlimited() -> Quotas {
        Quotas {
            max_batch: DEFAULT_MAX_BATCH,
            rate: RateLimit {
                per_second: u32::MAX,
                burst: u32::MAX,
            },
            default: Limits::UNLIMITED,
            partners: BTreeMap::new(),
        }
    }

    /// Everyone gets `limits`.
    pub fn uniform(limits: Limits) -> Quotas {
        Quotas {
            default: limits,
            ..Quotas::unlimited()
        }
    }

    pub fn load(path: &Path) -> Result<Quotas, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Quotas::parse(&text, path)
    }

    /// Parses the text of a privacy settings file (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Quotas, PolicyError> {
        let invalid = |why: String| PolicyError::Invalid {
            path: path.to_owned(),
            why,
        };
        // toml's messages quote the offending line; settings hold no personal data.
        let file: PrivacyFile =
            toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        let section = file.token_authority.ok_or_else(|| PolicyError::Missing {
            path: path.to_owned(),
        })?;
        let max_batch = section.max_batch.unwrap_or(DEFAULT_MAX_BATCH);
        if max_batch == 0 || max_batch > MAX_BATCH {
            return Err(invalid(format!(
                "max_batch is {max_batch}; use 1 to {MAX_BATCH} (one proof covers at most that many)"
            )));
        }
        let rate = section.rate.unwrap_or(RateLimit::DEFAULT);
        if rate.per_second == 0 || rate.burst == 0 {
            return Err(invalid(
                "rate.per_second and rate.burst must be at least 1".into(),
            ));
        }
        for (name, limits) in std::iter::once(("default", &section.default))
            .chain(section.partners.iter().map(|(n, l)| (n.as_str(), l)))
        {
            if limits.per_day > limits.total {
                return Err(invalid(format!(
                    "partner `{name}` may use more per day ({}) than in total ({})",
                    limits.per_day, limits.total
                )));
            }
        }
        Ok(Quotas {
            max_batch,
            rate,
            default: section.default,
            partners: section.partners,
        })
    }

    pub fn limits_for(&self, partner: &str) -> Limits {
        self.partners.get(partner).copied().unwrap_or(self.default)
    }

    /// Refuses per-partner limits for a name that is not registered: a misspelt name would
    /// otherwise leave the real partner on the default limits without anyone noticing.
    pub fn check_partners<'a>(
        &self,
        registered: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), PolicyError> {
        for name in self.partners.keys() {
            if !registered.clone().any(|r| r == name) {
                let list: Vec<&str> = registered.clone().collect();
                return Err(PolicyError::UnknownPartner {
                    name: name.clone(),
                    registered: if list.is_empty() {
                        "none".into()
                    } else {
                        list.join(", ")
                    },
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_its_section() {
        let text = r#"
            [retention]
            whatever = "is someone else's"
            [query]
            k = 10
            [token_authority]
            max_batch = 1024
            rate = { per_second = 5, burst = 7 }
            default = { per_day = 10, total = 100 }
            [token_authority.partners]
            police = { per_day = 50, total = 500 }
        "#;
        let q = Quotas::parse(text, Path::new("privacy.toml")).unwrap();
        assert_eq!(q.max_batch, 1024);
        assert_eq!(
            q.rate,
            RateLimit {
                per_second: 5,
                burst: 7
            }
        );
        q.check_partners(["police", "hospital"].into_iter())
            .unwrap();
        let err = q
            .check_partners(["polise", "hospital"].into_iter())
            .unwrap_err();
        assert!(
            err.to_string().contains("`police`") && err.to_string().contains("polise"),
            "{err}"
        );
        assert_eq!(
            q.limits_for("hospital"),
            Limits {
                per_day: 10,
                total: 100
            }
        );
        assert_eq!(
            q.limits_for("police"),
            Limits {
                per_day: 50,
                total: 500
            }
        );
    }

    #[test]
    fn refuses_a_missing_section_and_typos() {
        let err = Quotas::parse("[query]\nk = 5\n", Path::new("p.toml")).unwrap_err();
        assert!(matches!(err, PolicyError::Missing { .. }), "{err}");
        let err = Quotas::parse(
            "[token_authority]\ndefault = { per_day = 1, totl = 2 }\n",
            Path::new("p.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("token_authority"), "{err}");
        let err = Quotas::parse(
            "[token_authority]\ndefault = { per_day = 10, total = 2 }\n",
            Path::new("p.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("per day"), "{err}");
        for bad in [
            "max_batch = 65536",
            "max_batch = 0",
            "rate = { per_second = 0, burst = 1 }",
        ] {
            let text =
                format!("[token_authority]\n{bad}\ndefault = {{ per_day = 1, total = 2 }}\n");
            assert!(Quotas::parse(&text, Path::new("p.toml")).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shipped_settings_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/privacy.toml");
        Quotas::load(&path).unwrap();
    }
}
