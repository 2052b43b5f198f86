//! PROXY protocol v1 and v2 on a listener with `proxy_protocol = true`, over real sockets, on
//! both drivers: the client the header names reaches the backend in `X-Forwarded-For`, keys
//! rate limits and shows in the access log; a header split over several writes works; LOCAL
//! and UNKNOWN keep the connection's own address; a connection without a valid header is closed
//! with nothing forwarded, and counted. A listener without the option answers a header as a
//! malformed request line.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

fn v2(cmd: u8, fam: u8, addrs: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | cmd);
    h.push(fam);
    h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    h.extend_from_slice(addrs);
    h
}

fn v2_tcp6(src: &str, port: u16) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
    a.extend_from_slice(
        &"2001:db8::ff"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    a.extend_from_slice(&port.to_be_bytes());
    a.extend_from_slice(&443u16.to_be_bytes());
    v2(1, 0x21, &a)
}

/// One request on a new connection, opened by `header`; the status.
fn one(proxy: &Proxy, header: &[u8], path: &str) -> u16 {
    let mut c = Client::connect(proxy.addr);
    c.send([header, get_req("a", path, "").as_bytes()].concat());
    c.response().status
}

fn proxied(driver: &str) {
    let backend = TestBackend::echo();
    let dir = TempDir::new("proxy-protocol");
    let log = dir.0.join("access.log");
    let port = free_port();
    let admin = free_port();
    let text = format!(
        "[runtime]\nworkers = 1\npin = false\ndriver = \"{driver}\"\n\n\
         [admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\nproxy_protocol = true\n\
         access_log = {{ path = \"{}\", format = \"json\", flush = \"100ms\" }}\n\n\
         [[rate_limits]]\nname = \"per-client\"\nkey = \"client_ip\"\nrate = 1\nperiod = \"1s\"\n\n{}\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\nrate_limits = [\"per-client\"]\n",
        log.display(),
        upstream_toml("app", &[backend.port], "")
    );
    let proxy = Proxy::start(&text, port, "info");

    // v1, header and request in one write.
    let a = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
    assert_eq!(one(&proxy, a, "/v1"), 200);
    // The same client again, on a new connection: its own bucket is spent.
    assert_eq!(one(&proxy, a, "/v1-again"), 429);
    // v2 over IPv6, the header in three writes, then the request.
    let h = v2_tcp6("2001:db8::1", 40000);
    let mut c = Client::connect(proxy.addr);
    for part in [&h[..5], &h[5..20], &h[20..]] {
        c.send(part);
        std::thread::sleep(Duration::from_millis(30));
    }
    c.send(get_req("a", "/v2", ""));
    assert_eq!(c.response().status, 200);
    // A second request on that connection keeps its client.
    c.send(get_req("a", "/v2-second", ""));
    assert_eq!(c.response().status, 429);
    // v2 LOCAL and v1 UNKNOWN: the connection's own address (127.0.0.1), a third bucket.
    let local = v2(0, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]);
    assert_eq!(one(&proxy, &local, "/local"), 200);
    assert_eq!(one(&proxy, b"PROXY UNKNOWN\r\n", "/unknown"), 429);

    let seen: Vec<(String, Option<String>)> = backend
        .requests()
        .iter()
        .map(|r| {
            (
                r.target.clone(),
                r.header("x-forwarded-for").map(str::to_string),
            )
        })
        .collect();
    let want = [
        ("/v1", "192.0.2.7"),
        ("/v2", "2001:db8::1"),
        ("/local", "127.0.0.1"),
    ];
    assert_eq!(
        seen,
        want.map(|(t, x)| (t.to_string(), Some(x.to_string())))
            .to_vec()
    );

    // Without a valid header: closed at once, nothing answered, nothing forwarded, counted.
    let refused = refused_count(admin);
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"PROXY TCP4 192.0.2.999 198.51.100.1 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x41\x00\x00",
    ] {
        let mut c = Client::connect(proxy.addr);
        c.send(bad);
        assert!(c.closed(), "{}", String::from_utf8_lossy(bad));
        assert!(c.pending().is_empty());
    }
    assert_eq!(backend.requests().len(), 3);

    // The access log names the header's clients.
    std::thread::sleep(Duration::from_millis(400));
    let text = std::fs::read_to_string(&log).unwrap();
    let clients: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}", v["client"].as_str().unwrap(), v["status"])
        })
        .collect();
    assert_eq!(
        clients,
        [
            "192.0.2.7 200",
            "192.0.2.7 429",
            "2001:db8::1 200",
            "2001:db8::1 429",
            "127.0.0.1 200",
            "127.0.0.1 429"
        ]
    );

    assert_eq!(refused_count(admin), refused + 4);
}

/// `coregate_proxy_protocol_errors_total` from the admin listener's /metrics.
fn refused_count(admin: u16) -> u64 {
    let mut m = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    m.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(&mut m, &mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("coregate_proxy_protocol_errors_total "))
        .unwrap_or_else(|| panic!("no counter in {body}"))
        .parse()
        .unwrap()
}

fn plain_listener_refuses_a_header(driver: &str) {
    let backend = TestBackend::echo();
    let proxy = proxy_to(driver, backend.port, "", "");
    let mut c = Client::connect(proxy.addr);
    c.send(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    // Read as a request line: method PROXY, an unknown version (nginx: 400).
    assert_eq!(c.response().status, 505);
    assert!(backend.requests().is_empty());
}

both_drivers!(proxied, plain_listener_refuses_a_header);
