//! Reads the generated CSV files back like a partner-side parser would, and recomputes all
//! six warning rules for every subject, independently of the generator's bookkeeping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use blindwatch_common::idcard::IdCardError;
use blindwatch_common::{IdentifierKind, NormaliseError, normalise};
use blindwatch_synth::{SynthConfig, generate};
use chrono::NaiveDate;
use serde_json::{Value, json};

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 30).unwrap()
}

/// One parsed file: header and records (duplicates kept).
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn col(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    }
}

fn read(dir: &Path, dataset: &str, truth: &Value) -> Table {
    let meta = &truth["files"][dataset];
    let bytes = std::fs::read(dir.join(meta["file"].as_str().unwrap())).unwrap();
    let text = match meta["encoding"].as_str().unwrap() {
        "GBK" => {
            assert!(
                std::str::from_utf8(&bytes).is_err(),
                "{dataset} should not be UTF-8"
            );
            encoding_rs::GBK
                .decode_without_bom_handling_and_without_replacement(&bytes)
                .unwrap_or_else(|| panic!("{dataset} is not valid GBK"))
                .into_owned()
        }
        "UTF-8" => String::from_utf8(bytes).unwrap(),
        other => panic!("unknown encoding {other}"),
    };
    let has_bom = text.starts_with('\u{feff}');
    assert_eq!(has_bom, meta["bom"].as_bool().unwrap(), "{dataset} BOM");
    let text = text.trim_start_matches('\u{feff}');
    let crlf = text.contains("\r\n");
    assert_eq!(crlf, meta["line_ending"] == "CRLF", "{dataset} line ending");
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_owned).collect();
    let expected: Vec<String> = serde_json::from_value(meta["columns"].clone()).unwrap();
    assert_eq!(header, expected);
    let rows: Vec<Vec<String>> = rdr
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        rows.len() as u64,
        meta["rows"].as_u64().unwrap(),
        "{dataset} rows"
    );
    Table { header, rows }
}

fn norm(kind: IdentifierKind, raw: &str) -> Option<String> {
    normalise(kind, raw)
        .ok()
        .map(|r| r.reveal_value().to_owned())
}

fn days_ago(date: &str, as_of: NaiveDate) -> i64 {
    let d = NaiveDate::parse_from_str(&date[..10], "%Y-%m-%d").unwrap();
    let ago = (as_of - d).num_days();
    assert!((0..365).contains(&ago), "date {date} outside the window");
    ago
}

/// Rows keyed by their id column, checking that duplicates are exact copies.
fn distinct_by(t: &Table, id: &str) -> Vec<Vec<String>> {
    let c = t.col(id);
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut out = Vec::new();
    for r in &t.rows {
        match seen.get(&r[c]) {
            Some(prev) => assert_eq!(prev, r, "duplicate {id} with different content"),
            None => {
                seen.insert(r[c].clone(), r.clone());
                out.push(r.clone());
            }
        }
    }
    out
}

struct Incident {
    ago: i64,
    station: String,
    category: String,
    caller: Option<String>,
    phone: Option<String>,
    party: Option<String>,
    address: Option<String>,
    suspect: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Alert {
    model: String,
    subject: String,
    station: String,
    tier: Option<String>,
    features: BTreeMap<String, i64>,
}

impl Alert {
    fn from_json(v: &Value) -> Alert {
        Alert {
            model: v["model"].as_str().unwrap().to_owned(),
            subject: v["subject"].as_str().unwrap().to_owned(),
            station: v["station"].as_str().unwrap().to_owned(),
            tier: v["tier"].as_str().map(str::to_owned),
            features: serde_json::from_value(v["features"].clone()).unwrap(),
        }
    }
}

/// Station with the most reports, ties to the lowest code.
fn top_station(counts: &BTreeMap<String, i64>) -> String {
    let max = counts.values().max().copied().unwrap_or(0);
    counts
        .iter()
        .find(|(_, c)| **c == max)
        .map(|(s, _)| s.clone())
        .unwrap()
}

fn feats(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The six rules, exactly as the brief states them, over every subject in the data.
fn recompute(dir: &Path, truth: &Value) -> Vec<Alert> {
    use IdentifierKind::*;
    let as_of = NaiveDate::parse_from_str(truth["as_of"].as_str().unwrap(), "%Y-%m-%d").unwrap();
    let days_ago = |d: &str| days_ago(d, as_of);
    let inc_t = read(dir, "police.incidents", truth);
    let c = |n: &str| inc_t.col(n);
    let (ci, cd, cs, cc, cid, cph, cpa, cad, csu) = (
        c("incident_id"),
        c("reported_at"),
        c("station"),
        c("category"),
        c("caller_id_number"),
        c("caller_phone"),
        c("party_id_number"),
        c("address"),
        c("suspect_phone"),
    );
    let incidents: Vec<Incident> = distinct_by(&inc_t, "incident_id")
        .into_iter()
        .map(|r| {
            assert!(!r[ci].is_empty());
            Incident {
                ago: days_ago(&r[cd]),
                station: r[cs].clone(),
                category: r[cc].clone(),
                caller: norm(Person, &r[cid]),
                phone: norm(Phone, &r[cph]),
                party: norm(Person, &r[cpa]),
                address: norm(Address, &r[cad]),
                suspect: norm(Phone, &r[csu]),
            }
        })
        .collect();

    let visits_t = read(dir, "hospital.visits", truth);
    let (vid, vdep, vdx, vdate) = (
        visits_t.col("id_number"),
        visits_t.col("department"),
        visits_t.col("diagnosis_group"),
        visits_t.col("visit_date"),
    );
    let visits: Vec<(Option<String>, String, String, i64)> = distinct_by(&visits_t, "visit_id")
        .into_iter()
        .map(|r| {
            (
                norm(Person, &r[vid]),
                r[vdep].clone(),
                r[vdx].clone(),
                days_ago(&r[vdate]),
            )
        })
        .collect();
    let claims_t = read(dir, "insurance.claims", truth);
    let (kid, kdrug, kdate) = (
        claims_t.col("id_number"),
        claims_t.col("drug_category"),
        claims_t.col("claim_date"),
    );
    let claims: Vec<(Option<String>, String, i64)> = distinct_by(&claims_t, "claim_id")
        .into_iter()
        .map(|r| (norm(Person, &r[kid]), r[kdrug].clone(), days_ago(&r[kdate])))
        .collect();
    let wanted_t = read(dir, "police.wanted", truth);
    let wanted: BTreeMap<String, String> = wanted_t
        .rows
        .iter()
        .map(|r| {
            (
                norm(Person, &r[wanted_t.col("id_number")]).unwrap(),
                r[wanted_t.col("station")].clone(),
            )
        })
        .collect();
    let reg_t = read(dir, "police.mental_health_registry", truth);
    let registry: BTreeMap<String, (String, i64)> = reg_t
        .rows
        .iter()
        .map(|r| {
            let id = norm(Person, &r[reg_t.col("id_number")]).unwrap();
            (
                id,
                (
                    r[reg_t.col("station")].clone(),
                    days_ago(&r[reg_t.col("registered_on")]),
                ),
            )
        })
        .collect();

    let mut alerts = Vec::new();
    let mut push = |model: &str,
                    subject: &str,
                    station: String,
                    tier: Option<&str>,
                    f: BTreeMap<String, i64>| {
        alerts.push(Alert {
            model: model.to_owned(),
            subject: subject.to_owned(),
            station,
            tier: tier.map(str::to_owned),
            features: f,
        });
    };

    // 1. repeat-address
    let mut by_addr: BTreeMap<&str, (i64, BTreeSet<&str>)> = BTreeMap::new();
    for i in incidents.iter().filter(|i| i.ago <= 30) {
        if let Some(a) = &i.address {
            let e = by_addr.entry(a).or_default();
            e.0 += 1;
            e.1.insert(&i.station);
        }
    }
    for (addr, (n, stations)) in by_addr {
        assert_eq!(stations.len(), 1, "an address lies in one station area");
        let tier = match n {
            8.. => Some("red"),
            5..=7 => Some("orange"),
            4 => Some("yellow"),
            3 => Some("blue"),
            _ => None,
        };
        let station = stations.into_iter().next().unwrap().to_owned();
        push(
            "repeat-address",
            addr,
            station,
            tier,
            feats(&[("incidents_30d", n)]),
        );
    }

    // 2. repeat-caller
    let mut by_phone: BTreeMap<&str, BTreeMap<String, i64>> = BTreeMap::new();
    for i in incidents
        .iter()
        .filter(|i| i.ago <= 30 && (i.category == "dispute" || i.category == "noise"))
    {
        if let Some(p) = &i.phone {
            *by_phone
                .entry(p)
                .or_default()
                .entry(i.station.clone())
                .or_default() += 1;
        }
    }
    for (phone, st) in by_phone {
        let n: i64 = st.values().sum();
        let tier = match n {
            10.. => Some("red"),
            6..=9 => Some("orange"),
            4..=5 => Some("yellow"),
            3 => Some("blue"),
            _ => None,
        };
        push(
            "repeat-caller",
            phone,
            top_station(&st),
            tier,
            feats(&[("calls_30d", n)]),
        );
    }

    // 3. escalating-dispute
    let mut disputes: BTreeMap<&str, BTreeMap<String, i64>> = BTreeMap::new();
    for i in incidents
        .iter()
        .filter(|i| i.ago <= 90 && (i.category == "dispute" || i.category == "domestic_violence"))
    {
        let people: BTreeSet<&String> = i.caller.iter().chain(i.party.iter()).collect();
        for p in people {
            *disputes
                .entry(p)
                .or_default()
                .entry(i.station.clone())
                .or_default() += 1;
        }
    }
    let mut injuries: HashMap<&str, i64> = HashMap::new();
    for (p, _, dx, ago) in &visits {
        if let (Some(p), true) = (p, dx == "injury" && *ago <= 30) {
            *injuries.entry(p).or_default() += 1;
        }
    }
    for (person, st) in &disputes {
        let d: i64 = st.values().sum();
        let inj = injuries.get(person).copied().unwrap_or(0);
        let tier = match (d, inj) {
            (3.., 1..) => Some("red"),
            (2, 1..) => Some("orange"),
            (3.., 0) => Some("yellow"),
            (2, 0) => Some("blue"),
            _ => None,
        };
        push(
            "escalating-dispute",
            person,
            top_station(st),
            tier,
            feats(&[("disputes_90d", d), ("injury_visits_30d", inj)]),
        );
    }

    // 4. care-lapse
    let mut last_care: HashMap<&str, i64> = HashMap::new();
    for (p, dep, _, ago) in &visits {
        if let (Some(p), true) = (p, dep == "psychiatry") {
            let e = last_care.entry(p).or_insert(i64::MAX);
            *e = (*e).min(*ago);
        }
    }
    for (p, drug, ago) in &claims {
        if let (Some(p), true) = (p, drug == "antipsychotic") {
            let e = last_care.entry(p).or_insert(i64::MAX);
            *e = (*e).min(*ago);
        }
    }
    for (person, (station, registered_ago)) in &registry {
        let l = last_care
            .get(person.as_str())
            .copied()
            .unwrap_or(*registered_ago);
        let r = incidents
            .iter()
            .filter(|i| {
                i.ago <= 30
                    && (i.caller.as_ref() == Some(person) || i.party.as_ref() == Some(person))
            })
            .count() as i64;
        let tier = if l >= 60 && r >= 1 {
            Some("red")
        } else if l >= 180 {
            Some("orange")
        } else if l >= 120 {
            Some("yellow")
        } else if l >= 90 {
            Some("blue")
        } else {
            None
        };
        push(
            "care-lapse",
            person,
            station.clone(),
            tier,
            feats(&[("days_since_care", l), ("incidents_30d", r)]),
        );
    }

    // 5. fugitive-medical
    let mut last_seen: HashMap<&str, i64> = HashMap::new();
    for (p, ago) in visits
        .iter()
        .map(|v| (&v.0, v.3))
        .chain(claims.iter().map(|c| (&c.0, c.2)))
    {
        if let Some(p) = p {
            let e = last_seen.entry(p).or_insert(i64::MAX);
            *e = (*e).min(ago);
        }
    }
    for (person, station) in &wanted {
        if let Some(s) = last_seen.get(person.as_str()).copied() {
            let tier = match s {
                0..=1 => Some("red"),
                2..=7 => Some("orange"),
                8..=30 => Some("yellow"),
                31..=90 => Some("blue"),
                _ => None,
            };
            push(
                "fugitive-medical",
                person,
                station.clone(),
                tier,
                feats(&[("days_since_seen", s)]),
            );
        }
    }

    // 6. case-linkage
    let mut by_suspect: BTreeMap<&str, BTreeMap<String, i64>> = BTreeMap::new();
    for i in incidents
        .iter()
        .filter(|i| i.ago <= 90 && i.category == "fraud")
    {
        if let Some(s) = &i.suspect {
            *by_suspect
                .entry(s)
                .or_default()
                .entry(i.station.clone())
                .or_default() += 1;
        }
    }
    for (phone, st) in by_suspect {
        let stations = st.len() as i64;
        let n: i64 = st.values().sum();
        let tier = match (stations, n) {
            (4.., _) => Some("red"),
            (3, _) => Some("orange"),
            (2, _) => Some("yellow"),
            (1, 3..) => Some("blue"),
            _ => None,
        };
        push(
            "case-linkage",
            phone,
            top_station(&st),
            tier,
            feats(&[("stations_90d", stations), ("reports_90d", n)]),
        );
    }
    alerts
}

fn generate_into(persons: u64, seed: u64, messy_rate: f64) -> (tempfile::TempDir, Value) {
    generate_at(persons, seed, messy_rate, as_of())
}

fn generate_at(
    persons: u64,
    seed: u64,
    messy_rate: f64,
    as_of: NaiveDate,
) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        persons,
        seed,
        as_of,
        messy_rate,
    };
    let summary = generate(&cfg, dir.path()).unwrap();
    let truth: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ground_truth.json")).unwrap())
            .unwrap();
    assert_eq!(summary.alerts, truth["alerts"].as_array().unwrap().len());
    (dir, truth)
}

/// The key test: the alerts recomputed from the files are exactly the ground truth, near
/// misses recompute to their recorded features without a tier, and nothing else alerts.
struct Checked {
    /// Raw identifier values in the files that differ from a subject's value but
    /// normalise to it.
    messy_subject_values: usize,
}

fn check_city(persons: u64, seed: u64, messy_rate: f64) -> Checked {
    check_city_at(persons, seed, messy_rate, as_of())
}

fn check_city_at(persons: u64, seed: u64, messy_rate: f64, as_of: NaiveDate) -> Checked {
    let (dir, truth) = generate_at(persons, seed, messy_rate, as_of);
    let computed = recompute(dir.path(), &truth);
    let mut got: Vec<Alert> = computed
        .iter()
        .filter(|a| a.tier.is_some())
        .cloned()
        .collect();
    got.sort();
    let mut want: Vec<Alert> = truth["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(Alert::from_json)
        .collect();
    want.sort();
    let missing: Vec<_> = want.iter().filter(|a| !got.contains(a)).collect();
    let extra: Vec<_> = got.iter().filter(|a| !want.contains(a)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );

    let per_tier = (persons / 20_000).max(2) as usize;
    for model in [
        "repeat-address",
        "repeat-caller",
        "escalating-dispute",
        "care-lapse",
        "fugitive-medical",
        "case-linkage",
    ] {
        for tier in ["red", "orange", "yellow", "blue"] {
            let n = want
                .iter()
                .filter(|a| a.model == model && a.tier.as_deref() == Some(tier))
                .count();
            assert_eq!(n, per_tier, "{model} {tier}");
        }
        let near = truth["near_misses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["model"] == model)
            .count();
        assert_eq!(near, per_tier, "{model} near misses");
    }

    let index: HashMap<(&str, &str), &Alert> = computed
        .iter()
        .map(|a| ((a.model.as_str(), a.subject.as_str()), a))
        .collect();
    for nm in truth["near_misses"].as_array().unwrap() {
        let want = Alert::from_json(nm);
        assert!(nm.get("tier").is_none());
        let got = index
            .get(&(want.model.as_str(), want.subject.as_str()))
            .unwrap_or_else(|| panic!("near miss not found in data: {want:?}"));
        assert_eq!(**got, want);
    }

    let subjects: HashSet<String> = truth["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(truth["near_misses"].as_array().unwrap())
        .map(|e| e["subject"].as_str().unwrap().to_owned())
        .collect();
    let mut messy_subject_values = 0;
    for (dataset, cols) in [
        (
            "police.incidents",
            &[
                "caller_id_number",
                "caller_phone",
                "party_id_number",
                "address",
                "suspect_phone",
            ][..],
        ),
        ("hospital.visits", &["id_number", "phone"][..]),
        ("insurance.claims", &["id_number"][..]),
        ("police.wanted", &["id_number"][..]),
        ("police.mental_health_registry", &["id_number"][..]),
    ] {
        let t = read(dir.path(), dataset, &truth);
        for col in cols {
            let kind = match *col {
                "address" => IdentifierKind::Address,
                c if c.contains("phone") => IdentifierKind::Phone,
                _ => IdentifierKind::Person,
            };
            for r in &t.rows {
                let raw = &r[t.col(col)];
                if let Some(v) = norm(kind, raw)
                    && v != *raw
                    && subjects.contains(&v)
                {
                    messy_subject_values += 1;
                }
            }
        }
    }
    Checked {
        messy_subject_values,
    }
}

#[test]
fn recomputed_alerts_equal_ground_truth() {
    check_city(3_000, 42, 0.02);
}

#[test]
fn heavy_mess_changes_no_alert() {
    let truth = check_city(4_000, 7, 0.5);
    // Mess did hit planted subjects' rows, and normalisation undid it.
    assert!(
        truth.messy_subject_values > 20,
        "{}",
        truth.messy_subject_values
    );
}

#[test]
fn clean_city_on_a_leap_day_also_matches() {
    check_city_at(
        2_000,
        1234,
        0.0,
        NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
    );
}

#[test]
fn larger_city_matches() {
    check_city(40_000, 99, 0.02);
}

/// Twelve planted subjects per tier and much more background; slow in debug, so run it with
/// `cargo test --release -p blindwatch-synth -- --ignored` (`BLINDWATCH_SYNTH_BIG_PERSONS`
/// sets the size, e.g. 1000000).
#[test]
#[ignore = "slow in debug builds; run in release"]
fn big_city_matches() {
    let persons = std::env::var("BLINDWATCH_SYNTH_BIG_PERSONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250_000);
    check_city(persons, 2024, 0.02);
}

#[test]
fn tiers_follow_the_rules_from_recorded_features() {
    let (_dir, truth) = generate_into(1_500, 5, 0.02);
    for a in truth["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(truth["near_misses"].as_array().unwrap())
    {
        let f = |k: &str| a["features"][k].as_i64().unwrap();
        let tier = match a["model"].as_str().unwrap() {
            "repeat-address" => match f("incidents_30d") {
                8.. => "red",
                5..=7 => "orange",
                4 => "yellow",
                3 => "blue",
                _ => "",
            },
            "repeat-caller" => match f("calls_30d") {
                10.. => "red",
                6..=9 => "orange",
                4..=5 => "yellow",
                3 => "blue",
                _ => "",
            },
            "escalating-dispute" => match (f("disputes_90d"), f("injury_visits_30d")) {
                (3.., 1..) => "red",
                (2, 1..) => "orange",
                (3.., 0) => "yellow",
                (2, 0) => "blue",
                _ => "",
            },
            "care-lapse" => {
                let (l, r) = (f("days_since_care"), f("incidents_30d"));
                if l >= 60 && r >= 1 {
                    "red"
                } else if l >= 180 {
                    "orange"
                } else if l >= 120 {
                    "yellow"
                } else if l >= 90 {
                    "blue"
                } else {
                    ""
                }
            }
            "fugitive-medical" => match f("days_since_seen") {
                0..=1 => "red",
                2..=7 => "orange",
                8..=30 => "yellow",
                31..=90 => "blue",
                _ => "",
            },
            "case-linkage" => match (f("stations_90d"), f("reports_90d")) {
                (4.., _) => "red",
                (3, _) => "orange",
                (2, _) => "yellow",
                (1, 3..) => "blue",
                _ => "",
            },
            other => panic!("unknown model {other}"),
        };
        assert_eq!(a["tier"].as_str().unwrap_or(""), tier, "{a}");
        let kind = a["subject_kind"].as_str().unwrap();
        let k: IdentifierKind = kind.parse().unwrap();
        assert_eq!(
            norm(k, a["subject"].as_str().unwrap()).as_deref(),
            a["subject"].as_str(),
            "subject is normalised"
        );
    }
    // Care-lapse subjects were registered at least 200 days before as_of.
    let registry: Vec<&Value> = truth["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["model"] == "care-lapse")
        .collect();
    assert!(!registry.is_empty());
}

/// Identifier-bearing columns of a file: (column, kind, required).
type Cols = &'static [(&'static str, &'static str, bool)];

/// Classifies one raw identifier field into the mess applied to it (or none).
fn classify(kind: &str, required: bool, raw: &str) -> Option<&'static str> {
    if raw.is_empty() {
        return required.then_some("blank_identifier");
    }
    if raw != raw.trim() {
        return Some("padded");
    }
    let fullwidth = raw
        .chars()
        .any(|c| ('\u{ff10}'..='\u{ff19}').contains(&c) || c == 'Ｘ');
    match kind {
        "id" => {
            let r = normalise(IdentifierKind::Person, raw);
            if fullwidth {
                assert!(r.is_ok());
                Some("fullwidth_digits")
            } else if raw.len() == 15 {
                assert!(r.is_ok());
                Some("legacy_15_digit_id")
            } else if raw.ends_with('x') {
                assert!(r.is_ok());
                Some("lowercase_x")
            } else {
                match r {
                    Ok(v) => {
                        assert_eq!(v.reveal_value(), raw);
                        None
                    }
                    Err(NormaliseError::IdCard(IdCardError::CheckDigit)) => {
                        Some("wrong_check_digit")
                    }
                    Err(e) => panic!("ID number {raw:?} fails with {e}"),
                }
            }
        }
        "phone" => {
            let Ok(v) = normalise(IdentifierKind::Phone, raw) else {
                return Some("garbage_phone");
            };
            if fullwidth {
                Some("fullwidth_digits")
            } else if raw.starts_with("+86") || raw.starts_with("0086") {
                Some("phone_country_prefix")
            } else if raw.contains('-') {
                Some("phone_dashes")
            } else {
                assert_eq!(v.reveal_value(), raw);
                None
            }
        }
        "address" => raw.contains("  ").then_some("address_double_space"),
        _ => None,
    }
}

#[test]
fn mess_counts_match_and_ids_are_valid() {
    let (dir, truth) = generate_into(3_000, 11, 0.1);
    let fields: &[(&str, Cols)] = &[
        (
            "police.incidents",
            &[
                ("caller_id_number", "id", true),
                ("caller_name", "name", true),
                ("caller_phone", "phone", true),
                ("party_id_number", "id", false),
                ("address", "address", true),
                ("suspect_phone", "phone", false),
            ],
        ),
        (
            "police.wanted",
            &[("id_number", "id", true), ("name", "name", true)],
        ),
        (
            "police.mental_health_registry",
            &[
                ("id_number", "id", true),
                ("name", "name", true),
                ("guardian_phone", "phone", true),
            ],
        ),
        (
            "hospital.visits",
            &[
                ("id_number", "id", true),
                ("patient_name", "name", true),
                ("phone", "phone", true),
            ],
        ),
        (
            "insurance.claims",
            &[("id_number", "id", true), ("insured_name", "name", true)],
        ),
        (
            "tax.employment",
            &[("id_number", "id", true), ("name", "name", true)],
        ),
    ];
    let mut total_messy = 0;
    for (dataset, cols) in fields {
        let t = read(dir.path(), dataset, &truth);
        let mut seen = HashSet::new();
        let distinct: Vec<&Vec<String>> = t
            .rows
            .iter()
            .filter(|r| seen.insert((*r).clone()))
            .collect();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for r in &distinct {
            let mut kinds = 0;
            for (col, kind, required) in cols.iter() {
                if let Some(k) = classify(kind, *required, &r[t.col(col)]) {
                    *counts.entry(k.to_owned()).or_default() += 1;
                    kinds += 1;
                }
            }
            assert!(kinds <= 1, "{dataset}: a row got more than one mess: {r:?}");
        }
        let dups = (t.rows.len() - distinct.len()) as u64;
        counts.insert("duplicate_row".into(), dups);
        assert_eq!(
            dups,
            truth["files"][dataset]["duplicate_rows"].as_u64().unwrap()
        );
        let recorded: BTreeMap<String, u64> =
            serde_json::from_value(truth["messiness"][dataset].clone()).unwrap();
        let recorded_nonzero: BTreeMap<String, u64> = recorded
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let counted_nonzero: BTreeMap<String, u64> =
            counts.into_iter().filter(|(_, v)| *v > 0).collect();
        assert_eq!(counted_nonzero, recorded_nonzero, "{dataset}");
        let messy: u64 = recorded.values().sum();
        assert_eq!(
            messy,
            truth["files"][dataset]["messy_rows"].as_u64().unwrap()
        );
        total_messy += messy;
        // The rate holds: 10 % of written rows, give or take.
        let written = t.rows.len() as f64 - dups as f64;
        if written > 2_000.0 {
            let rate = messy as f64 / written;
            assert!((0.08..0.12).contains(&rate), "{dataset}: rate {rate}");
        }
    }
    assert!(total_messy > 0);
    // Harmful mess happened somewhere, and only where allowed (checked by the alert tests).
    let m = &truth["messiness"];
    let harmful: u64 = ["wrong_check_digit", "blank_identifier", "garbage_phone"]
        .iter()
        .map(|k| {
            m["hospital.visits"][k].as_u64().unwrap() + m["tax.employment"][k].as_u64().unwrap()
        })
        .sum();
    assert!(harmful > 0);
    for list in ["police.wanted", "police.mental_health_registry"] {
        for k in ["wrong_check_digit", "blank_identifier", "garbage_phone"] {
            assert_eq!(m[list][k], json!(0), "{list} {k}");
        }
    }
}

fn file_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, _) = generate_into(2_500, 77, 0.05);
    let (b, _) = generate_into(2_500, 77, 0.05);
    let (c, _) = generate_into(2_500, 78, 0.05);
    let (fa, fb, fc) = (
        file_bytes(a.path()),
        file_bytes(b.path()),
        file_bytes(c.path()),
    );
    assert_eq!(
        fa.len(),
        7,
        "six CSV files and the ground truth: {:?}",
        fa.keys()
    );
    assert_eq!(fa, fb);
    for (name, bytes) in &fa {
        assert_ne!(
            Some(bytes),
            fc.get(name),
            "{name} should change with the seed"
        );
    }
}

#[test]
fn activity_lies_in_the_window_and_vocabularies_are_closed() {
    let (dir, truth) = generate_into(1_200, 3, 0.02);
    let inc = read(dir.path(), "police.incidents", &truth);
    let cats = [
        "dispute",
        "domestic_violence",
        "theft",
        "fraud",
        "noise",
        "traffic",
        "other",
    ];
    for r in &inc.rows {
        assert!(cats.contains(&r[inc.col("category")].as_str()));
        let ts = &r[inc.col("reported_at")];
        assert!(
            chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S").is_ok(),
            "{ts}"
        );
        days_ago(ts, as_of());
        let suspect = &r[inc.col("suspect_phone")];
        assert!(suspect.is_empty() || r[inc.col("category")] == "fraud");
        let station = &r[inc.col("station")];
        assert!(
            ["S01", "S02", "S03", "S04", "S05", "S06", "S07", "S08"].contains(&station.as_str())
        );
    }
    let v = read(dir.path(), "hospital.visits", &truth);
    for r in &v.rows {
        days_ago(&r[v.col("visit_date")], as_of());
        assert!(
            [
                "psychiatry",
                "emergency",
                "surgery",
                "orthopedics",
                "internal",
                "pediatrics",
                "other"
            ]
            .contains(&r[v.col("department")].as_str())
        );
        assert!(
            [
                "injury",
                "psychiatric",
                "respiratory",
                "cardio",
                "chronic",
                "other"
            ]
            .contains(&r[v.col("diagnosis_group")].as_str())
        );
    }
    let k = read(dir.path(), "insurance.claims", &truth);
    for r in &k.rows {
        days_ago(&r[k.col("claim_date")], as_of());
        assert!(
            [
                "antipsychotic",
                "analgesic",
                "antibiotic",
                "chronic",
                "other"
            ]
            .contains(&r[k.col("drug_category")].as_str())
        );
        let amount = &r[k.col("amount")];
        assert!(
            amount.split_once('.').is_some_and(|(_, c)| c.len() == 2),
            "{amount}"
        );
    }
    let t = read(dir.path(), "tax.employment", &truth);
    let periods: BTreeSet<&str> = t.rows.iter().map(|r| r[t.col("period")].as_str()).collect();
    assert_eq!(
        periods.into_iter().collect::<Vec<_>>(),
        ["2025-04", "2025-05", "2025-06"]
    );
    let w = read(dir.path(), "police.wanted", &truth);
    for r in &w.rows {
        assert!(
            ["fraud", "theft", "assault", "drugs", "other"].contains(&r[w.col("offence")].as_str())
        );
        assert!(["1", "2", "3"].contains(&r[w.col("danger_level")].as_str()));
        days_ago(&r[w.col("wanted_since")], as_of());
    }
    let m = read(dir.path(), "police.mental_health_registry", &truth);
    for r in &m.rows {
        assert!(("0"..="5").contains(&r[m.col("risk_level")].as_str()));
        days_ago(&r[m.col("registered_on")], as_of());
    }
    assert_eq!(truth["stations"].as_array().unwrap().len(), 8);
    assert_eq!(truth["stations"][0]["code"], "S01");
    assert_eq!(truth["stations"][4]["county_code"], "C2");
}

#[test]
fn bad_configs_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SynthConfig::new(10, 1, as_of());
    let err = generate(&cfg, dir.path()).unwrap_err().to_string();
    assert!(err.contains("persons") && err.contains("1000"), "{err}");
    cfg.persons = 5_000;
    cfg.messy_rate = 0.9;
    let err = generate(&cfg, dir.path()).unwrap_err().to_string();
    assert!(err.contains("messy_rate"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
