//! What one worker knows of each backend right now: requests in flight, open connections,
//! whether it may take requests (active health and passive ejection, folded into one flag on the
//! sync tick), its effective weight (slow start), consecutive failures. Plain `Cell`s: written
//! and read by this worker only. The cross-core view arrives on the sync tick
//! ([`super::Upstreams::sync`]).

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Instant;

/// One backend as this worker sees it.
#[derive(Debug)]
pub struct BackendLive {
    /// Where to connect (a backend given by host name may move).
    pub addr: Cell<SocketAddr>,
    /// The shared address generation `addr` belongs to.
    pub gen: Cell<u32>,
    /// Requests sent to it and not finished, on this worker.
    pub in_flight: Cell<u32>,
    /// Open connections to it on this worker (in use and pooled).
    pub open: Cell<u32>,
    /// Requests waiting for a connection slot (`max_connections` reached).
    pub pending: Cell<u32>,
    /// May take requests: healthy and not ejected (updated on the sync tick).
    pub available: Cell<bool>,
    /// The active health check's verdict (true without checks).
    pub up: Cell<bool>,
    /// Passively ejected until then (this worker's or another's ejection).
    pub ejected_until: Cell<Option<Instant>>,
    /// Weight used by the balancers: the configured one, or less while slow start ramps it.
    pub weight: Cell<u32>,
    /// When it last became available after being unavailable (slow start ramps from there).
    pub back_since: Cell<Option<Instant>>,
    /// Consecutive failures seen by this worker (connect failures, resets, 5xx).
    pub failures: Cell<u32>,
}

impl BackendLive {
    /// `n` of its open connections were closed.
    pub fn closed(&self, n: u32) {
        self.open.set(self.open.get().saturating_sub(n));
    }

    pub fn new(weight: u32, addr: SocketAddr, up: bool) -> BackendLive {
        BackendLive {
            addr: Cell::new(addr),
            gen: Cell::new(0),
            in_flight: Cell::new(0),
            open: Cell::new(0),
            pending: Cell::new(0),
            available: Cell::new(up),
            up: Cell::new(up),
            ejected_until: Cell::new(None),
            weight: Cell::new(weight),
            back_since: Cell::new(None),
            failures: Cell::new(0),
        }
    }
}

/// A small per-worker pseudo-random generator (xorshift64*): enough to spread picks, never
/// for anything secret.
#[derive(Debug)]
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that nearby seeds (worker 0, 1, ...) start far apart.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng(Cell::new((z ^ (z >> 31)) | 1))
    }

    #[inline]
    pub fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0), without modulo bias worth speaking of for small `n`.
    #[inline]
    pub fn below(&self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn below_spreads_evenly() {
        let r = Rng::new(7);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[r.below(5) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_ne!(Rng::new(0).next(), Rng::new(1).next());
    }
}
