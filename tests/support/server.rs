//! `blindwatch serve` over a demo city, a minimal HTTP/1.1 client for its API (one request
//! per connection, so what is tested is the server), and where the server keeps its state.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{ok, s};

pub struct Reply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let bytes: &[u8] = match body {
        Some((content_type, bytes)) => {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
            bytes
        }
        None => b"",
    };
    head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(bytes).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

pub fn get(addr: &str, path: &str, token: &str) -> Reply {
    request(addr, "GET", path, Some(token), None)
}

pub fn post_json(addr: &str, path: &str, token: &str, body: Value) -> Reply {
    let bytes = body.to_string();
    request(
        addr,
        "POST",
        path,
        Some(token),
        Some(("application/json", bytes.as_bytes())),
    )
}

/// Every alert `token` may list with `query` (all pages).
pub fn all_alerts(addr: &str, token: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/alerts?limit=500&{query}");
        if let Some(c) = &after {
            path.push_str(&format!("&after={c}"));
        }
        let reply = get(addr, &path, token);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let page = reply.json();
        out.extend(page["alerts"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Where the server keeps alerts and users: the data directory's SQLite files, or a fresh
/// database on the PostgreSQL server of `BLINDWATCH_TEST_POSTGRES_URL` (`tests/run`).
pub enum Db {
    Sqlite,
    Postgres(String),
}

impl Db {
    pub fn postgres() -> Db {
        let server = std::env::var("BLINDWATCH_TEST_POSTGRES_URL").expect(
            "BLINDWATCH_TEST_POSTGRES_URL is not set: run the tests with tests/run, which starts a PostgreSQL server, or point it at one (postgres://USER@HOST:PORT, allowed to create databases)",
        );
        let name = format!("bw_server_{}", std::process::id());
        let psql = |sql: &str| {
            let out = Command::new("psql")
                .args([
                    &format!("{server}/postgres"),
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-qc",
                    sql,
                ])
                .output()
                .expect("psql (Debian's postgresql-client) runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        psql(&format!("DROP DATABASE IF EXISTS {name}"));
        psql(&format!("CREATE DATABASE {name}"));
        Db::Postgres(format!("{server}/{name}"))
    }

    /// The arguments that point a command at this database.
    pub fn args(&self) -> Vec<&str> {
        match self {
            Db::Sqlite => Vec::new(),
            Db::Postgres(url) => vec!["--database-url", url],
        }
    }
}

/// `blindwatch serve` on a free loopback port without the scheduler; killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    /// Without the per-user rate limit in the way: these tests (and the load benchmark)
    /// drive one user fast; the limit has tests of its own.
    pub fn start(platform: &Path, db: &Db) -> Server {
        Server::start_with(
            platform,
            db,
            &["--rate-per-user", "1000000", "--rate-burst", "1000000"],
        )
    }

    /// [`Server::start`] with more `serve` arguments (limits; not TLS: the health check
    /// speaks plain HTTP).
    pub fn start_with(platform: &Path, db: &Db, extra: &[&str]) -> Server {
        let (child, url) = spawn_serve(platform, db, extra);
        let addr = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("unexpected address: {url}"))
            .to_owned();
        let started = Instant::now();
        while request(&addr, "GET", "/healthz", None, None).status != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server not healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no graceful shutdown, no final checkpoint.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: graceful shutdown, which must end promptly even with a stream open.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "graceful shutdown took too long"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `blindwatch serve` on a free loopback port without the scheduler, plus `extra`
/// arguments; the child and the URL it prints (`http://…` or `https://…`).
pub fn spawn_serve(platform: &Path, db: &Db, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_blindwatch"))
        .args([
            "serve",
            "--data-dir",
            s(platform),
            "--listen",
            "127.0.0.1:0",
            "--no-scheduler",
        ])
        .args(extra)
        .args(db.args())
        .env("BLINDWATCH_LOG", "blindwatch=debug,warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    (child, url)
}

impl Server {
    /// Wraps a child started by [`spawn_serve`] (killed on drop).
    pub fn from_child(child: Child, addr: String) -> Server {
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds an API user; returns its bearer token.
pub fn add_user(platform: &Path, db: &Db, args: &[&str]) -> String {
    let mut all = vec!["users", "add", "--data-dir", s(platform)];
    all.extend_from_slice(args);
    all.extend(db.args());
    let out = ok(&all);
    out.lines().last().unwrap().trim().to_owned()
}

/// The demo city (consortium tokens) with its alert store removed: registered models that
/// have never run.
pub struct City {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl City {
    pub fn new(persons: u32) -> City {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("d");
        ok(&[
            "demo",
            "--data-dir",
            s(&root),
            "--persons",
            &persons.to_string(),
            "--seed",
            "11",
            "--as-of",
            "2026-11-30",
            "--tokens",
            "consortium",
        ]);
        std::fs::remove_file(root.join("platform/alerts.sqlite")).unwrap();
        City { _tmp: tmp, root }
    }

    pub fn platform(&self) -> PathBuf {
        self.root.join("platform")
    }

    pub fn partner(&self, name: &str) -> PathBuf {
        self.root.join("partners").join(name)
    }
}
