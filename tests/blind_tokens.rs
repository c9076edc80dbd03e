//! End to end through the `blindwatch` binary in blind mode: the token authority runs as
//! its own process (`tokens serve`), a partner seals with `--tokens blind`, the platform
//! ingests the package and records mode `blind` with the authority's key id.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::{bw, ok, s};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const CSV: &str =
    "visit_id,id_number,patient_name,phone,hospital,department,diagnosis_group,visit_date
V1,11010519491231002X,张三,13812345678,临江区人民医院,emergency,injury,2026-11-01
V2,110105198001010016,李四,,临江区人民医院,surgery,injury,2026-11-03
";

#[test]
fn blind_mode_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let (platform, authority, hospital) = (
        tmp.path().join("platform"),
        tmp.path().join("authority"),
        tmp.path().join("hospital"),
    );
    ok(&["keys", "init", "--data-dir", s(&platform)]);
    let key_file = authority.join("oprf.key");
    let out = ok(&["tokens", "keygen", "--key", s(&key_file)]);
    let key_id = out
        .split("key id ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap()
        .to_owned();
    let keys = hospital.join("keys");
    ok(&[
        "partner",
        "keygen",
        "--partner",
        "hospital",
        "--out",
        s(&keys),
    ]);
    ok(&[
        "tokens",
        "add-partner",
        "--dir",
        s(&authority),
        "--partner",
        "hospital",
        "--key",
        s(&keys.join("hospital.pub")),
    ]);
    ok(&[
        "partner",
        "register",
        "--data-dir",
        s(&platform),
        "--partner",
        "hospital",
        "--key",
        s(&keys.join("hospital.pub")),
        "--datasets",
        "hospital.visits",
    ]);
    let privacy = tmp.path().join("privacy.toml");
    std::fs::write(
        &privacy,
        "[retention]\ndays = 30\n[token_authority]\ndefault = { per_day = 100, total = 1000 }\n",
    )
    .unwrap();

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_blindwatch"))
            .args([
                "tokens",
                "serve",
                "--key",
                s(&key_file),
                "--listen",
                &listen,
                "--dir",
                s(&authority),
                "--privacy",
                s(&privacy),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the authority did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let input = hospital.join("visits.csv");
    std::fs::write(&input, CSV).unwrap();
    let contract = platform.join("policies/datasets/hospital.visits.toml");
    let partner_key = keys.join("hospital.key");
    let platform_key = platform.join("keys/platform.pub");
    let outbox = hospital.join("outbox");
    let args = |seq: &str| -> Vec<String> {
        [
            "partner",
            "seal",
            "--contract",
            s(&contract),
            "--input",
            s(&input),
            "--partner",
            "hospital",
            "--partner-key",
            s(&partner_key),
            "--platform-key",
            s(&platform_key),
            "--seq",
            seq,
            "--out",
            s(&outbox),
            "--tokens",
            "blind",
            "--authority",
            &url,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let run = |a: &[String]| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        bw(&refs)
    };

    let first = run(&args("1"));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("3 values sent blinded"), "{stdout}");
    // The cache key and the encrypted cache sit beside the partner's keys.
    assert!(keys.join("token-cache.key").is_file());
    assert!(keys.join(format!("tokens-{key_id}.cache")).is_file());
    // A second seal of the same export asks the authority for nothing.
    let second = run(&args("2"));
    assert!(second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("0 values sent blinded"),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );

    // Blind mode refuses a linkage key, and needs an authority.
    let mut mixed = args("3");
    mixed.extend([
        "--linkage-key".to_owned(),
        s(&keys.join("x.key")).to_owned(),
    ]);
    let out = run(&mixed);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("modes never mix"));

    let manifest = outbox.join("hospital.visits.00000001.manifest.json");
    ok(&["ingest", "--data-dir", s(&platform), s(&manifest)]);
    let catalog = ok(&["catalog", "--data-dir", s(&platform)]);
    let row = catalog
        .lines()
        .find(|l| l.starts_with("hospital.visits"))
        .unwrap();
    assert!(row.contains("blind") && row.contains(&key_id), "{catalog}");

    // Stop the authority as an operator would (SIGINT, by its process id): it signs a
    // checkpoint of its audit log, which holds one entry per batch.
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.0.wait().unwrap();
    assert!(status.success());
    let mut out = String::new();
    use std::io::Read;
    server
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("checkpoint signed"), "{out}");
    // Auditors verify the authority's log with the same command as the platform's.
    let report = ok(&["audit", "verify", "--data-dir", s(&authority)]);
    assert!(!report.is_empty());
    let mut log = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    for secret in ["11010519491231002X", "110105198001010016", "13812345678"] {
        assert!(!log.contains(secret));
    }
}
