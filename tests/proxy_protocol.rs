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

/// A backend that expects a PROXY protocol header (v1 or v2) first on each connection, then
/// answers each GET with "conn N from ADDR": N counts its connections, ADDR is the header's
/// source. Its own reader, independent of coregate's parser.
struct PpBackend {
    port: u16,
    headers: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    /// Connections coregate closed (EOF seen), by number.
    closed: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl PpBackend {
    fn start() -> PpBackend {
        use std::io::{BufRead, BufReader, Read};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let headers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let closed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (seen, ended) = (headers.clone(), closed.clone());
        std::thread::spawn(move || {
            for (n, s) in l.incoming().enumerate().take(64) {
                let Ok(s) = s else { return };
                let (seen, ended) = (seen.clone(), ended.clone());
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut w = s.try_clone().unwrap();
                    let mut r = BufReader::new(s);
                    let mut first = [0u8; 12];
                    if r.read_exact(&mut first[..6]).is_err() {
                        return;
                    }
                    let (raw, source) = if &first[..6] == b"PROXY " {
                        let mut line = Vec::new();
                        r.read_until(b'\n', &mut line).unwrap();
                        let text = String::from_utf8(line.clone()).unwrap();
                        let f: Vec<&str> = text.trim_end().split(' ').collect();
                        let source = match f[0] {
                            "UNKNOWN" => "unknown".to_string(),
                            "TCP6" => format!("[{}]:{}", f[1], f[3]),
                            _ => format!("{}:{}", f[1], f[3]),
                        };
                        ([&first[..6], &line[..]].concat(), source)
                    } else {
                        r.read_exact(&mut first[6..]).unwrap();
                        assert_eq!(&first, b"\r\n\r\n\0\r\nQUIT\n");
                        let mut fixed = [0u8; 4];
                        r.read_exact(&mut fixed).unwrap();
                        let len = u16::from_be_bytes([fixed[2], fixed[3]]) as usize;
                        let mut a = vec![0u8; len];
                        r.read_exact(&mut a).unwrap();
                        let source = match fixed[1] {
                            _ if fixed[0] == 0x20 => "local".to_string(),
                            0x11 => format!(
                                "{}.{}.{}.{}:{}",
                                a[0],
                                a[1],
                                a[2],
                                a[3],
                                u16::from_be_bytes([a[8], a[9]])
                            ),
                            _ => {
                                let mut o = [0u8; 16];
                                o.copy_from_slice(&a[..16]);
                                format!(
                                    "[{}]:{}",
                                    std::net::Ipv6Addr::from(o),
                                    u16::from_be_bytes([a[32], a[33]])
                                )
                            }
                        };
                        ([&first[..], &fixed[..], &a[..]].concat(), source)
                    };
                    seen.lock().unwrap().push(raw);
                    loop {
                        let mut head = Vec::new();
                        while !head.ends_with(b"\r\n\r\n") {
                            let mut line = Vec::new();
                            if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                                ended.lock().unwrap().push(n);
                                return;
                            }
                            head.extend_from_slice(&line);
                        }
                        let body = format!("conn {n} from {source}");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if w.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        PpBackend {
            port,
            headers,
            closed,
        }
    }
}

/// Upstreams with `proxy_protocol = "v1"` and `"v2"`: each new connection to the backend opens
/// with a header naming the client (the one a PROXY header named to coregate, or the socket's);
/// a connection kept for one client connection is reused by it and by no other.
fn sends_to_upstreams(driver: &str) {
    let (b1, b2) = (PpBackend::start(), PpBackend::start());
    let port = free_port();
    let text = format!(
        "[runtime]\nworkers = 1\npin = false\ndriver = \"{driver}\"\n\n\
         [[listeners]]\nname = \"lb\"\naddress = \"127.0.0.1:{port}\"\nproxy_protocol = true\n\n\
         [[upstreams]]\nname = \"one\"\nproxy_protocol = \"v1\"\nbackends = [ {{ address = \"127.0.0.1:{}\" }} ]\n\n\
         [[upstreams]]\nname = \"two\"\nproxy_protocol = \"v2\"\nbackends = [ {{ address = \"127.0.0.1:{}\" }} ]\n\n\
         [[routes]]\nname = \"v2\"\npath_prefix = \"/v2/\"\nupstream = \"two\"\n\n\
         [[routes]]\nname = \"v1\"\npath_prefix = \"/\"\nupstream = \"one\"\n",
        b1.port, b2.port
    );
    let proxy = Proxy::start(&text, port, "info");
    let client = |header: &str| {
        let mut c = Client::connect(proxy.addr);
        c.send(header);
        c
    };
    let get = |c: &mut Client, path: &str| {
        c.send(get_req("a", path, ""));
        let r = c.response();
        assert_eq!(r.status, 200);
        r.text()
    };
    let a_header = "PROXY TCP4 192.0.2.7 198.51.100.1 1111 443\r\n";
    let mut a = client(a_header);
    let a1 = get(&mut a, "/x");
    assert!(a1.ends_with(" from 192.0.2.7:1111"), "{a1}");
    assert_eq!(
        get(&mut a, "/y"),
        a1,
        "the same client reuses its connection"
    );
    let mut b = client("PROXY TCP6 2001:db8::9 2001:db8::1 2222 443\r\n");
    let b1_text = get(&mut b, "/x");
    assert!(b1_text.ends_with(" from [2001:db8::9]:2222"), "{b1_text}");
    assert_ne!(b1_text, a1, "another client gets a connection of its own");
    // The same address again, on a new connection: not the first one's upstream connection.
    let mut a_again = client(a_header);
    let a2 = get(&mut a_again, "/x");
    assert!(a2.ends_with(" from 192.0.2.7:1111"), "{a2}");
    assert_ne!(a2, a1);
    assert_eq!(get(&mut a, "/z"), a1);
    // v2, and a client whose header was LOCAL: the socket's own address.
    let a_v2 = get(&mut a, "/v2/x");
    assert!(a_v2.ends_with(" from 192.0.2.7:1111"), "{a_v2}");
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let mut l = Client::connect(proxy.addr);
    l.send(local);
    let l_v2 = get(&mut l, "/v2/x");
    assert!(l_v2.contains(" from 127.0.0.1:"), "{l_v2}");
    let h1 = b1.headers.lock().unwrap().clone();
    assert_eq!(
        h1.len(),
        3,
        "three client connections, three upstream connections"
    );
    // The destination is the one the client's own header gave (HAProxy passes it on too).
    assert_eq!(h1[0], b"PROXY TCP4 192.0.2.7 198.51.100.1 1111 443\r\n");
    let h2 = b2.headers.lock().unwrap().clone();
    assert_eq!(h2.len(), 2);
    assert_eq!(&h2[0][12..16], &[0x21, 0x11, 0, 12]);
    // The LOCAL client: its socket's ends, the listener's address as destination.
    let mut want = vec![0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 1];
    want.extend_from_slice(&h2[1][24..26]);
    want.extend_from_slice(&port.to_be_bytes());
    assert_eq!(&h2[1][12..], &want[..]);
}

/// What a PROXY protocol upstream does with the connections it keeps per client: a client
/// connection that ends takes its idle connections with it (also after `Connection: close`),
/// another client's idle connection gives way under `max_connections`, and health checks open
/// with a LOCAL header.
fn owned_connections_end_with_their_client(driver: &str) {
    let (b1, b2) = (PpBackend::start(), PpBackend::start());
    let port = free_port();
    let text = format!(
        "[runtime]\nworkers = 1\npin = false\ndriver = \"{driver}\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[upstreams]]\nname = \"one\"\nproxy_protocol = \"v1\"\nmax_connections = 1\n\
         backends = [ {{ address = \"127.0.0.1:{}\" }} ]\n\n\
         [[upstreams]]\nname = \"two\"\nproxy_protocol = \"v2\"\n\
         backends = [ {{ address = \"127.0.0.1:{}\" }} ]\n\
         [upstreams.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n\n\
         [[routes]]\nname = \"two\"\npath_prefix = \"/two/\"\nupstream = \"two\"\n\n\
         [[routes]]\nname = \"one\"\npath_prefix = \"/\"\nupstream = \"one\"\n",
        b1.port, b2.port
    );
    let proxy = Proxy::start(&text, port, "info");
    let get = |c: &mut Client, path: &str, extra: &str| {
        c.send(get_req("a", path, extra));
        let r = c.response();
        assert_eq!(r.status, 200, "{r:?}");
        r.text()
    };
    let wait_closed = |b: &PpBackend, n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !b.closed.lock().unwrap().contains(&n) {
            assert!(
                std::time::Instant::now() < deadline,
                "connection {n} still open"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Client A keeps its connection (conn 0) idle; B, under max_connections = 1, gets one of
    // its own after A's idle one is closed.
    let mut a = Client::connect(proxy.addr);
    assert!(get(&mut a, "/a", "").starts_with("conn 0 "));
    let mut b = Client::connect(proxy.addr);
    assert!(get(&mut b, "/b", "").starts_with("conn 1 "));
    wait_closed(&b1, 0);
    // B leaves: its idle connection is closed with it.
    drop(b);
    wait_closed(&b1, 1);
    // A's request with Connection: close: its connection closes with the client's.
    assert!(get(&mut a, "/a2", "Connection: close\r\n").starts_with("conn 2 "));
    wait_closed(&b1, 2);
    // Health checks on the v2 upstream open with a LOCAL header; it stays up and serves.
    std::thread::sleep(Duration::from_millis(400));
    let mut c = Client::connect(proxy.addr);
    let text = get(&mut c, "/two/x", "");
    assert!(text.contains(" from 127.0.0.1:"), "{text}");
    let h2 = b2.headers.lock().unwrap().clone();
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert!(
        h2.iter().filter(|h| h.as_slice() == local).count() >= 2,
        "{h2:?}"
    );
}

both_drivers!(sends_to_upstreams, owned_connections_end_with_their_client);
