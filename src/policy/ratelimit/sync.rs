//! The coordinator of `sync` and `redis` limits: one control thread (`coregate-limits`) that
//! holds each active key's global token bucket. Workers send it, every sync tick, what they
//! admitted and how many requests they saw per key ([`Report`]); every `sync_interval` of a
//! limit it settles each reported key and grants each worker an allowance for the next
//! interval ([`Grant`]):
//!
//! ```text
//! tokens  = min(capacity, tokens + rate·Δt) − Σ admitted          (the global bucket)
//! spend   = max(tokens, 0) + rate·interval                        (what the next interval may use)
//! share_w = (demand_w + ε) / Σ (demand + ε)                       (ε: a little for idle workers)
//! grant_w = spend · share_w
//! capacity = burst + 1 + rate·interval
//! ```
//!
//! Grants never add up to more than the bucket can spend, so over any window of one period the
//! admitted total stays within `rate + burst + 1` plus what a worker spends between its report
//! and its next grant (at most one interval of traffic), and the first grant a worker gives
//! itself for a key it has never seen (its equal share of a full bucket). A worker that stops
//! seeing a key keeps its last allowance: unspent tokens roll into the bucket, so a key that
//! moves from one worker to another (a new keep-alive connection) loses at most one interval.
//! Workers never wait for the coordinator: they read grants on their own tick without blocking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::redis::{RedisCount, RedisLink};
use super::Shared;
use crate::config::{LimitMode, RateLimit, RedisFallback, Snapshot};

/// One key's figures from one worker since its last report.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub limit: u32,
    pub key: u64,
    pub admitted: u32,
    pub demand: u32,
}

#[derive(Debug)]
pub struct Report {
    pub worker: usize,
    pub items: Vec<Item>,
}

/// A worker's allowance for a key until the next grant.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub limit: u32,
    pub key: u64,
    pub allowance: f32,
}

/// A worker's end of the coordinator's channels.
pub struct WorkerLink {
    pub reports: Sender<Report>,
    pub grants: Receiver<Vec<Grant>>,
}

/// The tokens a limit's global bucket holds when full.
pub fn capacity(l: &RateLimit) -> f64 {
    l.burst as f64 + 1.0 + rate_per_sec(l) * l.sync_interval.as_secs_f64()
}

fn rate_per_sec(l: &RateLimit) -> f64 {
    l.rate as f64 / l.period.as_secs_f64()
}

/// The running coordinator; dropping it stops it.
pub struct Coordinator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A key's global state.
struct Global {
    tokens: f64,
    last: Instant,
    seen: Instant,
    /// `redis`: this instance's demand in the current window, and what Redis said last.
    window: u64,
    my_demand: u64,
    counts: Option<RedisCount>,
    /// This instance's share of the key's demand across instances, as last known.
    share: f64,
}

/// What the coordinator keeps per limit.
struct LimitState {
    keys: HashMap<u64, Global>,
    /// Reports since the limit's last round: admitted in total, demand per worker.
    pending: HashMap<u64, (u64, Vec<u32>)>,
    next_round: Instant,
}

impl Coordinator {
    /// Starts the coordinator when some limit is in `sync` or `redis` mode; returns each
    /// worker's link (none when it does not run).
    pub fn start(
        snapshot: Arc<Snapshot>,
        shared: Arc<Shared>,
    ) -> std::io::Result<(Option<Coordinator>, Vec<Option<WorkerLink>>)> {
        let workers = snapshot.runtime.workers;
        let needed = snapshot
            .rate_limits
            .iter()
            .any(|l| matches!(l.mode, LimitMode::Sync | LimitMode::Redis));
        if !needed && !shared.exact.iter().any(Option::is_some) {
            return Ok((None, (0..workers).map(|_| None).collect()));
        }
        let (report_tx, report_rx) = mpsc::channel();
        let mut grant_txs = Vec::with_capacity(workers);
        let mut links = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::channel();
            grant_txs.push(tx);
            links.push(Some(WorkerLink {
                reports: report_tx.clone(),
                grants: rx,
            }));
        }
        drop(report_tx);
        let redis = match &snapshot.redis {
            Some(r)
                if snapshot
                    .rate_limits
                    .iter()
                    .any(|l| l.mode == LimitMode::Redis) =>
            {
                Some(RedisLink::start(r.clone(), snapshot.clone())?)
            }
            _ => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("coregate-limits".into())
            .spawn(move || run(snapshot, shared, report_rx, grant_txs, redis, stop2))?;
        Ok((
            Some(Coordinator {
                stop,
                thread: Some(thread),
            }),
            links,
        ))
    }
}

fn run(
    snapshot: Arc<Snapshot>,
    shared: Arc<Shared>,
    reports: Receiver<Report>,
    grants: Vec<Sender<Vec<Grant>>>,
    redis: Option<RedisLink>,
    stop: Arc<AtomicBool>,
) {
    let workers = grants.len();
    let now = Instant::now();
    let mut limits: Vec<LimitState> = snapshot
        .rate_limits
        .iter()
        .map(|l| LimitState {
            keys: HashMap::new(),
            pending: HashMap::new(),
            next_round: now + l.sync_interval,
        })
        .collect();
    let step = snapshot
        .rate_limits
        .iter()
        .map(|l| l.sync_interval)
        .min()
        .unwrap_or(Duration::from_millis(50))
        .min(Duration::from_millis(50));
    let mut next_gc = now + Duration::from_secs(1);
    while !stop.load(Relaxed) {
        // Take in reports until the next limit is due.
        let due = limits
            .iter()
            .map(|s| s.next_round)
            .min()
            .unwrap_or(now + step);
        let wait = due.saturating_duration_since(Instant::now()).min(step);
        match reports.recv_timeout(wait) {
            Ok(r) => {
                absorb(&mut limits, r, workers);
                while let Ok(r) = reports.try_recv() {
                    absorb(&mut limits, r, workers);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if let Some(link) = &redis {
            for c in link.counts() {
                if let Some(g) = limits
                    .get_mut(c.limit as usize)
                    .and_then(|s| s.keys.get_mut(&c.key))
                {
                    g.counts = Some(c);
                }
            }
        }
        let now = Instant::now();
        let mut out: Vec<Vec<Grant>> = vec![Vec::new(); workers];
        let mut to_redis = Vec::new();
        for (l, state) in snapshot.rate_limits.iter().zip(limits.iter_mut()) {
            if now < state.next_round {
                continue;
            }
            state.next_round = now + l.sync_interval;
            round(l, state, now, &mut out, &mut to_redis, redis.as_ref());
        }
        if let Some(link) = &redis {
            if !to_redis.is_empty() {
                link.send(to_redis);
            }
        }
        for (tx, g) in grants.iter().zip(out) {
            if !g.is_empty() {
                let _ = tx.send(g);
            }
        }
        if now >= next_gc {
            next_gc = now + Duration::from_secs(1);
            for (l, state) in snapshot.rate_limits.iter().zip(limits.iter_mut()) {
                let idle = l.period * 2 + Duration::from_secs(1);
                state.keys.retain(|_, g| now.duration_since(g.seen) < idle);
            }
            let now_ns = shared.epoch.elapsed().as_nanos() as u64;
            for t in shared.exact.iter().flatten() {
                t.collect(now_ns);
            }
        }
    }
}

fn absorb(limits: &mut [LimitState], r: Report, workers: usize) {
    for it in r.items {
        if let Some(s) = limits.get_mut(it.limit as usize) {
            let e = s
                .pending
                .entry(it.key)
                .or_insert_with(|| (0, vec![0; workers]));
            e.0 += it.admitted as u64;
            if let Some(d) = e.1.get_mut(r.worker) {
                *d += it.demand;
            }
        }
    }
}

/// Settles every key reported since the limit's last round and grants the workers their
/// allowances.
fn round(
    l: &RateLimit,
    state: &mut LimitState,
    now: Instant,
    out: &mut [Vec<Grant>],
    to_redis: &mut Vec<Item>,
    redis: Option<&RedisLink>,
) {
    let cap = capacity(l);
    let rate = rate_per_sec(l);
    let interval = l.sync_interval.as_secs_f64();
    let workers = out.len();
    let window = unix_ms() / (l.period.as_millis().max(1) as u64);
    for (key, (admitted, demand)) in state.pending.drain() {
        let g = state.keys.entry(key).or_insert(Global {
            tokens: cap,
            last: now,
            seen: now,
            window,
            my_demand: 0,
            counts: None,
            share: 1.0,
        });
        g.tokens = (g.tokens + rate * now.duration_since(g.last).as_secs_f64()).min(cap);
        g.last = now;
        g.seen = now;
        g.tokens -= admitted as f64;
        let mut spend = g.tokens.max(0.0) + rate * interval;
        let total: u64 = demand.iter().map(|&d| d as u64).sum();
        if l.mode == LimitMode::Redis {
            if g.window != window {
                g.window = window;
                g.my_demand = 0;
            }
            g.my_demand += total;
            to_redis.push(Item {
                limit: l.index as u32,
                key,
                admitted: admitted.min(u32::MAX as u64) as u32,
                demand: total.min(u32::MAX as u64) as u32,
            });
            spend = redis_spend(l, g, spend, window, redis.is_some_and(|r| r.is_up()));
        }
        let eps = (total as f64 / (10.0 * workers as f64)).max(0.25);
        let weight: f64 = demand.iter().map(|&d| d as f64 + eps).sum();
        for (w, &d) in demand.iter().enumerate() {
            out[w].push(Grant {
                limit: l.index as u32,
                key,
                allowance: (spend * (d as f64 + eps) / weight) as f32,
            });
        }
    }
}

/// What a `redis` key may spend in the next interval: this instance's share of what is left of
/// the window across instances, or its fallback while Redis is away.
fn redis_spend(l: &RateLimit, g: &mut Global, local: f64, window: u64, up: bool) -> f64 {
    let quota = (l.rate + l.burst) as f64;
    match g.counts {
        Some(c) if up && c.window == window => {
            let left = (quota - c.admitted as f64).max(0.0);
            g.share = if c.demand == 0 {
                1.0
            } else {
                (g.my_demand as f64 / c.demand as f64).clamp(0.0, 1.0)
            };
            local.min(left * g.share)
        }
        // A new window whose counts have not come back yet: this instance's usual share.
        _ if up => local.min(quota * g.share),
        _ => match l.on_redis_error {
            RedisFallback::Local => local * g.share,
            RedisFallback::Allow => 1e9,
            RedisFallback::Deny => 0.0,
        },
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: u64, burst: u64) -> RateLimit {
        let src = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"u\"\nbackends = [{{ address = \"127.0.0.1:2\" }}]\n\
             [[rate_limits]]\nname = \"l\"\nkey = \"client_ip\"\nrate = {rate}\nburst = {burst}\n\
             [[routes]]\nname = \"r\"\nupstream = \"u\"\nrate_limits = [\"l\"]\n"
        );
        crate::config::parse("t", &src).unwrap().rate_limits[0].clone()
    }

    /// Runs rounds of `interval` where each worker offers `offered[w]` requests per round and
    /// spends up to its grant; returns the admitted total per round.
    fn simulate(l: &RateLimit, rounds: &[Vec<u32>]) -> Vec<u64> {
        let workers = rounds[0].len();
        let mut state = LimitState {
            keys: HashMap::new(),
            pending: HashMap::new(),
            next_round: Instant::now(),
        };
        let mut allowance = vec![capacity(l) / workers as f64; workers];
        let mut t = Instant::now();
        let mut admitted_per_round = Vec::new();
        for offered in rounds {
            let mut admitted = 0u64;
            let mut demand = vec![0u32; workers];
            for w in 0..workers {
                let a = (offered[w] as f64).min(allowance[w].floor().max(0.0)) as u32;
                allowance[w] -= a as f64;
                admitted += a as u64;
                demand[w] = offered[w];
            }
            admitted_per_round.push(admitted);
            state.pending.insert(7, (admitted, demand));
            t += l.sync_interval;
            let mut out = vec![Vec::new(); workers];
            round(l, &mut state, t, &mut out, &mut Vec::new(), None);
            for (w, g) in out.iter().enumerate() {
                allowance[w] = g[0].allowance as f64;
            }
        }
        admitted_per_round
    }

    fn per_second(admitted: &[u64]) -> Vec<u64> {
        admitted.chunks(20).map(|c| c.iter().sum()).collect()
    }

    #[test]
    fn skewed_demand_gets_the_whole_limit() {
        // 1000/s with 50 ms rounds, 3000/s offered on one worker of two.
        let l = limit(1000, 0);
        let rounds: Vec<Vec<u32>> = (0..100).map(|_| vec![150, 0]).collect();
        let secs = per_second(&simulate(&l, &rounds));
        for (i, s) in secs.iter().enumerate().skip(1) {
            assert!((950..=1050).contains(s), "second {i}: {secs:?}");
        }
    }

    #[test]
    fn balanced_demand_is_shared() {
        let l = limit(1000, 0);
        let rounds: Vec<Vec<u32>> = (0..100).map(|_| vec![75, 75]).collect();
        let secs = per_second(&simulate(&l, &rounds));
        for (i, s) in secs.iter().enumerate().skip(1) {
            assert!((950..=1050).contains(s), "second {i}: {secs:?}");
        }
    }

    #[test]
    fn demand_moving_between_workers_loses_little() {
        let l = limit(1000, 0);
        let rounds: Vec<Vec<u32>> = (0..100)
            .map(|i| if i < 50 { vec![150, 0] } else { vec![0, 150] })
            .collect();
        let secs = per_second(&simulate(&l, &rounds));
        for (i, s) in secs.iter().enumerate().skip(1) {
            assert!((950..=1050).contains(s), "second {i}: {secs:?}");
        }
    }

    #[test]
    fn idle_key_gets_its_burst_then_the_rate() {
        let l = limit(100, 20);
        let mut rounds: Vec<Vec<u32>> = vec![vec![200, 200]];
        rounds.extend((0..40).map(|_| vec![50, 50]));
        let adm = simulate(&l, &rounds);
        // The first round spends the full bucket (burst + 1 + one interval of rate) at most.
        assert!(adm[0] as f64 <= capacity(&l) + 1.0, "{adm:?}");
        let total: u64 = adm.iter().sum();
        // 41 rounds of 50 ms ≈ 2.05 s: at most rate·t + capacity.
        assert!(total as f64 <= 100.0 * 2.05 + capacity(&l) + 2.0, "{total}");
        assert!(total as f64 >= 100.0 * 2.0, "{total}");
    }
}
