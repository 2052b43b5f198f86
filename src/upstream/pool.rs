//! Idle upstream connections of one backend on one worker: a LIFO stack (the most recently
//! used connection is the warmest), bounded by `max_idle`, entries older than `idle_timeout`
//! dropped on the way in and out. Before reuse, a non-blocking peek checks that the backend has
//! not closed the connection. The peek is skipped for a connection pooled less than
//! [`PEEK_AFTER`] ago when the caller can retry (a request without a body, which the proxy sends
//! again on a fresh connection if this one turns out closed): under load that saves a syscall per
//! request; a request with a body, which cannot be replayed, always gets the check.

use crate::config::PoolSettings;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Idle time after which a pooled connection is peeked before reuse.
pub const PEEK_AFTER: Duration = Duration::from_millis(200);

use monoio::net::TcpStream;

/// An idle connection and when it became idle.
pub struct Pooled {
    stream: TcpStream,
    since: Instant,
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

    pub fn len(&self) -> usize {
        self.idle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }

    /// The most recent idle connection that is still open and not expired. With `retryable`,
    /// a connection pooled moments ago is taken without the liveness check.
    pub fn take(&mut self, now: Instant, retryable: bool) -> Option<TcpStream> {
        while let Some(p) = self.idle.pop_back() {
            let idle = now.duration_since(p.since);
            let skip_check = retryable && idle < PEEK_AFTER;
            if idle < self.settings.idle_timeout
                && (skip_check || crate::proxy::sys::peer_still_open(&p.stream))
            {
                return Some(p.stream);
            }
        }
        None
    }

    /// Keeps `stream` for reuse, dropping expired entries and the oldest beyond `max_idle`.
    pub fn put(&mut self, stream: TcpStream, now: Instant) {
        while self
            .idle
            .front()
            .is_some_and(|p| now.duration_since(p.since) >= self.settings.idle_timeout)
        {
            self.idle.pop_front();
        }
        if self.settings.max_idle == 0 {
            return;
        }
        if self.idle.len() >= self.settings.max_idle {
            self.idle.pop_front();
        }
        self.idle.push_back(Pooled { stream, since: now });
    }
}
