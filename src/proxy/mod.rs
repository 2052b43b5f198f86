//! The forwarding state machine: one task per client connection, on the worker that accepted
//! it (`crate::runtime` calls [`serve_connection`]).
//!
//! Lifecycle of a request on a keep-alive connection:
//! 1. read the head into the connection's buffer (idle timeout before the first byte, header
//!    timeout for the whole head; a graceful shutdown closes an idle connection), parse it
//!    (`crate::http1`) and decide the body framing — malformed or ambiguous: 400, nothing sent;
//! 2. route it (`crate::route`), check the body limit, answer `Expect: 100-continue`;
//! 3. take an upstream connection (`crate::upstream`: pooled or new), write the rewritten head
//!    and the body bytes that came with it in one vectored write, stream the rest of the body;
//! 4. read and parse the response head (response timeout), rewrite it, write it with the body
//!    bytes that came with it, stream the rest;
//! 5. return the upstream connection to the pool when it can carry another request; keep the
//!    bytes of a pipelined next request and go back to 1, or close.
//!
//! A pooled connection found closed before any of the request was sent, or one that closes
//! before any response byte on a request without a body, is replaced by a new connection once.

mod abort;
mod aggregate;
mod arena;
mod body;
mod client;
mod ctx;
mod deadline;
mod error;
mod exchange;
mod forward;
mod gateway;
mod io;
pub mod proxy_protocol;
mod response;
pub(crate) mod sys;
mod tcp;
mod tunnel;

pub use abort::ABORT_CHECK;
pub use ctx::{Generation, LiveGuard, ShutdownSignal, WorkerCtx};
pub use error::{error_response, reason, FailureLog};

use crate::tls::Stream;
use crate::upstream::Upstreams;
use monoio::net::TcpStream;
use std::net::SocketAddr;

/// What the workers of a process share, handed to each when it starts: the cross-core table of
/// backends and the rate limiters' shared parts (with each worker's link to the coordinator).
pub struct Shared {
    pub upstreams: std::sync::Arc<crate::upstream::Shared>,
    pub limits: std::sync::Arc<crate::policy::ratelimit::Shared>,
    /// Each worker's channels to the rate-limit coordinator, taken once by that worker.
    pub links: std::sync::Mutex<Vec<Option<crate::policy::ratelimit::sync::WorkerLink>>>,
    /// What the admin side reads: every worker's stats.
    pub observe: std::sync::Arc<crate::observe::Registry>,
}

impl Shared {
    /// Worker `worker`'s stats (registered for the admin side).
    fn stats(
        &self,
        worker: usize,
        snapshot: &crate::config::Snapshot,
    ) -> std::sync::Arc<crate::observe::WorkerStats> {
        let stats = std::sync::Arc::new(crate::observe::WorkerStats::new(worker, snapshot));
        self.observe.register(worker, stats.clone());
        stats
    }

    /// Shared state without a coordinator (tests and single workers without sync limits).
    pub fn standalone(snapshot: &crate::config::Snapshot) -> Shared {
        Shared {
            upstreams: std::sync::Arc::new(crate::upstream::Shared::new(snapshot)),
            limits: std::sync::Arc::new(crate::policy::ratelimit::Shared::new(snapshot)),
            links: std::sync::Mutex::new(Vec::new()),
            observe: std::sync::Arc::new(crate::observe::Registry::default()),
        }
    }

    fn take_link(&self, worker: usize) -> Option<crate::policy::ratelimit::sync::WorkerLink> {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(worker)
            .and_then(Option::take)
    }
}

/// Proxy state owned by one worker.
pub struct WorkerState {
    pub upstreams: Upstreams,
    /// This worker's counters, read by the admin thread at scrape time.
    pub stats: std::sync::Arc<crate::observe::WorkerStats>,
    /// Rate-limited warnings about upstream failures.
    pub failures: FailureLog,
    /// This worker's rate limiters.
    pub limits: crate::policy::ratelimit::Limiters,
    /// The worker's log buffer of each of the snapshot's access logs.
    pub log_slots: Box<[usize]>,
    /// Credentials verified on this worker (per generation: a reload starts afresh).
    pub auth_cache: std::cell::RefCell<crate::policy::auth::AuthCache>,
}

impl WorkerState {
    pub fn new(snapshot: &crate::config::Snapshot, worker: usize, shared: &Shared) -> WorkerState {
        WorkerState {
            upstreams: Upstreams::new(snapshot, worker, shared.upstreams.clone()),
            limits: crate::policy::ratelimit::Limiters::new(
                snapshot,
                worker,
                shared.take_link(worker),
                &shared.limits,
            ),
            stats: shared.stats(worker, snapshot),
            failures: FailureLog::default(),
            log_slots: Box::new([]),
            auth_cache: std::cell::RefCell::new(crate::policy::auth::AuthCache::new()),
        }
    }

    /// The worker's slower housekeeping: closes expired and backend-closed pooled connections
    /// and logs counted failures.
    pub fn housekeeping(&self, now: std::time::Instant, snapshot: &crate::config::Snapshot) {
        let closed = self.upstreams.reap(now);
        if closed > 0 {
            tracing::trace!("closed {closed} idle upstream connection(s)");
        }
        self.failures.flush(now, &snapshot.upstreams);
    }

    /// Publishes the gauges the admin side reads (sync tick); `connections`: the worker's open
    /// client connections.
    pub fn publish(&self, connections: usize) {
        self.stats.client_connections.set(connections as u64);
        for (u, b, in_flight, idle) in self.upstreams.gauges() {
            let slot = self.stats.backend_slot(u, b);
            self.stats.backend_in_flight[slot].set(in_flight);
            self.stats.backend_idle[slot].set(idle);
        }
    }

    /// One line for the shutdown log.
    pub fn summary(&self, snapshot: &crate::config::Snapshot) -> String {
        let s = &self.stats;
        let mut classes = [0u64; 5];
        for l in 0..snapshot.listeners.len() {
            for r in (0..snapshot.routes.len()).map(Some).chain([None]) {
                for (c, total) in classes.iter_mut().enumerate() {
                    *total += s.requests(l, r, c);
                }
            }
        }
        let sum = |c: &[crate::observe::Counter]| c.iter().map(|c| c.get()).sum::<u64>();
        let errors: Vec<String> = crate::observe::ERROR_STATUSES
            .iter()
            .filter(|&&st| st != 0 && s.errors(st) > 0)
            .map(|&st| format!("{st}={}", s.errors(st)))
            .collect();
        let limits: Vec<String> = s
            .limit_admitted
            .iter()
            .zip(s.limit_rejected.iter())
            .enumerate()
            .map(|(i, (a, r))| format!("{i}:{}/{}", a.get(), r.get()))
            .collect();
        format!(
            "requests={} [{}] errors[{}] upstream connects={} reuses={} retries={} client_timeouts={} client_aborts={} rate_limits(admitted/rejected)[{}]",
            classes.iter().sum::<u64>(),
            classes
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{}xx={c}", i + 1))
                .collect::<Vec<_>>()
                .join(" "),
            errors.join(" "),
            sum(&s.connects),
            sum(&s.reuses),
            sum(&s.retries),
            s.client_timeouts.get(),
            s.client_aborts.get(),
            limits.join(" "),
        )
    }
}

/// Serves one client connection until it closes, fails, times out, or the worker shuts down.
///
/// This future is the connection's task and stays small: while the connection waits for a
/// request without buffers (idle keep-alive), it holds the socket, who the client is and its
/// deadline slot, nothing more. The state of requests in progress lives in a block of the
/// worker's arena and the buffers in a workspace of its pool, both taken when bytes arrive
/// and given back when the connection goes idle.
pub fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    addr: SocketAddr,
    live: LiveGuard,
) -> impl std::future::Future<Output = ()> {
    let ctx = live.ctx();
    let slot = ctx.deadlines.open();
    let conn = client::Conn::new(
        Stream::Plain(stream),
        peer,
        ctx.next_connection_id(),
        addr,
        slot,
    );
    serve(conn, live)
}

async fn serve(mut conn: client::Conn, live: LiveGuard) {
    let ctx = live.ctx();
    let mut gen = ctx.current();
    let addr = conn.listen_addr();
    let Some(listener) = gen.snapshot.listeners.iter().find(|l| l.addr == addr) else {
        ctx.deadlines.close(conn.slot);
        return;
    };
    // Requests to go on with: the first one's buffers after a prologue, or a request handed
    // to a new generation (boxed: rare, and this future stays small).
    let mut carried: Option<Box<(client::Workspace, Option<crate::http1::Request>)>> = None;
    if listener.proxy_protocol || listener.tls.is_some() || listener.tcp.is_some() {
        let slot = conn.slot;
        match Box::pin(prologue(conn, ctx, &gen)).await {
            Some((c, ws)) => {
                conn = c;
                carried = Some(Box::new((ws, None)));
            }
            None => {
                ctx.deadlines.close(slot);
                return;
            }
        }
    }
    loop {
        let (ws, pending) = match carried.take() {
            Some(b) => *b,
            None => (ctx.workspace(&gen.snapshot), None),
        };
        let busy = client::ClientConn::resume(conn, ws, ctx, &gen).run(pending);
        let (ended, c, ws) = ctx.busy.pin(busy).await;
        conn = c;
        match ended {
            client::Ended::Closed => {
                ctx.give_workspace(ws);
                break;
            }
            client::Ended::NewGeneration(req) => {
                carried = Some(Box::new((ws, Some(req))));
                gen = ctx.current();
                continue;
            }
            client::Ended::Idle => ctx.give_workspace(ws),
        }
        if !client::idle_wait(&conn, ctx, &gen.proxy.stats).await {
            break;
        }
        // The next request goes to the generation in force, if it still has the listener.
        if ctx.current_id() != gen.id && ctx.current_has_listener(addr) {
            gen = ctx.current();
        }
    }
    let (slot, id) = (conn.slot, conn.id());
    drop(conn);
    ctx.deadlines.close(slot);
    // Idle upstream connections kept for this client alone go with it.
    let gen = ctx.current();
    gen.proxy.upstreams.forget_client(&gen.snapshot, id);
}

/// What a listener does before HTTP: read a PROXY protocol header, the TLS handshake, or, on a
/// TCP listener, the whole connection (`None` then, and when the connection is to close).
async fn prologue(
    mut conn: client::Conn,
    ctx: &WorkerCtx,
    gen: &Generation,
) -> Option<(client::Conn, client::Workspace)> {
    let snap = &gen.snapshot;
    let addr = conn.listen_addr();
    let listener = snap.listeners.iter().find(|l| l.addr == addr)?;
    let peer = conn.peer();
    let timer = ctx.deadlines.timer(conn.slot);
    let mut ws = ctx.workspace(snap);
    if listener.proxy_protocol {
        let timeout = snap.limits.client_header_timeout;
        let read = monoio::select! {
            r = conn.read_proxy_header(&mut ws, timer, timeout) => r,
            _ = ctx.shutdown_signal() => return None,
        };
        if let Err(e) = read {
            gen.proxy.stats.proxy_protocol_errors.inc();
            tracing::debug!(%peer, listener = %addr, "connection closed: {e}");
            return None;
        }
    }
    if let Some(tls) = &listener.tls {
        let stats = &gen.proxy.stats;
        let accept = conn.start_tls(&mut ws, tls);
        let done = monoio::select! {
            r = accept => r,
            _ = ctx.shutdown_signal() => return None,
        };
        match done {
            Ok((c, resumed)) => {
                conn = c;
                stats.tls_handshakes.inc();
                if resumed {
                    stats.tls_resumed.inc();
                }
            }
            Err(reason) => {
                stats.tls_failures[reason.index()].inc();
                tracing::debug!(%peer, listener = %addr, "TLS handshake failed: {}", reason.as_str());
                return None;
            }
        }
    }
    if let Some(t) = &listener.tcp {
        let c = conn.into_tcp(&ws);
        ctx.give_workspace(ws);
        tcp::serve(c, (addr, listener.index), t, gen, ctx, timer).await;
        return None;
    }
    Some((conn, ws))
}
