//! Active health checks: one checker thread per process (`coregate-health`, its own small event
//! loop), one check loop per backend of every upstream that has `[upstreams.health]`. A backend
//! is marked down after `fall` consecutive failed checks and up again after `rise` passed ones;
//! the verdict goes into the shared table ([`super::shared`]) that every worker reads on its
//! sync tick. Workers never wait on a check, and a backend gets one check per interval however
//! many workers there are.
//!
//! A check: connect within `timeout`; for HTTP checks, send `GET path` and read the status line
//! within the same `timeout`, passing when the status is in `expect_status`.
//!
//! A backend the checks saw go down and come back up is also let out of a passive ejection
//! (its failures were those of the outage). One ejected while its checks kept passing stays
//! out for its ejection time.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tls::Stream;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::shared::Shared;
use crate::config::{HealthCheck, Snapshot};

/// The running checker; dropping it stops it.
pub struct Checker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts the checker when some upstream has health checks (`None` otherwise).
    pub fn start(snapshot: Arc<Snapshot>, shared: Arc<Shared>) -> io::Result<Option<Checker>> {
        if snapshot.upstreams.iter().all(|u| u.health.is_none()) {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("coregate-health".into())
            .spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build();
                match rt {
                    Ok(mut rt) => rt.block_on(run(snapshot, shared, stop2)),
                    Err(e) => tracing::error!("health checks cannot start: {e}"),
                }
            })?;
        Ok(Some(Checker {
            stop,
            thread: Some(thread),
        }))
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(snapshot: Arc<Snapshot>, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    for u in &snapshot.upstreams {
        let Some(check) = &u.health else { continue };
        for b in &u.backends {
            n += 1;
            let target = Target {
                upstream: u.index,
                backend: b.index,
                name: format!("upstream {} backend {}", u.name, b.address),
                // A backend that expects a PROXY protocol header gets one saying the check is
                // coregate's own (LOCAL, UNKNOWN), as HAProxy's check-send-proxy.
                proxy_header: u
                    .proxy_protocol
                    .map_or(&[][..], crate::proxy::proxy_protocol::local_header),
                tls: u.tls.as_ref().and_then(|t| {
                    Some((t.clone(), crate::tls::backend_name(&b.address)?))
                }),
                request: check.path.as_ref().map(|path| {
                    let host = check.host.as_deref().unwrap_or(&b.address);
                    format!(
                        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: coregate-health\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes()
                }),
            };
            // Spread the first checks over the interval so backends are not all hit at once.
            let jitter = check
                .interval
                .mul_f64((n * 0x9e37_79b9 % 1000) as f64 / 1000.0);
            monoio::spawn(check_loop(
                target,
                check.clone(),
                jitter,
                shared.clone(),
                stop.clone(),
            ));
        }
    }
    while !stop.load(Relaxed) {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Target {
    upstream: usize,
    backend: usize,
    name: String,
    /// Sent first on a connection of a check that sends anything (HTTP or TLS).
    proxy_header: &'static [u8],
    /// The upstream's TLS, and the backend's name for it.
    tls: Option<(
        Arc<crate::tls::ClientTls>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The HTTP request to send; `None` for a connect-only check (a TLS handshake, with TLS).
    request: Option<Vec<u8>>,
}

async fn check_loop(
    t: Target,
    cfg: HealthCheck,
    first: Duration,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let backend = shared.backend(t.upstream, t.backend);
    let state = &backend.up;
    let mut up = state.load(Relaxed);
    let (mut passed, mut failed) = (0u32, 0u32);
    if sleep_unless_stopped(first, &stop).await {
        return;
    }
    loop {
        match check_once(&t, backend.addr(), &cfg).await {
            Ok(()) => {
                passed += 1;
                failed = 0;
                if !up && passed >= cfg.rise {
                    up = true;
                    state.store(true, Relaxed);
                    // Checks saw it down and back: an ejection from the failures of that
                    // outage ends too.
                    backend.ejected_until_ms.store(0, Relaxed);
                    tracing::info!("{} is up ({passed} check(s) passed)", t.name);
                }
            }
            Err(why) => {
                failed += 1;
                passed = 0;
                if up && failed >= cfg.fall {
                    up = false;
                    state.store(false, Relaxed);
                    tracing::warn!("{} is down: {why} ({failed} check(s) failed)", t.name);
                } else {
                    tracing::debug!("{}: health check failed: {why}", t.name);
                }
            }
        }
        if sleep_unless_stopped(cfg.interval, &stop).await {
            return;
        }
    }
}

/// Sleeps `d` in short steps; true when the checker is stopping.
async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Relaxed) {
            return true;
        }
        let s = left.min(step);
        monoio::time::sleep(s).await;
        left -= s;
    }
    stop.load(Relaxed)
}

async fn check_once(t: &Target, addr: SocketAddr, cfg: &HealthCheck) -> Result<(), String> {
    match monoio::time::timeout(cfg.timeout, probe(t, addr, cfg)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", cfg.timeout)),
    }
}

async fn probe(t: &Target, addr: SocketAddr, cfg: &HealthCheck) -> Result<(), String> {
    let mut tcp = TcpStream::connect_addr(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if t.request.is_none() && t.tls.is_none() {
        return Ok(());
    }
    if !t.proxy_header.is_empty() {
        let (res, _) = tcp.write_all(t.proxy_header).await;
        res.map_err(|e| format!("send: {e}"))?;
    }
    let mut s = match &t.tls {
        None => Stream::Plain(tcp),
        Some((tls, name)) => tls
            .connect(tcp, name)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?,
    };
    let Some(request) = &t.request else {
        return Ok(());
    };
    let (res, _) = s.write_all(request.clone()).await;
    res.map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::with_capacity(256);
    loop {
        let (res, buf) = s.read(Vec::with_capacity(1024)).await;
        let n = res.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a status line".into());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(2).position(|w| w == b"\r\n") {
            let code = status_code(&got[..end]).ok_or("invalid status line")?;
            return if cfg.expect.iter().any(|&(lo, hi)| (lo..=hi).contains(&code)) {
                Ok(())
            } else {
                Err(format!("status {code}"))
            };
        }
        if got.len() > 4096 {
            return Err("status line too long".into());
        }
    }
}

/// The code of `HTTP/1.x NNN ...`.
fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::status_code;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503"), Some(503));
        assert_eq!(status_code(b"HTTP/2 200"), None);
        assert_eq!(status_code(b"HTTP/1.1 20x"), None);
        assert_eq!(status_code(b"garbage"), None);
    }
}
