//! The authority's usage ledger (`DIR/ledger.json`): evaluated elements per partner, today
//! and in total, as of a size of the audit log, with the log's root hash at that size.
//!
//! The audit log is the durable record — every evaluated batch is appended (and fsynced)
//! before its answer leaves — and the ledger a snapshot of it, written at start and at every
//! checkpoint. At start the ledger is checked against the log: the log must still hold at
//! least the ledger's entries, with the same root. A log that is missing, truncated or
//! replaced therefore stops the authority with a clear message instead of silently resetting
//! every partner's quota; and only the entries after the snapshot are read.
//!
//! ```json
//! {"format": "blindwatch-token-ledger/1", "audit_size": 1200, "audit_root": "<hex>",
//!  "day": "2026-11-30", "usage": {"hospital": {"today": 4096, "total": 1228800}}}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use blindwatch_audit::{AuditEvent, AuditLog, Sha256Digest};
use blindwatch_common::fsutil;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::AuthorityError;
use crate::auth::NONCE_KEEP_SECS;

pub const LEDGER_FORMAT: &str = "blindwatch-token-ledger/1";

/// What a partner has used, in evaluated elements.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Used {
    /// On the current UTC day.
    pub today: u64,
    pub total: u64,
}

/// Usage of every partner, with the UTC day that `today` counts.
#[derive(Clone, Debug)]
pub(crate) struct Usage {
    pub day: NaiveDate,
    pub by_partner: HashMap<String, Used>,
}

impl Usage {
    pub fn new(day: NaiveDate) -> Usage {
        Usage {
            day,
            by_partner: HashMap::new(),
        }
    }

    /// Moves to `today`: a new day starts every partner's daily count at zero.
    pub fn roll(&mut self, today: NaiveDate) {
        if today != self.day {
            self.day = today;
            for used in self.by_partner.values_mut() {
                used.today = 0;
            }
        }
    }

    /// Counts `count` elements evaluated on `day` for `partner`.
    pub fn add(&mut self, partner: &str, count: u64, day: NaiveDate) {
        let used = self.by_partner.entry(partner.to_owned()).or_default();
        used.total = used.total.saturating_add(count);
        if day == self.day {
            used.today = used.today.saturating_add(count);
        }
    }

    pub fn get(&self, partner: &str) -> Used {
        self.by_partner.get(partner).copied().unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    format: String,
    audit_size: u64,
    audit_root: String,
    day: NaiveDate,
    usage: BTreeMap<String, Used>,
}

fn invalid(path: &Path, why: impl Into<String>) -> AuthorityError {
    AuthorityError::Ledger {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// Writes the ledger for the log as it is now (atomically: temporary file, fsync, rename).
pub(crate) fn write(path: &Path, log: &AuditLog, usage: &Usage) -> Result<(), AuthorityError> {
    let file = LedgerFile {
        format: LEDGER_FORMAT.to_owned(),
        audit_size: log.size(),
        audit_root: hex::encode(log.root()),
        day: usage.day,
        usage: usage
            .by_partner
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| invalid(path, e.to_string()))?;
    bytes.push(b'\n');
    fsutil::replace(path, &bytes).map_err(|source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Usage as of the whole log: the ledger's snapshot, checked against the log, plus the
/// entries after it. Without a ledger (an authority of an older version), the whole log is
/// counted.
pub(crate) fn recover(
    path: &Path,
    log: &AuditLog,
    today: NaiveDate,
) -> Result<Usage, AuthorityError> {
    let (start, mut usage) = match std::fs::read(path) {
        Ok(bytes) => {
            let file: LedgerFile = serde_json::from_slice(&bytes)
                .map_err(|_| invalid(path, "it is not a ledger of this version"))?;
            if file.format != LEDGER_FORMAT {
                return Err(invalid(path, format!("its format is not {LEDGER_FORMAT}")));
            }
            if log.size() < file.audit_size {
                return Err(AuthorityError::Truncated {
                    dir: log.dir().to_owned(),
                    size: log.size(),
                    expected: file.audit_size,
                });
            }
            if hex::encode(log.root_at(file.audit_size)?) != file.audit_root {
                return Err(AuthorityError::Replaced {
                    dir: log.dir().to_owned(),
                    size: file.audit_size,
                });
            }
            let mut usage = Usage {
                day: file.day,
                by_partner: file.usage.into_iter().collect(),
            };
            usage.roll(today);
            (file.audit_size, usage)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, Usage::new(today)),
        Err(source) => {
            return Err(AuthorityError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    for index in start..log.size() {
        let record = log.record(index)?;
        let day = record.time.as_datetime().date_naive();
        match &record.event {
            AuditEvent::TokenEvaluation { partner, count, .. }
            | AuditEvent::TokenEvaluationBatch { partner, count } => {
                usage.add(partner.as_str(), *count, day);
            }
            _ => {}
        }
    }
    Ok(usage)
}

/// The nonces of the requests accepted recently enough to be replayed still, with the unix
/// time each was accepted: read backwards from the end of the log.
pub(crate) fn recent_nonces(
    log: &AuditLog,
    now: i64,
) -> Result<Vec<(Sha256Digest, i64)>, AuthorityError> {
    let mut out = Vec::new();
    let oldest = now.saturating_sub(NONCE_KEEP_SECS);
    for index in (0..log.size()).rev() {
        let record = log.record(index)?;
        let at = record.time.as_datetime().timestamp();
        if at < oldest {
            break;
        }
        if let AuditEvent::TokenEvaluation { nonce, .. } = record.event {
            out.push((nonce, at));
        }
    }
    Ok(out)
}
