//! Partners' approvals of models.
//!
//! A model that reads a partner's dataset runs only after that partner approved this exact
//! model: an approval is a DSSE envelope (the manifests' [`Envelope`]) whose payload is an
//! [`ApprovalStatement`] — model id, version, [`Model::digest`] and the partner's name —
//! signed with the partner's Ed25519 key. The platform verifies it under the key registered
//! in its catalog (`blindwatch partner register`), stores the envelope, and verifies every
//! stored envelope again whenever the model is registered or run: a changed model (another
//! digest), a replaced partner key or an approval of another model fails those checks. The
//! only way to an [`ApprovedModel`], which [`evaluate`](crate::evaluate()) requires, is
//! [`require`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use blindwatch_audit::Sha256Digest;
use blindwatch_contract::ContractSet;
use blindwatch_crypto::sign::{Envelope, EnvelopeError, SigningKey};
use blindwatch_store::{Catalog, CatalogError, PartnerRecord, StoredApproval};

use crate::check::CheckedModel;
use crate::model::Model;

/// The DSSE payload type of an approval.
pub const APPROVAL_PAYLOAD_TYPE: &str = "application/vnd.blindwatch.model-approval+json";

impl blindwatch_crypto::PlainJson for ApprovalStatement {}

/// What a partner signs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStatement {
    pub model: String,
    pub version: u32,
    /// [`Model::digest`] of the approved text.
    pub digest: Sha256Digest,
    pub partner: String,
}

/// Signs `partner`'s approval of `model` (on the partner's machine).
pub fn sign(model: &Model, partner: &str, key: &SigningKey) -> Envelope {
    let statement = ApprovalStatement {
        model: model.id.clone(),
        version: model.version,
        digest: model.digest(),
        partner: partner.to_owned(),
    };
    let payload = blindwatch_crypto::plain_json(&statement);
    Envelope::sign(APPROVAL_PAYLOAD_TYPE, &payload, key)
}

/// Why a submitted approval was refused. The codes go to the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefusal {
    #[error("it is not a signed approval (a DSSE envelope of an approval statement)")]
    Malformed,
    #[error("it is not a model approval (another payload type)")]
    WrongPayloadType,
    #[error(
        "it is not signed by the key the platform holds for the approving partner: the partner signs with its own key, registered by `blindwatch partner register`"
    )]
    UnknownKey,
    #[error("its signature does not verify: it was altered after signing")]
    BadSignature,
    #[error("it names another partner than the one whose key signed it")]
    PartnerMismatch,
    #[error("it approves another model")]
    OtherModel,
    #[error("it approves another version of the model; approve this version")]
    OtherVersion,
    #[error(
        "it approves another text of the model (the digest differs): every change needs a new approval"
    )]
    ChangedModel,
    #[error(
        "the approving partner owns no dataset the model reads; only the owners of the data a model reads approve it"
    )]
    NotAReader,
}

impl ApprovalRefusal {
    /// The audit reason code.
    pub fn code(self) -> &'static str {
        match self {
            ApprovalRefusal::Malformed => "malformed",
            ApprovalRefusal::WrongPayloadType => "wrong-payload-type",
            ApprovalRefusal::UnknownKey => "unknown-key",
            ApprovalRefusal::BadSignature => "bad-signature",
            ApprovalRefusal::PartnerMismatch => "partner-mismatch",
            ApprovalRefusal::OtherModel => "other-model",
            ApprovalRefusal::OtherVersion => "other-version",
            ApprovalRefusal::ChangedModel => "changed-model",
            ApprovalRefusal::NotAReader => "not-a-reader",
        }
    }
}

/// A refusal, with the partner whose registered key signed the envelope when one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub partner: Option<String>,
    pub refusal: ApprovalRefusal,
}

/// An approval that verified for one model: ready to be stored.
#[derive(Debug, Clone)]
pub struct VerifiedApproval {
    pub partner: String,
    pub stored: StoredApproval,
}

/// The partners whose datasets `checked` reads (the owners named by the contracts).
pub fn readers(checked: &CheckedModel, contracts: &ContractSet) -> BTreeSet<String> {
    checked
        .plan()
        .analysis()
        .tables
        .iter()
        // Tables are `<partner>.<dataset>` by construction; the contract is the authority.
        .map(|t| {
            contracts.get(t).map_or_else(
                |_| t.split('.').next().unwrap_or(t).to_owned(),
                |c| c.partner.clone(),
            )
        })
        .collect()
}

/// Verifies `envelope` as an approval of `model` (whose digest is `digest`) by one of its
/// `readers`, under the partner keys `partners` holds. With `signer`, only that partner's
/// key is tried (an approval posted by a partner's user is that partner's own).
pub fn verify(
    envelope: &[u8],
    model: &Model,
    digest: &Sha256Digest,
    readers: &BTreeSet<String>,
    partners: &[PartnerRecord],
    signer: Option<&str>,
) -> Result<VerifiedApproval, Refused> {
    let refused = |partner: Option<&str>, refusal| Refused {
        partner: partner.map(str::to_owned),
        refusal,
    };
    let env =
        Envelope::from_json(envelope).map_err(|_| refused(None, ApprovalRefusal::Malformed))?;
    // The envelope names its signer's key id; the catalog says whose key that is.
    let partner = partners
        .iter()
        .filter(|p| signer.is_none_or(|s| p.name == s))
        .find(|p| env.signer_ids().any(|id| id == p.key.id()))
        .ok_or_else(|| refused(None, ApprovalRefusal::UnknownKey))?;
    let name = Some(partner.name.as_str());
    let payload = env
        .verify(APPROVAL_PAYLOAD_TYPE, &partner.key)
        .map_err(|e| {
            refused(
                name,
                match e {
                    EnvelopeError::PayloadType { .. } => ApprovalRefusal::WrongPayloadType,
                    EnvelopeError::Format => ApprovalRefusal::Malformed,
                    EnvelopeError::NoSignature(_) | EnvelopeError::BadSignature(_) => {
                        ApprovalRefusal::BadSignature
                    }
                },
            )
        })?;
    let statement: ApprovalStatement =
        serde_json::from_slice(&payload).map_err(|_| refused(name, ApprovalRefusal::Malformed))?;
    let check = |ok: bool, r| if ok { Ok(()) } else { Err(refused(name, r)) };
    check(
        statement.partner == partner.name,
        ApprovalRefusal::PartnerMismatch,
    )?;
    check(statement.model == model.id, ApprovalRefusal::OtherModel)?;
    check(
        statement.version == model.version,
        ApprovalRefusal::OtherVersion,
    )?;
    check(statement.digest == *digest, ApprovalRefusal::ChangedModel)?;
    check(readers.contains(&partner.name), ApprovalRefusal::NotAReader)?;
    Ok(VerifiedApproval {
        partner: partner.name.clone(),
        stored: StoredApproval {
            model: model.id.clone(),
            version: model.version,
            digest: digest.to_string(),
            partner: partner.name.clone(),
            key_id: partner.key.id().as_str().to_owned(),
            envelope: env.to_json(),
        },
    })
}

/// The registered partners and their keys.
pub async fn partner_keys(catalog: &Catalog) -> Result<Vec<PartnerRecord>, CatalogError> {
    let mut out = Vec::new();
    for name in catalog.partners().await? {
        if let Some(p) = catalog.partner(&name).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// A checked model every reader approved, as it is now: the only input
/// [`evaluate`](crate::evaluate()) takes.
pub struct ApprovedModel {
    checked: CheckedModel,
    digest: Sha256Digest,
}

impl ApprovedModel {
    pub fn checked(&self) -> &CheckedModel {
        &self.checked
    }
    pub fn model(&self) -> &Model {
        self.checked.model()
    }
    pub fn digest(&self) -> &Sha256Digest {
        &self.digest
    }
}

/// Why one reader's approval does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The partner has no key in the catalog.
    NotRegistered,
    /// No approval by the partner of this model at all.
    None,
    /// Approvals of other versions or texts only.
    Stale,
    /// An approval of this digest that no longer verifies (the partner's key was replaced).
    Invalid,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Missing::NotRegistered => "not a registered partner: register its key first",
            Missing::None => "no approval",
            Missing::Stale => "its approval is of another version or text of the model (stale)",
            Missing::Invalid => {
                "its approval no longer verifies under its registered key (was the key replaced?): it must approve again"
            }
        })
    }
}

/// A model some readers have not approved as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "model {model} v{version} (digest {digest}) lacks the approval of {}; each partner reviews the model and runs `blindwatch model approve --partner NAME --partner-key NAME.key MODEL.toml`, then sends the approval to the platform (`model register --approval FILE`, or POST /v1/models/{model}/approvals)",
    list(.missing)
)]
pub struct Unapproved {
    pub model: String,
    pub version: u32,
    pub digest: Sha256Digest,
    /// Partner → why its approval is missing.
    pub missing: BTreeMap<String, Missing>,
}

fn list(missing: &BTreeMap<String, Missing>) -> String {
    missing
        .iter()
        .map(|(p, why)| format!("{p} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum RequireError {
    #[error(transparent)]
    Unapproved(#[from] Unapproved),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// `checked` if every partner whose data it reads has a stored approval of its current
/// digest that verifies under the partner's registered key now.
pub async fn require(
    checked: CheckedModel,
    contracts: &ContractSet,
    catalog: &Catalog,
) -> Result<ApprovedModel, RequireError> {
    let model = checked.model();
    let digest = model.digest();
    let readers = readers(&checked, contracts);
    let partners = partner_keys(catalog).await?;
    let stored = catalog.model_approvals(&model.id).await?;
    let mut missing = BTreeMap::new();
    for reader in &readers {
        if !partners.iter().any(|p| &p.name == reader) {
            missing.insert(reader.clone(), Missing::NotRegistered);
            continue;
        }
        let mine: Vec<&StoredApproval> = stored.iter().filter(|a| &a.partner == reader).collect();
        let valid = mine.iter().any(|a| {
            verify(
                &a.envelope,
                model,
                &digest,
                &readers,
                &partners,
                Some(reader),
            )
            .is_ok()
        });
        if !valid {
            let why = if mine.is_empty() {
                Missing::None
            } else if mine.iter().any(|a| a.digest == digest.to_string()) {
                Missing::Invalid
            } else {
                Missing::Stale
            };
            missing.insert(reader.clone(), why);
        }
    }
    if missing.is_empty() {
        Ok(ApprovedModel { checked, digest })
    } else {
        Err(Unapproved {
            model: model.id.clone(),
            version: model.version,
            digest,
            missing,
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use base64::Engine as _;

    use super::*;

    const MODEL: &str = r#"
id = "m"
version = 1
title = { zh = "测试", en = "Test" }
category = "fugitive"
purpose = "fugitive-tracking"
subject = "person"
route = "station"
schedule = "1h"
evidence = ["n"]
query = "SELECT 1"
tiers = [ { level = "red", when = "n > 2" } ]
"#;

    fn model(text: &str) -> Model {
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("id = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap();
        Model::parse(text, Path::new(&format!("{id}.toml"))).unwrap()
    }

    fn partner(name: &str, key: &SigningKey) -> PartnerRecord {
        PartnerRecord {
            name: name.into(),
            key: key.verifying_key(),
            datasets: Vec::new(),
        }
    }

    /// Every way an approval can be wrong is refused with its own code, and only the
    /// reader's own key over this exact model passes.
    #[test]
    fn only_a_readers_own_key_over_this_exact_model_approves_it() {
        let hospital = SigningKey::generate().unwrap();
        let insurance = SigningKey::generate().unwrap();
        let tax = SigningKey::generate().unwrap();
        let rogue = SigningKey::generate().unwrap();
        let partners = [
            partner("hospital", &hospital),
            partner("insurance", &insurance),
            partner("tax", &tax),
        ];
        let readers = BTreeSet::from(["hospital".to_owned(), "insurance".to_owned()]);
        let m = model(MODEL);
        let digest = m.digest();
        let verify_as = |env: &[u8], signer: Option<&str>| {
            verify(env, &m, &digest, &readers, &partners, signer)
        };
        let json = |e: Envelope| e.to_json();

        let good = verify_as(&json(sign(&m, "hospital", &hospital)), None).unwrap();
        assert_eq!(good.partner, "hospital");
        assert_eq!(good.stored.digest, digest.to_string());
        assert_eq!(good.stored.key_id, hospital.id().as_str());
        assert!(verify_as(&json(sign(&m, "hospital", &hospital)), Some("hospital")).is_ok());

        let other = |text: &str| model(text);
        let statement = |s: &ApprovalStatement| serde_json::to_vec(s).unwrap();
        let mut tampered = sign(&m, "hospital", &hospital);
        tampered.payload =
            base64::engine::general_purpose::STANDARD.encode(statement(&ApprovalStatement {
                model: "m".into(),
                version: 2,
                digest,
                partner: "hospital".into(),
            }));
        // (what, envelope, posted by, refusal, the partner whose key signed it)
        type Case<'a> = (
            &'a str,
            Vec<u8>,
            Option<&'a str>,
            ApprovalRefusal,
            Option<&'a str>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "not JSON",
                b"approved".to_vec(),
                None,
                ApprovalRefusal::Malformed,
                None,
            ),
            (
                "not an envelope",
                b"{}".to_vec(),
                None,
                ApprovalRefusal::Malformed,
                None,
            ),
            (
                "an unregistered key",
                json(sign(&m, "hospital", &rogue)),
                None,
                ApprovalRefusal::UnknownKey,
                None,
            ),
            (
                "another partner's key, posted as the hospital",
                json(sign(&m, "insurance", &insurance)),
                Some("hospital"),
                ApprovalRefusal::UnknownKey,
                None,
            ),
            (
                "another partner's key under the hospital's name",
                json(sign(&m, "hospital", &insurance)),
                None,
                ApprovalRefusal::PartnerMismatch,
                Some("insurance"),
            ),
            (
                "altered after signing",
                json(tampered),
                None,
                ApprovalRefusal::BadSignature,
                Some("hospital"),
            ),
            (
                "another payload type",
                json(Envelope::sign(
                    "application/json",
                    &statement(&ApprovalStatement {
                        model: "m".into(),
                        version: 1,
                        digest,
                        partner: "hospital".into(),
                    }),
                    &hospital,
                )),
                None,
                ApprovalRefusal::WrongPayloadType,
                Some("hospital"),
            ),
            (
                "a signed payload that is not a statement",
                json(Envelope::sign(
                    APPROVAL_PAYLOAD_TYPE,
                    b"{\"model\":\"m\"}",
                    &hospital,
                )),
                None,
                ApprovalRefusal::Malformed,
                Some("hospital"),
            ),
            (
                "replayed from another model",
                json(sign(
                    &other(&MODEL.replace("id = \"m\"", "id = \"n\"")),
                    "hospital",
                    &hospital,
                )),
                None,
                ApprovalRefusal::OtherModel,
                Some("hospital"),
            ),
            (
                "another version",
                json(sign(
                    &other(&MODEL.replace("version = 1", "version = 2")),
                    "hospital",
                    &hospital,
                )),
                None,
                ApprovalRefusal::OtherVersion,
                Some("hospital"),
            ),
            (
                "a changed text of the same version",
                json(sign(
                    &other(&MODEL.replace("n > 2", "n > 1")),
                    "hospital",
                    &hospital,
                )),
                None,
                ApprovalRefusal::ChangedModel,
                Some("hospital"),
            ),
            (
                "a partner whose data the model does not read",
                json(sign(&m, "tax", &tax)),
                None,
                ApprovalRefusal::NotAReader,
                Some("tax"),
            ),
        ];
        for (what, env, signer, refusal, by) in cases {
            let got = verify_as(&env, signer).map(|v| v.partner);
            assert_eq!(
                got,
                Err(Refused {
                    partner: by.map(str::to_owned),
                    refusal
                }),
                "{what}"
            );
        }
        // A key the catalog replaced: the old approval no longer verifies.
        let replaced = [partner("hospital", &SigningKey::generate().unwrap())];
        assert_eq!(
            verify(
                &json(sign(&m, "hospital", &hospital)),
                &m,
                &digest,
                &readers,
                &replaced,
                None
            )
            .map(|v| v.partner)
            .unwrap_err()
            .refusal,
            ApprovalRefusal::UnknownKey
        );
    }
}
