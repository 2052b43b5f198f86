//! Upstreams on one worker: balancing, connection pools, circuit breaking, passive outlier
//! ejection and the retry budget, between routing and writing the request (`crate::proxy`).
//! Everything the request path touches is per worker (`Cell`/`RefCell`, no locks, no atomics).
//! What crosses cores — active health verdicts and ejections — sits in a process-wide table
//! ([`Shared`]) that this worker reads on its sync tick ([`Upstreams::sync`]) and writes only
//! when it ejects a backend.
//!
//! In: an upstream from the matched route. [`Upstreams::pick`] chooses a backend among those
//! available and not yet tried by the request; [`Upstreams::checkout`] gives a connection to it
//! (pooled, or new within the connect timeout and `max_connections`); after the exchange the
//! connection goes back with [`Upstreams::release`] or is dropped, and the outcome feeds
//! outlier ejection ([`Upstreams::success`], [`Upstreams::failure`]).

pub mod balancer;
mod health;
mod live;
mod pool;
mod resolve;
mod shared;
mod sys;

pub use balancer::{maglev, Balancer, Maglev, Pick, View};
pub use health::Checker;
pub use live::{BackendLive, Rng};
use pool::Pool;
pub use resolve::Resolver;
pub use shared::Shared;

use crate::config::{Snapshot, Upstream};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tls::Stream;
use monoio::net::TcpStream;

/// One upstream's per-worker state.
struct UpstreamState {
    balancer: Balancer,
    live: Vec<BackendLive>,
    /// One pool per backend, by backend index.
    pools: Vec<RefCell<Pool>>,
    /// Running sums of the current weights (weighted random draws), refreshed on the tick.
    cumulative: RefCell<Vec<u64>>,
    uniform: Cell<bool>,
    /// Backends available at the last tick.
    available: Cell<usize>,
    /// Requests of this upstream in progress on this worker, and how many of them are retries.
    active: Cell<u32>,
    retrying: Cell<u32>,
}

/// The per-worker upstream state for every upstream of a snapshot.
pub struct Upstreams {
    states: Vec<UpstreamState>,
    shared: Arc<Shared>,
    worker: usize,
    rng: Rng,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum CheckoutError {
    /// The connect failed or timed out.
    Connect(io::Error),
    /// The TLS handshake with the backend failed or timed out.
    Tls(io::Error),
    /// `max_connections` reached and `max_pending` requests already waiting (or the wait ran
    /// past the connect timeout).
    Full,
}

impl std::fmt::Display for CheckoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckoutError::Connect(e) | CheckoutError::Tls(e) => e.fmt(f),
            CheckoutError::Full => f.write_str("no room under max_connections"),
        }
    }
}

/// The backends a request has tried (at most [`Tried::MAX`] are remembered).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried {
    n: usize,
    items: [u32; Tried::MAX],
}

impl Tried {
    pub const MAX: usize = 10;

    pub fn add(&mut self, backend: usize) {
        if self.n < Self::MAX {
            self.items[self.n] = backend as u32;
            self.n += 1;
        }
    }

    #[inline]
    pub fn has(&self, backend: usize) -> bool {
        self.items[..self.n].contains(&(backend as u32))
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// A connection to a backend, checked out for one request. Dropping it closes the connection
/// and ends the request's count on the backend; [`Upstreams::release`] pools it instead.
pub struct Conn<'a> {
    pub stream: Stream,
    pub backend: usize,
    /// Came from the pool (the backend may have closed it meanwhile).
    pub reused: bool,
    /// The backend's address generation when connected (a moved backend's old connections
    /// are not pooled again).
    gen: u32,
    slot: Slot<'a>,
    /// The client connection it serves alone (PROXY protocol upstreams), 0 for anyone.
    owner: u64,
}

/// The client side of a request, as a PROXY protocol header sent upstream describes it: the
/// client's address, the address it connected to, and a number for its connection (the owner
/// of the upstream connections opened for it).
pub struct ClientEnds {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub owner: u64,
}

/// A request's place on a backend: in flight until dropped, and one open connection unless
/// the connection went to the pool.
struct Slot<'a> {
    live: &'a BackendLive,
    counts_open: bool,
}

impl<'a> Slot<'a> {
    /// A request's place on `live`: in flight from now until dropped.
    fn new(live: &'a BackendLive) -> Slot<'a> {
        live.in_flight.set(live.in_flight.get() + 1);
        Slot {
            live,
            counts_open: false,
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let l = self.live;
        l.in_flight.set(l.in_flight.get().saturating_sub(1));
        if self.counts_open {
            l.closed(1);
        }
    }
}

/// A request in progress on an upstream (for the retry budget); ends when dropped.
pub struct Active<'a> {
    state: &'a UpstreamState,
    retries: u32,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let s = self.state;
        s.active.set(s.active.get().saturating_sub(1));
        s.retrying
            .set(s.retrying.get().saturating_sub(self.retries));
    }
}

impl Upstreams {
    pub fn new(snapshot: &Snapshot, worker: usize, shared: Arc<Shared>) -> Upstreams {
        let states = snapshot
            .upstreams
            .iter()
            .map(|u| {
                let live: Vec<BackendLive> = u
                    .backends
                    .iter()
                    .map(|b| {
                        let up = shared.backend(u.index, b.index).up.load(Relaxed);
                        BackendLive::new(b.weight, b.addr, up)
                    })
                    .collect();
                let state = UpstreamState {
                    balancer: Balancer::new(u, worker),
                    pools: u
                        .backends
                        .iter()
                        .map(|_| RefCell::new(Pool::new(u.pool)))
                        .collect(),
                    cumulative: RefCell::new(Vec::new()),
                    uniform: Cell::new(true),
                    available: Cell::new(live.iter().filter(|l| l.available.get()).count()),
                    active: Cell::new(0),
                    retrying: Cell::new(0),
                    live,
                };
                refresh_weights(&state);
                state
            })
            .collect();
        Upstreams {
            states,
            shared,
            worker,
            rng: Rng::new(worker as u64 ^ seed()),
        }
    }

    /// After a reload: takes over the idle pooled connections of backends that stay (same
    /// upstream name, same address) from the previous generation's state.
    pub fn adopt(&self, snapshot: &Snapshot, old: &Upstreams, old_snapshot: &Snapshot) {
        for u in &snapshot.upstreams {
            let Some(ou) = old_snapshot.upstreams.iter().find(|o| o.name == u.name) else {
                continue;
            };
            // A connection that began with a PROXY protocol header (or without one) is only
            // good for an upstream that still sends the same.
            if ou.proxy_protocol != u.proxy_protocol {
                for (b, pool) in old.states[ou.index].pools.iter().enumerate() {
                    let closed = pool.borrow_mut().clear();
                    let live = &old.states[ou.index].live[b];
                    live.closed(closed);
                }
                continue;
            }
            for b in &u.backends {
                let Some(ob) = ou.backends.iter().find(|o| o.address == b.address) else {
                    continue;
                };
                let (Some(from), Some(to)) = (
                    old.states.get(ou.index).and_then(|s| s.pools.get(ob.index)),
                    self.states[u.index].pools.get(b.index),
                ) else {
                    continue;
                };
                let moved = from.borrow_mut().drain();
                let live = &self.states[u.index].live[b.index];
                let old_live = &old.states[ou.index].live[ob.index];
                old_live
                    .open
                    .set(old_live.open.get().saturating_sub(moved.len() as u32));
                let now = Instant::now();
                let mut to = to.borrow_mut();
                for (stream, owner) in moved {
                    let closed = to.put(stream, now, owner);
                    live.open.set(live.open.get() + 1 - closed.min(1));
                }
            }
        }
    }

    /// Requests in flight and idle pooled connections of each backend, for the stats.
    pub fn gauges(&self) -> impl Iterator<Item = (usize, usize, u64, u64)> + '_ {
        self.states.iter().enumerate().flat_map(|(u, st)| {
            st.live
                .iter()
                .zip(&st.pools)
                .enumerate()
                .map(move |(b, (l, p))| (u, b, l.in_flight.get() as u64, p.borrow().len() as u64))
        })
    }

    /// This worker's view of a backend.
    pub fn live(&self, upstream: usize, backend: usize) -> &BackendLive {
        &self.states[upstream].live[backend]
    }

    /// A random number from this worker's generator (a hash key when the request has none).
    pub fn random(&self) -> u64 {
        self.rng.next()
    }

    /// Chooses a backend of `u` for a request that already tried `tried`: one that is
    /// available (healthy, not ejected), or any when fewer than `panic_threshold` percent are.
    /// `None`: no backend can take it. `key` is the request's hash (consistent hashing).
    #[inline]
    pub fn pick(&self, u: &Upstream, key: u64, tried: &Tried) -> Option<usize> {
        let st = &self.states[u.index];
        let cumulative = st.cumulative.borrow();
        let view = View {
            live: &st.live,
            rng: &self.rng,
            cumulative: &cumulative,
            uniform: st.uniform.get(),
            key,
        };
        let n = st.live.len();
        let panic =
            u.panic_threshold > 0 && st.available.get() * 100 < u.panic_threshold as usize * n;
        let table = u.maglev.as_ref();
        if panic {
            st.balancer.pick(&view, table, |i| !tried.has(i))
        } else {
            st.balancer.pick(&view, table, |i| {
                st.live[i].available.get() && !tried.has(i)
            })
        }
    }

    /// Seconds a client should wait before trying again when no backend of `u` is available:
    /// until the first ejection ends or the next health check, at least 1.
    pub fn retry_after(&self, u: &Upstream) -> u64 {
        let now = Instant::now();
        let st = &self.states[u.index];
        let ejection = st
            .live
            .iter()
            .filter_map(|l| l.ejected_until.get())
            .filter(|&t| t > now)
            .min()
            .map(|t| t - now);
        let check = u.health.as_ref().map(|h| h.interval * h.rise);
        let wait = match (ejection, check) {
            (Some(e), Some(c)) => e.min(c),
            (Some(e), None) => e,
            (None, Some(c)) => c,
            (None, None) => Duration::from_secs(1),
        };
        wait.as_secs_f64().ceil().max(1.0) as u64
    }

    /// Counts a request in progress on `u` (for the retry budget) until the guard drops.
    pub fn begin(&self, u: &Upstream) -> Active<'_> {
        let st = &self.states[u.index];
        st.active.set(st.active.get() + 1);
        Active {
            state: st,
            retries: 0,
        }
    }

    /// Takes a retry from the budget of `u`: retries in progress stay under
    /// `max(min_concurrent, budget_percent of the requests in progress)`.
    pub fn take_retry(&self, u: &Upstream, active: &mut Active<'_>) -> bool {
        if !self.retry_possible(u) {
            return false;
        }
        let st = &self.states[u.index];
        st.retrying.set(st.retrying.get() + 1);
        active.retries += 1;
        true
    }

    /// Whether the budget of `u` has room for a retry now (without taking it).
    pub fn retry_possible(&self, u: &Upstream) -> bool {
        let st = &self.states[u.index];
        let r = &u.retry;
        let budget =
            (st.active.get() as u64 * r.budget_percent as u64 / 100).max(r.min_concurrent as u64);
        (st.retrying.get() as u64) < budget
    }

    /// A connection to `backend` of `u`: a pooled one that is still open, else a new one
    /// within the connect timeout, unless `max_connections` stands in the way.
    pub async fn checkout(
        &self,
        u: &Upstream,
        backend: usize,
        client: &ClientEnds,
    ) -> Result<Conn<'_>, CheckoutError> {
        let st = &self.states[u.index];
        let live = &st.live[backend];
        let mut closed = 0;
        let owner = if u.proxy_protocol.is_some() {
            client.owner
        } else {
            0
        };
        let pooled = st.pools[backend]
            .borrow_mut()
            .take(Instant::now(), owner, &mut closed);
        live.closed(closed);
        let mut slot = Slot::new(live);
        let gen = live.gen.get();
        if let Some(stream) = pooled {
            slot.counts_open = true;
            return Ok(Conn {
                stream,
                backend,
                reused: true,
                gen,
                slot,
                owner,
            });
        }
        if owner != 0
            && live.open.get() >= u.max_connections
            && st.pools[backend].borrow_mut().evict_other(owner)
        {
            // Another client connection's idle connection makes room for this one.
            live.closed(1);
        }
        if live.open.get() >= u.max_connections {
            self.wait_for_room(u, backend, owner).await?;
            // A connection may have come back to the pool meanwhile.
            let pooled = st.pools[backend]
                .borrow_mut()
                .take(Instant::now(), owner, &mut closed);
            live.closed(closed);
            if let Some(stream) = pooled {
                slot.counts_open = true;
                return Ok(Conn {
                    stream,
                    backend,
                    reused: true,
                    gen,
                    slot,
                    owner,
                });
            }
        }
        new_connection(u, backend, client, slot, gen, owner).await
    }

    /// A new connection to `backend` of `u`, never a pooled one (a TCP listener's: its bytes
    /// are not HTTP requests). `Full` at `max_connections`.
    pub async fn open(
        &self,
        u: &Upstream,
        backend: usize,
        client: &ClientEnds,
    ) -> Result<Conn<'_>, CheckoutError> {
        let live = &self.states[u.index].live[backend];
        let slot = Slot::new(live);
        if live.open.get() >= u.max_connections {
            return Err(CheckoutError::Full);
        }
        new_connection(u, backend, client, slot, live.gen.get(), 0).await
    }

    /// Waits (polling, bounded by the connect timeout) until `backend` has room under
    /// `max_connections`; `Full` when too many wait already or the time runs out. Only an
    /// overloaded backend gets here.
    async fn wait_for_room(
        &self,
        u: &Upstream,
        backend: usize,
        owner: u64,
    ) -> Result<(), CheckoutError> {
        let live = &self.states[u.index].live[backend];
        if live.pending.get() >= u.max_pending {
            return Err(CheckoutError::Full);
        }
        live.pending.set(live.pending.get() + 1);
        let deadline = Instant::now() + u.timeouts.connect;
        let result = loop {
            if live.open.get() < u.max_connections
                || self.states[u.index].pools[backend].borrow().has_for(owner)
            {
                break Ok(());
            }
            if Instant::now() >= deadline {
                break Err(CheckoutError::Full);
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        };
        live.pending.set(live.pending.get() - 1);
        result
    }

    /// A client connection ended: the idle connections kept for it alone (PROXY protocol
    /// upstreams) are closed. Nothing to do, and no cost, for other upstreams.
    pub fn forget_client(&self, snapshot: &Snapshot, owner: u64) {
        for u in snapshot
            .upstreams
            .iter()
            .filter(|u| u.proxy_protocol.is_some())
        {
            let st = &self.states[u.index];
            for (b, pool) in st.pools.iter().enumerate() {
                let closed = pool.borrow_mut().forget(owner);
                let live = &st.live[b];
                live.closed(closed);
            }
        }
    }

    /// Returns a connection that finished a request cleanly and may carry another.
    pub fn release(&self, u: &Upstream, conn: Conn<'_>) {
        let Conn {
            stream,
            backend,
            gen,
            mut slot,
            owner,
            ..
        } = conn;
        if gen != slot.live.gen.get() {
            return; // the backend moved: dropped, not pooled
        }
        let closed =
            self.states[u.index].pools[backend]
                .borrow_mut()
                .put(stream, Instant::now(), owner);
        // The slot no longer counts the connection: the pool does, minus what it closed.
        slot.counts_open = false;
        let live = slot.live;
        live.closed(closed);
    }

    /// The backend answered: its run of failures ends.
    #[inline]
    pub fn success(&self, u: &Upstream, backend: usize) {
        let l = &self.states[u.index].live[backend];
        if l.failures.get() != 0 {
            l.failures.set(0);
        }
    }

    /// The backend failed (connect failure, reset, 5xx). After `consecutive_failures` in a row
    /// it is ejected for `base_ejection` times the number of its recent ejections, unless
    /// `max_ejected_percent` of the upstream is ejected already. Returns true when this
    /// failure ejected it.
    pub fn failure(&self, u: &Upstream, backend: usize) -> bool {
        let st = &self.states[u.index];
        let l = &st.live[backend];
        let f = l.failures.get() + 1;
        l.failures.set(f);
        let o = &u.outlier;
        if o.consecutive_failures == 0 || f < o.consecutive_failures || !l.available.get() {
            return false;
        }
        let now = Instant::now();
        let n = st.live.len();
        let ejected = self.shared.ejected_count(u.index, now);
        if (ejected + 1) * 100 > o.max_ejected_percent as usize * n {
            return false;
        }
        let sb = self.shared.backend(u.index, backend);
        let times = sb.ejections.fetch_add(1, Relaxed) + 1;
        let until = now + o.base_ejection * times;
        sb.eject(self.shared.ms(until));
        l.failures.set(0);
        l.ejected_until.set(Some(until));
        self.set_available(st, backend, false, now);
        tracing::warn!(
            "upstream {} backend {} ejected for {:?} after {f} consecutive failures",
            u.name,
            u.backends[backend].address,
            o.base_ejection * times
        );
        true
    }

    fn set_available(&self, st: &UpstreamState, backend: usize, on: bool, now: Instant) {
        let l = &st.live[backend];
        if l.available.get() == on {
            return;
        }
        l.available.set(on);
        st.available
            .set(st.available.get() + on as usize - (!on) as usize);
        if on {
            l.back_since.set(Some(now));
        }
    }

    /// The sync tick: takes in what other cores and the health checker decided (health,
    /// ejections), ends ejections that are over, ramps slow-start weights, and (worker 0)
    /// lets the ejection multiplier of backends that stayed in decay.
    pub fn sync(&self, snapshot: &Snapshot, now: Instant) {
        let now_ms = self.shared.ms(now);
        for (u, st) in snapshot.upstreams.iter().zip(&self.states) {
            let mut weights_changed = false;
            for (i, l) in st.live.iter().enumerate() {
                let sb = self.shared.backend(u.index, i);
                let gen = sb.addr_gen.load(Relaxed);
                if gen != l.gen.get() {
                    // The backend moved: connect to its new address, drop idle connections.
                    l.gen.set(gen);
                    l.addr.set(sb.addr());
                    let closed = st.pools[i].borrow_mut().clear();
                    l.closed(closed);
                }
                let up = sb.up.load(Relaxed) && !sb.draining.load(Relaxed);
                l.up.set(up);
                let until_ms = sb.ejected_until_ms.load(Relaxed);
                let ejected = until_ms > now_ms;
                l.ejected_until
                    .set(ejected.then(|| self.shared.at(until_ms)));
                self.set_available(st, i, up && !ejected, now);
                if self.worker == 0 && !ejected && until_ms > 0 {
                    // One step of decay per base_ejection spent back in.
                    let base = u.outlier.base_ejection.as_millis() as u64;
                    if now_ms >= until_ms + base.max(1) && sb.ejections.load(Relaxed) > 0 {
                        sb.ejections.fetch_sub(1, Relaxed);
                        sb.ejected_until_ms.store(now_ms, Relaxed);
                    }
                }
                let w = u.backends[i].weight;
                let target = match l.back_since.get() {
                    Some(since) if !u.slow_start.is_zero() => {
                        let elapsed = now.saturating_duration_since(since);
                        if elapsed >= u.slow_start {
                            l.back_since.set(None);
                            w
                        } else {
                            // Linear from 10% of the weight to all of it.
                            let f = 0.1 + 0.9 * elapsed.as_secs_f64() / u.slow_start.as_secs_f64();
                            ((w as f64 * f).round() as u32).max(1)
                        }
                    }
                    _ => w,
                };
                if l.weight.get() != target {
                    l.weight.set(target);
                    weights_changed = true;
                }
            }
            if weights_changed {
                refresh_weights(st);
            }
        }
    }

    /// Closes idle connections that expired or that their backend closed (housekeeping, off
    /// the request path: one non-blocking peek per idle connection).
    pub fn reap(&self, now: Instant) -> usize {
        let mut total = 0;
        for st in &self.states {
            for (pool, live) in st.pools.iter().zip(&st.live) {
                let closed = pool.borrow_mut().reap(now);
                live.closed(closed as u32);
                total += closed;
            }
        }
        total
    }

    /// The shortest pool `idle_timeout` of any upstream (what the housekeeping tick follows).
    pub fn shortest_idle_timeout(snapshot: &Snapshot) -> Option<Duration> {
        snapshot.upstreams.iter().map(|u| u.pool.idle_timeout).min()
    }
}

/// Recomputes the running weight sums and the equal-weights flag of an upstream.
fn refresh_weights(st: &UpstreamState) {
    let mut sum = 0u64;
    let mut cumulative = st.cumulative.borrow_mut();
    cumulative.clear();
    let first = st.live.first().map(|l| l.weight.get());
    let mut uniform = true;
    for l in &st.live {
        let w = l.weight.get();
        uniform &= Some(w) == first;
        sum += w as u64;
        cumulative.push(sum);
    }
    st.uniform.set(uniform);
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Opens the connection `slot` stands for: connect, the PROXY protocol header, the TLS
/// handshake, each within the connect timeout.
async fn new_connection<'a>(
    u: &Upstream,
    backend: usize,
    client: &ClientEnds,
    mut slot: Slot<'a>,
    gen: u32,
    owner: u64,
) -> Result<Conn<'a>, CheckoutError> {
    let live = slot.live;
    live.open.set(live.open.get() + 1);
    slot.counts_open = true;
    let mut tcp = connect(live.addr.get(), u)
        .await
        .map_err(CheckoutError::Connect)?;
    if let Some(version) = u.proxy_protocol {
        send_proxy_header(&mut tcp, version, client, u)
            .await
            .map_err(CheckoutError::Connect)?;
    }
    let stream = match &u.tls {
        None => Stream::Plain(tcp),
        Some(tls) => handshake(tls, tcp, &u.backends[backend].address, u)
            .await
            .map_err(CheckoutError::Tls)?,
    };
    Ok(Conn {
        stream,
        backend,
        reused: false,
        gen,
        slot,
        owner,
    })
}

/// Writes the PROXY protocol header that opens a connection to a backend of `u`, within its
/// connect timeout.
async fn send_proxy_header(
    stream: &mut TcpStream,
    version: crate::config::ProxyVersion,
    client: &ClientEnds,
    u: &Upstream,
) -> io::Result<()> {
    use monoio::io::AsyncWriteRentExt;
    let mut header = Vec::with_capacity(64);
    crate::proxy::proxy_protocol::write(version, client.source, client.destination, &mut header);
    match monoio::time::timeout(u.timeouts.connect, stream.write_all(header)).await {
        Ok((r, _)) => r.map(drop),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "PROXY protocol header not written in time",
        )),
    }
}

/// The TLS handshake with a backend of `u` at `address`, within its connect timeout.
async fn handshake(
    tls: &crate::tls::ClientTls,
    tcp: TcpStream,
    address: &str,
    u: &Upstream,
) -> io::Result<Stream> {
    let name = crate::tls::backend_name(address).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{address:?} is not a TLS server name"),
        )
    })?;
    match monoio::time::timeout(u.timeouts.connect, tls.connect(tcp, &name)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("TLS handshake: {e}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(upstream_lines: &str, backends: usize) -> Snapshot {
        let list: Vec<String> = (0..backends)
            .map(|i| format!("{{ address = \"127.0.0.1:{}\" }}", 9000 + i))
            .collect();
        let src = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"u\"\nbackends = [{}]\n{upstream_lines}\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
            list.join(", ")
        );
        crate::config::parse("t", &src).unwrap()
    }

    fn upstreams(s: &Snapshot, worker: usize) -> (Upstreams, Arc<Shared>) {
        let shared = Arc::new(Shared::new(s));
        (Upstreams::new(s, worker, shared.clone()), shared)
    }

    #[test]
    fn consecutive_failures_eject_for_every_worker_within_a_tick() {
        let s = snapshot(
            "[upstreams.outlier]\nconsecutive_failures = 3\nbase_ejection = \"10s\"",
            4,
        );
        let u = &s.upstreams[0];
        let (w0, shared) = upstreams(&s, 0);
        let w1 = Upstreams::new(&s, 1, shared.clone());
        assert!(!w0.failure(u, 2) && !w0.failure(u, 2));
        w0.success(u, 2);
        assert!(!w0.failure(u, 2) && !w0.failure(u, 2));
        assert!(w0.failure(u, 2), "third failure in a row ejects");
        assert!(!w0.live(0, 2).available.get());
        // Worker 1 learns it on its tick, and never picks it.
        assert!(w1.live(0, 2).available.get());
        w1.sync(&s, Instant::now());
        assert!(!w1.live(0, 2).available.get());
        for _ in 0..100 {
            assert_ne!(w1.pick(u, 0, &Tried::default()), Some(2));
        }
        // The ejection ends by itself.
        w1.sync(&s, Instant::now() + Duration::from_secs(11));
        assert!(w1.live(0, 2).available.get());
        assert_eq!(shared.backend(0, 2).ejections.load(Relaxed), 1);
    }

    #[test]
    fn at_most_max_ejected_percent_are_ejected() {
        let s = snapshot(
            "[upstreams.outlier]\nconsecutive_failures = 1\nmax_ejected_percent = 50",
            4,
        );
        let u = &s.upstreams[0];
        let (w, _) = upstreams(&s, 0);
        assert!(w.failure(u, 0));
        assert!(w.failure(u, 1));
        assert!(!w.failure(u, 2), "a third of four would be 75%");
        assert_eq!(w.states[0].available.get(), 2);
    }

    #[test]
    fn nothing_available_gives_none_unless_in_panic() {
        let s = snapshot("[upstreams.health]\ntcp = true\nstart_down = true", 3);
        let u = &s.upstreams[0];
        let (w, shared) = upstreams(&s, 0);
        assert_eq!(w.pick(u, 0, &Tried::default()), None);
        assert!(w.retry_after(u) >= 1);
        shared.backend(0, 1).up.store(true, Relaxed);
        w.sync(&s, Instant::now());
        assert_eq!(w.pick(u, 0, &Tried::default()), Some(1));
        let s = snapshot(
            "panic_threshold = 50\n[upstreams.health]\ntcp = true\nstart_down = true",
            3,
        );
        let (w, _) = upstreams(&s, 0);
        assert!(w.pick(&s.upstreams[0], 0, &Tried::default()).is_some());
    }

    #[test]
    fn retries_stay_within_the_budget() {
        let s = snapshot(
            "[upstreams.retry]\nbudget_percent = 20\nmin_concurrent = 2",
            2,
        );
        let u = &s.upstreams[0];
        let (w, _) = upstreams(&s, 0);
        let mut reqs: Vec<Active<'_>> = (0..20).map(|_| w.begin(u)).collect();
        // 20% of 20 in progress = 4 retries at once.
        let mut granted = 0;
        for a in reqs.iter_mut() {
            granted += w.take_retry(u, a) as usize;
        }
        assert_eq!(granted, 4);
        reqs.truncate(5);
        // The retries of the dropped requests are over; 20% of 5 is 1, the minimum is 2.
        let r = w.states[0].retrying.get();
        assert!(r <= 4, "{r}");
        drop(reqs);
        assert_eq!(
            (w.states[0].active.get(), w.states[0].retrying.get()),
            (0, 0)
        );
        let mut one = w.begin(u);
        assert!(w.take_retry(u, &mut one) && w.take_retry(u, &mut one));
        assert!(!w.take_retry(u, &mut one), "min_concurrent = 2");
    }

    #[test]
    fn slow_start_ramps_the_weight_of_a_backend_that_comes_back() {
        let s = snapshot("slow_start = \"10s\"\n[upstreams.health]\ntcp = true", 2);
        let (w, shared) = upstreams(&s, 0);
        let t0 = Instant::now();
        shared.backend(0, 1).up.store(false, Relaxed);
        w.sync(&s, t0);
        assert!(!w.live(0, 1).available.get());
        shared.backend(0, 1).up.store(true, Relaxed);
        w.sync(&s, t0);
        assert_eq!(w.live(0, 1).weight.get(), 1, "10% of 1, at least 1");
        let s = snapshot("slow_start = \"10s\"\n[upstreams.health]\ntcp = true", 2)
            .with_weights(&[100, 100]);
        let (w, shared) = upstreams(&s, 0);
        shared.backend(0, 1).up.store(false, Relaxed);
        w.sync(&s, t0);
        shared.backend(0, 1).up.store(true, Relaxed);
        w.sync(&s, t0);
        assert_eq!(w.live(0, 1).weight.get(), 10);
        w.sync(&s, t0 + Duration::from_secs(5));
        assert_eq!(w.live(0, 1).weight.get(), 55);
        assert!(!w.states[0].uniform.get());
        w.sync(&s, t0 + Duration::from_secs(10));
        assert_eq!(w.live(0, 1).weight.get(), 100);
        assert!(w.states[0].uniform.get());
    }

    trait WithWeights {
        fn with_weights(self, w: &[u32]) -> Self;
    }

    impl WithWeights for Snapshot {
        fn with_weights(mut self, w: &[u32]) -> Self {
            for (b, &w) in self.upstreams[0].backends.iter_mut().zip(w) {
                b.weight = w;
            }
            self
        }
    }
}
