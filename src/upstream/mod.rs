//! Upstreams on one worker: the balancer state and the idle-connection pools the forwarding
//! path (`crate::proxy`) uses between routing and writing the request. Everything here is
//! per worker (`Cell`/`RefCell`, no locks, no atomics): built once when the worker starts from
//! the config snapshot, never shared with another core.
//!
//! In: an upstream index from the matched route. Out: a backend (by index) and a connected
//! stream to it, pooled or fresh; after the response, the stream comes back with
//! [`Upstreams::release`] when it can carry another request.

mod balancer;
mod pool;
mod sys;

pub use balancer::{Balancer, RoundRobin};
use pool::Pool;

use crate::config::{Snapshot, Upstream};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use monoio::net::TcpStream;

/// One upstream's per-worker state.
struct UpstreamState {
    balancer: RoundRobin,
    /// One pool per backend, by backend index.
    pools: Vec<RefCell<Pool>>,
}

/// The per-worker upstream state for every upstream of a snapshot.
pub struct Upstreams {
    states: Vec<UpstreamState>,
}

/// A failed connect, and to which backend.
#[derive(Debug)]
pub struct ConnectError {
    pub backend: usize,
    pub error: io::Error,
}

/// A connection to a backend, checked out for one request.
pub struct Conn {
    pub stream: TcpStream,
    pub upstream: usize,
    pub backend: usize,
    /// Came from the pool (the backend may have closed it meanwhile: retry on a fresh one).
    pub reused: bool,
}

impl Upstreams {
    pub fn new(snapshot: &Snapshot) -> Upstreams {
        let states = snapshot
            .upstreams
            .iter()
            .map(|u| UpstreamState {
                balancer: RoundRobin::new(&u.backends),
                pools: u
                    .backends
                    .iter()
                    .map(|_| RefCell::new(Pool::new(u.pool)))
                    .collect(),
            })
            .collect();
        Upstreams { states }
    }

    /// Picks a backend of `upstream` (`u` is its config) and returns a connection to it: a
    /// pooled one that is still open, else a new one within the connect timeout.
    pub async fn acquire(&self, u: &Upstream) -> Result<Conn, ConnectError> {
        let state = &self.states[u.index];
        let backend = state.balancer.pick(&u.backends);
        let pooled = state.pools[backend].borrow_mut().take(Instant::now());
        if let Some(stream) = pooled {
            return Ok(Conn {
                stream,
                upstream: u.index,
                backend,
                reused: true,
            });
        }
        self.reconnect(u, backend).await
    }

    /// A fresh connection to `backend` (also after a reused one turned out closed).
    pub async fn reconnect(&self, u: &Upstream, backend: usize) -> Result<Conn, ConnectError> {
        let stream = connect(u.backends[backend].addr, u)
            .await
            .map_err(|error| ConnectError { backend, error })?;
        Ok(Conn {
            stream,
            upstream: u.index,
            backend,
            reused: false,
        })
    }

    /// Closes idle connections that expired or that their backend closed (housekeeping, off
    /// the request path: one non-blocking peek per idle connection).
    pub fn reap(&self, now: Instant) -> usize {
        self.states
            .iter()
            .flat_map(|s| &s.pools)
            .map(|p| p.borrow_mut().reap(now))
            .sum()
    }

    /// The shortest pool `idle_timeout` of any upstream (what the housekeeping tick follows).
    pub fn shortest_idle_timeout(snapshot: &Snapshot) -> Option<std::time::Duration> {
        snapshot.upstreams.iter().map(|u| u.pool.idle_timeout).min()
    }

    /// Returns a connection that finished a request cleanly and may carry another.
    pub fn release(&self, conn: Conn) {
        if let Some(state) = self.states.get(conn.upstream) {
            state.pools[conn.backend]
                .borrow_mut()
                .put(conn.stream, Instant::now());
        }
    }
}

async fn connect(addr: SocketAddr, u: &Upstream) -> io::Result<TcpStream> {
    match monoio::time::timeout(u.timeouts.connect, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            stream.set_nodelay(true)?;
            Ok(stream)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}
