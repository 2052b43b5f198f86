//! Pooled upstream connections: closed by the worker's housekeeping tick once they have been
//! idle for `idle_timeout`, with no traffic at all, and closed on coregate's side as soon as the
//! backend closes them (no socket left in CLOSE-WAIT). Checked from the kernel's socket table.

mod common;

use common::*;
use std::time::{Duration, Instant};

both_drivers!(
    idle_pooled_connections_close_without_traffic,
    backend_closed_pooled_connections_leave_no_close_wait
);

/// TCP states in /proc/net/tcp.
const ESTABLISHED: u8 = 0x01;
const CLOSE_WAIT: u8 = 0x08;

/// Sockets on this machine connected to 127.0.0.1:`port` (the remote end), by state. Only the
/// proxy under test connects to a test backend's port.
fn sockets_to(port: u16, state: u8) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let remote_port = f[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16) == Ok(port)
                && u8::from_str_radix(f[3], 16) == Ok(state)
        })
        .count()
}

/// Waits up to `limit` for `cond`; returns how long it took.
fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Ten concurrent requests leave ten pooled connections; with no further traffic they are all
/// closed within `idle_timeout` plus one housekeeping tick (half the timeout).
fn idle_pooled_connections_close_without_traffic(driver: &str) {
    let backend = TestBackend::start(|_| Reply::ok("x").delay(Duration::from_millis(200)));
    let rest = upstream_toml("app", &[backend.port], "")
        + "[upstreams.pool]\nidle_timeout = \"1s\"\n\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n";
    let proxy = start_proxy(driver, "", &rest);
    let clients: Vec<_> = (0..10)
        .map(|i| {
            let addr = proxy.addr;
            std::thread::spawn(move || get(addr, "a", &format!("/{i}")).status)
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    let idle_since = Instant::now();
    assert_eq!(backend.conns(), 10);
    assert_eq!(sockets_to(backend.port, ESTABLISHED), 10);
    // idle_timeout (1 s) + one tick (0.5 s) + generous slack for a loaded machine.
    let closed = within(Duration::from_secs(5), || {
        sockets_to(backend.port, ESTABLISHED) == 0
    });
    let took = idle_since.elapsed();
    assert!(closed.is_some(), "pooled connections still open after 5 s");
    assert!(
        took < Duration::from_millis(3500),
        "closed only after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "closed before idle_timeout: {took:?}"
    );
    assert_eq!(backend.wait_ended(10), 10);
    // The proxy still serves (a new connection).
    assert_eq!(get(proxy.addr, "a", "/again").status, 200);
    assert_eq!(backend.conns(), 11);
}

/// A backend that closes its keep-alive connections right after answering: coregate's side is
/// closed within a tick, long before the pool's 60 s idle_timeout.
fn backend_closed_pooled_connections_leave_no_close_wait(driver: &str) {
    let backend = TestBackend::start(|_| Reply::ok("bye").then(Ending::Close));
    let proxy = proxy_to(driver, backend.port, "", "");
    for i in 0..5 {
        assert_eq!(get(proxy.addr, "a", &format!("/{i}")).status, 200);
    }
    assert_eq!(backend.wait_ended(5), 5);
    let gone = within(Duration::from_secs(3), || {
        sockets_to(backend.port, CLOSE_WAIT) == 0 && sockets_to(backend.port, ESTABLISHED) == 0
    });
    assert!(
        gone.is_some(),
        "{} socket(s) in CLOSE-WAIT 3 s after the backend closed",
        sockets_to(backend.port, CLOSE_WAIT)
    );
}
