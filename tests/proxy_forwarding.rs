//! The forwarding path end to end, each test under both drivers (io_uring and epoll): the real
//! binary on loopback in front of recording backends. Keep-alive on both sides, pipelining,
//! HEAD/204/304 and interim responses, `Expect: 100-continue`, hop-by-hop removal and
//! X-Forwarded-*, `Connection: close` from either side, concurrent clients over the pool, large
//! heads, unusual but valid requests. Routing is in `proxy_routing.rs`.

mod common;

use common::*;

both_drivers!(
    keep_alive_reuses_connections_on_both_sides,
    pipelined_requests_are_answered_in_order,
    long_pipeline_behind_a_body_with_a_small_head_limit,
    head_204_and_304_have_no_body_and_keep_the_connection,
    expect_100_continue_is_answered_before_the_body,
    hop_by_hop_fields_go_and_x_forwarded_fields_come,
    interim_responses_are_passed_on,
    connection_close_from_either_side,
    bytes_after_a_complete_response_are_never_relayed,
    late_bytes_on_an_idle_pooled_connection_are_never_relayed,
    half_closed_client_still_gets_its_responses,
    concurrent_clients_get_their_own_responses,
    large_heads_in_both_directions,
    unusual_but_valid_requests_are_forwarded,
    identical_lengths_in_a_response_are_sent_once,
);

fn keep_alive_reuses_connections_on_both_sides(driver: &str) {
    let backend = TestBackend::hello();
    let proxy = proxy_to(driver, backend.port, "", "");
    let (clients, per_client) = (3, 20);
    for c in 0..clients {
        let mut client = Client::connect(proxy.addr);
        for i in 0..per_client {
            client.send(get_req("app.test", &format!("/k/{c}/{i}"), ""));
            let r = client.response();
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), format!("backend saw /k/{c}/{i}"));
            assert!(!r.closes(), "{r:?}");
        }
    }
    let n = clients * per_client;
    assert_eq!(backend.requests().len(), n);
    // One worker and sequential clients: the one pooled connection serves every request, from
    // every client.
    assert_eq!(
        backend.conns(),
        1,
        "{} backend connections for {n} requests",
        backend.conns()
    );
    let on: Vec<(usize, usize)> = backend
        .requests()
        .iter()
        .map(|r| (r.conn, r.nth_on_conn))
        .collect();
    assert_eq!(on, (0..n).map(|i| (0, i)).collect::<Vec<_>>());
}

fn pipelined_requests_are_answered_in_order(driver: &str) {
    let backend =
        TestBackend::start(|r| Reply::ok(format!("{} {} [{}]", r.method, r.target, r.body.len())));
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    let mut batch = String::new();
    let mut expect = Vec::new();
    for i in 0..150 {
        match i % 4 {
            1 => {
                let body = "x".repeat(i * 10);
                batch += &format!(
                    "POST /p/{i} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                expect.push(("POST", format!("POST /p/{i} [{}]", body.len())));
            }
            3 => {
                batch += &format!("HEAD /p/{i} HTTP/1.1\r\nHost: a\r\n\r\n");
                expect.push(("HEAD", String::new()));
            }
            _ => {
                batch += &get_req("a", &format!("/p/{i}"), "");
                expect.push(("GET", format!("GET /p/{i} [0]")));
            }
        }
    }
    client.send(batch.as_bytes()); // one write
    for (i, (method, body)) in expect.iter().enumerate() {
        let r = client.response_to(method);
        assert_eq!(r.status, 200, "response {i}");
        assert_eq!(&r.text(), body, "response {i} out of order or damaged");
    }
    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    let want: Vec<String> = (0..150).map(|i| format!("/p/{i}")).collect();
    assert_eq!(seen, want);
    // Still usable.
    client.send(get_req("a", "/after", ""));
    assert_eq!(client.response().text(), "GET /after [0]");
}

fn head_204_and_304_have_no_body_and_keep_the_connection(driver: &str) {
    let backend = TestBackend::start(|r| match r.target.as_str() {
        "/204" => Reply::new(204, Body::Empty).header("X-Kind", "204"),
        // A 304 may carry the Content-Length of the representation: there is still no body.
        "/304" => Reply::new(304, Body::Empty)
            .header("ETag", "\"v1\"")
            .header("Content-Length", "1234"),
        _ => Reply::ok(pattern(1234, 7)),
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for round in 0..2 {
        client.send("HEAD /doc HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = client.response_to("HEAD");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("1234"), "{r:?}");

        client.send(get_req("a", "/204", ""));
        let r = client.response();
        assert_eq!((r.status, r.header("x-kind")), (204, Some("204")));

        client.send(get_req("a", "/304", "If-None-Match: \"v1\"\r\n"));
        let r = client.response();
        assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));

        // Had any of these carried body bytes, this response would be misread.
        client.send(get_req("a", "/doc", ""));
        let r = client.response();
        assert_eq!(r.status, 200, "round {round}");
        assert_eq!(r.body, pattern(1234, 7));
    }
    assert!(
        client.pending().is_empty(),
        "stray bytes after the responses"
    );
    assert_eq!(backend.requests().len(), 8);
}

fn expect_100_continue_is_answered_before_the_body(driver: &str) {
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for i in 0..2 {
        let body = format!("the body {i}");
        client.send(format!(
            "PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        let interim = client.head();
        assert_eq!(interim.status, 100, "{interim:?}");
        assert_eq!(interim.version, "HTTP/1.1");
        assert!(
            backend.requests().len() == i,
            "the backend answered before the body was sent"
        );
        client.send(&body);
        let r = client.response_to("PUT");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), body);
    }
    // Chunked, too.
    client.send(
        "PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(client.head().status, 100);
    client.send("4\r\nmore\r\n0\r\n\r\n");
    assert_eq!(client.response_to("PUT").text(), "more");
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[1].body, b"the body 1");
    // The expectation was met by the proxy: not passed on.
    assert!(reqs.iter().all(|r| r.all("expect").is_empty()));
}

fn hop_by_hop_fields_go_and_x_forwarded_fields_come(driver: &str) {
    let backend = TestBackend::start(|_| {
        Reply::ok("ok")
            .header("Connection", "X-Resp-Hop, keep-alive")
            .header("X-Resp-Hop", "1")
            .header("Keep-Alive", "timeout=5")
            .header("Proxy-Connection", "keep-alive")
            .header("Trailer", "X-Sum")
            .header("Upgrade", "h2c")
            .header("X-Resp-Kept", "yes")
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    client.send(get_req(
        "app.test:8080",
        "/hop?x=1",
        "Connection: keep-alive, X-Custom-Hop\r\n\
         X-Custom-Hop: secret\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: trailers\r\n\
         Trailer: X-Sum\r\n\
         Upgrade: websocket\r\n\
         X-Forwarded-For: 203.0.113.7\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: evil.test\r\n\
         X-End-To-End: kept\r\n",
    ));
    let r = client.response();
    assert_eq!(r.status, 200);
    for gone in ["x-resp-hop", "keep-alive", "proxy-connection", "upgrade"] {
        assert!(r.all(gone).is_empty(), "response kept {gone}: {r:?}");
    }
    // Trailer is end to end (RFC 9110 §6.6.2), not hop-by-hop.
    assert_eq!(r.all("trailer"), ["X-Sum"], "{r:?}");
    assert!(
        r.all("connection")
            .iter()
            .all(|v| !v.contains("X-Resp-Hop")),
        "{r:?}"
    );
    assert_eq!(r.header("x-resp-kept"), Some("yes"));

    // Second request on the same connection: no incoming X-Forwarded-For, two X-Forwarded-For
    // fields on the third.
    client.send(get_req("b.test", "/plain", ""));
    assert_eq!(client.response().status, 200);
    client.send(get_req(
        "c.test",
        "/two",
        "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n",
    ));
    assert_eq!(client.response().status, 200);

    let reqs = backend.requests();
    assert_eq!(reqs.len(), 3);
    let first = &reqs[0];
    for gone in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "x-custom-hop",
    ] {
        assert!(
            first.all(gone).is_empty(),
            "{gone} was forwarded: {first:?}"
        );
    }
    assert_eq!(first.all("trailer"), ["X-Sum"], "{first:?}");
    assert_eq!(first.target, "/hop?x=1");
    assert_eq!(first.header("host"), Some("app.test:8080"));
    assert_eq!(first.header("x-end-to-end"), Some("kept"));
    assert_eq!(
        first.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(first.header("x-forwarded-proto"), Some("http"));
    assert_eq!(first.header("x-forwarded-host"), Some("app.test:8080"));

    assert_eq!(reqs[1].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(reqs[1].header("x-forwarded-host"), Some("b.test"));
    assert_eq!(reqs[1].header("host"), Some("b.test"));
    let xff: Vec<&str> = reqs[2].all("x-forwarded-for");
    assert_eq!(xff, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]);
}

fn interim_responses_are_passed_on(driver: &str) {
    let backend = TestBackend::start(|r| {
        let mut raw =
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_vec();
        raw.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                r.target.len(),
                r.target
            )
            .as_bytes(),
        );
        Reply::new(0, Body::Raw(raw))
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for path in ["/one", "/two"] {
        client.send(get_req("a", path, ""));
        let interim = client.head();
        assert_eq!(interim.status, 103);
        assert_eq!(interim.header("link"), Some("</style.css>; rel=preload"));
        let r = client.response();
        assert_eq!((r.status, r.text().as_str()), (200, path));
    }
    // An HTTP/1.0 client cannot take interim responses: only the final one.
    let mut client = Client::connect(proxy.addr);
    client.send("GET /old HTTP/1.0\r\nHost: a\r\n\r\n");
    let r = client.head();
    assert_eq!(r.status, 200);
}

fn connection_close_from_either_side(driver: &str) {
    let backend = TestBackend::start(|r| match r.target.as_str() {
        "/http10" => Reply::new(
            0,
            Body::Raw(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!".to_vec()),
        ),
        "/upstream-closes" => Reply::ok("bye")
            .header("Connection", "close")
            .then(Ending::Close),
        _ => Reply::ok("hi"),
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    // The upstream's `Connection: close` is hop-by-hop: the client keeps its connection, the
    // upstream connection is not reused.
    let mut client = Client::connect(proxy.addr);
    for _ in 0..3 {
        client.send(get_req("a", "/upstream-closes", ""));
        let r = client.response();
        assert_eq!(r.text(), "bye");
        assert!(!r.closes(), "{r:?}");
    }
    assert_eq!(backend.conns(), 3);
    // An HTTP/1.0 upstream response without keep-alive: relayed, its connection not reused,
    // the client's kept.
    for _ in 0..2 {
        client.send(get_req("a", "/http10", ""));
        let r = client.response();
        assert_eq!((r.status, r.text().as_str()), (200, "old!"));
        assert!(!r.closes(), "{r:?}");
    }
    assert_eq!(backend.conns(), 5);
    // The client's `Connection: close`: answered, then closed; a request pipelined after it
    // is neither answered nor forwarded.
    let before = backend.requests().len();
    client.send(get_req("a", "/x", "Connection: close\r\n") + &get_req("a", "/after-close", ""));
    let r = client.response();
    assert_eq!(r.text(), "hi");
    assert!(r.closes(), "{r:?}");
    assert!(client.closed());
    std::thread::sleep(std::time::Duration::from_millis(50));
    let reqs = backend.requests();
    assert_eq!(reqs.len(), before + 1);
    assert_eq!(reqs.last().unwrap().target, "/x");
}

fn late_bytes_on_an_idle_pooled_connection_are_never_relayed(driver: &str) {
    // Late: a second, unsolicited response arrives on the idle pooled connection shortly
    // after the first. Reusing that connection would hand it to the next request (response
    // queue poisoning).
    let backend = TestBackend::start(|r| match r.target.as_str() {
        "/late" => Reply::ok("ok").late_bytes(
            std::time::Duration::from_millis(20),
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
        ),
        _ => Reply::ok("good"),
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for _ in 0..3 {
        client.send(get_req("a", "/late", ""));
        assert_eq!(client.response().text(), "ok");
        std::thread::sleep(std::time::Duration::from_millis(60));
        client.send(get_req("a", "/next", ""));
        assert_eq!(client.response().text(), "good");
    }
}

fn bytes_after_a_complete_response_are_never_relayed(driver: &str) {
    // The backend sends a second, unsolicited response right after the first.
    let backend = TestBackend::start(|r| match r.target.as_str() {
        "/extra" => Reply::new(
            0,
            Body::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
                  HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
                    .to_vec(),
            ),
        ),
        _ => Reply::ok("good"),
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    client.send(get_req("a", "/extra", ""));
    assert_eq!(client.response().text(), "ok");
    std::thread::sleep(std::time::Duration::from_millis(50));
    for _ in 0..3 {
        client.send(get_req("a", "/next", ""));
        assert_eq!(client.response().text(), "good");
    }
}

fn half_closed_client_still_gets_its_responses(driver: &str) {
    let backend = TestBackend::hello();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    client.send(get_req("a", "/1", "") + &get_req("a", "/2", ""));
    client.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(client.response().text(), "backend saw /1");
    assert_eq!(client.response().text(), "backend saw /2");
    assert!(client.closed());
}

fn concurrent_clients_get_their_own_responses(driver: &str) {
    // Responses of different sizes and framings, so that a pooled connection handed over with
    // unread bytes, or a response sent to the wrong client, shows as a wrong body.
    let backend = TestBackend::start(|r| {
        let n: usize = r.target.rsplit('/').next().unwrap().parse().unwrap();
        let body = pattern(n, (n % 251) as u8);
        if n.is_multiple_of(2) {
            Reply::ok(body)
        } else {
            Reply::new(200, Body::Chunked(body, vec![1000, 7]))
        }
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let addr = proxy.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0..40 {
                    let n = (t * 7919 + i * 104_729) % 70_000;
                    client.send(get_req("a", &format!("/c/{t}/{n}"), ""));
                    let r = client.response();
                    assert_eq!(r.status, 200);
                    assert!(
                        r.body == pattern(n, (n % 251) as u8),
                        "thread {t} request {i}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(backend.requests().len(), 320);
    assert!(backend.conns() <= 8, "{} connections", backend.conns());
}

fn large_heads_in_both_directions(driver: &str) {
    let backend = TestBackend::start(|r| match r.target.as_str() {
        "/big-head" => Reply::ok("big").header("Set-Cookie", &"c".repeat(40_000)),
        "/huge-head" => Reply::ok("huge").header("Set-Cookie", &"c".repeat(100_000)),
        _ => Reply::ok(format!("{}", r.header("cookie").map_or(0, str::len))),
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    // A request head near the default 32 KiB limit, then a body.
    let cookie = "k".repeat(30_000);
    client.send(format!(
        "POST /cookie HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nContent-Length: 100000\r\n\r\n"
    ));
    client.send(pattern(100_000, 1));
    assert_eq!(client.response_to("POST").text(), "30000");
    client.send(get_req("a", "/big-head", ""));
    let r = client.response();
    assert_eq!(r.header("set-cookie").map(str::len), Some(40_000));
    assert_eq!(r.text(), "big");
    // Past the proxy's response head limit: 502.
    client.send(get_req("a", "/huge-head", ""));
    let r = client.response();
    assert_eq!(r.status, 502, "{}", r.text());
}

fn unusual_but_valid_requests_are_forwarded(driver: &str) {
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    let cases: [&[u8]; 8] = [
        // obs-text (UTF-8) and a tab inside a value, an empty value, token punctuation in a name
        b"GET /a HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9\tnoir\r\nX-Empty:\r\nX-!#$%&'*+-.^_`|~: t\r\n\r\n",
        // identical Content-Length values (RFC 9112 \xc2\xa76.3 allows them)
        b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nworld",
        // case-insensitive field names and the chunked token
        b"POST /d HTTP/1.1\r\nhOsT: a\r\ntransfer-encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"PATCH /e?q=%20x&r=/y HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"DELETE /f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS /g HTTP/1.1\r\nHost: a\r\n\r\n",
        // HTTP/1.0 needs no Host
        b"GET /h HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];
    for raw in cases {
        client.send(raw);
        let r = client.response();
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(raw));
    }
    let reqs = backend.requests();
    let got: Vec<(&str, &str, &[u8])> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str(), &r.body[..]))
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "/a", &b""[..]),
            ("POST", "/b", b"hello"),
            ("POST", "/c", b"world"),
            ("POST", "/d", b"hi"),
            ("PATCH", "/e?q=%20x&r=/y", b""),
            ("DELETE", "/f", b""),
            ("OPTIONS", "/g", b""),
            ("GET", "/h", b""),
        ]
    );
    assert_eq!(
        reqs[0].header("x-name").map(str::as_bytes),
        Some("caf\u{e9}\tnoir".as_bytes())
    );
    assert_eq!(reqs[0].header("x-empty"), Some(""));
    // Repeated or listed identical lengths go upstream as one plain field (RFC 9110 §8.6):
    // backends that reject or misread duplicates must not see them.
    assert_eq!(reqs[1].all("content-length"), ["5"]);
    assert_eq!(reqs[2].all("content-length"), ["5"]);
    // The HTTP/1.0 request without Host went upstream as HTTP/1.1, which needs one: the
    // backend's address, never an empty value (backends reject that).
    assert_eq!(reqs[7].version, 1);
    assert_eq!(reqs[7].all("host"), [format!("127.0.0.1:{}", backend.port)]);
    // One with a Host keeps it.
    client.send("GET /i HTTP/1.0\r\nHost: given.test\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.response().status, 200);
    assert_eq!(backend.requests()[8].all("host"), ["given.test"]);
}

fn identical_lengths_in_a_response_are_sent_once(driver: &str) {
    let backend = TestBackend::start(|r| {
        let raw: &[u8] = match r.target.as_str() {
            "/list" => b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        };
        Reply::new(0, Body::Raw(raw.to_vec()))
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for path in ["/list", "/repeated"] {
        client.send(get_req("a", path, ""));
        let r = client.response();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert_eq!(r.all("content-length"), ["2"], "{path}");
    }
}

fn long_pipeline_behind_a_body_with_a_small_head_limit(driver: &str) {
    // Many small heads queued behind a large body: together far more than max_head_bytes, each
    // one well within it.
    let backend = TestBackend::start(|r| Reply::ok(format!("{} {}", r.target, r.body.len())));
    let proxy = proxy_to(driver, backend.port, "max_head_bytes = 1024", "");
    let mut client = Client::connect(proxy.addr);
    let mut batch = b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n".to_vec();
    batch.extend_from_slice(&pattern(100_000, 1));
    for i in 0..400 {
        batch.extend_from_slice(get_req("a", &format!("/p/{i}"), "").as_bytes());
    }
    client.send(&batch);
    assert_eq!(client.response_to("POST").text(), "/big 100000");
    for i in 0..400 {
        let r = client.response();
        assert_eq!(
            (r.status, r.text()),
            (200, format!("/p/{i} 0")),
            "request {i}"
        );
    }
}
