//! Blindwatch access control with [Cedar](https://www.cedarpolicy.com/).
//!
//! **Principals**: an `Officer` (in a `Station`, which is in a `County`; a county duty officer
//! has `duty`), a data `Specialist`, an `Auditor`, a `Partner` agency.
//! **Actions**: `read_alert`, `act_on_alert` (acknowledge, assign, comment, close), `reveal`
//! (context: whether a justification was given), `check_model`, `register_model`,
//! `run_model`, `query`, `contribute`, `approve_model` (a partner consents to a model reading
//! one of its datasets), `read_audit`, `manage_silence`.
//! **Resources**: an `Alert` (station, county, tier 4 red .. 1 blue, model), a `Model`, a
//! `Dataset` (owned by a partner), a `Station` (for silences), and the `Platform` singleton
//! for queries and the audit log.
//!
//! The policies live in `policies/*.cedar`, checked against `policies/schema.cedarschema` in
//! strict mode when loaded: a policy that names an unknown attribute or compares the wrong
//! types refuses the whole load rather than silently never matching.
//!
//! Decisions follow Cedar's rules. **Default deny**: a request is allowed only if some
//! `permit` matches. **Forbid wins**: a matching `forbid` denies whatever permits match. The
//! schema is a first fence: each action names the principal and resource types it applies to
//! (only officers appear in alert actions), and a request outside them is denied before any
//! policy is evaluated. Callers use the typed [`Principal`], [`Action`] and [`Resource`];
//! [`AccessPolicies::decide`] builds the entities (Officer in Station in County) itself.
//!
//! Nothing identifying is logged: a decision emits one `tracing` debug event with the action
//! and the outcome only.

mod check;
mod org;
mod request;

use std::path::Path;

use cedar_policy::{Authorizer, PolicySet, Schema};

pub use check::{CheckReport, FileReport, PolicyDiagnostic, SCHEMA_FILE};
pub use org::{ORG_FILE, Org, OrgError};
pub use request::{Action, Context, Principal, Resource};

/// The policy files shipped in the repository's `policies/`, for embedding in the binary.
pub mod shipped {
    macro_rules! policy_files {
        ($($name:literal),* $(,)?) => {
            &[$(($name, include_str!(concat!("../../../policies/", $name)))),*]
        };
    }

    /// `policies/schema.cedarschema`.
    pub const SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");

    /// (file name, text) of every shipped `policies/*.cedar`.
    pub const POLICIES: &[(&str, &str)] = policy_files![
        "auditor-read-audit.cedar",
        "duty-officer-county-red.cedar",
        "forbid-reveal-without-justification.cedar",
        "officer-own-station.cedar",
        "officer-reveal.cedar",
        "officer-silence-own-station.cedar",
        "partner-own-dataset.cedar",
        "specialist-models.cedar",
    ];
}

/// Why a policy set was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("access policies refused ({} problem(s)); first: {}", .0.len(), first(.0))]
    Refused(Vec<PolicyDiagnostic>),
}

impl AccessError {
    /// Every problem found, with file and position where known.
    pub fn diagnostics(&self) -> &[PolicyDiagnostic] {
        match self {
            AccessError::Refused(d) => d,
        }
    }
}

fn first(diagnostics: &[PolicyDiagnostic]) -> String {
    diagnostics
        .first()
        .map_or_else(|| "none".to_owned(), ToString::to_string)
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `@id`s of the determining policies, sorted: the permits that allowed, or the forbids
    /// that denied. Empty for a default deny and for a request that could not be built.
    pub policies: Vec<String>,
}

impl Decision {
    fn deny() -> Self {
        Decision {
            allowed: false,
            policies: Vec::new(),
        }
    }
}

/// A validated schema and policy set, ready to decide requests.
pub struct AccessPolicies {
    schema: Schema,
    policies: PolicySet,
    report: CheckReport,
    authorizer: Authorizer,
}

impl AccessPolicies {
    /// Loads `dir/schema.cedarschema` and every `dir/*.cedar` (sorted by name). Any parse or
    /// validation error, a policy without `@id`, or a duplicate id refuses the load.
    pub fn load(dir: &Path) -> Result<AccessPolicies, AccessError> {
        let sources = check::read_dir(dir).map_err(AccessError::Refused)?;
        let (schema_file, schema) = &sources.schema;
        Self::compile(schema_file, schema, &sources.policies)
    }

    /// Like [`AccessPolicies::load`], from texts: `policies` holds (file name, text) pairs.
    pub fn from_sources(
        schema: &str,
        policies: &[(String, String)],
    ) -> Result<AccessPolicies, AccessError> {
        Self::compile(SCHEMA_FILE, schema, policies)
    }

    /// The policies shipped with Blindwatch (see [`shipped`]).
    pub fn shipped() -> Result<AccessPolicies, AccessError> {
        let policies: Vec<(String, String)> = shipped::POLICIES
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        Self::from_sources(shipped::SCHEMA, &policies)
    }

    fn compile(
        schema_file: &str,
        schema: &str,
        policies: &[(String, String)],
    ) -> Result<AccessPolicies, AccessError> {
        let compiled =
            check::compile(schema_file, schema, policies).map_err(AccessError::Refused)?;
        Ok(AccessPolicies {
            schema: compiled.schema,
            policies: compiled.policies,
            report: compiled.report,
            authorizer: Authorizer::new(),
        })
    }

    /// What was loaded: policy ids per file, and validator warnings.
    pub fn report(&self) -> &CheckReport {
        &self.report
    }

    /// Decides one request. Anything that prevents building a valid Cedar request (a principal
    /// or resource type the action does not apply to, a tier outside 1..=4) is a deny with no
    /// determining policy.
    pub fn decide(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
        context: &Context,
    ) -> Decision {
        let decision = match request::build(&self.schema, principal, action, resource, context) {
            Ok((request, entities)) => {
                let response = self
                    .authorizer
                    .is_authorized(&request, &self.policies, &entities);
                let errors = response.diagnostics().errors().count();
                if errors > 0 {
                    // Strict validation should make this impossible; the messages may hold
                    // entity names, so only the count is logged.
                    tracing::warn!(
                        action = action.name(),
                        errors,
                        "policy evaluation errors; those policies were skipped"
                    );
                }
                let mut policies: Vec<String> = response
                    .diagnostics()
                    .reason()
                    .map(ToString::to_string)
                    .collect();
                policies.sort();
                Decision {
                    allowed: response.decision() == cedar_policy::Decision::Allow,
                    policies,
                }
            }
            Err(kind) => {
                tracing::warn!(
                    action = action.name(),
                    kind = kind.as_str(),
                    "access request could not be built; denied"
                );
                Decision::deny()
            }
        };
        tracing::debug!(
            action = action.name(),
            allowed = decision.allowed,
            "access decision"
        );
        decision
    }
}

/// Checks a policy directory for `blindwatch policy check`: every problem, placed by file,
/// line and column, or a summary of what would be loaded.
pub fn check(dir: &Path) -> Result<CheckReport, Vec<PolicyDiagnostic>> {
    let sources = check::read_dir(dir)?;
    let (schema_file, schema) = &sources.schema;
    check::compile(schema_file, schema, &sources.policies).map(|c| c.report)
}
