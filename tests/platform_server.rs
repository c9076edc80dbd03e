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

    // --- Another station's alert: 403, and the body says nothing about it.
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
        assert!(reply.status == 403 || reply.status == 404, "{}", reply.body);
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
    problem(&get(&addr, "/v1/alerts/A-9999999", &li), 404);

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
        403,
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
    // A tampered package: 422, nothing stored.
    let mut tampered = package.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x40;
    let refused = problem(&upload(&addr, &hospital, &manifest, &tampered), 422);
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
