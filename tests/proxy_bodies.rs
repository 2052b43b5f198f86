//! Bodies through the proxy, under both drivers: multi-megabyte request and response bodies in
//! Content-Length and chunked framing (odd chunk sizes, a chunked request written in small
//! pieces) arriving byte-identical, a close-delimited response (re-chunked for HTTP/1.1
//! clients), an HTTP/1.0 client getting a chunked upstream response de-chunked, chunk
//! extensions and trailers (with their `Trailer` announcement), heads and chunks that arrive a
//! byte at a time.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::Duration;

const BIG: usize = 5 * 1024 * 1024 + 17;
/// Odd chunk sizes, including 1 byte and sizes straddling the proxy's 64 KiB buffer.
const ODD: [usize; 6] = [1, 7, 4093, 65537, 3, 131_071];

both_drivers!(
    large_content_length_request_body_is_forwarded_intact,
    large_chunked_request_body_sent_in_pieces_is_forwarded_intact,
    large_response_bodies_in_both_framings_arrive_intact,
    close_delimited_response_is_relayed_to_the_end,
    http10_client_gets_a_chunked_response_dechunked,
    chunk_extensions_and_trailers_pass_through,
    trailer_fields_and_their_announcement_reach_the_client,
    heads_and_chunks_arriving_byte_by_byte,
);

/// Echoes the request body: with Content-Length, or chunked with odd sizes when the target
/// says so.
fn echo_backend() -> TestBackend {
    TestBackend::start(|r| {
        if r.target.contains("chunked") {
            Reply::new(200, Body::Chunked(r.body.clone(), ODD.to_vec()))
        } else {
            Reply::ok(r.body.clone())
        }
    })
}

fn large_content_length_request_body_is_forwarded_intact(driver: &str) {
    let backend = echo_backend();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    let body = pattern(BIG, 1);
    for target in ["/echo", "/echo-chunked"] {
        client.send(format!(
            "POST {target} HTTP/1.1\r\nHost: a\r\nContent-Length: {BIG}\r\n\r\n"
        ));
        client.send(&body);
        let r = client.response_to("POST");
        assert_eq!(r.status, 200);
        assert_eq!(r.chunked, target.contains("chunked"));
        assert!(
            r.body == body,
            "echoed body differs ({} bytes)",
            r.body.len()
        );
    }
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.body == body && !r.chunked));
    assert_eq!(backend.conns(), 1);
}

fn large_chunked_request_body_sent_in_pieces_is_forwarded_intact(driver: &str) {
    let backend = echo_backend();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    let body = pattern(BIG, 2);
    for target in ["/echo", "/echo-chunked"] {
        client.send(format!(
            "POST {target} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        let encoded = chunk(&body, &ODD).concat();
        // The first 6 KiB (size lines, 1- and 7-byte chunks, CRLFs) in 3-byte writes, the
        // next in ~1 KiB writes, the rest in 64 KiB writes.
        let (trickle, rest) = encoded.split_at(6 * 1024);
        for (i, piece) in trickle.chunks(3).enumerate() {
            client.send(piece);
            if i % 16 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let (small, rest) = rest.split_at(300 * 1024);
        for piece in small.chunks(1021) {
            client.send(piece);
        }
        for piece in rest.chunks(65536) {
            client.send(piece);
        }
        let r = client.response_to("POST");
        assert_eq!(r.status, 200);
        assert!(
            r.body == body,
            "echoed body differs ({} bytes)",
            r.body.len()
        );
    }
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.body == body && r.chunked));
}

fn large_response_bodies_in_both_framings_arrive_intact(driver: &str) {
    let backend = TestBackend::start(|r| match r.target.as_str() {
        "/length" => Reply::ok(pattern(BIG, 3)),
        "/chunked" => Reply::new(200, Body::Chunked(pattern(BIG, 4), ODD.to_vec())),
        "/one-chunk" => Reply::new(200, Body::Chunked(pattern(BIG, 5), vec![BIG])),
        _ => Reply::ok("small"),
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for (path, seed, chunked) in [
        ("/length", 3, false),
        ("/chunked", 4, true),
        ("/one-chunk", 5, true),
    ] {
        client.send(get_req("a", path, ""));
        let r = client.response();
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.chunked, chunked, "{path}");
        assert!(r.body == pattern(BIG, seed), "{path}: body differs");
        // The framing stayed in step: a small request follows on the same connection.
        client.send(get_req("a", "/small", ""));
        assert_eq!(client.response().text(), "small");
    }
    assert_eq!(backend.conns(), 1);
}

fn close_delimited_response_is_relayed_to_the_end(driver: &str) {
    let size = 1024 * 1024 + 3;
    let backend = TestBackend::start(move |r| match r.target.as_str() {
        "/until-close" => Reply::new(200, Body::UntilClose(pattern(size, 6))),
        _ => Reply::ok("fine"),
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    // HTTP/1.1: the body is re-chunked, so the connection and the request pipelined behind it
    // survive (as with nginx).
    let mut client = Client::connect(proxy.addr);
    client.send(get_req("a", "/until-close", "") + &get_req("a", "/next", ""));
    let head = client.head();
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_none(), "{head:?}");
    assert_eq!(head.all("transfer-encoding"), ["chunked"], "{head:?}");
    assert!(!head.closes(), "{head:?}");
    let (body, chunked) = client.read_body(&head, "GET").expect("body");
    assert!(chunked);
    assert!(
        body == pattern(size, 6),
        "body differs ({} bytes)",
        body.len()
    );
    assert_eq!(client.response().text(), "fine");
    // HTTP/1.0: no chunked coding to fall back on; the end of the body is the end of the
    // connection.
    let mut client = Client::connect(proxy.addr);
    client.send("GET /until-close HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
    let head = client.head();
    assert_eq!(head.status, 200);
    assert!(
        head.closes() && head.header("transfer-encoding").is_none(),
        "{head:?}"
    );
    let (body, chunked) = client.read_body(&head, "GET").expect("body");
    assert!(!chunked && body == pattern(size, 6));
    assert!(client.closed());
    // The proxy goes on serving.
    assert_eq!(get(proxy.addr, "a", "/next").body, b"fine");
}

fn http10_client_gets_a_chunked_response_dechunked(driver: &str) {
    let body = pattern(300_000, 8);
    let b2 = body.clone();
    let backend = TestBackend::start(move |r| match r.target.as_str() {
        "/chunked" => Reply::new(200, Body::Chunked(b2.clone(), ODD.to_vec())),
        _ => Reply::ok("plain"),
    });
    let proxy = proxy_to(driver, backend.port, "", "");

    let mut client = Client::connect(proxy.addr);
    client.send("GET /chunked HTTP/1.0\r\nHost: a\r\n\r\n");
    let r = client.response();
    assert_eq!(r.status, 200);
    assert!(r.all("transfer-encoding").is_empty(), "{r:?}");
    assert!(!r.chunked);
    assert!(
        r.body == body,
        "de-chunked body differs ({} bytes)",
        r.body.len()
    );
    assert!(client.closed());

    // An HTTP/1.0 client asking for keep-alive keeps its connection for a sized response.
    let mut client = Client::connect(proxy.addr);
    for _ in 0..2 {
        client.send("GET /plain HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        let r = client.response();
        assert_eq!((r.status, r.text().as_str()), (200, "plain"));
        assert!(!r.closes(), "{r:?}");
    }
    // Without keep-alive, HTTP/1.0 closes after the response.
    client.send("GET /plain HTTP/1.0\r\nHost: a\r\n\r\n");
    assert_eq!(client.response().text(), "plain");
    assert!(client.closed());
    // The backend always saw HTTP/1.1 requests with the hop-by-hop Connection removed.
    for r in backend.requests() {
        assert!(r.all("connection").is_empty(), "{r:?}");
    }
}

fn chunk_extensions_and_trailers_pass_through(driver: &str) {
    let backend = TestBackend::start(|r| {
        Reply::new(
            0,
            Body::Raw(
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                     {:x};name=value\r\n{}\r\n0\r\nX-Sum: 42\r\n\r\n",
                    r.body.len(),
                    String::from_utf8_lossy(&r.body)
                )
                .into_bytes(),
            ),
        )
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for _ in 0..2 {
        client.send(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
             3;ext=\"quoted\"\r\nabc\r\n2 ; e\r\nde\r\n0\r\nX-Checksum: 1\r\n\r\n",
        );
        let r = client.response_to("POST");
        assert_eq!((r.status, r.text().as_str()), (200, "abcde"));
    }
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].body, b"abcde");
}

/// `Trailer` announces the trailer fields of a chunked body; both travel end to end (RFC 9110
/// §6.6.2). An HTTP/1.0 client gets the body de-chunked, without the trailers or their
/// announcement.
fn trailer_fields_and_their_announcement_reach_the_client(driver: &str) {
    let backend = TestBackend::start(|_| {
        Reply::new(
            0,
            Body::Raw(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                  5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n"
                    .to_vec(),
            ),
        )
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let raw = |request: &str| {
        let mut s = connect(proxy.addr);
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let got = raw("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let (head, body) = got.split_once("\r\n\r\n").expect(&got);
    assert!(head.contains("\r\nTrailer: X-Sum"), "{got:?}");
    assert_eq!(body, "5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n", "{got:?}");
    let got = raw("GET / HTTP/1.0\r\n\r\n");
    let (head, body) = got.split_once("\r\n\r\n").expect(&got);
    assert!(!head.to_ascii_lowercase().contains("trailer"), "{got:?}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{got:?}"
    );
    assert_eq!(body, "hello", "{got:?}");
}

fn heads_and_chunks_arriving_byte_by_byte(driver: &str) {
    let body = pattern(20_000, 9);
    let b2 = body.clone();
    let backend = TestBackend::start(move |r| {
        let reply = match r.target.as_str() {
            "/chunked" => Reply::new(200, Body::Chunked(b2.clone(), vec![1, 2, 3, 1000])),
            _ => Reply::ok(b2.clone()),
        };
        reply.header("X-Long", &"l".repeat(200)).trickle(600)
    });
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut client = Client::connect(proxy.addr);
    for path in ["/length", "/chunked"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\nContent-Length: 5\r\n\r\nhello",
            "p".repeat(100)
        );
        for (i, b) in req.as_bytes().iter().enumerate() {
            client.send([*b]);
            if i % 8 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let r = client.response_to("POST");
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body == body, "{path}: body differs");
    }
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.body == b"hello"));
}
