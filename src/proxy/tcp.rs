//! TCP (L4) listeners: after accept (and the PROXY protocol header and TLS handshake when the
//! listener has them), a backend of the listener's upstream is chosen by the same balancer and
//! health state as HTTP traffic, a new connection is opened to it (another backend is tried when
//! the connect fails), and the bytes are relayed both ways as they are (`tunnel.rs`) until both
//! sides close, either fails, or nothing moves for the listener's `idle_timeout`.

use super::client::TcpClient;
use super::{Generation, WorkerCtx, WorkerState};
use crate::config::TcpForward;
use crate::config::Upstream;
use crate::upstream::{CheckoutError, ClientEnds, Tried};
use std::net::SocketAddr;

/// Leaves the listener's connection count when dropped.
struct Entered<'a> {
    ctx: &'a WorkerCtx,
    listener: SocketAddr,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.ctx.tcp_leave(self.listener);
    }
}

/// Serves one connection of a TCP listener at `listener` (index `li` in `gen`).
pub(super) async fn serve(
    c: TcpClient,
    (listener, li): (SocketAddr, usize),
    t: &TcpForward,
    gen: &Generation,
    ctx: &WorkerCtx,
    timer: super::deadline::Timer<'_>,
) {
    let TcpClient {
        stream: mut client,
        early,
        peer,
        peer_key,
        local,
    } = c;
    let stats = &gen.proxy.stats;
    if !ctx.tcp_enter(listener, t.max_connections) {
        stats.tcp_refused.inc();
        tracing::debug!(%peer, %listener, "TCP connection refused: max_connections");
        return;
    }
    let _entered = Entered { ctx, listener };
    let u = &gen.snapshot.upstreams[t.upstream];
    // `consistent_hash` hashes the client address (as `hash_on = "client_ip"` does for HTTP).
    let key = match u.hash_on {
        Some(_) => peer_key,
        None => gen.proxy.upstreams.random(),
    };
    let ends = ClientEnds {
        source: peer,
        destination: super::client::destination(local, listener, &client),
        owner: 0,
    };
    let Some(mut conn) = open_any(u, &gen.proxy, key, &ends).await else {
        stats.tcp_refused.inc();
        tracing::debug!(%peer, %listener, upstream = %u.name, "TCP connection closed: no backend could be reached");
        return;
    };
    stats.tcp_connections.inc();
    let idle = super::io::Limit::new(timer, t.idle_timeout);
    if !early.is_empty() {
        let n = early.len() as u64;
        if super::io::write_all(&mut conn.stream, early, idle)
            .await
            .is_err()
        {
            return;
        }
        if let Some(c) = stats.bytes_in.get(li) {
            c.add(n);
        }
    }
    let moved = super::tunnel::relay(&mut client, &mut conn.stream, idle).await;
    if let Some(c) = stats.bytes_in.get(li) {
        c.add(moved.to_upstream);
    }
    if let Some(c) = stats.bytes_out.get(li) {
        c.add(moved.to_client);
    }
}

/// A new connection to a backend of `u` chosen by its balancer (`key` for consistent hashing),
/// trying another backend when the connect fails (up to the upstream's `retry.attempts`, at
/// least 2); failures are logged and counted towards ejection. `None`: no backend reachable.
pub(super) async fn open_any<'a>(
    u: &Upstream,
    state: &'a WorkerState,
    key: u64,
    ends: &ClientEnds,
) -> Option<crate::upstream::Conn<'a>> {
    let ups = &state.upstreams;
    let mut tried = Tried::default();
    for _ in 0..u.retry.attempts.max(2) {
        let backend = ups.pick(u, key, &tried)?;
        tried.add(backend);
        match ups.open(u, backend, ends).await {
            Ok(c) => {
                state.stats.connects[u.index].inc();
                ups.success(u, backend);
                return Some(c);
            }
            Err(e @ (CheckoutError::Connect(_) | CheckoutError::Tls(_))) => {
                state.failures.upstream_because(
                    502,
                    "TCP connect to the backend failed",
                    &e,
                    u,
                    backend,
                );
                if ups.failure(u, backend) {
                    state.stats.ejection(u.index, backend).inc();
                }
            }
            Err(CheckoutError::Full) => {}
        }
    }
    None
}
