//! Warning models: data specialists' threshold-based, tiered and categorised rules.
//!
//! - [`model`]: the `models/<id>.toml` format and its field checks.
//! - [`check`]: a model against the catalog — its SQL plans, names its subject, routing and
//!   feature columns, every column use is allowed by the contracts for the model's purpose
//!   (the shared checker in `blindwatch-policy`), evidence features are aggregates, and tier
//!   conditions are boolean expressions over the result's columns only.
//! - [`evaluate`]: runs a checked model through the engine, decides each subject's tier
//!   (first matching tier wins) and turns tokens into pseudonyms at once.
//! - [`record`]: applies a run's findings to the alert store and the audit log together.

pub mod check;
pub mod evaluate;
pub mod model;
pub mod record;

pub use check::{CheckedModel, check};
pub use evaluate::{Evaluation, evaluate};
pub use model::{Category, Model, ModelError, TierRule, load_dir};
pub use record::{RecordError, record_run};
