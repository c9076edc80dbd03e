//! End to end through the `blindwatch` binary in blind mode: the token authority runs as
//! its own process (`tokens serve`, over TLS), a partner seals with `--tokens blind`
//! (pinning the authority's key on first use or from a file), the platform accepts blind
//! packages only under its authority key, `audit checkpoint` works while the authority
//! runs, SIGTERM checkpoints, and the authority will not start on a lost log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::{bw, ok, s};

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A self-signed TLS certificate for 127.0.0.1, which the partner pins as the one to trust.
fn certificate(dir: &Path) {
    let own = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("tls.pem"), own.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), own.key_pair.serialize_pem()).unwrap();
}

fn serve(args: &[&str]) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_blindwatch"))
            .args(args)
            .env("BLINDWATCH_LOG", "blindwatch=debug,warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

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
    let public = authority.join("oprf.pub");
    assert!(public.is_file(), "{out}");
    let keys = hospital.join("keys");
    ok(&[
        "partner",
        "keygen",
        "--partner",
        "hospital",
        "--out",
        s(&keys),
    ]);
    let add = |partner: &str| {
        bw(&[
            "tokens",
            "add-partner",
            "--dir",
            s(&authority),
            "--partner",
            partner,
            "--key",
            s(&keys.join("hospital.pub")),
        ])
    };
    assert!(add("hospital").status.success());
    // The same key under a second name is refused.
    let twice = add("clinic");
    assert!(!twice.status.success());
    assert!(
        stderr(&twice).contains("one key per partner"),
        "{}",
        stderr(&twice)
    );
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
    let settings = |partners: &str| {
        std::fs::write(
            &privacy,
            format!(
                "[retention]\ndays = 30\n[token_authority]\nmax_batch = 2\ndefault = {{ per_day = 100, total = 1000 }}\n{partners}"
            ),
        )
        .unwrap()
    };
    certificate(tmp.path());
    let (cert, tls_key) = (tmp.path().join("tls.pem"), tmp.path().join("tls.key"));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("https://{listen}");
    let serve_args = |listen: &str, tls: bool| -> Vec<String> {
        let mut a: Vec<String> = [
            "tokens",
            "serve",
            "--key",
            s(&key_file),
            "--listen",
            listen,
            "--dir",
            s(&authority),
            "--privacy",
            s(&privacy),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if tls {
            a.extend(["--tls-cert", s(&cert), "--tls-key", s(&tls_key)].map(String::from));
        }
        a
    };
    let run = |a: &[String]| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        bw(&refs)
    };

    // Operator mistakes stop the authority at start: a misspelt per-partner quota, plain
    // HTTP on an address other machines reach.
    settings("[token_authority.partners]\nhospitl = { per_day = 1, total = 1 }\n");
    let out = run(&serve_args(&listen, true));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`hospitl`"), "{}", stderr(&out));
    settings("[token_authority.partners]\nhospital = { per_day = 50, total = 1000 }\n");
    let out = run(&serve_args("0.0.0.0:0", false));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("plain HTTP"), "{}", stderr(&out));

    let refs: Vec<String> = serve_args(&listen, true);
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let mut server = serve(&refs);
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
    let args = |seq: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
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
            "--authority-ca",
            s(&cert),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };

    // https:// without a certificate to trust is refused.
    let mut no_ca = args("1", &[]);
    no_ca.truncate(no_ca.len() - 2);
    let out = run(&no_ca);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--authority-ca"), "{}", stderr(&out));

    // First seal: the authority's key is trusted on first use and recorded.
    let first = run(&args("1", &[]));
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("trusting token authority key"),
        "{}",
        stdout(&first)
    );
    assert!(
        stdout(&first).contains("3 values sent blinded"),
        "{}",
        stdout(&first)
    );
    assert!(
        stdout(&first).contains("requests of up to 2"),
        "{}",
        stdout(&first)
    );
    // The recorded key, the cache key and the encrypted cache sit beside the partner's key.
    assert_eq!(
        std::fs::read(keys.join("token-authority.pub")).unwrap(),
        std::fs::read(&public).unwrap()
    );
    assert!(keys.join("token-cache.key").is_file());
    assert!(keys.join(format!("tokens-{key_id}.cache")).is_file());
    // A second seal of the same export, pinning the key from the operator's file, asks the
    // authority for nothing.
    let second = run(&args("2", &["--authority-key", s(&public)]));
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).contains("0 values sent blinded"),
        "{}",
        stdout(&second)
    );

    // A key that is not the authority's: refused, nothing written.
    let other_key = tmp.path().join("other.key");
    ok(&["tokens", "keygen", "--key", s(&other_key)]);
    let wrong = run(&args(
        "3",
        &["--authority-key", s(&tmp.path().join("other.pub"))],
    ));
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("trusts key"), "{}", stderr(&wrong));
    assert!(
        !outbox
            .join("hospital.visits.00000003.manifest.json")
            .exists()
    );

    // Blind mode refuses a linkage key.
    let out = run(&args("3", &["--linkage-key", s(&keys.join("x.key"))]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("modes never mix"));

    // The platform accepts blind packages only under its authority key.
    let manifest = |seq: u32| outbox.join(format!("hospital.visits.{seq:08}.manifest.json"));
    let refused = bw(&["ingest", "--data-dir", s(&platform), s(&manifest(1))]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("keys authority"),
        "{}",
        stderr(&refused)
    );
    ok(&[
        "keys",
        "authority",
        "--data-dir",
        s(&platform),
        "--key",
        s(&public),
    ]);
    ok(&["ingest", "--data-dir", s(&platform), s(&manifest(1))]);
    let catalog = ok(&["catalog", "--data-dir", s(&platform)]);
    let row = catalog
        .lines()
        .find(|l| l.starts_with("hospital.visits"))
        .unwrap();
    assert!(row.contains("blind") && row.contains(&key_id), "{catalog}");
    // After a rotation to another key, packages under the old key are refused.
    let other_public = tmp.path().join("other.pub");
    let out = bw(&[
        "keys",
        "authority",
        "--data-dir",
        s(&platform),
        "--key",
        s(&other_public),
    ]);
    assert!(!out.status.success(), "a different key needs --rotate");
    ok(&[
        "keys",
        "authority",
        "--data-dir",
        s(&platform),
        "--key",
        s(&other_public),
        "--rotate",
    ]);
    let refused = bw(&["ingest", "--data-dir", s(&platform), s(&manifest(2))]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains(&key_id), "{}", stderr(&refused));

    // A checkpoint of the running authority's log, through the authority.
    let checkpoint = ok(&["audit", "checkpoint", "--data-dir", s(&authority)]);
    assert!(
        checkpoint.starts_with("blindwatch.local/token-authority\n"),
        "{checkpoint}"
    );
    // 3 values in requests of at most 2: 2 entries.
    assert_eq!(checkpoint.lines().nth(1), Some("2"), "{checkpoint}");

    // Stop the authority as a service manager would (SIGTERM, by its process id): it signs
    // a last checkpoint.
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.0.wait().unwrap();
    assert!(status.success());
    let mut out = String::new();
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

    // An authority whose log is gone does not start afresh.
    std::fs::rename(authority.join("audit"), tmp.path().join("audit-moved")).unwrap();
    let out = run(&serve_args(&listen, true));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("restore the log"), "{}", stderr(&out));
}
