//! The gate's settings: `[query]` of `policies/privacy.toml` (other sections belong to
//! other parts of the platform).
//!
//! ```toml
//! [query]
//! min_group_size = 10          # k: people in every released group (never below 2)
//! max_sql_bytes = 16384        # limits checked before planning
//! max_depth = 32
//! max_nodes = 1000
//! max_in_list = 500
//! max_tables = 6
//!
//! [query.privacy]              # every purpose, unless it has its own section
//! noise = true
//! epsilon_per_query = 1.0
//! delta_per_query = 1e-6
//! budget_epsilon = 30.0        # per principal and purpose, in total
//! budget_delta = 1e-4
//!
//! [query.purposes.analysis]    # one purpose's own values (any of the keys above)
//! epsilon_per_query = 0.5
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use crate::DEFAULT_MIN_GROUP_SIZE;
use crate::language::Limits;

#[derive(Debug, thiserror::Error)]
#[error("{file}: [query]: {reason}")]
pub struct SettingsError {
    file: String,
    reason: String,
}

/// How one purpose's answers are protected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PurposeSettings {
    /// Noise and budgets. Off only where `privacy.toml` says so for a purpose: then answers
    /// are exact above k, which differencing two answers can undo.
    pub noise: bool,
    pub epsilon_per_query: f64,
    pub delta_per_query: f64,
    pub budget_epsilon: f64,
    pub budget_delta: f64,
}

impl Default for PurposeSettings {
    fn default() -> Self {
        PurposeSettings {
            noise: true,
            epsilon_per_query: 1.0,
            delta_per_query: 1e-6,
            budget_epsilon: 30.0,
            budget_delta: 1e-4,
        }
    }
}

/// The gate's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    /// k: a released group has at least this many privacy units.
    pub min_group_size: u64,
    pub limits: Limits,
    pub default: PurposeSettings,
    pub purposes: BTreeMap<String, PurposeSettings>,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            min_group_size: DEFAULT_MIN_GROUP_SIZE,
            limits: Limits::default(),
            default: PurposeSettings::default(),
            purposes: BTreeMap::new(),
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct PrivacyFile {
    #[serde(default)]
    query: Option<QuerySection>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuerySection {
    min_group_size: Option<u64>,
    max_sql_bytes: Option<usize>,
    max_depth: Option<usize>,
    max_nodes: Option<usize>,
    max_in_list: Option<usize>,
    max_tables: Option<usize>,
    privacy: Option<PurposeSection>,
    #[serde(default)]
    purposes: BTreeMap<String, PurposeSection>,
}

#[derive(serde::Deserialize, Clone, Copy, Default)]
#[serde(deny_unknown_fields)]
struct PurposeSection {
    noise: Option<bool>,
    epsilon_per_query: Option<f64>,
    delta_per_query: Option<f64>,
    budget_epsilon: Option<f64>,
    budget_delta: Option<f64>,
}

impl PurposeSection {
    fn over(self, base: PurposeSettings) -> PurposeSettings {
        PurposeSettings {
            noise: self.noise.unwrap_or(base.noise),
            epsilon_per_query: self.epsilon_per_query.unwrap_or(base.epsilon_per_query),
            delta_per_query: self.delta_per_query.unwrap_or(base.delta_per_query),
            budget_epsilon: self.budget_epsilon.unwrap_or(base.budget_epsilon),
            budget_delta: self.budget_delta.unwrap_or(base.budget_delta),
        }
    }
}

fn check_purpose(name: &str, p: &PurposeSettings) -> Result<(), String> {
    let ok = |x: f64, lo: f64, hi: f64| x.is_finite() && x > lo && x <= hi;
    if !ok(p.epsilon_per_query, 0.0, 10.0) {
        return Err(format!(
            "{name}: epsilon_per_query must be above 0 and at most 10"
        ));
    }
    if !ok(p.delta_per_query, 0.0, 1e-3) {
        return Err(format!(
            "{name}: delta_per_query must be above 0 and at most 0.001"
        ));
    }
    if !ok(p.budget_epsilon, 0.0, 1e6) || !ok(p.budget_delta, 0.0, 1.0) {
        return Err(format!(
            "{name}: budget_epsilon and budget_delta must be positive"
        ));
    }
    Ok(())
}

impl GateSettings {
    pub fn load(path: &Path) -> Result<GateSettings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        GateSettings::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<GateSettings, SettingsError> {
        let bad = |reason: String| SettingsError {
            file: path.display().to_string(),
            reason,
        };
        let file: PrivacyFile = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
        let Some(q) = file.query else {
            return Ok(GateSettings::default());
        };
        let d = Limits::default();
        let limits = Limits {
            max_sql_bytes: q.max_sql_bytes.unwrap_or(d.max_sql_bytes),
            max_depth: q.max_depth.unwrap_or(d.max_depth),
            max_nodes: q.max_nodes.unwrap_or(d.max_nodes),
            max_in_list: q.max_in_list.unwrap_or(d.max_in_list),
            max_tables: q.max_tables.unwrap_or(d.max_tables),
        };
        if !(64..=1 << 20).contains(&limits.max_sql_bytes)
            || !(4..=64).contains(&limits.max_depth)
            || !(10..=100_000).contains(&limits.max_nodes)
            || !(1..=100_000).contains(&limits.max_in_list)
            || !(1..=32).contains(&limits.max_tables)
        {
            return Err(bad(
                "limits out of range: max_sql_bytes 64..1048576, max_depth 4..64 (deeper texts could exhaust the planner's stack), max_nodes 10..100000, max_in_list 1..100000, max_tables 1..32".into(),
            ));
        }
        let k = q.min_group_size.unwrap_or(DEFAULT_MIN_GROUP_SIZE);
        if k < 2 {
            return Err(bad(format!(
                "min_group_size = {k} would release single people; use 2 or more (default {DEFAULT_MIN_GROUP_SIZE})"
            )));
        }
        let default = q
            .privacy
            .unwrap_or_default()
            .over(PurposeSettings::default());
        check_purpose("[query.privacy]", &default).map_err(bad)?;
        let mut purposes = BTreeMap::new();
        for (name, section) in q.purposes {
            let p = section.over(default);
            check_purpose(&format!("[query.purposes.{name}]"), &p).map_err(bad)?;
            purposes.insert(name, p);
        }
        Ok(GateSettings {
            min_group_size: k,
            limits,
            default,
            purposes,
        })
    }

    /// The settings of one purpose.
    pub fn purpose(&self, purpose: &str) -> PurposeSettings {
        self.purposes.get(purpose).copied().unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_and_budgets_come_from_the_query_section() {
        let p = Path::new("privacy.toml");
        let s = GateSettings::parse("", p).unwrap();
        assert_eq!(s.min_group_size, 10);
        assert!(s.purpose("analysis").noise);
        let s = GateSettings::parse(
            "[token_authority]\nmax_batch = 5\n[query]\nmin_group_size = 25\n[query.privacy]\nepsilon_per_query = 0.5\n[query.purposes.audit-sample]\nnoise = false\n",
            p,
        )
        .unwrap();
        assert_eq!(s.min_group_size, 25);
        assert_eq!(s.purpose("analysis").epsilon_per_query, 0.5);
        assert!(!s.purpose("audit-sample").noise);
        assert_eq!(s.purpose("audit-sample").epsilon_per_query, 0.5);
        for (text, needle) in [
            ("[query]\nmin_group_size = 1\n", "single people"),
            ("[query]\nk = 5\n", "unknown field"),
            (
                "[query.privacy]\nepsilon_per_query = 0\n",
                "epsilon_per_query",
            ),
            (
                "[query.privacy]\nepsilon_per_query = nan\n",
                "epsilon_per_query",
            ),
            ("[query]\nmax_depth = 100000\n", "max_depth"),
            ("[query.purposes.x]\nbudget_delta = -1\n", "budget_delta"),
        ] {
            let err = GateSettings::parse(text, p).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
