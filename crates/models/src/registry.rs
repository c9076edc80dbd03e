//! The one registration service behind `blindwatch model register`, `POST
//! /v1/models/register`, partners' approvals (`POST /v1/models/{id}/approvals`) and every
//! run: check against the contracts, verify and store approvals, require every reader's
//! approval, install, audit.

use std::path::{Path, PathBuf};

use blindwatch_audit::{
    AuditError, AuditEvent, AuditLog, AuditRecord, ModelId, PartnerId, Principal, ReasonCode,
};
use blindwatch_common::fsutil;
use blindwatch_engine::Engine;
use blindwatch_store::CatalogError;
use tokio::sync::Mutex;

use crate::approval::{
    self, ApprovedModel, Refused, RequireError, Unapproved, VerifiedApproval, partner_keys, readers,
};
use crate::check::{CheckedModel, check};
use crate::model::{Model, ModelError};

/// Why the service refused or failed. Refusals say what to do; none quotes data.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{} problem(s); nothing was changed: {}", .0.len(), join(.0))]
    Refused(Vec<ModelError>),
    #[error("{} approval(s) refused; nothing was stored: {}", .0.len(), join(.0))]
    Approvals(Vec<ApprovalFailure>),
    #[error("{0}")]
    Unapproved(Unapproved),
    #[error("the audit log refused the record ({0}); nothing was changed")]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("installing {}: {source}", path.display())]
    Install {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One refused approval and where it came from (a file name, or `approval`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {}", refused.refusal)]
pub struct ApprovalFailure {
    pub source_name: String,
    pub refused: Refused,
}

impl From<RequireError> for RegistryError {
    fn from(e: RequireError) -> RegistryError {
        match e {
            RequireError::Unapproved(u) => RegistryError::Unapproved(u),
            RequireError::Catalog(c) => RegistryError::Catalog(c),
        }
    }
}

/// A submitted approval: where it came from and its bytes.
pub struct Submission<'a> {
    pub source_name: String,
    pub envelope: &'a [u8],
}

fn code(s: &'static str) -> Result<ReasonCode, RegistryError> {
    Ok(ReasonCode::new(s)?)
}

fn model_id(model: &Model) -> Result<ModelId, RegistryError> {
    ModelId::new(&model.id).map_err(|_| {
        RegistryError::Refused(vec![ModelError::new(
            &model.file,
            "id",
            "use 1-64 lowercase letters, digits and `-`",
        )])
    })
}

fn partner_ids<'a>(
    names: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<PartnerId>, RegistryError> {
    names
        .into_iter()
        .map(|p| PartnerId::new(p.as_str()).map_err(RegistryError::from))
        .collect()
}

/// The service over one engine (its catalog and contracts) and the models directory.
pub struct Registry<'a> {
    pub engine: &'a Engine,
    /// Where registered models are installed (`DataDir::models_dir`).
    pub models_dir: &'a Path,
}

impl Registry<'_> {
    /// Parses and checks a model file's text against the contracts.
    pub async fn check_text(&self, text: &str, file: &Path) -> Result<CheckedModel, RegistryError> {
        let model = Model::parse(text, file).map_err(RegistryError::Refused)?;
        check(model, self.engine)
            .await
            .map_err(RegistryError::Refused)
    }

    /// Verifies approvals of `checked` (with `signer`, each must be that partner's own) and
    /// stores them, auditing each one. If any is refused, none is stored: every refusal is
    /// audited and returned. Returns the approving partners.
    pub async fn submit_approvals(
        &self,
        audit: &Mutex<AuditLog>,
        actor: &Principal,
        checked: &CheckedModel,
        submissions: &[Submission<'_>],
        signer: Option<&str>,
    ) -> Result<Vec<String>, RegistryError> {
        let model = checked.model();
        let id = model_id(model)?;
        let digest = model.digest();
        let readers = readers(checked, self.engine.contracts());
        let partners = partner_keys(self.engine.catalog()).await?;
        let mut verified: Vec<VerifiedApproval> = Vec::new();
        let mut failures = Vec::new();
        for s in submissions {
            match approval::verify(s.envelope, model, &digest, &readers, &partners, signer) {
                Ok(v) => verified.push(v),
                Err(refused) => failures.push(ApprovalFailure {
                    source_name: s.source_name.clone(),
                    refused,
                }),
            }
        }
        if !failures.is_empty() {
            let mut records = Vec::new();
            for f in &failures {
                records.push(AuditRecord::now(
                    actor.clone(),
                    AuditEvent::ModelApprovalRefused {
                        model: id.clone(),
                        partner: f
                            .refused
                            .partner
                            .as_deref()
                            .and_then(|p| PartnerId::new(p).ok()),
                        reason: code(f.refused.refusal.code())?,
                    },
                ));
            }
            audit.lock().await.append_batch(&records)?;
            return Err(RegistryError::Approvals(failures));
        }
        let mut records = Vec::new();
        for v in &verified {
            records.push(AuditRecord::now(
                actor.clone(),
                AuditEvent::ModelApproved {
                    model: id.clone(),
                    version: model.version,
                    partner: PartnerId::new(v.partner.as_str())?,
                    digest,
                },
            ));
        }
        // Audited before stored: nothing is kept that the log does not show.
        audit.lock().await.append_batch(&records)?;
        for v in &verified {
            self.engine
                .catalog()
                .record_model_approval(&v.stored)
                .await?;
        }
        Ok(verified.into_iter().map(|v| v.partner).collect())
    }

    /// Registers a model file's text: checked, the submitted approvals verified and stored,
    /// every reader's approval of this exact text required, audited, installed. A refusal
    /// for want of approvals names the partners and is audited; it installs nothing.
    pub async fn register(
        &self,
        audit: &Mutex<AuditLog>,
        actor: &Principal,
        text: &str,
        file: &Path,
        approvals: &[Submission<'_>],
    ) -> Result<ApprovedModel, RegistryError> {
        let checked = match self.check_text(text, file).await {
            Ok(c) => c,
            Err(e) => {
                // A model that does not check: audited with what it claims to be, if anything.
                let model = Model::parse(text, file)
                    .ok()
                    .and_then(|m| ModelId::new(&m.id).ok());
                audit.lock().await.append(&AuditRecord::now(
                    actor.clone(),
                    AuditEvent::ModelRegistrationAttemptRefused {
                        model,
                        principal: actor.clone(),
                        rule: code("model-refused")?,
                    },
                ))?;
                return Err(e);
            }
        };
        if !approvals.is_empty() {
            self.submit_approvals(audit, actor, &checked, approvals, None)
                .await?;
        }
        let approved = match approval::require(
            checked,
            self.engine.contracts(),
            self.engine.catalog(),
        )
        .await
        {
            Ok(a) => a,
            Err(RequireError::Unapproved(u)) => {
                audit.lock().await.append(&AuditRecord::now(
                    actor.clone(),
                    AuditEvent::ModelRegistrationRefused {
                        model: ModelId::new(&u.model)?,
                        version: u.version,
                        digest: u.digest,
                        reason: code("approval-missing")?,
                        partners: partner_ids(u.missing.keys())?,
                    },
                ))?;
                return Err(RegistryError::Unapproved(u));
            }
            Err(e) => return Err(e.into()),
        };
        let model = approved.model();
        audit.lock().await.append(&AuditRecord::now(
            actor.clone(),
            AuditEvent::ModelRegistered {
                model: model_id(model)?,
                version: model.version,
                tiers: model.tiers.len() as u32,
            },
        ))?;
        let target = self.models_dir.join(format!("{}.toml", model.id));
        std::fs::create_dir_all(self.models_dir)
            .and_then(|()| fsutil::replace(&target, text.as_bytes()))
            .map_err(|source| RegistryError::Install {
                path: target.clone(),
                source,
            })?;
        tracing::info!(model = %model.id, version = model.version, "model registered");
        Ok(approved)
    }

    /// A registered model, checked and its approvals verified again, ready to run; a model
    /// whose approvals are missing or stale is refused, audited, and not run.
    pub async fn approved_for_run(
        &self,
        audit: &Mutex<AuditLog>,
        actor: &Principal,
        model: Model,
    ) -> Result<ApprovedModel, RegistryError> {
        let checked = check(model, self.engine)
            .await
            .map_err(RegistryError::Refused)?;
        match approval::require(checked, self.engine.contracts(), self.engine.catalog()).await {
            Ok(a) => Ok(a),
            Err(RequireError::Unapproved(u)) => {
                audit.lock().await.append(&AuditRecord::now(
                    actor.clone(),
                    AuditEvent::ModelRunRefused {
                        model: ModelId::new(&u.model)?,
                        version: u.version,
                        digest: u.digest,
                        reason: code("approval-missing")?,
                        partners: partner_ids(u.missing.keys())?,
                    },
                ))?;
                Err(RegistryError::Unapproved(u))
            }
            Err(e) => Err(e.into()),
        }
    }
}
