#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The token authority end to end over loopback HTTP: blind sealing, what the authority
//! sees, quotas, authentication, failures, the partner cache and key rotation.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch};
use blindwatch_audit::{AuditEvent, AuditLog, LogSigner};
use blindwatch_common::{IdentifierKind, normalise};
use blindwatch_contract::Contract;
use blindwatch_crypto::blind::{AuthorityKey, BlindTokenizer, BlindTransport, ELEMENT_LEN};
use blindwatch_crypto::sealing::{PlatformKeyRetriever, Release};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{TokenError, TokenMode, Tokenizer};
use blindwatch_crypto::wrap::{PlatformPrivateKey, PlatformPublicKey};
use blindwatch_partner::{Encoding, InputFormat, SealError, SealOptions, SealOutcome, seal};
use blindwatch_tokens::{
    Authority, HttpTransport, Limits, LocalAuthority, Quotas, auth, blind_tokenizer,
};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

const HEADER: &str =
    "visit_id,id_number,patient_name,phone,hospital,department,diagnosis_group,visit_date";
/// Raw values as exported, and their normalised forms (what the tokenizer evaluates).
const ROWS: &[&str] = &[
    "V1,11010519491231002X,张三,13812345678,临江区人民医院,emergency,injury,2026-11-01",
    "V2, 110105491231002 ,张三,+86 138-1234-5678,临江区人民医院,psychiatry,psychiatric,2026/11/02",
    "V3,110105198001010016,李四,,临江区人民医院,surgery,injury,2026-11-03",
    "V5,440524188001010014,赵六,13900000000,临江区人民医院,internal,other,2026-11-04",
];
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
    fn tokenizer(&self, url: &str) -> BlindTokenizer {
        std::fs::create_dir_all(self.path("keys")).unwrap();
        blind_tokenizer(url, "hospital", self.signing.clone(), &self.path("keys")).unwrap()
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
}

fn contract() -> Contract {
    Contract::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets/hospital.visits.toml"),
    )
    .unwrap()
}

/// A key and a second handle on the same key (through its file).
fn key_pair() -> (AuthorityKey, AuthorityKey, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authority.key");
    AuthorityKey::generate().unwrap().write(&path).unwrap();
    (
        AuthorityKey::read(&path).unwrap(),
        AuthorityKey::read(&path).unwrap(),
        dir,
    )
}

fn audit_log(dir: &Path, key: &SigningKey) -> AuditLog {
    AuditLog::open(
        dir,
        LogSigner::from_pkcs8("test/token-authority", key.pkcs8()).unwrap(),
    )
    .unwrap()
}

fn start(key: AuthorityKey, quotas: Quotas, partner: &Partner) -> LocalAuthority {
    let authority = LocalAuthority::start(key, quotas, None).unwrap();
    authority
        .register_partner("hospital", &partner.signing.verifying_key())
        .unwrap();
    authority
}

#[test]
fn blind_seal_gives_the_direct_evaluation_and_records_mode_and_key() {
    let partner = Partner::new();
    let (key, same_key, _k) = key_pair();
    let authority = start(key, Quotas::unlimited(), &partner);
    let tokenizer = partner.tokenizer(authority.url());
    let outcome = partner.seal(&tokenizer, &partner.export(ROWS), 1).unwrap();
    assert_eq!(outcome.manifest.tokens.mode, TokenMode::Blind);
    assert_eq!(&outcome.manifest.tokens.key_id, authority.key_id());
    assert_eq!(outcome.manifest.row_count, 4);

    let persons = partner.tokens(&outcome, "person");
    let expected: Vec<[u8; 16]> = [
        "11010519491231002X",
        "110105491231002",
        "110105198001010016",
        "440524188001010014",
    ]
    .iter()
    .map(|v| {
        *same_key
            .token_of(&normalise(IdentifierKind::Person, v).unwrap())
            .unwrap()
            .as_bytes()
    })
    .collect();
    assert_eq!(persons, expected.into_iter().map(Some).collect::<Vec<_>>());
    // The 15-digit form normalises to the 18-digit one: one token.
    assert_eq!(persons[0], persons[1]);
    // 3 distinct persons + 2 distinct phones were evaluated, nothing more.
    assert_eq!(tokenizer.requested(), 5);
    assert_eq!(authority.authority().usage("hospital").total, 5);
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
    let (key, _, _k) = key_pair();
    let authority = start(key, Quotas::unlimited(), &partner);
    let (url, seen) = capturing_proxy(authority.url());
    let tokenizer = partner.tokenizer(&url);
    let outcome = partner.seal(&tokenizer, &partner.export(ROWS), 1).unwrap();
    assert_eq!(outcome.manifest.row_count, 4);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 5 * ELEMENT_LEN, "the proxy saw the traffic");
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

/// A transport that records what it would send and refuses to evaluate.
#[derive(Default)]
struct Capture {
    sent: Mutex<Vec<u8>>,
}

impl BlindTransport for Capture {
    fn key_id(&self) -> Result<blindwatch_crypto::KeyId, TokenError> {
        Ok(blindwatch_crypto::KeyId::derive("capture", b""))
    }
    fn evaluate(&self, blinded: &[u8]) -> Result<blindwatch_crypto::blind::Evaluation, TokenError> {
        self.sent.lock().unwrap().extend_from_slice(blinded);
        Err(TokenError::Unreachable("capture only".into()))
    }
}

/// `n` valid blinded elements, as a partner would send them.
fn blinded_elements(n: usize) -> Vec<u8> {
    let capture = Arc::new(Capture::default());
    let t = BlindTokenizer::connect(capture.clone(), None)
        .unwrap()
        .with_request_elements(n)
        .with_in_flight(1);
    let ids: Vec<_> = (0..n)
        .map(|i| normalise(IdentifierKind::Phone, &format!("138{i:08}")).unwrap())
        .collect();
    let refs: Vec<_> = ids.iter().collect();
    assert!(t.tokenize(&refs).is_err());
    let sent = capture.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), n * ELEMENT_LEN);
    sent
}

fn post_raw(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut request = ureq::post(format!("{url}{}", auth::EVALUATE_PATH))
        .config()
        .http_status_as_error(false)
        .build();
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.send(body).unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

fn signed_post(url: &str, key: &SigningKey, partner: &str, body: &[u8]) -> (u16, String) {
    let h = auth::sign_request(partner, key, body).unwrap();
    post_raw(
        url,
        &[
            (auth::HEADER_PARTNER, &h.partner),
            (auth::HEADER_TIME, &h.time),
            (auth::HEADER_NONCE, &h.nonce),
            (auth::HEADER_SIGNATURE, &h.signature),
        ],
        body,
    )
}

#[test]
fn over_quota_is_refused_whole_with_429_and_nothing_is_evaluated() {
    let partner = Partner::new();
    let (key, _, _k) = key_pair();
    let audit_dir = tempfile::tempdir().unwrap();
    let log_key = SigningKey::generate().unwrap();
    let quotas = Quotas::uniform(Limits {
        per_day: 4,
        total: 6,
    });
    let authority = Arc::new(
        Authority::new(
            key,
            quotas.clone(),
            Default::default(),
            Some(audit_log(audit_dir.path(), &log_key)),
        )
        .unwrap(),
    );
    authority
        .register_partner("hospital", &partner.signing.verifying_key())
        .unwrap();
    let local = LocalAuthority::serve(authority.clone()).unwrap();
    let transport = HttpTransport::new(local.url(), "hospital", partner.signing.clone()).unwrap();

    // Over the daily quota: HTTP 429, refused whole, nothing used or audited.
    let (status, body) = signed_post(
        local.url(),
        &partner.signing,
        "hospital",
        &blinded_elements(5),
    );
    assert_eq!(status, 429);
    assert!(
        body.contains("daily quota") && body.contains("nothing was evaluated"),
        "{body}"
    );
    assert_eq!(authority.usage("hospital").total, 0);
    // Within quota.
    let answer = transport.evaluate(&blinded_elements(4)).unwrap();
    assert_eq!(answer.elements.len(), 4 * ELEMENT_LEN);
    assert_eq!(&answer.key_id, authority.key_id());
    assert_eq!(authority.usage("hospital").today, 4);
    // The day's quota is used up: a single element is refused, through the client too.
    let err = transport.evaluate(&blinded_elements(1)).err().unwrap();
    assert!(
        matches!(err, TokenError::Refused(ref m) if m.contains("HTTP 429")),
        "{err}"
    );
    assert_eq!(authority.usage("hospital").total, 4);

    // A seal over quota fails cleanly and writes no package.
    let tokenizer = BlindTokenizer::connect(Arc::new(transport), None).unwrap();
    let err = partner
        .seal(&tokenizer, &partner.export(ROWS), 1)
        .unwrap_err();
    assert!(
        matches!(err, SealError::Token(TokenError::Refused(_))),
        "{err}"
    );
    assert!(
        partner.outbox_files().is_empty(),
        "{:?}",
        partner.outbox_files()
    );

    // One audit entry: the accepted batch of 4, partner and count only.
    drop(local);
    let log = authority.take_audit_log().unwrap().unwrap();
    assert_eq!(log.size(), 1);
    let record = log.record(0).unwrap();
    assert!(
        matches!(record.event, AuditEvent::TokenEvaluationBatch { ref partner, count: 4 } if partner.as_str() == "hospital")
    );
    assert_eq!(record.actor.as_str(), "partner:hospital");

    // Usage survives a restart: it is recounted from the audit log.
    drop(log);
    let (key2, _, _k2) = key_pair();
    let restarted = Authority::new(
        key2,
        quotas,
        Default::default(),
        Some(audit_log(audit_dir.path(), &log_key)),
    )
    .unwrap();
    assert_eq!(restarted.usage("hospital").today, 4);
    assert_eq!(restarted.usage("hospital").total, 4);
}

#[test]
fn requests_must_be_signed_by_a_registered_partner_and_fresh() {
    let partner = Partner::new();
    let (key, _, _k) = key_pair();
    let authority = start(key, Quotas::unlimited(), &partner);
    let body = blinded_elements(2);
    // No signature at all.
    let (status, text) = post_raw(authority.url(), &[], &body);
    assert_eq!(status, 401, "{text}");
    // Signed by another key.
    let stranger = SigningKey::generate().unwrap();
    let (status, text) = signed_post(authority.url(), &stranger, "hospital", &body);
    assert_eq!(status, 401);
    assert!(text.contains("does not verify"), "{text}");
    // An unregistered partner.
    let (status, _) = signed_post(authority.url(), &stranger, "insurance", &body);
    assert_eq!(status, 401);
    // A replay of a good request.
    let h = auth::sign_request("hospital", &partner.signing, &body).unwrap();
    let headers = [
        (auth::HEADER_PARTNER, h.partner.as_str()),
        (auth::HEADER_TIME, h.time.as_str()),
        (auth::HEADER_NONCE, h.nonce.as_str()),
        (auth::HEADER_SIGNATURE, h.signature.as_str()),
    ];
    assert_eq!(post_raw(authority.url(), &headers, &body).0, 200);
    let (status, text) = post_raw(authority.url(), &headers, &body);
    assert_eq!(status, 401);
    assert!(text.contains("replayed"), "{text}");
    // A signed body that was altered on the way.
    let h = auth::sign_request("hospital", &partner.signing, &body).unwrap();
    let mut altered = body.clone();
    altered.truncate(ELEMENT_LEN);
    let (status, _) = post_raw(
        authority.url(),
        &[
            (auth::HEADER_PARTNER, &h.partner),
            (auth::HEADER_TIME, &h.time),
            (auth::HEADER_NONCE, &h.nonce),
            (auth::HEADER_SIGNATURE, &h.signature),
        ],
        &altered,
    );
    assert_eq!(status, 401);
    // Malformed elements: 400 and nothing used.
    let (status, text) = signed_post(authority.url(), &partner.signing, "hospital", &[0xffu8; 64]);
    assert_eq!(status, 400, "{text}");
    let (status, _) = signed_post(authority.url(), &partner.signing, "hospital", &[1u8; 33]);
    assert_eq!(status, 400);
    assert_eq!(authority.authority().usage("hospital").total, 2);
}

/// A fake authority: a proper key description, then `answer` to every evaluation.
fn fake_authority(answer: fn(&[u8]) -> (u16, Vec<u8>)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                // Read the head and then the declared body.
                let (head_end, length) = loop {
                    let n = stream.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..pos]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse::<usize>().unwrap())
                            .unwrap_or(0);
                        break (pos + 4, length);
                    }
                };
                while data.len() < head_end + length {
                    let n = stream.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                }
                let (status, body) = if data.starts_with(b"GET /v1/key") {
                    (
                        200,
                        br#"{"key_id":"00112233aabbccdd","mode":"oprf","suite":"ristretto255-SHA512"}"#
                            .to_vec(),
                    )
                } else {
                    answer(&data[head_end..])
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nx-blindwatch-key-id: 00112233aabbccdd\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    url
}

#[test]
fn an_unreachable_or_lying_authority_fails_the_seal_with_nothing_written() {
    let partner = Partner::new();
    let input = partner.export(ROWS);
    // Nobody listens.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = blind_tokenizer(
        &format!("http://{port}"),
        "hospital",
        partner.signing.clone(),
        &partner.path("keys"),
    )
    .err()
    .unwrap();
    assert!(matches!(err, TokenError::Unreachable(_)), "{err}");

    type Answer = fn(&[u8]) -> (u16, Vec<u8>);
    let cases: [(Answer, &str); 4] = [
        // Not group elements.
        (|body| (200, vec![0xff; body.len()]), "not a valid"),
        // Too short.
        (|body| (200, vec![0; body.len() / 2]), "bytes answered"),
        // Server error.
        (|_| (500, b"{\"error\":\"boom\"}".to_vec()), "HTTP 500"),
        // Plausible but wrong: the elements sent back unchanged (a key of 1).
        (|body| (200, body.to_vec()), ""),
    ];
    for (answer, expect) in cases {
        let url = fake_authority(answer);
        let tokenizer = BlindTokenizer::connect(
            Arc::new(HttpTransport::new(&url, "hospital", partner.signing.clone()).unwrap()),
            None,
        )
        .unwrap();
        match partner.seal(&tokenizer, &input, 1) {
            Err(e) => {
                assert!(matches!(e, SealError::Token(_)), "{e}");
                assert!(e.to_string().contains(expect), "{e}");
                assert!(
                    partner.outbox_files().is_empty(),
                    "{:?}",
                    partner.outbox_files()
                );
            }
            Ok(outcome) => {
                // An echo cannot be told from a key of 1 (OPRF mode is not verifiable);
                // the tokens are then simply not the real authority's: they join nothing.
                assert!(expect.is_empty(), "the seal should have failed");
                std::fs::remove_file(&outcome.package.parquet).unwrap();
                std::fs::remove_file(&outcome.package.manifest).unwrap();
                let _ = std::fs::remove_file(&outcome.rejects_report);
            }
        }
    }

    // The authority goes away between the key question and the evaluations.
    let (key, _, _k) = key_pair();
    let authority = start(key, Quotas::unlimited(), &partner);
    let tokenizer = partner.tokenizer(authority.url());
    drop(authority);
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
    let (key, _, _k) = key_pair();
    let authority = start(key, Quotas::unlimited(), &partner);
    let first = {
        let tokenizer = partner.tokenizer(authority.url());
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
        cache_files.contains(&format!("tokens-{}.cache", authority.key_id())),
        "{cache_files:?}"
    );
    let tokenizer = partner.tokenizer(authority.url());
    assert_eq!(tokenizer.cached(), 2);
    let second = partner.seal(&tokenizer, &partner.export(ROWS), 2).unwrap();
    // Only the two new persons and the one new phone went to the authority.
    assert_eq!(tokenizer.requested(), 3);
    assert_eq!(authority.authority().usage("hospital").total, 5);
    let (a, b) = (
        partner.tokens(&first, "person"),
        partner.tokens(&second, "person"),
    );
    assert_eq!(a[..], b[..2]);
}

#[test]
fn a_new_key_gives_a_new_key_id_and_different_tokens() {
    let partner = Partner::new();
    let (old_key, _, _k1) = key_pair();
    let (new_key, _, _k2) = key_pair();
    let old = start(old_key, Quotas::unlimited(), &partner);
    let new = start(new_key, Quotas::unlimited(), &partner);
    assert_ne!(old.key_id(), new.key_id());
    let input = partner.export(ROWS);
    let a = partner
        .seal(&partner.tokenizer(old.url()), &input, 1)
        .unwrap();
    let b = partner
        .seal(&partner.tokenizer(new.url()), &input, 2)
        .unwrap();
    assert_eq!(&a.manifest.tokens.key_id, old.key_id());
    assert_eq!(&b.manifest.tokens.key_id, new.key_id());
    let (ta, tb) = (partner.tokens(&a, "person"), partner.tokens(&b, "person"));
    for (x, y) in ta.iter().zip(&tb) {
        assert_ne!(x, y);
    }
    // The caches are per key: the new key's run asked for every value again.
    assert_eq!(new.authority().usage("hospital").total, 5);
}
