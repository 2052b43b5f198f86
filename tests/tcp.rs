//! TCP (L4) listeners over real sockets, on both drivers: bytes intact both ways for large
//! transfers, half-closes passed on; a dead backend is skipped (connect retried on another);
//! `max_connections` and `idle_timeout` hold; TLS terminated in front of a TCP upstream; bytes
//! that follow a PROXY protocol header in the same segment reach the backend.

mod common;

use common::tls::{self, Pki, ECDSA};
use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A raw TCP echo server: writes back every byte, and closes its side after the client's
/// close. Counts connections.
fn echo_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let n = conns.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().take(64) {
            let Ok(mut s) = s else { return };
            n.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut b = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            if s.write_all(&b[..k]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    (port, conns)
}

fn config(driver: &str, port: u16, backends: &[u16], listener_extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
        .collect();
    format!(
        "[runtime]\nworkers = 1\npin = false\ndriver = \"{driver}\"\n\n\
         [[listeners]]\nname = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nupstream = \"raw\"\n\
         {listener_extra}\n\n\
         [[upstreams]]\nname = \"raw\"\nbackends = [ {} ]\n",
        list.join(", ")
    )
}

/// Sends `data` on `s` from another thread while reading what comes back, then half-closes;
/// returns everything read until the other side closes.
fn round_trip<S: Read + Write + Send + 'static>(
    mut writer: S,
    mut reader: impl Read,
    data: Vec<u8>,
    close: impl FnOnce(&mut S) + Send + 'static,
) -> Vec<u8> {
    let t = std::thread::spawn(move || {
        for c in data.chunks(100_000) {
            writer.write_all(c).unwrap();
        }
        close(&mut writer);
        writer
    });
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    drop(t.join().unwrap());
    got
}

fn large_transfer_both_ways(driver: &str) {
    let (backend, _) = echo_server();
    let port = free_port();
    let proxy = Proxy::start(&config(driver, port, &[backend], ""), port, "info");
    let data = pattern(8 << 20, 3);
    let s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let got = round_trip(s.try_clone().unwrap(), s, data.clone(), |w| {
        w.shutdown(Shutdown::Write).unwrap()
    });
    assert_eq!(got.len(), data.len());
    assert!(got == data, "8 MiB came back intact, then the close");
}

#[test]
fn large_transfers_are_intact_both_ways_io_uring() {
    large_transfer_both_ways("io_uring");
}

#[test]
fn large_transfers_are_intact_both_ways_epoll() {
    large_transfer_both_ways("epoll");
}

#[test]
fn a_dead_backend_is_skipped() {
    let (live, conns) = echo_server();
    let dead = free_port(); // nothing listens there
    let port = free_port();
    let proxy = Proxy::start(&config("io_uring", port, &[dead, live], ""), port, "info");
    for i in 0..12 {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = format!("hello {i}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut b = vec![0u8; msg.len()];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b, msg.as_bytes(), "connection {i}");
    }
    // 12, and the start-up probe's connection, which may have gone through too.
    let n = conns.load(Ordering::SeqCst);
    assert!((12..=13).contains(&n), "{n}");
    assert!(
        proxy
            .log_text()
            .contains("TCP connect to the backend failed"),
        "{}",
        proxy.log_text()
    );
}

#[test]
fn max_connections_and_idle_timeout_hold() {
    let (backend, _) = echo_server();
    let port = free_port();
    let text = config(
        "io_uring",
        port,
        &[backend],
        "max_connections = 2\nidle_timeout = \"1s\"",
    );
    let proxy = Proxy::start(&text, port, "info");
    // The start-up probe's connection may still count for a moment.
    std::thread::sleep(Duration::from_millis(200));
    let open: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(proxy.addr).unwrap();
            s.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.read_exact(&mut b).unwrap();
            s
        })
        .collect();
    let mut third = TcpStream::connect(proxy.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        third.read(&mut b).unwrap_or(0),
        0,
        "over max_connections: closed"
    );
    // Without traffic the two close after about 1 s.
    let t0 = Instant::now();
    for mut s in open {
        let n = s.read(&mut b).unwrap_or(0);
        assert_eq!(n, 0);
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // Room again.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"again").unwrap();
    let mut b = [0u8; 5];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"again");
}

#[test]
fn tls_is_terminated_in_front_of_a_tcp_upstream() {
    let dir = TempDir::new("tcp-tls");
    let pki = Pki::new(&dir.0);
    let cert = pki.issue("a", &["a.test"], "a.test", ECDSA, false);
    let (backend, _) = echo_server();
    let port = free_port();
    let extra = format!(
        "[listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]",
        cert.cert.display(),
        cert.key.display()
    );
    let proxy = Proxy::start(&config("io_uring", port, &[backend], &extra), port, "info");
    let config = Arc::new(pki.client(&[]));
    let mut s = tls::connect(proxy.addr, "a.test", &config).unwrap();
    assert_eq!(s.conn.alpn_protocol(), None, "no ALPN on a TCP listener");
    let data = pattern(1 << 20, 9);
    let mut got = vec![0u8; data.len()];
    // Interleave: write a piece, read it back.
    for (w, r) in data.chunks(64 * 1024).zip(got.chunks_mut(64 * 1024)) {
        s.write_all(w).unwrap();
        s.flush().unwrap();
        s.read_exact(r).unwrap();
    }
    assert!(got == data);
}

#[test]
fn the_client_a_proxy_header_names_is_passed_on_upstream() {
    let (backend, _) = echo_server();
    let port = free_port();
    let text =
        config("io_uring", port, &[backend], "proxy_protocol = true") + "proxy_protocol = \"v1\"\n";
    let proxy = Proxy::start(&text, port, "info");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 443\r\nhi")
        .unwrap();
    // The echo server sends back the header coregate opened its connection with, then "hi".
    let want = b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 443\r\nhi";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

#[test]
fn bytes_after_a_proxy_header_reach_the_backend() {
    let (backend, _) = echo_server();
    let port = free_port();
    let proxy = Proxy::start(
        &config("io_uring", port, &[backend], "proxy_protocol = true"),
        port,
        "info",
    );
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 443\r\nearly bytes")
        .unwrap();
    let mut b = [0u8; 11];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"early bytes");
}

#[test]
fn connect_is_tunnelled_only_on_a_route_that_enables_it() {
    let (backend, _) = echo_server();
    let rest = format!(
        "{}[[routes]]\nname = \"tunnel\"\nhosts = [\"tunnel.test\"]\nupstream = \"raw\"\nconnect = true\n\n\
         [[routes]]\nname = \"web\"\nupstream = \"raw\"\n",
        upstream_toml("raw", &[backend], "")
    );
    let proxy = start_proxy("io_uring", "", &rest);
    // A route without `connect`: 501 as before.
    let mut c = Client::connect(proxy.addr);
    c.send("CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n");
    assert_eq!(c.response().status, 501);
    // The enabling route: 200, then a byte tunnel to the backend (bytes sent with the request
    // go first).
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"CONNECT tunnel.test:443 HTTP/1.1\r\nHost: tunnel.test:443\r\n\r\nfirst ")
        .unwrap();
    let head = b"HTTP/1.1 200 Connection Established\r\n\r\n";
    let mut got = vec![0u8; head.len() + 6];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got[..head.len()], head);
    assert_eq!(&got[head.len()..], b"first ");
    let data = pattern(1 << 20, 5);
    let back = round_trip(s.try_clone().unwrap(), s, data.clone(), |w| {
        w.shutdown(Shutdown::Write).unwrap()
    });
    assert!(back == data);
}

/// A backend that first sends `n` bytes without reading anything, then reads `n` bytes, then
/// closes: a peer that stops reading while it writes.
fn write_first_server(n: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().take(4) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let data = pattern(n, 11);
                if s.write_all(&data).is_err() {
                    return;
                }
                let mut got = vec![0u8; n];
                if s.read_exact(&mut got).is_ok() && got == pattern(n, 12) {
                    let _ = s.write_all(b"ok");
                }
            });
        }
    });
    port
}

#[test]
fn a_peer_that_writes_before_it_reads_does_not_stall_the_tunnel_io_uring() {
    writes_before_it_reads("io_uring");
}

#[test]
fn a_peer_that_writes_before_it_reads_does_not_stall_the_tunnel_epoll() {
    writes_before_it_reads("epoll");
}

fn writes_before_it_reads(driver: &str) {
    // 32 MiB each way at once, more than the socket buffers hold: relayed one direction at a
    // time, both sides would wait on each other until a write timed out.
    let n = 32 << 20;
    let backend = write_first_server(n);
    let port = free_port();
    let text = config(driver, port, &[backend], "idle_timeout = \"5s\"")
        + "[upstreams.timeouts]\nidle = \"5s\"\n";
    let proxy = Proxy::start(&text, port, "info");
    let s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t0 = Instant::now();
    let got = round_trip(s.try_clone().unwrap(), s, pattern(n, 12), |_| {});
    assert_eq!(got.len(), n + 2, "after {:?}", t0.elapsed());
    assert!(got[..n] == pattern(n, 11)[..]);
    assert_eq!(&got[n..], b"ok");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
