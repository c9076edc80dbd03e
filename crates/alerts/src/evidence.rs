//! Alert evidence: the model's declared features, as numbers, dates, times and day buckets.

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
    /// How long ago, as coarse as the owning contract's `reveal_as` demands: no exact date
    /// or day count of a single event reaches an officer.
    Days(DayBucket),
}

impl std::fmt::Display for EvidenceValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvidenceValue::Int(v) => write!(f, "{v}"),
            EvidenceValue::Float(v) => write!(f, "{v:.2}"),
            EvidenceValue::Date(v) => write!(f, "{v}"),
            EvidenceValue::Time(v) => write!(f, "{}", v.format("%Y-%m-%d %H:%M:%S")),
            EvidenceValue::Days(b) => write!(f, "{b}"),
        }
    }
}

/// A "within N days" bucket of how long ago something happened: it holds the bucket's
/// bounds, never the day count. For the bounds `[1, 7, 30]`: `≤ 1 day`, `2–7 days`,
/// `8–30 days`, `> 30 days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DayBucket {
    /// At most this many days ago (the first bucket).
    Within(u32),
    /// From the first to the second number of days ago, both included.
    Between(u32, u32),
    /// More than this many days ago (past the largest bound).
    Beyond(u32),
}

impl DayBucket {
    /// The bucket of `days` under the ascending bounds `within_days`; a negative count (an
    /// event dated after the run's day) falls in the first bucket. None without bounds.
    pub fn of(days: i64, within_days: &[u32]) -> Option<DayBucket> {
        let largest = *within_days.last()?;
        Some(
            match within_days.iter().position(|n| days <= i64::from(*n)) {
                None => DayBucket::Beyond(largest),
                Some(0) => DayBucket::Within(within_days[0]),
                Some(i) => DayBucket::Between(within_days[i - 1] + 1, within_days[i]),
            },
        )
    }
}

impl std::fmt::Display for DayBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DayBucket::Within(1) => f.write_str("≤ 1 day"),
            DayBucket::Within(n) => write!(f, "≤ {n} days"),
            DayBucket::Between(a, b) => write!(f, "{a}–{b} days"),
            DayBucket::Beyond(n) => write!(f, "> {n} days"),
        }
    }
}

impl std::str::FromStr for DayBucket {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<DayBucket, &'static str> {
        const SHAPE: &str = "a day bucket is written `≤ N days`, `A–B days` or `> N days`";
        let n = |t: &str| t.parse::<u32>().map_err(|_| SHAPE);
        let body = s
            .strip_suffix(" days")
            .or_else(|| s.strip_suffix(" day"))
            .ok_or(SHAPE)?;
        if let Some(r) = body.strip_prefix("≤ ") {
            Ok(DayBucket::Within(n(r)?))
        } else if let Some(r) = body.strip_prefix("> ") {
            Ok(DayBucket::Beyond(n(r)?))
        } else {
            let (a, b) = body.split_once('–').ok_or(SHAPE)?;
            Ok(DayBucket::Between(n(a)?, n(b)?))
        }
    }
}

impl serde::Serialize for DayBucket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DayBucket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DayBucket, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Feature name → value (None for SQL NULL).
pub type Evidence = BTreeMap<String, Option<EvidenceValue>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_day_count_and_round_trip_without_the_count() {
        let bounds = [1, 7, 30, 90];
        for days in -3..200i64 {
            let b = DayBucket::of(days, &bounds).unwrap();
            // The bucket holds the count, and is the finest the bounds allow.
            let (low, high) = match b {
                DayBucket::Within(n) => (i64::MIN, i64::from(n)),
                DayBucket::Between(a, b) => (i64::from(a), i64::from(b)),
                DayBucket::Beyond(n) => (i64::from(n) + 1, i64::MAX),
            };
            assert!(low <= days && days <= high, "{days} in {b}");
            assert!(
                !bounds
                    .iter()
                    .any(|m| low <= i64::from(*m) && i64::from(*m) < high),
                "{b} spans a bound"
            );
            let value = EvidenceValue::Days(b);
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(serde_json::from_str::<EvidenceValue>(&json).unwrap(), value);
        }
        assert_eq!(DayBucket::of(5, &[]), None);
        let shown: Vec<String> = [0, 2, 8, 31, 91]
            .iter()
            .map(|d| DayBucket::of(*d, &bounds).unwrap().to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "≤ 1 day",
                "2–7 days",
                "8–30 days",
                "31–90 days",
                "> 90 days"
            ]
        );
        // Dates still read back as dates, buckets as buckets.
        let date: EvidenceValue = serde_json::from_str("\"2026-06-27\"").unwrap();
        assert!(matches!(date, EvidenceValue::Date(_)));
        assert!(serde_json::from_str::<EvidenceValue>("\"7 days\"").is_err());
    }
}
