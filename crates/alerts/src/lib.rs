//! Alerts: what the warning models raise, routed to stations, and the officers' workflow.
//!
//! - [`Pseudonymizer`] turns a subject's token into a stable [`SubjectKey`] and a short
//!   display [`Pseudonym`] under the deployment key: stable within a deployment, meaningless
//!   outside it. Tokens are never stored here.
//! - [`Evidence`] values are numbers, dates and times only: an alert cannot hold text, so it
//!   cannot hold a name, a phone number or an address. Officers' free text (comments, close
//!   notes, justifications, silence reasons) is refused when it holds a number of 11 or more
//!   digits (a phone or ID-card number), in any script, spelled in Chinese numerals or
//!   broken up by separators and invisible characters ([`text`]); refusals never repeat the
//!   text.
//!
//! # Model runs
//!
//! [`AlertStore::apply_run`] keeps one open alert per (model, subject). A run's findings
//! raise a tier at once; a lower tier, or no finding, takes effect only after the model's
//! `keep_for` consecutive runs (no flapping): lowered, or resolved (closed with outcome
//! `resolved`).
//!
//! # Officers
//!
//! Officers (opaque [`blindwatch_audit::Principal`]s such as `officer:li@S03`)
//! [acknowledge](AlertStore::acknowledge), [assign](AlertStore::assign),
//! [comment](AlertStore::comment) and [close](AlertStore::close_alert) open alerts with an
//! [`Outcome`] (handled, false positive, duplicate). Each action is one transaction that
//! writes a history row with the actor and a short detail, and returns the updated
//! [`Alert`]; [`AlertStore::act`] does the same with a `before_commit` hook for the audit
//! log. A refused action ([`AlertStoreError`]: unknown alert, closed alert, already
//! acknowledged, empty or too long text, …) changes nothing. The stored status stays
//! `open`/`closed`; readers see the derived [`State`]: `open`, `acknowledged`, `closed`.
//!
//! After an officer closes an alert, runs that still find its subject under that model at
//! the same or a lower tier open nothing (the alert is *suppressing*). The suppression is
//! lifted once the subject is absent from `keep_for` consecutive runs (the condition ended;
//! a later finding opens a new alert), or when a finding rises above the closed alert's
//! tier, which opens a new alert reopened from it (history change `reopened`).
//!
//! # Events, silences, inhibition
//!
//! Every change of an alert is a history row, and the row id is the event id:
//! [`AlertStore::events_after`] pages through them for the live stream (resume with the last
//! id seen). Each [`AlertEvent`] says whether it should `notify`: officer actions never do;
//! a run change does unless an active [silence](AlertStore::add_silence) matches it
//! ([`Muted::Silence`]) or it is inhibited: its alert ends below red while the same subject
//! has an open red alert under another model ([`Muted::Inhibited`]). This is computed when
//! the events are read, from the stored history and silences. Silences never stop alerts
//! from being recorded.
//!
//! # Reading
//!
//! [`AlertStore::query`] lists alerts of a [`StationScope`] by tier, state, model and
//! assignee, a page at a time with a [`Cursor`]; [`AlertStore::subject_card`] gathers one
//! subject's alerts across models with their histories; [`AlertStore::list`] is the CLI's
//! unpaginated listing.
//!
//! The same SQL runs on SQLite (the default, `alerts.sqlite` in the data directory) and on
//! PostgreSQL (schema `alerts`), through sqlx `Any` and `$n` placeholders; only the
//! migrations differ per backend (`migrations/sqlite`, `migrations/postgres`).

mod card;
mod events;
mod evidence;
mod lifecycle;
mod pseudonym;
mod query;
mod silence;
mod store;
pub mod text;
mod workflow;

pub use blindwatch_audit::Tier;
pub use card::SubjectCard;
pub use events::{AlertEvent, MAX_EVENTS_PAGE, Muted};
pub use evidence::{DayBucket, Evidence, EvidenceValue};
pub use pseudonym::{Pseudonym, Pseudonymizer, SubjectKey};
pub use query::{AlertOrder, AlertPage, AlertQuery, Cursor, DEFAULT_PAGE, MAX_PAGE, StationScope};
pub use silence::{MAX_MATCHER_CHARS, MAX_STATION_CHARS, Silence, SilenceMatchers, StoredSilence};
pub use store::{
    Alert, AlertChange, AlertFilter, AlertStore, AlertStoreError, Change, EventKind, Finding,
    HistoryEntry, RunInput, RunOutcome, State, Status,
};
pub use workflow::{
    Action, MAX_COMMENT_CHARS, MAX_JUSTIFICATION_CHARS, MAX_REASON_CHARS, Outcome, check_text,
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
