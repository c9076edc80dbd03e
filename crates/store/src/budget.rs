//! The privacy budget ledger: what each principal has spent for each purpose. A charge is
//! one statement that adds and checks the limit together, so two concurrent queries can
//! never both pass on the same remainder.

use sqlx::Row;

use crate::catalog::{Catalog, CatalogError};

/// Budget amounts in exact units: ε in millionths, δ in 1e-15ths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    pub epsilon_micro: u64,
    pub delta_femto: u64,
}

/// What a principal has spent for a purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    pub budget: Budget,
    pub queries: u64,
}

/// The outcome of a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Charged; the total spent now.
    Charged(Spent),
    /// Not charged: it would pass the limit. What was spent before.
    Exhausted(Spent),
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Catalog {
    /// What `principal` has spent for `purpose` (zero when nothing yet).
    pub async fn budget_spent(
        &self,
        principal: &str,
        purpose: &str,
    ) -> Result<Spent, CatalogError> {
        let row = sqlx::query(
            "SELECT epsilon_micro, delta_femto, queries FROM privacy_budget WHERE principal = ? AND purpose = ?",
        )
        .bind(principal)
        .bind(purpose)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            None => Spent::default(),
            Some(r) => Spent {
                budget: Budget {
                    epsilon_micro: r.try_get::<i64, _>("epsilon_micro")?.max(0) as u64,
                    delta_femto: r.try_get::<i64, _>("delta_femto")?.max(0) as u64,
                },
                queries: r.try_get::<i64, _>("queries")?.max(0) as u64,
            },
        })
    }

    /// Charges `cost` to `principal` for `purpose` if the total stays within `limit`.
    pub async fn charge_budget(
        &self,
        principal: &str,
        purpose: &str,
        cost: Budget,
        limit: Budget,
    ) -> Result<Charge, CatalogError> {
        // An upsert whose insert and update are both conditional on the limit: SQLite runs
        // it as one atomic statement.
        let done = sqlx::query(
            "INSERT INTO privacy_budget (principal, purpose, epsilon_micro, delta_femto, queries, updated_at) \
             SELECT ?1, ?2, ?3, ?4, 1, ?7 WHERE ?3 <= ?5 AND ?4 <= ?6 \
             ON CONFLICT (principal, purpose) DO UPDATE SET \
               epsilon_micro = privacy_budget.epsilon_micro + excluded.epsilon_micro, \
               delta_femto = privacy_budget.delta_femto + excluded.delta_femto, \
               queries = privacy_budget.queries + 1, \
               updated_at = excluded.updated_at \
             WHERE privacy_budget.epsilon_micro + excluded.epsilon_micro <= ?5 \
               AND privacy_budget.delta_femto + excluded.delta_femto <= ?6",
        )
        .bind(principal)
        .bind(purpose)
        .bind(to_i64(cost.epsilon_micro))
        .bind(to_i64(cost.delta_femto))
        .bind(to_i64(limit.epsilon_micro))
        .bind(to_i64(limit.delta_femto))
        .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .execute(self.pool())
        .await?
        .rows_affected();
        let spent = self.budget_spent(principal, purpose).await?;
        Ok(if done == 1 {
            Charge::Charged(spent)
        } else {
            Charge::Exhausted(spent)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_add_up_and_stop_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("c.sqlite"), true)
            .await
            .unwrap();
        let cost = Budget {
            epsilon_micro: 400_000,
            delta_femto: 10,
        };
        let limit = Budget {
            epsilon_micro: 1_000_000,
            delta_femto: 1_000,
        };
        for total in [400_000, 800_000] {
            match catalog
                .charge_budget("specialist:wang", "analysis", cost, limit)
                .await
            {
                Ok(Charge::Charged(s)) => assert_eq!(s.budget.epsilon_micro, total),
                other => panic!("{other:?}"),
            }
        }
        // A third would pass 1.0: refused, nothing added.
        match catalog
            .charge_budget("specialist:wang", "analysis", cost, limit)
            .await
        {
            Ok(Charge::Exhausted(s)) => {
                assert_eq!((s.budget.epsilon_micro, s.queries), (800_000, 2))
            }
            other => panic!("{other:?}"),
        }
        // Another purpose, another principal: their own budgets.
        assert!(matches!(
            catalog
                .charge_budget("specialist:wang", "fugitive-tracking", cost, limit)
                .await,
            Ok(Charge::Charged(_))
        ));
        assert!(matches!(
            catalog
                .charge_budget("specialist:li", "analysis", cost, limit)
                .await,
            Ok(Charge::Charged(_))
        ));
        // A first charge above the limit is refused too.
        let big = Budget {
            epsilon_micro: 2_000_000,
            delta_femto: 0,
        };
        assert!(matches!(
            catalog.charge_budget("specialist:zhao", "analysis", big, limit).await,
            Ok(Charge::Exhausted(s)) if s == Spent::default()
        ));
    }
}
