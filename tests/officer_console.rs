//! The officer console in headless Chromium, driven over WebDriver: sign in with a token,
//! the board's tier counts against the API, a new alert arriving live, acknowledge, comment
//! and close through the page (checked through the API), refusals shown with the server's
//! problem text, the zh/en toggle, a phone-sized viewport, and nothing of another station
//! in the page. Leaves screenshots under `$CARGO_TARGET_DIR/officer-console/`.
//!
//! Needs `chromium` and `chromium-driver` (Debian); fails, never skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/server.rs"]
mod server;
mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use server::{City, Db, Server, add_user, all_alerts, get, post_json, request};
use webdriver::{Driver, Session};

const WAIT: Duration = Duration::from_secs(30);
const ACTIVE: &str = "status=open,acknowledged";

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| support::repo().join("target"), PathBuf::from);
    let dir = target.join("officer-console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn save_screenshot(session: &Session<'_>, name: &str) -> PathBuf {
    let png = session.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let path = artifacts().join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

fn tier_counts(alerts: &[Value]) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = ["red", "orange", "yellow", "blue"]
        .iter()
        .map(|t| ((*t).to_owned(), 0))
        .collect();
    for a in alerts {
        *counts.get_mut(a["tier"].as_str().unwrap()).unwrap() += 1;
    }
    counts
}

fn page_counts(session: &Session<'_>) -> BTreeMap<String, u64> {
    let v = session.js(
        "return Object.fromEntries([...document.querySelectorAll('[data-tier-count]')]
            .map(e => [e.dataset.tierCount, Number(e.textContent)]))",
        &[],
    );
    serde_json::from_value(v).unwrap()
}

fn page_rows(session: &Session<'_>) -> BTreeSet<String> {
    let v = session.js(
        "return [...document.querySelectorAll('#rows tr[data-alert]')].map(r => r.dataset.alert)",
        &[],
    );
    serde_json::from_value(v).unwrap()
}

fn ids(alerts: &[Value]) -> BTreeSet<String> {
    alerts
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs models as the specialist (all of them when `model` is None).
fn run_models(addr: &str, specialist: &str, model: Option<&str>) -> Value {
    let path = match model {
        Some(m) => format!("/v1/models/run?as_of=2026-11-30&model={m}"),
        None => "/v1/models/run?as_of=2026-11-30".to_owned(),
    };
    let run = request(addr, "POST", &path, Some(specialist), None);
    assert_eq!(run.status, 200, "{}", run.body);
    run.json()
}

/// Nothing of `other` (another station's alerts) is anywhere in the page. A pseudonym the
/// caller also sees on an alert of their own is theirs to see, so only the rest count.
fn assert_nothing_of(session: &Session<'_>, other: &[Value], own: &[Value], when: &str) {
    let html = session
        .js("return document.documentElement.outerHTML", &[])
        .as_str()
        .unwrap()
        .to_owned();
    let own_subjects: BTreeSet<&str> = own.iter().map(|a| a["subject"].as_str().unwrap()).collect();
    for a in other {
        let id = a["id"].as_str().unwrap();
        assert!(
            !html.contains(id),
            "{when}: another station's alert {id} in the page"
        );
        let subject = a["subject"].as_str().unwrap();
        if !own_subjects.contains(subject) {
            assert!(
                !html.contains(subject),
                "{when}: another station's subject {subject} in the page"
            );
        }
    }
}

fn click(session: &Session<'_>, css: &str) {
    session.click_css(css, WAIT);
}

fn type_into(session: &Session<'_>, css: &str, text: &str) {
    session.type_css(css, text, WAIT);
}

fn notice_text(session: &Session<'_>, id: &str) -> String {
    session.text_css(&format!("[data-notice='{id}'] .problem"), WAIT)
}

#[test]
fn the_officer_console_in_a_browser() {
    let started = Instant::now();
    let city = City::new(4000);
    let platform = city.platform();
    let li = add_user(
        &platform,
        &Db::Sqlite,
        &["--name", "li", "--role", "officer", "--station", "S03"],
    );
    let wang = add_user(
        &platform,
        &Db::Sqlite,
        &["--name", "wang", "--role", "officer", "--station", "S05"],
    );
    let specialist = add_user(
        &platform,
        &Db::Sqlite,
        &["--name", "chen", "--role", "specialist"],
    );
    let server = Server::start(&platform, &Db::Sqlite);
    let addr = server.addr.clone();
    let url = format!("http://{addr}/");

    // --- The console's files: public, strict headers, no inline code.
    let page = request(&addr, "GET", "/", None, None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let js = request(&addr, "GET", "/console.js", None, None);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let etag = js.header("etag").unwrap().to_owned();
    let head = format!(
        "GET /console.js HTTP/1.1\r\nHost: {addr}\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
    );
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut stream, head.as_bytes()).unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut stream, &mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 304"), "{raw}");
    let css = request(&addr, "GET", "/console.css", None, None);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));

    // --- Who am I.
    let me = get(&addr, "/v1/me", &li).json();
    assert_eq!(me["role"], "officer");
    assert_eq!(me["station"], "S03");
    assert_eq!(me["county"], "C1");
    assert_eq!(me["principal"], "officer:li@S03");
    assert!(me["models"].as_array().unwrap().len() >= 6, "{me}");
    assert_eq!(request(&addr, "GET", "/v1/me", None, None).status, 401);
    assert_eq!(
        get(&addr, "/v1/me", &specialist).json()["role"],
        "specialist"
    );
    let spec = request(&addr, "GET", "/v1/openapi.json", None, None).json();
    assert!(spec["paths"]["/v1/me"]["get"].is_object());

    // --- One model has run before the officer opens the page.
    run_models(&addr, &specialist, Some("escalating-dispute"));
    let before = all_alerts(&addr, &li, ACTIVE);
    assert!(!before.is_empty(), "the first run gave S03 nothing to show");

    let driver = Driver::start();
    let session = driver.session(1280, 900);
    println!("browser up after {:?}", started.elapsed());

    // --- Sign in with the token.
    session.goto(&url);
    let token_input = session.wait_for("#token", WAIT);
    assert!(session.displayed(&token_input));
    // A wrong token is refused with a message, and nothing loads.
    type_into(&session, "#token", "bw_not-a-real-token");
    click(&session, "#signin-submit");
    session.wait_until(
        "the refusal of a wrong token",
        "const e = document.querySelector('#signin-error'); return !e.hidden && e.textContent.length > 0",
        &[],
        WAIT,
    );
    type_into(&session, "#token", &li);
    click(&session, "#signin-submit");
    session.wait_until(
        "the board, live, with the station's alerts",
        "return !document.querySelector('#board').hidden
            && document.querySelector('#live').dataset.live === 'on'
            && document.querySelectorAll('#rows tr[data-alert]').length === arguments[0]",
        &[json!(before.len())],
        WAIT,
    );
    assert_eq!(page_rows(&session), ids(&before));
    assert_eq!(page_counts(&session), tier_counts(&before));
    // The token is in this tab's session storage only, never in the URL or local storage.
    let stored = session.js(
        "return [sessionStorage.getItem('blindwatch.console.token'), location.href, JSON.stringify(localStorage)]",
        &[],
    );
    assert_eq!(stored[0], li.as_str());
    assert!(!stored[1].as_str().unwrap().contains(&li));
    assert!(!stored[2].as_str().unwrap().contains(&li));

    // --- A model run after the page is open: its alerts appear without a reload.
    session.js("window.__sameDocument = true", &[]);
    run_models(&addr, &specialist, None);
    let after = all_alerts(&addr, &li, ACTIVE);
    let new: BTreeSet<String> = ids(&after).difference(&ids(&before)).cloned().collect();
    assert!(!new.is_empty(), "the second run opened nothing for S03");
    session.wait_until(
        "the new alerts on the board",
        "const rows = new Set([...document.querySelectorAll('#rows tr[data-alert]')].map(r => r.dataset.alert));
         return arguments[0].every(id => rows.has(id))",
        &[json!(new)],
        WAIT,
    );
    assert_eq!(
        session.js("return window.__sameDocument === true", &[]),
        Value::Bool(true),
        "the page reloaded"
    );
    assert!(
        session
            .js(
                "return document.querySelectorAll('#rows tr.fresh').length",
                &[]
            )
            .as_u64()
            .unwrap()
            > 0,
        "new rows are not marked"
    );
    assert_eq!(page_rows(&session), ids(&after));
    assert_eq!(page_counts(&session), tier_counts(&after));
    println!("tier counts {:?}", page_counts(&session));

    // Nothing of another station's alerts (wang's, S05) reaches the page.
    let other = all_alerts(&addr, &wang, "");
    assert!(!other.is_empty());
    assert!(other.iter().all(|a| a["station"] == "S05"));
    let own_all = all_alerts(&addr, &li, "");
    assert_nothing_of(&session, &other, &own_all, "after the live update");

    // Sorting: by tier (default, highest first), then by time.
    let order = |s: &Session<'_>| -> Vec<String> {
        serde_json::from_value(s.js(
            "return [...document.querySelectorAll('#rows tr[data-alert]')].map(r => r.dataset.tier)",
            &[],
        ))
        .unwrap()
    };
    let rank = |t: &str| {
        ["blue", "yellow", "orange", "red"]
            .iter()
            .position(|x| *x == t)
    };
    let tiers = order(&session);
    assert!(
        tiers.windows(2).all(|w| rank(&w[0]) >= rank(&w[1])),
        "{tiers:?}"
    );
    click(&session, "button.sort[data-sort='time']");
    let times: Vec<String> = serde_json::from_value(session.js(
        "return [...document.querySelectorAll('#rows tr[data-alert] time')].map(t => t.getAttribute('datetime'))",
        &[],
    ))
    .unwrap();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    click(&session, "button.sort[data-sort='tier']");

    let board_png = save_screenshot(&session, "board.png");

    // Filters: one model; then back to all.
    let model = after[0]["model"].as_str().unwrap().to_owned();
    session.js(
        "const s = document.querySelector('#f-model'); s.value = arguments[0]; s.dispatchEvent(new Event('change'))",
        &[json!(model)],
    );
    let of_model: Vec<Value> = after
        .iter()
        .filter(|a| a["model"] == model.as_str())
        .cloned()
        .collect();
    session.wait_until(
        "the model filter",
        "return document.querySelectorAll('#rows tr[data-alert]').length === arguments[0]",
        &[json!(of_model.len())],
        WAIT,
    );
    assert_eq!(page_rows(&session), ids(&of_model));
    assert_eq!(page_counts(&session), tier_counts(&of_model));
    session.js(
        "const s = document.querySelector('#f-model'); s.value = ''; s.dispatchEvent(new Event('change'))",
        &[],
    );
    session.wait_until(
        "all models again",
        "return document.querySelectorAll('#rows tr[data-alert]').length === arguments[0]",
        &[json!(after.len())],
        WAIT,
    );

    // --- Acknowledge, comment and close a new alert through the page.
    let target = after
        .iter()
        .find(|a| new.contains(a["id"].as_str().unwrap()) && a["state"] == "open")
        .unwrap()
        .clone();
    let id = target["id"].as_str().unwrap().to_owned();
    let section = format!("section[data-alert-section='{id}']");
    click(&session, &format!("#rows tr[data-alert='{id}']"));
    session.wait_for(&section, WAIT);
    // The subject card shows the subject and the alert's evidence and history.
    let card_text = session.text_css("#card", WAIT);
    assert!(card_text.contains(target["subject"].as_str().unwrap()));
    for feature in target["evidence"].as_object().unwrap().keys() {
        assert!(
            session
                .find(&format!("{section} td[data-feature='{feature}']"))
                .is_some(),
            "evidence {feature} not shown"
        );
    }
    session.wait_for(&format!("{section} li[data-change='opened']"), WAIT);

    click(
        &session,
        &format!("{section} button[data-act='acknowledge']"),
    );
    session.wait_until(
        "acknowledged in the card and on the board",
        "return document.querySelector(arguments[0])?.dataset.state === 'acknowledged'
            && document.querySelector(`#rows tr[data-alert='${arguments[1]}']`)?.dataset.state === 'acknowledged'",
        &[json!(section), json!(id)],
        WAIT,
    );
    let api = get(&addr, &format!("/v1/alerts/{id}"), &li).json();
    assert_eq!(api["alert"]["state"], "acknowledged");
    assert_eq!(api["alert"]["acknowledged_by"], "officer:li@S03");

    type_into(
        &session,
        &format!("{section} form[data-act='comment'] textarea"),
        "家访：无人在家 / visited, nobody home",
    );
    click(
        &session,
        &format!("{section} form[data-act='comment'] button"),
    );
    session.wait_until(
        "the comment in the history",
        "return [...document.querySelectorAll(arguments[0] + \" li[data-change='commented']\")]
            .some(li => li.textContent.includes('visited, nobody home'))",
        &[json!(section)],
        WAIT,
    );

    click(
        &session,
        &format!("{section} form[data-act='close'] option[value='false_positive']"),
    );
    type_into(
        &session,
        &format!("{section} form[data-act='close'] input[name='note']"),
        "known to the station",
    );
    click(
        &session,
        &format!("{section} form[data-act='close'] button"),
    );
    session.wait_until(
        "closed in the card, gone from the not-closed board",
        "return document.querySelector(arguments[0])?.dataset.state === 'closed'
            && !document.querySelector(`#rows tr[data-alert='${arguments[1]}']`)",
        &[json!(section), json!(id)],
        WAIT,
    );
    let api = get(&addr, &format!("/v1/alerts/{id}"), &li).json();
    assert_eq!(api["alert"]["state"], "closed");
    assert_eq!(api["alert"]["outcome"], "false_positive");
    assert_eq!(api["alert"]["closed_by"], "officer:li@S03");
    let changes: Vec<&str> = api["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["change"].as_str().unwrap())
        .collect();
    for c in ["acknowledged", "commented", "closed"] {
        assert!(changes.contains(&c), "{changes:?}");
    }
    let now_active = all_alerts(&addr, &li, ACTIVE);
    assert_eq!(page_counts(&session), tier_counts(&now_active));

    // --- Refusals show the server's problem: reveal on a yellow alert (policy: orange or
    // red only), and reveal without a justification.
    let low = now_active
        .iter()
        .find(|a| a["tier"] == "yellow" || a["tier"] == "blue")
        .unwrap()
        .clone();
    let low_id = low["id"].as_str().unwrap().to_owned();
    let low_section = format!("section[data-alert-section='{low_id}']");
    click(&session, &format!("#rows tr[data-alert='{low_id}']"));
    type_into(
        &session,
        &format!("{low_section} form[data-act='reveal'] input"),
        "curious",
    );
    click(
        &session,
        &format!("{low_section} form[data-act='reveal'] button"),
    );
    let shown = notice_text(&session, &low_id);
    let expected = post_json(
        &addr,
        &format!("/v1/alerts/{low_id}/reveal"),
        &li,
        json!({"justification": "curious"}),
    );
    assert_eq!(expected.status, 403);
    let problem = expected.json();
    assert!(shown.contains("403"), "{shown}");
    assert!(
        shown.contains(problem["title"].as_str().unwrap()),
        "{shown}"
    );
    assert!(
        shown.contains(problem["detail"].as_str().unwrap()),
        "{shown}"
    );
    println!("refusal shown: {shown}");

    let high = now_active
        .iter()
        .find(|a| a["tier"] == "orange" || a["tier"] == "red")
        .unwrap()
        .clone();
    let high_id = high["id"].as_str().unwrap().to_owned();
    let high_section = format!("section[data-alert-section='{high_id}']");
    click(&session, &format!("#rows tr[data-alert='{high_id}']"));
    click(
        &session,
        &format!("{high_section} form[data-act='reveal'] button"),
    );
    let shown = notice_text(&session, &high_id);
    assert!(shown.contains("403"), "{shown}");
    assert!(shown.contains("justification-required"), "{shown}");
    // A blank comment: 422 from the alert store's check, shown the same way.
    click(
        &session,
        &format!("{high_section} form[data-act='comment'] button"),
    );
    session.wait_until(
        "the 422 of a blank comment",
        "return document.querySelector(`[data-notice='${arguments[0]}'] .problem`)?.dataset.status === '422'",
        &[json!(high_id)],
        WAIT,
    );
    assert_eq!(
        get(&addr, &format!("/v1/alerts/{high_id}"), &li).json()["alert"]["state"],
        high["state"]
    );
    save_screenshot(&session, "card.png");
    assert_nothing_of(&session, &other, &own_all, "with subject cards open");

    // --- Chinese by default; the toggle switches the labels to English and back.
    let labels = |s: &Session<'_>| -> Value {
        s.js(
            "return [document.documentElement.lang,
                     document.querySelector('[data-tier-count=red]').previousElementSibling.textContent,
                     document.querySelector(\"button.sort[data-sort='tier']\").textContent,
                     document.querySelector('#signout').textContent]",
            &[],
        )
    };
    assert_eq!(labels(&session), json!(["zh-CN", "红色", "等级", "退出"]));
    click(&session, "#lang");
    assert_eq!(labels(&session), json!(["en", "Red", "Tier", "Sign out"]));
    let states: Vec<String> = serde_json::from_value(session.js(
        "return [...document.querySelectorAll('#rows .state')].map(e => e.textContent)",
        &[],
    ))
    .unwrap();
    assert!(
        states.iter().all(|s| s == "Open" || s == "Acknowledged"),
        "{states:?}"
    );
    click(&session, "#lang");
    assert_eq!(labels(&session), json!(["zh-CN", "红色", "等级", "退出"]));

    // --- A phone-sized viewport: no sideways scrolling, rows as cards, the subject card on
    // top of the board.
    click(&session, "#card-close");
    session.set_window(390, 844);
    session.wait_until(
        "a narrow viewport",
        "return window.innerWidth <= 420",
        &[],
        WAIT,
    );
    let layout = session.js(
        "const row = document.querySelector('#rows tr[data-alert]');
         const counts = [...document.querySelectorAll('.count')].map(c => c.getBoundingClientRect());
         return {
           overflow: document.documentElement.scrollWidth - window.innerWidth,
           rowDisplay: getComputedStyle(row).display,
           rowWidth: row.getBoundingClientRect().width,
           countsTwoByTwo: counts[0].top === counts[1].top && counts[2].top > counts[0].top,
           width: window.innerWidth,
         }",
        &[],
    );
    assert!(layout["overflow"].as_i64().unwrap() <= 0, "{layout}");
    assert_eq!(layout["rowDisplay"], "grid", "{layout}");
    assert!(
        layout["rowWidth"].as_f64().unwrap() <= layout["width"].as_f64().unwrap(),
        "{layout}"
    );
    assert_eq!(layout["countsTwoByTwo"], true, "{layout}");
    let phone_png = save_screenshot(&session, "board-phone.png");
    click(&session, &format!("#rows tr[data-alert='{high_id}']"));
    session.wait_for(&high_section, WAIT);
    let card = session.js(
        "const r = document.querySelector('#card').getBoundingClientRect();
         return [getComputedStyle(document.querySelector('#card')).position, r.width, document.documentElement.scrollWidth - window.innerWidth]",
        &[],
    );
    assert_eq!(card[0], "fixed", "{card}");
    assert!(card[2].as_i64().unwrap() <= 0, "{card}");
    save_screenshot(&session, "card-phone.png");
    click(&session, "#card-close");
    session.set_window(1280, 900);

    // --- A reload keeps the tab signed in; signing out forgets the token and the data.
    session.goto(&url);
    session.wait_until(
        "the board after a reload",
        "return document.querySelector('#live').dataset.live === 'on'
            && document.querySelectorAll('#rows tr[data-alert]').length === arguments[0]",
        &[json!(now_active.len())],
        WAIT,
    );
    assert_nothing_of(&session, &other, &own_all, "after a reload");
    click(&session, "#signout");
    let out = session.js(
        "return [sessionStorage.length, document.querySelector('#signin').hidden,
                 document.querySelectorAll('#rows tr').length, document.body.textContent]",
        &[],
    );
    assert_eq!(out[0], 0);
    assert_eq!(out[1], false);
    assert_eq!(out[2], 0);
    assert!(!out[3].as_str().unwrap().contains(&id));

    drop(session);
    drop(driver);
    drop(server);
    println!("board screenshot: {}", board_png.display());
    println!("phone screenshot: {}", phone_png.display());
    println!("officer console test took {:?}", started.elapsed());
}
