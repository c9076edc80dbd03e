//! The 365-day window ending at `as_of`, with pre-formatted dates.

use chrono::Datelike;

use crate::people::{civil_from_days, days_from_civil};

/// Days in the activity window (`as_of` − 364 … `as_of`).
pub const WINDOW: u32 = 365;

#[derive(Debug, Clone)]
pub struct Calendar {
    pub as_of_year: i32,
    /// `YYYY-MM-DD` for 0..WINDOW days ago.
    dates: Vec<String>,
    /// The three tax periods, oldest first (`YYYY-MM`).
    pub periods: [String; 3],
}

impl Calendar {
    pub fn new(as_of: chrono::NaiveDate) -> Self {
        let as_of_days = days_from_civil(i64::from(as_of.year()), as_of.month(), as_of.day());
        let dates = (0..WINDOW)
            .map(|ago| {
                let (y, m, d) = civil_from_days(as_of_days - i64::from(ago));
                format!("{y:04}-{m:02}-{d:02}")
            })
            .collect();
        let month_index = i64::from(as_of.year()) * 12 + i64::from(as_of.month0());
        let period = |back: i64| {
            let mi = month_index - back;
            format!("{:04}-{:02}", mi.div_euclid(12), mi.rem_euclid(12) + 1)
        };
        Calendar {
            as_of_year: as_of.year(),
            dates,
            periods: [period(2), period(1), period(0)],
        }
    }

    /// The date `ago` days before `as_of` (clamped to the window).
    pub fn date(&self, ago: u32) -> &str {
        let i = (ago.min(WINDOW - 1)) as usize;
        self.dates.get(i).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_periods() {
        let as_of = chrono::NaiveDate::from_ymd_opt(2025, 3, 1).unwrap();
        let cal = Calendar::new(as_of);
        assert_eq!(cal.date(0), "2025-03-01");
        assert_eq!(cal.date(1), "2025-02-28");
        assert_eq!(cal.date(364), "2024-03-02");
        assert_eq!(
            cal.periods,
            ["2025-01".to_owned(), "2025-02".into(), "2025-03".into()]
        );
    }
}
