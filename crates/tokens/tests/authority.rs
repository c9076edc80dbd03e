#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The token authority end to end over loopback HTTP(S), as a network attacker and a
//! careless operator would try it: blind sealing and what the authority sees, a man in the
//! middle with a key of its own, replays (also across a restart and against another
//! authority), quotas and the partner cache, limits and problem documents, a lost or
//! rolled-back log, checkpoints while running, TLS and client certificates, operator
//! mistakes, lying authorities, pinning.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch};
use blindwatch_audit::{AuditEvent, LogPublicKey};
use blindwatch_common::{IdentifierKind, normalise};
use blindwatch_contract::Contract;
use blindwatch_crypto::KeyId;
use blindwatch_crypto::blind::{
    AuthorityKey, AuthorityPublicKey, BlindTokenizer, BlindTransport, ELEMENT_LEN, PROOF_LEN,
};
use blindwatch_crypto::sealing::{PlatformKeyRetriever, Release};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{TokenError, TokenMode, Tokenizer};
use blindwatch_crypto::wrap::{PlatformPrivateKey, PlatformPublicKey};
use blindwatch_partner::{Encoding, InputFormat, SealError, SealOptions, SealOutcome, seal};
use blindwatch_tokens::{
    Authority, AuthorityDir, AuthorityError, Endpoint, HttpTransport, Limits, LocalAuthority,
    NOT_AUTHENTICATED, Pin, Quotas, RateLimit, ServeSettings, auth, blind_tokenizer, control,
};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

const HEADER: &str =
    "visit_id,id_number,patient_name,phone,hospital,department,diagnosis_group,visit_date";
/// Raw values as exported: 3 distinct persons and 2 distinct phones after normalisation.
const ROWS: &[&str] = &[
    "V1,11010519491231002X,张三,13812345678,临江区人民医院,emergency,injury,2026-11-01",
    "V2, 110105491231002 ,张三,+86 138-1234-5678,临江区人民医院,psychiatry,psychiatric,2026/11/02",
    "V3,110105198001010016,李四,,临江区人民医院,surgery,injury,2026-11-03",
    "V5,440524188001010014,赵六,13900000000,临江区人民医院,internal,other,2026-11-04",
];
const DISTINCT: usize = 5;
const PERSONS: &[&str] = &[
    "11010519491231002X",
    "110105198001010016",
    "440524188001010014",
];
const PHONES: &[&str] = &["13812345678", "13900000000"];

struct Partner {
    dir: tempfile::TempDir,
    signing: Arc<SigningKey>,
    private: Arc<PlatformPrivateKey>,
    public: PlatformPublicKey,
}

impl Partner {
    fn new() -> Partner {
        let (private, public) = PlatformPrivateKey::generate();
        Partner {
            dir: tempfile::tempdir().unwrap(),
            signing: Arc::new(SigningKey::generate().unwrap()),
            private: Arc::new(private),
            public,
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn export(&self, rows: &[&str]) -> PathBuf {
        let path = self.path("visits.csv");
        let mut text = format!("{HEADER}\n");
        for r in rows {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        path
    }
    fn connect(&self, endpoint: &Endpoint, pin: &Pin) -> Result<BlindTokenizer, TokenError> {
        std::fs::create_dir_all(self.path("keys")).unwrap();
        blind_tokenizer(
            endpoint,
            "hospital",
            self.signing.clone(),
            &self.path("keys"),
            pin,
        )
        .map(|c| c.tokenizer)
    }
    /// A tokenizer for `url` pinned to the key in `public`.
    fn tokenizer(&self, url: &str, public: &Path) -> BlindTokenizer {
        self.connect(&Endpoint::new(url), &Pin::File(public.to_owned()))
            .unwrap()
    }
    fn seal(
        &self,
        tokenizer: &dyn Tokenizer,
        input: &Path,
        seq: u64,
    ) -> Result<SealOutcome, SealError> {
        seal(&SealOptions {
            contract: &contract(),
            input,
            format: InputFormat::Csv(Encoding::Auto),
            partner: "hospital",
            signing_key: &self.signing,
            platform_key: &self.public,
            tokenizer,
            sequence: seq,
            out_dir: &self.path("outbox"),
            batch_rows: 2,
            token_cache_limit: blindwatch_partner::DEFAULT_TOKEN_CACHE_LIMIT,
            progress: false,
        })
    }
    fn outbox_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.path("outbox")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
    /// The token column `name` of the sealed file, row by row.
    fn tokens(&self, outcome: &SealOutcome, column: &str) -> Vec<Option<[u8; 16]>> {
        let retriever = PlatformKeyRetriever::new(self.private.clone(), Release::All);
        let options = ArrowReaderOptions::new()
            .with_file_decryption_properties(retriever.decryption_properties().unwrap());
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new_with_options(
            std::fs::File::open(&outcome.package.parquet).unwrap(),
            options,
        )
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
        let mut out = Vec::new();
        for batch in batches {
            let col = batch
                .column_by_name(column)
                .unwrap()
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .unwrap()
                .clone();
            for i in 0..col.len() {
                out.push((!col.is_null(i)).then(|| col.value(i).try_into().unwrap()));
            }
        }
        out
    }
    /// Tokens held in the partner's encrypted cache for `key` (a new process's view).
    fn cached_for(&self, key: &AuthorityPublicKey) -> usize {
        let cache = blindwatch_crypto::token_cache::TokenCache::open(
            &self.path("keys"),
            &self.path("keys").join(blindwatch_tokens::CACHE_KEY_FILE),
            key.key_id(),
        )
        .unwrap();
        cache.len()
    }
}

fn contract() -> Contract {
    Contract::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets/hospital.visits.toml"),
    )
    .unwrap()
}

/// A token authority with its own directory and key files, serving on loopback; it can be
/// stopped and started again on the same directory.
struct Auth {
    _tmp: tempfile::TempDir,
    dir: AuthorityDir,
    key_file: PathBuf,
    public_file: PathBuf,
    local: Option<LocalAuthority>,
}

impl Auth {
    /// A fresh authority with `partner` registered as `hospital`.
    fn new(partner: &Partner, quotas: Quotas) -> Auth {
        Auth::with_settings(partner, quotas, ServeSettings::default())
    }

    fn with_settings(partner: &Partner, quotas: Quotas, settings: ServeSettings) -> Auth {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AuthorityDir::new(tmp.path().join("authority"));
        std::fs::create_dir_all(dir.root()).unwrap();
        let key_file = tmp.path().join("oprf.key");
        let public_file = tmp.path().join("oprf.pub");
        let key = AuthorityKey::generate().unwrap();
        key.write(&key_file).unwrap();
        key.public_key().write(&public_file).unwrap();
        dir.add_partner("hospital", &partner.signing.verifying_key())
            .unwrap();
        let mut auth = Auth {
            _tmp: tmp,
            dir,
            key_file,
            public_file,
            local: None,
        };
        auth.start_with(quotas, settings).unwrap();
        auth
    }

    fn open(&self, quotas: Quotas) -> Result<Authority, AuthorityError> {
        Authority::open(self.dir.clone(), self.key(), quotas)
    }

    fn start_with(
        &mut self,
        quotas: Quotas,
        settings: ServeSettings,
    ) -> Result<(), AuthorityError> {
        let authority = Arc::new(self.open(quotas)?);
        self.local = Some(LocalAuthority::serve_with(authority, settings)?);
        Ok(())
    }

    fn start(&mut self, quotas: Quotas) -> Result<(), AuthorityError> {
        self.start_with(quotas, ServeSettings::default())
    }

    fn stop(&mut self) {
        if let Some(local) = self.local.take() {
            local.shutdown().unwrap();
        }
    }

    fn key(&self) -> AuthorityKey {
        AuthorityKey::read(&self.key_file).unwrap()
    }

    fn local(&self) -> &LocalAuthority {
        self.local.as_ref().unwrap()
    }

    fn url(&self) -> &str {
        self.local().url()
    }

    fn authority(&self) -> &Arc<Authority> {
        self.local().authority()
    }

    fn audit_events(&self) -> Vec<AuditEvent> {
        self.authority().with_audit_log(|log| {
            (0..log.size())
                .map(|i| log.record(i).unwrap().event)
                .collect()
        })
    }
}

#[test]
fn blind_seal_gives_the_direct_evaluation_and_records_mode_and_key() {
    let partner = Partner::new();
    let auth = Auth::new(&partner, Quotas::unlimited());
    let tokenizer = partner.tokenizer(auth.url(), &auth.public_file);
    let outcome = partner.seal(&tokenizer, &partner.export(ROWS), 1).unwrap();
    assert_eq!(outcome.manifest.tokens.mode, TokenMode::Blind);
    assert_eq!(&outcome.manifest.tokens.key_id, auth.local().key_id());
    // The key id is the public key's.
    assert_eq!(
        auth.local().key_id(),
        AuthorityPublicKey::read(&auth.public_file)
            .unwrap()
            .key_id()
    );
    assert_eq!(outcome.manifest.row_count, 4);

    let key = auth.key();
    let persons = partner.tokens(&outcome, "person");
    let expected: Vec<[u8; 16]> = [
        "11010519491231002X",
        "110105491231002",
        "110105198001010016",
        "440524188001010014",
    ]
    .iter()
    .map(|v| {
        *key.token_of(&normalise(IdentifierKind::Person, v).unwrap())
            .unwrap()
            .as_bytes()
    })
    .collect();
    assert_eq!(persons, expected.into_iter().map(Some).collect::<Vec<_>>());
    // The 15-digit form normalises to the 18-digit one: one token.
    assert_eq!(persons[0], persons[1]);
    assert_eq!(tokenizer.requested(), DISTINCT);
    assert_eq!(auth.authority().usage("hospital").total, DISTINCT as u64);
    // Every batch is audited with partner, count and the nonce's digest.
    let events = auth.audit_events();
    assert!(!events.is_empty());
    let mut counted = 0;
    for e in events {
        match e {
            AuditEvent::TokenEvaluation { partner, count, .. } => {
                assert_eq!(partner.as_str(), "hospital");
                counted += count;
            }
            other => panic!("unexpected audit event {other:?}"),
        }
    }
    assert_eq!(counted, DISTINCT as u64);
}

/// A loopback TCP proxy that records every byte the authority receives.
fn capturing_proxy(target: &str) -> (String, Arc<Mutex<Vec<u8>>>) {
    let upstream = target.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let captured = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let mut server = TcpStream::connect(&upstream).unwrap();
            let (mut client_r, mut server_w) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let captured = captured.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    match client_r.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = server_w.shutdown(Shutdown::Write);
                            return;
                        }
                        Ok(n) => {
                            captured.lock().unwrap().extend_from_slice(&buf[..n]);
                            if server_w.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(Shutdown::Write);
            });
        }
    });
    (url, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_authority_receives_no_identifier_nor_its_hash() {
    let partner = Partner::new();
    let auth = Auth::new(&partner, Quotas::unlimited());
    let (url, seen) = capturing_proxy(auth.url());
    let tokenizer = partner.tokenizer(&url, &auth.public_file);
    let outcome = partner.seal(&tokenizer, &partner.export(ROWS), 1).unwrap();
    assert_eq!(outcome.manifest.row_count, 4);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() > DISTINCT * ELEMENT_LEN,
        "the proxy saw the traffic"
    );
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for (kind, values) in [
        (IdentifierKind::Person, PERSONS),
        (IdentifierKind::Phone, PHONES),
    ] {
        for value in values {
            let id = normalise(kind, value).unwrap();
            let input = id.tokenizer_input().to_vec();
            for candidate in [value.as_bytes().to_vec(), input.clone()] {
                let sha = ring::digest::digest(&ring::digest::SHA256, &candidate);
                needles.push(candidate.clone());
                needles.push(hex::encode(&candidate).into_bytes());
                needles.push(sha.as_ref().to_vec());
                needles.push(hex::encode(sha.as_ref()).into_bytes());
                needles.push(hex::encode(sha.as_ref()).to_uppercase().into_bytes());
            }
        }
    }
    // Parts of values too: the last 8 digits of every ID and phone number.
    for v in PERSONS.iter().chain(PHONES) {
        needles.push(v.as_bytes()[v.len() - 8..].to_vec());
    }
    for needle in &needles {
        assert!(
            !contains(&seen, needle),
            "the authority received identifying bytes"
        );
    }
    // Nor a name or the tokens themselves.
    assert!(!contains(&seen, "张三".as_bytes()));
    for token in partner.tokens(&outcome, "person").into_iter().flatten() {
        assert!(!contains(&seen, &token));
    }
}

/// A request line, its headers (lower-case names) and its body.
type Request = (String, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 request (head and `content-length` body); `None` at end of stream.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse::<usize>().unwrap())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some((request_line, headers, body))
}

fn write_response(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// A man in the middle: `GET /v1/key` goes to `key_to`, everything else to `evaluate_to`;
/// the requests and answers are passed on unchanged.
fn routing_proxy(key_to: &str, evaluate_to: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (key_to, evaluate_to) = (key_to.to_owned(), evaluate_to.to_owned());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (key_to, evaluate_to) = (key_to.clone(), evaluate_to.clone());
            std::thread::spawn(move || {
                let Some((line, headers, body)) = read_request(&mut stream) else {
                    return;
                };
                let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut response = if line.starts_with("GET") {
                    agent.get(format!("{key_to}{path}")).call().unwrap()
                } else {
                    let mut request = agent.post(format!("{evaluate_to}{path}"));
                    for (k, v) in &headers {
                        if k.starts_with("x-blindwatch-") || k == "content-type" {
                            request = request.header(k.as_str(), v.as_str());
                        }
                    }
                    request.send(&body[..]).unwrap()
                };
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let answer = response.body_mut().read_to_vec().unwrap();
                write_response(&mut stream, status, &content_type, &answer);
            });
        }
    });
    url
}

#[test]
fn a_man_in_the_middle_with_another_key_fails_the_seal_with_nothing_written() {
    let partner = Partner::new();
    let real = Auth::new(&partner, Quotas::unlimited());
    // The attacker runs an authority of its own, which accepts the partner's signature.
    let evil = Auth::new(&partner, Quotas::unlimited());
    let input = partner.export(ROWS);
    let real_key = AuthorityPublicKey::read(&real.public_file).unwrap();

    // The key question goes to the real authority, the evaluations to another authority
    // that registered the partner: the signed text names the real key, so it refuses.
    let proxy = routing_proxy(real.url(), evil.url());
    let tokenizer = partner.tokenizer(&proxy, &real.public_file);
    let err = partner.seal(&tokenizer, &input, 1).unwrap_err();
    assert!(
        matches!(err, SealError::Token(TokenError::Refused(ref m)) if m.contains("HTTP 401")),
        "{err}"
    );
    assert_eq!(evil.authority().usage("hospital").total, 0);
    assert!(
        partner.outbox_files().is_empty(),
        "{:?}",
        partner.outbox_files()
    );

    // An attacker's authority that evaluates whatever it gets, under its own key, with a
    // valid proof for that key: the proof does not verify against the pinned key.
    let evil_key = Arc::new(evil.key());
    let evaluated = Arc::new(Mutex::new(0usize));
    let (k, n) = (evil_key.clone(), evaluated.clone());
    let attacker = fake_authority(
        evil_key.public_key(),
        Arc::new(move |b: &[u8]| {
            *n.lock().unwrap() += b.len() / ELEMENT_LEN;
            (200, k.evaluate_blinded(b).unwrap())
        }),
    );
    let proxy = routing_proxy(real.url(), &attacker);
    let tokenizer = partner.tokenizer(&proxy, &real.public_file);
    let err = partner.seal(&tokenizer, &input, 1).unwrap_err();
    assert!(
        matches!(err, SealError::Token(TokenError::BadAnswer(ref m)) if m.contains("does not verify")),
        "{err}"
    );
    assert!(
        partner.outbox_files().is_empty(),
        "{:?}",
        partner.outbox_files()
    );
    assert!(*evaluated.lock().unwrap() > 0, "the attacker did evaluate");
    assert_eq!(
        partner.cached_for(&real_key),
        0,
        "nothing of its answers was kept"
    );

    // Everything to the attacker: refused before a single element is sent.
    let proxy = routing_proxy(&attacker, &attacker);
    let used = *evaluated.lock().unwrap();
    let err = partner
        .connect(&Endpoint::new(&proxy), &Pin::File(real.public_file.clone()))
        .err()
        .unwrap();
    assert!(
        matches!(err, TokenError::BadAnswer(ref m) if m.contains("trusts key")),
        "{err}"
    );
    assert_eq!(*evaluated.lock().unwrap(), used);

    // A partner that trusted the real key on first use holds on to it.
    let recorded = partner.path("keys").join("token-authority.pub");
    let tofu = Pin::FirstUse(recorded.clone());
    partner.connect(&Endpoint::new(real.url()), &tofu).unwrap();
    let pinned = std::fs::read(&recorded).unwrap();
    for url in [
        routing_proxy(real.url(), &attacker),
        routing_proxy(&attacker, &attacker),
    ] {
        let result = partner.connect(&Endpoint::new(&url), &tofu).and_then(|t| {
            match partner.seal(&t, &input, 1) {
                Ok(_) => Ok(()),
                Err(SealError::Token(e)) => Err(e),
                Err(e) => panic!("{e}"),
            }
        });
        assert!(
            matches!(result, Err(TokenError::BadAnswer(_))),
            "{result:?}"
        );
        assert!(partner.outbox_files().is_empty());
    }
    assert_eq!(
        std::fs::read(&recorded).unwrap(),
        pinned,
        "the pin never changes"
    );

    // Sealing through the real authority still works.
    let tokenizer = partner.tokenizer(real.url(), &real.public_file);
    partner.seal(&tokenizer, &input, 1).unwrap();
}

/// `n` valid blinded elements, as a partner would send them.
fn blinded_elements(n: usize) -> Vec<u8> {
    struct Capture(Mutex<Vec<u8>>, AuthorityKey);
    impl BlindTransport for Capture {
        fn info(&self) -> Result<blindwatch_crypto::blind::AuthorityInfo, TokenError> {
            self.1.info()
        }
        fn evaluate(&self, blinded: &[u8]) -> Result<Vec<u8>, TokenError> {
            self.0.lock().unwrap().extend_from_slice(blinded);
            Err(TokenError::Unreachable("capture only".into()))
        }
    }
    let key = AuthorityKey::generate().unwrap();
    let public = key.public_key().clone();
    let capture = Arc::new(Capture(Mutex::new(Vec::new()), key));
    let t = BlindTokenizer::connect(capture.clone(), &public, None)
        .unwrap()
        .with_request_elements(n)
        .with_in_flight(1);
    let ids: Vec<_> = (0..n)
        .map(|i| normalise(IdentifierKind::Phone, &format!("138{i:08}")).unwrap())
        .collect();
    let refs: Vec<_> = ids.iter().collect();
    assert!(t.tokenize(&refs).is_err());
    let sent = capture.0.lock().unwrap().clone();
    assert_eq!(sent.len(), n * ELEMENT_LEN);
    sent
}

struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: String,
}

fn send(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = if method == "GET" {
        agent.get(format!("{url}{path}")).call().unwrap()
    } else {
        let mut request = agent.post(format!("{url}{path}"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send(body).unwrap()
    };
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    Answer {
        status: response.status().as_u16(),
        content_type,
        retry_after,
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn post_raw(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    send(url, "POST", auth::EVALUATE_PATH, headers, body)
}

fn headers_of(h: &auth::SignedHeaders) -> [(&'static str, &str); 4] {
    [
        (auth::HEADER_PARTNER, h.partner.as_str()),
        (auth::HEADER_TIME, h.time.as_str()),
        (auth::HEADER_NONCE, h.nonce.as_str()),
        (auth::HEADER_SIGNATURE, h.signature.as_str()),
    ]
}

fn signed_post(url: &str, key_id: &KeyId, key: &SigningKey, partner: &str, body: &[u8]) -> Answer {
    let h = auth::sign_request(key_id, partner, key, body).unwrap();
    post_raw(url, &headers_of(&h), body)
}

fn is_problem(a: &Answer, status: u16, code: &str) -> bool {
    a.status == status
        && a.content_type == "application/problem+json"
        && a.body.contains(&format!("\"/problems/{code}\""))
}

#[test]
fn over_quota_is_refused_whole_and_a_retry_asks_only_for_the_rest() {
    let partner = Partner::new();
    // One element per request, so the seal gets some of its tokens before the refusal.
    let tight = Quotas {
        max_batch: 1,
        ..Quotas::uniform(Limits {
            per_day: 3,
            total: 100,
        })
    };
    let mut auth = Auth::new(&partner, tight.clone());
    let key_id = auth.local().key_id().clone();

    // Over the daily quota: a 429 problem, refused whole, nothing used or audited.
    let answer = signed_post(
        auth.url(),
        &key_id,
        &partner.signing,
        "hospital",
        &blinded_elements(1),
    );
    assert_eq!(answer.status, 200);
    let big = Quotas {
        max_batch: 8,
        ..tight.clone()
    };
    auth.stop();
    auth.start(big).unwrap();
    let answer = signed_post(
        auth.url(),
        &key_id,
        &partner.signing,
        "hospital",
        &blinded_elements(3),
    );
    assert!(is_problem(&answer, 429, "over-quota"), "{}", answer.body);
    assert!(
        answer.body.contains("daily quota") && answer.body.contains("nothing was evaluated"),
        "{}",
        answer.body
    );
    assert_eq!(auth.authority().usage("hospital").total, 1);
    auth.stop();

    // A seal that runs into the quota fails, writes no package, and keeps the two tokens
    // it got (one element per request) in its encrypted cache.
    auth.start(tight).unwrap();
    let public = AuthorityPublicKey::read(&auth.public_file).unwrap();
    let input = partner.export(ROWS);
    let tokenizer = partner.tokenizer(auth.url(), &auth.public_file);
    assert_eq!(
        tokenizer.request_elements(),
        1,
        "learned from the authority"
    );
    let err = partner.seal(&tokenizer, &input, 1).unwrap_err();
    assert!(
        matches!(err, SealError::Token(TokenError::Refused(ref m)) if m.contains("HTTP 429") && m.contains("daily quota")),
        "{err}"
    );
    assert!(
        partner.outbox_files().is_empty(),
        "{:?}",
        partner.outbox_files()
    );
    assert_eq!(auth.authority().usage("hospital").today, 3);
    assert_eq!(partner.cached_for(&public), 2);
    auth.stop();

    // Tomorrow, as it were (a higher quota after a restart): usage is recovered from the
    // ledger and the log, and the retry asks only for the three values it lacks.
    auth.start(Quotas::uniform(Limits {
        per_day: 100,
        total: 100,
    }))
    .unwrap();
    assert_eq!(auth.authority().usage("hospital").today, 3);
    let tokenizer = partner.tokenizer(auth.url(), &auth.public_file);
    assert_eq!(tokenizer.cached(), 2);
    let outcome = partner.seal(&tokenizer, &input, 1).unwrap();
    assert_eq!(tokenizer.requested(), DISTINCT - 2);
    assert_eq!(outcome.manifest.row_count, 4);
    assert_eq!(auth.authority().usage("hospital").total, 3 + 3);
    // Every evaluated element is in the log, once.
    let logged: u64 = auth
        .audit_events()
        .iter()
        .map(|e| match e {
            AuditEvent::TokenEvaluation { count, .. } => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(logged, 6);
}

#[test]
fn requests_must_be_signed_by_a_registered_partner_fresh_and_for_this_authority() {
    let partner = Partner::new();
    let auth = Auth::new(&partner, Quotas::unlimited());
    let key_id = auth.local().key_id().clone();
    let url = auth.url().to_owned();
    let body = blinded_elements(2);
    // No signature at all.
    let a = post_raw(&url, &[], &body);
    assert!(
        is_problem(&a, 401, "bad-authentication-headers"),
        "{}",
        a.body
    );
    // Signed by another key, and by an unregistered partner: the same refusal, word for
    // word, so a caller cannot tell registered names from unknown ones.
    let stranger = SigningKey::generate().unwrap();
    let bad_signature = signed_post(&url, &key_id, &stranger, "hospital", &body);
    let unknown = signed_post(&url, &key_id, &stranger, "insurance", &body);
    assert!(is_problem(&bad_signature, 401, "not-authenticated"));
    assert_eq!(
        (bad_signature.status, &bad_signature.body),
        (unknown.status, &unknown.body)
    );
    assert!(bad_signature.body.contains(NOT_AUTHENTICATED));
    // Signed for another authority's key: refused here too.
    let other = AuthorityKey::generate().unwrap();
    let elsewhere = signed_post(&url, other.key_id(), &partner.signing, "hospital", &body);
    assert_eq!(elsewhere.body, unknown.body);
    // A replay of a good request.
    let h = auth::sign_request(&key_id, "hospital", &partner.signing, &body).unwrap();
    assert_eq!(post_raw(&url, &headers_of(&h), &body).status, 200);
    let replay = post_raw(&url, &headers_of(&h), &body);
    assert!(is_problem(&replay, 401, "replayed"), "{}", replay.body);
    // A signed body that was altered on the way.
    let h = auth::sign_request(&key_id, "hospital", &partner.signing, &body).unwrap();
    let altered = post_raw(&url, &headers_of(&h), &body[..ELEMENT_LEN]);
    assert_eq!(altered.body, unknown.body);
    // Times outside the window, and times no arithmetic may wrap on.
    let now = chrono::Utc::now().timestamp();
    for skewed in [now - 301, now + 301, 0] {
        let h =
            auth::sign_request_at(&key_id, "hospital", &partner.signing, &body, skewed).unwrap();
        let a = post_raw(&url, &headers_of(&h), &body);
        assert!(is_problem(&a, 401, "clock-skew"), "{}", a.body);
    }
    for time in [
        "-9223372036854775808",
        "9223372036854775807",
        "99999999999999999999",
        "1e9",
        "",
    ] {
        let h = auth::sign_request(&key_id, "hospital", &partner.signing, &body).unwrap();
        let mut headers = headers_of(&h);
        headers[1].1 = time;
        let a = post_raw(&url, &headers, &body);
        assert!(
            is_problem(&a, 401, "bad-authentication-headers"),
            "{time}: {}",
            a.body
        );
    }
    // Malformed elements: 400 and nothing used.
    let a = signed_post(&url, &key_id, &partner.signing, "hospital", &[0xffu8; 64]);
    assert!(is_problem(&a, 400, "malformed"), "{}", a.body);
    let a = signed_post(&url, &key_id, &partner.signing, "hospital", &[1u8; 33]);
    assert!(is_problem(&a, 400, "malformed"), "{}", a.body);
    assert_eq!(auth.authority().usage("hospital").total, 2);

    // A request answered by this authority is refused by another that knows the partner.
    let second = Auth::new(&partner, Quotas::unlimited());
    let h = auth::sign_request(&key_id, "hospital", &partner.signing, &body).unwrap();
    assert_eq!(post_raw(&url, &headers_of(&h), &body).status, 200);
    let replayed_elsewhere = post_raw(second.url(), &headers_of(&h), &body);
    assert_eq!(replayed_elsewhere.body, unknown.body);
    assert_eq!(second.authority().usage("hospital").total, 0);
}

#[test]
fn a_replay_after_a_restart_is_refused() {
    let partner = Partner::new();
    let mut auth = Auth::new(&partner, Quotas::unlimited());
    let key_id = auth.local().key_id().clone();
    let body = blinded_elements(2);
    let h = auth::sign_request(&key_id, "hospital", &partner.signing, &body).unwrap();
    assert_eq!(post_raw(auth.url(), &headers_of(&h), &body).status, 200);
    auth.stop();
    auth.start(Quotas::unlimited()).unwrap();
    assert_eq!(
        auth.authority().nonces_kept(),
        1,
        "recovered from the audit log"
    );
    let replay = post_raw(auth.url(), &headers_of(&h), &body);
    assert!(is_problem(&replay, 401, "replayed"), "{}", replay.body);
    assert_eq!(auth.authority().usage("hospital").total, 2);
    assert_eq!(auth.audit_events().len(), 1);
    // A new request is fine.
    let fresh = signed_post(auth.url(), &key_id, &partner.signing, "hospital", &body);
    assert_eq!(fresh.status, 200);
}

#[test]
fn refused_requests_leave_nothing_in_the_nonce_book() {
    let partner = Partner::new();
    let auth = Auth::new(
        &partner,
        Quotas::uniform(Limits {
            per_day: 2,
            total: 2,
        }),
    );
    let key_id = auth.local().key_id().clone();
    let authority = auth.authority().clone();
    assert_eq!(
        signed_post(
            auth.url(),
            &key_id,
            &partner.signing,
            "hospital",
            &blinded_elements(2)
        )
        .status,
        200
    );
    assert_eq!(authority.nonces_kept(), 1);
    let stranger = SigningKey::generate().unwrap();
    for _ in 0..10 {
        let over = signed_post(
            auth.url(),
            &key_id,
            &partner.signing,
            "hospital",
            &blinded_elements(1),
        );
        assert!(is_problem(&over, 429, "over-quota"), "{}", over.body);
        let bad = signed_post(
            auth.url(),
            &key_id,
            &stranger,
            "hospital",
            &blinded_elements(1),
        );
        assert_eq!(bad.status, 401);
        let malformed = signed_post(
            auth.url(),
            &key_id,
            &partner.signing,
            "hospital",
            &[0xff; 32],
        );
        assert_eq!(malformed.status, 400);
    }
    assert_eq!(authority.nonces_kept(), 1);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "lock" {
            continue;
        }
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_lost_or_rolled_back_log_stops_the_authority_instead_of_resetting_quotas() {
    let partner = Partner::new();
    let mut auth = Auth::new(&partner, Quotas::unlimited());
    let key_id = auth.local().key_id().clone();
    for n in [2, 3] {
        let a = signed_post(
            auth.url(),
            &key_id,
            &partner.signing,
            "hospital",
            &blinded_elements(n),
        );
        assert_eq!(a.status, 200);
    }
    auth.stop();
    let backup = auth._tmp.path().join("audit-backup");
    copy_dir(&auth.dir.audit_dir(), &backup);
    auth.start(Quotas::unlimited()).unwrap();
    let a = signed_post(
        auth.url(),
        &key_id,
        &partner.signing,
        "hospital",
        &blinded_elements(4),
    );
    assert_eq!(a.status, 200);
    auth.stop();

    // Without the ledger, usage is recounted from the log: nothing is lost.
    std::fs::remove_file(auth.dir.ledger_file()).unwrap();
    let reopened = auth.open(Quotas::unlimited()).unwrap();
    assert_eq!(reopened.usage("hospital").total, 9);
    drop(reopened);

    // The log rolled back to an older copy (fewer entries than the ledger recorded).
    let live = auth._tmp.path().join("audit-live");
    std::fs::rename(auth.dir.audit_dir(), &live).unwrap();
    copy_dir(&backup, &auth.dir.audit_dir());
    let err = auth.open(Quotas::unlimited()).err().unwrap();
    assert!(
        matches!(
            err,
            AuthorityError::Truncated {
                size: 2,
                expected: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("restore"), "{err}");

    // The log gone.
    std::fs::remove_dir_all(auth.dir.audit_dir()).unwrap();
    let err = auth.open(Quotas::unlimited()).err().unwrap();
    assert!(matches!(err, AuthorityError::MissingLog { .. }), "{err}");
    assert!(
        !auth.dir.audit_dir().exists(),
        "a refused start creates no empty log"
    );

    // Put back, it starts with every partner's usage.
    std::fs::rename(&live, auth.dir.audit_dir()).unwrap();
    auth.start(Quotas::unlimited()).unwrap();
    assert_eq!(auth.authority().usage("hospital").total, 9);
}

#[test]
fn operator_mistakes_are_refused() {
    let partner = Partner::new();
    let auth = Auth::new(&partner, Quotas::unlimited());
    // One key under a second name would get a second quota.
    let err = auth
        .dir
        .add_partner("insurance", &partner.signing.verifying_key())
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::DuplicateKey { ref partner } if partner == "hospital"),
        "{err}"
    );
    let err = auth
        .local()
        .register_partner("insurance", &partner.signing.verifying_key())
        .unwrap_err();
    assert!(matches!(err, AuthorityError::DuplicateKey { .. }), "{err}");
    // A register edited by hand to the same effect is refused when read.
    let text = std::fs::read_to_string(auth.dir.partners_file()).unwrap();
    let key_line = text
        .lines()
        .find(|l| l.starts_with("key"))
        .unwrap()
        .to_owned();
    std::fs::write(
        auth.dir.partners_file(),
        format!("{text}\n[partners.insurance]\n{key_line}\n"),
    )
    .unwrap();
    let err = auth.dir.partners().unwrap_err();
    assert!(err.to_string().contains("same public key"), "{err}");
    std::fs::write(auth.dir.partners_file(), &text).unwrap();

    // A misspelt per-partner quota is refused at start.
    let mut quotas = Quotas::unlimited();
    quotas.partners.insert(
        "hospitl".into(),
        Limits {
            per_day: 1,
            total: 1,
        },
    );
    let second = tempfile::tempdir().unwrap();
    let dir = AuthorityDir::new(second.path());
    dir.add_partner("hospital", &partner.signing.verifying_key())
        .unwrap();
    let err = Authority::open(dir, AuthorityKey::generate().unwrap(), quotas)
        .err()
        .unwrap();
    assert!(err.to_string().contains("`hospitl`"), "{err}");
}

#[test]
fn limits_are_enforced_and_every_refusal_is_a_problem() {
    let partner = Partner::new();
    let quotas = Quotas {
        max_batch: 2,
        rate: RateLimit {
            per_second: 1,
            burst: 2,
        },
        ..Quotas::unlimited()
    };
    let auth = Auth::new(&partner, quotas);
    let key_id = auth.local().key_id().clone();
    let url = auth.url().to_owned();
    // The key description names the batch limit and the public key.
    let info = send(&url, "GET", auth::KEY_PATH, &[], b"");
    assert_eq!(info.status, 200);
    let info: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(info["max_batch"], 2);
    assert_eq!(info["mode"], "voprf");
    assert_eq!(info["key_id"], key_id.as_str());

    // A body over max_batch elements: 413 problem, before anything else is looked at.
    let a = signed_post(
        &url,
        &key_id,
        &partner.signing,
        "hospital",
        &blinded_elements(3),
    );
    assert!(
        is_problem(&a, 413, "body-too-large"),
        "{} {}",
        a.status,
        a.body
    );
    assert!(a.body.contains("max_batch"), "{}", a.body);
    // Unknown routes and methods.
    assert!(is_problem(
        &send(&url, "GET", "/v1/other", &[], b""),
        404,
        "not-found"
    ));
    assert!(is_problem(
        &send(&url, "GET", auth::EVALUATE_PATH, &[], b""),
        405,
        "method-not-allowed"
    ));
    // Requests beyond the partner's rate: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..4 {
        let a = signed_post(
            &url,
            &key_id,
            &partner.signing,
            "hospital",
            &blinded_elements(1),
        );
        if a.status != 200 {
            limited = Some(a);
            break;
        }
    }
    let limited = limited.expect("the rate limit refuses a burst beyond 2");
    assert!(
        is_problem(&limited, 429, "rate-limited"),
        "{}",
        limited.body
    );
    assert!(limited.retry_after.is_some());

    // The partner tool sizes its requests to max_batch and waits out the rate limit.
    let tokenizer = partner.tokenizer(&url, &auth.public_file);
    assert_eq!(tokenizer.request_elements(), 2);
    partner.seal(&tokenizer, &partner.export(ROWS), 1).unwrap();
    assert_eq!(tokenizer.requested(), DISTINCT);
    for e in auth.audit_events() {
        if let AuditEvent::TokenEvaluation { count, .. } = e {
            assert!(count <= 2);
        }
    }
}

fn checkpoint_size(text: &str) -> u64 {
    text.lines().nth(1).unwrap().parse().unwrap()
}

#[test]
fn checkpoints_are_signed_while_running_on_demand_and_at_shutdown() {
    let partner = Partner::new();
    let mut auth = Auth::with_settings(
        &partner,
        Quotas::unlimited(),
        ServeSettings {
            checkpoint_every: Duration::from_secs(1),
            ..ServeSettings::default()
        },
    );
    let key_id = auth.local().key_id().clone();
    let a = signed_post(
        auth.url(),
        &key_id,
        &partner.signing,
        "hospital",
        &blinded_elements(1),
    );
    assert_eq!(a.status, 200);
    // `audit checkpoint` reaches the running authority, which holds the log.
    let text = control::checkpoint(&auth.dir).unwrap();
    assert_eq!(checkpoint_size(&text), 1);
    assert!(
        text.starts_with("blindwatch.local/token-authority\n"),
        "{text}"
    );
    // Periodic checkpoints (and ledgers) follow new entries.
    let a = signed_post(
        auth.url(),
        &key_id,
        &partner.signing,
        "hospital",
        &blinded_elements(1),
    );
    assert_eq!(a.status, 200);
    let started = Instant::now();
    loop {
        let ledger: serde_json::Value =
            serde_json::from_slice(&std::fs::read(auth.dir.ledger_file()).unwrap()).unwrap();
        if ledger["audit_size"] == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no periodic checkpoint"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let a = signed_post(
        auth.url(),
        &key_id,
        &partner.signing,
        "hospital",
        &blinded_elements(1),
    );
    assert_eq!(a.status, 200);
    auth.stop();
    // The last entry is covered by the shutdown checkpoint; the log verifies.
    let vkey = std::fs::read_to_string(auth.dir.log_public_key()).unwrap();
    let report = blindwatch_audit::verify(
        auth.dir.audit_dir(),
        &LogPublicKey::from_vkey(vkey.trim()).unwrap(),
    )
    .unwrap();
    assert!(report.is_ok(), "{report}");
    let text = control::checkpoint(&auth.dir).unwrap();
    assert_eq!(checkpoint_size(&text), 3);
    assert!(!auth.dir.control_socket().exists());
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA with a server certificate for 127.0.0.1 and a client certificate; another CA;
    /// and a self-signed server certificate for 127.0.0.1.
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = |name: &str| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert, key)
        };
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let (ca_cert, ca_key) = ca("authority ca");
        let (other, _) = ca("other ca");
        write("ca.pem", &ca_cert.pem());
        write("other-ca.pem", &other.pem());
        for (name, san) in [("server", "127.0.0.1"), ("client", "hospital")] {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![san.to_owned()])
                .unwrap()
                .signed_by(&key, &ca_cert, &ca_key)
                .unwrap();
            write(&format!("{name}.pem"), &cert.pem());
            write(&format!("{name}.key"), &key.serialize_pem());
        }
        let own = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        write("self.pem", &own.cert.pem());
        write("self.key", &own.key_pair.serialize_pem());
        Pki { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn settings(&self, cert: &str, client_ca: Option<&str>) -> ServeSettings {
        let ca = client_ca.map(|c| self.path(c));
        ServeSettings {
            net: blindwatch_net::ServeOptions {
                tls: Some(
                    blindwatch_net::tls_config(
                        &self.path(&format!("{cert}.pem")),
                        &self.path(&format!("{cert}.key")),
                        ca.as_deref(),
                    )
                    .unwrap(),
                ),
                ..blindwatch_net::ServeOptions::default()
            },
            ..ServeSettings::default()
        }
    }
}

#[test]
fn tls_with_a_ca_a_pinned_certificate_and_client_certificates() {
    let partner = Partner::new();
    let pki = Pki::new();
    let mut auth = Auth::with_settings(&partner, Quotas::unlimited(), pki.settings("server", None));
    assert!(auth.url().starts_with("https://127.0.0.1:"));
    let pin = Pin::File(auth.public_file.clone());
    let input = partner.export(ROWS);
    let endpoint = |url: &str, ca: Option<&str>, client: bool| Endpoint {
        url: url.to_owned(),
        ca: ca.map(|c| pki.path(c)),
        client_cert: client.then(|| (pki.path("client.pem"), pki.path("client.key"))),
        allow_plain_http: false,
    };
    let tokenizer = partner
        .connect(&endpoint(auth.url(), Some("ca.pem"), false), &pin)
        .unwrap();
    partner.seal(&tokenizer, &input, 1).unwrap();
    // No CA given, or another CA: refused before anything is sent.
    let err = partner
        .connect(&endpoint(auth.url(), None, false), &pin)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--authority-ca"), "{err}");
    let err = partner
        .connect(&endpoint(auth.url(), Some("other-ca.pem"), false), &pin)
        .err()
        .unwrap();
    assert!(matches!(err, TokenError::Unreachable(_)), "{err}");
    // Plain HTTP to the TLS port gets nowhere.
    let plain = auth.url().replace("https://", "http://");
    assert!(partner.connect(&Endpoint::new(&plain), &pin).is_err());
    auth.stop();

    // The authority's own self-signed certificate, pinned as the only one to trust.
    auth.start_with(Quotas::unlimited(), pki.settings("self", None))
        .unwrap();
    let tokenizer = partner
        .connect(&endpoint(auth.url(), Some("self.pem"), false), &pin)
        .unwrap();
    partner.seal(&tokenizer, &input, 2).unwrap();
    assert!(
        partner
            .connect(&endpoint(auth.url(), Some("ca.pem"), false), &pin)
            .is_err()
    );
    auth.stop();

    // Client certificates required.
    auth.start_with(Quotas::unlimited(), pki.settings("server", Some("ca.pem")))
        .unwrap();
    let err = partner
        .connect(&endpoint(auth.url(), Some("ca.pem"), false), &pin)
        .err()
        .unwrap();
    assert!(matches!(err, TokenError::Unreachable(_)), "{err}");
    let tokenizer = partner
        .connect(&endpoint(auth.url(), Some("ca.pem"), true), &pin)
        .unwrap();
    partner.seal(&tokenizer, &input, 3).unwrap();
}

type Responder = Arc<dyn Fn(&[u8]) -> (u16, Vec<u8>) + Send + Sync>;

/// A fake authority: the real key's description (so the pin matches), then `answer` to
/// every evaluation.
fn fake_authority(public: &AuthorityPublicKey, answer: Responder) -> String {
    use base64::Engine;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let info = serde_json::json!({
        "key_id": public.key_id().as_str(),
        "public_key": base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
        "mode": "voprf",
        "suite": "ristretto255-SHA512",
        "max_batch": 64,
    })
    .to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (answer, info) = (answer.clone(), info.clone());
            std::thread::spawn(move || {
                let Some((line, _, body)) = read_request(&mut stream) else {
                    return;
                };
                if line.starts_with("GET /v1/key") {
                    write_response(&mut stream, 200, "application/json", info.as_bytes());
                } else {
                    let (status, body) = answer(&body);
                    write_response(&mut stream, status, "application/octet-stream", &body);
                }
            });
        }
    });
    url
}

#[test]
fn an_unreachable_or_lying_authority_fails_the_seal_with_nothing_written() {
    let partner = Partner::new();
    let input = partner.export(ROWS);
    let key = Arc::new(AuthorityKey::generate().unwrap());
    let other = Arc::new(AuthorityKey::generate().unwrap());
    let public = key.public_key().clone();
    let public_file = partner.path("authority.pub");
    public.write(&public_file).unwrap();
    let pin = Pin::File(public_file.clone());
    // Nobody listens.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = partner
        .connect(&Endpoint::new(&format!("http://{port}")), &pin)
        .err()
        .unwrap();
    assert!(matches!(err, TokenError::Unreachable(_)), "{err}");

    let (k, o) = (key.clone(), other.clone());
    let cases: Vec<(Responder, &str)> = vec![
        // Not group elements.
        (
            Arc::new(|b: &[u8]| (200, vec![0xff; PROOF_LEN + b.len()])),
            "not",
        ),
        // Too short.
        (
            Arc::new(|b: &[u8]| (200, vec![0; b.len() / 2])),
            "bytes answered",
        ),
        // Server error.
        (
            Arc::new(|_: &[u8]| {
                (
                    500,
                    br#"{"type":"/problems/x","title":"x","status":500,"detail":"boom"}"#.to_vec(),
                )
            }),
            "HTTP 500",
        ),
        // The elements echoed back (a key of 1) behind a proof of the real key's.
        (
            Arc::new(move |b: &[u8]| {
                let mut out = k.evaluate_blinded(b).unwrap()[..PROOF_LEN].to_vec();
                out.extend_from_slice(b);
                (200, out)
            }),
            "does not verify",
        ),
        // A proper evaluation, under another key.
        (
            Arc::new(move |b: &[u8]| (200, o.evaluate_blinded(b).unwrap())),
            "does not verify",
        ),
    ];
    for (answer, expect) in cases {
        let url = fake_authority(&public, answer);
        let tokenizer = partner.connect(&Endpoint::new(&url), &pin).unwrap();
        let err = partner.seal(&tokenizer, &input, 1).unwrap_err();
        assert!(matches!(err, SealError::Token(_)), "{err}");
        assert!(err.to_string().contains(expect), "{expect}: {err}");
        assert!(
            partner.outbox_files().is_empty(),
            "{:?}",
            partner.outbox_files()
        );
    }

    // The authority goes away between the key question and the evaluations.
    let auth = Auth::new(&partner, Quotas::unlimited());
    let tokenizer = partner.tokenizer(auth.url(), &auth.public_file);
    drop(auth);
    let err = partner.seal(&tokenizer, &input, 1).unwrap_err();
    assert!(
        matches!(err, SealError::Token(TokenError::Unreachable(_))),
        "{err}"
    );
    assert!(
        partner.outbox_files().is_empty(),
        "{:?}",
        partner.outbox_files()
    );
}

#[test]
fn a_later_seal_sends_only_values_it_has_not_seen() {
    let partner = Partner::new();
    let auth = Auth::new(&partner, Quotas::unlimited());
    let first = {
        let tokenizer = partner.tokenizer(auth.url(), &auth.public_file);
        let outcome = partner
            .seal(&tokenizer, &partner.export(&ROWS[..2]), 1)
            .unwrap();
        assert_eq!(tokenizer.requested(), 2);
        outcome
    };
    // A new run (a new process would do the same): the cache is read back from disk.
    let cache_files: Vec<_> = std::fs::read_dir(partner.path("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cache_files.iter().any(|f| f == "token-cache.key"),
        "{cache_files:?}"
    );
    assert!(
        cache_files.contains(&format!("tokens-{}.cache", auth.local().key_id())),
        "{cache_files:?}"
    );
    let tokenizer = partner.tokenizer(auth.url(), &auth.public_file);
    assert_eq!(tokenizer.cached(), 2);
    let second = partner.seal(&tokenizer, &partner.export(ROWS), 2).unwrap();
    // Only the two new persons and the one new phone went to the authority.
    assert_eq!(tokenizer.requested(), 3);
    assert_eq!(auth.authority().usage("hospital").total, 5);
    let (a, b) = (
        partner.tokens(&first, "person"),
        partner.tokens(&second, "person"),
    );
    assert_eq!(a[..], b[..2]);
}

#[test]
fn a_new_key_gives_a_new_key_id_and_different_tokens() {
    let partner = Partner::new();
    let old = Auth::new(&partner, Quotas::unlimited());
    let new = Auth::new(&partner, Quotas::unlimited());
    assert_ne!(old.local().key_id(), new.local().key_id());
    let input = partner.export(ROWS);
    let a = partner
        .seal(&partner.tokenizer(old.url(), &old.public_file), &input, 1)
        .unwrap();
    let b = partner
        .seal(&partner.tokenizer(new.url(), &new.public_file), &input, 2)
        .unwrap();
    assert_eq!(&a.manifest.tokens.key_id, old.local().key_id());
    assert_eq!(&b.manifest.tokens.key_id, new.local().key_id());
    let (ta, tb) = (partner.tokens(&a, "person"), partner.tokens(&b, "person"));
    for (x, y) in ta.iter().zip(&tb) {
        assert_ne!(x, y);
    }
    // The caches are per key: the new key's run asked for every value again.
    assert_eq!(new.authority().usage("hospital").total, 5);
}

#[test]
fn trust_on_first_use_records_the_key_once_and_holds_it() {
    let partner = Partner::new();
    let first = Auth::new(&partner, Quotas::unlimited());
    let recorded = partner.path("keys").join("token-authority.pub");
    let pin = Pin::FirstUse(recorded.clone());
    let connected = blind_tokenizer(
        &Endpoint::new(first.url()),
        "hospital",
        partner.signing.clone(),
        &partner.path("keys"),
        &pin,
    )
    .unwrap();
    assert!(connected.recorded);
    assert_eq!(
        AuthorityPublicKey::read(&recorded).unwrap(),
        AuthorityPublicKey::read(&first.public_file).unwrap()
    );
    let again = blind_tokenizer(
        &Endpoint::new(first.url()),
        "hospital",
        partner.signing.clone(),
        &partner.path("keys"),
        &pin,
    )
    .unwrap();
    assert!(!again.recorded);
    // Another authority at the same address later (a rotation nobody announced, or an
    // impostor): refused, the record unchanged.
    let before = std::fs::read(&recorded).unwrap();
    let second = Auth::new(&partner, Quotas::unlimited());
    let err = partner
        .connect(&Endpoint::new(second.url()), &pin)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--authority-key"), "{err}");
    assert_eq!(std::fs::read(&recorded).unwrap(), before);
    // The HTTP transport signs for the pinned key only.
    let transport = HttpTransport::new(
        &Endpoint::new(second.url()),
        "hospital",
        partner.signing.clone(),
        &AuthorityPublicKey::read(&recorded).unwrap(),
    )
    .unwrap();
    let err = transport.evaluate(&blinded_elements(1)).unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
}
