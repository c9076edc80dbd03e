//! Alert evidence: the model's declared features, as numbers, dates and times only.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};

/// One evidence value. There is deliberately no text variant.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum EvidenceValue {
    Int(i64),
    Float(f64),
    Date(NaiveDate),
    Time(NaiveDateTime),
}

impl std::fmt::Display for EvidenceValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvidenceValue::Int(v) => write!(f, "{v}"),
            EvidenceValue::Float(v) => write!(f, "{v:.2}"),
            EvidenceValue::Date(v) => write!(f, "{v}"),
            EvidenceValue::Time(v) => write!(f, "{}", v.format("%Y-%m-%d %H:%M:%S")),
        }
    }
}

/// Feature name → value (None for SQL NULL).
pub type Evidence = BTreeMap<String, Option<EvidenceValue>>;
