//! The platform server end to end: `blindwatch serve` on loopback over the demo city,
//! driven with plain HTTP. Authentication (401), authorisation by station and role (403
//! with nothing of the resource in the body), the live stream (a new alert reaches its own
//! station's officer and not another's), every workflow transition, uploads and their
//! refusals, reveal, and a hard kill and restart that loses nothing acknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/server.rs"]
mod server;
mod support;
use server::{City, Db, Reply, Server, add_user, get, post_json, request};
use support::{ok, s};

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use blindwatch_alerts::Pseudonymizer;
use blindwatch_common::{IdentifierKind, normalise};
use blindwatch_crypto::keys::{KeyFileKind, read_fixed};
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey};
use serde_json::{Value, json};

/// The live stream: each `alert` event's data, as it arrives.
fn subscribe(addr: &str, token: &str) -> mpsc::Receiver<Value> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /v1/alerts/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.lines() {
            let Ok(line) = line else { return };
            let event = line
                .strip_prefix("data:")
                .and_then(|data| serde_json::from_str::<Value>(data.trim()).ok());
            if let Some(v) = event
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    rx
}

fn drain(rx: &mpsc::Receiver<Value>, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(v) = rx.recv_timeout(quiet) {
        out.push(v);
    }
    out
}

/// The demo city at 4,000 persons: a platform whose models are registered but have never run.
fn city() -> City {
    City::new(4000)
}

/// A manifest a partner's seal left in its outbox.
fn outbox_manifest(outbox: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .unwrap()
}

/// `POST /v1/contributions` with the manifest and package as multipart parts.
fn upload(addr: &str, token: &str, manifest: &[u8], package: &[u8]) -> Reply {
    let (content_type, body) = multipart(manifest, package);
    request(
        addr,
        "POST",
        "/v1/contributions",
        Some(token),
        Some((&content_type, &body)),
    )
}

fn multipart(manifest: &[u8], package: &[u8]) -> (String, Vec<u8>) {
    let boundary = "blindwatch-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, file, bytes) in [
        ("manifest", "m.json", manifest),
        ("package", "p.parquet", package),
    ] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn problem(reply: &Reply, status: u16) -> Value {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply.header("content-type").unwrap_or_default(),
        "application/problem+json",
        "{}",
        reply.body
    );
    let p = reply.json();
    assert_eq!(p["status"], status);
    assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    p
}

#[test]
fn the_platform_server_end_to_end_on_sqlite() {
    end_to_end(&Db::Sqlite);
}

#[test]
fn the_platform_server_end_to_end_on_postgres() {
    end_to_end(&Db::postgres());
}

fn end_to_end(db: &Db) {
    let city = city();
    let platform = city.platform();
    let li = add_user(
        &platform,
        db,
        &["--name", "li", "--role", "officer", "--station", "S03"],
    );
    let wang = add_user(
        &platform,
        db,
        &["--name", "wang", "--role", "officer", "--station", "S05"],
    );
    let duty = add_user(
        &platform,
        db,
        &[
            "--name",
            "zhao",
            "--role",
            "officer",
            "--station",
            "S01",
            "--duty",
        ],
    );
    let specialist = add_user(&platform, db, &["--name", "chen", "--role", "specialist"]);
    let hospital = add_user(&platform, db, &["--name", "hospital", "--role", "partner"]);
    assert!(li.starts_with("bw_") && li.len() > 40);
    // Only token hashes are stored.
    if let Db::Sqlite = db {
        let users_db = std::fs::read(platform.join("users.sqlite")).unwrap();
        assert!(!users_db.windows(li.len()).any(|w| w == li.as_bytes()));
    } else {
        assert!(!platform.join("users.sqlite").exists());
    }

    let server = Server::start(&platform, db);
    let addr = server.addr.clone();

    // --- Authentication: 401 without or with a wrong token, as problem details.
    problem(&request(&addr, "GET", "/v1/alerts", None, None), 401);
    problem(&get(&addr, "/v1/alerts", "bw_not-a-real-token"), 401);
    problem(&request(&addr, "GET", "/v1/alerts", Some(""), None), 401);
    // Public: health, metrics, the API description.
    assert_eq!(request(&addr, "GET", "/healthz", None, None).status, 200);
    let spec = request(&addr, "GET", "/v1/openapi.json", None, None).json();
    assert_eq!(spec["openapi"], "3.1.0");
    assert!(spec["paths"]["/v1/alerts/{id}/reveal"]["post"].is_object());

    // --- Live streams open before anything is raised.
    let li_stream = subscribe(&addr, &li);
    let wang_stream = subscribe(&addr, &wang);
    std::thread::sleep(Duration::from_millis(300));

    // --- Officers cannot run models; specialists can. The run raises the city's alerts.
    problem(
        &request(
            &addr,
            "POST",
            "/v1/models/run?as_of=2026-11-30",
            Some(&li),
            None,
        ),
        403,
    );
    let run = request(
        &addr,
        "POST",
        "/v1/models/run?as_of=2026-11-30",
        Some(&specialist),
        None,
    );
    assert_eq!(run.status, 200, "{}", run.body);
    // Counts of subjects reach the specialist only at k (10) or more.
    for r in run.json().as_array().unwrap() {
        for f in [
            "subjects",
            "opened",
            "raised",
            "lowered",
            "resolved",
            "unchanged",
        ] {
            let v = &r[f];
            assert!(
                v.as_u64().is_some_and(|n| n >= 10) || v == "fewer than 10",
                "{f}: {v}"
            );
        }
    }
    let mut all_args = vec!["alerts", "--data-dir", s(&platform), "--format", "json"];
    all_args.extend(db.args());
    let opened = serde_json::from_str::<Vec<Value>>(&ok(&all_args))
        .unwrap()
        .len();
    assert!(opened >= 48, "{opened}");

    // The stream delivers each station's new alerts to its officer, and nothing else.
    let li_events = drain(&li_stream, Duration::from_secs(3));
    let wang_events = drain(&wang_stream, Duration::from_secs(1));
    assert!(!li_events.is_empty() && !wang_events.is_empty());
    for e in &li_events {
        assert_eq!(e["alert"]["station"], "S03", "{e}");
        assert_eq!(e["change"], "opened");
    }
    for e in &wang_events {
        assert_eq!(e["alert"]["station"], "S05", "{e}");
    }

    // --- Listing is scoped: li sees exactly S03's alerts, the same ones the stream sent.
    let mut li_alerts = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(c) => format!("/v1/alerts?limit=7&after={c}"),
            None => "/v1/alerts?limit=7".to_owned(),
        };
        let page = get(&addr, &path, &li).json();
        li_alerts.extend(page["alerts"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(li_alerts.iter().all(|a| a["station"] == "S03"));
    let listed: BTreeSet<String> = li_alerts
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let streamed: BTreeSet<String> = li_events
        .iter()
        .map(|e| e["alert"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, streamed);
    let mut cli_args = vec![
        "alerts",
        "--data-dir",
        s(&platform),
        "--station",
        "S03",
        "--format",
        "json",
    ];
    cli_args.extend(db.args());
    let cli: Vec<Value> = serde_json::from_str(&ok(&cli_args)).unwrap();
    assert_eq!(cli.len(), listed.len());
    // Filters.
    let reds = get(&addr, "/v1/alerts?tier=red&limit=500", &li).json();
    assert!(
        reds["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["tier"] == "red")
    );
    problem(&get(&addr, "/v1/alerts?tier=purple", &li), 400);
    // A county duty officer sees their own station and the county's red alerts only.
    let duty_list = get(&addr, "/v1/alerts?limit=500", &duty).json();
    let duty_alerts = duty_list["alerts"].as_array().unwrap();
    assert!(duty_alerts.iter().any(|a| a["station"] != "S01"));
    for a in duty_alerts {
        let station = a["station"].as_str().unwrap();
        assert!(["S01", "S02", "S03", "S04"].contains(&station), "{a}");
        assert!(station == "S01" || a["tier"] == "red", "{a}");
    }
    // Specialists and partners see no alerts at all.
    problem(&get(&addr, "/v1/alerts", &specialist), 403);
    problem(&get(&addr, "/v1/alerts", &hospital), 403);

    // --- Another station's alert answers as an unknown one: ids cannot be enumerated.
    let target = li_alerts
        .iter()
        .find(|a| a["tier"] == "orange" || a["tier"] == "red")
        .unwrap()
        .clone();
    let id = target["id"].as_str().unwrap().to_owned();
    let pseudonym = target["subject"].as_str().unwrap().to_owned();
    for reply in [
        get(&addr, &format!("/v1/alerts/{id}"), &wang),
        post_json(
            &addr,
            &format!("/v1/alerts/{id}/acknowledge"),
            &wang,
            json!({}),
        ),
        get(&addr, &format!("/v1/subjects/{pseudonym}"), &wang),
    ] {
        assert_eq!(reply.status, 404, "{}", reply.body);
        for leak in [
            &pseudonym,
            &id,
            target["model"].as_str().unwrap(),
            "S03",
            "evidence",
        ] {
            assert!(!reply.body.contains(leak), "{leak} in {}", reply.body);
        }
    }
    let unknown = problem(&get(&addr, "/v1/alerts/A-9999999", &li), 404);
    let hidden = problem(&get(&addr, &format!("/v1/alerts/{id}"), &wang), 404);
    assert_eq!(unknown, hidden);
    let unknown = problem(
        &post_json(&addr, "/v1/alerts/A-9999999/acknowledge", &wang, json!({})),
        404,
    );
    let hidden = problem(
        &post_json(
            &addr,
            &format!("/v1/alerts/{id}/acknowledge"),
            &wang,
            json!({}),
        ),
        404,
    );
    assert_eq!(unknown, hidden);

    // --- The workflow, each transition visible at once and in the history.
    let detail = get(&addr, &format!("/v1/alerts/{id}"), &li).json();
    assert_eq!(detail["alert"]["state"], "open");
    let acked = post_json(
        &addr,
        &format!("/v1/alerts/{id}/acknowledge"),
        &li,
        json!({}),
    );
    assert_eq!(acked.status, 200, "{}", acked.body);
    assert_eq!(acked.json()["state"], "acknowledged");
    assert_eq!(acked.json()["acknowledged_by"], "officer:li@S03");
    problem(
        &post_json(
            &addr,
            &format!("/v1/alerts/{id}/acknowledge"),
            &li,
            json!({}),
        ),
        409,
    );
    let assigned = post_json(
        &addr,
        &format!("/v1/alerts/{id}/assign"),
        &li,
        json!({"assignee": "sun"}),
    );
    assert_eq!(
        assigned.json()["assignee"],
        "officer:sun@S03",
        "{}",
        assigned.body
    );
    let commented = post_json(
        &addr,
        &format!("/v1/alerts/{id}/comment"),
        &li,
        json!({"text": "visited, nobody home"}),
    );
    assert_eq!(commented.status, 200, "{}", commented.body);
    problem(
        &post_json(
            &addr,
            &format!("/v1/alerts/{id}/comment"),
            &li,
            json!({"text": "  "}),
        ),
        422,
    );
    // Officer actions stream too (to the station only), marked as not notifying.
    let action_events = drain(&li_stream, Duration::from_secs(1));
    assert_eq!(action_events.len(), 3, "{action_events:?}");
    assert!(action_events.iter().all(|e| e["notify"] == false));
    assert!(drain(&wang_stream, Duration::from_millis(300)).is_empty());

    // --- A body of the wrong shape is a problem document that names the field and
    // quotes nothing of the body.
    let missing = problem(
        &post_json(&addr, &format!("/v1/alerts/{id}/reveal"), &li, json!({})),
        422,
    );
    assert!(
        missing["detail"]
            .as_str()
            .unwrap()
            .contains("lacks the field `justification`"),
        "{missing}"
    );
    let wrong_type = problem(
        &post_json(
            &addr,
            &format!("/v1/alerts/{id}/reveal"),
            &li,
            json!({"justification": 320102198001011234_u64}),
        ),
        422,
    );
    assert!(
        !wrong_type.to_string().contains("320102198001011234"),
        "{wrong_type}"
    );
    let not_json = request(
        &addr,
        "POST",
        &format!("/v1/alerts/{id}/comment"),
        Some(&li),
        Some(("application/json", b"{\"text\": ")),
    );
    problem(&not_json, 400);

    // --- Reveal: justified, own station, orange or above; partner data never.
    problem(
        &post_json(
            &addr,
            &format!("/v1/alerts/{id}/reveal"),
            &li,
            json!({"justification": ""}),
        ),
        403,
    );
    problem(
        &post_json(
            &addr,
            &format!("/v1/alerts/{id}/reveal"),
            &wang,
            json!({"justification": "check"}),
        ),
        404,
    );
    let fugitive = li_alerts.iter().find(|a| {
        a["model"] == "fugitive-medical" && (a["tier"] == "red" || a["tier"] == "orange")
    });
    if let Some(f) = fugitive {
        let fid = f["id"].as_str().unwrap();
        let revealed = post_json(
            &addr,
            &format!("/v1/alerts/{fid}/reveal"),
            &li,
            json!({"justification": "arrest warrant execution, case desk approval"}),
        );
        assert_eq!(revealed.status, 200, "{}", revealed.body);
        let fields = revealed.json()["fields"].as_array().unwrap().clone();
        assert!(!fields.is_empty());
        assert!(
            fields
                .iter()
                .all(|f| f["table"].as_str().unwrap().starts_with("police."))
        );
        // The revealed ID number is the subject's: its token maps to the alert's pseudonym.
        let id_number = fields.iter().find(|f| f["column"] == "id_number").unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned();
        let linkage = LinkageKey::read(&city.partner("police").join("keys/linkage.key")).unwrap();
        let tokenizer = ConsortiumTokenizer::new(&linkage);
        let raw = normalise(IdentifierKind::Person, &id_number).unwrap();
        let token = tokenizer.tokenize_one(&raw);
        let secret = read_fixed::<32>(
            &platform.join("keys/deployment.key"),
            KeyFileKind::Deployment,
        )
        .unwrap();
        let (_, p) = Pseudonymizer::new(&secret).subject("person", token.as_bytes());
        assert_eq!(p.as_str(), f["subject"].as_str().unwrap());
    }
    let yellow = li_alerts
        .iter()
        .find(|a| a["tier"] == "yellow" || a["tier"] == "blue")
        .unwrap();
    problem(
        &post_json(
            &addr,
            &format!("/v1/alerts/{}/reveal", yellow["id"].as_str().unwrap()),
            &li,
            json!({"justification": "curious"}),
        ),
        403,
    );

    // --- Subject card: all of the subject's alerts the caller may read.
    let card = get(&addr, &format!("/v1/subjects/{pseudonym}"), &li).json();
    assert_eq!(card["pseudonym"], pseudonym.as_str());
    assert!(
        card["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );

    // --- Kill -9 and restart: everything acknowledged survives.
    server.kill();
    let server = Server::start(&platform, db);
    let addr = server.addr.clone();
    let after_restart = get(&addr, &format!("/v1/alerts/{id}"), &li).json();
    assert_eq!(after_restart["alert"]["state"], "acknowledged");
    assert_eq!(after_restart["alert"]["assignee"], "officer:sun@S03");
    let changes: Vec<&str> = after_restart["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["change"].as_str().unwrap())
        .collect();
    for c in ["opened", "acknowledged", "assigned", "commented"] {
        assert!(changes.contains(&c), "{changes:?}");
    }
    let closed = post_json(
        &addr,
        &format!("/v1/alerts/{id}/close"),
        &li,
        json!({"outcome": "false_positive", "note": "known to the station"}),
    );
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.json()["state"], "closed");
    assert_eq!(closed.json()["outcome"], "false_positive");
    problem(
        &post_json(
            &addr,
            &format!("/v1/alerts/{id}/comment"),
            &li,
            json!({"text": "late"}),
        ),
        409,
    );

    // Closed by an officer: a rerun that still finds the subject opens nothing new for it.
    let rerun = request(
        &addr,
        "POST",
        &format!(
            "/v1/models/run?as_of=2026-11-30&model={}",
            target["model"].as_str().unwrap()
        ),
        Some(&specialist),
        None,
    );
    assert_eq!(rerun.status, 200, "{}", rerun.body);
    let open_again = get(&addr, "/v1/alerts?status=open,acknowledged&limit=500", &li).json();
    assert!(
        !open_again["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["subject"] == pseudonym.as_str() && a["model"] == target["model"])
    );

    // --- The lifecycle driven by runs over HTTP (fugitive-medical: tiers by days since the
    // wanted person was last seen, keep_for = 1). A red alert (seen yesterday) falls to
    // orange a day later, rises back to red at once when the run is on the original day
    // again, and resolves half a year on, when nobody was seen within 90 days.
    let run_fugitive = |day: &str| -> Value {
        let reply = request(
            &addr,
            "POST",
            &format!("/v1/models/run?as_of={day}&model=fugitive-medical"),
            Some(&specialist),
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()[0].clone()
    };
    let fugitive_open = |who: &str| -> Vec<Value> {
        get(
            &addr,
            "/v1/alerts?model=fugitive-medical&status=open,acknowledged&limit=500",
            who,
        )
        .json()["alerts"]
            .as_array()
            .unwrap()
            .clone()
    };
    // The duty officer sees the county's red alerts; the test adds an officer at the
    // station of one of them.
    let red = fugitive_open(&duty)
        .into_iter()
        .find(|a| a["tier"] == "red")
        .expect("a red fugitive-medical alert in the duty officer's county");
    let red_id = red["id"].as_str().unwrap().to_owned();
    let local = add_user(
        &platform,
        db,
        &[
            "--name",
            "zhou",
            "--role",
            "officer",
            "--station",
            red["station"].as_str().unwrap(),
        ],
    );
    let local_stream = subscribe(&addr, &local);
    std::thread::sleep(Duration::from_millis(300));
    let tier_now = || get(&addr, &format!("/v1/alerts/{red_id}"), &local).json()["alert"].clone();

    // (The runs' own counts read "fewer than 10" here; the alert shows each change.)
    run_fugitive("2026-12-01");
    assert_eq!(tier_now()["tier"], "orange");
    run_fugitive("2026-11-30");
    assert_eq!(tier_now()["tier"], "red");
    run_fugitive("2027-06-01");
    assert_eq!(tier_now()["state"], "closed");
    for who in [&li, &wang, &duty, &local] {
        assert!(fugitive_open(who).is_empty());
    }
    let one = get(&addr, &format!("/v1/alerts/{red_id}"), &local).json();
    let run_changes: Vec<&str> = one["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["actor"].is_null())
        .map(|h| h["change"].as_str().unwrap())
        .collect();
    assert_eq!(
        run_changes,
        ["opened", "lowered", "raised", "resolved"],
        "{one}"
    );
    // The station's stream carried each change as it happened, in order.
    let streamed: Vec<String> = drain(&local_stream, Duration::from_secs(1))
        .iter()
        .filter(|e| e["alert"]["id"] == red_id.as_str())
        .map(|e| e["change"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, ["lowered", "raised", "resolved"]);

    // --- Uploads: only to one's own datasets, with a valid signature, never replayed.
    let outbox = city.partner("hospital").join("outbox");
    let manifest_path = outbox_manifest(&outbox);
    let manifest = std::fs::read(&manifest_path).unwrap();
    let package = std::fs::read(
        manifest_path
            .to_string_lossy()
            .replace(".manifest.json", ".parquet"),
    )
    .unwrap();
    // An officer may not contribute; a replayed (already ingested) package is refused.
    problem(&upload(&addr, &li, &manifest, &package), 403);
    let replay = problem(&upload(&addr, &hospital, &manifest, &package), 409);
    assert_eq!(replay["rule"], "stale-sequence");
    // Another partner's dataset: 403 before anything is read.
    let police_manifest =
        std::fs::read(outbox_manifest(&city.partner("police").join("outbox"))).unwrap();
    problem(
        &upload(&addr, &hospital, &police_manifest, b"not parquet"),
        403,
    );
    // A tampered package (a new sequence, signed, one byte of the file changed after): 422,
    // nothing stored.
    let key = forge::partner_key(&city.partner("hospital").join("keys/hospital.key"));
    let fresh = forge::Package::read(&manifest_path).edit(|m| {
        m.sequence = 2;
        m.file_name = "hospital.visits.00000002.parquet".into();
    });
    let mut tampered = fresh.parquet.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x40;
    let refused = problem(
        &upload(&addr, &hospital, &fresh.signed_manifest(&key), &tampered),
        422,
    );
    assert_eq!(refused["rule"], "bad-file-hash");
    // Not multipart at all.
    problem(
        &request(
            &addr,
            "POST",
            "/v1/contributions",
            Some(&hospital),
            Some(("application/json", b"{}")),
        ),
        400,
    );

    // --- Gated query over the API.
    let q = post_json(
        &addr,
        "/v1/query",
        &specialist,
        json!({"purpose": "analysis", "sql": "SELECT station, count(*) AS incidents FROM police.incidents GROUP BY station"}),
    );
    assert_eq!(q.status, 200, "{}", q.body);
    // At most the eight stations, each with noise; how many were withheld is not said.
    let answer = q.json();
    assert!(answer["rows"].as_array().unwrap().len() <= 8, "{}", q.body);
    assert!(answer["protection"]["noise"].as_bool().unwrap());
    assert!(answer.get("groups_suppressed").is_none());
    let refused = problem(
        &post_json(
            &addr,
            "/v1/query",
            &specialist,
            json!({"purpose": "analysis", "sql": "SELECT * FROM police.incidents"}),
        ),
        422,
    );
    assert!(refused["rule"].is_string());
    problem(
        &post_json(
            &addr,
            "/v1/query",
            &li,
            json!({"purpose": "analysis", "sql": "SELECT count(*) FROM police.incidents"}),
        ),
        403,
    );

    // --- Metrics count requests by route template, never by concrete path.
    let metrics = request(&addr, "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains("blindwatch_http_requests_total{route=\"/v1/alerts/{id}\""),
        "{metrics}"
    );
    assert!(!metrics.contains(&pseudonym));

    // --- Graceful shutdown ends promptly with a stream open.
    let _open = subscribe(&addr, &li);
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.terminate().success());
    ok(&["audit", "verify", "--data-dir", s(&platform)]);
}

// ---------------------------------------------------------------------------------------
// In process (the router driven with `oneshot`): reveal reads only the subject's lineage,
// and every reveal, silence, registration, query and upload attempt is audited.

#[path = "support/forge.rs"]
mod forge;

use std::path::{Path, PathBuf};

use blindwatch_audit::{AuditEvent, AuditRecord};
use blindwatch_server::{AppState, ServerConfig};

const CALLS_CONTRACT: &str = r#"
partner = "police"
dataset = "calls"
mode = "append"
privacy_unit = { columns = ["caller"], max_rows = 10, max_groups = 2 }
columns = [
  { name = "call_id", type = "utf8", role = "attribute", uses = ["aggregate"] },
  { name = "called_at", type = "timestamp", role = "attribute", uses = ["filter", "aggregate", "reveal"] },
  { name = "station", type = "utf8", role = "attribute", uses = ["filter", "group", "aggregate", "reveal"] },
  { name = "caller_id_number", type = "utf8", role = "identifier", kind = "person", token = "caller", reveal = true, uses = ["join", "aggregate"] },
  { name = "caller_name", type = "utf8", role = "identifier", kind = "name", token = "caller_name_token", reveal = true },
  { name = "caller_phone", type = "utf8", role = "identifier", kind = "phone", token = "caller_phone_t", reveal = true, uses = ["join", "aggregate"] },
  { name = "incident_address", type = "utf8", role = "identifier", kind = "address", token = "incident_address_t", reveal = true, uses = ["join", "aggregate"] },
]
"#;

const CONTACTS_CONTRACT: &str = r#"
partner = "police"
dataset = "contacts"
mode = "replace"
privacy_unit = { columns = ["person"], max_rows = 1 }
columns = [
  { name = "id_number", type = "utf8", role = "identifier", kind = "person", token = "person", reveal = true, uses = ["join"] },
  { name = "name", type = "utf8", role = "identifier", kind = "name", token = "name_token", reveal = true },
  { name = "contact_phone", type = "utf8", role = "identifier", kind = "phone", token = "contact_phone_t", reveal = true, uses = ["join"] },
  { name = "home", type = "utf8", role = "identifier", kind = "address", token = "home_t", reveal = true, uses = ["join"] },
]
"#;

/// A model over police.calls whose subject is `column` (of identifier kind `kind`).
fn calls_model(id: &str, column: &str, kind: &str) -> String {
    format!(
        r#"id = "{id}"
version = 1
title = {{ zh = "测试", en = "Test {id}" }}
category = "other"
purpose = "analysis"
subject = "{kind}"
route = "station"
schedule = "1h"
keep_for = 1
evidence = ["calls"]
query = """
SELECT {column} AS subject, min(station) AS station, count(*) AS calls
FROM police.calls GROUP BY {column}
"""
tiers = [{{ level = "red", when = "calls >= 3" }}]
"#
    )
}

fn id_with_check(first17: &str) -> String {
    let check = blindwatch_common::idcard::check_digit(first17.as_bytes()).unwrap() as char;
    format!("{first17}{check}")
}

/// People of the fixture: (ID number, name, phone). The registry's patient has the repeat
/// caller's phone as their guardian's; the contact has the caller's phone and the incident
/// address as their own.
struct People {
    patient: (String, &'static str),
    caller: (String, &'static str, &'static str),
    contact: (String, &'static str),
    repeat_phone: &'static str,
    address: &'static str,
}

fn people() -> People {
    People {
        patient: (id_with_check("31010119800101123"), "甲测试患者"),
        caller: (
            id_with_check("31010119850202234"),
            "乙测试来电",
            "13912340002",
        ),
        contact: (id_with_check("31010119900303345"), "丙测试联系人"),
        repeat_phone: "13912340001",
        address: "江州市测试路1号",
    }
}

/// A platform of the police's own data only: incidents with a repeat caller whose phone is a
/// registered patient's guardian's, and the calls/contacts tables above. The models are
/// registered and have run as of 2026-11-30.
fn lineage_platform(root: &Path) -> PathBuf {
    let p = people();
    let platform = root.join("platform");
    let keys = root.join("keys");
    let exports = root.join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    ok(&["keys", "init", "--data-dir", s(&platform)]);
    let contracts = platform.join("policies/datasets");
    std::fs::write(contracts.join("police.calls.toml"), CALLS_CONTRACT).unwrap();
    std::fs::write(contracts.join("police.contacts.toml"), CONTACTS_CONTRACT).unwrap();
    ok(&[
        "partner",
        "keygen",
        "--partner",
        "police",
        "--out",
        s(&keys),
    ]);
    ok(&["keys", "linkage", "--out", s(&keys.join("linkage.key"))]);
    ok(&[
        "partner",
        "register",
        "--data-dir",
        s(&platform),
        "--partner",
        "police",
        "--key",
        s(&keys.join("police.pub")),
        "--datasets",
        "police.incidents,police.mental_health_registry,police.calls,police.contacts",
    ]);
    let mut incidents = String::from(
        "incident_id,reported_at,station,category,caller_id_number,caller_name,caller_phone,party_id_number,address,suspect_phone,description\n",
    );
    for i in 0..12 {
        incidents.push_str(&format!(
            "JQ-{i},2026-11-{:02} 10:00:00,S03,dispute,,,{},,{},,\n",
            10 + i,
            p.repeat_phone,
            p.address
        ));
    }
    let registry = format!(
        "id_number,name,station,risk_level,registered_on,guardian_phone\n{},{},S03,3,2020-01-01,{}\n",
        p.patient.0, p.patient.1, p.repeat_phone
    );
    let mut calls = String::from(
        "call_id,called_at,station,caller_id_number,caller_name,caller_phone,incident_address\n",
    );
    for i in 0..4 {
        calls.push_str(&format!(
            "C-{i},2026-11-2{i} 09:00:00,S03,{},{},{},{}\n",
            p.caller.0, p.caller.1, p.caller.2, p.address
        ));
    }
    let contacts = format!(
        "id_number,name,contact_phone,home\n{},{},{},{}\n",
        p.contact.0, p.contact.1, p.caller.2, p.address
    );
    for (table, csv) in [
        ("police.incidents", incidents),
        ("police.mental_health_registry", registry),
        ("police.calls", calls),
        ("police.contacts", contacts),
    ] {
        let input = exports.join(format!("{table}.csv"));
        std::fs::write(&input, csv).unwrap();
        let outbox = root.join("outbox").join(table);
        ok(&[
            "partner",
            "seal",
            "--contract",
            s(&contracts.join(format!("{table}.toml"))),
            "--input",
            s(&input),
            "--partner",
            "police",
            "--partner-key",
            s(&keys.join("police.key")),
            "--platform-key",
            s(&platform.join("keys/platform.pub")),
            "--tokens",
            "consortium",
            "--linkage-key",
            s(&keys.join("linkage.key")),
            "--seq",
            "1",
            "--out",
            s(&outbox),
        ]);
        ok(&[
            "ingest",
            "--data-dir",
            s(&platform),
            s(&outbox_manifest(&outbox)),
        ]);
    }
    let models = root.join("models");
    std::fs::create_dir_all(&models).unwrap();
    // Copied, so that the police approvals written beside each file stay in the scratch dir.
    let shipped = models.join("repeat-caller.toml");
    std::fs::copy(support::repo().join("models/repeat-caller.toml"), &shipped).unwrap();
    let mut files = vec![shipped];
    for (id, column, kind) in [
        ("test-caller-phone", "caller_phone_t", "phone"),
        ("test-incident-address", "incident_address_t", "address"),
        ("test-caller", "caller", "person"),
    ] {
        let f = models.join(format!("{id}.toml"));
        std::fs::write(&f, calls_model(id, column, kind)).unwrap();
        files.push(f);
    }
    for f in &files {
        ok(&[
            "model",
            "approve",
            "--partner",
            "police",
            "--partner-key",
            s(&keys.join("police.key")),
            s(f),
        ]);
    }
    let mut args = vec!["model", "register", "--data-dir", s(&platform)];
    args.extend(files.iter().map(|f| s(f)));
    ok(&args);
    ok(&["run", "--data-dir", s(&platform), "--as-of", "2026-11-30"]);
    platform
}

struct App {
    state: AppState,
    router: axum::Router,
}

impl App {
    async fn open(platform: &Path) -> App {
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        std::mem::forget(_stop);
        let mut config = ServerConfig::new(platform.to_owned(), "127.0.0.1:0".into());
        // One user drives many requests back to back; the rate limit has its own test.
        config.limits.burst = 1_000_000;
        let state = AppState::open(&config, shutdown).await.unwrap();
        let router = blindwatch_server::app(state.clone(), 8 << 20);
        App { state, router }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(axum::body::Body::from(body))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(
            "POST",
            path,
            token,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send("GET", path, token, "application/json", Vec::new())
            .await
    }

    async fn audit_len(&self) -> u64 {
        self.state.audit.lock().await.size()
    }

    async fn audit_since(&self, from: u64) -> Vec<AuditRecord> {
        let log = self.state.audit.lock().await;
        (from..log.size()).map(|i| log.record(i).unwrap()).collect()
    }

    /// Sends a request and returns its status, body and the audit records it appended.
    async fn audited(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, Value, Vec<AuditRecord>) {
        let from = self.audit_len().await;
        let (status, value) = if method == "GET" {
            self.get(path, token).await
        } else {
            self.post(path, token, body).await
        };
        (status, value, self.audit_since(from).await)
    }
}

/// A reveal's refusal: the status, the rule in the problem, and exactly the two audit
/// records (the request, then the refusal with that rule).
fn assert_reveal_refused(
    (status, body, records): &(u16, Value, Vec<AuditRecord>),
    expected_status: u16,
    rule: &str,
) {
    assert_eq!(*status, expected_status, "{body}");
    assert_eq!(body["rule"], rule, "{body}");
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(matches!(
        records[0].event,
        AuditEvent::RevealRequested { .. }
    ));
    match &records[1].event {
        AuditEvent::RevealRefused { reason, .. } => assert_eq!(reason.as_str(), rule),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Identifier-like text in many disguises: the subjects' own numbers in other scripts,
/// Chinese numerals and with separators and invisible characters between the digits.
fn identifier_disguises(numbers: &[&str]) -> Vec<String> {
    let zeros = [
        '0',
        '\u{FF10}',
        '\u{0660}',
        '\u{0966}',
        '\u{1D7CE}',
        '\u{0E50}',
    ];
    let chinese = ['〇', '一', '二', '三', '四', '五', '六', '七', '八', '九'];
    let separators = ["", " ", "-", ".", "\u{200B}", "\u{2060}", " - "];
    let mut out = Vec::new();
    for number in numbers {
        let digits: Vec<u8> = number.bytes().filter(u8::is_ascii_digit).collect();
        for (i, zero) in zeros.iter().enumerate() {
            let sep = separators[i % separators.len()];
            let text: Vec<String> = digits
                .iter()
                .map(|d| {
                    char::from_u32(*zero as u32 + u32::from(d - b'0'))
                        .unwrap()
                        .to_string()
                })
                .collect();
            out.push(format!("核实 {} 的情况", text.join(sep)));
        }
        let spelled: String = digits
            .iter()
            .map(|d| chinese[usize::from(d - b'0')])
            .collect();
        out.push(format!("联系 {spelled}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn reveal_names_only_the_subjects_own_lineage_and_every_attempt_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = lineage_platform(tmp.path());
    let db = Db::Sqlite;
    let li = add_user(
        &platform,
        &db,
        &["--name", "li", "--role", "officer", "--station", "S03"],
    );
    let wang = add_user(
        &platform,
        &db,
        &["--name", "wang", "--role", "officer", "--station", "S05"],
    );
    let chen = add_user(&platform, &db, &["--name", "chen", "--role", "specialist"]);
    let police = add_user(&platform, &db, &["--name", "police", "--role", "partner"]);
    let app = App::open(&platform).await;
    let p = people();
    let secrets = [
        p.patient.0.as_str(),
        p.patient.1,
        p.contact.0.as_str(),
        p.contact.1,
    ];

    let (status, list) = app.get("/v1/alerts?limit=500", &li).await;
    assert_eq!(status, 200, "{list}");
    let alerts = list["alerts"].as_array().unwrap().clone();
    let alert_of = |model: &str| -> String {
        let found: Vec<&Value> = alerts.iter().filter(|a| a["model"] == model).collect();
        assert_eq!(found.len(), 1, "{model}: {alerts:?}");
        assert_eq!(found[0]["tier"], "red");
        found[0]["id"].as_str().unwrap().to_owned()
    };
    let reveal = |id: &str| format!("/v1/alerts/{id}/reveal");
    let why = json!({"justification": "follow-up visit approved by the duty chief"});

    // The guardian-phone case: the repeat caller's phone is a registered patient's
    // guardian's. The alert's subject comes from the incidents, where nothing is
    // revealable: refused, and the patient is named nowhere.
    let repeat = alert_of("repeat-caller");
    let refused = app
        .audited("POST", &reveal(&repeat), &li, why.clone())
        .await;
    assert_reveal_refused(&refused, 422, "no-revealable-lineage");
    for secret in secrets {
        assert!(!refused.1.to_string().contains(secret), "{}", refused.1);
    }

    // A phone that is a caller's in one table and a contact's in another: only the caller
    // column's own value.
    let fields = |body: &Value| -> Vec<(String, String, String)> {
        body["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["table"].as_str().unwrap().to_owned(),
                    f["column"].as_str().unwrap().to_owned(),
                    f["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let field = |t: &str, c: &str, v: &str| (t.to_owned(), c.to_owned(), v.to_owned());
    for (model, expected) in [
        (
            "test-caller-phone",
            vec![field("police.calls", "caller_phone", p.caller.2)],
        ),
        // An address that is a home and an incident location: only the incident's.
        (
            "test-incident-address",
            vec![field("police.calls", "incident_address", p.address)],
        ),
        // The caller, whom each row of calls is about: their ID number and name only.
        (
            "test-caller",
            vec![
                field("police.calls", "caller_id_number", &p.caller.0),
                field("police.calls", "caller_name", p.caller.1),
            ],
        ),
    ] {
        let id = alert_of(model);
        let (status, body, records) = app.audited("POST", &reveal(&id), &li, why.clone()).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(fields(&body), expected, "{model}");
        for secret in secrets {
            assert!(!body.to_string().contains(secret), "{model}: {body}");
        }
        let kinds: Vec<&str> = records
            .iter()
            .map(|r| match &r.event {
                AuditEvent::RevealRequested { .. } => "requested",
                AuditEvent::RevealGranted { .. } => "granted",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["requested", "granted"], "{model}");
    }

    // Every refused reveal is audited with the rule that refused it.
    let phone_alert = alert_of("test-caller-phone");
    assert_reveal_refused(
        &app.audited(
            "POST",
            &reveal(&phone_alert),
            &li,
            json!({"justification": " \n "}),
        )
        .await,
        403,
        "justification-required",
    );
    assert_reveal_refused(
        &app.audited(
            "POST",
            &reveal(&phone_alert),
            &li,
            json!({"justification": "很".repeat(501)}),
        )
        .await,
        422,
        "text-too-long",
    );
    for text in identifier_disguises(&[&p.caller.0, p.caller.2, p.repeat_phone]) {
        let reply = app
            .audited(
                "POST",
                &reveal(&phone_alert),
                &li,
                json!({ "justification": text }),
            )
            .await;
        assert_reveal_refused(&reply, 422, "text-identifier");
        assert!(!reply.1.to_string().contains(&text));
    }
    // Another station's alert answers exactly as an unknown one; the log says which.
    let (status, hidden, records) = app
        .audited("POST", &reveal(&phone_alert), &wang, why.clone())
        .await;
    assert_eq!(status, 404, "{hidden}");
    assert_eq!(
        hidden,
        app.post(&reveal("A-9999999"), &wang, why.clone()).await.1
    );
    assert!(
        matches!(
            &records[..],
            [_, AuditRecord { event: AuditEvent::RevealRefused { reason, .. }, .. }] if reason.as_str() == "access-policy"
        ),
        "{records:?}"
    );
    assert_reveal_refused(
        &app.audited("POST", &reveal("A-9999999"), &li, why.clone())
            .await,
        404,
        "unknown-alert",
    );
    assert_reveal_refused(
        &app.audited(
            "POST",
            &reveal(&phone_alert),
            &li,
            json!({"justification": 7}),
        )
        .await,
        422,
        "bad-body",
    );
    // An id the log cannot even hold: refused and logged without it.
    let (status, _, records) = app
        .audited("POST", &reveal("%E5%BC%A0%E4%B8%89"), &li, why.clone())
        .await;
    assert_eq!(status, 404);
    assert!(matches!(
        &records[..],
        [AuditRecord { event: AuditEvent::RequestRefused { rule, .. }, .. }] if rule.as_str() == "unknown-alert"
    ));
    // A closed alert.
    let (status, body) = app
        .post(
            &format!("/v1/alerts/{phone_alert}/close"),
            &li,
            json!({"outcome": "handled"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_reveal_refused(
        &app.audited("POST", &reveal(&phone_alert), &li, why.clone())
            .await,
        409,
        "alert-closed",
    );
    // Comments refuse the same disguises (and repeat none of them).
    let caller_alert = alert_of("test-caller");
    for text in identifier_disguises(&[p.caller.2]) {
        let (status, body) = app
            .post(
                &format!("/v1/alerts/{caller_alert}/comment"),
                &li,
                json!({ "text": text }),
            )
            .await;
        assert_eq!(status, 422, "{text}: {body}");
        assert!(!body.to_string().contains(&text));
    }

    // --- Silences: only known matchers, no identifiers, every attempt audited.
    let silence = |model: Value, category: Value, reason: &str| json!({"model": model, "category": category, "tier": "red", "ends_at": "2030-01-01T00:00:00Z", "reason": reason});
    let silence_refused = |reply: &(u16, Value, Vec<AuditRecord>), status: u16, rule: &str| {
        assert_eq!(reply.0, status, "{}", reply.1);
        assert_eq!(reply.1["rule"], rule, "{}", reply.1);
        assert!(
            matches!(&reply.2[..], [AuditRecord { event: AuditEvent::SilenceRefused { rule: r, .. }, .. }] if r.as_str() == rule),
            "{:?}",
            reply.2
        );
    };
    for (model, category, rule) in [
        (json!("no-such-model"), Value::Null, "unknown-model"),
        (json!(p.caller.0), Value::Null, "bad-matcher"),
        (json!("m".repeat(1 << 20)), Value::Null, "bad-matcher"),
        (json!("Repeat Caller"), Value::Null, "bad-matcher"),
        (Value::Null, json!("not-a-category"), "unknown-category"),
        (Value::Null, json!(p.repeat_phone), "bad-matcher"),
        (Value::Null, json!(""), "bad-matcher"),
    ] {
        let reply = app
            .audited(
                "POST",
                "/v1/silences",
                &li,
                silence(model, category, "drill tonight"),
            )
            .await;
        silence_refused(&reply, 422, rule);
    }
    for text in identifier_disguises(&[p.repeat_phone]) {
        let reply = app
            .audited(
                "POST",
                "/v1/silences",
                &li,
                silence(json!("repeat-caller"), Value::Null, &text),
            )
            .await;
        silence_refused(&reply, 422, "text-identifier");
    }
    let (status, body, records) = app
        .audited(
            "POST",
            "/v1/silences",
            &li,
            silence(json!("repeat-caller"), json!("dispute"), "drill tonight"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(matches!(
        &records[..],
        [AuditRecord {
            event: AuditEvent::SilenceCreated { .. },
            ..
        }]
    ));
    let sil = body["id"].as_str().unwrap().to_owned();
    let expire = format!("/v1/silences/{sil}/expire");
    silence_refused(
        &app.audited("POST", &expire, &wang, json!({})).await,
        404,
        "unknown-silence",
    );
    let (status, body, records) = app.audited("POST", &expire, &li, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(matches!(
        &records[..],
        [AuditRecord {
            event: AuditEvent::SilenceExpired { .. },
            ..
        }]
    ));
    silence_refused(
        &app.audited("POST", &expire, &li, json!({})).await,
        409,
        "silence-ended",
    );
    silence_refused(
        &app.audited("POST", "/v1/silences/SIL-0009999/expire", &li, json!({}))
            .await,
        404,
        "unknown-silence",
    );

    // --- Model registration and queries refused before the gate: audited.
    let from = app.audit_len().await;
    let (status, _) = app
        .send(
            "POST",
            "/v1/models/register",
            &chen,
            "text/plain",
            calls_model("test-broken", "no_such_column", "phone").into_bytes(),
        )
        .await;
    assert_eq!(status, 422);
    let records = app.audit_since(from).await;
    assert!(
        matches!(
            &records[..],
            [AuditRecord { event: AuditEvent::ModelRegistrationAttemptRefused { model: Some(m), .. }, .. }] if m.as_str() == "test-broken"
        ),
        "{records:?}"
    );
    let (status, _, records) = app
        .audited(
            "POST",
            "/v1/query",
            &chen,
            json!({"sql": "SELECT 1", "purpose": "Not A Purpose"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(matches!(
        &records[..],
        [AuditRecord { event: AuditEvent::RequestRefused { rule, .. }, .. }] if rule.as_str() == "bad-purpose"
    ));

    // --- A plaintext package uploaded with the partner's own key: refused, audited, and
    // the data directory unchanged but for the audit log.
    let sealed = outbox_manifest(&tmp.path().join("outbox/police.calls"));
    let package = forge::Package::read(&sealed);
    let rows = forge::decrypt(
        &platform,
        &PathBuf::from(s(&sealed).replace(".manifest.json", ".parquet")),
    );
    let key = forge::partner_key(&tmp.path().join("keys/police.key"));
    let before = files_and_bytes(&platform);
    let from = app.audit_len().await;
    for layout in [
        forge::Layout::Plain,
        forge::Layout::Unencrypted("caller_phone"),
    ] {
        let forged = package
            .clone()
            .with_file(forge::write(
                &rows,
                &layout,
                &platform.join("keys/platform.pub"),
            ))
            .edit(|m| {
                m.sequence = 2;
                m.file_name = "police.calls.00000002.parquet".into();
            });
        let (content_type, body) = multipart(&forged.signed_manifest(&key), &forged.parquet);
        let (status, problem) = app
            .send("POST", "/v1/contributions", &police, &content_type, body)
            .await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["rule"], "not-sealed");
    }
    assert_eq!(files_and_bytes(&platform), before);
    let records = app.audit_since(from).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| matches!(
        &r.event,
        AuditEvent::ContributionRefused { reason, .. } if reason.as_str() == "not-sealed"
    )));
    // Refused before ingest sees it: another partner's dataset, a file past its declared
    // size (the upload stops there). Audited, nothing stored.
    let next = package.clone().edit(|m| {
        m.sequence = 2;
        m.file_name = "police.calls.00000002.parquet".into();
    });
    let mut longer = next.parquet.clone();
    longer.extend([0u8; 4096]);
    for (manifest, file, status, rule) in [
        (
            next.clone()
                .edit(|m| m.partner = "hospital".into())
                .signed_manifest(&key),
            next.parquet.clone(),
            403,
            "access-policy",
        ),
        (next.signed_manifest(&key), longer, 422, "bad-file-size"),
    ] {
        let from = app.audit_len().await;
        let (content_type, body) = multipart(&manifest, &file);
        let (got, problem) = app
            .send("POST", "/v1/contributions", &police, &content_type, body)
            .await;
        assert_eq!(got, status, "{problem}");
        let records = app.audit_since(from).await;
        assert!(
            matches!(&records[..], [AuditRecord { event: AuditEvent::RequestRefused { rule: r, .. }, .. }] if r.as_str() == rule),
            "{records:?}"
        );
    }
    assert_eq!(files_and_bytes(&platform), before);
}

/// Every file under the platform directory but the audit log, with its bytes.
fn files_and_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    support::files_under(dir, &|p: &Path| p.starts_with(dir.join("audit")))
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect()
}

/// Opens the live stream and signals when its response ends (the last chunk), whether or not
/// the connection stays open.
fn stream_end(addr: &str, token: &str) -> mpsc::Receiver<()> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /v1/alerts/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(l) if l.trim() == "0" => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    rx
}

/// `users revoke`, run by another process while the user's live stream is open, ends that
/// stream within a second or two; other users' streams stay open.
#[test]
fn revoking_a_user_ends_their_open_stream() {
    let city = City::new(2000);
    let platform = city.platform();
    let db = Db::Sqlite;
    let li = add_user(
        &platform,
        &db,
        &["--name", "li", "--role", "officer", "--station", "S03"],
    );
    let wang = add_user(
        &platform,
        &db,
        &["--name", "wang", "--role", "officer", "--station", "S03"],
    );
    let server = Server::start(&platform, &db);
    let revoked = stream_end(&server.addr, &li);
    let kept = stream_end(&server.addr, &wang);
    std::thread::sleep(Duration::from_millis(300));
    ok(&[
        "users",
        "revoke",
        "--data-dir",
        s(&platform),
        "--role",
        "officer",
        "--name",
        "li",
    ]);
    assert!(
        revoked.recv_timeout(Duration::from_secs(3)).is_ok(),
        "the revoked user's stream is still open after 3 s"
    );
    assert!(
        kept.recv_timeout(Duration::from_millis(1500)).is_err(),
        "another user's stream ended too"
    );
    // The revoked token no longer opens anything.
    problem(&get(&server.addr, "/v1/alerts/stream", &li), 401);
}

// --- Limits: each refusal is a problem document, never a crash. ---

/// The router over `platform` with `limits` and uploads up to `max_upload` bytes; dropping
/// the router and the state releases the audit log for the next one.
async fn limited_app(
    platform: &Path,
    limits: blindwatch_server::Limits,
    max_upload: usize,
) -> (AppState, axum::Router) {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    std::mem::forget(stop);
    let mut config = ServerConfig::new(platform.to_owned(), "127.0.0.1:0".into());
    config.limits = limits;
    let state = AppState::open(&config, shutdown).await.unwrap();
    let router = blindwatch_server::app(state.clone(), max_upload);
    (state, router)
}

/// Sends `request` to `router`; the status, headers and body as JSON (Null if not JSON).
async fn call(
    router: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (u16, axum::http::HeaderMap, Value) {
    use tower::ServiceExt;
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn api_request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: axum::body::Body,
) -> axum::http::Request<axum::body::Body> {
    let mut r = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(body).unwrap()
}

fn assert_problem(status: u16, headers: &axum::http::HeaderMap, body: &Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json",
        "{body}"
    );
    assert_eq!(body["status"], expected, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_limit_answers_with_its_problem_and_the_server_keeps_serving() {
    let city = City::new(1000);
    let platform = city.platform();
    let db = Db::Sqlite;
    let li = add_user(
        &platform,
        &db,
        &["--name", "li", "--role", "officer", "--station", "S03"],
    );
    let chen = add_user(&platform, &db, &["--name", "chen", "--role", "specialist"]);
    let hospital = add_user(&platform, &db, &["--name", "hospital", "--role", "partner"]);
    let question = json!({"purpose": "analysis", "sql": "SELECT station, count(*) AS incidents FROM police.incidents GROUP BY station"});
    let manifest =
        std::fs::read(outbox_manifest(&city.partner("hospital").join("outbox"))).unwrap();
    let max_upload = manifest.len() + 2048;

    {
        // A query time limit no query meets, a small burst and a rate that does not refill
        // within the test.
        let (state, app) = limited_app(
            &platform,
            blindwatch_server::Limits {
                requests_per_second: 0.0001,
                burst: 4,
                query_timeout: Duration::ZERO,
                ..blindwatch_server::Limits::default()
            },
            max_upload,
        )
        .await;

        // The query is cancelled at its time limit: 503, audited with its rule.
        let before = state.audit.lock().await.size();
        let (status, headers, body) = call(
            &app,
            api_request(
                "POST",
                "/v1/query",
                Some(&chen),
                question.to_string().into(),
            ),
        )
        .await;
        assert_problem(status, &headers, &body, 503);
        assert_eq!(body["rule"], "query-timeout", "{body}");
        let log = state.audit.lock().await;
        let refused: Vec<_> = (before..log.size())
            .map(|i| log.record(i).unwrap().event)
            .filter(|e| matches!(e, AuditEvent::QueryRefused { rule, .. } if rule.as_str() == "query-timeout"))
            .collect();
        assert_eq!(refused.len(), 1);
        drop(log);

        // An upload larger than the limit is refused while it streams in: the package part
        // never ends, so a server that buffered it first would never answer.
        let boundary = "blindwatch-limit-boundary";
        let mut head =
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n")
                .into_bytes();
        head.extend_from_slice(&manifest);
        head.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"package\"\r\n\r\n")
                .as_bytes(),
        );
        let endless = futures::stream::iter(
            std::iter::once(head)
                .chain(std::iter::repeat(vec![0u8; 4096]))
                .map(Ok::<_, std::io::Error>),
        );
        let upload = axum::http::Request::builder()
            .method("POST")
            .uri("/v1/contributions")
            .header("authorization", format!("Bearer {hospital}"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(axum::body::Body::from_stream(endless))
            .unwrap();
        let (status, headers, body) = call(&app, upload).await;
        assert_problem(status, &headers, &body, 413);
        // Nothing of it stays in the staging area.
        assert_eq!(
            std::fs::read_dir(platform.join("tmp")).unwrap().count(),
            0,
            "staging left behind"
        );

        // A JSON body over its limit: 413 as a problem.
        let huge = json!({"purpose": "analysis", "sql": "x".repeat(3 << 20)});
        let (status, headers, body) = call(
            &app,
            api_request("POST", "/v1/query", Some(&chen), huge.to_string().into()),
        )
        .await;
        assert_problem(status, &headers, &body, 413);

        // The per-user rate: past the burst, 429 with Retry-After; another user is not
        // slowed by it.
        let mut answers = Vec::new();
        for _ in 0..6 {
            answers.push(
                call(
                    &app,
                    api_request("GET", "/v1/me", Some(&li), axum::body::Body::empty()),
                )
                .await,
            );
        }
        assert!(answers[..4].iter().all(|(s, _, _)| *s == 200));
        for (status, headers, body) in &answers[4..] {
            assert_problem(*status, headers, body, 429);
            let wait: u64 = headers
                .get("retry-after")
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(wait >= 1);
            assert_eq!(body["retry_after"], wait);
        }
        let (status, _, _) = call(
            &app,
            api_request("GET", "/v1/me", Some(&hospital), axum::body::Body::empty()),
        )
        .await;
        assert_eq!(status, 200);
        // Unauthenticated callers get no bucket (nothing to key it on) and stay 401.
        let (status, headers, body) = call(
            &app,
            api_request("GET", "/v1/me", None, axum::body::Body::empty()),
        )
        .await;
        assert_problem(status, &headers, &body, 401);
        drop(app);
        drop(state);
    }

    // A memory pool too small for the query's aggregation: refused as an execution
    // refusal, and the next question (the same, with room) is answered.
    let (_state, app) = limited_app(
        &platform,
        blindwatch_server::Limits {
            query_memory_bytes: 1,
            ..blindwatch_server::Limits::default()
        },
        max_upload,
    )
    .await;
    let (status, headers, body) = call(
        &app,
        api_request(
            "POST",
            "/v1/query",
            Some(&chen),
            question.to_string().into(),
        ),
    )
    .await;
    assert_problem(status, &headers, &body, 422);
    assert_eq!(body["rule"], "execution", "{body}");
    let (status, _, _) = call(
        &app,
        api_request("GET", "/healthz", None, axum::body::Body::empty()),
    )
    .await;
    assert_eq!(status, 200);
}

/// A platform with nothing but its keys and policies (enough to serve), in `tmp`.
fn bare_platform(tmp: &Path) -> PathBuf {
    let platform = tmp.join("platform");
    ok(&["keys", "init", "--data-dir", s(&platform)]);
    platform
}

/// Reads until the server closes the connection (or the generous test deadline passes).
fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(_) => return None,
        }
    }
}

#[test]
fn serve_cuts_off_slow_clients_and_caps_connections_without_losing_a_request() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = bare_platform(tmp.path());
    let chen = add_user(
        &platform,
        &Db::Sqlite,
        &["--name", "chen", "--role", "specialist"],
    );
    let hospital = add_user(
        &platform,
        &Db::Sqlite,
        &["--name", "hospital", "--role", "partner"],
    );
    let server = Server::start_with(
        &platform,
        &Db::Sqlite,
        &[
            "--max-connections",
            "3",
            "--header-timeout-secs",
            "2",
            "--body-timeout-secs",
            "1",
        ],
    );
    let addr = server.addr.clone();

    // Half a request head: the connection is closed, not held.
    let mut half_head = TcpStream::connect(&addr).unwrap();
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(read_until_closed(&mut half_head).is_some(), "held open");

    // Half a body: 408 as a problem document, and the connection closed after it.
    let mut half_body = TcpStream::connect(&addr).unwrap();
    write!(
        half_body,
        "POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {chen}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"sql\""
    )
    .unwrap();
    let got = String::from_utf8(read_until_closed(&mut half_body).expect("answered")).unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("application/problem+json"), "{got}");
    assert!(got.contains("/problems/body-timeout"), "{got}");
    // The same for an upload that stops halfway through its multipart body.
    let mut half_upload = TcpStream::connect(&addr).unwrap();
    write!(
        half_upload,
        "POST /v1/contributions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hospital}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n{{\"payload"
    )
    .unwrap();
    let got = String::from_utf8(read_until_closed(&mut half_upload).expect("answered")).unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("/problems/body-timeout"), "{got}");

    // At the cap, three silent clients hold every slot; a fourth waits in the backlog and
    // is served once the header deadline frees a slot — nothing is lost.
    let mut holders: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut fourth = TcpStream::connect(&addr).unwrap();
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = String::from_utf8(read_until_closed(&mut fourth).expect("served")).unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let mut closed = 0;
    for h in &mut holders {
        h.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        if matches!(std::io::Read::read(h, &mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 1,
        "the fourth client was served while every slot was held"
    );
    assert_eq!(request(&addr, "GET", "/healthz", None, None).status, 200);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate from it, and a client
/// certificate from another CA, as PEM files in `dir`.
fn test_pki(dir: &Path) {
    let ca = |name: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    };
    let (ca_cert, ca_key) = ca("test ca");
    let (other_cert, other_key) = ca("other ca");
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("ca.pem", &ca_cert.pem());
    for (name, san, issuer, issuer_key) in [
        ("server", "127.0.0.1", &ca_cert, &ca_key),
        ("client", "hospital", &ca_cert, &ca_key),
        ("stranger", "hospital", &other_cert, &other_key),
    ] {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![san.to_owned()])
            .unwrap()
            .signed_by(&key, issuer, issuer_key)
            .unwrap();
        write(&format!("{name}.pem"), &cert.pem());
        write(&format!("{name}.key"), &key.serialize_pem());
    }
}

/// An HTTPS client trusting `ca`, presenting `client` (certificate, key) if given.
fn tls_agent(ca: &Path, client: Option<(&Path, &Path)>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let roots = vec![Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap()];
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(blindwatch_net::crypto_provider())
        .root_certs(RootCerts::Specific(std::sync::Arc::new(roots)));
    if let Some((cert, key)) = client {
        let chain = vec![Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap()];
        let key = PrivateKey::from_pem(&std::fs::read(key).unwrap()).unwrap();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .build()
        .into()
}

#[test]
fn serve_speaks_tls_requires_partner_certificates_when_asked_and_plain_http_only_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = bare_platform(tmp.path());
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    test_pki(&pki);
    let p = |name: &str| pki.join(name);
    let hospital = add_user(
        &platform,
        &Db::Sqlite,
        &["--name", "hospital", "--role", "partner"],
    );

    let (child, url) = server::spawn_serve(
        &platform,
        &Db::Sqlite,
        &[
            "--tls-cert",
            s(&p("server.pem")),
            "--tls-key",
            s(&p("server.key")),
            "--client-ca",
            s(&p("ca.pem")),
        ],
    );
    let addr = url.strip_prefix("https://").expect(&url).to_owned();
    let server = Server::from_child(child, addr.clone());
    let partner = tls_agent(&p("ca.pem"), Some((&p("client.pem"), &p("client.key"))));
    let started = std::time::Instant::now();
    let mut health = loop {
        match partner.get(format!("{url}/healthz")).call() {
            Ok(r) => break r,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(30), "{e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(health.status(), 200);
    assert_eq!(health.body_mut().read_to_string().unwrap(), "ok\n");
    let mut me = partner
        .get(format!("{url}/v1/me"))
        .header("authorization", &format!("Bearer {hospital}"))
        .call()
        .unwrap();
    assert_eq!(me.status(), 200);
    let me: Value = serde_json::from_str(&me.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(me["role"], "partner");
    // Without a client certificate, with one of another CA, or trusting another CA: no
    // connection at all.
    for (ca, client) in [
        (p("ca.pem"), None),
        (p("ca.pem"), Some((p("stranger.pem"), p("stranger.key")))),
        (p("stranger.pem"), Some((p("client.pem"), p("client.key")))),
    ] {
        let agent = tls_agent(
            &ca,
            client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        );
        assert!(agent.get(format!("{url}/healthz")).call().is_err());
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = read_until_closed(&mut plain).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&got).contains("200"), "{got:?}");
    drop(server);

    // Plain HTTP on an address that is not loopback: refused with what to do instead.
    let out = support::bw(&[
        "serve",
        "--data-dir",
        s(&platform),
        "--listen",
        "0.0.0.0:0",
        "--no-scheduler",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain HTTP")
            && err.contains("--insecure-plain-http")
            && err.contains("--tls-cert"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploads_work_runs_without_the_audit_log_so_officers_are_not_held_up() {
    let city = City::new(1000);
    let platform = city.platform();
    let db = Db::Sqlite;
    let li = add_user(
        &platform,
        &db,
        &["--name", "li", "--role", "officer", "--station", "S03"],
    );
    let hospital = add_user(&platform, &db, &["--name", "hospital", "--role", "partner"]);
    // A fresh package: the hospital's next sequence, signed by its key.
    let key = forge::partner_key(&city.partner("hospital").join("keys/hospital.key"));
    let manifest_path = outbox_manifest(&city.partner("hospital").join("outbox"));
    let next = forge::Package::read(&manifest_path).edit(|m| {
        m.sequence = 2;
        m.file_name = "hospital.visits.00000002.parquet".into();
    });
    let (content_type, body) = multipart(&next.signed_manifest(&key), &next.parquet);
    let (state, app) = limited_app(&platform, blindwatch_server::Limits::default(), 64 << 20).await;
    let table = "hospital.visits";
    assert_eq!(state.catalog.last_sequence(table).await.unwrap(), Some(1));

    // While something else holds the audit log, the upload still does all of its work —
    // receive, copy, hash, check every page, commit — and then waits only to append.
    let held = state.audit.lock().await;
    let upload = tokio::spawn({
        let app = app.clone();
        let hospital = hospital.clone();
        async move {
            let request = axum::http::Request::builder()
                .method("POST")
                .uri("/v1/contributions")
                .header("authorization", format!("Bearer {hospital}"))
                .header("content-type", content_type)
                .body(axum::body::Body::from(body))
                .unwrap();
            call(&app, request).await
        }
    });
    let started = std::time::Instant::now();
    while state.catalog.last_sequence(table).await.unwrap() != Some(2) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the upload's work waited for the audit log"
        );
        assert!(!upload.is_finished(), "{:?}", upload.await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !upload.is_finished(),
        "answered before its outcome was audited"
    );
    drop(held);

    // An officer's audited action and the upload's answer both go through.
    let silence = json!({"ends_at": "2099-01-01T00:00:00Z", "reason": "drill", "tier": "blue"});
    let (status, _, body) = call(
        &app,
        api_request(
            "POST",
            "/v1/silences",
            Some(&li),
            silence.to_string().into(),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = upload.await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sequence"], 2);
    let log = state.audit.lock().await;
    let events: Vec<AuditEvent> = (0..log.size())
        .map(|i| log.record(i).unwrap().event)
        .collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AuditEvent::ContributionAccepted { sequence: 2, .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AuditEvent::SilenceCreated { .. }))
    );
}

/// The routes the router is built with, read from its source: `(path)` of every `.route(`.
fn routes_in_source() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(support::repo().join("crates/server/src/routes/mod.rs")).unwrap();
    text.split(".route(")
        .skip(1)
        .map(|rest| rest.split('"').nth(1).unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_refuses_a_caller_no_policy_permits() {
    let city = City::new(1000);
    let platform = city.platform();
    let db = Db::Sqlite;
    let li = add_user(
        &platform,
        &db,
        &["--name", "li", "--role", "officer", "--station", "S03"],
    );
    let chen = add_user(&platform, &db, &["--name", "chen", "--role", "specialist"]);
    let hospital = add_user(&platform, &db, &["--name", "hospital", "--role", "partner"]);
    let auditor = add_user(&platform, &db, &["--name", "audra", "--role", "auditor"]);
    let (_state, app) = limited_app(
        &platform,
        blindwatch_server::Limits {
            burst: 100_000,
            ..blindwatch_server::Limits::default()
        },
        64 << 20,
    )
    .await;
    let send =
        |method: &str, path: &str, token: Option<&str>, content_type: &str, body: Vec<u8>| {
            let mut r = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", content_type);
            if let Some(t) = token {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            let request = r.body(axum::body::Body::from(body)).unwrap();
            let app = app.clone();
            async move { call(&app, request).await }
        };

    // Real resources, so that a refusal comes from the policies and not from a missing id.
    let (status, _, run) = send(
        "POST",
        "/v1/models/run?as_of=2026-11-30",
        Some(&chen),
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    let (_, _, page) = send("GET", "/v1/alerts?limit=1", Some(&li), "", Vec::new()).await;
    let alert = &page["alerts"][0];
    let alert_id = alert["id"].as_str().expect("an alert at S03").to_owned();
    let pseudonym = alert["subject"].as_str().unwrap().to_owned();
    let (status, _, silence) = send(
        "POST",
        "/v1/silences",
        Some(&li),
        "application/json",
        json!({"ends_at": "2099-01-01T00:00:00Z", "reason": "drill"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{silence}");
    let silence_id = silence["id"].as_str().unwrap().to_owned();
    let model = std::fs::read_to_string(support::repo().join("models/care-lapse.toml")).unwrap();
    let manifest_path = outbox_manifest(&city.partner("hospital").join("outbox"));
    let (upload_type, upload_body) = multipart(
        &std::fs::read(&manifest_path).unwrap(),
        &std::fs::read(
            manifest_path
                .to_string_lossy()
                .replace(".manifest.json", ".parquet"),
        )
        .unwrap(),
    );
    let json_body = |v: Value| ("application/json".to_owned(), v.to_string().into_bytes());

    // (method, documented path) → a well-formed request, and the users no policy lets do
    // it (besides the auditor, whom no server route permits but `/v1/me`).
    type Case = (String, Vec<u8>, Vec<(&'static str, String)>);
    let mut table: std::collections::BTreeMap<(&str, &str), Case> = Default::default();
    let who = |names: &[&'static str]| -> Vec<(&'static str, String)> {
        names
            .iter()
            .map(|n| {
                (
                    *n,
                    match *n {
                        "officer" => li.clone(),
                        "specialist" => chen.clone(),
                        "partner" => hospital.clone(),
                        _ => unreachable!(),
                    },
                )
            })
            .collect()
    };
    let officers_only = who(&["specialist", "partner"]);
    let specialists_only = who(&["officer", "partner"]);
    let (ct, body) = json_body(json!({}));
    for path in [
        "/v1/alerts",
        "/v1/alerts/stream",
        "/v1/alerts/{id}",
        "/v1/subjects/{pseudonym}",
        "/v1/silences",
    ] {
        table.insert(
            ("get", path),
            (ct.clone(), Vec::new(), officers_only.clone()),
        );
    }
    table.insert(
        ("post", "/v1/alerts/{id}/acknowledge"),
        (ct.clone(), body.clone(), officers_only.clone()),
    );
    let (ct, body) = json_body(json!({"assignee": "li"}));
    table.insert(
        ("post", "/v1/alerts/{id}/assign"),
        (ct, body, officers_only.clone()),
    );
    let (ct, body) = json_body(json!({"text": "seen"}));
    table.insert(
        ("post", "/v1/alerts/{id}/comment"),
        (ct, body, officers_only.clone()),
    );
    let (ct, body) = json_body(json!({"outcome": "handled"}));
    table.insert(
        ("post", "/v1/alerts/{id}/close"),
        (ct, body, officers_only.clone()),
    );
    let (ct, body) = json_body(json!({"justification": "follow-up visit approved"}));
    table.insert(
        ("post", "/v1/alerts/{id}/reveal"),
        (ct, body, officers_only.clone()),
    );
    let (ct, body) = json_body(json!({"ends_at": "2099-01-01T00:00:00Z", "reason": "drill"}));
    table.insert(
        ("post", "/v1/silences"),
        (ct.clone(), body, officers_only.clone()),
    );
    table.insert(
        ("post", "/v1/silences/{id}/expire"),
        (ct, Vec::new(), officers_only.clone()),
    );
    table.insert(
        ("get", "/v1/models"),
        ("".into(), Vec::new(), specialists_only.clone()),
    );
    for path in ["/v1/models/check", "/v1/models/register"] {
        table.insert(
            ("post", path),
            (
                "application/toml".into(),
                model.clone().into_bytes(),
                specialists_only.clone(),
            ),
        );
    }
    table.insert(
        ("post", "/v1/models/run"),
        ("".into(), Vec::new(), specialists_only.clone()),
    );
    let (ct, body) = json_body(
        json!({"model": model, "approval": {"payloadType": "x", "payload": "", "signatures": []}}),
    );
    table.insert(
        ("post", "/v1/models/{id}/approvals"),
        (ct, body, who(&["officer", "specialist"])),
    );
    let (ct, body) = json_body(
        json!({"sql": "SELECT station, count(*) AS n FROM police.incidents GROUP BY station", "purpose": "analysis"}),
    );
    table.insert(
        ("post", "/v1/query"),
        (ct, body, who(&["officer", "partner"])),
    );
    table.insert(
        ("post", "/v1/contributions"),
        (upload_type, upload_body, who(&["officer", "specialist"])),
    );
    // Every user may ask who they are (the one authenticated route without a policy).
    table.insert(("get", "/v1/me"), ("".into(), Vec::new(), Vec::new()));

    let (status, _, spec) = send("GET", "/v1/openapi.json", None, "", Vec::new()).await;
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().unwrap();
    // Every route the router is built with is in the document.
    for route in routes_in_source() {
        assert!(
            paths.contains_key(&route),
            "{route} is served but not in /v1/openapi.json"
        );
    }
    let concrete = |path: &str| {
        path.replace("{pseudonym}", &pseudonym).replace(
            "{id}",
            if path.starts_with("/v1/silences") {
                &silence_id
            } else if path.starts_with("/v1/models") {
                "care-lapse"
            } else {
                &alert_id
            },
        )
    };
    let mut checked = 0;
    for (path, item) in paths {
        let item = item.as_object().unwrap();
        for method in ["get", "post", "put", "delete", "patch"] {
            let Some(op) = item.get(method) else {
                // A method the document does not give: 405, as a problem, with Allow.
                let (status, headers, body) = send(
                    &method.to_uppercase(),
                    &concrete(path),
                    None,
                    "",
                    Vec::new(),
                )
                .await;
                assert_problem(status, &headers, &body, 405);
                assert!(headers.get("allow").is_some(), "{method} {path}");
                continue;
            };
            let public = op["security"].as_array().is_some_and(Vec::is_empty);
            if public {
                let (status, _, body) =
                    send(&method.to_uppercase(), path, None, "", Vec::new()).await;
                assert_eq!(status, 200, "{method} {path}: {body}");
                continue;
            }
            let (content_type, body, refused) = table
                .get(&(method, path.as_str()))
                .unwrap_or_else(|| panic!("{method} {path} is not in this test's table"))
                .clone();
            let uri = concrete(path);
            let m = method.to_uppercase();
            let (status, headers, problem) =
                send(&m, &uri, None, &content_type, body.clone()).await;
            assert_problem(status, &headers, &problem, 401);
            let (status, headers, problem) = send(
                &m,
                &uri,
                Some("bw_not-a-real-token"),
                &content_type,
                body.clone(),
            )
            .await;
            assert_problem(status, &headers, &problem, 401);
            let mut callers = refused.clone();
            if path != "/v1/me" {
                callers.push(("auditor", auditor.clone()));
            }
            for (role, token) in callers {
                let (status, headers, problem) =
                    send(&m, &uri, Some(&token), &content_type, body.clone()).await;
                assert!(
                    status == 403 || status == 404,
                    "{method} {path} as {role}: {status} {problem}"
                );
                assert_problem(status, &headers, &problem, status);
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "{checked}");
}
