//! What a run tells the people who start it (a specialist over HTTP, an operator at the
//! command line): counts of subjects, each released only when at least k
//! (`min_group_size` of `policies/privacy.toml`). A model that isolates one person cannot
//! be read as a yes/no oracle from its run: 0 and 1 both read "fewer than k". The alerts
//! themselves go to officers only.

use std::fmt;

use blindwatch_alerts::{Change, RunOutcome};

use crate::evaluate::Evaluation;
use crate::model::Model;

/// A number of subjects as it may be shown: the number when it is at least `k`, otherwise
/// only "fewer than k". The exact count below k cannot be read back from it (no accessor,
/// and `Debug` prints what `Display` prints).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SubjectCount {
    n: u64,
    k: u64,
}

impl SubjectCount {
    pub fn new(n: u64, k: u64) -> SubjectCount {
        SubjectCount { n, k }
    }

    /// The count, when it may be released.
    pub fn released(self) -> Option<u64> {
        (self.n >= self.k).then_some(self.n)
    }
}

impl fmt::Display for SubjectCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.released() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "fewer than {}", self.k),
        }
    }
}

impl fmt::Debug for SubjectCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A number at or above k, the string "fewer than k" below.
impl serde::Serialize for SubjectCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.released() {
            Some(n) => s.serialize_u64(n),
            None => s.collect_str(self),
        }
    }
}

/// One model's run, as the caller sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub model: String,
    pub version: u32,
    /// Subjects (result rows) the query returned.
    pub subjects: SubjectCount,
    pub opened: SubjectCount,
    pub raised: SubjectCount,
    pub lowered: SubjectCount,
    pub resolved: SubjectCount,
    pub unchanged: SubjectCount,
    /// Rows without a subject (a null token), skipped.
    pub without_subject: SubjectCount,
    /// Alerting subjects whose route names no valid station, not routed.
    pub unroutable: SubjectCount,
    /// Subjects with more than one row, skipped.
    pub duplicates: SubjectCount,
}

/// What one evaluation counted, kept for the summary once the findings are recorded.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    rows: u64,
    without_subject: u64,
    unroutable: u64,
    duplicates: u64,
}

impl Counts {
    pub fn of(e: &Evaluation) -> Counts {
        Counts {
            rows: e.rows,
            without_subject: e.without_subject,
            unroutable: e.unroutable,
            duplicates: e.duplicates,
        }
    }
}

impl RunSummary {
    pub fn new(model: &Model, counts: Counts, outcome: &RunOutcome, k: u64) -> RunSummary {
        let c = |n| SubjectCount::new(n, k);
        RunSummary {
            model: model.id.clone(),
            version: model.version,
            subjects: c(counts.rows),
            opened: c(outcome.count(Change::Opened)),
            raised: c(outcome.count(Change::Raised)),
            lowered: c(outcome.count(Change::Lowered)),
            resolved: c(outcome.count(Change::Resolved)),
            unchanged: c(outcome.unchanged),
            without_subject: c(counts.without_subject),
            unroutable: c(counts.unroutable),
            duplicates: c(counts.duplicates),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_below_k_read_the_same_whatever_they_are() {
        let k = 10;
        let below: Vec<(String, String, String)> = (0..k)
            .map(|n| {
                let c = SubjectCount::new(n, k);
                assert_eq!(c.released(), None);
                (
                    c.to_string(),
                    format!("{c:?}"),
                    serde_json::to_string(&c).unwrap(),
                )
            })
            .collect();
        assert!(below.iter().all(|b| *b == below[0]), "{below:?}");
        assert_eq!(below[0].0, "fewer than 10");
        assert_eq!(below[0].2, "\"fewer than 10\"");
        for n in [k, k + 1, 12_345] {
            let c = SubjectCount::new(n, k);
            assert_eq!(c.released(), Some(n));
            assert_eq!(c.to_string(), n.to_string());
            assert_eq!(serde_json::to_string(&c).unwrap(), n.to_string());
        }
    }
}
