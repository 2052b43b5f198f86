//! Backends given by host name (`address = "api.internal:8080"`) are resolved at load and
//! again every `resolve_interval` on a control thread (`coregate-resolver`), never on a worker:
//! `getaddrinfo` blocks. When a name resolves to another address, the backend moves there: the
//! new address goes into the shared table, each worker picks it up on its sync tick and closes
//! its idle connections to the old one (connections in use finish their request and are not
//! pooled again). A name that fails to resolve keeps its last address, with one warning per
//! failing streak.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::shared::Shared;
use crate::config::Snapshot;

/// The running resolver; dropping it stops it.
pub struct Resolver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Name {
    upstream: usize,
    backend: usize,
    /// `host:port` as written.
    address: String,
    every: Duration,
    next: Instant,
    failing: bool,
}

impl Resolver {
    /// Starts the resolver when some backend is given by name (`None` otherwise).
    pub fn start(snapshot: &Snapshot, shared: Arc<Shared>) -> std::io::Result<Option<Resolver>> {
        let now = Instant::now();
        let mut names: Vec<Name> = snapshot
            .upstreams
            .iter()
            .flat_map(|u| {
                u.backends.iter().filter(|b| b.by_name).map(|b| Name {
                    upstream: u.index,
                    backend: b.index,
                    address: b.address.clone(),
                    every: u.resolve_interval,
                    next: now + u.resolve_interval,
                    failing: false,
                })
            })
            .collect();
        if names.is_empty() {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("coregate-resolver".into())
            .spawn(move || {
                while !stop2.load(Relaxed) {
                    let now = Instant::now();
                    for n in names.iter_mut().filter(|n| n.next <= now) {
                        n.next = now + n.every;
                        resolve_once(n, &shared);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })?;
        Ok(Some(Resolver {
            stop,
            thread: Some(thread),
        }))
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn resolve_once(n: &mut Name, shared: &Shared) {
    let b = shared.backend(n.upstream, n.backend);
    let first: Option<SocketAddr> = n
        .address
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next());
    match first {
        Some(addr) => {
            if n.failing {
                tracing::info!("backend {} resolves again", n.address);
                n.failing = false;
            }
            let old = b.addr();
            if addr != old {
                tracing::info!("backend {} moved from {old} to {addr}", n.address);
                b.set_addr(addr);
            }
        }
        None if !n.failing => {
            n.failing = true;
            tracing::warn!(
                "backend {} does not resolve; keeping {}",
                n.address,
                b.addr()
            );
        }
        None => {}
    }
}
