//! Rate limits: per-core buckets with periodic synchronisation (DESIGN.md §4).
//!
//! A request on a route that names limits is checked against each, in order, on the worker
//! that serves it: one hash-table lookup and a little arithmetic, no lock, no atomic
//! (`exact` mode aside). What the modes do:
//!
//! - `sync` (default): each worker holds, per key, an *allowance* — the tokens it may spend
//!   until the next sync tick. Every tick it reports what it admitted and how many requests it
//!   saw per key to the coordinator thread ([`sync`]), which keeps the key's one global token
//!   bucket and hands each worker its share of what the bucket can spend during the next tick,
//!   in proportion to the worker's recent demand. One busy keep-alive client on one worker gets
//!   the whole limit; two workers never both spend it.
//! - `local`: each worker enforces `rate / workers` (and `burst / workers`) alone — cheap, and
//!   wrong under skew; the documented contrast.
//! - `exact`: one shared atomic GCRA state per key ([`exact`]): a compare-and-swap per request;
//!   the accuracy baseline.
//! - `redis`: `sync`, plus a per-window count shared by several coregate instances through
//!   Redis, exchanged once per tick by a control thread ([`redis`]).
//!
//! Keys are hashed (xxh3) before they get here; a worker remembers at most `max_keys` per limit
//! and forgets the least recently used beyond that.

pub mod exact;
pub mod gcra;
pub mod redis;
pub mod sync;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{LimitMode, RateLimit, Snapshot};
use gcra::Params;

/// The outcome of one limit for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    pub admitted: bool,
    /// About how many more requests the key may send now.
    pub remaining: u64,
    /// Seconds until the key may send again (rejected) or its quota is whole again (admitted).
    pub reset: u64,
}

/// One key on one worker.
#[derive(Debug, Default)]
struct Entry {
    /// `sync`/`redis`: tokens this worker may spend now.
    allowance: f64,
    /// `sync`/`redis`: this worker's share of the rate, refilled every sync tick.
    share: f32,
    /// When `allowance` was last refilled (the worker's coarse clock, ms).
    at: u32,
    /// Admitted and seen since the last report.
    admitted: u32,
    demand: u32,
    /// Listed in `touched` for the next report.
    touched: bool,
    /// `local`: the GCRA state (ns since the limiter's epoch).
    tat: u64,
    /// `exact`: the shared state.
    shared: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Tick of last use (for forgetting keys beyond `max_keys`).
    used: u32,
}

/// One limit on one worker.
struct PerLimit {
    keys: RefCell<HashMap<u64, Entry, ahash::RandomState>>,
    /// Keys seen since the last report.
    touched: RefCell<Vec<u64>>,
    params: Params,
    /// `sync`/`redis`: what a worker grants itself for a key it has never heard of: its equal
    /// share of a full bucket (burst + 1 + one sync interval of the rate, since the coarse clock
    /// refills nothing before the next tick); its equal share of the rate refills it from there.
    first_grant: f64,
    /// Tokens of the whole rate per millisecond, and the bucket's capacity.
    per_ms: f64,
    capacity: f64,
    exact: Option<Arc<exact::ExactTable>>,
}

/// The limiters of one worker.
pub struct Limiters {
    limits: Vec<PerLimit>,
    /// To the coordinator (when some limit syncs).
    reports: Option<std::sync::mpsc::Sender<sync::Report>>,
    /// From the coordinator, until the round task takes it.
    rounds: RefCell<Option<sync::RoundReceiver>>,
    worker: usize,
    workers: usize,
    epoch: Instant,
    /// Sync ticks so far (the age of keys, for forgetting them).
    ticks: Cell<u32>,
    /// Milliseconds since `epoch` at the last sync tick.
    clock_ms: Cell<u32>,
}

impl Limiters {
    /// `link`: this worker's channels to the coordinator (present when some limit syncs);
    /// `shared`: what every worker shares (exact buckets, the epoch).
    pub fn new(
        snapshot: &Snapshot,
        worker: usize,
        link: Option<sync::WorkerLink>,
        shared: &Shared,
    ) -> Limiters {
        let workers = snapshot.runtime.workers.max(1) as u64;
        let limits = snapshot
            .rate_limits
            .iter()
            .map(|l| {
                let share = if l.mode == LimitMode::Local {
                    workers
                } else {
                    1
                };
                let period_ns = l.period.as_nanos().min(u64::MAX as u128) as u64;
                PerLimit {
                    keys: RefCell::new(HashMap::default()),
                    touched: RefCell::new(Vec::new()),
                    params: Params::new(l.rate, l.burst, period_ns, share),
                    first_grant: sync::capacity(l) / workers as f64,
                    per_ms: l.rate as f64 / l.period.as_secs_f64() / 1000.0,
                    capacity: sync::capacity(l),
                    exact: shared.exact.get(l.index).cloned().flatten(),
                }
            })
            .collect();
        let (reports, rounds) = match link {
            Some(l) => (Some(l.reports), Some(l.rounds)),
            None => (None, None),
        };
        Limiters {
            limits,
            reports,
            rounds: RefCell::new(rounds),
            worker,
            workers: workers as usize,
            epoch: shared.epoch,
            ticks: Cell::new(0),
            clock_ms: Cell::new(shared.epoch.elapsed().as_millis() as u32),
        }
    }

    /// Checks one request of key hash `key` against limit `l`, counting it.
    #[inline]
    pub fn check(&self, l: &RateLimit, key: u64) -> Verdict {
        let p = &self.limits[l.index];
        let mut keys = p.keys.borrow_mut();
        if keys.len() >= l.max_keys && !keys.contains_key(&key) {
            self.forget(&mut keys, l.max_keys);
        }
        let fresh = !keys.contains_key(&key);
        let e = keys.entry(key).or_default();
        e.used = self.ticks.get();
        let v = match l.mode {
            LimitMode::Sync | LimitMode::Redis => {
                // The coarse clock, read once per sync tick: no clock read per request.
                let now = self.clock_ms.get();
                if fresh {
                    e.allowance = p.first_grant;
                    e.share = 1.0 / self.workers as f32;
                    e.at = now;
                } else if e.at != now {
                    // This worker's share of the rate since the last refill, up to its share
                    // of a full bucket.
                    let ms = now.wrapping_sub(e.at) as f64;
                    let share = e.share as f64;
                    e.allowance = (e.allowance + p.per_ms * share * ms)
                        .min((p.capacity * share).max(e.allowance));
                    e.at = now;
                }
                e.demand += 1;
                if !e.touched {
                    e.touched = true;
                    p.touched.borrow_mut().push(key);
                }
                let period = l.period.as_secs_f64();
                if e.allowance >= 1.0 {
                    e.allowance -= 1.0;
                    e.admitted += 1;
                    Verdict {
                        admitted: true,
                        remaining: e.allowance as u64,
                        reset: period.ceil() as u64,
                    }
                } else {
                    Verdict {
                        admitted: false,
                        remaining: 0,
                        reset: (period / l.rate as f64).ceil().max(1.0) as u64,
                    }
                }
            }
            LimitMode::Local => {
                let now = self.now();
                match p.params.step(e.tat, now) {
                    Ok(tat) => {
                        e.tat = tat;
                        Verdict {
                            admitted: true,
                            remaining: p.params.remaining(tat, now),
                            reset: secs(p.params.until_full(tat, now)),
                        }
                    }
                    Err(wait) => Verdict {
                        admitted: false,
                        remaining: 0,
                        reset: secs(wait),
                    },
                }
            }
            LimitMode::Exact => {
                let shared = match &e.shared {
                    Some(s) => s.clone(),
                    None => {
                        let s = p
                            .exact
                            .as_ref()
                            .expect("exact limits have a shared table")
                            .state(key);
                        e.shared = Some(s.clone());
                        s
                    }
                };
                let now = self.now();
                match gcra::admit_shared(&shared, &p.params, now) {
                    Ok(tat) => Verdict {
                        admitted: true,
                        remaining: p.params.remaining(tat, now),
                        reset: secs(p.params.until_full(tat, now)),
                    },
                    Err(wait) => Verdict {
                        admitted: false,
                        remaining: 0,
                        reset: secs(wait),
                    },
                }
            }
        };
        v
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Forgets the least recently used eighth of a full key table.
    #[cold]
    fn forget(&self, keys: &mut HashMap<u64, Entry, ahash::RandomState>, max: usize) {
        let mut ages: Vec<u32> = keys.values().map(|e| e.used).collect();
        let cut = (max / 8).max(1).min(ages.len() - 1);
        let (_, &mut oldest_kept, _) = ages.select_nth_unstable(cut);
        keys.retain(|_, e| e.used >= oldest_kept || e.touched);
        if keys.len() >= max {
            // Everything is as recent: drop arbitrary untouched ones.
            let drop: Vec<u64> = keys
                .iter()
                .filter(|(_, e)| !e.touched)
                .map(|(k, _)| *k)
                .take(cut.max(1))
                .collect();
            for k in drop {
                keys.remove(&k);
            }
        }
    }

    /// The worker's sync tick: moves the coarse clock and the key ages on.
    pub fn tick(&self) {
        self.ticks.set(self.ticks.get().wrapping_add(1));
        self.clock_ms.set(self.epoch.elapsed().as_millis() as u32);
    }

    /// The receiving end of the coordinator's rounds, taken once by the task that serves them
    /// ([`Limiters::serve_rounds`]).
    pub fn take_rounds(&self) -> Option<sync::RoundReceiver> {
        self.rounds.borrow_mut().take()
    }

    /// Serves the coordinator's rounds until the coordinator ends: each round's grants are
    /// applied as soon as they arrive, and the reply is this worker's report — taken right
    /// after, so the next grant is reckoned from exactly what was spent since.
    pub async fn serve_rounds(&self, mut rounds: sync::RoundReceiver, snapshot: &Snapshot) {
        while let Some(grants) = rounds.recv().await {
            self.clock_ms.set(self.epoch.elapsed().as_millis() as u32);
            self.apply(grants, snapshot);
            self.report();
        }
    }

    fn apply(&self, grants: Vec<sync::Grant>, snapshot: &Snapshot) {
        let (tick, at) = (self.ticks.get(), self.clock_ms.get());
        for g in grants {
            let (Some(l), Some(p)) = (
                snapshot.rate_limits.get(g.limit as usize),
                self.limits.get(g.limit as usize),
            ) else {
                continue;
            };
            let mut keys = p.keys.borrow_mut();
            if let Some(e) = keys.get_mut(&g.key) {
                // The grant was reckoned from this worker's last report: what it spent since
                // comes out of it (unless it is a fixed budget). The refill runs on from where
                // it was last applied (`e.at` stays), so between two grants a worker refills
                // for the whole interval, whatever the phase of its tick against the rounds:
                // were it restarted here, the part since its last tick would be lost and the
                // global bucket would settle one interval's rate fuller, holding back the burst.
                e.allowance = if g.fixed {
                    g.allowance as f64
                } else {
                    g.allowance as f64 - e.admitted as f64
                };
                e.share = g.share;
            } else if keys.len() < l.max_keys {
                keys.insert(
                    g.key,
                    Entry {
                        allowance: g.allowance as f64,
                        share: g.share,
                        at,
                        used: tick,
                        ..Entry::default()
                    },
                );
            }
        }
    }

    /// Sends the coordinator what this worker admitted and saw per key since its last report
    /// (an empty report too: the coordinator counts the replies of a round).
    fn report(&self) {
        let Some(tx) = &self.reports else { return };
        let mut items = Vec::new();
        for (i, p) in self.limits.iter().enumerate() {
            let mut touched = p.touched.borrow_mut();
            if touched.is_empty() {
                continue;
            }
            let mut keys = p.keys.borrow_mut();
            for key in touched.drain(..) {
                if let Some(e) = keys.get_mut(&key) {
                    items.push(sync::Item {
                        limit: i as u32,
                        key,
                        admitted: e.admitted,
                        demand: e.demand,
                    });
                    e.admitted = 0;
                    e.demand = 0;
                    e.touched = false;
                }
            }
        }
        let _ = tx.send(sync::Report {
            worker: self.worker,
            items,
        });
    }
}

/// The period of a worker's sync tick: the shortest of `runtime.sync_interval` and the limits'
/// `sync_interval`.
pub fn tick_period(snapshot: &Snapshot) -> std::time::Duration {
    snapshot
        .rate_limits
        .iter()
        .map(|l| l.sync_interval)
        .fold(snapshot.runtime.sync_interval, std::cmp::min)
}

/// Nanoseconds as whole seconds, rounded up, at least 1.
fn secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000).max(1)
}

/// What every worker's limiters share: the exact-mode tables and the clock's epoch.
pub struct Shared {
    pub epoch: Instant,
    /// By limit index: the shared table of `exact` limits.
    pub exact: Vec<Option<Arc<exact::ExactTable>>>,
}

impl Shared {
    pub fn new(snapshot: &Snapshot) -> Shared {
        Shared {
            epoch: Instant::now(),
            exact: snapshot
                .rate_limits
                .iter()
                .map(|l| (l.mode == LimitMode::Exact).then(|| Arc::new(exact::ExactTable::new())))
                .collect(),
        }
    }
}
