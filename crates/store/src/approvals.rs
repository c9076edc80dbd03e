//! Partners' approvals of warning models, as signed. The catalog keeps the envelopes; it
//! does not judge them: `blindwatch-models` verifies each one under the partner's registered
//! key whenever a model is registered or run.

use sqlx::Row;

use crate::catalog::{Catalog, CatalogError};

/// One stored approval: which partner approved which model digest, and the signed envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredApproval {
    pub model: String,
    pub version: u32,
    /// The model digest (64 lowercase hex digits) the partner signed.
    pub digest: String,
    pub partner: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The DSSE envelope (JSON) as received.
    pub envelope: Vec<u8>,
}

impl Catalog {
    /// Stores a verified approval; the same partner approving the same digest again replaces
    /// its earlier envelope (a new signature, perhaps under a new key).
    pub async fn record_model_approval(&self, a: &StoredApproval) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO model_approvals (model, version, digest, partner, key_id, envelope, received_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (model, partner, digest) DO UPDATE SET \
               version = excluded.version, key_id = excluded.key_id, \
               envelope = excluded.envelope, received_at = excluded.received_at",
        )
        .bind(&a.model)
        .bind(a.version)
        .bind(&a.digest)
        .bind(&a.partner)
        .bind(&a.key_id)
        .bind(&a.envelope)
        .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every approval stored for `model`, of any version or digest, by partner then digest.
    pub async fn model_approvals(&self, model: &str) -> Result<Vec<StoredApproval>, CatalogError> {
        let rows = sqlx::query(
            "SELECT model, version, digest, partner, key_id, envelope FROM model_approvals \
             WHERE model = ? ORDER BY partner, digest",
        )
        .bind(model)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredApproval {
                    model: r.try_get("model")?,
                    version: r.try_get("version")?,
                    digest: r.try_get("digest")?,
                    partner: r.try_get("partner")?,
                    key_id: r.try_get("key_id")?,
                    envelope: r.try_get("envelope")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(partner: &str, digest: &str, envelope: &[u8]) -> StoredApproval {
        StoredApproval {
            model: "m".into(),
            version: 1,
            digest: digest.into(),
            partner: partner.into(),
            key_id: "k".into(),
            envelope: envelope.to_vec(),
        }
    }

    #[tokio::test]
    async fn approvals_are_kept_per_partner_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("c.sqlite"), true)
            .await
            .unwrap();
        catalog
            .record_model_approval(&approval("hospital", "aa", b"1"))
            .await
            .unwrap();
        catalog
            .record_model_approval(&approval("hospital", "bb", b"2"))
            .await
            .unwrap();
        catalog
            .record_model_approval(&approval("police", "aa", b"3"))
            .await
            .unwrap();
        // The same partner and digest again: replaced, not added.
        catalog
            .record_model_approval(&approval("hospital", "aa", b"4"))
            .await
            .unwrap();
        let all = catalog.model_approvals("m").await.unwrap();
        let seen: Vec<(&str, &str, &[u8])> = all
            .iter()
            .map(|a| (a.partner.as_str(), a.digest.as_str(), a.envelope.as_slice()))
            .collect();
        assert_eq!(
            seen,
            [
                ("hospital", "aa", b"4".as_slice()),
                ("hospital", "bb", b"2".as_slice()),
                ("police", "aa", b"3".as_slice())
            ]
        );
        assert!(catalog.model_approvals("other").await.unwrap().is_empty());
    }
}
