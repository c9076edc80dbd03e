//! The privacy gate end to end through the `blindwatch` binary: a red-team corpus of queries
//! that try to extract a row, a value or a single person (each refused, or answered with no
//! group under k subjects), and analysts' queries whose released numbers equal a direct
//! computation on the partners' raw exports. Also: Cedar access for queries, purpose
//! binding, k from `policies/privacy.toml`, and the audit trail of every query.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::{bw, s};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

const K: usize = 10;

/// One demo city for every test of this binary: consortium tokens (quicker), no messy
/// input, so the raw exports are exactly what was sealed.
struct City {
    root: PathBuf,
}

fn city() -> &'static City {
    static CITY: OnceLock<City> = OnceLock::new();
    CITY.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap().keep();
        let root = tmp.join("d");
        let out = bw(&[
            "demo",
            "--data-dir",
            s(&root),
            "--persons",
            "10000",
            "--seed",
            "5",
            "--as-of",
            "2026-11-30",
            "--messy-rate",
            "0",
            "--tokens",
            "consortium",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        City { root }
    })
}

impl City {
    fn platform(&self) -> PathBuf {
        self.root.join("platform")
    }

    fn query_as(&self, principal: &str, purpose: &str, sql: &str) -> Output {
        // One writer per audit log: the tests of this binary share the city, so their
        // queries take turns (as two analysts' commands on one platform would).
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        bw(&[
            "query",
            "--data-dir",
            s(&self.platform()),
            "--as",
            principal,
            "--purpose",
            purpose,
            "--format",
            "json",
            sql,
        ])
    }

    fn query(&self, sql: &str) -> Result<serde_json::Value, String> {
        let out = self.query_as("specialist:wang", "analysis", sql);
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A partner's raw export as rows of column → value.
    fn export(&self, table: &str) -> Vec<BTreeMap<String, String>> {
        let partner = table.split('.').next().unwrap();
        let path = self
            .root
            .join("partners")
            .join(partner)
            .join("exports")
            .join(format!("{table}.csv"));
        let bytes = std::fs::read(path).unwrap();
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t.trim_start_matches('\u{feff}').to_owned(),
            Err(_) => encoding_rs::GB18030.decode(&bytes).0.into_owned(),
        };
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                headers
                    .iter()
                    .zip(r.iter())
                    .map(|(h, v)| (h.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }
}

/// The identifier columns of each export (the token columns the gate counts subjects by).
fn identifiers(table: &str) -> &'static [&'static str] {
    match table {
        "police.incidents" => &[
            "caller_id_number",
            "caller_phone",
            "party_id_number",
            "address",
            "suspect_phone",
        ],
        "hospital.visits" => &["id_number", "phone"],
        "insurance.claims" | "tax.employment" | "police.wanted" => &["id_number"],
        "police.mental_health_registry" => &["id_number", "name", "guardian_phone"],
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------------------------------
// The red-team corpus.

enum Expect {
    /// Refused, the message naming this rule or column.
    Refused(&'static str),
    /// Answered, but no group is released (every group covers fewer than k people).
    NothingReleased,
}

use Expect::{NothingReleased, Refused};

const ATTACKS: &[(&str, &str, Expect)] = &[
    (
        "plain select of rows",
        "SELECT * FROM police.incidents",
        Refused("refused"),
    ),
    (
        "a token column",
        "SELECT caller FROM police.incidents",
        Refused("caller"),
    ),
    (
        "attributes row by row",
        "SELECT station, category FROM police.incidents",
        Refused("aggregate-only"),
    ),
    (
        "one row through LIMIT",
        "SELECT station, reported_at FROM police.incidents LIMIT 1",
        Refused("aggregate-only"),
    ),
    (
        "LIMIT on an aggregate of tiny groups",
        "SELECT station, count(*) AS n FROM police.incidents GROUP BY station, reported_at ORDER BY n LIMIT 1",
        NothingReleased,
    ),
    (
        "GROUP BY a token",
        "SELECT count(*) FROM police.incidents GROUP BY caller",
        Refused("caller"),
    ),
    (
        "GROUP BY a person token through a join",
        "SELECT count(*) FROM police.wanted w JOIN hospital.visits v ON w.person = v.person GROUP BY v.person",
        Refused("person"),
    ),
    (
        "GROUP BY a near-unique timestamp",
        "SELECT reported_at, count(*) FROM police.incidents GROUP BY reported_at",
        NothingReleased,
    ),
    (
        "GROUP BY a unique id",
        "SELECT incident_id, count(*) FROM police.incidents GROUP BY incident_id",
        Refused("incident_id"),
    ),
    (
        "string_agg of categories",
        "SELECT station, string_agg(category, ',') FROM police.incidents GROUP BY station",
        Refused("category"),
    ),
    (
        "array_agg of tokens",
        "SELECT station, array_agg(caller) FROM police.incidents GROUP BY station",
        Refused("caller"),
    ),
    (
        "first_value of a hospital",
        "SELECT department, first_value(hospital) FROM hospital.visits GROUP BY department",
        Refused("hospital"),
    ),
    (
        "min of text",
        "SELECT station, min(category) FROM police.incidents GROUP BY station",
        Refused("category"),
    ),
    (
        "max copies one person's amount",
        "SELECT drug_category, max(amount) FROM insurance.claims GROUP BY drug_category",
        Refused("amount"),
    ),
    (
        "median copies an income",
        "SELECT status, median(income) FROM tax.employment GROUP BY status",
        Refused("income"),
    ),
    (
        "percentile 1.0 is the maximum",
        "SELECT approx_percentile_cont(amount, 1.0) FROM insurance.claims",
        Refused("amount"),
    ),
    (
        "an aggregate the checker does not know",
        "SELECT station, bit_xor(risk_level) FROM police.mental_health_registry GROUP BY station",
        Refused("bit_xor"),
    ),
    (
        "window function over rows",
        "SELECT station, row_number() OVER (PARTITION BY station ORDER BY reported_at) FROM police.incidents",
        Refused("refused"),
    ),
    (
        "window over an aggregate",
        "SELECT station, count(*), rank() OVER (ORDER BY count(*)) FROM police.incidents GROUP BY station",
        Refused("aggregate-only"),
    ),
    (
        "subquery that smuggles rows",
        "SELECT s FROM (SELECT station AS s, caller FROM police.incidents) t",
        Refused("aggregate-only"),
    ),
    (
        "CTE that smuggles tokens",
        "WITH x AS (SELECT address FROM police.incidents) SELECT * FROM x",
        Refused("address"),
    ),
    (
        "UNION of an aggregate with rows",
        "SELECT station, count(*) FROM police.incidents GROUP BY station UNION ALL SELECT category, 1 FROM police.incidents",
        Refused("refused"),
    ),
    (
        "UNION of two aggregates",
        "SELECT station, count(*) FROM police.incidents GROUP BY station UNION ALL SELECT station, count(*) FROM police.wanted GROUP BY station",
        Refused("aggregate-only"),
    ),
    (
        "CASE on a token picks one person",
        "SELECT sum(CASE WHEN caller = X'00112233445566778899aabbccddeeff' THEN 1 ELSE 0 END) FROM police.incidents",
        Refused("caller"),
    ),
    (
        "CASE on an id picks one claim",
        "SELECT sum(CASE WHEN claim_id = 'C0000000001' THEN amount ELSE 0 END) FROM insurance.claims",
        Refused("claim_id"),
    ),
    (
        "differencing: everyone but one token",
        "SELECT count(*) FROM police.incidents WHERE caller <> (SELECT min(caller) FROM police.incidents)",
        Refused("caller"),
    ),
    (
        "differencing: a filter that isolates nobody or one",
        "SELECT count(*), sum(amount) FROM insurance.claims WHERE amount > 99999",
        NothingReleased,
    ),
    (
        "differencing: one incident's minute",
        "SELECT station, category, date_trunc('minute', reported_at) AS m, count(*) FROM police.incidents GROUP BY station, category, m",
        NothingReleased,
    ),
    (
        "a self-join pins one caller",
        "SELECT a.station, count(*) FROM police.incidents a JOIN police.incidents b ON a.caller = b.caller WHERE b.reported_at >= TIMESTAMP '2026-03-01 00:00:00' AND b.reported_at < TIMESTAMP '2026-03-02 00:00:00' GROUP BY a.station",
        NothingReleased,
    ),
    (
        "cast a token to text",
        "SELECT CAST(caller AS VARCHAR) AS c, count(*) FROM police.incidents GROUP BY c",
        Refused("caller"),
    ),
    (
        "hex-encode a token",
        "SELECT encode(caller_phone, 'hex'), count(*) FROM police.incidents GROUP BY 1",
        Refused("caller_phone"),
    ),
    (
        "max of a token as text in HAVING",
        "SELECT station, count(*) FROM police.incidents GROUP BY station HAVING max(CAST(caller AS VARCHAR)) > ''",
        Refused("caller"),
    ),
    (
        "regexp on an identifier",
        "SELECT count(*) FROM police.incidents WHERE regexp_like(CAST(address AS VARCHAR), '^a')",
        Refused("address"),
    ),
    (
        "nested functions copy a value out",
        "SELECT station, count(*), max(concat(station, CAST(caller AS VARCHAR))) FROM police.incidents GROUP BY station",
        Refused("caller"),
    ),
    (
        "coalesce passes a token through",
        "SELECT coalesce(caller_phone, caller_phone) FROM police.incidents",
        Refused("caller_phone"),
    ),
    (
        "the raw ID numbers of the watch list",
        "SELECT count(*) FROM police.wanted WHERE id_number = '110105198206042290'",
        Refused("id_number"),
    ),
    (
        "the names of the watch list",
        "SELECT name FROM police.wanted",
        Refused("name"),
    ),
    (
        "a scalar subquery leaks a maximum",
        "SELECT station, count(*), (SELECT max(amount) FROM insurance.claims) FROM police.incidents GROUP BY station",
        Refused("amount"),
    ),
    (
        "SELECT DISTINCT lists values",
        "SELECT DISTINCT hospital FROM hospital.visits",
        Refused("aggregate-only"),
    ),
    (
        "the gate's own column names",
        "SELECT count(*) AS __blindwatch_subjects_0 FROM police.incidents",
        Refused("aggregate-only"),
    ),
    (
        "an aggregate over rows without identifiers",
        "SELECT s, count(*) FROM (SELECT station AS s FROM police.incidents) t GROUP BY s",
        Refused("no-subjects"),
    ),
    (
        "DDL",
        "CREATE TABLE x AS SELECT * FROM police.incidents",
        Refused("query-plan"),
    ),
    (
        "DML",
        "INSERT INTO police.incidents (station) VALUES ('S01')",
        Refused("query-plan"),
    ),
    ("DROP", "DROP TABLE police.incidents", Refused("query-plan")),
    (
        "COPY out",
        "COPY police.incidents TO '/tmp/incidents.csv'",
        Refused("query-plan"),
    ),
    (
        "CREATE FUNCTION",
        "CREATE FUNCTION f(x INT) RETURNS INT RETURN x",
        Refused("query-plan"),
    ),
    (
        "EXPLAIN leaks the plan",
        "EXPLAIN SELECT count(*) FROM police.incidents",
        Refused("query-plan"),
    ),
    (
        "EXPLAIN ANALYZE",
        "EXPLAIN ANALYZE SELECT count(*) FROM police.incidents",
        Refused("query-plan"),
    ),
    (
        "two statements",
        "SELECT count(*) FROM police.incidents; SELECT * FROM police.incidents",
        Refused("query-plan"),
    ),
    (
        "a table that is not sealed data",
        "SELECT count(*) FROM information_schema.tables",
        Refused("query-plan"),
    ),
];

#[test]
fn the_red_team_corpus_is_refused_or_released_only_in_groups_of_k() {
    let city = city();
    assert!(ATTACKS.len() >= 40);
    let mut failures = Vec::new();
    for (what, sql, expect) in ATTACKS {
        match (city.query(sql), expect) {
            (Err(message), Refused(needle)) => {
                if !message.contains(needle) {
                    failures.push(format!(
                        "{what}: refused, but without `{needle}`: {message}"
                    ));
                }
            }
            (Ok(result), NothingReleased) => {
                let rows = result["rows"].as_array().unwrap();
                // An attack whose filter matches nobody releases nothing too.
                if !rows.is_empty() {
                    failures.push(format!("{what}: released {result}"));
                }
            }
            (Ok(result), Refused(_)) => failures.push(format!("{what}: ran: {result}")),
            (Err(message), NothingReleased) => {
                failures.push(format!("{what}: refused, expected suppression: {message}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Legitimate questions, checked against a direct computation on the raw exports.

/// A group's key, its aggregate values, and the distinct non-empty values of each identifier
/// column among its rows.
struct Group {
    values: Vec<f64>,
    subjects: BTreeMap<&'static str, BTreeSet<String>>,
}

/// Groups the rows of `table` passing `keep` by `key`, with the values `aggregate` computes
/// from the group's rows; releases a group when its smallest non-zero identifier count is
/// at least k (the gate's rule, computed here from the raw values).
fn direct(
    rows: &[BTreeMap<String, String>],
    table: &'static str,
    keep: impl Fn(&BTreeMap<String, String>) -> bool,
    key: impl Fn(&BTreeMap<String, String>) -> Vec<String>,
    aggregate: impl Fn(&[&BTreeMap<String, String>]) -> Vec<f64>,
) -> (BTreeMap<Vec<String>, Vec<f64>>, usize) {
    let mut groups: BTreeMap<Vec<String>, Vec<&BTreeMap<String, String>>> = BTreeMap::new();
    for r in rows.iter().filter(|r| keep(r)) {
        groups.entry(key(r)).or_default().push(r);
    }
    let mut released = BTreeMap::new();
    let mut suppressed = 0;
    for (k, members) in groups {
        let group = Group {
            values: aggregate(&members),
            subjects: identifiers(table)
                .iter()
                .map(|c| {
                    (
                        *c,
                        members
                            .iter()
                            .map(|r| r[*c].clone())
                            .filter(|v| !v.is_empty())
                            .collect(),
                    )
                })
                .collect(),
        };
        let smallest = group
            .subjects
            .values()
            .map(BTreeSet::len)
            .filter(|n| *n > 0)
            .min();
        if smallest.is_some_and(|n| n >= K) {
            released.insert(k, group.values);
        } else {
            suppressed += 1;
        }
    }
    (released, suppressed)
}

/// The query's released rows as (text key columns, numeric value columns).
fn released(result: &serde_json::Value, keys: usize) -> BTreeMap<Vec<String>, Vec<f64>> {
    result["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let row = row.as_array().unwrap();
            let key = row[..keys]
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            let values = row[keys..].iter().map(|v| v.as_f64().unwrap()).collect();
            (key, values)
        })
        .collect()
}

fn assert_same(
    what: &str,
    got: &BTreeMap<Vec<String>, Vec<f64>>,
    want: &BTreeMap<Vec<String>, Vec<f64>>,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: released groups"
    );
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.len(), w.len(), "{what} {k:?}");
        for (a, b) in g.iter().zip(w) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{what} {k:?}: got {a}, computed {b}"
            );
        }
    }
}

fn count(rows: &[&BTreeMap<String, String>]) -> f64 {
    rows.len() as f64
}

fn distinct(rows: &[&BTreeMap<String, String>], col: &str) -> f64 {
    rows.iter()
        .map(|r| r[col].as_str())
        .filter(|v| !v.is_empty())
        .collect::<BTreeSet<_>>()
        .len() as f64
}

fn num(r: &BTreeMap<String, String>, col: &str) -> Option<f64> {
    r[col].parse().ok()
}

fn sum(rows: &[&BTreeMap<String, String>], col: &str) -> f64 {
    rows.iter().filter_map(|r| num(r, col)).sum()
}

fn avg(rows: &[&BTreeMap<String, String>], col: &str) -> f64 {
    let v: Vec<f64> = rows.iter().filter_map(|r| num(r, col)).collect();
    v.iter().sum::<f64>() / v.len() as f64
}

fn all(_: &BTreeMap<String, String>) -> bool {
    true
}

#[test]
fn analysts_questions_equal_a_direct_computation() {
    let city = city();
    let incidents = city.export("police.incidents");
    let wanted = city.export("police.wanted");
    let registry = city.export("police.mental_health_registry");
    let visits = city.export("hospital.visits");
    let claims = city.export("insurance.claims");
    let employment = city.export("tax.employment");
    let col = |c: &'static str| move |r: &BTreeMap<String, String>| vec![r[c].clone()];
    let none = |_: &BTreeMap<String, String>| Vec::<String>::new();

    type Case = (
        &'static str,
        usize,
        (BTreeMap<Vec<String>, Vec<f64>>, usize),
    );
    let cases: Vec<Case> = vec![
        (
            "SELECT station, count(*) AS n FROM police.incidents GROUP BY station",
            1,
            direct(&incidents, "police.incidents", all, col("station"), |g| {
                vec![count(g)]
            }),
        ),
        (
            "SELECT category, count(DISTINCT incident_id) FROM police.incidents GROUP BY category",
            1,
            direct(&incidents, "police.incidents", all, col("category"), |g| {
                vec![distinct(g, "incident_id")]
            }),
        ),
        (
            "SELECT station, category, count(*) FROM police.incidents GROUP BY station, category",
            2,
            direct(
                &incidents,
                "police.incidents",
                all,
                |r| vec![r["station"].clone(), r["category"].clone()],
                |g| vec![count(g)],
            ),
        ),
        (
            "SELECT station, count(DISTINCT caller) FROM police.incidents GROUP BY station",
            1,
            direct(&incidents, "police.incidents", all, col("station"), |g| {
                vec![distinct(g, "caller_id_number")]
            }),
        ),
        (
            "SELECT station, count(*) FROM police.incidents WHERE category = 'dispute' GROUP BY station HAVING count(*) > 3",
            1,
            {
                let (mut r, s) = direct(
                    &incidents,
                    "police.incidents",
                    |r| r["category"] == "dispute",
                    col("station"),
                    |g| vec![count(g)],
                );
                r.retain(|_, v| v[0] > 3.0);
                (r, s)
            },
        ),
        (
            "SELECT count(*), avg(danger_level) FROM police.wanted",
            0,
            direct(&wanted, "police.wanted", all, none, |g| {
                vec![count(g), avg(g, "danger_level")]
            }),
        ),
        (
            "SELECT risk_level, count(*) FROM police.mental_health_registry GROUP BY risk_level",
            1,
            direct(
                &registry,
                "police.mental_health_registry",
                all,
                col("risk_level"),
                |g| vec![count(g)],
            ),
        ),
        (
            "SELECT count(DISTINCT person), avg(risk_level) FROM police.mental_health_registry",
            0,
            direct(&registry, "police.mental_health_registry", all, none, |g| {
                vec![distinct(g, "id_number"), avg(g, "risk_level")]
            }),
        ),
        (
            "SELECT drug_category, count(*), sum(amount), avg(amount) FROM insurance.claims GROUP BY drug_category",
            1,
            direct(
                &claims,
                "insurance.claims",
                all,
                col("drug_category"),
                |g| vec![count(g), sum(g, "amount"), avg(g, "amount")],
            ),
        ),
        (
            "SELECT count(*) FROM insurance.claims WHERE amount > 500",
            0,
            direct(
                &claims,
                "insurance.claims",
                |r| num(r, "amount").is_some_and(|a| a > 500.0),
                none,
                |g| vec![count(g)],
            ),
        ),
        (
            "WITH big AS (SELECT person, amount FROM insurance.claims WHERE amount > 100) SELECT count(DISTINCT person), sum(amount) FROM big",
            0,
            direct(
                &claims,
                "insurance.claims",
                |r| num(r, "amount").is_some_and(|a| a > 100.0),
                none,
                |g| vec![distinct(g, "id_number"), sum(g, "amount")],
            ),
        ),
        (
            "SELECT department, count(DISTINCT person) FROM hospital.visits GROUP BY department",
            1,
            direct(&visits, "hospital.visits", all, col("department"), |g| {
                vec![distinct(g, "id_number")]
            }),
        ),
        (
            "SELECT hospital, count(*) FROM hospital.visits GROUP BY hospital",
            1,
            direct(&visits, "hospital.visits", all, col("hospital"), |g| {
                vec![count(g)]
            }),
        ),
        (
            "SELECT status, count(*), avg(income) FROM tax.employment GROUP BY status",
            1,
            direct(&employment, "tax.employment", all, col("status"), |g| {
                vec![count(g), avg(g, "income")]
            }),
        ),
        (
            "SELECT period, count(DISTINCT person) FROM tax.employment GROUP BY period",
            1,
            direct(&employment, "tax.employment", all, col("period"), |g| {
                vec![distinct(g, "id_number")]
            }),
        ),
        (
            "SELECT s.station, count(*) FROM (SELECT station, caller FROM police.incidents WHERE category <> 'fraud') s GROUP BY s.station",
            1,
            {
                // The subquery keeps `caller` only, so the gate counts subjects by caller alone.
                let rows: Vec<BTreeMap<String, String>> = incidents
                    .iter()
                    .filter(|r| r["category"] != "fraud")
                    .map(|r| {
                        let mut r = r.clone();
                        for c in [
                            "caller_phone",
                            "party_id_number",
                            "address",
                            "suspect_phone",
                        ] {
                            r.insert(c.into(), String::new());
                        }
                        r
                    })
                    .collect();
                direct(&rows, "police.incidents", all, col("station"), |g| {
                    vec![count(g)]
                })
            },
        ),
    ];
    assert!(cases.len() >= 15);
    for (sql, keys, (want, want_suppressed)) in &cases {
        let result = city.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_same(sql, &released(&result, *keys), want);
        assert_eq!(
            result["groups_suppressed"].as_u64().unwrap() as usize,
            *want_suppressed,
            "{sql}: suppressed groups"
        );
        assert!(
            !want.is_empty(),
            "{sql}: a legitimate question releases something"
        );
    }

    // A join through tokens: persons with both a hospital visit and a claim, per department.
    let claimants: BTreeSet<&str> = claims.iter().map(|r| r["id_number"].as_str()).collect();
    let joined: Vec<BTreeMap<String, String>> = visits
        .iter()
        .filter(|r| claimants.contains(r["id_number"].as_str()))
        .cloned()
        .collect();
    // The gate counts hospital.visits' person and phone and insurance.claims' person; the
    // claims' person equals the visits' person on every joined row.
    let (want, want_suppressed) = direct(&joined, "hospital.visits", all, col("department"), |g| {
        vec![distinct(g, "id_number")]
    });
    let sql = "SELECT v.department, count(DISTINCT v.person) FROM hospital.visits v JOIN insurance.claims c ON v.person = c.person GROUP BY v.department";
    let result = city.query(sql).unwrap();
    assert_same(sql, &released(&result, 1), &want);
    assert_eq!(
        result["groups_suppressed"].as_u64().unwrap() as usize,
        want_suppressed
    );
}

#[test]
fn queries_need_the_access_policy_and_a_purpose_the_contract_allows() {
    let city = city();
    let sql = "SELECT station, count(*) FROM police.incidents GROUP BY station";
    for who in ["officer:li@S03", "auditor:zhao", "partner:hospital"] {
        let out = city.query_as(who, "analysis", sql);
        assert!(!out.status.success(), "{who} may not query");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("access-policy"), "{who}: {err}");
        assert!(out.stdout.is_empty());
    }
    let out = city.query_as("dba", "analysis", sql);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));

    // `hospital` may be grouped for analysis only.
    let sql = "SELECT hospital, count(*) FROM hospital.visits GROUP BY hospital";
    assert!(
        city.query_as("specialist", "analysis", sql)
            .status
            .success()
    );
    let out = city.query_as("specialist", "fugitive-tracking", sql);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("hospital.visits.hospital") && err.contains("fugitive-tracking"),
        "{err}"
    );
}

#[test]
fn every_query_is_audited_by_digest_with_its_group_counts() {
    let city = city();
    let platform = city.platform();
    let sql = "SELECT category, count(*) FROM police.incidents GROUP BY category";
    let out = city.query_as("specialist:audit-test", "analysis", sql);
    assert!(out.status.success());
    let refused = city.query_as(
        "specialist:audit-test",
        "analysis",
        "SELECT caller FROM police.incidents",
    );
    assert!(!refused.status.success());
    let log = std::fs::read_dir(platform.join("audit"))
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap_or_default())
        .collect::<Vec<u8>>();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("query_run") && text.contains("query_refused"),
        "audit log has query events"
    );
    assert!(
        !text.contains("SELECT"),
        "the query text is never logged, only its digest"
    );
    let verify = bw(&["audit", "verify", "--data-dir", s(&platform)]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn k_comes_from_the_privacy_settings() {
    let city = city();
    // A copy of the platform with k = 200: fewer groups are released.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("platform");
    copy_dir(&city.platform(), &copy);
    let privacy = copy.join("policies/privacy.toml");
    let text = std::fs::read_to_string(&privacy).unwrap();
    assert!(text.contains("min_group_size = 10\n"));
    std::fs::write(
        &privacy,
        text.replace("min_group_size = 10\n", "min_group_size = 200\n"),
    )
    .unwrap();
    let sql = "SELECT station, category, count(*) FROM police.incidents GROUP BY station, category";
    let at = |dir: &Path| -> serde_json::Value {
        let out = bw(&[
            "query",
            "--data-dir",
            s(dir),
            "--as",
            "specialist",
            "--purpose",
            "analysis",
            "--format",
            "json",
            sql,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let default = at(&city.platform());
    let strict = at(&copy);
    assert_eq!(strict["min_group_size"], 200);
    assert!(strict["rows"].as_array().unwrap().len() < default["rows"].as_array().unwrap().len());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
