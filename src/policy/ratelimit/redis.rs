//! The cross-instance layer of `redis` limits: one control thread (`coregate-redis`) that, for
//! every round of the coordinator, adds this instance's admitted and seen requests per key to
//! two counters of the current window in Redis — `INCRBY` and `PEXPIRE` for each, all in one
//! pipelined round trip — and reads the totals back for the coordinator. Workers never talk to
//! Redis and never wait on it.
//!
//! Keys: `coregate:rl:NAME:KEYHASH:WINDOW:a` (admitted) and `…:d` (seen), where `WINDOW` is
//! the Unix time in ms divided by the limit's period; they expire after two periods. While Redis
//! cannot be reached the coordinator applies the limit's `on_redis_error`; this thread
//! reconnects with a backoff from 100 ms to 5 s and logs once per outage.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sync::Item;
use crate::config::{RedisSettings, Snapshot};

/// A key's totals across instances for one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisCount {
    pub limit: u32,
    pub key: u64,
    pub window: u64,
    pub admitted: u64,
    pub demand: u64,
}

/// The coordinator's end of the Redis thread.
pub struct RedisLink {
    tx: Option<Sender<Vec<Item>>>,
    rx: Receiver<Vec<RedisCount>>,
    up: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RedisLink {
    pub fn start(settings: RedisSettings, snapshot: Arc<Snapshot>) -> std::io::Result<RedisLink> {
        let (tx, items) = mpsc::channel::<Vec<Item>>();
        let (counts, rx) = mpsc::channel();
        let up = Arc::new(AtomicBool::new(false));
        let up2 = up.clone();
        let thread = std::thread::Builder::new()
            .name("coregate-redis".into())
            .spawn(move || run(settings, snapshot, items, counts, up2))?;
        Ok(RedisLink {
            tx: Some(tx),
            rx,
            up,
            thread: Some(thread),
        })
    }

    /// Queues a round of deltas (never blocks).
    pub fn send(&self, items: Vec<Item>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(items);
        }
    }

    /// Totals that came back since the last call.
    pub fn counts(&self) -> Vec<RedisCount> {
        let mut out = Vec::new();
        while let Ok(c) = self.rx.try_recv() {
            out.extend(c);
        }
        out
    }

    /// The last round trip succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }
}

impl Drop for RedisLink {
    fn drop(&mut self) {
        self.tx = None; // ends the thread's receive loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    settings: RedisSettings,
    snapshot: Arc<Snapshot>,
    items: Receiver<Vec<Item>>,
    counts: Sender<Vec<RedisCount>>,
    up: Arc<AtomicBool>,
) {
    let client = match redis::Client::open(settings.url.as_str()) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(
                "redis url {}: {e}; redis limits use their fallback",
                settings.url
            );
            None
        }
    };
    let mut conn: Option<redis::Connection> = None;
    let mut backoff = Duration::from_millis(100);
    let mut next_try = Instant::now();
    // Down since (for the once-per-outage log).
    let mut outage: Option<Instant> = Some(Instant::now());
    let mut first = true;
    loop {
        let mut batch = match items.recv_timeout(Duration::from_millis(100)) {
            Ok(b) => b,
            Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        while let Ok(more) = items.try_recv() {
            batch.extend(more);
        }
        let Some(client) = &client else { continue };
        if conn.is_none() && Instant::now() >= next_try {
            match connect(client, settings.timeout) {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if first || outage.is_none() {
                        tracing::warn!("redis {} unreachable: {e}; redis limits use their fallback until it is back", settings.url);
                        outage.get_or_insert_with(Instant::now);
                        first = false;
                    }
                    up.store(false, Relaxed);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if batch.is_empty() {
            // Keep the verdict fresh: a PING when there is nothing to count.
            match redis::cmd("PING").query::<String>(c) {
                Ok(_) => mark_up(&up, &mut outage, &settings.url),
                Err(e) => lost(&mut conn, &up, &mut outage, &settings.url, &e),
            }
            continue;
        }
        match exchange(c, &snapshot, &batch) {
            Ok(totals) => {
                mark_up(&up, &mut outage, &settings.url);
                let _ = counts.send(totals);
            }
            Err(e) => lost(&mut conn, &up, &mut outage, &settings.url, &e),
        }
    }
}

fn connect(client: &redis::Client, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let c = client.get_connection_with_timeout(timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    Ok(c)
}

fn mark_up(up: &AtomicBool, outage: &mut Option<Instant>, url: &str) {
    if let Some(since) = outage.take() {
        tracing::info!(
            "redis {url} reachable; redis limits shared again (after {:?})",
            since.elapsed()
        );
    }
    up.store(true, Relaxed);
}

fn lost(
    conn: &mut Option<redis::Connection>,
    up: &AtomicBool,
    outage: &mut Option<Instant>,
    url: &str,
    e: &redis::RedisError,
) {
    *conn = None;
    up.store(false, Relaxed);
    if outage.is_none() {
        *outage = Some(Instant::now());
        tracing::warn!("redis {url} lost: {e}; redis limits use their fallback until it is back");
    }
}

/// One pipelined round trip: the deltas in, the window totals out.
fn exchange(
    c: &mut redis::Connection,
    snapshot: &Snapshot,
    batch: &[Item],
) -> redis::RedisResult<Vec<RedisCount>> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut pipe = redis::pipe();
    let mut meta = Vec::with_capacity(batch.len());
    for it in batch {
        let Some(l) = snapshot.rate_limits.get(it.limit as usize) else {
            continue;
        };
        let period_ms = l.period.as_millis().max(1) as u64;
        let window = now_ms / period_ms;
        let base = format!("coregate:rl:{}:{:016x}:{window}", l.name, it.key);
        let ttl = 2 * period_ms;
        pipe.cmd("INCRBY").arg(format!("{base}:a")).arg(it.admitted);
        pipe.cmd("PEXPIRE")
            .arg(format!("{base}:a"))
            .arg(ttl)
            .ignore();
        pipe.cmd("INCRBY").arg(format!("{base}:d")).arg(it.demand);
        pipe.cmd("PEXPIRE")
            .arg(format!("{base}:d"))
            .arg(ttl)
            .ignore();
        meta.push((it.limit, it.key, window));
    }
    let values: Vec<i64> = pipe.query(c)?;
    Ok(meta
        .into_iter()
        .zip(values.chunks(2))
        .map(|((limit, key, window), v)| RedisCount {
            limit,
            key,
            window,
            admitted: v.first().copied().unwrap_or(0).max(0) as u64,
            demand: v.get(1).copied().unwrap_or(0).max(0) as u64,
        })
        .collect())
}
