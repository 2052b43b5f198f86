//! The coordinator of `sync` and `redis` limits: one control thread (`coregate-limits`) that
//! holds each active key's global token bucket. Workers send it, every sync tick, what they
//! admitted and how many requests they saw per key ([`Report`]); every `sync_interval` of a
//! limit it settles each active key and gives each worker a [`Grant`]: tokens to spend now and
//! a share of the rate to refill itself with until the next grant:
//!
//! ```text
//! tokens   = min(capacity, tokens + rate·Δt) − Σ admitted        (the global bucket)
//! share_w  = (demand_w + ε) / Σ (demand + ε)                     (ε: a little for idle workers)
//! grant_w  = max(tokens, 0) · share_w,   refill_w = rate · share_w
//! capacity = burst + 1 + rate·interval
//! ```
//!
//! Until its next grant, a worker may spend its grant plus its refill: over one interval the
//! workers together may spend the bucket plus one interval of the rate, exactly what the global
//! bucket allows. A grant replaces the previous one; tokens a worker did not spend stay in the
//! bucket (only what was admitted is taken out), so a key whose traffic moves to another worker
//! (a new keep-alive connection) loses little. A worker that hears nothing (a late round, an
//! idle key) keeps refilling at its last share, so no key starves when a round is late.
//!
//! The bound: over any window of one period a key is admitted at most `rate + burst + 1`, plus
//! what a worker spends between its report and its next grant (at most one interval of its
//! traffic), plus the first grant a worker gives itself for a key it has never seen (its equal
//! share of a full bucket). Workers never wait for the coordinator: they read grants on their
//! own tick without blocking. Demand decays by half every round a worker does not report the key;
//! a key nobody has asked for since is no longer settled (workers keep their last grant).

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

/// A worker's tokens for a key, and its share of the limit's rate until the next grant.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub limit: u32,
    pub key: u64,
    pub allowance: f32,
    pub share: f32,
    /// A budget for the next interval, not a bucket level: the worker takes it as it is
    /// (nothing it spent since its report comes out).
    pub fixed: bool,
}

/// How a worker receives the coordinator's rounds: a channel that wakes the worker's event loop
/// (the rounds are what the worker answers with its report).
pub type RoundReceiver = tokio::sync::mpsc::UnboundedReceiver<Vec<Grant>>;

/// A worker's end of the coordinator's channels.
pub struct WorkerLink {
    pub reports: Sender<Report>,
    pub rounds: RoundReceiver,
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
    /// Recent demand per worker (halved every round without a report).
    demand: Vec<f32>,
    /// Reported since the last round.
    last_reported: bool,
    /// Admitted in the last rounds (what may have been spent and not reported yet).
    recent: [f64; 2],
    /// `redis`: this instance's demand in the current window, and what Redis said last.
    window: u64,
    my_demand: u64,
    counts: Option<RedisCount>,
    /// `redis`: what this instance admitted since `counts` were taken.
    since_counts: u64,
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
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            grant_txs.push(tx);
            links.push(Some(WorkerLink {
                reports: report_tx.clone(),
                rounds: rx,
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

/// The coordinator's loop. Every round it sends each worker its grants (an empty list too),
/// waits briefly for every worker's reply — its report, taken right after applying the grants —
/// and settles the limits that are due at the next round.
fn run(
    snapshot: Arc<Snapshot>,
    shared: Arc<Shared>,
    reports: Receiver<Report>,
    grants: Vec<tokio::sync::mpsc::UnboundedSender<Vec<Grant>>>,
    redis: Option<RedisLink>,
    stop: Arc<AtomicBool>,
) {
    let workers = grants.len();
    let now = Instant::now();
    let mut limits: Vec<LimitState> = snapshot
        .rate_limits
        .iter()
        .map(|_| LimitState {
            keys: HashMap::new(),
            pending: HashMap::new(),
            next_round: now,
        })
        .collect();
    let step = snapshot
        .rate_limits
        .iter()
        .map(|l| l.sync_interval)
        .min()
        .unwrap_or(Duration::from_millis(50));
    let mut next_gc = now + Duration::from_secs(1);
    let mut next = now;
    let mut out: Vec<Vec<Grant>> = vec![Vec::new(); workers];
    while !stop.load(Relaxed) {
        // Send the round and collect the replies (a worker busy for long is not waited for:
        // its report joins the next round).
        for (tx, g) in grants.iter().zip(out.iter_mut()) {
            if tx.send(std::mem::take(g)).is_err() {
                return; // the worker is gone: the process is ending
            }
        }
        let wait_until = Instant::now() + (step / 2).min(Duration::from_millis(20));
        let mut replies = 0;
        while replies < workers {
            let left = wait_until.saturating_duration_since(Instant::now());
            match reports.recv_timeout(left) {
                Ok(r) => {
                    replies += 1;
                    absorb(&mut limits, r, workers);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        next += step;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
        // Late replies of the previous round.
        while let Ok(r) = reports.try_recv() {
            absorb(&mut limits, r, workers);
        }
        if let Some(link) = &redis {
            for c in link.counts() {
                if let Some(g) = limits
                    .get_mut(c.limit as usize)
                    .and_then(|s| s.keys.get_mut(&c.key))
                {
                    g.counts = Some(c);
                    g.since_counts = 0;
                }
            }
        }
        let now = Instant::now();
        let mut to_redis = Vec::new();
        for (l, state) in snapshot.rate_limits.iter().zip(limits.iter_mut()) {
            if now + step / 4 < state.next_round {
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

/// Settles every active key of a limit and grants the workers their tokens and shares.
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
    let workers = out.len();
    let window = unix_ms() / (l.period.as_millis().max(1) as u64);
    // A key reported for the first time has been spending since before the previous round (its
    // report came in then): its full bucket refills from there, not from now.
    let first_seen = now.checked_sub(l.sync_interval).unwrap_or(now);
    // New reports first: they create keys and refresh demand.
    for (key, (admitted, demand)) in state.pending.drain() {
        let g = state.keys.entry(key).or_insert(Global {
            tokens: cap,
            last: first_seen,
            seen: now,
            demand: vec![0.0; workers],
            last_reported: false,
            recent: [0.0; 2],
            window,
            my_demand: 0,
            counts: None,
            since_counts: 0,
            share: 1.0,
        });
        g.tokens -= admitted as f64;
        g.recent[0] += admitted as f64;
        g.seen = now;
        let total: u64 = demand.iter().map(|&d| d as u64).sum();
        for (gd, &d) in g.demand.iter_mut().zip(&demand) {
            // Reported this round: the new figure; not reported: decay.
            *gd = if d > 0 { d as f32 } else { *gd * 0.5 };
        }
        if l.mode == LimitMode::Redis {
            if g.window != window {
                // A window ended: this instance's share of the demand across instances in it
                // is its share for what comes (and for when Redis is away).
                if let Some(c) = g.counts.filter(|c| c.window == g.window && c.demand > 0) {
                    g.share = (g.my_demand as f64 / c.demand as f64).clamp(0.05, 1.0);
                }
                g.window = window;
                g.my_demand = 0;
            }
            g.my_demand += total;
            g.since_counts += admitted;
            to_redis.push(Item {
                limit: l.index as u32,
                key,
                admitted: admitted.min(u32::MAX as u64) as u32,
                demand: total.min(u32::MAX as u64) as u32,
            });
        }
        g.last_reported = true;
    }
    let up = redis.is_some_and(|r| r.is_up());
    for (&key, g) in state.keys.iter_mut() {
        if !std::mem::take(&mut g.last_reported) {
            for d in g.demand.iter_mut() {
                *d *= 0.5;
            }
        }
        let total: f32 = g.demand.iter().sum();
        if total < 0.1 {
            continue; // nobody has asked lately: workers keep their last grant
        }
        // The bucket is full at `capacity`, counting tokens the workers may have spent but not
        // reported yet (what they spent in the last rounds): the reports lag the spending, and
        // without this the refill would be cut while the bucket only looks full.
        let in_flight = g.recent[0].max(g.recent[1]);
        g.recent = [0.0, g.recent[0]];
        g.tokens =
            (g.tokens + rate * now.duration_since(g.last).as_secs_f64()).min(cap + in_flight);
        g.last = now;
        let mut tokens = g.tokens.max(0.0);
        let mut rate_factor = 1.0;
        let mut fixed = false;
        if l.mode == LimitMode::Redis {
            let (t, f, budget) = redis_spend(l, g, tokens, window, up);
            tokens = t;
            rate_factor = f;
            fixed = budget;
        }
        let eps = (total / (10.0 * workers as f32)).max(0.25);
        let weight: f32 = g.demand.iter().map(|&d| d + eps).sum();
        for (w, &d) in g.demand.iter().enumerate() {
            let share = (d + eps) / weight;
            out[w].push(Grant {
                limit: l.index as u32,
                key,
                allowance: (tokens * share as f64) as f32,
                share: share * rate_factor as f32,
                fixed,
            });
        }
    }
}

/// What a `redis` key may spend now, the factor on its refill, and whether that is a fixed
/// budget for the interval: this instance's share of what is left of the window across
/// instances, or its fallback while Redis is away.
fn redis_spend(
    l: &RateLimit,
    g: &mut Global,
    local: f64,
    window: u64,
    up: bool,
) -> (f64, f64, bool) {
    let quota = (l.rate + l.burst) as f64;
    match g.counts {
        Some(c) if up && c.window == window => {
            // The counts are a round old: take off what this instance admitted since, and
            // as much again for the others in proportion to their share.
            let since = g.since_counts as f64 / g.share.max(0.05);
            let left = (quota - c.admitted as f64 - since).max(0.0);
            // The refill is the window's: nothing more once the window's quota is spent.
            (
                local.min(left * g.share),
                if left > 0.0 { g.share } else { 0.0 },
                false,
            )
        }
        // A new window whose counts have not come back yet: this instance's usual share.
        _ if up => (local.min(quota * g.share), g.share, false),
        // Redis away, `local`: this instance spends its last known share of the rate, one
        // interval at a time, and nothing saved up (its own bucket knows nothing of the
        // others).
        _ => match l.on_redis_error {
            RedisFallback::Local => (
                rate_per_sec(l) * l.sync_interval.as_secs_f64() * g.share,
                0.0,
                true,
            ),
            RedisFallback::Allow => (1e9, 1e6, true),
            RedisFallback::Deny => (0.0, 0.0, true),
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
    /// spends up to its tokens (grant plus refill); returns the admitted total per round.
    fn simulate(l: &RateLimit, rounds: &[Vec<u32>]) -> Vec<u64> {
        let workers = rounds[0].len();
        let mut state = LimitState {
            keys: HashMap::new(),
            pending: HashMap::new(),
            next_round: Instant::now(),
        };
        let refill = rate_per_sec(l) * l.sync_interval.as_secs_f64();
        // A worker's first grant to itself is its share of a full bucket (`Limiters::new`):
        // the burst's share here, and the interval's refill added at the top of the round.
        let mut allowance = vec![(l.burst + 1) as f64 / workers as f64; workers];
        let mut share = vec![1.0 / workers as f64; workers];
        let mut t = Instant::now();
        let mut admitted_per_round = Vec::new();
        for offered in rounds {
            let mut admitted = 0u64;
            let mut demand = vec![0u32; workers];
            for w in 0..workers {
                allowance[w] += refill * share[w];
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
                if let Some(g) = g.first() {
                    allowance[w] = g.allowance as f64;
                    share[w] = g.share as f64;
                }
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
