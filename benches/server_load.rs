//! Load on the platform server, over loopback, bounded in time:
//!
//! 1. alert listing: `wrk` (Debian's package) on `GET /v1/alerts?limit=50` as one station's
//!    officer, for a fixed number of seconds;
//! 2. the live stream: N SSE subscribers (half at S03, half at S05), then officer actions on
//!    an S03 alert; how long each action takes and how long until every S03 subscriber has
//!    the event (the S05 ones must get none);
//! 3. the server's peak resident memory.
//!
//! `cargo bench -p blindwatch-cli --bench server_load -- [PERSONS] [SUBSCRIBERS] [SECONDS]`
//! (defaults 20000, 500, 10). The server is the release `blindwatch` binary; the load runs on
//! the same machine, so the figures are a floor for a dedicated server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/server.rs"]
mod server;
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::{City, Db, Server, add_user, get, post_json, request};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize, default: u64| args.get(i).map_or(default, |a| a.parse().unwrap());
    let (persons, subscribers, seconds) = (arg(0, 20_000), arg(1, 500), arg(2, 10));

    let started = Instant::now();
    let city = City::new(persons as u32);
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
        &["--name", "wang", "--role", "officer", "--station", "S05"],
    );
    let specialist = add_user(&platform, &db, &["--name", "chen", "--role", "specialist"]);
    let server = Server::start(&platform, &db);
    let addr = server.addr.clone();
    let run = request(
        &addr,
        "POST",
        "/v1/models/run?as_of=2026-11-30",
        Some(&specialist),
        None,
    );
    assert_eq!(run.status, 200, "{}", run.body);
    let s03 = server::all_alerts(&addr, &li, "");
    println!(
        "city of {persons} persons ready in {:.1} s; S03 officer sees {} alerts",
        started.elapsed().as_secs_f64(),
        s03.len()
    );

    // 1. Listing under wrk.
    let wrk = Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {li}"),
            &format!("http://{addr}/v1/alerts?limit=50"),
        ])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    assert!(wrk.status.success());
    let report = String::from_utf8_lossy(&wrk.stdout);
    let line = |prefix: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map_or("?".to_owned(), |l| {
                l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
            })
    };
    let non_2xx = line("Non-2xx");
    println!(
        "GET /v1/alerts?limit=50, wrk -t2 -c32 -d{seconds}s: {} req/s; latency avg/stdev/max {}; p50 {} p99 {}; non-2xx: {}",
        line("Requests/sec:"),
        line("Latency"),
        line("50%"),
        line("99%"),
        if non_2xx == "?" {
            "none".to_owned()
        } else {
            non_2xx
        }
    );

    // 2. The live stream with many subscribers.
    let target = s03
        .iter()
        .find(|a| a["state"] == "open")
        .expect("an open S03 alert")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let arrivals: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    for n in 0..subscribers as usize {
        let token = if n % 2 == 0 { li.clone() } else { wang.clone() };
        let (addr, target, arrivals) = (addr.clone(), target.clone(), arrivals.clone());
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || subscribe(&addr, &token, n, &target, &arrivals))
            .unwrap();
    }
    let connected = Instant::now();
    while subscribers_gauge(&addr) < subscribers {
        assert!(
            connected.elapsed() < Duration::from_secs(60),
            "subscribers did not connect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{subscribers} subscribers connected in {:.2} s",
        connected.elapsed().as_secs_f64()
    );
    let rss_before = rss_kib(server.pid());
    let actions: [(&str, Value); 3] = [
        ("acknowledge", json!({})),
        ("comment", json!({"text": "checked at the door"})),
        ("comment", json!({"text": "nobody home"})),
    ];
    for (action, body) in actions {
        arrivals.lock().unwrap().clear();
        let sent = Instant::now();
        let reply = post_json(&addr, &format!("/v1/alerts/{target}/{action}"), &li, body);
        let answered = sent.elapsed();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let expected = (subscribers as usize).div_ceil(2);
        while arrivals.lock().unwrap().len() < expected && sent.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(500));
        let got = arrivals.lock().unwrap().clone();
        assert!(
            got.iter().all(|(n, _)| n % 2 == 0),
            "an S05 subscriber got an S03 event"
        );
        let mut delays: Vec<f64> = got
            .iter()
            .map(|(_, t)| t.duration_since(sent).as_secs_f64() * 1e3)
            .collect();
        delays.sort_by(f64::total_cmp);
        let pct = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize];
        println!(
            "{action}: answered in {:.1} ms; reached {}/{expected} S03 subscribers (0 of {} S05): p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
            answered.as_secs_f64() * 1e3,
            got.len(),
            subscribers as usize - expected,
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
    let (rss, peak) = rss_kib(server.pid());
    println!(
        "server memory: {:.0} MiB resident before the actions, {:.0} MiB after, {:.0} MiB peak",
        rss_before.0 as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    // The listing still answers with every subscriber connected.
    assert_eq!(get(&addr, "/v1/alerts?limit=1", &li).status, 200);
}

/// One SSE subscriber: records when it sees an event about `target`.
fn subscribe(
    addr: &str,
    token: &str,
    n: usize,
    target: &str,
    arrivals: &Mutex<Vec<(usize, Instant)>>,
) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let _ = write!(
        stream,
        "GET /v1/alerts/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.starts_with("data:") && line.contains(target) {
            arrivals.lock().unwrap().push((n, Instant::now()));
        }
    }
}

fn subscribers_gauge(addr: &str) -> u64 {
    request(addr, "GET", "/metrics", None, None)
        .body
        .lines()
        .find(|l| l.starts_with("blindwatch_stream_subscribers "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// (VmRSS, VmHWM) of a process, KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
