//! The column-use checker: every way a plan uses a sealed column must be a use the column's
//! contract allows for the declared purpose.
//!
//! The engine's analysis reports, per base column, each use (join, filter, group, order,
//! aggregate with its function, window, output) and, per result column, the base columns it
//! derives from. The mapping to the contracts' uses:
//!
//! | plan use | contract use |
//! |---|---|
//! | join | `join` |
//! | filter, order | `filter` |
//! | group | `group` |
//! | aggregate: `count`, `approx_distinct` | `aggregate` |
//! | aggregate: `sum`, `avg`, `stddev`, `var`, ... | `aggregate` (never on a token) |
//! | aggregate that copies a value out: `min`, `max`, `first_value`, `array_agg`, ... | `aggregate` and `reveal` (never on a token) |
//! | window function argument | refused: its result is per row |
//! | a result column's unaggregated value | `reveal` (a query's group key: `group`, its groups being k-anonymous) |
//!
//! Tokens are never revealed and never summed: only joined and counted — except the one
//! result column a model names as its subject, which the platform turns into a pseudonym
//! before anything is stored. A revealable raw identifier column is read only by the reveal
//! workflow, never by a query.

use std::collections::BTreeSet;
use std::fmt;

use blindwatch_audit::Purpose;
use blindwatch_common::IdentifierKind;
use blindwatch_contract::{ContractSet, Use};
use blindwatch_crypto::manifest::SealedContent;
use blindwatch_engine::{ColumnRef, ColumnUse, PlanAnalysis};

/// Aggregates that release only a count.
const COUNTING: &[&str] = &["count", "approx_distinct"];
/// Aggregates that combine values into a statistic.
const SUMMARISING: &[&str] = &[
    "sum",
    "avg",
    "mean",
    "stddev",
    "stddev_samp",
    "stddev_pop",
    "var",
    "var_samp",
    "var_pop",
    "variance",
    "bool_and",
    "bool_or",
];
/// Aggregates whose result is one of the input values.
const COPYING: &[&str] = &[
    "min",
    "max",
    "first_value",
    "last_value",
    "any_value",
    "nth_value",
    "array_agg",
    "string_agg",
    "median",
    "approx_median",
    "percentile_cont",
    "approx_percentile_cont",
    "mode",
];

/// What the result's columns may be.
#[derive(Debug, Clone)]
pub struct OutputRule<'a> {
    /// A model's subject column: it holds tokens of this kind, grouped and output as-is,
    /// because the platform replaces them with pseudonyms before storing anything. With a
    /// subject, tokens may also be grouping keys.
    pub subject: Option<(&'a str, IdentifierKind)>,
}

/// One use the contracts do not allow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct UseRefusal {
    /// The sealed column.
    pub column: ColumnRef,
    /// How the plan uses it (`join`, `aggregate (max)`, `output of visits_7d`, ...).
    pub used_as: String,
    /// The rule it breaks and what to do.
    pub reason: String,
}

impl fmt::Display for UseRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} used as {}: {}",
            self.column, self.used_as, self.reason
        )
    }
}

/// How a sealed column may be used for one purpose.
struct Allowed {
    token: Option<IdentifierKind>,
    raw_identifier: bool,
    declared: BTreeSet<Use>,
    for_purpose: BTreeSet<Use>,
}

fn allowed(contracts: &ContractSet, c: &ColumnRef, purpose: &str) -> Result<Allowed, String> {
    let contract = contracts.get(&c.table).map_err(|_| {
        "no dataset contract covers this table; the partner must publish one".to_owned()
    })?;
    let sealed = contract
        .sealed_columns()
        .into_iter()
        .find(|s| s.name == c.column)
        .ok_or_else(|| "the dataset contract does not declare this column".to_owned())?;
    let column = contract
        .sealed_column(&c.column)
        .ok_or_else(|| "the dataset contract does not declare this column".to_owned())?;
    let (token, raw_identifier) = match sealed.content {
        SealedContent::Token { kind } => (Some(kind), false),
        SealedContent::RevealableIdentifier { .. } => (None, true),
        SealedContent::Attribute => (None, false),
    };
    Ok(Allowed {
        token,
        raw_identifier,
        declared: column.uses.iter().copied().collect(),
        for_purpose: contract.allowed_uses(&c.column, purpose),
    })
}

impl Allowed {
    fn require(&self, u: Use, purpose: &str) -> Result<(), String> {
        if self.for_purpose.contains(&u) {
            Ok(())
        } else if self.declared.contains(&u) {
            Err(format!(
                "the contract allows `{u}` on this column, but not for purpose `{purpose}`; use a purpose the contract lists or ask the partner to extend it"
            ))
        } else {
            Err(format!(
                "the contract does not allow `{u}` on this column; rewrite the query without it or ask the partner to allow it"
            ))
        }
    }
}

/// Checks every column use of `analysis` against the contracts for `purpose`. Returns every
/// refusal (empty when the plan is allowed), sorted, so a reviewer sees them all at once.
pub fn check_column_uses(
    analysis: &PlanAnalysis,
    contracts: &ContractSet,
    purpose: &Purpose,
    outputs: &OutputRule<'_>,
) -> Vec<UseRefusal> {
    let purpose = purpose.as_str();
    let mut refusals = BTreeSet::new();
    let mut refuse = |column: &ColumnRef, used_as: String, reason: String| {
        refusals.insert(UseRefusal {
            column: column.clone(),
            used_as,
            reason,
        });
    };

    // A model's rows are per subject by construction, so it may group by tokens (per person,
    // per phone); the output rules below keep every token but the subject out of its result.
    let tokens_group = outputs.subject.is_some();

    for (column, uses) in &analysis.uses {
        let allow = match allowed(contracts, column, purpose) {
            Ok(a) => a,
            Err(reason) => {
                refuse(column, "any use".into(), reason);
                continue;
            }
        };
        if allow.raw_identifier {
            refuse(
                column,
                "any use".into(),
                "this is a revealable identifier value: only the reveal workflow reads it; join and count through its token column instead".into(),
            );
            continue;
        }
        for u in uses {
            let used_as = u.to_string();
            let verdict = match u {
                // Outputs are checked per result column below.
                ColumnUse::Output => Ok(()),
                ColumnUse::Join => allow.require(Use::Join, purpose),
                ColumnUse::Filter | ColumnUse::Order => allow.require(Use::Filter, purpose),
                ColumnUse::Group if allow.token.is_some() && tokens_group => Ok(()),
                ColumnUse::Group => allow.require(Use::Group, purpose),
                ColumnUse::Window { .. } => Err(
                    "window functions compute a value per row, which would reach the result unaggregated; use GROUP BY and aggregates".into(),
                ),
                ColumnUse::Aggregate { function, .. } => {
                    let f = function.to_ascii_lowercase();
                    let f = f.as_str();
                    if COUNTING.contains(&f) {
                        allow.require(Use::Aggregate, purpose)
                    } else if allow.token.is_some() {
                        Err(format!(
                            "tokens may only be joined and counted (count, count(DISTINCT ...)), not passed to `{f}`"
                        ))
                    } else if SUMMARISING.contains(&f) {
                        allow.require(Use::Aggregate, purpose)
                    } else if COPYING.contains(&f) {
                        allow.require(Use::Aggregate, purpose).and_then(|()| {
                            allow.require(Use::Reveal, purpose).map_err(|why| {
                                format!("`{f}` returns one of the column's values, so it needs `reveal` too: {why}")
                            })
                        })
                    } else {
                        Err(format!(
                            "the aggregate function `{f}` is not one the checker knows to be safe; use count, sum, avg, min or max"
                        ))
                    }
                }
            };
            if let Err(reason) = verdict {
                refuse(column, used_as, reason);
            }
        }
    }

    // A query's groups are released only when they cover k subjects, so a group key's label
    // needs `group`, not `reveal`; a model's rows are per subject, so there it reveals.
    let group_labels = outputs.subject.is_none();
    for output in &analysis.outputs {
        let is_subject = outputs.subject.is_some_and(|(name, _)| name == output.name);
        if is_subject {
            let Some((_, kind)) = outputs.subject else {
                continue;
            };
            for column in &output.derived_from {
                let token = allowed(contracts, column, purpose)
                    .ok()
                    .and_then(|a| a.token);
                if token != Some(kind) {
                    refuse(
                        column,
                        format!("the subject `{}`", output.name),
                        format!(
                            "the subject column must be exactly a token column of kind `{kind}` (grouped, not computed or aggregated)"
                        ),
                    );
                }
            }
            if output.derived_from.is_empty() || output.aggregated {
                refuse(
                    &ColumnRef::new("(result)", output.name.clone()),
                    "the subject".into(),
                    format!(
                        "the subject column must be a token column of kind `{kind}` from a sealed table"
                    ),
                );
            }
            continue;
        }
        for column in &output.raw_from {
            let used_as = format!("the unaggregated value of result column `{}`", output.name);
            match allowed(contracts, column, purpose) {
                Err(reason) => refuse(column, used_as, reason),
                Ok(a) if a.token.is_some() || a.raw_identifier => refuse(
                    column,
                    used_as,
                    "tokens and identifiers never reach a result; count them or join on them"
                        .into(),
                ),
                Ok(_)
                    if group_labels
                        && analysis
                            .uses_of(&column.table, &column.column)
                            .contains(&ColumnUse::Group) => {}
                Ok(a) => {
                    if let Err(reason) = a.require(Use::Reveal, purpose) {
                        refuse(column, used_as, reason);
                    }
                }
            }
        }
    }
    refusals.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindwatch_engine::OutputColumn;
    use std::collections::BTreeMap;

    fn purpose(p: &str) -> Purpose {
        Purpose::new(p).unwrap()
    }

    fn contracts() -> ContractSet {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets");
        ContractSet::load_dir(&dir).unwrap()
    }

    fn col(t: &str, c: &str) -> ColumnRef {
        ColumnRef::new(t, c)
    }

    fn analysis(uses: &[(ColumnRef, ColumnUse)], outputs: Vec<OutputColumn>) -> PlanAnalysis {
        let mut map: BTreeMap<ColumnRef, BTreeSet<ColumnUse>> = BTreeMap::new();
        for (c, u) in uses {
            map.entry(c.clone()).or_default().insert(u.clone());
        }
        PlanAnalysis {
            tables: map.keys().map(|c| c.table.clone()).collect(),
            uses: map,
            outputs,
        }
    }

    fn out(name: &str, raw: &[ColumnRef], agg: &[ColumnRef]) -> OutputColumn {
        OutputColumn {
            name: name.into(),
            derived_from: raw.iter().chain(agg).cloned().collect(),
            raw_from: raw.iter().cloned().collect(),
            aggregated: raw.is_empty() && !agg.is_empty(),
        }
    }

    fn agg(f: &str) -> ColumnUse {
        ColumnUse::Aggregate {
            function: f.into(),
            distinct: false,
        }
    }

    const MODEL: OutputRule<'static> = OutputRule {
        subject: Some(("subject", IdentifierKind::Person)),
    };

    #[test]
    fn a_model_that_counts_and_joins_through_tokens_passes() {
        let person = col("police.wanted", "person");
        let visit_person = col("hospital.visits", "person");
        let a = analysis(
            &[
                (person.clone(), ColumnUse::Group),
                (person.clone(), ColumnUse::Join),
                (person.clone(), ColumnUse::Output),
                (visit_person.clone(), ColumnUse::Join),
                (col("hospital.visits", "visit_id"), agg("count")),
                (col("hospital.visits", "visit_date"), agg("max")),
                (col("hospital.visits", "visit_date"), ColumnUse::Filter),
                (col("police.wanted", "station"), ColumnUse::Group),
                (col("police.wanted", "station"), ColumnUse::Output),
            ],
            vec![
                out("subject", &[person], &[]),
                out("station", &[col("police.wanted", "station")], &[]),
                out("n", &[], &[col("hospital.visits", "visit_id")]),
            ],
        );
        let r = check_column_uses(&a, &contracts(), &purpose("fugitive-tracking"), &MODEL);
        assert!(r.is_empty(), "{r:#?}");
    }

    #[test]
    fn refusals_name_the_column_and_the_rule() {
        let c = contracts();
        let check = |u: ColumnUse, column: ColumnRef, purpose: &str| {
            let a = analysis(&[(column, u)], vec![]);
            check_column_uses(
                &a,
                &c,
                &super::tests::purpose(purpose),
                &OutputRule { subject: None },
            )
        };
        // A token copied out by an aggregate.
        let r = check(agg("max"), col("hospital.visits", "phone"), "analysis");
        assert!(r[0].reason.contains("only be joined and counted"), "{r:?}");
        // A window function.
        let r = check(
            ColumnUse::Window {
                function: "row_number".into(),
            },
            col("hospital.visits", "visit_date"),
            "analysis",
        );
        assert!(r[0].reason.contains("per row"), "{r:?}");
        // A use allowed, but not for this purpose.
        let r = check(
            ColumnUse::Filter,
            col("hospital.visits", "department"),
            "public-order",
        );
        assert!(
            r[0].reason.contains("not for purpose `public-order`"),
            "{r:?}"
        );
        assert_eq!(r[0].column, col("hospital.visits", "department"));
        // A use not allowed at all.
        let r = check(
            ColumnUse::Group,
            col("hospital.visits", "visit_id"),
            "analysis",
        );
        assert!(r[0].reason.contains("does not allow `group`"), "{r:?}");
        // Grouping by a token outside a model.
        let r = check(
            ColumnUse::Group,
            col("hospital.visits", "person"),
            "analysis",
        );
        assert_eq!(r.len(), 1, "{r:?}");
        // A copying aggregate needs reveal.
        let r = check(agg("max"), col("insurance.claims", "amount"), "analysis");
        assert!(r[0].reason.contains("needs `reveal`"), "{r:?}");
        assert!(check(agg("sum"), col("insurance.claims", "amount"), "analysis").is_empty());
        // An unknown aggregate.
        let r = check(
            agg("my_udaf"),
            col("insurance.claims", "amount"),
            "analysis",
        );
        assert!(r[0].reason.contains("not one the checker knows"), "{r:?}");
        // The revealable raw identifier column is not for queries.
        let r = check(
            agg("count"),
            col("police.wanted", "id_number"),
            "fugitive-tracking",
        );
        assert!(r[0].reason.contains("reveal workflow"), "{r:?}");
        // A table without a contract.
        let r = check(ColumnUse::Filter, col("bank.accounts", "iban"), "analysis");
        assert!(r[0].reason.contains("no dataset contract"), "{r:?}");
    }

    #[test]
    fn only_the_subject_may_carry_a_token_into_the_result() {
        let person = col("police.wanted", "person");
        let phone = col("hospital.visits", "phone");
        let a = analysis(
            &[
                (person.clone(), ColumnUse::Output),
                (phone.clone(), ColumnUse::Output),
            ],
            vec![
                out("subject", std::slice::from_ref(&person), &[]),
                out("other", std::slice::from_ref(&phone), &[]),
            ],
        );
        let r = check_column_uses(&a, &contracts(), &purpose("fugitive-tracking"), &MODEL);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].column, phone);
        assert!(r[0].reason.contains("never reach a result"));

        // A subject of the wrong kind.
        let a = analysis(&[], vec![out("subject", std::slice::from_ref(&phone), &[])]);
        let r = check_column_uses(&a, &contracts(), &purpose("fugitive-tracking"), &MODEL);
        assert!(r[0].reason.contains("kind `person`"), "{r:?}");
    }
}
