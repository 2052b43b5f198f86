//! Failures and limits end to end, under both drivers (DESIGN.md §6): dead backend → 502, slow
//! backend → 504, resets before and during a response or while it receives a body, invalid
//! response → 502, a pooled connection closed by the backend while idle (liveness check) or on
//! arrival (retry on a new one), slowloris → closed, idle keep-alive → closed, stalled bodies →
//! idle timeout, oversized head → 431, oversized body → 413 with nothing forwarded, no route →
//! 404, a client leaving or resetting mid-exchange, a client closing while the response is
//! awaited (the exchange is aborted), upstream failures in the log (rate-limited), response head
//! limits per upstream.

mod common;

use common::*;
use std::io::Read;
use std::time::{Duration, Instant};

both_drivers!(
    dead_backend_gives_502,
    refused_connection_goes_to_another_backend,
    slow_backend_gives_504,
    backend_reset_before_the_response_gives_502,
    backend_reset_inside_the_body_closes_the_client,
    backend_reset_while_receiving_a_large_body,
    invalid_response_gives_502,
    pooled_connection_closed_while_idle_is_not_used,
    pooled_connection_closed_on_arrival_is_retried_on_a_new_one,
    slowloris_client_is_closed_after_the_header_timeout,
    oversized_head_gives_431,
    oversized_body_gives_413_and_nothing_is_forwarded,
    no_route_gives_404,
    idle_keep_alive_connection_is_closed,
    stalled_bodies_hit_the_idle_timeout,
    buffers_of_a_timed_out_connection_serve_the_next_one_clean,
    client_leaving_inside_a_body_does_not_poison_the_pool,
    client_reset_during_a_large_response_leaves_the_proxy_running,
    client_closing_while_the_response_is_awaited_aborts_the_exchange,
    upstream_failures_are_logged_with_the_backend_once_per_burst,
    response_limits_are_per_upstream,
);

/// The answer coregate generated for a failure: `status`, `Connection: close`, then EOF.
fn assert_closing_error(client: &mut Client, status: u16) {
    let r = client.response();
    assert_eq!(r.status, status, "{r:?}");
    assert!(
        r.closes(),
        "an error that ends the connection says so: {r:?}"
    );
    assert!(client.closed(), "connection left open after {status}");
}

fn dead_backend_gives_502(driver: &str) {
    let proxy = proxy_to(driver, free_port(), "", "connect = \"1s\"");
    for _ in 0..2 {
        let mut client = Client::connect(proxy.addr);
        client.send(get_req("a", "/", ""));
        assert_closing_error(&mut client, 502);
    }
}

fn refused_connection_goes_to_another_backend(driver: &str) {
    // DESIGN.md §6: an upstream that refuses is retried on another backend when safe; a
    // refused connect sent nothing, so it is always safe (bodies included).
    let live = TestBackend::echo();
    let dead = free_port();
    let rest = upstream_toml("app", &[dead, live.port], "")
        + "[[routes]]\nname = \"all\"\nupstream = \"app\"\n";
    let proxy = start_proxy(driver, "", &rest);
    for i in 0..6 {
        let mut client = Client::connect(proxy.addr);
        let body = format!("body {i}");
        client.send(format!(
            "POST /{i} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        let r = client.response_to("POST");
        assert_eq!((r.status, r.text()), (200, body), "request {i}");
    }
    assert_eq!(live.requests().len(), 6);
}

fn slow_backend_gives_504(driver: &str) {
    let backend = TestBackend::start(|r| {
        let reply = Reply::ok("late");
        if r.target == "/slow" {
            reply.delay(Duration::from_secs(3))
        } else {
            reply
        }
    });
    let proxy = proxy_to(driver, backend.port, "", "response_head = \"300ms\"");
    let mut client = Client::connect(proxy.addr);
    client.send(get_req("a", "/slow", ""));
    // The backend would answer 200 after 3 s; the 504 must come first.
    assert_closing_error(&mut client, 504);
    // A fast request afterwards is fine (on a new upstream connection).
    assert_eq!(get(proxy.addr, "a", "/fast").body, b"late");
}

fn backend_reset_before_the_response_gives_502(driver: &str) {
    let backend = TestBackend::start(|r| match r.target.as_str() {
        "/reset" => Reply::reset(),
        "/hang-up" => Reply::hang_up(),
        _ => Reply::ok("fine"),
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    for path in ["/reset", "/hang-up"] {
        let mut client = Client::connect(proxy.addr);
        client.send(get_req("a", path, ""));
        assert_closing_error(&mut client, 502);
    }
    // A reset after part of the response head: still nothing went to the client, so 502.
    let backend2 = TestBackend::start(|_| {
        Reply::ok("0123456789").then(Ending::ResetAfter("HTTP/1.1 20".len()))
    });
    let proxy2 = proxy_to(driver, backend2.port, "", "");
    let mut client = Client::connect(proxy2.addr);
    client.send(get_req("a", "/", ""));
    assert_closing_error(&mut client, 502);
    assert_eq!(get(proxy.addr, "a", "/ok").body, b"fine");
}

fn backend_reset_inside_the_body_closes_the_client(driver: &str) {
    let size = 2 * 1024 * 1024;
    let backend = TestBackend::start(move |r| match r.target.as_str() {
        "/length" => Reply::ok(pattern(size, 1)).then(Ending::ResetAfter(300_000)),
        "/chunked" => Reply::new(200, Body::Chunked(pattern(size, 2), vec![10_000]))
            .then(Ending::ResetAfter(300_000)),
        _ => Reply::ok("fine"),
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    for path in ["/length", "/chunked"] {
        let mut client = Client::connect(proxy.addr);
        client.send(get_req("a", path, ""));
        let head = client.head();
        assert_eq!(head.status, 200, "{path}");
        // The head is out: the client must see the body cut short (a close), never a
        // complete-looking response.
        let partial = client
            .read_body(&head, "GET")
            .expect_err("a body cut by a reset must not look complete");
        assert!(partial.len() < size, "{path}");
    }
    assert_eq!(get(proxy.addr, "a", "/ok").body, b"fine");
}

fn backend_reset_while_receiving_a_large_body(driver: &str) {
    let backend = TestBackend::echo();
    let mut proxy = proxy_to(driver, backend.port, "", "");
    for framing in ["Content-Length: 8388608", "Transfer-Encoding: chunked"] {
        let mut client = Client::connect(proxy.addr);
        client.send(format!(
            "POST / HTTP/1.1\r\nHost: a\r\nX-Test-Reset-Early: 1\r\n{framing}\r\n\r\n"
        ));
        let body = pattern(8 * 1024 * 1024, 1);
        let encoded = if framing.starts_with("Transfer") {
            chunk(&body, &[65536]).concat()
        } else {
            body
        };
        for piece in encoded.chunks(256 * 1024) {
            if !client.try_send(piece) {
                break;
            }
        }
        // 502, or a close if the proxy gave up on the client too: never a hang, never a death.
        if let Some(r) = client.try_response_to("POST") {
            assert_eq!(r.status, 502, "{r:?}");
        }
        assert!(
            proxy.child.try_wait().unwrap().is_none(),
            "coregate died:\n{}",
            proxy.log_text()
        );
    }
    let mut client = Client::connect(proxy.addr);
    client.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(client.response_to("POST").text(), "ok");
}

fn invalid_response_gives_502(driver: &str) {
    let backend = TestBackend::start(|r| {
        match r.target.as_str() {
        "/garbage" => Reply::new(0, Body::Raw(b"SPDY/9 what\r\n\r\n".to_vec())),
        "/cl-te" => Reply::new(
            0,
            Body::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                    .to_vec(),
            ),
        ),
        "/two-cl" => Reply::new(
            0,
            Body::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec()),
        ),
        _ => Reply::ok("fine"),
    }
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    for path in ["/garbage", "/cl-te", "/two-cl"] {
        let mut client = Client::connect(proxy.addr);
        client.send(get_req("a", path, ""));
        assert_closing_error(&mut client, 502);
    }
}

fn pooled_connection_closed_while_idle_is_not_used(driver: &str) {
    // The backend closes every connection right after its response, without saying so.
    let backend = TestBackend::start(|r| Reply::ok(r.target.clone()).then(Ending::Close));
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for i in 0..5 {
        // With a body, so that the retry-on-a-new-connection path cannot cover for a missing
        // liveness check: only a connection known closed before sending is avoided.
        client.send(format!(
            "POST /{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
        ));
        let r = client.response_to("POST");
        assert_eq!((r.status, r.text()), (200, format!("/{i}")));
        // The backend has closed the connection that is now idle in the proxy's pool.
        assert_eq!(backend.wait_ended(i + 1), i + 1);
    }
    assert_eq!(backend.requests().len(), 5);
    assert_eq!(backend.conns(), 5);
}

fn pooled_connection_closed_on_arrival_is_retried_on_a_new_one(driver: &str) {
    // Each connection serves one request, then closes when the next one arrives (the race of
    // a backend's keep-alive timeout with a new request): nothing of it was answered, so the
    // proxy must send it again on a fresh connection.
    let backend = TestBackend::start(|r| {
        if r.nth_on_conn == 0 {
            Reply::ok(r.target.clone())
        } else {
            Reply::hang_up()
        }
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for i in 0..5 {
        client.send(get_req("a", &format!("/{i}"), ""));
        let r = client.response();
        assert_eq!((r.status, r.text()), (200, format!("/{i}")), "request {i}");
    }
    let answered: Vec<String> = backend
        .requests()
        .iter()
        .filter(|r| r.nth_on_conn == 0)
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(answered, ["/0", "/1", "/2", "/3", "/4"]);
    // Requests 1..4 each went first to the pooled connection, which hung up on them.
    assert_eq!((backend.requests().len(), backend.conns()), (9, 5));
}

fn slowloris_client_is_closed_after_the_header_timeout(driver: &str) {
    let backend = TestBackend::hello();
    let proxy = proxy_to(
        driver,
        backend.port,
        "client_header_timeout = \"300ms\"",
        "",
    );
    let mut client = Client::connect(proxy.addr);
    client
        .s
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    client.send("GET / HTTP/1.1\r\nHost: a\r\n");
    // One more header byte every 50 ms: the head never completes; each byte is progress, so
    // only a deadline on the whole head stops it.
    let start = Instant::now();
    let mut closed = false;
    let mut b = [0u8; 512];
    while start.elapsed() < Duration::from_secs(5) {
        if !client.try_send(b"X") {
            closed = true;
            break;
        }
        match client.s.read(&mut b) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {} // an optional 408 before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => {} // read timeout: keep trickling
        }
    }
    assert!(closed, "slowloris connection still open after 5 s");
    assert_eq!(backend.bytes(), 0);
}

fn oversized_head_gives_431(driver: &str) {
    let backend = TestBackend::hello();
    let proxy = proxy_to(
        driver,
        backend.port,
        "max_head_bytes = 4096\nmax_headers = 20",
        "",
    );
    let mut client = Client::connect(proxy.addr);
    let big = format!("X-Big: {}\r\n", "b".repeat(8000));
    client.send(get_req("a", "/", &big));
    assert_closing_error(&mut client, 431);

    let mut client = Client::connect(proxy.addr);
    let many: String = (0..30).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    client.send(get_req("a", "/", &many));
    assert_closing_error(&mut client, 431);
    assert_eq!(backend.bytes(), 0);

    // Just under both limits is fine.
    let mut client = Client::connect(proxy.addr);
    let ok: String = (0..15)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(100)))
        .collect();
    client.send(get_req("a", "/fits", &ok));
    assert_eq!(client.response().text(), "backend saw /fits");
}

fn oversized_body_gives_413_and_nothing_is_forwarded(driver: &str) {
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "max_body_bytes = \"64KiB\"", "");
    let limit = 64 * 1024;

    // Declared too large: refused before anything goes upstream.
    let mut client = Client::connect(proxy.addr);
    client.send(format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        limit + 1
    ));
    client.try_send(vec![b'x'; 1000]);
    assert_closing_error(&mut client, 413);
    // With `Expect: 100-continue`: 413 instead of 100.
    let mut client = Client::connect(proxy.addr);
    client.send(format!(
        "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        limit + 1
    ));
    let r = client.head();
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(backend.bytes(), 0, "a refused request reached the backend");

    // Exactly at the limit: forwarded.
    let mut client = Client::connect(proxy.addr);
    client.send(format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {limit}\r\n\r\n"
    ));
    client.send(pattern(limit, 1));
    let r = client.response_to("POST");
    assert_eq!((r.status, r.body.len()), (200, limit));

    // Chunked, growing past the limit: the head was valid and may have gone upstream, but the
    // client is told 413 and the backend never gets a complete request.
    let mut client = Client::connect(proxy.addr);
    client.send("POST /grow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for c in chunk(&pattern(4 * limit, 2), &[16 * 1024]) {
        if !client.try_send(c) {
            break;
        }
    }
    match client.try_response_to("POST") {
        Some(r) => assert_eq!(r.status, 413, "{r:?}"),
        None => panic!("closed without a 413"),
    }
    assert!(client.closed());
    std::thread::sleep(Duration::from_millis(100));
    let reqs = backend.requests();
    assert_eq!(
        reqs.len(),
        1,
        "only the request within the limit was complete"
    );
}

fn no_route_gives_404(driver: &str) {
    let backend = TestBackend::hello();
    let rest = upstream_toml("app", &[backend.port], "")
        + "[[routes]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"app\"\n";
    let proxy = start_proxy(driver, "", &rest);
    let mut client = Client::connect(proxy.addr);
    client.send(get_req("a", "/other", ""));
    let r = client.response();
    assert_eq!(r.status, 404);
    assert!(!r.closes());
    client.send(get_req("a", "/api/x", ""));
    assert_eq!(client.response().text(), "backend saw /api/x");
    // Pipelined around a 404.
    client.send(get_req("a", "/nope", "") + &get_req("a", "/api/y", ""));
    assert_eq!(client.response().status, 404);
    assert_eq!(client.response().text(), "backend saw /api/y");
    assert_eq!(backend.requests().len(), 2);

    // A client that asked to close (HTTP/1.1 `Connection: close`, or HTTP/1.0 without
    // keep-alive) gets its 404 and the close.
    for req in [
        get_req("a", "/nope", "Connection: close\r\n"),
        "GET /nope HTTP/1.0\r\nHost: a\r\n\r\n".to_string(),
    ] {
        let mut client = Client::connect(proxy.addr);
        client
            .s
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        client.send(&req);
        let r = client.response();
        assert_eq!(r.status, 404);
        assert!(r.closes(), "{req:?}: {r:?}");
        assert!(client.closed(), "{req:?}: connection left open");
    }
    // An HTTP/1.0 client that asked for keep-alive is told the connection stays open (else it
    // would wait for a close that does not come), and can use it.
    let mut client = Client::connect(proxy.addr);
    for path in ["/nope", "/api/z"] {
        client.send(format!(
            "GET {path} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
        ));
        let r = client.response();
        assert!(
            r.all("connection")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("keep-alive")),
            "{path}: {r:?}"
        );
    }
}

fn idle_keep_alive_connection_is_closed(driver: &str) {
    let backend = TestBackend::hello();
    let proxy = proxy_to(driver, backend.port, "client_idle_timeout = \"300ms\"", "");
    let mut client = Client::connect(proxy.addr);
    client.send(get_req("a", "/", ""));
    assert_eq!(client.response().status, 200);
    // Nothing more is sent: the proxy closes within its idle timeout (bounded by the client's
    // 10 s read timeout).
    assert!(client.closed());
}

fn stalled_bodies_hit_the_idle_timeout(driver: &str) {
    let backend = TestBackend::start(|r| match r.target.as_str() {
        "/stall" => Reply::ok(pattern(100_000, 3)).then(Ending::StallAfter(50_000)),
        _ => Reply::ok(r.body.clone()),
    });
    let proxy = proxy_to(driver, backend.port, "", "idle = \"300ms\"");

    // The response body stops half-way: the head is out, so the client sees a close.
    let mut client = Client::connect(proxy.addr);
    client.send(get_req("a", "/stall", ""));
    let head = client.head();
    assert_eq!(head.status, 200);
    let partial = client
        .read_body(&head, "GET")
        .expect_err("a stalled body must end in a close");
    assert!(partial.len() < 100_000);

    // The request body stops half-way: the connection is closed, nothing complete upstream.
    let mut client = Client::connect(proxy.addr);
    client.send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789");
    match client.try_response_to("POST") {
        None => {}
        Some(r) => assert!(r.status >= 400, "{r:?}"),
    }
    assert!(client.closed());
    assert_eq!(backend.requests().len(), 1, "only /stall was complete");
}

fn buffers_of_a_timed_out_connection_serve_the_next_one_clean(driver: &str) {
    // A chunked body that stops inside its trailers times out with part of the buffer
    // consumed; the buffers go back to the worker's pool and the next connection takes them:
    // it must start empty (no bytes, no stale offsets) and be served.
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "", "idle = \"300ms\"");
    for _ in 0..3 {
        let mut client = Client::connect(proxy.addr);
        client.send(
            "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a",
        );
        match client.try_response_to("POST") {
            None => {}
            Some(r) => assert!(r.status >= 400, "{r:?}"),
        }
        assert!(client.closed());
        let mut next = Client::connect(proxy.addr);
        next.send("POST /next HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nnext");
        let r = next.response_to("POST");
        assert_eq!((r.status, r.text().as_str()), (200, "next"));
    }
}

fn client_leaving_inside_a_body_does_not_poison_the_pool(driver: &str) {
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "", "");
    let aborted: [&[u8]; 2] = [
        b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n0123456789",
        b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789",
    ];
    for raw in aborted {
        let mut client = Client::connect(proxy.addr);
        client.send(raw);
        std::thread::sleep(Duration::from_millis(50));
        drop(client);
        // The next request, from another client, must reach the backend as a request of its
        // own: had the half-fed upstream connection been pooled, it would become body bytes.
        let mut client = Client::connect(proxy.addr);
        client.send("POST /next HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nnext");
        let r = client.response_to("POST");
        assert_eq!((r.status, r.text().as_str()), (200, "next"));
    }
    let targets: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets, ["/next", "/next"]);
}

fn client_reset_during_a_large_response_leaves_the_proxy_running(driver: &str) {
    let backend = TestBackend::start(|r| match r.target.as_str() {
        "/big" => Reply::ok(pattern(8 * 1024 * 1024, 1)),
        "/big-chunked" => Reply::new(
            200,
            Body::Chunked(pattern(8 * 1024 * 1024, 2), vec![70_000]),
        ),
        _ => Reply::ok("alive"),
    });
    let mut proxy = proxy_to(driver, backend.port, "", "");
    for path in ["/big", "/big-chunked", "/big"] {
        let mut client = Client::connect(proxy.addr);
        client.send(get_req("a", path, ""));
        assert_eq!(client.head().status, 200);
        // Read a little, then reset with most of the body still to come (a write to a reset
        // peer must not kill the process, e.g. by SIGPIPE).
        let mut b = [0u8; 1000];
        let _ = client.s.read(&mut b);
        common::backend::reset(&client.s);
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            proxy.child.try_wait().unwrap().is_none(),
            "coregate died:\n{}",
            proxy.log_text()
        );
        assert_eq!(get(proxy.addr, "a", "/small").body, b"alive");
    }
}

/// A backend that accepts one connection, reads a request head and then waits, answering
/// nothing: returns how long after the head arrived it saw the proxy close the connection
/// (None: still open after `limit`).
fn silent_backend(limit: Duration) -> (u16, std::thread::JoinHandle<Option<Duration>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(Instant::now() < deadline, "no request head");
            if let Ok(n) = s.read(&mut chunk) {
                assert!(n > 0, "closed before the head");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        let since = Instant::now();
        while since.elapsed() < limit {
            match s.read(&mut chunk) {
                Ok(0) => return Some(since.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(since.elapsed())
                }
                Err(_) => {}
            }
        }
        None
    });
    (port, t)
}

/// A client that sends a GET and closes after 0.5 s while the backend is still thinking: the
/// upstream connection is closed at once (nginx: 499), not when `response_head` (20 s) expires.
/// With `ignore_client_abort = true` the exchange goes on (HAProxy's default).
fn client_closing_while_the_response_is_awaited_aborts_the_exchange(driver: &str) {
    for ignore in [false, true] {
        let (port, backend) = silent_backend(Duration::from_secs(3));
        let limits = format!("ignore_client_abort = {ignore}");
        let mut proxy = proxy_to(driver, port, &limits, "response_head = \"20s\"");
        let mut client = Client::connect(proxy.addr);
        client.send(get_req("a", "/slow", ""));
        std::thread::sleep(Duration::from_millis(500));
        drop(client);
        let seen = backend.join().unwrap();
        if ignore {
            assert_eq!(seen, None, "aborted although ignore_client_abort = true");
            continue;
        }
        let seen = seen.expect("upstream connection still open 3 s after the client left");
        assert!(
            seen < Duration::from_millis(1500),
            "closed {seen:?} after the request"
        );
        proxy.signal(libc::SIGTERM);
        proxy.wait_exit(Duration::from_secs(5)).expect("exit");
        let log = proxy.log_text();
        assert!(log.contains("client_aborts=1"), "{log}");
    }
}

/// 5xx causes are logged at warn with the backend's address, one line per burst (the repeats
/// are counted and summed up when the window ends); 4xx answers only at debug level.
fn upstream_failures_are_logged_with_the_backend_once_per_burst(driver: &str) {
    let dead = free_port();
    let slow = TestBackend::start(|_| Reply::ok("late").delay(Duration::from_millis(800)));
    let rest = upstream_toml("dead", &[dead], "")
        + &upstream_toml("slow", &[slow.port], "response_head = \"200ms\"")
        + "[[routes]]\nname = \"slow\"\npath_prefix = \"/slow\"\nupstream = \"slow\"\n\n\
           [[routes]]\nname = \"dead\"\nupstream = \"dead\"\n";
    let port = free_port();
    let text = format!(
        "[runtime]\nworkers = 1\npin = false\ndriver = \"{driver}\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n{rest}"
    );
    let proxy = Proxy::start(&text, port, "debug");
    for _ in 0..30 {
        assert_eq!(get(proxy.addr, "a", "/x").status, 502);
    }
    assert_eq!(get(proxy.addr, "a", "/slow").status, 504);
    let mut bad = Client::connect(proxy.addr);
    bad.send("GET /x HTTP/1.1\r\n\r\n");
    assert_eq!(bad.response().status, 400);
    let refused =
        format!("upstream dead backend 127.0.0.1:{dead}: upstream refused the connection (502)");
    let lines = |log: &str, what: &str| log.lines().filter(|l| l.contains(what)).count();
    let log = proxy.log_text();
    assert_eq!(lines(&log, &refused), 1, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&refused)),
        "{log}"
    );
    let timed_out = format!(
        "upstream slow backend 127.0.0.1:{}: upstream response timed out (504)",
        slow.port
    );
    assert_eq!(lines(&log, &timed_out), 1, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("answered 400: missing Host header")),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("missing Host header")),
        "{log}"
    );
    // When the window ends, the 29 repeats become one more line.
    let deadline = Instant::now() + Duration::from_secs(9);
    let summary = format!("{refused}, 29 more time(s) in the last");
    while !proxy.log_text().contains(&summary) {
        assert!(
            Instant::now() < deadline,
            "no summary line:\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lines(&proxy.log_text(), &refused), 2);
}

/// 150 response fields pass by default (nginx accepts as many); an upstream can lower the field
/// count and the head size it accepts, and a response past them is a 502 naming the limit.
fn response_limits_are_per_upstream(driver: &str) {
    let fields: String = (0..150).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let raw = format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok").into_bytes();
    let backend = TestBackend::start(move |_| Reply::new(0, Body::Raw(raw.clone())));
    let b = backend.port;
    let rest = upstream_toml("roomy", &[b], "")
        + &format!(
            "[[upstreams]]\nname = \"few\"\nbackends = [{{ address = \"127.0.0.1:{b}\" }}]\n\
             max_response_headers = 10\n\n\
             [[upstreams]]\nname = \"small\"\nbackends = [{{ address = \"127.0.0.1:{b}\" }}]\n\
             max_response_head_bytes = \"1KiB\"\n\n"
        )
        + "[[routes]]\nname = \"few\"\npath_prefix = \"/few\"\nupstream = \"few\"\n\n\
           [[routes]]\nname = \"small\"\npath_prefix = \"/small\"\nupstream = \"small\"\n\n\
           [[routes]]\nname = \"roomy\"\nupstream = \"roomy\"\n";
    let proxy = start_proxy(driver, "", &rest);
    let mut client = Client::connect(proxy.addr);
    client.send(get_req("a", "/roomy", ""));
    let r = client.response();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.header("x-field-149"), Some("149"));
    assert_eq!(
        r.headers
            .iter()
            .filter(|(n, _)| n.starts_with("X-Field-"))
            .count(),
        150
    );
    for (path, cause) in [
        ("/few", "more header fields than max_response_headers"),
        ("/small", "larger than max_response_head_bytes"),
    ] {
        let mut client = Client::connect(proxy.addr);
        client.send(get_req("a", path, ""));
        let r = client.response();
        assert_eq!(r.status, 502, "{path}");
        assert!(r.text().contains(cause), "{path}: {}", r.text());
    }
}
