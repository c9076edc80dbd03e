#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

fn contracts() -> ContractSet {
    ContractSet::load_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets"),
    )
    .unwrap()
}

fn ok(sql: &str) -> Analysis {
    parse(sql, &contracts(), &Limits::default()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn refused(sql: &str) -> Refusal {
    match parse(sql, &contracts(), &Limits::default()) {
        Ok(a) => panic!("{sql}: accepted as {a:?}"),
        Err(e) => e,
    }
}

#[test]
fn blocks_are_flattened_and_keep_every_instance() {
    let a = ok(
        "WITH big AS (SELECT person, amount FROM insurance.claims WHERE amount > 100) \
         SELECT count(DISTINCT person), sum(amount) FROM big",
    );
    assert_eq!(a.instances.len(), 1);
    assert!(matches!(
        a.filter,
        Some(Condition::Compare(_, Comparison::Gt, Constant::Float(_)))
    ));
    assert_eq!(a.aggregates.len(), 2);

    // A subquery that drops the token still has its table, so its units are known.
    let a = ok(
        "SELECT s.station, count(*) FROM (SELECT station FROM police.incidents WHERE category <> 'fraud') s GROUP BY s.station",
    );
    assert_eq!(a.instances[0].table, "police.incidents");
    assert_eq!(a.keys.len(), 1);

    let a = ok(
        "SELECT v.department, count(DISTINCT v.person) FROM hospital.visits v \
         JOIN insurance.claims c ON v.person = c.person GROUP BY v.department ORDER BY 2 DESC LIMIT 5",
    );
    assert_eq!(a.instances.len(), 2);
    assert_eq!(a.joins.len(), 1);
    assert_eq!(a.order, vec![(1, true)]);
    assert_eq!(a.limit, Some(5));

    let a = ok(
        "SELECT date_trunc('month', reported_at) AS m, count(*) AS n FROM police.incidents \
         WHERE reported_at >= current_date - INTERVAL '90' DAY AND category IN ('dispute', 'noise') \
         GROUP BY m HAVING n > 20 AND count(*) < 100000",
    );
    assert!(matches!(a.keys[0], Key::Trunc(TruncUnit::Month, _)));
    assert!(matches!(a.having, Some(Having::And(_))));
}

#[test]
fn every_class_of_shape_is_refused_with_its_rule() {
    let cases: &[(&str, LanguageRule)] = &[
        // Rows, not groups.
        ("SELECT * FROM police.incidents", LanguageRule::Shape),
        ("SELECT station FROM police.incidents", LanguageRule::Shape),
        (
            "SELECT DISTINCT station FROM police.incidents",
            LanguageRule::Shape,
        ),
        (
            "SELECT station, count(*) FROM police.incidents",
            LanguageRule::Shape,
        ),
        (
            "SELECT count(*) FROM police.incidents GROUP BY station",
            LanguageRule::Shape,
        ),
        // Sub-populations inside a group.
        (
            "SELECT avg(CASE WHEN station = 'S01' THEN risk_level END) FROM police.mental_health_registry",
            LanguageRule::Aggregate,
        ),
        (
            "SELECT sum(income) FILTER (WHERE status = 'employed') FROM tax.employment",
            LanguageRule::Aggregate,
        ),
        (
            "SELECT count(DISTINCT CASE WHEN status = 'x' THEN person END) FROM tax.employment",
            LanguageRule::Aggregate,
        ),
        (
            "SELECT sum(income) - sum(income) FROM tax.employment",
            LanguageRule::Shape,
        ),
        (
            "SELECT sum(income * 2) FROM tax.employment",
            LanguageRule::Aggregate,
        ),
        (
            "SELECT max(income) FROM tax.employment",
            LanguageRule::Aggregate,
        ),
        (
            "SELECT median(income) FROM tax.employment",
            LanguageRule::Aggregate,
        ),
        (
            "SELECT string_agg(status, ',') FROM tax.employment",
            LanguageRule::Aggregate,
        ),
        (
            "SELECT sum(DISTINCT income) FROM tax.employment",
            LanguageRule::Aggregate,
        ),
        // Subqueries outside the aggregate.
        (
            "SELECT count(*), (SELECT count(*) FROM police.wanted) FROM police.incidents",
            LanguageRule::Shape,
        ),
        (
            "SELECT count(*) FROM police.incidents WHERE EXISTS (SELECT 1 FROM police.wanted)",
            LanguageRule::Shape,
        ),
        (
            "SELECT count(*) FROM police.incidents WHERE station IN (SELECT station FROM police.wanted)",
            LanguageRule::Shape,
        ),
        (
            "SELECT station, count(*) FROM police.incidents GROUP BY station HAVING (SELECT count(*) FROM police.wanted) > 1",
            LanguageRule::Shape,
        ),
        (
            "SELECT station, count(*) FROM police.incidents GROUP BY station HAVING station = 'S01'",
            LanguageRule::Shape,
        ),
        (
            "SELECT station, count(*) FROM police.incidents GROUP BY station HAVING max(risk_level) > 1",
            LanguageRule::Aggregate,
        ),
        (
            "WITH t AS (SELECT station, count(*) AS n FROM police.incidents GROUP BY station) SELECT sum(n) FROM t",
            LanguageRule::Shape,
        ),
        // Complements.
        (
            "SELECT station, category, count(*) FROM police.incidents GROUP BY ROLLUP (station, category)",
            LanguageRule::Shape,
        ),
        (
            "SELECT station, category, count(*) FROM police.incidents GROUP BY CUBE (station, category)",
            LanguageRule::Shape,
        ),
        (
            "SELECT station, count(*) FROM police.incidents GROUP BY GROUPING SETS ((station), ())",
            LanguageRule::Shape,
        ),
        // Tokens.
        (
            "SELECT count(*) FROM police.incidents GROUP BY caller",
            LanguageRule::Token,
        ),
        (
            "SELECT caller, count(*) FROM police.incidents GROUP BY caller",
            LanguageRule::Token,
        ),
        (
            "SELECT count(*) FROM police.incidents WHERE caller = X'00'",
            LanguageRule::Token,
        ),
        (
            "SELECT count(*) FROM police.incidents WHERE substr(encode(caller, 'hex'), 1, 2) < 'a'",
            LanguageRule::Condition,
        ),
        (
            "SELECT sum(caller) FROM police.incidents",
            LanguageRule::Token,
        ),
        (
            "SELECT count(*) FROM police.wanted w JOIN police.incidents i ON substr(encode(w.person,'hex'),1,3) < concat('a', i.category)",
            LanguageRule::Join,
        ),
        (
            "SELECT count(*) FROM police.wanted w JOIN police.incidents i ON w.person = i.caller_phone",
            LanguageRule::Join,
        ),
        (
            "SELECT count(*) FROM police.wanted w JOIN police.incidents i ON w.station = i.station",
            LanguageRule::Join,
        ),
        // Joins that are not token equalities.
        (
            "SELECT count(*) FROM police.wanted, police.incidents",
            LanguageRule::Join,
        ),
        (
            "SELECT count(*) FROM police.wanted w CROSS JOIN police.incidents i",
            LanguageRule::Join,
        ),
        (
            "SELECT count(*) FROM police.wanted w LEFT JOIN police.incidents i ON w.person = i.caller",
            LanguageRule::Join,
        ),
        (
            "SELECT count(*) FROM police.wanted w JOIN police.incidents i ON true",
            LanguageRule::Join,
        ),
        (
            "SELECT count(*) FROM police.wanted a JOIN police.incidents b ON a.person = b.caller JOIN hospital.visits c ON a.person = b.party",
            LanguageRule::Join,
        ),
        // Conditions that are not column-constant comparisons (error oracles need them).
        (
            "SELECT count(*) FROM tax.employment WHERE 1 / (income - income) > 0",
            LanguageRule::Condition,
        ),
        (
            "SELECT count(*) FROM tax.employment WHERE income > income",
            LanguageRule::Condition,
        ),
        (
            "SELECT count(*) FROM tax.employment WHERE CAST(income AS INT) = 3",
            LanguageRule::Condition,
        ),
        (
            "SELECT count(*) FROM tax.employment WHERE status = NULL",
            LanguageRule::Condition,
        ),
        (
            "SELECT count(*) FROM tax.employment WHERE income = 'abc'",
            LanguageRule::Condition,
        ),
        // Sets, windows, statements.
        (
            "SELECT count(*) FROM police.incidents UNION SELECT count(*) FROM police.wanted",
            LanguageRule::Shape,
        ),
        (
            "SELECT count(*) OVER () FROM police.incidents",
            LanguageRule::Shape,
        ),
        (
            "SELECT rank() OVER (ORDER BY station) FROM police.incidents",
            LanguageRule::Shape,
        ),
        (
            "EXPLAIN SELECT count(*) FROM police.incidents",
            LanguageRule::Syntax,
        ),
        (
            "CREATE TABLE x AS SELECT * FROM police.incidents",
            LanguageRule::Syntax,
        ),
        (
            "SELECT count(*) FROM police.incidents; SELECT count(*) FROM police.incidents",
            LanguageRule::Syntax,
        ),
        // Names.
        (
            "SELECT count(*) FROM information_schema.tables",
            LanguageRule::Names,
        ),
        (
            "SELECT count(*) FROM police.wanted WHERE id_number = '1'",
            LanguageRule::Names,
        ),
        (
            "SELECT count(*) FROM hospital.visits WHERE patient_name = 'x'",
            LanguageRule::Names,
        ),
        (
            "SELECT count(*) AS __owner FROM police.incidents",
            LanguageRule::Names,
        ),
    ];
    let mut wrong = Vec::new();
    for (sql, rule) in cases {
        let r = refused(sql);
        if r.rule != *rule {
            wrong.push(format!("{sql}\n   expected {rule:?}, got {r}"));
        }
        assert!(!r.message.is_empty());
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn limits_hold_before_anything_overflows() {
    // A 1,500-term expression: refused by the limits, not by a stack overflow.
    let long = (0..1500).map(|_| "1").collect::<Vec<_>>().join(" + ");
    let r = refused(&format!(
        "SELECT count(*) FROM tax.employment WHERE income > {long}"
    ));
    assert_eq!(r.rule, LanguageRule::Limits, "{r}");
    let deep = format!(
        "SELECT count(*) FROM tax.employment WHERE {}income > 1{}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert_eq!(refused(&deep).rule, LanguageRule::Limits);
    let ors = (0..600)
        .map(|i| format!("income = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    assert_eq!(
        refused(&format!("SELECT count(*) FROM tax.employment WHERE {ors}")).rule,
        LanguageRule::Limits
    );
    let list = (0..600)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        refused(&format!(
            "SELECT count(*) FROM tax.employment WHERE income IN ({list})"
        ))
        .rule,
        LanguageRule::Limits
    );
}

#[test]
fn refusals_never_quote_constants() {
    let secret = "110105198206042290";
    for sql in [
        format!("SELECT count(*) FROM police.wanted WHERE id_number = '{secret}'"),
        format!("SELECT count(*) FROM tax.employment WHERE income = '{secret}'"),
        format!("SELECT max(income) FROM tax.employment WHERE status = '{secret}'"),
        format!("SELECT count(*) FROM tax.employment WHERE status = '{secret}' +"),
        format!("SELECT '{secret}' FROM tax.employment"),
    ] {
        let r = refused(&sql);
        assert!(!r.message.contains(secret), "{sql}: {r}");
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "SELECT",
        "FROM",
        "WHERE",
        "GROUP",
        "BY",
        "HAVING",
        "ORDER",
        "LIMIT",
        "JOIN",
        "ON",
        "AND",
        "OR",
        "NOT",
        "IN",
        "BETWEEN",
        "IS",
        "NULL",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "WITH",
        "AS",
        "UNION",
        "DISTINCT",
        "OVER",
        "FILTER",
        "count",
        "sum",
        "avg",
        "max",
        "date_trunc",
        "encode",
        "substr",
        "(",
        ")",
        ",",
        "*",
        "+",
        "-",
        "/",
        "=",
        "<",
        ">",
        "'x'",
        "'2026-01-01'",
        "1",
        "0",
        "1e308",
        "police.incidents",
        "hospital.visits",
        "tax.employment",
        "caller",
        "person",
        "station",
        "income",
        "status",
        "i",
        "v",
        ".",
        ";",
        "current_date",
        "INTERVAL",
        "'7'",
        "DAY",
        "X'00'",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any sequence of the language's words, and any text at all, is answered with an
        /// analysis or a refusal naming a rule — never a panic, whatever its shape.
        #[test]
        fn any_text_gets_an_analysis_or_a_named_refusal(
            words in proptest::collection::vec(proptest::sample::select(WORDS), 0..60),
            noise in ".{0,80}",
        ) {
            let contracts = contracts();
            for text in [words.join(" "), format!("SELECT count(*) FROM tax.employment WHERE {}", words.join(" ")), noise] {
                match parse(&text, &contracts, &Limits::default()) {
                    Ok(a) => prop_assert!(!a.aggregates.is_empty()),
                    Err(r) => prop_assert!(!r.message.is_empty() && !r.rule.code().is_empty()),
                }
            }
        }
    }
}
