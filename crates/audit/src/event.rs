//! The structured audit entry: [`AuditRecord`] = time + actor + [`AuditEvent`].
//!
//! The types are the privacy rule made concrete: every field is an id, a digest, a count
//! or a small enum. Ids are validated on construction *and* on deserialisation, so a value
//! with spaces, non-ASCII text (a name), or a long digit run (a phone or ID-card number)
//! can neither be logged nor read back as a valid entry. There is no free-form text field.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::AuditError;
use crate::merkle::sha256;

/// Longest run of consecutive ASCII digits an id may contain. Mainland phone numbers have
/// 11 digits and ID-card numbers 17-18, so anything at 11 or beyond is refused.
pub const MAX_DIGIT_RUN: usize = 10;

const ID_RULE: &str = "ids are 1-128 ASCII letters, digits and `._:@/-`, start with a letter or digit, and never contain 11 or more digits in a row (that looks like a phone or ID-card number); use an opaque id, never a name or identifier";
const SLUG_RULE: &str = "codes are 1-64 lowercase ASCII letters, digits and `-`, start with a letter, and never contain 11 or more digits in a row";

fn longest_digit_run(s: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    for b in s.bytes() {
        if b.is_ascii_digit() {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

fn check_id(kind: &'static str, s: &str) -> Result<(), AuditError> {
    let err = |what| AuditError::InvalidId {
        kind,
        what,
        rule: ID_RULE,
    };
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.len() > 128 {
        return Err(err("it is longer than 128 bytes"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:@/-".contains(&b))
    {
        return Err(err(
            "it contains a character outside ASCII letters, digits and `._:@/-`",
        ));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(err("it does not start with a letter or digit"));
    }
    if longest_digit_run(s) > MAX_DIGIT_RUN {
        return Err(err("it contains 11 or more digits in a row"));
    }
    Ok(())
}

fn check_slug(kind: &'static str, s: &str) -> Result<(), AuditError> {
    let err = |what| AuditError::InvalidId {
        kind,
        what,
        rule: SLUG_RULE,
    };
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.len() > 64 {
        return Err(err("it is longer than 64 bytes"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(
            "it contains a character outside lowercase ASCII letters, digits and `-`",
        ));
    }
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return Err(err("it does not start with a lowercase letter"));
    }
    if longest_digit_run(s) > MAX_DIGIT_RUN {
        return Err(err("it contains 11 or more digits in a row"));
    }
    Ok(())
}

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps the value; the error never echoes it.
            pub fn new(value: impl Into<String>) -> Result<Self, AuditError> {
                let value = value.into();
                $check($kind, &value)?;
                Ok(Self(value))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = AuditError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = AuditError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_string!(
    /// A partner agency id, e.g. `hospital`.
    PartnerId, "partner id", check_id
);
validated_string!(
    /// A dataset id within a partner, e.g. `visits`.
    DatasetId, "dataset id", check_id
);
validated_string!(
    /// A warning model id, e.g. `fugitive-medical-visit`.
    ModelId, "model id", check_id
);
validated_string!(
    /// An alert id (opaque, assigned by the alert store).
    AlertId, "alert id", check_id
);
validated_string!(
    /// A police station id, e.g. `s03`.
    StationId, "station id", check_id
);
validated_string!(
    /// A silence id.
    SilenceId, "silence id", check_id
);
validated_string!(
    /// An authenticated principal (account) of the platform, e.g. `officer:s03-0042` or
    /// `partner:hospital` or `system`. The user's account id, never a data subject's.
    Principal, "principal", check_id
);
validated_string!(
    /// A declared processing purpose, e.g. `fugitive-tracking`.
    Purpose, "purpose", check_slug
);
validated_string!(
    /// A machine-readable reason code, e.g. `bad-signature` or `replayed-sequence`.
    ReasonCode, "reason code", check_slug
);

/// A SHA-256 digest, written as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The SHA-256 digest of `data` (e.g. the text of a query; the text itself is not logged).
    pub fn of(data: &[u8]) -> Self {
        Self(sha256(data))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(serde::de::Error::custom(
                "a SHA-256 digest is 64 lowercase hex digits",
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out)
            .map_err(|_| serde::de::Error::custom("a SHA-256 digest is 64 lowercase hex digits"))?;
        Ok(Self(out))
    }
}

/// Alert tier, highest first: red (I, 红色), orange (II, 橙色), yellow (III, 黄色), blue (IV, 蓝色).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Tier I.
    Red,
    /// Tier II.
    Orange,
    /// Tier III.
    Yellow,
    /// Tier IV.
    Blue,
}

/// A UTC time, written as RFC 3339 with millisecond precision and a `Z` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The current time, truncated to milliseconds so that it round-trips exactly.
    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    /// Wraps a time, truncated to milliseconds.
    pub fn from_datetime(t: DateTime<Utc>) -> Self {
        let ms = t.timestamp_millis();
        Self(DateTime::from_timestamp_millis(ms).unwrap_or(t))
    }

    /// The wrapped time.
    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = DateTime::parse_from_rfc3339(&s)
            .map_err(|_| serde::de::Error::custom("time must be RFC 3339"))?;
        if t.offset().local_minus_utc() != 0 || !s.ends_with('Z') {
            return Err(serde::de::Error::custom(
                "time must be in UTC with a `Z` suffix",
            ));
        }
        Ok(Self::from_datetime(t.with_timezone(&Utc)))
    }
}

/// What happened. Every variant holds ids, digests, counts and small enums only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum AuditEvent {
    /// A partner's contribution passed every check and was stored.
    ContributionAccepted {
        /// Contributing partner.
        partner: PartnerId,
        /// Dataset within the partner.
        dataset: DatasetId,
        /// The contribution's sequence number.
        sequence: u64,
        /// Rows in the contribution.
        rows: u64,
    },
    /// A contribution was refused; nothing of it was stored.
    ContributionRefused {
        /// Contributing partner.
        partner: PartnerId,
        /// Dataset within the partner.
        dataset: DatasetId,
        /// The sequence number the package claimed.
        sequence: u64,
        /// Why it was refused, e.g. `bad-signature`.
        reason: ReasonCode,
        /// Rows the manifest declared, if it could be read.
        rows: Option<u64>,
    },
    /// The token authority evaluated a batch of blinded elements for a partner.
    TokenEvaluationBatch {
        /// Requesting partner.
        partner: PartnerId,
        /// Elements evaluated.
        count: u64,
    },
    /// A warning model was registered (passed the contract checks).
    ModelRegistered {
        /// Model id.
        model: ModelId,
        /// Model version.
        version: u32,
        /// Number of tiers the model defines.
        tiers: u32,
    },
    /// A warning model ran.
    ModelRun {
        /// Model id.
        model: ModelId,
        /// Model version.
        version: u32,
        /// Subjects the query returned.
        subjects: u64,
        /// Alerts opened by this run.
        alerts_opened: u64,
        /// Alerts whose tier changed in this run.
        alerts_changed: u64,
    },
    /// An aggregate query ran through the privacy gate.
    QueryRun {
        /// SHA-256 of the query text (the text is not logged).
        query_sha256: Sha256Digest,
        /// Who ran it.
        principal: Principal,
        /// Declared purpose.
        purpose: Purpose,
        /// Groups released (at least k privacy units each).
        groups_released: u64,
        /// Groups withheld (under k units, or under the noisy release threshold). Auditors
        /// see it; the analyst does not.
        groups_withheld: u64,
        /// Privacy budget this answer spent: ε in millionths (0 without noise).
        epsilon_micro: u64,
        /// δ in 1e-15ths.
        delta_femto: u64,
    },
    /// A query was refused, by the access policies or the privacy gate.
    QueryRefused {
        /// SHA-256 of the query text (the text is not logged).
        query_sha256: Sha256Digest,
        /// Who asked.
        principal: Principal,
        /// Declared purpose.
        purpose: Purpose,
        /// The rule it broke (`access-policy`, `column-use`, `aggregate-only`, ...).
        rule: ReasonCode,
    },
    /// An alert was opened.
    AlertOpened {
        /// Alert id.
        alert: AlertId,
        /// Raising model.
        model: ModelId,
        /// Model version.
        version: u32,
        /// Initial tier.
        tier: Tier,
        /// Responsible station.
        station: StationId,
    },
    /// An alert moved to another tier.
    AlertTierChanged {
        /// Alert id.
        alert: AlertId,
        /// Raising model.
        model: ModelId,
        /// Previous tier.
        from: Tier,
        /// New tier.
        to: Tier,
        /// Responsible station.
        station: StationId,
    },
    /// An alert was closed.
    AlertClosed {
        /// Alert id.
        alert: AlertId,
        /// Raising model.
        model: ModelId,
        /// Tier at closing.
        tier: Tier,
        /// Responsible station.
        station: StationId,
    },
    /// An officer read an alert or a subject card.
    AlertRead {
        /// Alert id.
        alert: AlertId,
        /// Who read it.
        principal: Principal,
    },
    /// An officer acted on an alert.
    AlertActed {
        /// Alert id.
        alert: AlertId,
        /// Who acted.
        principal: Principal,
        /// `acknowledge`, `assign`, `comment`, or `close-<outcome>`.
        action: ReasonCode,
    },
    /// Someone asked to reveal an alert's revealable fields.
    RevealRequested {
        /// Alert id.
        alert: AlertId,
        /// Requesting principal.
        principal: Principal,
        /// Declared justification code.
        reason: ReasonCode,
    },
    /// A reveal was granted.
    RevealGranted {
        /// Alert id.
        alert: AlertId,
        /// Principal who receives the reveal.
        principal: Principal,
        /// Policy reason code.
        reason: ReasonCode,
    },
    /// A reveal was refused.
    RevealRefused {
        /// Alert id.
        alert: AlertId,
        /// Principal who asked.
        principal: Principal,
        /// Policy reason code.
        reason: ReasonCode,
    },
    /// An alert silence was created.
    SilenceCreated {
        /// Silence id.
        silence: SilenceId,
        /// Who created it.
        creator: Principal,
    },
    /// A policy set (Cedar policies, contracts, privacy settings) was loaded.
    PolicyLoaded {
        /// SHA-256 over the loaded policy files.
        digest: Sha256Digest,
    },
    /// A partner's signed approval of one model version was verified and stored.
    ModelApproved {
        /// Model id.
        model: ModelId,
        /// Model version.
        version: u32,
        /// The approving partner (whose registered key signed it).
        partner: PartnerId,
        /// The model digest the partner signed.
        digest: Sha256Digest,
    },
    /// A submitted approval was refused; nothing was stored.
    ModelApprovalRefused {
        /// The model it was submitted for.
        model: ModelId,
        /// The partner whose key signed it, when one was recognised.
        partner: Option<PartnerId>,
        /// Why, e.g. `bad-signature`, `changed-model`, `other-model`.
        reason: ReasonCode,
    },
    /// A model's registration was refused for want of partners' approvals.
    ModelRegistrationRefused {
        /// Model id.
        model: ModelId,
        /// Model version.
        version: u32,
        /// The model's digest.
        digest: Sha256Digest,
        /// `approval-missing`.
        reason: ReasonCode,
        /// The partners whose valid approval of this digest is missing.
        partners: Vec<PartnerId>,
    },
    /// A registered model was not run: its approvals are missing or stale.
    ModelRunRefused {
        /// Model id.
        model: ModelId,
        /// Model version.
        version: u32,
        /// The installed model's digest.
        digest: Sha256Digest,
        /// `approval-missing`.
        reason: ReasonCode,
        /// The partners whose valid approval of this digest is missing.
        partners: Vec<PartnerId>,
    },
    /// The token authority evaluated a batch of blinded elements for a partner (replaces
    /// `token_evaluation_batch`, which older logs hold): the request's nonce digest makes the
    /// log the durable record of accepted requests, so a restarted authority still refuses
    /// a replay.
    TokenEvaluation {
        /// Requesting partner.
        partner: PartnerId,
        /// Elements evaluated.
        count: u64,
        /// SHA-256 of `partner ‖ 0x00 ‖ the request's nonce` (the nonce is random).
        nonce: Sha256Digest,
    },
    /// An empty contribution was accepted because its signed manifest says it is meant
    /// (`partner seal --allow-empty`); for a replace dataset it emptied the dataset.
    EmptyContributionAccepted {
        /// Contributing partner.
        partner: PartnerId,
        /// Dataset within the partner.
        dataset: DatasetId,
        /// The contribution's sequence number.
        sequence: u64,
        /// The dataset is a replace dataset: it is now empty.
        replaced: bool,
    },
    /// A dataset's tokens moved to another mode or key (`blindwatch dataset rotate-tokens`):
    /// a new token generation began, and only its contributions are current from now on.
    TokenGenerationStarted {
        /// The dataset's partner.
        partner: PartnerId,
        /// Dataset within the partner.
        dataset: DatasetId,
        /// The new generation (1 is the first contribution's).
        generation: u64,
        /// `blind` or `consortium`.
        mode: ReasonCode,
        /// SHA-256 of the new token key id (a key id may hold long digit runs).
        key_id_sha256: Sha256Digest,
    },
    /// A request was refused before it named anything the log can hold (a malformed id, a
    /// body of the wrong shape, an unknown purpose): who, which action, which rule.
    RequestRefused {
        /// Who asked.
        principal: Principal,
        /// The action asked for, e.g. `reveal`, `create-silence`, `query`.
        action: ReasonCode,
        /// The rule that refused it.
        rule: ReasonCode,
    },
    /// A silence was refused (created or expired).
    SilenceRefused {
        /// Who asked.
        principal: Principal,
        /// The silence, when the request named a valid one.
        silence: Option<SilenceId>,
        /// `create-silence` or `expire-silence`.
        action: ReasonCode,
        /// The rule that refused it, e.g. `unknown-model`, `text-identifier`.
        rule: ReasonCode,
    },
    /// A silence was ended before its end time.
    SilenceExpired {
        /// Silence id.
        silence: SilenceId,
        /// Who ended it.
        principal: Principal,
    },
    /// A model registration request was refused before any approval was weighed: by the
    /// access policies, or because the model does not check (`ModelRegistrationRefused` is
    /// the refusal for missing approvals).
    ModelRegistrationAttemptRefused {
        /// The model, when its file named a valid id.
        model: Option<ModelId>,
        /// Who asked.
        principal: Principal,
        /// The rule that refused it, e.g. `model-refused`, `access-policy`.
        rule: ReasonCode,
    },
}

/// One audit log entry: who, when, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// When it happened (UTC).
    pub time: Timestamp,
    /// The authenticated principal that caused it.
    pub actor: Principal,
    /// What happened.
    pub event: AuditEvent,
}

impl AuditRecord {
    /// A record stamped with the current time.
    pub fn now(actor: Principal, event: AuditEvent) -> Self {
        Self {
            time: Timestamp::now(),
            actor,
            event,
        }
    }

    /// The canonical encoding stored in the log: compact JSON, fields in declaration order.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, AuditError> {
        serde_json::to_vec(self).map_err(|e| AuditError::encoding("encoded", &e))
    }

    /// Decodes a stored entry.
    pub fn from_json(bytes: &[u8]) -> Result<Self, AuditError> {
        serde_json::from_slice(bytes).map_err(|e| AuditError::encoding("decoded", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditRecord {
        AuditRecord {
            time: Timestamp::from_datetime(
                DateTime::parse_from_rfc3339("2026-11-30T01:02:03.456Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            actor: Principal::new("partner:hospital").unwrap(),
            event: AuditEvent::ContributionAccepted {
                partner: PartnerId::new("hospital").unwrap(),
                dataset: DatasetId::new("visits").unwrap(),
                sequence: 7,
                rows: 1200,
            },
        }
    }

    #[test]
    fn canonical_json_is_stable() {
        let json = String::from_utf8(sample().to_canonical_json().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"time":"2026-11-30T01:02:03.456Z","actor":"partner:hospital","event":{"type":"contribution_accepted","partner":"hospital","dataset":"visits","sequence":7,"rows":1200}}"#
        );
        assert_eq!(AuditRecord::from_json(json.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn ids_refuse_personal_looking_values() {
        // Names with spaces or non-ASCII, phone numbers and ID-card numbers are refused.
        for bad in [
            "",
            "Zhang San",
            "张三",
            "13800138000",
            "id-110101199003071234",
            "a\nb",
            "-leading",
        ] {
            let err = PartnerId::new(bad).unwrap_err().to_string();
            // The message explains the rule but never echoes the refused value.
            if !bad.is_empty() {
                assert!(!err.contains(bad), "{err}");
            }
        }
        assert!(ReasonCode::new("Bad Signature").is_err());
        assert!(ReasonCode::new("bad-signature").is_ok());
        assert!(Principal::new("officer:s03-0042").is_ok());
        assert!(AlertId::new("a-2026-000123").is_ok());
    }

    #[test]
    fn deserialising_refuses_invalid_ids_and_unknown_fields() {
        let with_phone = r#"{"time":"2026-11-30T01:02:03.456Z","actor":"13800138000","event":{"type":"policy_loaded","digest":"0000000000000000000000000000000000000000000000000000000000000000"}}"#;
        assert!(AuditRecord::from_json(with_phone.as_bytes()).is_err());
        let extra_field = r#"{"time":"2026-11-30T01:02:03.456Z","actor":"system","event":{"type":"policy_loaded","digest":"0000000000000000000000000000000000000000000000000000000000000000","note":"free text"}}"#;
        assert!(AuditRecord::from_json(extra_field.as_bytes()).is_err());
        let not_utc = r#"{"time":"2026-11-30T09:02:03.456+08:00","actor":"system","event":{"type":"policy_loaded","digest":"0000000000000000000000000000000000000000000000000000000000000000"}}"#;
        assert!(AuditRecord::from_json(not_utc.as_bytes()).is_err());
        let ok = r#"{"time":"2026-11-30T01:02:03.456Z","actor":"system","event":{"type":"policy_loaded","digest":"0000000000000000000000000000000000000000000000000000000000000000"}}"#;
        assert!(AuditRecord::from_json(ok.as_bytes()).is_ok());
    }

    #[test]
    fn every_variant_round_trips() {
        let p = || Principal::new("specialist:li").unwrap();
        let m = || ModelId::new("fugitive-medical-visit").unwrap();
        let a = || AlertId::new("a-17").unwrap();
        let s = || StationId::new("s03").unwrap();
        let r = || ReasonCode::new("imminent-risk").unwrap();
        let events = vec![
            AuditEvent::ContributionRefused {
                partner: PartnerId::new("tax").unwrap(),
                dataset: DatasetId::new("income").unwrap(),
                sequence: 3,
                reason: ReasonCode::new("replayed-sequence").unwrap(),
                rows: None,
            },
            AuditEvent::TokenEvaluationBatch {
                partner: PartnerId::new("insurer").unwrap(),
                count: 5000,
            },
            AuditEvent::ModelRegistered {
                model: m(),
                version: 1,
                tiers: 2,
            },
            AuditEvent::ModelRun {
                model: m(),
                version: 1,
                subjects: 12,
                alerts_opened: 2,
                alerts_changed: 1,
            },
            AuditEvent::QueryRun {
                query_sha256: Sha256Digest::of(b"SELECT 1"),
                principal: p(),
                purpose: Purpose::new("fugitive-tracking").unwrap(),
                groups_released: 4,
                groups_withheld: 1,
                epsilon_micro: 1_000_000,
                delta_femto: 1_000_000_000,
            },
            AuditEvent::QueryRefused {
                query_sha256: Sha256Digest::of(b"SELECT * FROM t"),
                principal: p(),
                purpose: Purpose::new("analysis").unwrap(),
                rule: ReasonCode::new("aggregate-only").unwrap(),
            },
            AuditEvent::AlertOpened {
                alert: a(),
                model: m(),
                version: 1,
                tier: Tier::Orange,
                station: s(),
            },
            AuditEvent::AlertTierChanged {
                alert: a(),
                model: m(),
                from: Tier::Orange,
                to: Tier::Red,
                station: s(),
            },
            AuditEvent::AlertClosed {
                alert: a(),
                model: m(),
                tier: Tier::Red,
                station: s(),
            },
            AuditEvent::AlertRead {
                alert: a(),
                principal: p(),
            },
            AuditEvent::AlertActed {
                alert: a(),
                principal: p(),
                action: ReasonCode::new("close-false-positive").unwrap(),
            },
            AuditEvent::RevealRequested {
                alert: a(),
                principal: p(),
                reason: r(),
            },
            AuditEvent::RevealGranted {
                alert: a(),
                principal: p(),
                reason: r(),
            },
            AuditEvent::RevealRefused {
                alert: a(),
                principal: p(),
                reason: r(),
            },
            AuditEvent::SilenceCreated {
                silence: SilenceId::new("sil-1").unwrap(),
                creator: p(),
            },
            AuditEvent::PolicyLoaded {
                digest: Sha256Digest::of(b"policies"),
            },
            AuditEvent::ModelApproved {
                model: m(),
                version: 2,
                partner: PartnerId::new("hospital").unwrap(),
                digest: Sha256Digest::of(b"model"),
            },
            AuditEvent::ModelApprovalRefused {
                model: m(),
                partner: None,
                reason: ReasonCode::new("bad-signature").unwrap(),
            },
            AuditEvent::ModelRegistrationRefused {
                model: m(),
                version: 1,
                digest: Sha256Digest::of(b"model"),
                reason: ReasonCode::new("approval-missing").unwrap(),
                partners: vec![PartnerId::new("hospital").unwrap()],
            },
            AuditEvent::ModelRunRefused {
                model: m(),
                version: 1,
                digest: Sha256Digest::of(b"model"),
                reason: ReasonCode::new("approval-missing").unwrap(),
                partners: vec![],
            },
            AuditEvent::TokenEvaluation {
                partner: PartnerId::new("insurer").unwrap(),
                count: 2048,
                nonce: Sha256Digest::of(b"insurer\x000123456789abcdef0123456789abcdef"),
            },
            AuditEvent::EmptyContributionAccepted {
                partner: PartnerId::new("police").unwrap(),
                dataset: DatasetId::new("wanted").unwrap(),
                sequence: 9,
                replaced: true,
            },
            AuditEvent::TokenGenerationStarted {
                partner: PartnerId::new("police").unwrap(),
                dataset: DatasetId::new("wanted").unwrap(),
                generation: 2,
                mode: ReasonCode::new("blind").unwrap(),
                key_id_sha256: Sha256Digest::of(b"0123456789abcdef"),
            },
            AuditEvent::RequestRefused {
                principal: p(),
                action: ReasonCode::new("reveal").unwrap(),
                rule: ReasonCode::new("unknown-alert").unwrap(),
            },
            AuditEvent::SilenceRefused {
                principal: p(),
                silence: None,
                action: ReasonCode::new("create-silence").unwrap(),
                rule: ReasonCode::new("unknown-model").unwrap(),
            },
            AuditEvent::SilenceExpired {
                silence: SilenceId::new("sil-1").unwrap(),
                principal: p(),
            },
            AuditEvent::ModelRegistrationAttemptRefused {
                model: Some(m()),
                principal: p(),
                rule: ReasonCode::new("model-refused").unwrap(),
            },
        ];
        for event in events {
            let rec = AuditRecord::now(Principal::new("system").unwrap(), event);
            let bytes = rec.to_canonical_json().unwrap();
            assert_eq!(AuditRecord::from_json(&bytes).unwrap(), rec);
        }
    }
}
