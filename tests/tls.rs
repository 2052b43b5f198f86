//! TLS termination and TLS to upstreams over real sockets, with certificates made at test time
//! (rcgen) and clients nobody here wrote as well as rustls: SNI picks the certificate (exact,
//! wildcard, several key types), no SNI gets the default; TLS 1.2 and 1.3 both work and resume
//! sessions; ALPN says http/1.1; `X-Forwarded-Proto: https`; mTLS refuses a client without a
//! (valid) certificate and forwards the subject, never a forged one; failed handshakes are
//! counted by reason and time out; http is redirected to https per route; certificates reload
//! without dropping connections; curl and openssl interoperate on 1.2 and 1.3; upstream TLS
//! verifies (expired and wrong-name certificates are a 502 with a clear log line), pools, and
//! presents a client certificate.

mod common;

use common::tls::{self, Pki, TlsBackend, ECDSA, ED25519, RSA};
use common::*;
use rustls::version::{TLS12, TLS13};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A proxy with an admin port, one plain backend and a TLS listener whose `tls` table holds
/// `certs` and the lines `tls_extra`; `extra` goes at the end (more listeners, routes).
struct Setup {
    proxy: Proxy,
    admin: SocketAddr,
    backend: TestBackend,
}

fn cert_list(certs: &[&tls::Issued]) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|c| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.cert.display(),
                c.key.display()
            )
        })
        .collect();
    format!("certificates = [{}]", list.join(", "))
}

fn start(certs: &[&tls::Issued], tls_extra: &str, routes: &str, extra: &str) -> Setup {
    start_on("io_uring", certs, tls_extra, routes, extra)
}

fn start_on(
    driver: &str,
    certs: &[&tls::Issued],
    tls_extra: &str,
    routes: &str,
    extra: &str,
) -> Setup {
    let backend = TestBackend::start(|r| {
        Reply::ok(format!(
            "backend saw {} proto={}",
            r.target,
            r.header("x-forwarded-proto").unwrap_or("-")
        ))
    });
    let (port, admin) = (free_port(), free_port());
    let routes = if routes.is_empty() {
        "[[routes]]\nname = \"all\"\nupstream = \"app\"\n"
    } else {
        routes
    };
    let text = format!(
        "[runtime]\nworkers = 2\npin = false\ndriver = \"{driver}\"\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
         [[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:{port}\"\n\
         [listeners.tls]\n{}\n{tls_extra}\n\n{}{routes}\n{extra}",
        cert_list(certs),
        upstream_toml("app", &[backend.port], ""),
    );
    let proxy = Proxy::start(&text, port, "info");
    Setup {
        proxy,
        admin: format!("127.0.0.1:{admin}").parse().unwrap(),
        backend,
    }
}

fn leaf_der(s: &tls::Tls) -> Vec<u8> {
    s.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[test]
fn sni_picks_the_certificate_and_a_client_without_sni_gets_the_default() {
    let dir = TempDir::new("tls-sni");
    let pki = Pki::new(&dir.0);
    let default = pki.issue(
        "default",
        &["default.test", "127.0.0.1"],
        "default",
        ECDSA,
        false,
    );
    let a = pki.issue("a", &["a.test"], "a.test", RSA, false);
    let wild = pki.issue("wild", &["*.wild.test"], "wild", ED25519, false);
    let a_ecdsa = pki.issue("a-ecdsa", &["a.test"], "a.test", ECDSA, false);
    let s = start(&[&default, &a, &wild, &a_ecdsa], "", "", "");
    let config = Arc::new(pki.client(&[]));

    let mut c = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
    assert_eq!(c.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let got = tls::get(&mut c, "a.test", "/x").unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        "backend saw /x proto=https"
    );
    // a.test has an RSA and an ECDSA certificate: the first the client can verify is used.
    assert_eq!(leaf_der(&c), a.der);

    let c = tls::connect(s.proxy.addr, "x.wild.test", &config).unwrap();
    assert_eq!(leaf_der(&c), wild.der, "the wildcard certificate");
    let c = tls::connect(s.proxy.addr, "A.TEST", &config).unwrap();
    assert_eq!(leaf_der(&c), a.der, "names compare case-insensitively");
    // An IP as the server name: rustls sends no SNI.
    let mut c = tls::connect(s.proxy.addr, "127.0.0.1", &config).unwrap();
    assert_eq!(leaf_der(&c), default.der, "no SNI: the default certificate");
    assert_eq!(tls::get(&mut c, "127.0.0.1", "/d").unwrap().status, 200);
    // A name no certificate has gets the default, which the client rightly refuses.
    let e = tls::connect(s.proxy.addr, "other.test", &config).unwrap_err();
    assert!(
        e.contains("NotValidForName") || e.contains("not valid"),
        "{e}"
    );

    // A client that only offers ECDSA signatures for TLS 1.3 gets a.test's ECDSA certificate.
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.signature_verification_algorithms.mapping = p
        .signature_verification_algorithms
        .mapping
        .iter()
        .filter(|(s, _)| format!("{s:?}").starts_with("ECDSA"))
        .copied()
        .collect::<Vec<_>>()
        .leak();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let only_ecdsa = rustls::ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let c = tls::connect(s.proxy.addr, "a.test", &Arc::new(only_ecdsa)).unwrap();
    assert_eq!(leaf_der(&c), a_ecdsa.der, "ECDSA-only client");
    let m = scrape(s.admin);
    assert!(sample(&m, "coregate_tls_handshakes_total") >= 5.0, "{m}");
}

#[test]
fn tls12_and_tls13_both_work_and_resume_sessions() {
    let dir = TempDir::new("tls-versions");
    let pki = Pki::new(&dir.0);
    let cert = pki.issue("a", &["a.test"], "a.test", ECDSA, false);
    for driver in ["io_uring", "epoll"] {
        versions_and_resumption(&pki, start_on(driver, &[&cert], "", "", ""));
    }
}

fn versions_and_resumption(pki: &Pki, s: Setup) {
    for version in [&TLS12, &TLS13] {
        let config = Arc::new(pki.client(&[version]));
        for round in 0..3 {
            let mut c = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
            assert_eq!(c.conn.protocol_version(), Some(version.version));
            let got = tls::get(&mut c, "a.test", "/v").unwrap();
            assert_eq!(got.status, 200);
            let kind = c.conn.handshake_kind();
            if round == 0 {
                assert_eq!(kind, Some(rustls::HandshakeKind::Full), "{version:?}");
            } else {
                assert_eq!(
                    kind,
                    Some(rustls::HandshakeKind::Resumed),
                    "{version:?} round {round}"
                );
            }
            c.conn.send_close_notify();
            let _ = c.flush();
        }
    }
    // Keep-alive over TLS: many requests on one connection.
    let config = Arc::new(pki.client(&[]));
    let mut c = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
    for i in 0..50 {
        let got = tls::get(&mut c, "a.test", &format!("/k{i}")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            format!("backend saw /k{i} proto=https")
        );
    }
    let m = scrape(s.admin);
    assert!(sample(&m, "coregate_tls_resumed_total") >= 4.0, "{m}");
    assert!(sample(&m, "coregate_tls_handshakes_total") >= 7.0, "{m}");
}

#[test]
fn min_version_13_refuses_a_tls12_client_and_counts_it() {
    let dir = TempDir::new("tls-min");
    let pki = Pki::new(&dir.0);
    let cert = pki.issue("a", &["a.test"], "a.test", ECDSA, false);
    let s = start(&[&cert], "min_version = \"1.3\"", "", "");
    let e = tls::connect(s.proxy.addr, "a.test", &Arc::new(pki.client(&[&TLS12]))).unwrap_err();
    assert!(e.contains("handshake"), "{e}");
    let mut c = tls::connect(s.proxy.addr, "a.test", &Arc::new(pki.client(&[]))).unwrap();
    assert_eq!(
        c.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(tls::get(&mut c, "a.test", "/").unwrap().status, 200);
    let m = scrape(s.admin);
    assert_eq!(
        sample(
            &m,
            "coregate_tls_handshake_failures_total{reason=\"incompatible\"}"
        ),
        1.0,
        "{m}"
    );
}

#[test]
fn mtls_refuses_clients_without_a_valid_certificate_and_forwards_the_subject() {
    let dir = TempDir::new("tls-mtls");
    let pki = Pki::new(&dir.0);
    let cert = pki.issue("a", &["a.test"], "a.test", ECDSA, false);
    let client = pki.issue("client", &["client.test"], "client one", ECDSA, false);
    let stranger_dir = TempDir::new("tls-mtls-other");
    let other = Pki::new(&stranger_dir.0);
    let stranger = other.issue("stranger", &["s.test"], "stranger", ECDSA, false);
    let extra = format!(
        "client_ca = \"{}\"\nclient_subject_header = \"X-Client-Subject\"",
        pki.ca_path().display()
    );
    let s = start(&[&cert], &extra, "", "");
    for version in [&TLS12, &TLS13] {
        // No certificate: refused (in 1.3 the client learns it on its first read).
        let config = Arc::new(pki.client(&[version]));
        let refused = tls::connect(s.proxy.addr, "a.test", &config)
            .and_then(|mut c| tls::get(&mut c, "a.test", "/no-cert"));
        assert!(refused.is_err(), "{version:?}: {refused:?}");
        // A certificate from another CA: refused too.
        let config = Arc::new(pki.client_with(&[version], Some(&stranger)));
        let refused = tls::connect(s.proxy.addr, "a.test", &config)
            .and_then(|mut c| tls::get(&mut c, "a.test", "/stranger"));
        assert!(refused.is_err(), "{version:?}: {refused:?}");
        // A good one: the backend sees its subject, never the client's own field.
        let config = Arc::new(pki.client_with(&[version], Some(&client)));
        let mut c = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
        let got = tls::request(
            &mut c,
            "GET /ok HTTP/1.1\r\nHost: a.test\r\nX-Client-Subject: CN=admin\r\nX_Client_Subject: CN=admin\r\n\r\n",
        )
        .unwrap();
        assert_eq!(got.status, 200);
    }
    let seen = s.backend.wait_requests(2);
    assert!(
        seen.iter().all(|r| r.target == "/ok"),
        "only the good client got through"
    );
    for r in &seen {
        let subject = r.header("x-client-subject").unwrap();
        assert!(subject.contains("CN=client one"), "{subject}");
        assert!(!subject.contains("admin"));
        assert!(
            r.all("x_client_subject").is_empty(),
            "the _ spelling is dropped too"
        );
    }
    let m = scrape(s.admin);
    let reasons = |r: &str| {
        sample(
            &m,
            &format!("coregate_tls_handshake_failures_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(reasons("no_client_certificate"), 2.0, "{m}");
    assert_eq!(reasons("bad_client_certificate"), 2.0, "{m}");
}

#[test]
fn failed_handshakes_are_counted_by_reason_time_out_and_stay_out_of_the_warn_log() {
    let dir = TempDir::new("tls-fail");
    let pki = Pki::new(&dir.0);
    let cert = pki.issue("a", &["a.test"], "a.test", ECDSA, false);
    let s = start(&[&cert], "handshake_timeout = \"500ms\"", "", "");
    let failures = |r: &str| {
        sample(
            &scrape(s.admin),
            &format!("coregate_tls_handshake_failures_total{{reason=\"{r}\"}}"),
        )
    };
    // The start-up probe connected and closed.
    let closed_before = failures("closed");
    // Plain HTTP to a TLS listener: a TLS alert at most, never an HTTP answer, then a close.
    let mut c = Client::connect(s.proxy.addr);
    c.send(get_req("a.test", "/", ""));
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut c.s, &mut got).unwrap();
    assert!(!String::from_utf8_lossy(&got).contains("HTTP/"), "{got:?}");
    assert!(got.len() < 16, "{got:?}");
    // Nothing at all: closed by the handshake timeout.
    let mut c = Client::connect(s.proxy.addr);
    let t0 = Instant::now();
    assert!(c.closed());
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Half a ClientHello, then a close.
    let mut c = Client::connect(s.proxy.addr);
    c.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(failures("protocol"), 1.0);
    assert_eq!(failures("timeout"), 1.0);
    assert_eq!(failures("closed"), closed_before + 1.0);
    // The server still serves.
    let config = Arc::new(pki.client(&[]));
    let mut c = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
    assert_eq!(tls::get(&mut c, "a.test", "/").unwrap().status, 200);
    let log = s.proxy.log_text();
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn http_is_redirected_to_https_per_route() {
    let dir = TempDir::new("tls-redirect");
    let pki = Pki::new(&dir.0);
    let cert = pki.issue("a", &["a.test"], "a.test", ECDSA, false);
    let plain = free_port();
    let routes = "[[routes]]\nname = \"secure\"\npath_prefix = \"/secure/\"\nupstream = \"app\"\n\
                  redirect_https = true\nhttps_port = 8443\n\n\
                  [[routes]]\nname = \"open\"\nupstream = \"app\"\n";
    let extra = format!("[[listeners]]\nname = \"plain\"\naddress = \"127.0.0.1:{plain}\"\n");
    let s = start(&[&cert], "", routes, &extra);
    let mut c = Client::connect(format!("127.0.0.1:{plain}").parse().unwrap());
    c.send(get_req(&format!("a.test:{plain}"), "/secure/x?y=1", ""));
    let r = c.response();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://a.test:8443/secure/x?y=1")
    );
    // The connection stays open; a route without the option is forwarded over plain HTTP.
    c.send(get_req("a.test", "/open", ""));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "backend saw /open proto=http");
    // A POST keeps its method with 308, and its body is not read: the connection closes.
    c.send("POST /secure/form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.response();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://a.test:8443/secure/form")
    );
    assert!(r.closes());
    // Over TLS the same route is forwarded.
    let config = Arc::new(pki.client(&[]));
    let mut t = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
    let got = tls::get(&mut t, "a.test", "/secure/x").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        "backend saw /secure/x proto=https"
    );
    assert_eq!(s.backend.requests().len(), 2, "redirects forward nothing");
}

#[test]
fn certificates_reload_without_dropping_connections() {
    let dir = TempDir::new("tls-reload");
    let pki = Pki::new(&dir.0);
    let first = pki.issue("site", &["a.test"], "first", ECDSA, false);
    let s = start(&[&first], "", "", "");
    let config = Arc::new(pki.client(&[]));
    let mut old = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
    assert_eq!(tls::get(&mut old, "a.test", "/1").unwrap().status, 200);
    assert_eq!(leaf_der(&old), first.der);
    // New files under the same names, then a reload.
    let second = pki.issue("site", &["a.test"], "second", RSA, false);
    s.proxy.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let c = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
        if leaf_der(&c) == second.der {
            break c;
        }
        assert!(Instant::now() < deadline, "{}", s.proxy.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(fresh);
    // The connection made before the reload goes on.
    for i in 0..3 {
        assert_eq!(
            tls::get(&mut old, "a.test", &format!("/old{i}"))
                .unwrap()
                .status,
            200
        );
    }
    // A reload naming a key that does not match keeps the old config serving.
    let other = pki.issue("other", &["a.test"], "other", ECDSA, false);
    std::fs::copy(&other.key, &second.key).unwrap();
    s.proxy.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.proxy.log_text().contains("does not belong") {
        assert!(Instant::now() < deadline, "{}", s.proxy.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
    assert_eq!(leaf_der(&c), second.der);
}

/// Runs `cmd` with `input` on stdin, within 20 s; (exit ok, stdout, stderr).
fn run(cmd: &mut Command, input: &[u8]) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run (is it installed?): {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_and_openssl_interoperate_on_tls12_and_tls13() {
    let dir = TempDir::new("tls-interop");
    let pki = Pki::new(&dir.0);
    let cert = pki.issue("a", &["a.test"], "a.test", ECDSA, false);
    let s = start(&[&cert], "", "", "");
    let port = s.proxy.addr.port();
    let ca = pki.ca_path();
    for (curl_v, curl_max, openssl_v, name) in [
        ("--tlsv1.2", "1.2", "-tls1_2", "TLSv1.2"),
        ("--tlsv1.3", "1.3", "-tls1_3", "TLSv1.3"),
    ] {
        let (ok, out, err) = run(
            Command::new("curl")
                .args(["--http1.1", "-sS", "-v", curl_v, "--tls-max", curl_max])
                .arg("--cacert")
                .arg(&ca)
                .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
                .arg(format!("https://a.test:{port}/curl")),
            b"",
        );
        assert!(ok, "curl {curl_v}: {err}");
        assert_eq!(out, "backend saw /curl proto=https");
        assert!(err.contains(name), "curl used {name}: {err}");
        assert!(err.contains("ALPN: server accepted http/1.1"), "{err}");

        let (ok, out, err) = run(
            Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                .args([
                    "-servername",
                    "a.test",
                    openssl_v,
                    "-ign_eof",
                    "-verify_return_error",
                ])
                .arg("-CAfile")
                .arg(&ca),
            b"GET /openssl HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        );
        assert!(ok, "openssl {openssl_v}: {out}\n{err}");
        assert!(out.contains("HTTP/1.1 200 "), "{out}");
        assert!(out.contains("backend saw /openssl proto=https"), "{out}");
        assert!(
            out.contains(&format!("Protocol  : {name}")) || out.contains(name),
            "{out}"
        );
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    }
}

/// A proxy whose upstream `tls` is a TLS backend on `backend_port` with the upstream lines
/// `upstream_extra`.
fn tls_upstream(backend_port: u16, upstream_extra: &str) -> Proxy {
    let port = free_port();
    let text = format!(
        "[runtime]\nworkers = 1\npin = false\n\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[upstreams]]\nname = \"secure\"\nbackends = [ {{ address = \"127.0.0.1:{backend_port}\" }} ]\n\
         tls = true\n{upstream_extra}\n\n[[routes]]\nname = \"all\"\nupstream = \"secure\"\n"
    );
    Proxy::start(&text, port, "info")
}

#[test]
fn upstream_tls_verifies_the_backend_pools_and_presents_a_client_certificate() {
    let dir = TempDir::new("tls-upstream");
    let pki = Pki::new(&dir.0);
    let ca = format!("ca = \"{}\"", pki.ca_path().display());
    let good = pki.issue(
        "good",
        &["127.0.0.1", "backend.test"],
        "backend",
        ECDSA,
        false,
    );
    let expired = pki.issue("expired", &["127.0.0.1"], "old", ECDSA, true);

    // Verified against the configured CA; one TLS connection carries every request.
    let backend = TlsBackend::start(&good, None);
    let proxy = tls_upstream(backend.port, &ca);
    let mut c = Client::connect(proxy.addr);
    for i in 0..5 {
        c.send(get_req("a", &format!("/p{i}"), ""));
        let r = c.response();
        assert_eq!(r.status, 200, "{}", proxy.log_text());
        assert_eq!(r.text(), format!("tls backend saw /p{i}"));
    }
    assert_eq!(backend.accepted(), 1, "pooled TLS connection reused");
    drop(proxy);

    // The backend's name for SNI and verification can be configured.
    let proxy = tls_upstream(backend.port, &format!("{ca}\nsni = \"backend.test\""));
    let mut c = Client::connect(proxy.addr);
    c.send(get_req("a", "/sni", ""));
    assert_eq!(c.response().status, 200);
    drop(proxy);

    // A certificate for another name: 502, and the log says why.
    let proxy = tls_upstream(backend.port, &format!("{ca}\nsni = \"wrong.test\""));
    let mut c = Client::connect(proxy.addr);
    c.send(get_req("a", "/wrong", ""));
    assert_eq!(c.response().status, 502);
    wait_log(&proxy, "certificate not valid for name \"wrong.test\"");
    drop(proxy);

    // No CA configured: the system roots do not know the test CA.
    let proxy = tls_upstream(backend.port, "");
    let mut c = Client::connect(proxy.addr);
    c.send(get_req("a", "/system-roots", ""));
    assert_eq!(c.response().status, 502);
    wait_log(&proxy, "UnknownIssuer");
    drop(proxy);

    // An expired certificate: 502 with a clear line; accepted only by explicit choice.
    let old = TlsBackend::start(&expired, None);
    let proxy = tls_upstream(old.port, &ca);
    let mut c = Client::connect(proxy.addr);
    c.send(get_req("a", "/expired", ""));
    assert_eq!(c.response().status, 502);
    wait_log(&proxy, "xpired");
    drop(proxy);
    let proxy = tls_upstream(old.port, "insecure_skip_verify = true");
    let mut c = Client::connect(proxy.addr);
    c.send(get_req("a", "/insecure", ""));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "tls backend saw /insecure");
    drop(proxy);

    // A backend that requires a client certificate.
    let strict = TlsBackend::start(&good, Some(&pki));
    let proxy = tls_upstream(strict.port, &ca);
    let mut c = Client::connect(proxy.addr);
    c.send(get_req("a", "/no-client-cert", ""));
    assert_eq!(c.response().status, 502);
    drop(proxy);
    let me = pki.issue("me", &["coregate.test"], "coregate upstream", ECDSA, false);
    let lines = format!(
        "{ca}\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        me.cert.display(),
        me.key.display()
    );
    let proxy = tls_upstream(strict.port, &lines);
    let mut c = Client::connect(proxy.addr);
    c.send(get_req("a", "/client-cert", ""));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", proxy.log_text());
    let subjects = strict.client_subjects.lock().unwrap().clone();
    assert!(
        subjects.iter().any(|s| s.contains("CN=coregate upstream")),
        "{subjects:?}"
    );
}

fn wait_log(proxy: &Proxy, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn routes_admit_clients_by_certificate_subject() {
    let dir = TempDir::new("tls-subjects");
    let pki = Pki::new(&dir.0);
    let cert = pki.issue("a", &["a.test"], "a.test", ECDSA, false);
    let admin = pki.issue("admin", &["admin.test"], "admin one", ECDSA, false);
    let user = pki.issue("user", &["user.test"], "user two", ECDSA, false);
    let extra = format!(
        "client_ca = \"{}\"\nclient_auth = \"optional\"",
        pki.ca_path().display()
    );
    let routes = "[[routes]]\nname = \"admin\"\npath_prefix = \"/admin/\"\nupstream = \"app\"\n\
                  client_subjects = [\"CN=admin one*\"]\n\n\
                  [[routes]]\nname = \"open\"\nupstream = \"app\"\n";
    let s = start(&[&cert], &extra, routes, "");
    let status = |who: Option<&tls::Issued>, path: &str| {
        let config = Arc::new(pki.client_with(&[], who));
        let mut c = tls::connect(s.proxy.addr, "a.test", &config).unwrap();
        tls::get(&mut c, "a.test", path).unwrap().status
    };
    assert_eq!(status(Some(&admin), "/admin/x"), 200);
    assert_eq!(status(Some(&user), "/admin/x"), 403);
    assert_eq!(
        status(None, "/admin/x"),
        403,
        "optional: no certificate, no subject"
    );
    assert_eq!(status(None, "/open"), 200, "other routes take anyone");
    assert_eq!(status(Some(&user), "/open"), 200);
    assert_eq!(s.backend.requests().len(), 3);
}
