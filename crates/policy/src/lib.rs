//! What may be done with the data.
//!
//! [`uses`] holds the one column-use checker: it compares how a planned query uses every
//! sealed column (the engine's [`PlanAnalysis`](blindwatch_engine::PlanAnalysis)) with what
//! the owning dataset's contract allows for the declared purpose. Model checks and the
//! aggregate-only query gate both call it.

pub mod uses;

pub use uses::{OutputRule, UseRefusal, check_column_uses};
