//! What crosses cores about backends (DESIGN.md §3), in one process-wide table of atomics: the
//! health checker writes a backend's verdict, a worker that ejects a backend writes until when.
//! Workers read the table on their sync tick only, never per request; writers are rare (a
//! status change, an ejection), so a relaxed store or an occasional read-modify-write on a
//! failure is all it costs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Snapshot;

/// The table for every upstream of a snapshot.
#[derive(Debug)]
pub struct Shared {
    /// Time zero of the `*_ms` fields.
    epoch: Instant,
    pub upstreams: Vec<SharedUpstream>,
}

#[derive(Debug)]
pub struct SharedUpstream {
    pub backends: Vec<SharedBackend>,
}

#[derive(Debug)]
pub struct SharedBackend {
    /// The active health check's verdict (true when there is no check).
    pub up: AtomicBool,
    /// Ejected until this many ms after `epoch` (0: never ejected).
    pub ejected_until_ms: AtomicU64,
    /// Times ejected recently: the next ejection lasts `base_ejection` times one more.
    pub ejections: AtomicU32,
    /// Where the backend is now (one given by host name may move; see `resolve.rs`).
    addr: Mutex<SocketAddr>,
    /// Bumped each time `addr` changes: workers compare it on their tick.
    pub addr_gen: AtomicU32,
    /// Draining (admin API): finishes what it has, takes no new requests.
    pub draining: AtomicBool,
}

impl Shared {
    pub fn new(snapshot: &Snapshot) -> Shared {
        Shared {
            epoch: Instant::now(),
            upstreams: snapshot
                .upstreams
                .iter()
                .map(|u| {
                    let up = !u.health.as_ref().is_some_and(|h| h.start_down);
                    SharedUpstream {
                        backends: u
                            .backends
                            .iter()
                            .map(|b| SharedBackend {
                                up: AtomicBool::new(up),
                                ejected_until_ms: AtomicU64::new(0),
                                ejections: AtomicU32::new(0),
                                addr: Mutex::new(b.addr),
                                addr_gen: AtomicU32::new(0),
                                draining: AtomicBool::new(false),
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }

    /// The table of a new snapshot with what `old` knows of the backends that stay (same
    /// upstream name, same address): health, ejection, address. Same epoch.
    pub fn carry_over(snapshot: &Snapshot, old_snapshot: &Snapshot, old: &Shared) -> Shared {
        let mut new = Shared::new(snapshot);
        new.epoch = old.epoch;
        for u in &snapshot.upstreams {
            let Some(ou) = old_snapshot.upstreams.iter().find(|o| o.name == u.name) else {
                continue;
            };
            for b in &u.backends {
                let Some(ob) = ou.backends.iter().find(|o| o.address == b.address) else {
                    continue;
                };
                let (from, to) = (
                    old.backend(ou.index, ob.index),
                    new.backend(u.index, b.index),
                );
                to.up.store(from.up.load(Relaxed), Relaxed);
                to.ejected_until_ms
                    .store(from.ejected_until_ms.load(Relaxed), Relaxed);
                to.ejections.store(from.ejections.load(Relaxed), Relaxed);
                to.draining.store(from.draining.load(Relaxed), Relaxed);
                if b.by_name {
                    to.set_addr(from.addr());
                }
            }
        }
        new
    }

    pub fn backend(&self, upstream: usize, backend: usize) -> &SharedBackend {
        &self.upstreams[upstream].backends[backend]
    }

    /// `t` as ms since the epoch.
    pub fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The instant `ms` after the epoch.
    pub fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Backends of `upstream` ejected at `now`.
    pub fn ejected_count(&self, upstream: usize, now: Instant) -> usize {
        let now = self.ms(now);
        self.upstreams[upstream]
            .backends
            .iter()
            .filter(|b| b.ejected_until_ms.load(Relaxed) > now)
            .count()
    }
}

impl SharedBackend {
    /// The backend's current address (read on the tick after `addr_gen` moved, and by the
    /// health checker: never on the request path).
    pub fn addr(&self) -> SocketAddr {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the backend (the resolver thread, when its name resolves elsewhere).
    pub fn set_addr(&self, addr: SocketAddr) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = addr;
        self.addr_gen.fetch_add(1, Relaxed);
    }

    /// Records an ejection ending at `until_ms` (never shortens one already longer).
    pub fn eject(&self, until_ms: u64) {
        self.ejected_until_ms.fetch_max(until_ms, Relaxed);
    }
}
