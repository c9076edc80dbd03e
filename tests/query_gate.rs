//! The privacy gate end to end through the `blindwatch` binary, judged against the truth
//! computed from the partners' raw exports:
//!
//! - a red-team corpus of attack *classes* (padding, sub-populations inside a group,
//!   subqueries outside the aggregate, suppression and threshold oracles, complements,
//!   token extraction, error oracles, differencing, resource exhaustion), each generated
//!   over several targets drawn from the raw exports; an attack fails the gate when it is
//!   answered with a group of fewer than k people, when a yes/no pair tracks the truth, when
//!   a released value equals a target's, when the binary crashes, or when an attempt leaves
//!   no audit entry;
//! - the analysts' questions, answered within the noise's stated error of the truth (after
//!   the contracts' contribution bounds), and released whenever their groups are clearly
//!   above the release threshold;
//! - access policies and purposes, budgets that run out, k and noise from privacy.toml.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::{bw, s};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, OnceLock};

use blindwatch_common::{IdentifierKind, normalise};

const K: u64 = 10;
/// The demo city's size: large enough that the shipped watch lists clear the release
/// threshold, small enough for a debug build.
const PERSONS: &str = "60000";

type Row = BTreeMap<String, String>;
/// A question's group key of a raw row.
type KeyFn = Box<dyn Fn(&Row) -> Vec<String>>;

struct City {
    root: PathBuf,
    exports: Mutex<BTreeMap<String, &'static [Row]>>,
}

/// One demo city for every test of this binary: consortium tokens (quicker), no messy
/// input, so the raw exports are exactly what was sealed.
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
            PERSONS,
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
        City {
            root,
            exports: Mutex::new(BTreeMap::new()),
        }
    })
}

/// What one attempt did: its output and the audit entries it added.
struct Attempt {
    out: Output,
    runs: usize,
    refusals: usize,
}

impl Attempt {
    fn answer(&self) -> Option<serde_json::Value> {
        self.out
            .status
            .success()
            .then(|| serde_json::from_slice(&self.out.stdout).unwrap())
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

impl City {
    fn platform(&self) -> PathBuf {
        self.root.join("platform")
    }

    fn audit_counts(&self) -> (usize, usize) {
        let mut text = String::new();
        for e in std::fs::read_dir(self.platform().join("audit")).unwrap() {
            text.push_str(&String::from_utf8_lossy(
                &std::fs::read(e.unwrap().path()).unwrap_or_default(),
            ));
        }
        (
            text.matches("\"query_run\"").count(),
            text.matches("\"query_refused\"").count(),
        )
    }

    fn attempt_at(&self, platform: &Path, principal: &str, purpose: &str, sql: &str) -> Attempt {
        // One writer per audit log: the tests of this binary share the city, so their
        // queries take turns (as two analysts' commands on one platform would).
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.audit_counts();
        // Long texts go through standard input (an argument is limited by the system).
        let arg = if sql.len() > 64 * 1024 { "-" } else { sql };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blindwatch"))
            .args([
                "query",
                "--data-dir",
                s(platform),
                "--as",
                principal,
                "--purpose",
                purpose,
                "--format",
                "json",
                arg,
            ])
            .env("BLINDWATCH_LOG", "blindwatch=debug,warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            if arg == "-" {
                stdin.write_all(sql.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        let after = self.audit_counts();
        Attempt {
            out,
            runs: after.0 - before.0,
            refusals: after.1 - before.1,
        }
    }

    fn attempt(&self, principal: &str, sql: &str) -> Attempt {
        self.attempt_at(&self.platform(), principal, "analysis", sql)
    }

    /// A partner's raw export as rows of column → value (read once).
    fn export(&self, table: &str) -> &'static [Row] {
        let mut cache = self.exports.lock().unwrap();
        if let Some(rows) = cache.get(table) {
            return rows;
        }
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
        let rows: Vec<Row> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                headers
                    .iter()
                    .zip(r.iter())
                    .map(|(h, v)| (h.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect();
        let rows: &'static [Row] = Vec::leak(rows);
        cache.insert(table.to_owned(), rows);
        rows
    }
}

fn person(raw: &str) -> Option<String> {
    if raw.trim().is_empty() {
        return None;
    }
    normalise(IdentifierKind::Person, raw)
        .ok()
        .map(|r| r.reveal_value().to_owned())
}

/// The privacy unit of a raw row, as the contracts declare it: the first person column
/// that holds a valid ID number (for incidents, else the caller's phone).
fn owner(table: &str, r: &Row) -> Option<String> {
    match table {
        "police.incidents" => person(&r["caller_id_number"])
            .or_else(|| person(&r["party_id_number"]))
            .or_else(|| {
                normalise(IdentifierKind::Phone, &r["caller_phone"])
                    .ok()
                    .map(|p| format!("phone:{}", p.reveal_value()))
            }),
        _ => person(&r["id_number"]),
    }
}

/// Contribution bounds of the shipped contracts: (max_rows, max_groups).
fn bounds(table: &str) -> (f64, usize) {
    match table {
        "police.incidents" | "hospital.visits" => (10.0, 2),
        "insurance.claims" => (12.0, 2),
        "tax.employment" => (3.0, 1),
        "police.wanted" | "police.mental_health_registry" => (1.0, 1),
        other => panic!("{other}"),
    }
}

fn num(r: &Row, col: &str) -> Option<f64> {
    r[col].trim().parse().ok()
}

// ---------------------------------------------------------------------------------------
// The truth of a grouped question, after contribution bounds.

#[derive(Clone, Copy)]
enum Value {
    Rows,
    Distinct(&'static str),
    Sum(&'static str, f64, f64),
    /// An average: judged from the sum and the count of its column.
    Avg(&'static str, f64, f64),
}

/// Per group: the units certainly kept and all units, and per value the lowest and highest
/// total the bounds can leave.
#[derive(Debug, Default, Clone)]
struct Truth {
    units_certain: f64,
    units_all: f64,
    low: Vec<f64>,
    high: Vec<f64>,
}

fn truth(
    table: &str,
    rows: &[&Row],
    key: &dyn Fn(&Row) -> Vec<String>,
    values: &[Value],
) -> BTreeMap<Vec<String>, Truth> {
    let (max_rows, max_groups) = bounds(table);
    // owner → group → rows
    let mut by_owner: BTreeMap<Option<String>, BTreeMap<Vec<String>, Vec<&Row>>> = BTreeMap::new();
    let mut anonymous: Vec<&Row> = Vec::new();
    for r in rows {
        match owner(table, r) {
            Some(o) => by_owner
                .entry(Some(o))
                .or_default()
                .entry(key(r))
                .or_default()
                .push(r),
            None => anonymous.push(r),
        }
    }
    let mut out: BTreeMap<Vec<String>, Truth> = BTreeMap::new();
    let blank = || Truth {
        low: vec![0.0; values.len()],
        high: vec![0.0; values.len()],
        ..Truth::default()
    };
    let contribution = |v: &Value, rows: &[&Row], clip: bool| -> f64 {
        let raw = match v {
            Value::Rows => rows.len() as f64,
            Value::Avg(c, ..) => rows.iter().filter(|r| num(r, c).is_some()).count() as f64,
            Value::Distinct(c) => rows
                .iter()
                .map(|r| r[*c].as_str())
                .filter(|x| !x.is_empty())
                .collect::<BTreeSet<_>>()
                .len() as f64,
            Value::Sum(c, lo, hi) => rows
                .iter()
                .filter_map(|r| num(r, c))
                .map(|x| x.clamp(*lo, *hi))
                .sum(),
        };
        if !clip {
            return raw;
        }
        match v {
            Value::Rows | Value::Distinct(_) | Value::Avg(..) => raw.min(max_rows),
            Value::Sum(_, lo, hi) => raw.clamp(max_rows * lo.min(0.0), max_rows * hi.max(0.0)),
        }
    };
    for groups in by_owner.values() {
        // Counted for release in every group when in few enough; all rows kept when few
        // enough; otherwise anywhere from nothing to the per-group cap.
        let counted = groups.len() <= max_groups;
        let kept = groups.values().map(Vec::len).sum::<usize>() as f64 <= max_rows;
        for (k, rows) in groups {
            let t = out.entry(k.clone()).or_insert_with(blank);
            t.units_all += 1.0;
            if counted {
                t.units_certain += 1.0;
            }
            for (i, v) in values.iter().enumerate() {
                let c = contribution(v, rows, true);
                t.high[i] += c;
                if kept {
                    t.low[i] += c;
                }
            }
        }
    }
    for r in anonymous {
        let t = out.entry(key(r)).or_insert_with(blank);
        t.units_all += 1.0;
        t.units_certain += 1.0;
        for (i, v) in values.iter().enumerate() {
            let c = contribution(v, &[r], false);
            t.low[i] += c;
            t.high[i] += c;
        }
    }
    out
}

/// The selection noise's scale for a first table with `max_groups` (ε per query 1, half of
/// it for the threshold).
fn selection_scale(table: &str) -> f64 {
    bounds(table).1 as f64 / 0.5
}

struct Question {
    sql: &'static str,
    table: &'static str,
    keys: usize,
    /// The raw rows the question aggregates (after its filter; joined where it joins).
    rows: Vec<&'static Row>,
    key: KeyFn,
    /// Per result value column: what it measures.
    values: Vec<Value>,
}

fn text_key(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Checks one answered question against its truth; returns the groups released.
/// Relative errors of released counts and sums against the truth, for the README.
static ERRORS: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());

fn judge_question(q: &Question, answer: &serde_json::Value, failures: &mut Vec<String>) -> usize {
    let errors = &ERRORS;
    // An average's truth: its count (the Avg entry) and its sum (appended).
    let mut measured = q.values.clone();
    let sums: Vec<Option<usize>> = q
        .values
        .iter()
        .map(|v| match v {
            Value::Avg(c, lo, hi) => {
                measured.push(Value::Sum(c, *lo, *hi));
                Some(measured.len() - 1)
            }
            _ => None,
        })
        .collect();
    let truth = truth(q.table, &q.rows, &q.key, &measured);
    let threshold = answer["protection"]["release_threshold"].as_f64().unwrap();
    let deviations: Vec<Option<f64>> = answer["protection"]["standard_deviation"]
        .as_array()
        .unwrap()
        .iter()
        .skip(q.keys)
        .map(|d| d.as_f64())
        .collect();
    let scale = selection_scale(q.table);
    let released: BTreeMap<Vec<String>, Vec<f64>> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            (
                r[..q.keys].iter().map(text_key).collect(),
                r[q.keys..].iter().map(|v| v.as_f64().unwrap()).collect(),
            )
        })
        .collect();
    for (key, t) in &truth {
        let got = released.get(key);
        if got.is_none() && t.units_certain >= threshold + 15.0 * scale {
            failures.push(format!(
                "{}: group {key:?} has {} people, far above the threshold {threshold}, but was not released",
                q.sql, t.units_certain
            ));
        }
        if let Some(values) = got {
            if t.units_all < K as f64 {
                failures.push(format!(
                    "{}: group {key:?} released with {} people",
                    q.sql, t.units_all
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if let (Value::Avg(_, lo, hi), Some(s)) = (q.values[i], sums[i]) {
                    // No deviation is stated for an average: bound its sum's and its count's
                    // from the contract (at most three measures share half of ε = 1).
                    let (max_rows, max_groups) = bounds(q.table);
                    let bound = lo.abs().max(hi.abs());
                    let count_slack =
                        10.0 * std::f64::consts::SQRT_2 * max_groups as f64 * max_rows
                            / (0.5 / 3.0);
                    let slack = count_slack * bound;
                    let low = (t.low[s] - slack) / (t.high[i] + count_slack).max(1.0);
                    let high = (t.high[s] + slack) / (t.low[i] - count_slack).max(1.0);
                    if *v < low.clamp(lo, hi) - 1e-9 || *v > high.clamp(lo, hi) + 1e-9 {
                        failures.push(format!(
                            "{}: group {key:?} average {v}, truth in [{low}, {high}]",
                            q.sql
                        ));
                    }
                    continue;
                }
                let slack = 10.0 * deviations[i].unwrap();
                if t.high[i] > 0.0 {
                    errors
                        .lock()
                        .unwrap()
                        .push((q.sql, ((v - t.high[i]) / t.high[i]).abs()));
                }
                if *v < t.low[i] - slack || *v > t.high[i] + slack {
                    failures.push(format!(
                        "{}: group {key:?} value {i} = {v}, truth in [{}, {}] ± {slack}",
                        q.sql, t.low[i], t.high[i]
                    ));
                }
            }
        }
    }
    for key in released.keys() {
        if !truth.contains_key(key) {
            failures.push(format!(
                "{}: released a group {key:?} that does not exist",
                q.sql
            ));
        }
    }
    released.len()
}

/// Visits joined with claims on the person: one row per (visit, claim) pair, as the join
/// yields them.
fn joined_visits(visits: &'static [Row], claims: &'static [Row]) -> Vec<&'static Row> {
    let mut claims_of: BTreeMap<String, usize> = BTreeMap::new();
    for c in claims {
        if let Some(p) = person(&c["id_number"]) {
            *claims_of.entry(p).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for v in visits {
        if let Some(n) = person(&v["id_number"]).and_then(|p| claims_of.get(&p)) {
            out.extend(std::iter::repeat_n(v, *n));
        }
    }
    out
}

#[test]
fn analysts_questions_are_answered_within_the_stated_error() {
    let city = city();
    let incidents = city.export("police.incidents");
    let wanted = city.export("police.wanted");
    let registry = city.export("police.mental_health_registry");
    let visits = city.export("hospital.visits");
    let claims = city.export("insurance.claims");
    let employment = city.export("tax.employment");
    let all = |rows: &'static [Row]| rows.iter().collect::<Vec<_>>();
    let col = |c: &'static str| Box::new(move |r: &Row| vec![r[c].clone()]) as KeyFn;
    let none = || Box::new(|_: &Row| Vec::<String>::new()) as KeyFn;
    let questions = vec![
        Question {
            sql: "SELECT station, count(*) AS n FROM police.incidents GROUP BY station",
            table: "police.incidents",
            keys: 1,
            rows: all(incidents),
            key: col("station"),
            values: vec![Value::Rows],
        },
        Question {
            sql: "SELECT category, count(DISTINCT incident_id) FROM police.incidents GROUP BY category",
            table: "police.incidents",
            keys: 1,
            rows: all(incidents),
            key: col("category"),
            values: vec![Value::Distinct("incident_id")],
        },
        Question {
            sql: "SELECT station, category, count(*) FROM police.incidents GROUP BY station, category",
            table: "police.incidents",
            keys: 2,
            rows: all(incidents),
            key: Box::new(|r: &Row| vec![r["station"].clone(), r["category"].clone()]),
            values: vec![Value::Rows],
        },
        Question {
            sql: "SELECT station, count(DISTINCT caller) FROM police.incidents GROUP BY station",
            table: "police.incidents",
            keys: 1,
            rows: all(incidents),
            key: col("station"),
            values: vec![Value::Distinct("caller_id_number")],
        },
        Question {
            // HAVING acts on the released values; every station has far more than 3.
            sql: "SELECT station, count(*) FROM police.incidents WHERE category = 'dispute' GROUP BY station HAVING count(*) > 3",
            table: "police.incidents",
            keys: 1,
            rows: incidents
                .iter()
                .filter(|r| r["category"] == "dispute")
                .collect(),
            key: col("station"),
            values: vec![Value::Rows],
        },
        Question {
            sql: "SELECT count(*), avg(danger_level) FROM police.wanted",
            table: "police.wanted",
            keys: 0,
            rows: all(wanted),
            key: none(),
            values: vec![Value::Rows, Value::Avg("danger_level", 0.0, 5.0)],
        },
        Question {
            sql: "SELECT risk_level, count(*) FROM police.mental_health_registry GROUP BY risk_level",
            table: "police.mental_health_registry",
            keys: 1,
            rows: all(registry),
            key: col("risk_level"),
            values: vec![Value::Rows],
        },
        Question {
            sql: "SELECT count(DISTINCT person), avg(risk_level) FROM police.mental_health_registry",
            table: "police.mental_health_registry",
            keys: 0,
            rows: all(registry),
            key: none(),
            values: vec![
                Value::Distinct("id_number"),
                Value::Avg("risk_level", 0.0, 5.0),
            ],
        },
        Question {
            sql: "SELECT drug_category, count(*), sum(amount), avg(amount) FROM insurance.claims GROUP BY drug_category",
            table: "insurance.claims",
            keys: 1,
            rows: all(claims),
            key: col("drug_category"),
            values: vec![
                Value::Rows,
                Value::Sum("amount", 0.0, 1000.0),
                Value::Avg("amount", 0.0, 1000.0),
            ],
        },
        Question {
            sql: "SELECT count(*) FROM insurance.claims WHERE amount > 500",
            table: "insurance.claims",
            keys: 0,
            rows: claims
                .iter()
                .filter(|r| num(r, "amount").is_some_and(|a| a > 500.0))
                .collect(),
            key: none(),
            values: vec![Value::Rows],
        },
        Question {
            sql: "WITH big AS (SELECT person, amount FROM insurance.claims WHERE amount > 100) SELECT count(DISTINCT person), sum(amount) FROM big",
            table: "insurance.claims",
            keys: 0,
            rows: claims
                .iter()
                .filter(|r| num(r, "amount").is_some_and(|a| a > 100.0))
                .collect(),
            key: none(),
            values: vec![
                Value::Distinct("id_number"),
                Value::Sum("amount", 0.0, 1000.0),
            ],
        },
        Question {
            sql: "SELECT department, count(DISTINCT person) FROM hospital.visits GROUP BY department",
            table: "hospital.visits",
            keys: 1,
            rows: all(visits),
            key: col("department"),
            values: vec![Value::Distinct("id_number")],
        },
        Question {
            sql: "SELECT hospital, count(*) FROM hospital.visits GROUP BY hospital",
            table: "hospital.visits",
            keys: 1,
            rows: all(visits),
            key: col("hospital"),
            values: vec![Value::Rows],
        },
        Question {
            sql: "SELECT status, count(*), avg(income) FROM tax.employment GROUP BY status",
            table: "tax.employment",
            keys: 1,
            rows: all(employment),
            key: col("status"),
            values: vec![Value::Rows, Value::Avg("income", 0.0, 50000.0)],
        },
        Question {
            sql: "SELECT period, count(DISTINCT person) FROM tax.employment GROUP BY period",
            table: "tax.employment",
            keys: 1,
            rows: all(employment),
            key: col("period"),
            values: vec![Value::Distinct("id_number")],
        },
        Question {
            sql: "SELECT s.station, count(*) FROM (SELECT station, caller FROM police.incidents WHERE category <> 'fraud') s GROUP BY s.station",
            table: "police.incidents",
            keys: 1,
            rows: incidents
                .iter()
                .filter(|r| r["category"] != "fraud")
                .collect(),
            key: col("station"),
            values: vec![Value::Rows],
        },
        Question {
            // A join through tokens: persons with both a hospital visit and a claim.
            sql: "SELECT v.department, count(DISTINCT v.person) FROM hospital.visits v JOIN insurance.claims c ON v.person = c.person GROUP BY v.department",
            table: "hospital.visits",
            keys: 1,
            rows: joined_visits(visits, claims),
            key: col("department"),
            values: vec![Value::Distinct("id_number")],
        },
        Question {
            sql: "SELECT date_trunc('month', reported_at) AS month, count(*) FROM police.incidents WHERE category IN ('dispute', 'noise') GROUP BY month",
            table: "police.incidents",
            keys: 1,
            rows: incidents
                .iter()
                .filter(|r| ["dispute", "noise"].contains(&r["category"].as_str()))
                .collect(),
            key: Box::new(|r: &Row| vec![format!("{}-01T00:00:00", &r["reported_at"][..7])]),
            values: vec![Value::Rows],
        },
    ];
    assert!(questions.len() >= 17);
    let mut failures = Vec::new();
    let mut released_total = 0;
    for q in &questions {
        let a = city.attempt("specialist:wang", q.sql);
        let Some(answer) = a.answer() else {
            failures.push(format!("{}: refused: {}", q.sql, a.stderr()));
            continue;
        };
        assert_eq!(a.runs, 1, "{}: one audit entry", q.sql);
        let n = judge_question(q, &answer, &mut failures);
        if n == 0 {
            failures.push(format!("{}: released nothing at {PERSONS} persons", q.sql));
        }
        released_total += n;
    }
    assert!(released_total > 40);
    // Relative error of released counts and sums against the exact answer within the
    // contracts' bounds, per question (for the README).
    let mut by_question: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (sql, e) in ERRORS.lock().unwrap().iter() {
        by_question.entry(sql).or_default().push(*e);
    }
    for (sql, mut e) in by_question {
        e.sort_by(f64::total_cmp);
        eprintln!(
            "median {:>6.2}%  max {:>6.2}%  ({} values)  {sql}",
            100.0 * e[e.len() / 2],
            100.0 * e[e.len() - 1],
            e.len()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// The red-team corpus: classes of attack, each over several targets from the raw exports.

/// What an attack must not achieve.
enum Judge {
    /// Refused, naming a rule, and audited as refused.
    Refused,
    /// The filter matches fewer than k people (checked on the raw exports first): whatever
    /// the gate does, it must not release a group.
    NothingReleased { people: usize },
}

struct Attack {
    class: &'static str,
    sql: String,
    judge: Judge,
}

/// Refusal texts must not quote data: no ID number, phone or value of the exports.
fn quotes_data(text: &str, secrets: &[&str]) -> Option<String> {
    secrets
        .iter()
        .find(|s| s.len() >= 6 && text.contains(**s))
        .map(|s| (*s).to_owned())
}

/// Runs every attack and returns the failures.
fn run_attacks(city: &City, attacks: &[Attack], secrets: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, a) in attacks.iter().enumerate() {
        // Each attempt as its own analyst, so budgets never hide a leak.
        let who = format!("specialist:red-{i}");
        let attempt = city.attempt(&who, &a.sql);
        let tag = format!(
            "[{}] {}",
            a.class,
            a.sql.chars().take(160).collect::<String>()
        );
        if attempt.out.status.code().is_none() {
            failures.push(format!("{tag}: the binary was killed by a signal"));
            continue;
        }
        if attempt.runs + attempt.refusals != 1 {
            failures.push(format!(
                "{tag}: {} audit entries for one attempt",
                attempt.runs + attempt.refusals
            ));
        }
        if let Some(secret) = quotes_data(&attempt.stderr(), secrets) {
            failures.push(format!("{tag}: the refusal quotes data ({})", secret.len()));
        }
        match (&a.judge, attempt.answer()) {
            (Judge::Refused, None) => {
                if !attempt.stderr().contains("refused (rule") {
                    failures.push(format!(
                        "{tag}: failed without naming a rule: {}",
                        attempt.stderr()
                    ));
                }
                if attempt.refusals != 1 {
                    failures.push(format!("{tag}: refused but not audited as refused"));
                }
            }
            (Judge::Refused, Some(answer)) => {
                failures.push(format!("{tag}: answered: {answer}"));
            }
            (Judge::NothingReleased { people }, answer) => {
                assert!(*people < K as usize, "{tag}: the attack's precondition");
                if let Some(answer) = answer {
                    let rows = answer["rows"].as_array().unwrap();
                    if !rows.is_empty() {
                        failures.push(format!("{tag}: released {rows:?} from {people} people"));
                    }
                    let text = answer.to_string();
                    if text.contains("suppress") && text.contains("groups_") {
                        failures.push(format!("{tag}: the answer counts withheld groups"));
                    }
                }
            }
        }
    }
    failures
}

/// Targets: wanted persons who visited a hospital, with their quasi-identifiers.
struct WantedVisitor {
    id: String,
    wanted_since: String,
    offence: String,
    station: String,
    visit_date: String,
    department: String,
}

fn wanted_visitors(city: &City) -> Vec<WantedVisitor> {
    let visits = city.export("hospital.visits");
    let mut by_person: BTreeMap<String, &Row> = BTreeMap::new();
    for v in visits {
        if let Some(p) = person(&v["id_number"]) {
            by_person.entry(p).or_insert(v);
        }
    }
    let mut out = Vec::new();
    for w in city.export("police.wanted") {
        let Some(p) = person(&w["id_number"]) else {
            continue;
        };
        if let Some(v) = by_person.get(&p) {
            out.push(WantedVisitor {
                id: p,
                wanted_since: w["wanted_since"].clone(),
                offence: w["offence"].clone(),
                station: w["station"].clone(),
                visit_date: v["visit_date"].clone(),
                department: v["department"].clone(),
            });
        }
    }
    out.truncate(6);
    assert!(
        out.len() >= 3,
        "the city has wanted persons with hospital visits"
    );
    out
}

/// How many wanted persons match a target's quasi-identifiers.
fn wanted_matching(city: &City, t: &WantedVisitor) -> usize {
    city.export("police.wanted")
        .iter()
        .filter(|w| {
            w["wanted_since"] == t.wanted_since
                && w["offence"] == t.offence
                && w["station"] == t.station
        })
        .filter_map(|w| person(&w["id_number"]))
        .collect::<BTreeSet<_>>()
        .len()
}

/// Targets: employees and the (employer, period) that isolates them.
struct Employee {
    id: String,
    employer: String,
    period: String,
    income: f64,
}

fn small_employers(city: &City) -> Vec<(Employee, usize)> {
    let rows = city.export("tax.employment");
    let mut by_employer: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in rows {
        if let Some(p) = person(&r["id_number"]) {
            by_employer
                .entry((r["employer_code"].clone(), r["period"].clone()))
                .or_default()
                .insert(p);
        }
    }
    let mut out = Vec::new();
    for r in rows {
        let Some(p) = person(&r["id_number"]) else {
            continue;
        };
        let key = (r["employer_code"].clone(), r["period"].clone());
        let n = by_employer[&key].len();
        if n < K as usize && !key.0.is_empty() && num(r, "income").is_some_and(|x| x > 0.0) {
            out.push((
                Employee {
                    id: p,
                    employer: key.0,
                    period: key.1,
                    income: num(r, "income").unwrap(),
                },
                n,
            ));
        }
        if out.len() >= 6 {
            break;
        }
    }
    assert!(out.len() >= 3, "the city has small employers");
    out
}

fn attacks(city: &City) -> Vec<Attack> {
    let mut out = Vec::new();
    let mut refusals = Vec::new();
    let mut refused = |class: &'static str, sql: String| {
        refusals.push(Attack {
            class,
            sql,
            judge: Judge::Refused,
        })
    };
    let fugitives = wanted_visitors(city);
    let employees = small_employers(city);

    // 1. Padding: the target's rows lose their token in a subquery and a cross join with
    //    another table's people inflates the count.
    for t in &fugitives {
        let isolate = format!(
            "w.wanted_since = DATE '{}' AND w.offence = '{}' AND w.station = '{}'",
            t.wanted_since, t.offence, t.station
        );
        refused(
            "padding",
            format!(
                "SELECT t.diagnosis_group, count(*) FROM (SELECT v.diagnosis_group FROM police.wanted w JOIN hospital.visits v ON w.person = v.person WHERE {isolate}) t CROSS JOIN (SELECT person FROM police.mental_health_registry) pad GROUP BY t.diagnosis_group"
            ),
        );
        refused(
            "padding",
            format!(
                "SELECT t.diagnosis_group, count(*) FROM (SELECT v.diagnosis_group FROM police.wanted w JOIN hospital.visits v ON w.person = v.person WHERE {isolate}) t, police.incidents pad GROUP BY t.diagnosis_group"
            ),
        );
        refused(
            "padding",
            format!(
                "SELECT v.diagnosis_group, count(*) FROM police.wanted w JOIN hospital.visits v ON w.person = v.person JOIN police.incidents pad ON pad.station = w.station WHERE {isolate} GROUP BY v.diagnosis_group"
            ),
        );
        refused(
            "padding",
            format!(
                "SELECT v.diagnosis_group, count(*) FROM police.wanted w JOIN hospital.visits v ON w.person = v.person LEFT JOIN police.incidents pad ON pad.caller = w.person WHERE {isolate} GROUP BY v.diagnosis_group"
            ),
        );
    }

    // Padding that the language accepts: joins that bring many other people's rows in.
    // The first table's people are the answer's units, and every joined table's people
    // are counted too: still one person.
    for t in &fugitives {
        let people = wanted_matching(city, t);
        if people >= K as usize {
            continue;
        }
        let isolate = format!(
            "w.wanted_since = DATE '{}' AND w.offence = '{}' AND w.station = '{}'",
            t.wanted_since, t.offence, t.station
        );
        for sql in [
            format!(
                "SELECT v.diagnosis_group, count(*) FROM police.wanted w JOIN hospital.visits v ON w.person = v.person JOIN police.incidents i ON i.caller_phone = v.phone WHERE {isolate} GROUP BY v.diagnosis_group"
            ),
            format!(
                "SELECT v.diagnosis_group, count(*) FROM police.incidents i JOIN police.wanted w ON i.party = w.person JOIN hospital.visits v ON v.person = w.person WHERE {isolate} GROUP BY v.diagnosis_group"
            ),
            format!(
                "SELECT v.diagnosis_group, count(DISTINCT c.person) FROM hospital.visits v JOIN police.wanted w ON w.person = v.person JOIN insurance.claims c ON c.person = v.person WHERE {isolate} GROUP BY v.diagnosis_group"
            ),
            format!(
                "SELECT t.diagnosis_group, count(*) FROM (SELECT v.diagnosis_group, v.phone FROM police.wanted w JOIN hospital.visits v ON w.person = v.person WHERE {isolate}) t JOIN police.incidents pad ON pad.caller_phone = t.phone GROUP BY t.diagnosis_group"
            ),
        ] {
            out.push(Attack {
                class: "padding",
                sql,
                judge: Judge::NothingReleased { people },
            });
        }
    }

    // 2. Sub-populations inside a released group.
    for (e, _) in &employees {
        let who = format!(
            "employer_code = '{}' AND period = '{}'",
            e.employer, e.period
        );
        refused(
            "sub-population",
            format!(
                "SELECT status, avg(CASE WHEN {who} THEN income END) FROM tax.employment GROUP BY status"
            ),
        );
        refused(
            "sub-population",
            format!(
                "SELECT status, sum(income) FILTER (WHERE {who}) FROM tax.employment GROUP BY status"
            ),
        );
        refused(
            "sub-population",
            format!(
                "SELECT status, count(DISTINCT CASE WHEN {who} THEN person END) FROM tax.employment GROUP BY status"
            ),
        );
        refused(
            "sub-population",
            format!(
                "SELECT status, sum(income) - sum(CASE WHEN income < {} THEN income END) FROM tax.employment GROUP BY status",
                e.income
            ),
        );
        refused(
            "sub-population",
            format!(
                "SELECT status, sum(income * CASE WHEN {who} THEN 1 ELSE 0 END) FROM tax.employment GROUP BY status"
            ),
        );
    }

    // 3. Subqueries outside the aggregate.
    for (e, _) in &employees {
        let who = format!(
            "employer_code = '{}' AND period = '{}'",
            e.employer, e.period
        );
        refused(
            "subquery",
            format!(
                "SELECT status, count(*), (SELECT sum(income) FROM tax.employment WHERE {who}) FROM tax.employment GROUP BY status"
            ),
        );
        refused(
            "subquery",
            format!(
                "SELECT status, count(*) FROM tax.employment GROUP BY status HAVING (SELECT sum(income) FROM tax.employment WHERE {who}) > {}",
                e.income - 1.0
            ),
        );
        refused(
            "subquery",
            format!(
                "SELECT count(*) FROM tax.employment WHERE EXISTS (SELECT 1 FROM tax.employment t WHERE t.{who} AND t.income > {})",
                e.income - 1.0
            ),
        );
        refused(
            "subquery",
            format!(
                "WITH tiny AS (SELECT sum(income) AS s FROM tax.employment WHERE {who}) SELECT status, count(*) FROM tax.employment, tiny GROUP BY status"
            ),
        );
        refused(
            "subquery",
            format!(
                "SELECT status, count(*) FROM tax.employment WHERE person IN (SELECT person FROM tax.employment WHERE {who}) GROUP BY status"
            ),
        );
    }

    // 4. Suppression as an oracle: a filter that singles out one target (or nobody).
    for t in &fugitives {
        let people = wanted_matching(city, t);
        if people >= K as usize {
            continue;
        }
        out.push(Attack {
            class: "suppression-oracle",
            sql: format!(
                "SELECT v.department, count(*) FROM police.wanted w JOIN hospital.visits v ON w.person = v.person WHERE w.wanted_since = DATE '{}' AND w.offence = '{}' AND w.station = '{}' GROUP BY v.department",
                t.wanted_since, t.offence, t.station
            ),
            judge: Judge::NothingReleased { people },
        });
        out.push(Attack {
            class: "suppression-oracle",
            sql: format!(
                "SELECT count(*) FROM police.wanted w JOIN hospital.visits v ON w.person = v.person WHERE w.wanted_since = DATE '{}' AND w.offence = '{}' AND w.station = '{}' AND v.department = '{}' AND v.visit_date = DATE '{}'",
                t.wanted_since, t.offence, t.station, t.department, t.visit_date
            ),
            judge: Judge::NothingReleased { people },
        });
    }
    for (e, people) in &employees {
        out.push(Attack {
            class: "suppression-oracle",
            sql: format!(
                "SELECT status, count(*), sum(income) FROM tax.employment WHERE employer_code = '{}' AND period = '{}' GROUP BY status",
                e.employer, e.period
            ),
            judge: Judge::NothingReleased { people: *people },
        });
        out.push(Attack {
            class: "suppression-oracle",
            sql: format!(
                "SELECT count(*), sum(income) FROM tax.employment WHERE employer_code = '{}' AND period = '{}' AND income BETWEEN {} AND {}",
                e.employer,
                e.period,
                e.income - 0.5,
                e.income + 0.5
            ),
            judge: Judge::NothingReleased { people: 1 },
        });
    }

    // 5. Complements: subtotals minus released cells.
    for modifier in [
        "ROLLUP (station, category)",
        "CUBE (station, category)",
        "GROUPING SETS ((station, category), (station), ())",
        "station, category WITH ROLLUP",
    ] {
        refused(
            "complement",
            format!("SELECT station, category, count(*) FROM police.incidents GROUP BY {modifier}"),
        );
    }
    refused(
        "complement",
        "SELECT station, count(*) FROM police.incidents GROUP BY ALL".into(),
    );
    refused(
        "complement",
        "SELECT station, grouping(station), count(*) FROM police.incidents GROUP BY station".into(),
    );

    // 6. Token extraction: any function of a token, anywhere.
    for token in [
        "w.person",
        "caller",
        "caller_phone",
        "address",
        "suspect_phone",
    ] {
        let (from, col) = if token == "w.person" {
            (
                "police.wanted w JOIN police.incidents i ON w.person = i.caller",
                "w.person",
            )
        } else {
            ("police.incidents", token)
        };
        for expr in [
            format!("substr(encode({col}, 'hex'), 1, 4)"),
            format!("CAST({col} AS VARCHAR)"),
            format!("length({col})"),
            format!("{col} || ''"),
            format!("get_bit({col}, 0)"),
        ] {
            refused(
                "token",
                format!("SELECT {expr} AS t, count(*) FROM {from} GROUP BY t"),
            );
            refused(
                "token",
                format!("SELECT count(*) FROM {from} WHERE {expr} < 'a'"),
            );
        }
        refused("token", format!("SELECT max({col}) FROM {from}"));
        refused(
            "token",
            format!("SELECT count(*) FROM {from} ORDER BY {col}"),
        );
    }
    refused("token", "SELECT count(*) FROM police.wanted w JOIN police.incidents i ON substr(encode(w.person,'hex'),1,3) < concat('a', i.category)".into());
    refused("token", "SELECT count(*) FROM police.wanted w JOIN police.incidents i ON w.person = i.caller AND w.person > i.party".into());
    refused(
        "token",
        "SELECT count(*) FROM police.incidents WHERE caller = X'00112233445566778899aabbccddeeff'"
            .into(),
    );

    // 7. Error oracles: an expression that fails only when some row exists.
    for (e, _) in &employees {
        let who = format!(
            "employer_code = '{}' AND period = '{}'",
            e.employer, e.period
        );
        refused(
            "error-oracle",
            format!(
                "SELECT count(*) FROM tax.employment WHERE {who} AND 1 / (income - {}) > 0",
                e.income
            ),
        );
        refused(
            "error-oracle",
            format!("SELECT count(*) FROM tax.employment WHERE {who} AND CAST(status AS INT) > 0"),
        );
        refused(
            "error-oracle",
            format!(
                "SELECT sum(1 / (income - {})) FROM tax.employment",
                e.income
            ),
        );
        refused(
            "error-oracle",
            format!("SELECT count(*) FROM tax.employment WHERE {who} AND sqrt(-income) > 0"),
        );
    }

    // 9. Resource exhaustion: refused before planning, never a crash.
    let terms = |n: usize, sep: &str| (0..n).map(|_| "1").collect::<Vec<_>>().join(sep);
    refused(
        "resources",
        format!(
            "SELECT count(*) FROM tax.employment WHERE income > {}",
            terms(1500, " + ")
        ),
    );
    refused(
        "resources",
        format!("SELECT sum({}) FROM tax.employment", terms(1500, " + ")),
    );
    refused(
        "resources",
        format!(
            "SELECT count(*) FROM tax.employment WHERE {}income > 1{}",
            "(".repeat(3000),
            ")".repeat(3000)
        ),
    );
    refused(
        "resources",
        format!(
            "SELECT count(*) FROM tax.employment WHERE income IN ({})",
            (0..20_000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    );
    refused(
        "resources",
        format!(
            "SELECT count(*) FROM tax.employment WHERE {}",
            (0..2000)
                .map(|i| format!("income = {i}"))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
    );
    refused(
        "resources",
        format!(
            "SELECT count(*) FROM police.incidents i0 {}",
            (1..40)
                .map(|i| format!("JOIN police.incidents i{i} ON i{i}.caller = i0.caller"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    refused(
        "resources",
        format!(
            "{} SELECT count(*) FROM c199",
            (0..200)
                .map(|i| if i == 0 {
                    "WITH c0 AS (SELECT person FROM tax.employment)".to_owned()
                } else {
                    format!(", c{i} AS (SELECT person FROM c{})", i - 1)
                })
                .collect::<String>()
        ),
    );
    refused(
        "resources",
        format!(
            "SELECT count(*) FROM tax.employment WHERE status = '{}'",
            "x".repeat(2_000_000)
        ),
    );

    // Statements that are not one aggregate.
    for sql in [
        "SELECT * FROM police.incidents",
        "SELECT caller FROM police.incidents",
        "SELECT station, category FROM police.incidents",
        "SELECT DISTINCT hospital FROM hospital.visits",
        "SELECT station, count(*) FROM police.incidents GROUP BY station UNION ALL SELECT category, 1 FROM police.incidents",
        "SELECT station, row_number() OVER (PARTITION BY station ORDER BY reported_at) FROM police.incidents",
        "SELECT station, count(*), rank() OVER (ORDER BY count(*)) FROM police.incidents GROUP BY station",
        "SELECT count(*) FROM police.wanted WHERE id_number = '110105198206042290'",
        "SELECT name FROM police.wanted",
        "SELECT drug_category, max(amount) FROM insurance.claims GROUP BY drug_category",
        "SELECT status, median(income) FROM tax.employment GROUP BY status",
        "SELECT approx_percentile_cont(amount, 1.0) FROM insurance.claims",
        "SELECT station, string_agg(category, ',') FROM police.incidents GROUP BY station",
        "SELECT count(*) FROM police.incidents GROUP BY incident_id",
        "CREATE TABLE x AS SELECT * FROM police.incidents",
        "INSERT INTO police.incidents (station) VALUES ('S01')",
        "DROP TABLE police.incidents",
        "COPY police.incidents TO '/tmp/incidents.csv'",
        "CREATE FUNCTION f(x INT) RETURNS INT RETURN x",
        "EXPLAIN SELECT count(*) FROM police.incidents",
        "EXPLAIN ANALYZE SELECT count(*) FROM police.incidents",
        "SELECT count(*) FROM police.incidents; SELECT * FROM police.incidents",
        "SELECT count(*) FROM information_schema.tables",
        "SET datafusion.execution.batch_size = 1",
        "SELECT count(*) AS __owner FROM police.incidents",
    ] {
        refused("statement", sql.to_owned());
    }
    out.extend(refusals);
    out
}

/// Yes/no pairs: is a target in this cell? Cells just at and just under k people, asked
/// the same way: whether a cell is released must not tell them apart.
#[test]
fn released_or_not_does_not_track_the_truth() {
    let city = city();
    let visits = city.export("hospital.visits");
    let mut cells: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for v in visits {
        if let Some(p) = person(&v["id_number"]) {
            cells
                .entry((
                    v["hospital"].clone(),
                    v["department"].clone(),
                    v["visit_date"].clone(),
                ))
                .or_default()
                .insert(p);
        }
    }
    let at = |lo: usize, hi: usize| -> Vec<(String, String, String)> {
        cells
            .iter()
            .filter(|(_, people)| (lo..=hi).contains(&people.len()))
            .map(|(k, _)| k.clone())
            .take(12)
            .collect()
    };
    let (yes, no) = (
        at(K as usize, K as usize + 3),
        at(K as usize - 4, K as usize - 1),
    );
    assert!(
        yes.len() >= 4 && no.len() >= 4,
        "the city has cells around k"
    );
    let released = |cell: &(String, String, String), i: usize| -> bool {
        let sql = format!(
            "SELECT count(*), count(DISTINCT person) FROM hospital.visits WHERE hospital = '{}' AND department = '{}' AND visit_date = DATE '{}'",
            cell.0, cell.1, cell.2
        );
        let a = city.attempt(&format!("specialist:pair-{i}"), &sql);
        let answer = a
            .answer()
            .unwrap_or_else(|| panic!("{sql}: {}", a.stderr()));
        !answer["rows"].as_array().unwrap().is_empty()
    };
    let mut right = 0;
    let mut asked = 0;
    for (i, cell) in yes.iter().enumerate() {
        right += usize::from(released(cell, i));
        asked += 1;
    }
    for (i, cell) in no.iter().enumerate() {
        assert!(!released(cell, 100 + i), "a cell under k was released");
        right += 1;
        asked += 1;
    }
    // Guessing "at least k" whenever a cell is released and "under k" otherwise must do
    // no better than chance would with cells of both sizes.
    let accuracy = right as f64 / asked as f64;
    assert!(
        accuracy < 0.75,
        "release tracks the truth in {right} of {asked} cells"
    );
}

/// Differencing: two released totals that differ by one small employer's people. The noise
/// makes the difference useless for any one person.
#[test]
fn differencing_two_answers_does_not_give_a_target_away() {
    let city = city();
    let rows = city.export("tax.employment");
    let mut hits = 0;
    let employees = small_employers(city);
    for (i, (e, _)) in employees.iter().enumerate() {
        let total = |extra: &str| -> Option<f64> {
            let sql = format!(
                "SELECT count(*), sum(income) FROM tax.employment WHERE period = '{}'{extra}",
                e.period
            );
            let a = city.attempt(&format!("specialist:diff-{i}"), &sql);
            let answer = a.answer()?;
            answer["rows"].as_array()?.first()?[1].as_f64()
        };
        let (Some(all), Some(rest)) = (
            total(""),
            total(&format!(" AND employer_code <> '{}'", e.employer)),
        ) else {
            continue;
        };
        let truth: f64 = rows
            .iter()
            .filter(|r| r["period"] == e.period && r["employer_code"] == e.employer)
            .filter_map(|r| num(r, "income"))
            .map(|x| x.clamp(0.0, 50000.0))
            .sum();
        if ((all - rest) - truth).abs() <= 0.05 * truth.max(e.income) {
            hits += 1;
        }
    }
    assert!(
        hits * 2 < employees.len(),
        "the difference of two answers found {hits} of {} small employers' payroll within 5%",
        employees.len()
    );
}

/// A budget runs out: the same question asked again and again stops being answered, and the
/// refusals are audited.
#[test]
fn a_budget_runs_out_and_says_so() {
    let city = city();
    let sql = "SELECT station, count(*) FROM police.incidents GROUP BY station";
    let mut answered = 0;
    let mut last = String::new();
    for _ in 0..32 {
        let a = city.attempt("specialist:greedy", sql);
        match a.answer() {
            Some(_) => answered += 1,
            None => {
                last = a.stderr();
                assert_eq!(a.refusals, 1, "a budget refusal is audited");
            }
        }
    }
    assert_eq!(answered, 30, "30 answers at ε = 1 from a budget of 30");
    assert!(
        last.contains("refused (rule budget)") && last.contains("specialist:greedy"),
        "{last}"
    );
    // Another analyst, or another purpose, has a budget of their own.
    assert!(city.attempt("specialist:patient", sql).answer().is_some());
}

#[test]
fn the_red_team_corpus_gets_nothing() {
    let city = city();
    let attacks = attacks(city);
    assert!(attacks.len() >= 100, "{} attacks", attacks.len());
    // Values an answer or a refusal must never quote.
    let mut secrets: Vec<String> = Vec::new();
    for t in wanted_visitors(city) {
        secrets.push(t.id);
    }
    for (e, _) in small_employers(city) {
        secrets.push(e.id);
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let failures = run_attacks(city, &attacks, &secrets);
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &attacks {
        *by_class.entry(a.class).or_default() += 1;
    }
    eprintln!(
        "attacks by class: {by_class:?}; failures: {}",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn queries_need_the_access_policy_and_a_purpose_the_contract_allows() {
    let city = city();
    let sql = "SELECT station, count(*) FROM police.incidents GROUP BY station";
    for who in ["officer:li@S03", "auditor:zhao", "partner:hospital"] {
        let a = city.attempt(who, sql);
        assert!(a.answer().is_none(), "{who} may not query");
        assert!(
            a.stderr().contains("access-policy"),
            "{who}: {}",
            a.stderr()
        );
        assert!(a.out.stdout.is_empty());
        assert_eq!(a.refusals, 1, "{who}: the refusal is audited");
    }
    let a = city.attempt("dba", sql);
    assert!(a.stderr().contains("unknown role"));

    // `hospital` may be grouped for analysis only.
    let sql = "SELECT hospital, count(*) FROM hospital.visits GROUP BY hospital";
    assert!(city.attempt("specialist:purpose", sql).answer().is_some());
    let a = city.attempt_at(
        &city.platform(),
        "specialist:purpose",
        "fugitive-tracking",
        sql,
    );
    let err = a.stderr();
    assert!(a.answer().is_none());
    assert!(
        err.contains("hospital.visits.hospital") && err.contains("fugitive-tracking"),
        "{err}"
    );
}

#[test]
fn every_attempt_is_audited_by_digest_with_its_budget() {
    let city = city();
    let sql = "SELECT category, count(*) FROM police.incidents GROUP BY category";
    let a = city.attempt("specialist:audit-test", sql);
    assert!(a.answer().is_some());
    assert_eq!((a.runs, a.refusals), (1, 0));
    let r = city.attempt(
        "specialist:audit-test",
        "SELECT caller FROM police.incidents",
    );
    assert_eq!((r.runs, r.refusals), (0, 1));
    let mut log = Vec::new();
    for e in std::fs::read_dir(city.platform().join("audit")).unwrap() {
        log.extend(std::fs::read(e.unwrap().path()).unwrap_or_default());
    }
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("\"epsilon_micro\":1000000"),
        "the budget spent is audited"
    );
    assert!(
        !text.contains("SELECT"),
        "the query text is never logged, only its digest"
    );
    let verify = bw(&["audit", "verify", "--data-dir", s(&city.platform())]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn k_and_noise_come_from_the_privacy_settings() {
    let city = city();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("platform");
    copy_dir(&city.platform(), &copy);
    let privacy = copy.join("policies/privacy.toml");
    let text = std::fs::read_to_string(&privacy).unwrap();
    assert!(text.contains("min_group_size = 10\n"));
    let sql = "SELECT station, category, count(*) FROM police.incidents GROUP BY station, category";
    let at = |dir: &Path, who: &str, purpose: &str| -> serde_json::Value {
        let a = city.attempt_at(dir, who, purpose, sql);
        a.answer().unwrap_or_else(|| panic!("{}", a.stderr()))
    };
    let default = at(&city.platform(), "specialist:settings", "analysis");

    // k = 400: fewer groups are released.
    std::fs::write(
        &privacy,
        text.replace("min_group_size = 10\n", "min_group_size = 400\n"),
    )
    .unwrap();
    let strict = at(&copy, "specialist:settings", "analysis");
    assert_eq!(strict["protection"]["min_group_size"], 400);
    assert!(strict["rows"].as_array().unwrap().len() < default["rows"].as_array().unwrap().len());

    // A purpose without noise: exact counts, no budget spent, and the answer says so.
    std::fs::write(
        &privacy,
        format!("{text}\n[query.purposes.analysis]\nnoise = false\n"),
    )
    .unwrap();
    let exact = at(&copy, "specialist:settings", "analysis");
    assert_eq!(exact["protection"]["noise"], false);
    assert_eq!(exact["protection"]["epsilon"], 0.0);
    let incidents = city.export("police.incidents");
    for row in exact["rows"].as_array().unwrap() {
        let (station, category) = (row[0].as_str().unwrap(), row[1].as_str().unwrap());
        let truth = incidents
            .iter()
            .filter(|r| r["station"] == station && r["category"] == category)
            .count();
        assert_eq!(
            row[2].as_u64().unwrap() as usize,
            truth,
            "{station} {category}"
        );
    }

    // Settings out of range are refused with the file and the key.
    std::fs::write(
        &privacy,
        text.replace("epsilon_per_query = 1.0", "epsilon_per_query = -1"),
    )
    .unwrap();
    let a = city.attempt_at(&copy, "specialist:settings", "analysis", sql);
    assert!(a.answer().is_none());
    assert!(a.stderr().contains("epsilon_per_query"), "{}", a.stderr());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if let Err(e) = std::fs::copy(entry.path(), &target) {
            // Other tests use the same city at the same time: a journal file may vanish
            // between the listing and the copy.
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        }
    }
}
