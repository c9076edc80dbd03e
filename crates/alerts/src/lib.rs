//! Alerts: what the warning models raise, routed to stations.
//!
//! - [`Pseudonymizer`] turns a subject's token into a stable [`SubjectKey`] and a short
//!   display [`Pseudonym`] under the deployment key: stable within a deployment, meaningless
//!   outside it. Tokens are never stored here.
//! - [`AlertStore`] keeps one open alert per (model, subject). A run's findings raise a tier
//!   at once; a lower tier, or no finding, takes effect only after the model's `keep_for`
//!   consecutive runs (no flapping). Every change is kept in the alert's history.
//! - [`Evidence`] values are numbers, dates and times only: an alert cannot hold text, so it
//!   cannot hold a name, a phone number or an address.

mod evidence;
mod pseudonym;
mod store;

pub use blindwatch_audit::Tier;
pub use evidence::{Evidence, EvidenceValue};
pub use pseudonym::{Pseudonym, Pseudonymizer, SubjectKey};
pub use store::{
    Alert, AlertChange, AlertFilter, AlertStore, AlertStoreError, Change, Finding, RunInput,
    RunOutcome, Status,
};

/// Tiers from highest to lowest.
pub const TIERS: [Tier; 4] = [Tier::Red, Tier::Orange, Tier::Yellow, Tier::Blue];

/// Higher is more urgent: red 4 … blue 1.
pub fn tier_rank(t: Tier) -> u8 {
    match t {
        Tier::Red => 4,
        Tier::Orange => 3,
        Tier::Yellow => 2,
        Tier::Blue => 1,
    }
}

pub fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Red => "red",
        Tier::Orange => "orange",
        Tier::Yellow => "yellow",
        Tier::Blue => "blue",
    }
}

pub fn parse_tier(s: &str) -> Option<Tier> {
    TIERS.into_iter().find(|t| tier_name(*t) == s)
}
