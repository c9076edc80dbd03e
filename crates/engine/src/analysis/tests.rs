use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::prelude::SessionContext;

use super::*;

fn token() -> DataType {
    DataType::FixedSizeBinary(16)
}

fn context() -> SessionContext {
    let ctx = SessionContext::new();
    type Columns = Vec<(&'static str, DataType)>;
    let tables: [(&str, &str, Columns); 4] = [
        (
            "hospital",
            "visits",
            vec![
                ("person", token()),
                ("visit_date", DataType::Date32),
                ("department", DataType::Utf8),
                ("diagnosis_group", DataType::Utf8),
            ],
        ),
        (
            "police",
            "wanted",
            vec![
                ("person", token()),
                ("station", DataType::Utf8),
                ("offence", DataType::Utf8),
                ("wanted_since", DataType::Date32),
                ("danger_level", DataType::Int64),
            ],
        ),
        (
            "insurance",
            "claims",
            vec![
                ("person", token()),
                ("claim_date", DataType::Date32),
                ("amount", DataType::Float64),
            ],
        ),
        (
            "tax",
            "employment",
            vec![
                ("person", token()),
                ("income", DataType::Float64),
                ("status", DataType::Utf8),
            ],
        ),
    ];
    let catalog = ctx.catalog("datafusion").unwrap();
    for (partner, dataset, cols) in tables {
        let schema = Arc::new(Schema::new(
            cols.into_iter()
                .map(|(n, t)| Field::new(n, t, true))
                .collect::<Vec<_>>(),
        ));
        let provider = match catalog.schema(partner) {
            Some(p) => p,
            None => {
                let p = Arc::new(MemorySchemaProvider::new());
                catalog.register_schema(partner, p.clone()).unwrap();
                p
            }
        };
        provider
            .register_table(dataset.into(), Arc::new(EmptyTable::new(schema)))
            .unwrap();
    }
    ctx
}

fn domains(c: &ColumnRef) -> Option<TokenDomain> {
    (c.column == "person").then(|| TokenDomain {
        mode: "consortium".into(),
        key_id: if c.table == "tax.employment" {
            "key-b".into()
        } else {
            "key-a".into()
        },
    })
}

async fn analyse(sql: &str) -> Result<PlanAnalysis, AnalysisError> {
    let plan = context().state().create_logical_plan(sql).await.unwrap();
    analyze(&plan, &domains)
}

async fn ok(sql: &str) -> PlanAnalysis {
    match analyse(sql).await {
        Ok(a) => a,
        Err(e) => panic!("{sql}: {e}"),
    }
}

fn uses(a: &PlanAnalysis, table: &str, column: &str) -> Vec<String> {
    a.uses_of(table, column)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn cols(list: &[&str]) -> BTreeSet<ColumnRef> {
    list.iter()
        .map(|s| {
            let (t, c) = s.rsplit_once('.').unwrap();
            ColumnRef::new(t, c)
        })
        .collect()
}

#[tokio::test]
async fn model_query_join_group_aggregate() {
    let a = ok("SELECT w.person AS subject, w.station AS station,
                count(*) AS visits_7d, max(v.visit_date) AS last_visit
         FROM police.wanted w JOIN hospital.visits v ON v.person = w.person
         WHERE v.visit_date >= DATE '2026-11-01' - INTERVAL '7' DAY
         GROUP BY w.person, w.station")
    .await;
    assert_eq!(
        a.tables,
        BTreeSet::from(["hospital.visits".to_string(), "police.wanted".to_string()])
    );
    assert_eq!(uses(&a, "hospital.visits", "person"), ["join"]);
    assert_eq!(
        uses(&a, "police.wanted", "person"),
        ["join", "group", "output"]
    );
    assert_eq!(uses(&a, "police.wanted", "station"), ["group", "output"]);
    assert_eq!(
        uses(&a, "hospital.visits", "visit_date"),
        ["filter", "aggregate (max)"]
    );
    assert!(a.uses_of("hospital.visits", "department").is_empty());
    assert_eq!(a.outputs.len(), 4);
    let o = &a.outputs;
    assert_eq!((o[0].name.as_str(), o[0].aggregated), ("subject", false));
    assert_eq!(o[0].raw_from, cols(&["police.wanted.person"]));
    assert_eq!(o[1].raw_from, cols(&["police.wanted.station"]));
    assert!(o[2].aggregated && o[2].derived_from.is_empty() && o[2].raw_from.is_empty());
    assert!(o[3].aggregated && o[3].raw_from.is_empty());
    assert_eq!(o[3].derived_from, cols(&["hospital.visits.visit_date"]));
    assert_eq!(
        a.columns_by_table(),
        BTreeMap::from([
            (
                "hospital.visits".to_string(),
                BTreeSet::from(["person".to_string(), "visit_date".to_string()])
            ),
            (
                "police.wanted".to_string(),
                BTreeSet::from(["person".to_string(), "station".to_string()])
            ),
        ])
    );
}

#[tokio::test]
async fn ctes_subqueries_and_aliases_keep_lineage() {
    let a = ok("WITH recent AS (
                  SELECT person AS p, visit_date AS d FROM hospital.visits WHERE department = 'psychiatry'
                ), per_person AS (
                  SELECT r.p, count(*) AS n, min(r.d) AS first_seen FROM recent r
                  WHERE r.d > DATE '2026-01-01' GROUP BY r.p
                )
                SELECT x.p AS who, x.n + 1 AS n1, x.first_seen FROM (SELECT * FROM per_person) x WHERE x.n >= 3")
    .await;
    assert_eq!(uses(&a, "hospital.visits", "department"), ["filter"]);
    assert_eq!(
        uses(&a, "hospital.visits", "visit_date"),
        ["filter", "aggregate (min)"]
    );
    assert_eq!(uses(&a, "hospital.visits", "person"), ["group", "output"]);
    assert_eq!(a.outputs[0].raw_from, cols(&["hospital.visits.person"]));
    assert!(a.outputs[1].aggregated);
    assert!(a.outputs[2].aggregated);
    assert_eq!(
        a.outputs[2].derived_from,
        cols(&["hospital.visits.visit_date"])
    );
}

#[tokio::test]
async fn window_functions_are_per_row() {
    let a = ok("SELECT station,
                row_number() OVER (PARTITION BY station ORDER BY danger_level) AS rn,
                sum(danger_level) OVER (PARTITION BY station) AS s
         FROM police.wanted")
    .await;
    assert_eq!(uses(&a, "police.wanted", "station"), ["group", "output"]);
    assert_eq!(
        uses(&a, "police.wanted", "danger_level"),
        ["order", "window (sum)", "output"]
    );
    assert!(!a.outputs[1].aggregated);
    assert_eq!(
        a.outputs[1].raw_from,
        cols(&["police.wanted.station", "police.wanted.danger_level"])
    );
    assert!(!a.outputs[2].aggregated);
}

#[tokio::test]
async fn case_conditions_filter_and_case_values_flow() {
    // Inside an aggregate, a CASE condition only filters.
    let a = ok("SELECT count(DISTINCT person) AS n,
                sum(CASE WHEN department = 'psychiatry' THEN 1 ELSE 0 END) AS psych,
                count(*) FILTER (WHERE diagnosis_group = 'F2') AS f2
         FROM hospital.visits")
    .await;
    assert_eq!(
        uses(&a, "hospital.visits", "person"),
        ["aggregate (count distinct)"]
    );
    assert_eq!(uses(&a, "hospital.visits", "department"), ["filter"]);
    assert_eq!(uses(&a, "hospital.visits", "diagnosis_group"), ["filter"]);
    assert!(
        a.outputs
            .iter()
            .all(|o| o.aggregated && o.raw_from.is_empty())
    );
    assert_eq!(
        a.outputs[1].derived_from,
        cols(&["hospital.visits.department"])
    );

    // In the output, a CASE on a column reveals something about each row's value.
    let a = ok(
        "SELECT CASE WHEN danger_level > 3 THEN 'high' ELSE 'low' END AS lvl,
                CASE offence WHEN 'fraud' THEN station END AS st FROM police.wanted",
    )
    .await;
    assert_eq!(
        uses(&a, "police.wanted", "danger_level"),
        ["filter", "output"]
    );
    assert_eq!(uses(&a, "police.wanted", "offence"), ["filter", "output"]);
    assert_eq!(uses(&a, "police.wanted", "station"), ["output"]);
    assert!(!a.outputs[0].aggregated);
    assert_eq!(a.outputs[0].raw_from, cols(&["police.wanted.danger_level"]));
}

#[tokio::test]
async fn casts_are_transparent() {
    let a = ok("SELECT CAST(amount AS BIGINT) AS a, TRY_CAST(claim_date AS VARCHAR) AS d FROM insurance.claims").await;
    assert_eq!(uses(&a, "insurance.claims", "amount"), ["output"]);
    assert_eq!(
        a.outputs[1].raw_from,
        cols(&["insurance.claims.claim_date"])
    );
    let a = ok("SELECT sum(CAST(amount AS BIGINT)) AS total, date_trunc('month', CAST(claim_date AS TIMESTAMP)) AS m
                FROM insurance.claims GROUP BY 2")
    .await;
    assert_eq!(uses(&a, "insurance.claims", "amount"), ["aggregate (sum)"]);
    assert_eq!(
        uses(&a, "insurance.claims", "claim_date"),
        ["group", "output"]
    );
    assert!(a.outputs[0].aggregated && !a.outputs[1].aggregated);
}

#[tokio::test]
async fn joins_in_where_on_and_self_joins() {
    // Implicit join: the comparison across relations is a join, the constant test a filter.
    let a = ok(
        "SELECT count(*) AS n FROM hospital.visits v, police.wanted w
                WHERE v.person = w.person AND w.danger_level >= 3",
    )
    .await;
    assert_eq!(uses(&a, "hospital.visits", "person"), ["join"]);
    assert_eq!(uses(&a, "police.wanted", "person"), ["join"]);
    assert_eq!(uses(&a, "police.wanted", "danger_level"), ["filter"]);

    // A condition over values of two relations is a join condition, whatever its shape.
    let a = ok(
        "SELECT count(*) AS n FROM insurance.claims c, police.wanted w
                WHERE c.person = w.person AND c.amount + w.danger_level > 100",
    )
    .await;
    assert_eq!(uses(&a, "insurance.claims", "amount"), ["join"]);
    assert_eq!(uses(&a, "police.wanted", "danger_level"), ["join"]);

    // ON with a one-sided condition: that part is a filter.
    let a = ok("SELECT count(*) AS n FROM hospital.visits v
                JOIN police.wanted w ON v.person = w.person AND w.danger_level > 2 AND v.visit_date > w.wanted_since")
    .await;
    assert_eq!(uses(&a, "police.wanted", "danger_level"), ["filter"]);
    assert_eq!(uses(&a, "hospital.visits", "visit_date"), ["join"]);
    assert_eq!(uses(&a, "police.wanted", "wanted_since"), ["join"]);

    // Self-join: comparing two scans of one table is a join.
    let a = ok(
        "SELECT count(*) AS n FROM hospital.visits a JOIN hospital.visits b
                ON a.person = b.person AND a.visit_date < b.visit_date",
    )
    .await;
    assert_eq!(uses(&a, "hospital.visits", "visit_date"), ["join"]);
    assert_eq!(uses(&a, "hospital.visits", "person"), ["join"]);

    // LEFT JOIN with USING.
    let a = ok("SELECT count(c.amount) AS n FROM hospital.visits LEFT JOIN insurance.claims c USING (person)").await;
    assert_eq!(uses(&a, "hospital.visits", "person"), ["join"]);
    assert_eq!(
        uses(&a, "insurance.claims", "amount"),
        ["aggregate (count)"]
    );
}

#[tokio::test]
async fn correlated_subqueries_exists_and_in() {
    let a = ok("SELECT w.station,
                (SELECT count(*) FROM hospital.visits v WHERE v.person = w.person) AS visits
         FROM police.wanted w
         WHERE EXISTS (SELECT 1 FROM insurance.claims c WHERE c.person = w.person AND c.amount > 100)
           AND w.person IN (SELECT person FROM hospital.visits WHERE department = 'emergency')
           AND w.danger_level > (SELECT avg(danger_level) FROM police.wanted)")
    .await;
    assert_eq!(uses(&a, "hospital.visits", "person"), ["join"]);
    assert_eq!(uses(&a, "police.wanted", "person"), ["join"]);
    assert_eq!(uses(&a, "insurance.claims", "person"), ["join"]);
    assert_eq!(uses(&a, "insurance.claims", "amount"), ["filter"]);
    assert_eq!(uses(&a, "hospital.visits", "department"), ["filter"]);
    assert_eq!(
        uses(&a, "police.wanted", "danger_level"),
        ["filter", "aggregate (avg)"]
    );
    assert_eq!(uses(&a, "police.wanted", "station"), ["output"]);
    assert!(a.outputs[1].aggregated && a.outputs[1].raw_from.is_empty());
}

#[tokio::test]
async fn unions_merge_lineage() {
    let a =
        ok("SELECT person AS p FROM hospital.visits UNION ALL SELECT person FROM insurance.claims")
            .await;
    assert_eq!(
        a.outputs[0].raw_from,
        cols(&["hospital.visits.person", "insurance.claims.person"])
    );
    assert_eq!(uses(&a, "insurance.claims", "person"), ["output"]);
    // UNION (distinct) compares the rows.
    let a = ok("SELECT count(*) AS n FROM (SELECT station FROM police.wanted UNION SELECT department FROM hospital.visits) u").await;
    assert_eq!(uses(&a, "police.wanted", "station"), ["group"]);
    assert_eq!(uses(&a, "hospital.visits", "department"), ["group"]);
    assert!(a.outputs[0].aggregated);
}

#[tokio::test]
async fn having_order_distinct_and_rollup() {
    let a = ok(
        "SELECT station, count(*) AS n FROM police.wanted GROUP BY station
                HAVING count(*) >= 5 AND station <> 'east' ORDER BY station, n DESC",
    )
    .await;
    assert_eq!(
        uses(&a, "police.wanted", "station"),
        ["filter", "group", "order", "output"]
    );
    let a = ok("SELECT DISTINCT department FROM hospital.visits").await;
    assert_eq!(
        uses(&a, "hospital.visits", "department"),
        ["group", "output"]
    );
    let a = ok("SELECT station, offence, count(*) AS n FROM police.wanted GROUP BY ROLLUP (station, offence)").await;
    assert_eq!(uses(&a, "police.wanted", "offence"), ["group", "output"]);
    assert_eq!(a.outputs.len(), 3);
    assert!(a.outputs[2].aggregated);
}

#[tokio::test]
async fn count_star_reads_the_table_but_no_column() {
    let a = ok("SELECT count(*) AS n FROM hospital.visits").await;
    assert!(a.uses.is_empty());
    assert_eq!(
        a.columns_by_table(),
        BTreeMap::from([("hospital.visits".to_string(), BTreeSet::new())])
    );
}

#[tokio::test]
async fn tokens_of_different_keys_never_meet() {
    for sql in [
        "SELECT count(*) FROM hospital.visits v JOIN tax.employment t ON v.person = t.person",
        "SELECT count(*) FROM hospital.visits v, tax.employment t WHERE t.person = v.person",
        "SELECT count(*) FROM hospital.visits v WHERE v.person IN (SELECT person FROM tax.employment)",
        "SELECT count(*) FROM hospital.visits v WHERE EXISTS (SELECT 1 FROM tax.employment t WHERE t.person = v.person)",
        "SELECT count(DISTINCT p) FROM (SELECT person AS p FROM hospital.visits UNION ALL SELECT person FROM tax.employment) u",
        "SELECT coalesce(v.person, t.person) FROM hospital.visits v FULL JOIN tax.employment t ON v.visit_date = DATE '2026-01-01'",
    ] {
        match analyse(sql).await {
            Err(AnalysisError::MixedTokens(m)) => {
                let both = BTreeSet::from([m.left.table, m.right.table]);
                assert_eq!(
                    both,
                    BTreeSet::from(["hospital.visits".to_string(), "tax.employment".to_string()]),
                    "{sql}"
                );
            }
            other => panic!("{sql}: expected a token-key refusal, got {other:?}"),
        }
    }
    // Same key: fine; counting tokens of two keys side by side is fine too.
    ok("SELECT count(*) FROM hospital.visits v JOIN insurance.claims c ON v.person = c.person")
        .await;
    ok("SELECT (SELECT count(DISTINCT person) FROM hospital.visits) AS a, (SELECT count(DISTINCT person) FROM tax.employment) AS b").await;
    let err = analyse(
        "SELECT count(*) FROM hospital.visits v JOIN tax.employment t ON v.person = t.person",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("hospital.visits.person")
            && err.contains("tax.employment.person")
            && err.contains("key-b"),
        "{err}"
    );
}

#[tokio::test]
async fn statements_are_refused() {
    for sql in [
        "CREATE TABLE x AS SELECT 1",
        "EXPLAIN SELECT count(*) FROM hospital.visits",
        "SET datafusion.execution.parquet.enable_page_index = true",
        "CREATE VIEW v AS SELECT * FROM hospital.visits",
    ] {
        let plan = context().state().create_logical_plan(sql).await.unwrap();
        let err = analyze(&plan, &domains).unwrap_err();
        assert!(matches!(err, AnalysisError::NotAQuery(_)), "{sql}: {err}");
    }
}
