//! Per-worker counters, gauges and latency histograms. Each is written by its own worker only
//! and read by the admin thread at scrape time: a relaxed load and a relaxed store per update —
//! on x86 two plain moves, never a locked read-modify-write, never a mutex — and merged across
//! workers when scraped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::Snapshot;

/// A monotonic count with one writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        // One writer: load and store, no read-modify-write instruction.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Sets the value (carrying a count over into a new snapshot's stats).
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

/// A value that goes up and down, with one writer.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
    }

    #[inline]
    pub fn dec(&self) {
        self.0
            .store(self.0.load(Relaxed).saturating_sub(1), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

/// Upper bounds of the latency buckets, in microseconds (the last bucket is +Inf).
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram: per-bucket counts (not cumulative; summed at scrape), the sum and the
/// count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS_US.len() + 1],
    sum_us: Counter,
}

impl Histogram {
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].inc();
        self.sum_us.add(us);
    }

    /// Counts per bucket (the last one: above every bound) and the sum in microseconds.
    pub fn read(&self) -> ([u64; BUCKETS_US.len() + 1], u64) {
        let mut out = [0; BUCKETS_US.len() + 1];
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            *o = b.get();
        }
        (out, self.sum_us.get())
    }
}

/// Status classes counted: 1xx..5xx.
pub const CLASSES: usize = 5;

/// Everything one worker counts, laid out for one config snapshot (indices are the snapshot's:
/// listener, route, upstream, backend, rate limit).
#[derive(Debug)]
pub struct WorkerStats {
    pub worker: usize,
    routes: usize,
    /// `[listener][route or "none"][status class]`.
    requests: Box<[Counter]>,
    /// Per listener: from a complete request head to the end of its answer.
    pub request_seconds: Box<[Histogram]>,
    /// Per upstream: from the request sent to the response head received.
    pub upstream_seconds: Box<[Histogram]>,
    /// Per listener.
    pub bytes_in: Box<[Counter]>,
    pub bytes_out: Box<[Counter]>,
    /// Per upstream.
    pub retries: Box<[Counter]>,
    pub connects: Box<[Counter]>,
    pub reuses: Box<[Counter]>,
    /// Per upstream, then per backend (`backend_offsets[u] + b`).
    pub ejections: Box<[Counter]>,
    /// Per upstream, then per backend, published on the worker's sync tick: requests in flight
    /// and idle pooled connections.
    pub backend_in_flight: Box<[Gauge]>,
    pub backend_idle: Box<[Gauge]>,
    backend_offsets: Box<[usize]>,
    /// Per rate limit.
    pub limit_admitted: Box<[Counter]>,
    pub limit_rejected: Box<[Counter]>,
    /// Per auth, [`AUTH_DECISIONS`] counters each (see [`WorkerStats::auth`]).
    auth_decisions: Box<[Counter]>,
    /// Answers coregate generated, by status (see [`ERROR_STATUSES`]).
    errors: Box<[Counter]>,
    pub client_connections: Gauge,
    pub client_timeouts: Counter,
    pub client_aborts: Counter,
    /// Connections closed for a missing or invalid PROXY protocol header.
    pub proxy_protocol_errors: Counter,
    /// TLS handshakes completed on listeners, and how many of them resumed a session.
    pub tls_handshakes: Counter,
    pub tls_resumed: Counter,
    /// Failed TLS handshakes by reason (`crate::tls::FAILURE_REASONS`).
    pub tls_failures: [Counter; crate::tls::FAILURE_REASONS.len()],
    /// Upgraded connections (WebSocket and others) relayed as byte tunnels: opened, and open
    /// now.
    pub tunnels: Counter,
    pub tunnels_open: Gauge,
    /// TCP listeners: connections relayed to a backend, and those closed at once (over
    /// `max_connections`, or no backend reachable).
    pub tcp_connections: Counter,
    pub tcp_refused: Counter,
}

/// Statuses of the answers coregate generates itself.
/// What an auth decided about a request: `allowed`, then the refusals (`missing` and `invalid`
/// are 401s, `forbidden` a 403).
pub const AUTH_DECISIONS: [&str; 4] = ["allowed", "missing", "invalid", "forbidden"];

pub const ERROR_STATUSES: [u16; 16] = [
    400, 401, 403, 404, 408, 413, 417, 429, 431, 500, 501, 502, 503, 504, 505, 0,
];

fn counters(n: usize) -> Box<[Counter]> {
    (0..n).map(|_| Counter::default()).collect()
}

fn histograms(n: usize) -> Box<[Histogram]> {
    (0..n).map(|_| Histogram::default()).collect()
}

impl WorkerStats {
    pub fn new(worker: usize, s: &Snapshot) -> WorkerStats {
        let (l, r, u) = (s.listeners.len(), s.routes.len() + 1, s.upstreams.len());
        let mut offsets = Vec::with_capacity(u);
        let mut total = 0;
        for up in &s.upstreams {
            offsets.push(total);
            total += up.backends.len();
        }
        WorkerStats {
            worker,
            routes: r,
            requests: counters(l * r * CLASSES),
            request_seconds: histograms(l),
            upstream_seconds: histograms(u),
            bytes_in: counters(l),
            bytes_out: counters(l),
            retries: counters(u),
            connects: counters(u),
            reuses: counters(u),
            ejections: counters(total),
            backend_in_flight: (0..total).map(|_| Gauge::default()).collect(),
            backend_idle: (0..total).map(|_| Gauge::default()).collect(),
            backend_offsets: offsets.into(),
            limit_admitted: counters(s.rate_limits.len()),
            limit_rejected: counters(s.rate_limits.len()),
            auth_decisions: counters(s.auths.len() * AUTH_DECISIONS.len()),
            errors: counters(ERROR_STATUSES.len()),
            client_connections: Gauge::default(),
            client_timeouts: Counter::default(),
            client_aborts: Counter::default(),
            proxy_protocol_errors: Counter::default(),
            tls_handshakes: Counter::default(),
            tls_resumed: Counter::default(),
            tls_failures: Default::default(),
            tunnels: Counter::default(),
            tunnels_open: Gauge::default(),
            tcp_connections: Counter::default(),
            tcp_refused: Counter::default(),
        }
    }

    /// Counts a finished request: `route` is `None` when none matched.
    #[inline]
    pub fn request(&self, listener: usize, route: Option<usize>, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        let r = route.unwrap_or(self.routes - 1);
        if let Some(c) = self
            .requests
            .get((listener * self.routes + r) * CLASSES + class)
        {
            c.inc();
        }
    }

    /// Requests of `listener`, `route` (`None`: no route) and status class index (0 = 1xx).
    pub fn requests(&self, listener: usize, route: Option<usize>, class: usize) -> u64 {
        let r = route.unwrap_or(self.routes - 1);
        self.requests
            .get((listener * self.routes + r) * CLASSES + class)
            .map_or(0, Counter::get)
    }

    /// Counts an answer coregate generated.
    pub fn error(&self, status: u16) {
        let i = ERROR_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(ERROR_STATUSES.len() - 1);
        self.errors[i].inc();
    }

    /// Answers coregate generated with `status` (0: any other).
    pub fn errors(&self, status: u16) -> u64 {
        ERROR_STATUSES
            .iter()
            .position(|&s| s == status)
            .map_or(0, |i| self.errors[i].get())
    }

    /// The counter of decision `decision` (an index into [`AUTH_DECISIONS`]) of auth `auth`.
    pub fn auth(&self, auth: usize, decision: usize) -> &Counter {
        &self.auth_decisions[auth * AUTH_DECISIONS.len() + decision]
    }

    pub fn ejection(&self, upstream: usize, backend: usize) -> &Counter {
        &self.ejections[self.backend_offsets[upstream] + backend]
    }

    /// After a reload: starts from the counts of the previous generation's stats, matched by
    /// name (listener, route, upstream, backend address, rate limit), so counters never go
    /// back. Done on the worker itself, before it serves with the new generation.
    pub fn carry_from(&self, s: &Snapshot, old: &WorkerStats, os: &Snapshot) {
        let listener = |i: usize| {
            os.listeners
                .iter()
                .position(|l| l.name == s.listeners[i].name)
        };
        let route = |r: Option<usize>| match r {
            None => Some(None),
            Some(r) => os
                .routes
                .iter()
                .position(|o| o.name == s.routes[r].name)
                .map(Some),
        };
        let upstream = |u: usize| {
            os.upstreams
                .iter()
                .position(|o| o.name == s.upstreams[u].name)
        };
        for li in 0..s.listeners.len() {
            let Some(oli) = listener(li) else { continue };
            for r in (0..s.routes.len()).map(Some).chain([None]) {
                let Some(or) = route(r) else { continue };
                for c in 0..CLASSES {
                    let n = old.requests(oli, or, c);
                    let r = r.unwrap_or(self.routes - 1);
                    self.requests[(li * self.routes + r) * CLASSES + c].set(n);
                }
            }
            copy_hist(&self.request_seconds[li], &old.request_seconds[oli]);
            self.bytes_in[li].set(old.bytes_in[oli].get());
            self.bytes_out[li].set(old.bytes_out[oli].get());
        }
        for u in 0..s.upstreams.len() {
            let Some(ou) = upstream(u) else { continue };
            copy_hist(&self.upstream_seconds[u], &old.upstream_seconds[ou]);
            self.retries[u].set(old.retries[ou].get());
            self.connects[u].set(old.connects[ou].get());
            self.reuses[u].set(old.reuses[ou].get());
            for (b, be) in s.upstreams[u].backends.iter().enumerate() {
                if let Some(ob) = os.upstreams[ou]
                    .backends
                    .iter()
                    .position(|o| o.address == be.address)
                {
                    self.ejection(u, b).set(old.ejection(ou, ob).get());
                }
            }
        }
        for (i, l) in s.rate_limits.iter().enumerate() {
            if let Some(oi) = os.rate_limits.iter().position(|o| o.name == l.name) {
                self.limit_admitted[i].set(old.limit_admitted[oi].get());
                self.limit_rejected[i].set(old.limit_rejected[oi].get());
            }
        }
        for (i, a) in s.auths.iter().enumerate() {
            if let Some(oi) = os.auths.iter().position(|o| o.name == a.name) {
                for d in 0..AUTH_DECISIONS.len() {
                    self.auth(i, d).set(old.auth(oi, d).get());
                }
            }
        }
        for (n, o) in self.errors.iter().zip(old.errors.iter()) {
            n.set(o.get());
        }
        self.client_timeouts.set(old.client_timeouts.get());
        self.client_aborts.set(old.client_aborts.get());
        self.proxy_protocol_errors
            .set(old.proxy_protocol_errors.get());
        self.tls_handshakes.set(old.tls_handshakes.get());
        self.tls_resumed.set(old.tls_resumed.get());
        for (n, o) in self.tls_failures.iter().zip(old.tls_failures.iter()) {
            n.set(o.get());
        }
        self.tunnels.set(old.tunnels.get());
        self.tcp_connections.set(old.tcp_connections.get());
        self.tcp_refused.set(old.tcp_refused.get());
    }

    /// Position of a backend in the per-backend arrays.
    pub fn backend_slot(&self, upstream: usize, backend: usize) -> usize {
        self.backend_offsets[upstream] + backend
    }
}

fn copy_hist(to: &Histogram, from: &Histogram) {
    for (t, f) in to.buckets.iter().zip(from.buckets.iter()) {
        t.set(f.get());
    }
    to.sum_us.set(from.sum_us.get());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_sum() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(90));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(60));
        let (b, sum) = h.read();
        assert_eq!((b[0], b[1], b[BUCKETS_US.len()]), (2, 1, 1));
        assert_eq!(sum, 90 + 100 + 101 + 60_000_000);
    }

    #[test]
    fn counters_by_listener_route_and_class() {
        let src = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[listeners]]\naddress = \"127.0.0.1:2\"\n[[upstreams]]\nname = \"u\"\nbackends = [{ address = \"127.0.0.1:3\" }]\n[[routes]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream = \"u\"\n[[routes]]\nname = \"b\"\nupstream = \"u\"\n";
        let s = crate::config::parse("t", src).unwrap();
        let st = WorkerStats::new(0, &s);
        st.request(1, Some(1), 204);
        st.request(1, Some(1), 200);
        st.request(0, None, 404);
        assert_eq!(st.requests(1, Some(1), 1), 2);
        assert_eq!(st.requests(0, None, 3), 1);
        assert_eq!(st.requests(0, Some(0), 1), 0);
        st.error(502);
        st.error(418);
        assert_eq!((st.errors(502), st.errors(0)), (1, 1));
    }
}
