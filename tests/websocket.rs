//! WebSocket through coregate with a real client and server (tungstenite), plain and over TLS,
//! on both drivers: the upgrade goes through, messages flow both ways (small and 1 MiB), the
//! close handshake completes; the tunnel outlives the HTTP idle timeout while traffic flows and
//! closes after `tunnel_idle_timeout` without any; tunnels are counted. A route that does not
//! allow the upgrade forwards the request without it.

mod common;

use common::tls::{self, Pki, ECDSA};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// A WebSocket server on loopback: answers each text message `m` with `echo: m`, and `push N`
/// with N messages of its own; binary messages come back as they are. Records each upgrade
/// request's `X-Forwarded-Proto`.
struct WsServer {
    port: u16,
    protos: Arc<Mutex<Vec<String>>>,
}

fn ws_server() -> WsServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let protos = Arc::new(Mutex::new(Vec::new()));
    let seen = protos.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().take(16) {
            let Ok(s) = s else { return };
            let seen = seen.clone();
            std::thread::spawn(move || serve_ws(s, seen));
        }
    });
    WsServer { port, protos }
}

#[allow(clippy::result_large_err)] // tungstenite's callback type
fn serve_ws(s: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let callback = |req: &tungstenite::handshake::server::Request, resp| {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        seen.lock().unwrap().push(proto);
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(s, callback) else {
        return;
    };
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                if let Some(n) = t.strip_prefix("push ") {
                    for i in 0..n.parse::<usize>().unwrap() {
                        ws.send(Message::text(format!("pushed {i}"))).unwrap();
                    }
                } else {
                    ws.send(Message::text(format!("echo: {t}"))).unwrap();
                }
            }
            Ok(Message::Binary(b)) => ws.send(Message::Binary(b)).unwrap(),
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn config(
    driver: &str,
    port: u16,
    admin: u16,
    ws: u16,
    listener_extra: &str,
    limits: &str,
) -> String {
    format!(
        "[runtime]\nworkers = 1\npin = false\ndriver = \"{driver}\"\n\n\
         [limits]\nclient_idle_timeout = \"1s\"\n{limits}\n\n\
         [admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\n{listener_extra}\n\n\
         [[upstreams]]\nname = \"ws\"\nbackends = [ {{ address = \"127.0.0.1:{ws}\" }} ]\n\n\
         [[routes]]\nname = \"chat\"\nupstream = \"ws\"\n"
    )
}

fn read_text<S: Read + Write>(ws: &mut WebSocket<S>) -> String {
    match ws.read().unwrap() {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Talks to the echo server through a WebSocket on `stream`; ends with the close handshake.
fn converse<S: Read + Write>(stream: S) {
    let (mut ws, resp) = tungstenite::client::client("ws://a.test/chat", stream).unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(read_text(&mut ws), "echo: hello");
    // Server to client without a request in between.
    ws.send(Message::text("push 3")).unwrap();
    for i in 0..3 {
        assert_eq!(read_text(&mut ws), format!("pushed {i}"));
    }
    // A large message each way.
    let big = pattern(1 << 20, 7);
    ws.send(Message::binary(big.clone())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "1 MiB came back intact"),
        other => panic!("{other:?}"),
    }
    // The close handshake: the server answers our close, then the connection ends.
    ws.close(None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ws.read() {
            Ok(_) => assert!(Instant::now() < deadline),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unclean close: {e}"),
        }
    }
}

fn websocket_plain_and_tls(driver: &str) {
    let dir = TempDir::new("ws");
    let pki = Pki::new(&dir.0);
    let cert = pki.issue("a", &["a.test"], "a.test", ECDSA, false);
    let server = ws_server();
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let tls_listener = format!(
        "\n[[listeners]]\naddress = \"127.0.0.1:{tls_port}\"\n[listeners.tls]\n\
         certificates = [{{ cert = \"{}\", key = \"{}\" }}]",
        cert.cert.display(),
        cert.key.display()
    );
    let proxy = Proxy::start(
        &config(driver, port, admin, server.port, &tls_listener, ""),
        port,
        "info",
    );
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();

    let plain = TcpStream::connect(proxy.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    converse(plain);

    let config = Arc::new(pki.client(&[]));
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    converse(tls::connect(tls_addr, "a.test", &config).unwrap());

    assert_eq!(*server.protos.lock().unwrap(), vec!["http", "https"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(admin);
        if sample(&m, "coregate_tunnels_open") == 0.0 {
            assert_eq!(sample(&m, "coregate_tunnels_total"), 2.0, "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn websocket_plain_and_tls_io_uring() {
    websocket_plain_and_tls("io_uring");
}

#[test]
fn websocket_plain_and_tls_epoll() {
    websocket_plain_and_tls("epoll");
}

#[test]
fn the_tunnel_outlives_the_http_idle_timeout_with_traffic_and_closes_without() {
    let server = ws_server();
    let (port, admin) = (free_port(), free_port());
    let text = config(
        "io_uring",
        port,
        admin,
        server.port,
        "",
        "tunnel_idle_timeout = \"2s\"",
    );
    let proxy = Proxy::start(&text, port, "info");
    let s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut ws, _) = tungstenite::client::client("ws://a.test/chat", s).unwrap();
    // 3.5 s of traffic, a message every 500 ms: past client_idle_timeout (1 s) and past
    // tunnel_idle_timeout (2 s) in total, never idle for either.
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_millis(3500) {
        ws.send(Message::text(format!("m{n}"))).unwrap();
        assert_eq!(read_text(&mut ws), format!("echo: m{n}"));
        n += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    // Then silence: the proxy closes the tunnel after about 2 s.
    let quiet = Instant::now();
    let end = ws.read();
    let waited = quiet.elapsed();
    assert!(end.is_err(), "{end:?}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[test]
fn a_route_without_the_upgrade_forwards_the_request_without_it() {
    let backend = TestBackend::hello();
    let rest = format!(
        "{}[[routes]]\nname = \"plain\"\nupstream = \"app\"\nupgrades = []\n",
        upstream_toml("app", &[backend.port], "")
    );
    let proxy = start_proxy("io_uring", "", &rest);
    let mut c = Client::connect(proxy.addr);
    c.send(
        "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(c.response().status, 200);
    let r = &backend.requests()[0];
    assert_eq!(r.header("upgrade"), None);
    assert!(r
        .all("connection")
        .iter()
        .all(|v| !v.to_ascii_lowercase().contains("upgrade")));
}

#[test]
fn only_the_allowed_protocol_is_asked_for_and_accepted() {
    // The backend switches to h2c whatever it was asked: coregate refuses the 101.
    let backend = TestBackend::start(|_| {
        Reply::new(101, Body::Empty)
            .header("Upgrade", "h2c")
            .header("Connection", "Upgrade")
    });
    let rest = format!(
        "{}[[routes]]\nname = \"ws\"\nupstream = \"app\"\n",
        upstream_toml("app", &[backend.port], "")
    );
    let proxy = start_proxy("io_uring", "", &rest);
    let mut c = Client::connect(proxy.addr);
    c.send(
        "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(c.response().status, 502);
    let r = &backend.requests()[0];
    assert_eq!(
        r.header("upgrade"),
        Some("websocket"),
        "h2c never asked for"
    );
}
