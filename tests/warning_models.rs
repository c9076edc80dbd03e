//! Warning models end to end through the `blindwatch` binary: the demo's alerts equal the
//! synthetic city's planted ground truth (health-event days compared as the buckets officers
//! see); every shipped model passes its fixture cases; `model check` refuses bad models with
//! the file, the field and the reason, and evidence finer than the contracts' `reveal_as`;
//! reruns update alerts instead of duplicating them; approvals bind one partner's registered
//! key to one exact model (every forgery refused and audited); and a model written to
//! isolate one person is no oracle: unapproved it is refused, approved its run summaries
//! read the same whether the person is there or not, on the command line and over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/server.rs"]
mod server;
mod support;
use support::{bw, files_under, ok, repo, s};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use blindwatch_alerts::Pseudonymizer;
use blindwatch_audit::AuditEvent;
use blindwatch_common::{IdentifierKind, normalise};
use blindwatch_crypto::blind::AuthorityKey;
use blindwatch_crypto::keys::{KeyFileKind, read_fixed};
use blindwatch_store::DataDir;
use serde_json::{Value, json};

/// Runs the binary with the words of `line` (the tests' paths hold no spaces); fails the
/// test on a non-zero exit and returns standard output.
fn cli_ok(line: &str) -> String {
    ok(&line.split_whitespace().collect::<Vec<_>>())
}

/// k of the shipped `policies/privacy.toml`.
const K: u64 = 10;

/// The audit events appended since entry `from`, and the log's size now (the commands that
/// wrote them have exited, so the log is free to open).
fn audit_since(platform: &Path, from: u64) -> (Vec<AuditEvent>, u64) {
    let log = DataDir::new(platform).open_audit_log().unwrap();
    let size = log.size();
    let events = (from..size).map(|i| log.record(i).unwrap().event).collect();
    (events, size)
}

/// The day bounds a shipped model declares for an evidence feature (`reveal_as`).
fn reveal_bounds(model: &str, feature: &str) -> Option<Vec<i64>> {
    let text = std::fs::read_to_string(repo().join(format!("models/{model}.toml"))).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let bounds = table.get("reveal_as")?.get(feature)?.get("within_days")?;
    Some(
        bounds
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_integer().unwrap())
            .collect(),
    )
}

/// How an officer sees a count of days under `bounds` (written here independently of the
/// platform's code): the smallest bucket that holds it.
fn bucket(days: i64, bounds: &[i64]) -> String {
    let mut below: Option<i64> = None;
    for b in bounds {
        if days <= *b {
            return match below {
                None if *b == 1 => "≤ 1 day".to_owned(),
                None => format!("≤ {b} days"),
                Some(l) => format!("{}–{b} days", l + 1),
            };
        }
        below = Some(*b);
    }
    format!("> {} days", bounds.last().unwrap())
}

/// (model, pseudonym, tier, station, evidence as JSON) of every open alert.
type AlertKey = (String, String, String, String, String);

fn open_alerts(platform: &Path) -> BTreeSet<AlertKey> {
    let json = ok(&["alerts", "--data-dir", s(platform), "--format", "json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    list.iter()
        .map(|a| {
            (
                a["model"].as_str().unwrap().to_owned(),
                a["subject"].as_str().unwrap().to_owned(),
                a["tier"].as_str().unwrap().to_owned(),
                a["station"].as_str().unwrap().to_owned(),
                String::new(),
            )
        })
        .collect()
}

#[test]
fn demo_alerts_equal_the_planted_ground_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("d");
    let out = ok(&[
        "demo",
        "--data-dir",
        s(&root),
        "--persons",
        "4000",
        "--seed",
        "11",
        "--as-of",
        "2026-11-30",
    ]);
    assert!(out.contains("open alerts by station and tier"), "{out}");
    let platform = root.join("platform");

    // The expected alerts, from the generator's ground truth: subjects tokenised as the
    // partners do, pseudonymised as the platform does.
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("ground_truth.json")).unwrap()).unwrap();
    // The demo tokenises blind, so the authority's key computes the same tokens directly.
    let authority = AuthorityKey::read(&root.join("authority/oprf.key")).unwrap();
    let secret = read_fixed::<32>(
        &platform.join("keys/deployment.key"),
        KeyFileKind::Deployment,
    )
    .unwrap();
    let pseudonyms = Pseudonymizer::new(&secret);
    let mut expected = BTreeSet::new();
    let mut expected_evidence = Vec::new();
    for a in truth["alerts"].as_array().unwrap() {
        let kind: IdentifierKind = a["subject_kind"].as_str().unwrap().parse().unwrap();
        let raw = normalise(kind, a["subject"].as_str().unwrap()).unwrap();
        let token = authority.token_of(&raw).unwrap();
        let (_, pseudonym) = pseudonyms.subject(kind.as_str(), token.as_bytes());
        let key = (
            a["model"].as_str().unwrap().to_owned(),
            pseudonym.as_str().to_owned(),
            a["tier"].as_str().unwrap().to_owned(),
            a["station"].as_str().unwrap().to_owned(),
            String::new(),
        );
        expected_evidence.push((key.clone(), a["features"].clone()));
        expected.insert(key);
    }
    assert!(
        expected.len() >= 48,
        "2 planted subjects per model and tier"
    );

    // Neither the platform nor the token authority holds a planted subject's identifier.
    let mut files = files_under(&platform, &|_| false);
    files.extend(files_under(&root.join("authority"), &|_| false));
    assert!(files.len() > 10);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for a in truth["alerts"].as_array().unwrap() {
            let raw = a["subject"].as_str().unwrap().as_bytes();
            assert!(
                !bytes.windows(raw.len()).any(|w| w == raw),
                "{} holds a planted identifier",
                file.display()
            );
        }
    }

    let actual = open_alerts(&platform);
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );

    // The evidence carries the planted feature values; a day count derived from hospital
    // or insurance dates only as the bucket that holds it.
    let json = ok(&["alerts", "--data-dir", s(&platform), "--format", "json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let mut bucketed = 0;
    for (key, features) in &expected_evidence {
        let alert = list
            .iter()
            .find(|a| a["model"] == key.0.as_str() && a["subject"] == key.1.as_str())
            .unwrap();
        for (name, value) in features.as_object().unwrap() {
            let want = match reveal_bounds(&key.0, name) {
                Some(bounds) => {
                    bucketed += 1;
                    json!(bucket(value.as_i64().unwrap(), &bounds))
                }
                None => value.clone(),
            };
            assert_eq!(
                alert["evidence"][name], want,
                "{} {} evidence {name}",
                key.0, key.2
            );
        }
    }
    assert!(
        bucketed >= 16,
        "fugitive-medical and care-lapse show days in buckets"
    );
    // No officer sees a date, or a day count that is not a bucket, from a model that reads
    // hospital or insurance data.
    for a in &list {
        let model = a["model"].as_str().unwrap();
        let text = std::fs::read_to_string(repo().join(format!("models/{model}.toml"))).unwrap();
        if !(text.contains("hospital.") || text.contains("insurance.")) {
            continue;
        }
        for (name, v) in a["evidence"].as_object().unwrap() {
            match v {
                Value::String(t) => assert!(
                    t.ends_with(" days") || t.ends_with(" day"),
                    "{model} {name}: {t}"
                ),
                Value::Number(_) => {
                    assert!(reveal_bounds(model, name).is_none(), "{model} {name}: {v}")
                }
                other => assert!(other.is_null(), "{model} {name}: {other}"),
            }
        }
    }

    // A rerun as of the same day changes nothing; a month later, alerts follow the data.
    // (The run's own counts of changes read "fewer than 10": the alerts are compared.)
    let again = ok(&["run", "--data-dir", s(&platform), "--as-of", "2026-11-30"]);
    for line in again.lines() {
        assert!(line.contains(&format!("fewer than {K} opened")), "{line}");
    }
    assert_eq!(open_alerts(&platform), actual);
    ok(&["run", "--data-dir", s(&platform), "--as-of", "2027-01-15"]);
    ok(&["run", "--data-dir", s(&platform), "--as-of", "2027-01-15"]);
    let later = open_alerts(&platform);
    assert!(later.len() < actual.len(), "old alerts resolve");
    let all = ok(&[
        "alerts",
        "--data-dir",
        s(&platform),
        "--all",
        "--format",
        "json",
    ]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    assert!(all.iter().any(|a| a["outcome"] == "resolved"));
    // Still one open alert per (model, subject).
    let pairs: BTreeSet<(String, String)> =
        later.iter().map(|k| (k.0.clone(), k.1.clone())).collect();
    assert_eq!(pairs.len(), later.len());
    ok(&["audit", "verify", "--data-dir", s(&platform)]);
}

#[test]
fn shipped_models_pass_their_fixture_cases() {
    let models = repo().join("models");
    let mut files: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && !s(p).ends_with(".test.toml"))
        .map(|p| s(&p).to_owned())
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    let mut args = vec!["model", "test"];
    args.extend(files.iter().map(String::as_str));
    let out = ok(&args);
    assert!(out.contains(" 0 failed"), "{out}");
    let passed: usize = out
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(passed >= 2 * files.len(), "{out}");

    // A fixture that expects the wrong tier fails, naming the case and the difference.
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("repeat-address.toml");
    std::fs::copy(models.join("repeat-address.toml"), &model).unwrap();
    let fixture = std::fs::read_to_string(models.join("repeat-address.test.toml"))
        .unwrap()
        .replacen("tier = \"red\"", "tier = \"orange\"", 1);
    std::fs::write(tmp.path().join("repeat-address.test.toml"), fixture).unwrap();
    let out = bw(&["model", "test", s(&model)]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL repeat-address"), "{stdout}");
    assert!(stdout.contains("tier red (expected orange)"), "{stdout}");
}

#[test]
fn model_check_refuses_with_file_field_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = tmp.path().join("platform");
    ok(&["keys", "init", "--data-dir", s(&platform)]);
    // A directory stands for its model files; the fixtures beside them are not models.
    let shipped = repo().join("models");
    let out = bw(&["model", "check", "--data-dir", s(&platform), s(&shipped)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let models = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml") && !n.ends_with(".test.toml"))
        .count();
    assert!(models > 1);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        models,
        "{stdout}"
    );
    assert!(!stdout.contains(".test.toml"), "{stdout}");
    let good = std::fs::read_to_string(repo().join("models/fugitive-medical.toml")).unwrap();
    let check = |name: &str, text: &str| -> String {
        let file = tmp.path().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            text.replace("id = \"fugitive-medical\"", &format!("id = \"{name}\"")),
        )
        .unwrap();
        let out = bw(&["model", "check", "--data-dir", s(&platform), s(&file)]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if name == "good" {
            assert!(out.status.success(), "{stderr}");
        } else {
            assert!(!out.status.success(), "{name} was accepted");
            assert!(stderr.contains(&format!("{name}.toml: ")), "{stderr}");
        }
        stderr
    };
    check("good", &good);

    let e = check(
        "unknown-table",
        &good.replace("FROM hospital.visits", "FROM hospital.nope"),
    );
    assert!(
        e.contains(": query: ") && e.contains("hospital.nope"),
        "{e}"
    );

    let e = check(
        "no-route",
        &good.replace("w.station,", "w.station AS place,"),
    );
    assert!(e.contains(": route: "), "{e}");

    let e = check(
        "bad-tier",
        &good.replace("days_since_seen <= 7", "days_since_sighting <= 7"),
    );
    assert!(e.contains(": tiers[1].when: "), "{e}");

    let e = check(
        "raw-evidence",
        &good
            .replace(
                "evidence = [\"days_since_seen\", \"visits_90d\", \"claims_90d\"]",
                "evidence = [\"danger\"]",
            )
            .replace(
                "reveal_as = { days_since_seen = { within_days = [1, 7, 30] } }",
                "",
            )
        .replace("w.station,\n", "w.station, w.danger AS danger,\n")
        .replace(
            "SELECT person, min(station) AS station FROM police.wanted GROUP BY person",
            "SELECT person, min(station) AS station, danger_level AS danger FROM police.wanted GROUP BY person, danger_level",
        ),
    );
    assert!(
        e.contains(": evidence: ") && e.contains("not an aggregate"),
        "{e}"
    );

    // Department may be filtered for fugitive tracking, not for public order.
    let e = check(
        "wrong-purpose",
        &good
            .replace(
                "purpose = \"fugitive-tracking\"",
                "purpose = \"public-order\"",
            )
            .replace(
                "WHERE visit_date >= current_date",
                "WHERE department <> 'pediatrics' AND visit_date >= current_date",
            ),
    );
    assert!(
        e.contains("hospital.visits.department") && e.contains("not for purpose `public-order`"),
        "{e}"
    );

    // A token other than the subject never reaches the result.
    let e = check(
        "token-out",
        &good.replace("w.station,\n", "w.station, v.person AS other,\n"),
    );
    assert!(
        e.contains("hospital.visits.person") && e.contains("never reach a result"),
        "{e}"
    );

    // Tokens are counted, never copied out by an aggregate.
    let e = check(
        "token-max",
        &good.replace(
            "count(DISTINCT visit_id) AS visits_90d",
            "count(DISTINCT visit_id) AS visits_90d, max(phone) AS p",
        ),
    );
    assert!(
        e.contains("hospital.visits.phone") && e.contains("only be joined and counted"),
        "{e}"
    );

    // Nothing was registered by a check.
    assert!(!platform.join("models").exists());
}

/// Every way of deriving an evidence value from a hospital visit date or an insurance claim
/// date is refused unless the model shows it in the contract's day buckets or coarser ones;
/// a police date, whose contract sets no `reveal_as`, may be shown as it is.
#[test]
fn evidence_from_health_dates_is_shown_no_finer_than_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = tmp.path().join("platform");
    ok(&["keys", "init", "--data-dir", s(&platform)]);
    let model = |name: &str, table: &str, expr: &str, reveal: Option<&str>| -> String {
        let reveal = reveal.map_or(String::new(), |b| {
            format!("reveal_as = {{ shown = {{ within_days = {b} }} }}")
        });
        format!(
            r#"id = "{name}"
version = 1
title = {{ zh = "测试", en = "Test" }}
category = "fugitive"
purpose = "fugitive-tracking"
subject = "person"
route = "station"
schedule = "1h"
evidence = ["shown"]
{reveal}
query = """
WITH w AS (SELECT person, min(station) AS station FROM police.wanted GROUP BY person),
e AS (SELECT person, {expr} AS shown FROM {table} GROUP BY person)
SELECT w.person AS subject, w.station, e.shown FROM w JOIN e ON e.person = w.person
"""
tiers = [ {{ level = "blue", when = "shown IS NOT NULL" }} ]
"#
        )
    };
    let check = |name: &str, text: &str| -> (bool, String) {
        let file = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = bw(&["model", "check", "--data-dir", s(&platform), s(&file)]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut n = 0;
    for (table, column) in [
        ("hospital.visits", "visit_date"),
        ("insurance.claims", "claim_date"),
    ] {
        for expr in [
            format!("max({column})"),
            format!("min({column})"),
            format!("CAST(current_date AS INT) - CAST(max({column}) AS INT)"),
            format!("CAST(max({column}) AS INT)"),
            format!("max({column}) + INTERVAL '1' DAY"),
        ] {
            n += 1;
            let source = format!("{table}.{column}");
            let (ok_, e) = check(
                &format!("exact-{n}"),
                &model(&format!("exact-{n}"), table, &expr, None),
            );
            assert!(!ok_, "{expr} was shown exactly");
            assert!(e.contains(": reveal_as: ") && e.contains(&source), "{e}");
            let (ok_, e) = check(
                &format!("finer-{n}"),
                &model(&format!("finer-{n}"), table, &expr, Some("[1, 7, 14]")),
            );
            assert!(!ok_ && e.contains("finer"), "{expr} in finer buckets: {e}");
            let (ok_, e) = check(
                &format!("coarser-{n}"),
                &model(&format!("coarser-{n}"), table, &expr, Some("[7, 30]")),
            );
            assert!(ok_, "{expr} in coarser buckets: {e}");
            let (ok_, e) = check(
                &format!("same-{n}"),
                &model(
                    &format!("same-{n}"),
                    table,
                    &expr,
                    Some("[1, 7, 30, 59, 89, 119, 179, 365]"),
                ),
            );
            assert!(ok_, "{expr} in the contract's buckets: {e}");
        }
        // A value that is no day count cannot be bucketed.
        let (ok_, e) = check(
            "fraction",
            &model(
                "fraction",
                table,
                &format!("CAST(CAST(max({column}) AS INT) AS DOUBLE) / 7.0"),
                Some("[7, 30]"),
            ),
        );
        assert!(!ok_ && e.contains("whole number of days"), "{e}");
    }
    // The rule follows the contract: the police's own dates carry no reveal_as.
    let (ok_, e) = check(
        "police-date",
        &model("police-date", "police.wanted", "min(wanted_since)", None),
    );
    assert!(ok_, "{e}");
    assert!(!platform.join("models").exists());
}

/// Forged, misdirected and stale approvals: each refused with its own reason and audited,
/// nothing stored or installed; only every reader's own registered key over this exact text
/// registers the model; a run checks again (a changed installed file, a replaced partner
/// key: refused and audited, nothing run).
#[test]
fn approvals_bind_one_partner_key_and_one_exact_model() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let platform = root.join("platform");
    ok(&["keys", "init", "--data-dir", s(&platform)]);
    let key = |p: &str| root.join("partners").join(p).join(format!("{p}.key"));
    for (p, dataset) in [
        ("police", "police.wanted"),
        ("hospital", "hospital.visits"),
        ("insurance", "insurance.claims"),
        ("tax", "tax.employment"),
    ] {
        let dir = root.join("partners").join(p);
        ok(&["partner", "keygen", "--partner", p, "--out", s(&dir)]);
        let public = dir.join(format!("{p}.pub"));
        cli_ok(&format!(
            "partner register --data-dir {} --partner {p} --key {} --datasets {dataset}",
            s(&platform),
            s(&public)
        ));
    }
    cli_ok(&format!(
        "partner keygen --partner hospital --out {}",
        s(&root.join("rogue"))
    ));

    let original = std::fs::read_to_string(repo().join("models/fugitive-medical.toml")).unwrap();
    let write_model = |dir: &str, id: &str, text: &str| -> PathBuf {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join(format!("{id}.toml"));
        std::fs::write(&f, text).unwrap();
        f
    };
    let model = write_model("specialist", "fugitive-medical", &original);
    let changed_text = original.replace("days_since_seen <= 7", "days_since_seen <= 8");
    let changed = write_model("changed", "fugitive-medical", &changed_text);
    let next_version = write_model(
        "v3",
        "fugitive-medical",
        &original.replacen("version = 2", "version = 3", 1),
    );
    let copy = write_model(
        "copy",
        "fugitive-medical-copy",
        &original.replace(
            "id = \"fugitive-medical\"",
            "id = \"fugitive-medical-copy\"",
        ),
    );
    let approvals = root.join("approvals");
    std::fs::create_dir_all(&approvals).unwrap();
    let approve = |partner: &str, key: &Path, file: &Path, name: &str| -> PathBuf {
        let out = approvals.join(format!("{name}.json"));
        cli_ok(&format!(
            "model approve --partner {partner} --partner-key {} --out {} {}",
            s(key),
            s(&out),
            s(file)
        ));
        out
    };
    let register = |approvals: &[&Path], file: &Path| {
        let mut args = vec!["model", "register", "--data-dir", s(&platform)];
        for a in approvals {
            args.extend(["--approval", s(a)]);
        }
        args.push(s(file));
        bw(&args)
    };
    let installed = platform.join("models/fugitive-medical.toml");
    let mut seen = audit_since(&platform, 0).1;

    // Unapproved: refused naming every partner whose data it reads; audited.
    let out = register(&[], &model);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for p in ["hospital", "insurance", "police"] {
        assert!(stderr.contains(p), "{stderr}");
    }
    assert!(!stderr.contains("tax"), "{stderr}");
    assert!(!installed.exists());
    let (events, size) = audit_since(&platform, seen);
    seen = size;
    match &events[..] {
        [
            AuditEvent::ModelRegistrationRefused {
                partners, reason, ..
            },
        ] => {
            assert_eq!(reason.as_str(), "approval-missing");
            let names: Vec<&str> = partners.iter().map(|p| p.as_str()).collect();
            assert_eq!(names, ["hospital", "insurance", "police"]);
        }
        other => panic!("{other:?}"),
    }

    // An approval altered after signing: one payload character changed.
    let good = approve("hospital", &key("hospital"), &model, "hospital");
    let mut envelope: Value = serde_json::from_slice(&std::fs::read(&good).unwrap()).unwrap();
    let payload = envelope["payload"].as_str().unwrap().to_owned();
    let flipped = if &payload[20..21] == "A" { "B" } else { "A" };
    envelope["payload"] = json!(format!("{}{flipped}{}", &payload[..20], &payload[21..]));
    let tampered = approvals.join("tampered.json");
    std::fs::write(&tampered, envelope.to_string()).unwrap();
    let junk = approvals.join("junk.json");
    std::fs::write(&junk, br#"{"payloadType":"x"}"#).unwrap();

    let attacks: Vec<(&str, PathBuf, &Path, &str, Option<&str>)> = vec![
        (
            "signed with a key the platform does not hold",
            approve(
                "hospital",
                &root.join("rogue/hospital.key"),
                &model,
                "rogue",
            ),
            model.as_path(),
            "unknown-key",
            None,
        ),
        (
            "another partner's key under the hospital's name",
            approve(
                "hospital",
                &key("insurance"),
                &model,
                "insurance-as-hospital",
            ),
            model.as_path(),
            "partner-mismatch",
            Some("insurance"),
        ),
        (
            "an approval of another version",
            approve("hospital", &key("hospital"), &next_version, "v3"),
            model.as_path(),
            "other-version",
            Some("hospital"),
        ),
        (
            "an approval of another text of the same version",
            approve("hospital", &key("hospital"), &changed, "changed"),
            model.as_path(),
            "changed-model",
            Some("hospital"),
        ),
        (
            "the model changed after it was approved",
            good.clone(),
            changed.as_path(),
            "changed-model",
            Some("hospital"),
        ),
        (
            "replayed from another model",
            approve("hospital", &key("hospital"), &copy, "copy"),
            model.as_path(),
            "other-model",
            Some("hospital"),
        ),
        (
            "altered after signing",
            tampered,
            model.as_path(),
            "bad-signature",
            Some("hospital"),
        ),
        (
            "by a partner whose data it does not read",
            approve("tax", &key("tax"), &model, "tax"),
            model.as_path(),
            "not-a-reader",
            Some("tax"),
        ),
        (
            "not an approval at all",
            junk,
            model.as_path(),
            "malformed",
            None,
        ),
    ];
    for (what, approval, file, code, signer) in &attacks {
        let out = register(&[approval], file);
        assert!(!out.status.success(), "{what} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refused"), "{what}: {stderr}");
        assert!(!installed.exists(), "{what}");
        let (events, size) = audit_since(&platform, seen);
        seen = size;
        match &events[..] {
            [
                AuditEvent::ModelApprovalRefused {
                    model,
                    partner,
                    reason,
                },
            ] => {
                assert_eq!(model.as_str(), "fugitive-medical", "{what}");
                assert_eq!(reason.as_str(), *code, "{what}");
                assert_eq!(partner.as_ref().map(|p| p.as_str()), *signer, "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }

    // Two of three readers: refused, naming the third; the two approvals are kept.
    let police = approve("police", &key("police"), &model, "police");
    let out = register(&[&good, &police], &model);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("insurance (no approval)"), "{stderr}");
    assert!(!installed.exists());
    let (events, size) = audit_since(&platform, seen);
    seen = size;
    assert!(
        matches!(&events[..], [
            AuditEvent::ModelApproved { .. },
            AuditEvent::ModelApproved { .. },
            AuditEvent::ModelRegistrationRefused { partners, .. },
        ] if partners.len() == 1 && partners[0].as_str() == "insurance"),
        "{events:?}"
    );
    // The third approval completes it.
    let insurance = approve("insurance", &key("insurance"), &model, "insurance");
    cli_ok(&format!(
        "model register --data-dir {} --approval {} {}",
        s(&platform),
        s(&insurance),
        s(&model)
    ));
    assert!(installed.exists());
    let (events, size) = audit_since(&platform, seen);
    seen = size;
    assert!(
        matches!(&events[..], [
            AuditEvent::ModelApproved { partner, .. },
            AuditEvent::ModelRegistered { .. },
        ] if partner.as_str() == "insurance"),
        "{events:?}"
    );
    let run = |seen: &mut u64| {
        let out = bw(&["run", "--data-dir", s(&platform), "--as-of", "2026-11-30"]);
        let (events, size) = audit_since(&platform, *seen);
        *seen = size;
        (out, events)
    };
    let (out, _) = run(&mut seen);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The installed file changed behind the platform's back: every approval is stale.
    std::fs::write(&installed, &changed_text).unwrap();
    let (out, events) = run(&mut seen);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hospital (its approval is of another version or text"),
        "{stderr}"
    );
    match &events[..] {
        [AuditEvent::ModelRunRefused { partners, .. }] => assert_eq!(partners.len(), 3),
        other => panic!("{other:?}"),
    }
    std::fs::write(&installed, &original).unwrap();
    let (out, _) = run(&mut seen);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The hospital's key is replaced: its approval no longer counts until it approves again
    // with the new key (written beside the model, where `model register` finds it).
    let fresh = root.join("fresh");
    cli_ok(&format!(
        "partner keygen --partner hospital --out {}",
        s(&fresh)
    ));
    cli_ok(&format!(
        "partner register --data-dir {} --partner hospital --key {} --datasets hospital.visits",
        s(&platform),
        s(&fresh.join("hospital.pub"))
    ));
    let (out, events) = run(&mut seen);
    assert!(!out.status.success());
    match &events[..] {
        [AuditEvent::ModelRunRefused { partners, .. }] => {
            assert_eq!(partners.len(), 1);
            assert_eq!(partners[0].as_str(), "hospital");
        }
        other => panic!("{other:?}"),
    }
    cli_ok(&format!(
        "model approve --partner hospital --partner-key {} {}",
        s(&fresh.join("hospital.key")),
        s(&model)
    ));
    assert!(
        root.join("specialist/fugitive-medical.approval.hospital.json")
            .exists()
    );
    ok(&["model", "register", "--data-dir", s(&platform), s(&model)]);
    let (out, _) = run(&mut seen);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&["audit", "verify", "--data-dir", s(&platform)]);
}

/// A partner's raw export as rows of column → value (the hospital exports GBK).
fn export(root: &Path, table: &str) -> Vec<BTreeMap<String, String>> {
    let partner = table.split('.').next().unwrap();
    let path = root
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
            headers
                .iter()
                .zip(r.unwrap().iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// One attack model and the truth it asks about, computed from the raw exports.
struct Attack {
    class: &'static str,
    id: String,
    text: String,
    /// What the model would reveal if its summary were exact: result rows (subjects) or
    /// alerts opened.
    truth: usize,
    /// The summary field that would carry it.
    field: &'static str,
}

fn attack_model(id: &str, query: &str, tier: &str) -> String {
    format!(
        r#"id = "{id}"
version = 1
title = {{ zh = "测试", en = "Is this one person there?" }}
category = "fugitive"
purpose = "fugitive-tracking"
subject = "person"
route = "station"
schedule = "1d"
evidence = ["visits"]
query = """
{query}
"""
tiers = [ {{ level = "blue", when = "{tier}" }} ]
"#
    )
}

/// Pairs of models a specialist would write to learn one fact about one person: the same
/// query about a person who is there and about one who is not. Three classes: quasi-
/// identifiers of the watch list isolate a wanted person; one visit's date and department
/// pick the subject through the join; a tier fires for one subject among many.
fn oracle_attacks(
    root: &Path,
    as_of: chrono::NaiveDate,
    pairs: usize,
    tag: &str,
) -> Vec<(Attack, Attack)> {
    let wanted = export(root, "police.wanted");
    let visits = export(root, "hospital.visits");
    let date = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let window = as_of - chrono::Days::new(90);
    let wanted_ids: BTreeSet<&str> = wanted.iter().map(|w| w["id_number"].as_str()).collect();
    let visited = |id: &str| {
        visits
            .iter()
            .any(|v| v["id_number"] == id && date(&v["visit_date"]) >= window)
    };
    let qi = |w: &BTreeMap<String, String>| {
        (
            w["station"].clone(),
            w["wanted_since"].clone(),
            w["offence"].clone(),
            w["danger_level"].clone(),
        )
    };
    let same_qi = |w: &BTreeMap<String, String>| wanted.iter().filter(|o| qi(o) == qi(w)).count();
    // Wanted persons seen in the last 90 days whom their quasi-identifiers single out.
    let targets: Vec<&BTreeMap<String, String>> = wanted
        .iter()
        .filter(|w| visited(&w["id_number"]) && same_qi(w) == 1)
        .take(pairs)
        .collect();
    assert_eq!(
        targets.len(),
        pairs,
        "the city has wanted persons seen lately"
    );
    let by_qi = |station: &str, since: &str, offence: &str, danger: &str| {
        wanted
            .iter()
            .filter(|w| {
                w["station"] == station
                    && w["wanted_since"] == since
                    && w["offence"] == offence
                    && w["danger_level"] == danger
            })
            .filter(|w| visited(&w["id_number"]))
            .count()
    };
    let mut out = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let (station, since, offence, danger) = qi(t);
        // Nobody on the list has these attributes: the same danger level plus 10.
        let nobody = (danger.parse::<i64>().unwrap() + 10).to_string();
        let qi_attack = |which: &str, danger: &str| {
            let id = format!("{tag}qi-{i}-{which}");
            let query = format!(
                "SELECT w.person AS subject, min(w.station) AS station, count(DISTINCT v.visit_id) AS visits
FROM police.wanted w JOIN hospital.visits v ON v.person = w.person
WHERE w.station = '{station}' AND w.wanted_since = DATE '{since}' AND w.offence = '{offence}'
  AND w.danger_level = {danger} AND v.visit_date >= current_date - INTERVAL '90' DAY
GROUP BY w.person"
            );
            Attack {
                class: "quasi-identifiers isolate one wanted person",
                text: attack_model(&id, &query, "visits >= 1"),
                id,
                truth: by_qi(&station, &since, &offence, danger),
                field: "subjects",
            }
        };
        out.push((qi_attack("there", &danger), qi_attack("absent", &nobody)));

        // One of the target's visits: its day and department pick the subject.
        let visit = visits
            .iter()
            .find(|v| v["id_number"] == t["id_number"] && date(&v["visit_date"]) >= window)
            .unwrap();
        let department = visit["department"].clone();
        let wanted_on = |day: &str| {
            visits
                .iter()
                .filter(|v| v["visit_date"] == day && v["department"] == department)
                .filter(|v| wanted_ids.contains(v["id_number"].as_str()))
                .map(|v| v["id_number"].clone())
                .collect::<BTreeSet<_>>()
                .len()
        };
        let quiet_day = (1..400)
            .map(|k| (as_of - chrono::Days::new(k)).to_string())
            .find(|d| wanted_on(d) == 0)
            .unwrap();
        let visit_attack = |which: &str, day: &str| {
            let id = format!("{tag}visit-{i}-{which}");
            let query = format!(
                "SELECT w.person AS subject, min(w.station) AS station, count(DISTINCT v.visit_id) AS visits
FROM police.wanted w JOIN hospital.visits v ON v.person = w.person
WHERE v.visit_date = DATE '{day}' AND v.department = '{department}'
GROUP BY w.person"
            );
            Attack {
                class: "one visit's day and department pick the subject",
                text: attack_model(&id, &query, "visits >= 1"),
                id,
                truth: wanted_on(day),
                field: "subjects",
            }
        };
        out.push((
            visit_attack("there", &visit["visit_date"]),
            visit_attack("absent", &quiet_day),
        ));

        // Every wanted person is a subject; the tier fires for the target alone.
        let tier_attack = |which: &str, since: &str| {
            let id = format!("{tag}tier-{i}-{which}");
            let query = "WITH w AS (SELECT person, min(station) AS station, min(wanted_since) AS since FROM police.wanted GROUP BY person),
v AS (SELECT person, count(DISTINCT visit_id) AS visits FROM hospital.visits
      WHERE visit_date >= current_date - INTERVAL '90' DAY GROUP BY person)
SELECT w.person AS subject, w.station, w.since, coalesce(v.visits, 0) AS visits
FROM w LEFT JOIN v ON v.person = w.person";
            let truth = wanted
                .iter()
                .filter(|w| w["wanted_since"] == since && w["station"] == station)
                .filter(|w| visited(&w["id_number"]))
                .count();
            Attack {
                class: "a tier fires for one subject among many",
                text: attack_model(
                    &id,
                    query,
                    &format!("since = DATE '{since}' AND station = '{station}' AND visits >= 1"),
                ),
                id,
                truth,
                field: "opened",
            }
        };
        out.push((
            tier_attack("there", &since),
            tier_attack("absent", "1999-01-01"),
        ));
    }
    for (there, absent) in &out {
        // Each pair is a real question: without the gate its answers would differ.
        assert!(
            there.truth >= 1 && absent.truth == 0,
            "{} / {}",
            there.id,
            absent.id
        );
        assert!((there.truth as u64) < K);
    }
    out
}

/// A run summary line with the model's id and the timing taken out.
fn masked(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    words[1..words.len() - 2].join(" ")
}

/// Model runs are no oracle (issue 15, class 8). A specialist writes models that each ask
/// one question about one person; each is refused at registration until the partners whose
/// data it reads approve it, and once approved (the partners deceived), the summaries of
/// its run read the same whether the person is there or not — on the command line and over
/// HTTP — while the alerts go to officers only, never back to the specialist.
#[test]
fn a_model_that_isolates_one_person_answers_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("d");
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    cli_ok(&format!(
        "demo --data-dir {} --persons 4000 --seed 11 --as-of 2026-11-30 --messy-rate 0 --tokens consortium",
        s(&root)
    ));
    let platform = root.join("platform");
    let key = |p: &str| root.join("partners").join(p).join(format!("keys/{p}.key"));
    let attacks_dir = root.join("specialist/attacks");
    std::fs::create_dir_all(&attacks_dir).unwrap();

    let pairs = oracle_attacks(&root, as_of, 2, "");
    let (mut tried, mut refused, mut leaked) = (0, 0, 0);
    let mut classes = BTreeSet::new();
    for (there, absent) in &pairs {
        let mut summaries = Vec::new();
        for a in [there, absent] {
            tried += 1;
            classes.insert(a.class);
            let file = attacks_dir.join(format!("{}.toml", a.id));
            std::fs::write(&file, &a.text).unwrap();
            // Unapproved: refused, naming the partners, nothing installed.
            let out = bw(&["model", "register", "--data-dir", s(&platform), s(&file)]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{} registered without approval",
                a.id
            );
            assert!(
                stderr.contains("hospital") && stderr.contains("police"),
                "{stderr}"
            );
            assert!(!platform.join(format!("models/{}.toml", a.id)).exists());
            refused += 1;
            // The partners approve (deceived), and the model runs.
            for p in ["hospital", "police"] {
                cli_ok(&format!(
                    "model approve --partner {p} --partner-key {} {}",
                    s(&key(p)),
                    s(&file)
                ));
            }
            ok(&["model", "register", "--data-dir", s(&platform), s(&file)]);
            let out = cli_ok(&format!(
                "run --data-dir {} --model {} --as-of 2026-11-30",
                s(&platform),
                a.id
            ));
            let line = out.lines().find(|l| l.contains(&a.id)).unwrap().to_owned();
            assert!(
                line.contains(&format!("fewer than {K} {}", a.field)),
                "{}: {line}",
                a.class
            );
            summaries.push(masked(&line));
            // The model did find the person (the officers' alerts show it): only the
            // summary is silent.
            let alerts: Vec<Value> = serde_json::from_str(&cli_ok(&format!(
                "alerts --data-dir {} --model {} --format json",
                s(&platform),
                a.id
            )))
            .unwrap();
            assert_eq!(alerts.len(), a.truth, "{}", a.id);
        }
        if summaries[0] != summaries[1] {
            leaked += 1;
        }
        assert_eq!(summaries[0], summaries[1], "{} / {}", there.id, absent.id);
    }
    println!(
        "model oracles: {tried} attack models in {} classes; {refused} refused unapproved; {leaked} of {} pairs told apart once approved",
        classes.len(),
        pairs.len()
    );
    assert_eq!(classes.len(), 3);
    assert_eq!(leaked, 0);

    // --- The same over HTTP: specialists register and run, partners approve their own.
    let db = server::Db::Sqlite;
    let specialist = server::add_user(&platform, &db, &["--name", "chen", "--role", "specialist"]);
    let hospital = server::add_user(&platform, &db, &["--name", "hospital", "--role", "partner"]);
    let police = server::add_user(&platform, &db, &["--name", "police", "--role", "partner"]);
    let insurance = server::add_user(
        &platform,
        &db,
        &["--name", "insurance", "--role", "partner"],
    );
    let officer = server::add_user(
        &platform,
        &db,
        &["--name", "li", "--role", "officer", "--station", "S03"],
    );
    let (there, absent) = oracle_attacks(&root, as_of, 1, "http-").remove(0);
    let mut approvals = BTreeMap::new();
    for a in [&there, &absent] {
        let file = attacks_dir.join(format!("{}.toml", a.id));
        std::fs::write(&file, &a.text).unwrap();
        for p in ["hospital", "police"] {
            let out = attacks_dir.join(format!("{}.{p}.json", a.id));
            cli_ok(&format!(
                "model approve --partner {p} --partner-key {} --out {} {}",
                s(&key(p)),
                s(&out),
                s(&file)
            ));
            let envelope: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
            approvals.insert((a.id.clone(), p), envelope);
        }
    }
    // A pseudonym and an alert for the specialist to try to read.
    let some_alert: Value = serde_json::from_str::<Vec<Value>>(&cli_ok(&format!(
        "alerts --data-dir {} --format json --limit 1",
        s(&platform)
    )))
    .unwrap()
    .remove(0);
    let seen = audit_since(&platform, 0).1;
    let srv = server::Server::start(&platform, &db);
    let addr = srv.addr.clone();
    let register = |a: &Attack| {
        server::request(
            &addr,
            "POST",
            "/v1/models/register",
            Some(&specialist),
            Some(("application/toml", a.text.as_bytes())),
        )
    };
    let approve_as = |token: &str, path_id: &str, a: &Attack, signer: &str| {
        server::post_json(
            &addr,
            &format!("/v1/models/{path_id}/approvals"),
            token,
            json!({"model": a.text, "approval": approvals[&(a.id.clone(), signer)]}),
        )
    };
    let mut runs = Vec::new();
    for a in [&there, &absent] {
        let reply = register(a);
        assert_eq!(reply.status, 422, "{}", reply.body);
        let problem = reply.json();
        assert_eq!(problem["type"], "/problems/model-unapproved");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("hospital") && detail.contains("police"),
            "{detail}"
        );
        // Only the owning partners, each for its own data, with its own key.
        for (who, token) in [
            ("specialist", &specialist),
            ("officer", &officer),
            ("insurance", &insurance),
        ] {
            let reply = approve_as(token, &a.id, a, "hospital");
            assert_eq!(reply.status, 403, "{who}: {}", reply.body);
        }
        let reply = approve_as(&police, &a.id, a, "hospital");
        assert_eq!(
            reply.status, 422,
            "the police posting the hospital's approval: {}",
            reply.body
        );
        assert_eq!(reply.json()["type"], "/problems/approval-refused");
        let reply = approve_as(&hospital, "fugitive-medical", a, "hospital");
        assert_eq!(reply.status, 422, "another model's path: {}", reply.body);
        for (token, signer) in [(&hospital, "hospital"), (&police, "police")] {
            let reply = approve_as(token, &a.id, a, signer);
            assert_eq!(reply.status, 201, "{}", reply.body);
            assert_eq!(reply.json()["partner"], signer);
        }
        let reply = register(a);
        assert_eq!(reply.status, 201, "{}", reply.body);
        let info = reply.json();
        assert_eq!(info["approvers"], json!(["hospital", "police"]));
        let reply = server::request(
            &addr,
            "POST",
            &format!("/v1/models/run?as_of=2026-11-30&model={}", a.id),
            Some(&specialist),
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        let mut summary = reply.json()[0].clone();
        assert_eq!(summary[a.field], format!("fewer than {K}"), "{summary}");
        summary["model"] = Value::Null;
        runs.push(summary);
    }
    assert_eq!(runs[0], runs[1], "the two runs tell the person apart");
    // The specialist who wrote the model never sees its alerts.
    let id = some_alert["id"].as_str().unwrap();
    let pseudonym = some_alert["subject"].as_str().unwrap();
    for path in ["/v1/alerts", "/v1/alerts/stream"] {
        let reply = server::get(&addr, path, &specialist);
        assert_eq!(reply.status, 403, "{path}: {}", reply.body);
        assert!(
            !reply.body.contains(pseudonym) && !reply.body.contains(id),
            "{path}"
        );
    }
    // Its alert answers as an alert that does not exist: nothing to enumerate.
    let reply = server::get(&addr, &format!("/v1/alerts/{id}"), &specialist);
    let unknown = server::get(&addr, "/v1/alerts/A-9999999", &specialist);
    assert_eq!(
        (reply.status, &reply.body),
        (unknown.status, &unknown.body),
        "a forbidden alert answers unlike an unknown one"
    );
    assert!(!reply.body.contains(pseudonym) && !reply.body.contains(id));
    // A subject card: the same answer as for a pseudonym nobody has.
    let card = server::get(&addr, &format!("/v1/subjects/{pseudonym}"), &specialist);
    let nobody = server::get(&addr, "/v1/subjects/P-00000-00000", &specialist);
    assert!(card.status == 403 || card.status == 404, "{}", card.body);
    assert_eq!((card.status, &card.body), (nobody.status, &nobody.body));
    let spec = server::request(&addr, "GET", "/v1/openapi.json", None, None).json();
    assert!(spec["paths"]["/v1/models/{id}/approvals"]["post"].is_object());
    assert!(srv.terminate().success());

    // Every approval over HTTP was audited, accepted or refused, under the caller's name.
    let (events, _) = audit_since(&platform, seen);
    let approved: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::ModelApproved { partner, .. } => Some(partner.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(approved, ["hospital", "police", "hospital", "police"]);
    let refused_over_http = events
        .iter()
        .filter(|e| matches!(e, AuditEvent::ModelApprovalRefused { reason, .. } if reason.as_str() == "unknown-key"))
        .count();
    assert_eq!(refused_over_http, 2);
    ok(&["audit", "verify", "--data-dir", s(&platform)]);
}
