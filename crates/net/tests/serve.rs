#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `blindwatch_net::serve` against clients that misbehave, over loopback: plain HTTP off
//! loopback, TLS with and without client certificates, half-sent heads and bodies, more
//! connections than the cap.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use blindwatch_net::problem::Problem;
use blindwatch_net::{NetError, ServeOptions, serve, tls_config};

fn app() -> Router {
    async fn echo(body: Result<Bytes, BytesRejection>) -> Response {
        match body {
            Ok(b) => b.into_response(),
            Err(r) => Problem::from_body_rejection(&r, "64 bytes").into_response(),
        }
    }
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(echo))
        .layer(axum::extract::DefaultBodyLimit::max(64))
}

/// A server on a loopback port in its own runtime thread; dropping it stops it.
struct Running {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), NetError>>>,
}

impl Running {
    fn start(options: ServeOptions) -> Running {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    serve(listener, app(), options, async {
                        let _ = stopped.await;
                    })
                    .await
                })
        });
        Running {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback_unless_allowed() {
    // Binding the unspecified address opens no traffic; serve refuses before accepting.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = serve(listener, app(), ServeOptions::default(), async {})
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::PlainHttp { .. }), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let allowed = ServeOptions {
        allow_plain_http: true,
        ..ServeOptions::default()
    };
    serve(listener, app(), allowed, async {}).await.unwrap();
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 from it, a client certificate from it, and
    /// a client certificate from another CA.
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
        let (ca_cert, ca_key) = ca("test ca");
        let (other_cert, other_key) = ca("other ca");
        let leaf =
            |names: Vec<String>, issuer: &rcgen::Certificate, issuer_key: &rcgen::KeyPair| {
                let key = rcgen::KeyPair::generate().unwrap();
                let cert = rcgen::CertificateParams::new(names)
                    .unwrap()
                    .signed_by(&key, issuer, issuer_key)
                    .unwrap();
                (cert.pem(), key.serialize_pem())
            };
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca_cert.pem());
        let (cert, key) = leaf(vec!["127.0.0.1".into()], &ca_cert, &ca_key);
        write("server.pem", &cert);
        write("server.key", &key);
        let (cert, key) = leaf(vec!["partner".into()], &ca_cert, &ca_key);
        write("client.pem", &cert);
        write("client.key", &key);
        let (cert, key) = leaf(vec!["stranger".into()], &other_cert, &other_key);
        write("stranger.pem", &cert);
        write("stranger.key", &key);
        Pki { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn tls_agent(ca: &Path, client: Option<(&Path, &Path)>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let roots = vec![Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap()];
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(blindwatch_net::crypto_provider())
        .root_certs(RootCerts::Specific(Arc::new(roots)));
    if let Some((cert, key)) = client {
        let chain = vec![Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap()];
        let key = PrivateKey::from_pem(&std::fs::read(key).unwrap()).unwrap();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .build()
        .into()
}

#[test]
fn tls_serves_trusting_clients_and_requires_client_certificates_when_asked() {
    let pki = Pki::new();
    let server = Running::start(ServeOptions {
        tls: Some(tls_config(&pki.path("server.pem"), &pki.path("server.key"), None).unwrap()),
        ..ServeOptions::default()
    });
    let url = format!("https://{}/", server.addr);
    let mut ok = tls_agent(&pki.path("ca.pem"), None)
        .get(&url)
        .call()
        .unwrap();
    assert_eq!(ok.body_mut().read_to_string().unwrap(), "hello");
    // A client that trusts another CA refuses the server.
    assert!(
        tls_agent(&pki.path("stranger.pem"), None)
            .get(&url)
            .call()
            .is_err()
    );
    // Plain HTTP to a TLS port gets nothing.
    assert!(
        ureq::get(format!("http://{}/", server.addr))
            .call()
            .is_err()
    );
    drop(server);

    let server = Running::start(ServeOptions {
        tls: Some(
            tls_config(
                &pki.path("server.pem"),
                &pki.path("server.key"),
                Some(&pki.path("ca.pem")),
            )
            .unwrap(),
        ),
        ..ServeOptions::default()
    });
    let url = format!("https://{}/", server.addr);
    let ca = pki.path("ca.pem");
    assert!(
        tls_agent(&ca, None).get(&url).call().is_err(),
        "no client certificate"
    );
    let (stranger, stranger_key) = (pki.path("stranger.pem"), pki.path("stranger.key"));
    assert!(
        tls_agent(&ca, Some((&stranger, &stranger_key)))
            .get(&url)
            .call()
            .is_err(),
        "a client certificate from another CA"
    );
    let (client, client_key) = (pki.path("client.pem"), pki.path("client.key"));
    let mut ok = tls_agent(&ca, Some((&client, &client_key)))
        .get(&url)
        .call()
        .unwrap();
    assert_eq!(ok.body_mut().read_to_string().unwrap(), "hello");

    // Bad TLS files are clear errors.
    let err = tls_config(&pki.path("server.key"), &pki.path("server.key"), None).unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let err = tls_config(&pki.path("server.pem"), &pki.path("client.key"), None).unwrap_err();
    assert!(err.to_string().contains("do not go together"), "{err}");
}

/// Reads until the peer closes; `None` if it is still open when the read times out.
fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(out),
            Err(_) => return None,
        }
    }
}

fn short_deadlines(max_connections: usize) -> ServeOptions {
    ServeOptions {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        max_connections,
        ..ServeOptions::default()
    }
}

#[test]
fn half_sent_heads_are_closed_and_half_sent_bodies_refused_as_problems() {
    let server = Running::start(short_deadlines(8));
    // A head that never ends: the connection is closed without an answer.
    let mut head = TcpStream::connect(server.addr).unwrap();
    head.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let got = read_until_closed(&mut head).expect("the server closes a half-sent head");
    assert!(!String::from_utf8_lossy(&got).contains("hello"));
    // An idle keep-alive connection is closed too, after answering.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = read_until_closed(&mut idle).expect("the server closes an idle connection");
    assert!(String::from_utf8_lossy(&got).contains("hello"));
    // A body that stops half-way: 408, as a problem document, and the connection closes.
    let mut body = TcpStream::connect(server.addr).unwrap();
    body.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nabc")
        .unwrap();
    let got = String::from_utf8(read_until_closed(&mut body).expect("closed")).unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("application/problem+json"), "{got}");
    assert!(got.contains("/problems/body-timeout"), "{got}");
    // A body over the route's limit: 413, a problem too.
    let mut large = TcpStream::connect(server.addr).unwrap();
    large
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 65\r\n\r\n",
        )
        .unwrap();
    large.write_all(&[b'a'; 65]).unwrap();
    let got = String::from_utf8(read_until_closed(&mut large).expect("closed")).unwrap();
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(got.contains("/problems/body-too-large"), "{got}");
}

#[test]
fn connections_over_the_cap_wait_until_a_slot_frees() {
    let server = Running::start(short_deadlines(2));
    // Two clients hold both slots and send nothing.
    let mut holders: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // A third is accepted by the kernel but served only once a holder is cut off.
    let mut third = TcpStream::connect(server.addr).unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = read_until_closed(&mut third).expect("served in the end");
    assert!(String::from_utf8_lossy(&got).contains("hello"));
    // By then the server had closed a holder: its end-of-stream is already here.
    let mut closed = 0;
    for h in &mut holders {
        h.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        if matches!(h.read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 1,
        "the third client was served while both slots were held"
    );
}
