//! Request smuggling shapes end to end, under both drivers: every ambiguous or malformed head is
//! answered 400 with `Connection: close` and nothing reaches the backend (it counts bytes);
//! malformed chunked bodies (valid head, so the request may already be upstream) end in 400 or a
//! close, the backend never sees a second request hidden in the body, and the backend
//! connection that carried the broken body is closed, never pooled. Positive controls
//! prove the backend was reachable and the accepted variants are forwarded.

mod common;

use common::*;
use std::time::Duration;

both_drivers!(
    ambiguous_or_malformed_heads_get_400_and_nothing_is_forwarded,
    malformed_chunked_bodies_never_smuggle_a_request,
    tab_after_colon_is_accepted,
    bad_request_pipelined_after_good_ones_is_not_forwarded,
    field_names_are_classified_exactly,
);

/// (what, raw request). Each is sent on its own connection.
fn bad_heads() -> Vec<(&'static str, Vec<u8>)> {
    let s = |what: &'static str, text: &str| (what, text.as_bytes().to_vec());
    vec![
        s(
            "CL+TE",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        s(
            "TE+CL",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        ),
        s(
            "two differing Content-Length",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        s(
            "Content-Length list with different values",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
        s(
            "Content-Length: +5",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        ),
        s(
            "Content-Length: -1",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        ),
        s(
            "Content-Length: 0x5",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
        ),
        s(
            "Transfer-Encoding: xchunked",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        s(
            "Transfer-Encoding: chunked, identity",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        s(
            "Transfer-Encoding: chunked twice",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        s(
            "space before the colon",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        s(
            "Transfer-Encoding in HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        s(
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        ),
        s(
            "obs-fold of Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        ),
        s("bare LF line endings", "GET / HTTP/1.1\nHost: a\n\n"),
        s(
            "bare LF inside the head",
            "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
        ),
        s(
            "bare CR in a value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
        ),
        s(
            "NUL in a value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n",
        ),
        s(
            "duplicate Host",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        s("missing Host on HTTP/1.1", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n"),
        s(
            "space in the request line",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ]
}

fn ambiguous_or_malformed_heads_get_400_and_nothing_is_forwarded(driver: &str) {
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut failures = Vec::new();
    for (what, raw) in bad_heads() {
        let mut client = Client::connect(proxy.addr);
        client.send(&raw);
        match client.try_response_to("POST") {
            Some(r) if r.status == 400 && r.closes() => {
                if !client.closed() {
                    failures.push(format!("{what}: 400 but the connection stayed open"));
                }
            }
            Some(r) => failures.push(format!(
                "{what}: got {} (Connection: {:?})",
                r.status,
                r.header("connection")
            )),
            None => failures.push(format!("{what}: closed without a 400")),
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let leaked = backend.bytes();
    assert!(
        failures.is_empty() && leaked == 0,
        "{} of {} shapes mishandled; backend received {leaked} bytes:\n{}",
        failures.len(),
        bad_heads().len(),
        failures.join("\n")
    );

    // Control: the backend is reachable through this proxy.
    let mut client = Client::connect(proxy.addr);
    client.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(client.response_to("POST").text(), "hello");
}

/// Chunked bodies that go wrong after a valid head, each followed by a request that would be
/// smuggled if the proxy resynchronised on it.
fn bad_chunked_bodies() -> Vec<(&'static str, String)> {
    const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    [
        ("chunk size 0x5", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size -1", "-1\r\nhello\r\n0\r\n\r\n"),
        ("chunk size +5", "+5\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size overflow",
            "10000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        ("chunk size empty", "\r\nhello\r\n0\r\n\r\n"),
        ("chunk data missing its CRLF", "5\r\nhelloXX0\r\n\r\n"),
        ("chunk data longer than its size", "3\r\nhello\r\n0\r\n\r\n"),
        ("bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
        ("bare LF after the data", "5\r\nhello\n0\r\n\r\n"),
        ("space inside the size", "5 5\r\nhello\r\n0\r\n\r\n"),
    ]
    .into_iter()
    .map(|(what, body)| (what, body.to_string()))
    .chain([
        (
            "chunk extension past the limit",
            format!("5;x={}\r\nhello\r\n0\r\n\r\n", "e".repeat(20_000)),
        ),
        (
            "trailer section past the limit",
            format!("5\r\nhello\r\n0\r\nX-T: {}\r\n\r\n", "t".repeat(40_000)),
        ),
        (
            "chunk size with 40 leading zeros",
            format!("{}5\r\nhello\r\n0\r\n\r\n", "0".repeat(40)),
        ),
        (
            "obs-fold in a trailer",
            "5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n".to_string(),
        ),
    ])
    .map(|(what, body)| (what, format!("{body}{SMUGGLED}")))
    .collect()
}

fn malformed_chunked_bodies_never_smuggle_a_request(driver: &str) {
    let backend = TestBackend::hello();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut failures = Vec::new();
    for (what, body) in bad_chunked_bodies() {
        let mut client = Client::connect(proxy.addr);
        client.send(format!(
            "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        ));
        let problem = match client.try_response_to("POST") {
            None => None,
            Some(r) if r.status == 400 => {
                (!client.closed()).then(|| "400 but the connection stayed open".to_string())
            }
            Some(r) => Some(format!("got {} {:?}", r.status, r.text())),
        };
        if let Some(p) = problem {
            failures.push(format!("{what}: {p}"));
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let reqs = backend.requests();
    for r in &reqs {
        failures.push(format!(
            "the backend received a complete request {} {} (body {:?})",
            r.method,
            r.target,
            String::from_utf8_lossy(&r.body)
        ));
    }
    assert!(
        failures.is_empty(),
        "malformed chunked bodies mishandled:\n{}",
        failures.join("\n")
    );
    // The head and the good chunks had gone upstream: every backend connection that carried
    // part of a malformed body was closed, never pooled (its request is unfinished).
    let opened = backend.conns();
    assert!(opened >= 1, "no malformed body reached the backend at all");
    assert_eq!(
        backend.wait_ended(opened),
        opened,
        "a backend connection that carried a broken body was kept"
    );

    // Control: a well-formed chunked request followed by a pipelined one: both forwarded.
    let mut client = Client::connect(proxy.addr);
    client.send(
        "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
         GET /second HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(client.response_to("POST").text(), "backend saw /first");
    assert_eq!(client.response().text(), "backend saw /second");
    // ... on a new backend connection.
    assert!(backend.requests().iter().all(|r| r.conn >= opened));
}

fn tab_after_colon_is_accepted(driver: &str) {
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    client.send(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let r = client.response_to("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].chunked);
}

fn bad_request_pipelined_after_good_ones_is_not_forwarded(driver: &str) {
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "", "");
    for (what, bad) in bad_heads() {
        let before = backend.requests().len();
        let mut client = Client::connect(proxy.addr);
        let mut batch = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n\
                          POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            .to_vec();
        batch.extend_from_slice(&bad);
        client.send(&batch);
        assert_eq!(client.response().status, 200, "{what}");
        assert_eq!(client.response_to("POST").text(), "abc", "{what}");
        let r = client.try_response_to("POST");
        assert_eq!(r.as_ref().map(|r| r.status), Some(400), "{what}: {r:?}");
        assert!(client.closed(), "{what}");
        let reqs = backend.wait_requests(before + 2);
        assert_eq!(
            reqs.len(),
            before + 2,
            "{what}: the bad request was forwarded"
        );
    }
    // Give a late forward the chance to show up, then count again.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(backend.requests().len(), 2 * bad_heads().len());
    assert!(backend.garbage().is_empty(), "{:?}", backend.garbage());
}

/// Fields whose names merely start like (or extend) a name the proxy acts on are ordinary
/// fields, forwarded untouched; the real names are recognised in any letter case.
fn field_names_are_classified_exactly(driver: &str) {
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    let lookalikes = [
        "Content-Lengthx: 5",
        "Content-Length-Extra: 7",
        "Transfer-Encodingx: chunked",
        "Transfer-Encoding-X: chunked",
        "Hosts: b.test",
        "TEx: trailers",
        "Trailers: X-Sum",
        "Upgrade-Insecure-Requests: 1",
        "Keep-Alive-X: 1",
        "Connectionx: close",
        "Proxy-Connection-X: close",
        "Expectx: 100-continue",
        "X-Forwarded-Forx: 10.9.9.9",
        "X-Forwarded-Protocol: https",
        "X-Forwarded-Hostname: evil.test",
    ];
    let extra: String = lookalikes.iter().map(|l| format!("{l}\r\n")).collect();
    client.send(format!(
        "POST /x HTTP/1.1\r\nhOST: a.test\r\ncontent-LENGTH: 3\r\nCONNECTION: X-Drop\r\n\
         x-drop: 1\r\ntE: trailers\r\nUPGRADE: h2c\r\nKEEP-alive: 5\r\nTRAILER: X-Sum\r\n\
         PROXY-CONNECTION: keep-alive\r\nx-FORWARDED-for: 10.1.1.1\r\nX-FORWARDED-HOST: evil\r\n\
         x-forwarded-PROTO: https\r\n{extra}\r\nabc"
    ));
    let r = client.response_to("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "abc"), "{r:?}");
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1);
    let got = &reqs[0];
    for l in lookalikes {
        let (name, value) = l.split_once(": ").unwrap();
        assert_eq!(
            got.all(name),
            [value],
            "{name} was not forwarded as is: {got:?}"
        );
    }
    for gone in [
        "connection",
        "x-drop",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(got.all(gone).is_empty(), "{gone} was forwarded: {got:?}");
    }
    assert_eq!(got.all("trailer"), ["X-Sum"], "{got:?}");
    assert_eq!(got.all("x-forwarded-for"), ["10.1.1.1, 127.0.0.1"]);
    assert_eq!(got.all("x-forwarded-host"), ["a.test"]);
    assert_eq!(got.all("x-forwarded-proto"), ["http"]);
    assert_eq!(got.all("host"), ["a.test"]);
    assert_eq!(got.body, b"abc");
}
