//! The generic cell rate algorithm (GCRA, ITU-T I.371): a token bucket kept as one number, the
//! theoretical arrival time (TAT) of the next request. With emission interval `T = period / rate`
//! and tolerance `τ = burst · T`, a request at `now` is admitted when
//! `max(TAT, now) + T − now ≤ τ + T`, and then `TAT = max(TAT, now) + T`. Over any window of one
//! period a key gets at most `rate + burst + 1` requests through.
//!
//! [`Gcra`] is the plain per-core form (`local` mode); [`admit_shared`] the same on an
//! `AtomicU64` shared by every worker (`exact` mode: one compare-and-swap per request).

use std::sync::atomic::{AtomicU64, Ordering};

/// Parameters of one limit, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Emission interval `T`.
    pub interval: u64,
    /// `τ + T`: how far ahead of `now` the TAT may run.
    pub horizon: u64,
}

impl Params {
    /// `rate` per `period_ns` with `burst`, divided over `share` equal parts (`local` mode: one
    /// per worker; 1 otherwise).
    pub fn new(rate: u64, burst: u64, period_ns: u64, share: u64) -> Params {
        let share = share.max(1);
        let interval = (period_ns as u128 * share as u128 / rate.max(1) as u128).max(1) as u64;
        let burst = burst / share;
        Params {
            interval,
            horizon: interval.saturating_mul(burst + 1),
        }
    }

    /// Admission at `now` for a key whose TAT is `tat`: the new TAT, or `Err(wait)` with the
    /// nanoseconds until a request would be admitted.
    #[inline]
    pub fn step(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let next = tat.max(now) + self.interval;
        if next - now <= self.horizon {
            Ok(next)
        } else {
            Err(next - now - self.horizon)
        }
    }

    /// Requests that would still be admitted right now after `tat`.
    pub fn remaining(&self, tat: u64, now: u64) -> u64 {
        let used = tat.saturating_sub(now);
        self.horizon.saturating_sub(used) / self.interval
    }

    /// Nanoseconds until the bucket is full again.
    pub fn until_full(&self, tat: u64, now: u64) -> u64 {
        tat.saturating_sub(now)
    }
}

/// `step` on a TAT shared between threads: retries its compare-and-swap until it wins.
#[inline]
pub fn admit_shared(tat: &AtomicU64, p: &Params, now: u64) -> Result<u64, u64> {
    let mut cur = tat.load(Ordering::Relaxed);
    loop {
        let next = p.step(cur, now)?;
        match tat.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Ok(next),
            Err(seen) => cur = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn rate_and_burst_hold() {
        let p = Params::new(10, 5, S, 1);
        // A burst of burst + 1 at once, then one per interval.
        let mut tat = 0;
        let now = 10 * S;
        let mut n = 0;
        while let Ok(t) = p.step(tat, now) {
            tat = t;
            n += 1;
        }
        assert_eq!(n, 6);
        assert_eq!(p.remaining(tat, now), 0);
        let wait = p.step(tat, now).unwrap_err();
        assert_eq!(wait, S / 10);
        assert!(p.step(tat, now + wait).is_ok());
        // Over a long run: rate per period.
        let mut tat = 0;
        let mut admitted = 0;
        for ms in 0..10_000u64 {
            for _ in 0..3 {
                if let Ok(t) = p.step(tat, 100 * S + ms * 1_000_000) {
                    tat = t;
                    admitted += 1;
                }
            }
        }
        assert!((100..=106).contains(&admitted), "{admitted}");
    }

    #[test]
    fn shared_tat_admits_exactly_across_threads() {
        let p = Params::new(1000, 0, S, 1);
        let tat = std::sync::Arc::new(AtomicU64::new(0));
        let now = 50 * S;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let tat = tat.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| admit_shared(&tat, &p, now).is_ok())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1, "all at the same instant: burst 0 admits one");
    }

    #[test]
    fn local_share_divides_rate_and_burst() {
        let p = Params::new(1000, 20, S, 2);
        assert_eq!(p.interval, 2_000_000);
        assert_eq!(p.horizon, 2_000_000 * 11);
    }
}
