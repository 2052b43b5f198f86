//! Idle upstream connections of one backend on one worker: a LIFO stack (the most recently
//! used connection is the warmest), bounded by `max_idle`, entries older than `idle_timeout`
//! dropped on the way in and out and by the worker's housekeeping tick ([`Pool::reap`]), which
//! also closes connections the backend has closed. A connection the backend closed while idle
//! is detected with a non-blocking peek before reuse.

use crate::config::PoolSettings;
use std::collections::VecDeque;
use std::time::Instant;

use crate::tls::Stream;

/// An idle connection, when it became idle, and whom it may serve: 0 for anyone, else the
/// client connection it was opened for (a connection that began with a PROXY protocol header
/// speaks for that client only).
struct Pooled {
    stream: Stream,
    since: Instant,
    owner: u64,
}

/// Not expired, and the backend has not closed it (nor sent bytes on it).
fn usable(p: &Pooled, now: Instant, idle_timeout: std::time::Duration) -> bool {
    now.duration_since(p.since) < idle_timeout && super::sys::peer_still_open(&p.stream)
}

pub struct Pool {
    idle: VecDeque<Pooled>,
    settings: PoolSettings,
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Pool {
        Pool {
            idle: VecDeque::new(),
            settings,
        }
    }

    /// The most recent idle connection of `owner` (0: the shared ones) that is still open and
    /// not expired; `closed` counts the ones dropped on the way. A pool holds shared
    /// connections only, or (PROXY protocol upstreams) owned ones only, so for the shared case
    /// the search stops at the last entry.
    pub fn take(&mut self, now: Instant, owner: u64, closed: &mut u32) -> Option<Stream> {
        while let Some(i) = self.idle.iter().rposition(|p| p.owner == owner) {
            let p = self.idle.remove(i)?;
            if usable(&p, now, self.settings.idle_timeout) {
                return Some(p.stream);
            }
            *closed += 1;
        }
        None
    }

    /// Closes expired connections and those the backend closed (or sent bytes on: an idle
    /// connection must have nothing to read). Returns how many were closed.
    pub fn reap(&mut self, now: Instant) -> usize {
        let before = self.idle.len();
        let timeout = self.settings.idle_timeout;
        self.idle.retain(|p| usable(p, now, timeout));
        before - self.idle.len()
    }

    /// Keeps `stream` for reuse, dropping expired entries and the oldest beyond `max_idle`.
    /// Returns how many connections were closed (`stream` itself when nothing is kept).
    pub fn put(&mut self, stream: Stream, now: Instant, owner: u64) -> u32 {
        let mut closed = 0;
        while self
            .idle
            .front()
            .is_some_and(|p| now.duration_since(p.since) >= self.settings.idle_timeout)
        {
            self.idle.pop_front();
            closed += 1;
        }
        if self.settings.max_idle == 0 {
            return closed + 1;
        }
        if self.idle.len() >= self.settings.max_idle {
            self.idle.pop_front();
            closed += 1;
        }
        self.idle.push_back(Pooled {
            stream,
            since: now,
            owner,
        });
        closed
    }

    pub fn len(&self) -> usize {
        self.idle.len()
    }

    /// Takes every idle connection out (most recent last).
    pub fn drain(&mut self) -> Vec<(Stream, u64)> {
        self.idle.drain(..).map(|p| (p.stream, p.owner)).collect()
    }

    /// Closes the idle connections kept for client connection `owner` (it has ended); returns
    /// how many.
    pub fn forget(&mut self, owner: u64) -> u32 {
        let before = self.idle.len();
        self.idle.retain(|p| p.owner != owner);
        (before - self.idle.len()) as u32
    }

    /// Closes the oldest idle connection kept for a client connection other than `owner`, to
    /// make room for one of `owner`'s under `max_connections`; true when one was closed.
    pub fn evict_other(&mut self, owner: u64) -> bool {
        match self.idle.iter().position(|p| p.owner != owner) {
            Some(i) => self.idle.remove(i).is_some(),
            None => false,
        }
    }

    /// An idle connection `owner` may take (0: any shared one) is waiting.
    pub fn has_for(&self, owner: u64) -> bool {
        self.idle.iter().any(|p| p.owner == owner)
    }

    /// Closes every idle connection (their backend moved); returns how many.
    pub fn clear(&mut self) -> u32 {
        let n = self.idle.len() as u32;
        self.idle.clear();
        n
    }
}
