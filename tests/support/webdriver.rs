//! A tiny W3C WebDriver client for the browser tests: chromedriver over plain HTTP/1.1 on
//! loopback, JSON with serde_json. Only the commands the tests use.
//!
//! Not a general client: one request per connection, no redirects, no TLS.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key W3C WebDriver uses for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.exists() {
                return Some(p.to_path_buf());
            }
        } else if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if dir.join(c).is_file() {
                    return Some(dir.join(c));
                }
            }
        }
    }
    None
}

/// A chromedriver process on a free loopback port; killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
    profiles: tempfile::TempDir,
    browser: PathBuf,
}

impl Driver {
    /// Starts chromedriver. Fails the test (never skips) when it or Chromium is missing.
    pub fn start() -> Driver {
        let driver = find_program("CHROMEDRIVER", &["/usr/bin/chromedriver", "chromedriver"])
            .unwrap_or_else(|| {
                panic!(
                    "chromedriver not found (set CHROMEDRIVER or install it: \
                 `apt-get install -y chromium chromium-driver`; .ci/run does this)"
                )
            });
        let browser = find_program(
            "CHROME",
            &["/usr/bin/chromium", "chromium", "google-chrome"],
        )
        .unwrap_or_else(|| {
            panic!(
                "Chromium not found (set CHROME or `apt-get install -y chromium chromium-driver`)"
            )
        });
        // A free port: bind, read it, release it for chromedriver.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let d = Driver {
            child,
            port,
            profiles: tempfile::tempdir().unwrap(),
            browser,
        };
        let started = Instant::now();
        loop {
            if let Ok((200, v)) = d.try_call("GET", "/status", None)
                && v["value"]["ready"] == true
            {
                return d;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not become ready on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut stream = TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let bytes = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if body.is_some() {
            head.push_str("Content-Type: application/json; charset=utf-8\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
        stream.write_all(head.as_bytes())?;
        stream.write_all(bytes.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
                {
                    chunked = true;
                }
            }
        }
        let mut raw = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                raw.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            raw.resize(n, 0);
            reader.read_exact(&mut raw)?;
        } else {
            reader.read_to_end(&mut raw)?;
        }
        let value = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or_else(|e| {
                panic!(
                    "chromedriver sent non-JSON ({e}): {}",
                    String::from_utf8_lossy(&raw)
                )
            })
        };
        Ok((status, value))
    }

    /// A new headless Chromium session with a fresh profile.
    pub fn session(&self, width: u32, height: u32) -> Session<'_> {
        let profile = self
            .profiles
            .path()
            .join(format!("profile-{width}x{height}"));
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-extensions".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--lang=zh-CN".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": self.browser.to_string_lossy(),
                        "args": args,
                    }
                }
            }
        });
        let (status, v) = self
            .try_call("POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("chromedriver: {e}"));
        assert_eq!(status, 200, "new session refused: {v}");
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_owned();
        Session { driver: self, id }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser; the session is deleted (the browser quits) on drop.
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

/// An element reference.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Session<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let path = format!("/session/{}{path}", self.id);
        let (status, v) = self
            .driver
            .try_call(method, &path, body.as_ref())
            .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
        if status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].clone())
        }
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} failed: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.ok("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn js(&self, script: &str, args: &[Value]) -> Value {
        self.ok(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    pub fn find(&self, css: &str) -> Option<Element> {
        self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(|s| Element(s.to_owned())))
    }

    /// Waits for an element matching `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let started = Instant::now();
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                started.elapsed() < timeout,
                "no element `{css}` after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `script` until it returns `true`.
    pub fn wait_until(&self, what: &str, script: &str, args: &[Value], timeout: Duration) {
        let started = Instant::now();
        loop {
            if self.js(script, args) == Value::Bool(true) {
                return;
            }
            assert!(started.elapsed() < timeout, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Does `f` to the element matching `css`, finding it again while the page replaces it
    /// (a live refresh re-renders parts of the page) or until it can take the action.
    fn on_css(
        &self,
        css: &str,
        timeout: Duration,
        f: impl Fn(&Element) -> Result<Value, Value>,
    ) -> Value {
        let started = Instant::now();
        loop {
            if let Some(e) = self.find(css) {
                match f(&e) {
                    Ok(v) => return v,
                    Err(err)
                        if [
                            "stale element reference",
                            "no such element",
                            "element not interactable",
                            "element click intercepted",
                        ]
                        .contains(&err["error"].as_str().unwrap_or_default()) => {}
                    Err(err) => panic!("WebDriver on `{css}` failed: {err}"),
                }
            }
            assert!(
                started.elapsed() < timeout,
                "no usable element `{css}` after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element matching `css` (waiting for it).
    pub fn click_css(&self, css: &str, timeout: Duration) {
        self.on_css(css, timeout, |e| {
            self.call("POST", &format!("/element/{}/click", e.0), Some(json!({})))
        });
    }

    /// Types into the element matching `css` (waiting for it).
    pub fn type_css(&self, css: &str, text: &str, timeout: Duration) {
        self.on_css(css, timeout, |e| {
            self.call(
                "POST",
                &format!("/element/{}/value", e.0),
                Some(json!({ "text": text })),
            )
        });
    }

    /// The rendered text of the element matching `css` (waiting for it).
    pub fn text_css(&self, css: &str, timeout: Duration) -> String {
        self.on_css(css, timeout, |e| {
            self.call("GET", &format!("/element/{}/text", e.0), None)
        })
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    pub fn click(&self, e: &Element) {
        self.ok("POST", &format!("/element/{}/click", e.0), Some(json!({})));
    }

    pub fn clear(&self, e: &Element) {
        self.ok("POST", &format!("/element/{}/clear", e.0), Some(json!({})));
    }

    pub fn type_text(&self, e: &Element, text: &str) {
        self.ok(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    pub fn text(&self, e: &Element) -> String {
        self.ok("GET", &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn displayed(&self, e: &Element) -> bool {
        self.ok("GET", &format!("/element/{}/displayed", e.0), None) == Value::Bool(true)
    }

    pub fn set_window(&self, width: u32, height: u32) {
        self.ok(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.ok("GET", "/screenshot", None);
        base64_decode(b64.as_str().unwrap_or_default())
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .try_call("DELETE", &format!("/session/{}", self.id), None);
    }
}

/// Standard base64 (the screenshot's encoding); no crate needed for this much.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_padded_and_unpadded_input() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode(""), b"");
}
