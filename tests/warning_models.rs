//! Warning models end to end through the `blindwatch` binary: the demo's alerts equal the
//! synthetic city's planted ground truth; every shipped model passes its fixture cases;
//! `model check` refuses bad models with the file, the field and the reason; reruns update
//! alerts instead of duplicating them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::{bw, files_under, ok, repo, s};

use std::collections::BTreeSet;
use std::path::Path;

use blindwatch_alerts::Pseudonymizer;
use blindwatch_common::{IdentifierKind, normalise};
use blindwatch_crypto::blind::AuthorityKey;
use blindwatch_crypto::keys::{KeyFileKind, read_fixed};

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

    // The evidence carries the planted feature values.
    let json = ok(&["alerts", "--data-dir", s(&platform), "--format", "json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    for (key, features) in &expected_evidence {
        let alert = list
            .iter()
            .find(|a| a["model"] == key.0.as_str() && a["subject"] == key.1.as_str())
            .unwrap();
        for (name, value) in features.as_object().unwrap() {
            assert_eq!(
                &alert["evidence"][name], value,
                "{} {} evidence {name}",
                key.0, key.2
            );
        }
    }

    // A rerun as of the same day changes nothing; a month later, alerts follow the data.
    let again = ok(&["run", "--data-dir", s(&platform), "--as-of", "2026-11-30"]);
    for line in again.lines() {
        assert!(line.contains("     0 opened"), "{line}");
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
        &good.replace(
            "evidence = [\"days_since_seen\", \"last_seen\", \"visits_90d\", \"claims_90d\"]",
            "evidence = [\"danger\"]",
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
