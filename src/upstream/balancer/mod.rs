//! Backend selection: one small trait, [`Pick`], and one type per algorithm. A balancer is built
//! once per worker and upstream from the backend list; a pick looks at this worker's live view
//! of the backends ([`View`]) and returns an index — nothing is cloned or allocated. Which
//! backends may be picked is the caller's predicate: available (healthy, not ejected) and not
//! tried already by this request, or any at all in panic mode.
//!
//! | algorithm | state | a pick |
//! | --- | --- | --- |
//! | `round_robin` | cursor / smooth weights | O(1) equal weights, O(n) weighted |
//! | `least_conn` | rotating cursor | O(n) scan: fewest in flight per weight, ties in turn |
//! | `p2c` | — | two weighted random draws, the one with fewer in flight per weight |
//! | `random` | — | one weighted random draw |
//! | `consistent_hash` | Maglev table (shared) | one table lookup; the next entries when that backend is out |

mod least_conn;
pub mod maglev;
mod round_robin;

pub use least_conn::LeastConn;
pub use maglev::Maglev;
pub use round_robin::RoundRobin;

use super::live::{BackendLive, Rng};
use crate::config::{BalancerKind, Upstream};

/// What a pick looks at.
pub struct View<'a> {
    pub live: &'a [BackendLive],
    pub rng: &'a Rng,
    /// Running sums of the backends' current weights (for weighted draws).
    pub cumulative: &'a [u64],
    /// Every backend has the same current weight.
    pub uniform: bool,
    /// The request's hash key (consistent hashing only).
    pub key: u64,
}

/// Chooses the backend for the next request among those `ok` accepts.
pub trait Pick {
    fn pick(&self, v: &View<'_>, ok: impl Fn(usize) -> bool) -> Option<usize>;
}

/// The balancer of one upstream on one worker.
pub enum Balancer {
    RoundRobin(RoundRobin),
    LeastConn(LeastConn),
    P2c,
    Random,
    Hash,
}

impl Balancer {
    /// `worker` offsets the starting point, so that workers do not all begin with backend 0.
    pub fn new(u: &Upstream, worker: usize) -> Balancer {
        match u.balancer {
            BalancerKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(&u.backends, worker)),
            BalancerKind::LeastConn => {
                Balancer::LeastConn(LeastConn::new(u.backends.len(), worker))
            }
            BalancerKind::P2c => Balancer::P2c,
            BalancerKind::Random => Balancer::Random,
            BalancerKind::ConsistentHash => Balancer::Hash,
        }
    }

    /// Picks for an upstream whose Maglev table (consistent hashing) is `table`.
    #[inline]
    pub fn pick(
        &self,
        v: &View<'_>,
        table: Option<&Maglev>,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(v, ok),
            Balancer::LeastConn(lc) => lc.pick(v, ok),
            Balancer::P2c => P2c.pick(v, ok),
            Balancer::Random => Random.pick(v, ok),
            Balancer::Hash => match table {
                Some(t) => t.pick(v, ok),
                None => Random.pick(v, ok),
            },
        }
    }
}

/// One backend drawn at random with probability proportional to its current weight, among
/// those `ok` accepts: a few draws, then a scan from a random start (so a pick always ends).
#[inline]
pub fn draw(v: &View<'_>, ok: &impl Fn(usize) -> bool) -> Option<usize> {
    let n = v.live.len();
    if n == 0 {
        return None;
    }
    let total = v.cumulative.last().copied().unwrap_or(0);
    for _ in 0..4 {
        let i = if v.uniform || total == 0 {
            v.rng.below(n as u64) as usize
        } else {
            let r = v.rng.below(total);
            v.cumulative.partition_point(|&c| c <= r)
        };
        if i < n && ok(i) {
            return Some(i);
        }
    }
    let start = v.rng.below(n as u64) as usize;
    (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
}

/// `a` carries less load than `b`: fewer requests in flight per unit of weight.
#[inline]
fn lighter(v: &View<'_>, a: usize, b: usize) -> bool {
    let (la, lb) = (&v.live[a], &v.live[b]);
    let (wa, wb) = (la.weight.get().max(1) as u64, lb.weight.get().max(1) as u64);
    (la.in_flight.get() as u64) * wb < (lb.in_flight.get() as u64) * wa
}

/// Power of two random choices: two weighted draws, the lighter one.
pub struct P2c;

impl Pick for P2c {
    #[inline]
    fn pick(&self, v: &View<'_>, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let a = draw(v, &ok)?;
        let b = draw(v, &|i| i != a && ok(i));
        Some(match b {
            Some(b) if lighter(v, b, a) => b,
            _ => a,
        })
    }
}

/// A weighted random draw.
pub struct Random;

impl Pick for Random {
    #[inline]
    fn pick(&self, v: &View<'_>, ok: impl Fn(usize) -> bool) -> Option<usize> {
        draw(v, &ok)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A view over backends with these weights and in-flight counts.
    pub struct Fixture {
        pub live: Vec<BackendLive>,
        pub rng: Rng,
        pub cumulative: Vec<u64>,
    }

    impl Fixture {
        pub fn new(weights: &[u32]) -> Fixture {
            let live: Vec<BackendLive> = weights
                .iter()
                .map(|&w| BackendLive::new(w, ([127, 0, 0, 1], 1).into(), true))
                .collect();
            let mut sum = 0;
            let cumulative = weights
                .iter()
                .map(|&w| {
                    sum += w as u64;
                    sum
                })
                .collect();
            Fixture {
                live,
                rng: Rng::new(42),
                cumulative,
            }
        }

        pub fn view(&self, key: u64) -> View<'_> {
            View {
                live: &self.live,
                rng: &self.rng,
                cumulative: &self.cumulative,
                uniform: self.live.windows(2).all(|w| w[0].weight == w[1].weight),
                key,
            }
        }
    }

    fn counts(
        f: &Fixture,
        p: &impl Pick,
        n: usize,
        ok: impl Fn(usize) -> bool + Copy,
    ) -> Vec<usize> {
        let mut c = vec![0; f.live.len()];
        for _ in 0..n {
            c[p.pick(&f.view(0), ok).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn random_follows_weights_and_skips_what_is_not_ok() {
        let f = Fixture::new(&[3, 2, 1]);
        let c = counts(&f, &Random, 60_000, |_| true);
        for (got, want) in c.iter().zip([30_000, 20_000, 10_000]) {
            assert!((*got as i64 - want).abs() < 1_000, "{c:?}");
        }
        let c = counts(&f, &Random, 1_000, |i| i == 2);
        assert_eq!(c, [0, 0, 1_000]);
        assert_eq!(Random.pick(&f.view(0), |_| false), None);
    }

    #[test]
    fn p2c_avoids_the_busy_backend() {
        let f = Fixture::new(&[1, 1, 1]);
        f.live[0].in_flight.set(10);
        let c = counts(&f, &P2c, 3_000, |_| true);
        // Backend 0 wins only when both draws land on it, which they cannot (distinct).
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 1_200 && c[2] > 1_200, "{c:?}");
        // Weighted: twice the weight carries twice the in-flight at equal load.
        let f = Fixture::new(&[2, 1]);
        f.live[0].in_flight.set(3);
        f.live[1].in_flight.set(1);
        assert_eq!(counts(&f, &P2c, 100, |_| true), [0, 100]);
        f.live[0].in_flight.set(4);
        f.live[1].in_flight.set(3);
        assert_eq!(counts(&f, &P2c, 100, |_| true), [100, 0]);
    }
}
