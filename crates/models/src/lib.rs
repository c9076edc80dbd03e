//! Warning models: data specialists' threshold-based, tiered and categorised rules.
//!
//! - [`model`]: the `models/<id>.toml` format, its field checks and its digest.
//! - [`check`]: a model against the catalog — its SQL plans, names its subject, routing and
//!   feature columns, every column use is allowed by the contracts for the model's purpose
//!   (the shared checker in `blindwatch-policy`), evidence features are aggregates shown no
//!   finer than the contracts' `reveal_as` allows, and tier conditions are boolean
//!   expressions over the result's columns only.
//! - [`approval`]: partners' signed approvals of one exact model; [`ApprovedModel`], the
//!   only thing [`evaluate()`] runs.
//! - [`registry`]: the one registration service (check, approvals, install, audit) behind
//!   the command line and the server, and the re-check before every run.
//! - [`evaluate`]: runs an approved model through the engine, decides each subject's tier
//!   (first matching tier wins), turns tokens into pseudonyms at once and buckets evidence.
//! - [`run`]: the one run service (load, re-check, require approvals, evaluate, record,
//!   checkpoint) behind `blindwatch run`, the server's run route and scheduler, and the
//!   benchmark.
//! - [`record`]: applies a run's findings to the alert store and the audit log together.
//! - [`summary`]: what the caller of a run sees: subject counts released only at k or more.

pub mod approval;
pub mod check;
pub mod evaluate;
pub mod model;
pub mod record;
pub mod registry;
pub mod run;
pub mod summary;

pub use approval::{ApprovedModel, Unapproved};
pub use check::{CheckedModel, check};
pub use evaluate::{Evaluation, evaluate};
pub use model::{Category, Model, ModelError, TierRule, load_dir};
pub use record::{RecordError, record_run};
pub use registry::{Registry, RegistryError, Submission};
pub use run::{ModelRunReport, RunError, RunFailed, RunService, run_time};
pub use summary::{Counts, RunSummary, SubjectCount};
