//! `loadtest idle`: opens N keep-alive connections to a proxy and holds them, sending one request
//! on each every `--interval` (staggered), so the proxy keeps per-connection state alive. With
//! `--pid` it reports that process's RSS before, once every connection is open and has been
//! answered, and at the end: the difference divided by N is the memory cost per connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use serde::Serialize;

use crate::run::conn::read_response;
use crate::run::parse_url;
use crate::util::{self, fmt_bytes, parse_duration, RxBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Target, e.g. http://127.0.0.1:8080/
    pub url: String,
    /// Connections to open and hold.
    #[arg(short, long, default_value_t = 1000)]
    pub connections: usize,
    /// Time between two requests on one connection.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long to hold the connections.
    #[arg(short, long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Process whose resident memory (VmRSS, with its descendants) to report.
    #[arg(long)]
    pub pid: Option<i32>,
    /// Threads opening and holding connections.
    #[arg(short, long, default_value_t = 1)]
    pub threads: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Extra request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
}

#[derive(Default)]
struct Shared {
    ready: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub connections: usize,
    pub established: u64,
    pub ok: u64,
    pub errors: u64,
    pub rss_before: Option<u64>,
    pub rss_held: Option<u64>,
    pub rss_end: Option<u64>,
    pub bytes_per_connection: Option<f64>,
}

/// VmRSS of one process in bytes.
pub fn rss(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The pid and all its descendants (nginx's master and worker, for example).
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 256 {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<i32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// Resident memory of a process and its descendants (nginx's master and worker, say), in bytes;
/// pages shared between them are counted once per process. None if the process is gone.
pub fn rss_tree(pid: i32) -> Option<u64> {
    rss(pid)?;
    Some(process_tree(pid).into_iter().filter_map(rss).sum())
}

pub fn main(args: IdleArgs) -> i32 {
    match measure(&args) {
        Ok(r) => {
            println!(
                "idle: {} of {} connections established, {} responses ok, {} errors",
                r.established, r.connections, r.ok, r.errors
            );
            if let (Some(b), Some(h), Some(e)) = (r.rss_before, r.rss_held, r.rss_end) {
                println!(
                    "  RSS before {}, holding {}, at end {}; per connection {}",
                    fmt_bytes(b as f64),
                    fmt_bytes(h as f64),
                    fmt_bytes(e as f64),
                    fmt_bytes(r.bytes_per_connection.unwrap_or(0.0))
                );
            }
            if let Some(p) = &args.json {
                let text = serde_json::to_string_pretty(&r).unwrap_or_default();
                if let Err(e) = std::fs::write(p, text + "\n") {
                    eprintln!("loadtest idle: {}: {e}", p.display());
                    return 1;
                }
            }
            i32::from(r.errors > 0 || r.established < r.connections as u64)
        }
        Err(e) => {
            eprintln!("loadtest idle: {e}");
            2
        }
    }
}

pub fn measure(args: &IdleArgs) -> Result<IdleReport, String> {
    util::raise_nofile();
    let (host, addr, path) = parse_url(&args.url)?;
    let mut extra = String::new();
    for h in &args.headers {
        if !h.contains(':') || h.contains(['\r', '\n']) {
            return Err(format!("invalid header {h:?} (expected \"Name: value\")"));
        }
        extra.push_str(h);
        extra.push_str("\r\n");
    }
    let request: Bytes =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: loadtest\r\n{extra}\r\n")
            .into();
    let n = args.connections.max(1);
    let rss_before = args.pid.and_then(rss_tree);
    let shared = Arc::new(Shared::default());
    let end = Instant::now() + args.duration;
    let threads = args.threads.clamp(1, n);
    let mut handles = Vec::new();
    for t in 0..threads {
        let ids: Vec<usize> = (t..n).step_by(threads).collect();
        let (shared, request, interval) = (shared.clone(), request.clone(), args.interval);
        handles.push(std::thread::spawn(move || {
            let mut rt = match util::runtime() {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                let tasks: Vec<_> = ids
                    .into_iter()
                    .map(|i| {
                        let offset = interval.mul_f64(i as f64 / n as f64);
                        monoio::spawn(hold(
                            addr,
                            request.clone(),
                            interval,
                            offset,
                            end,
                            shared.clone(),
                        ))
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
            });
        }));
    }
    // Wait until every connection has been answered once (or half the run has passed).
    let half = Instant::now() + args.duration / 2;
    while shared.ready.load(Ordering::Relaxed) < n as u64 && Instant::now() < half {
        std::thread::sleep(Duration::from_millis(50));
    }
    // One second of idleness before the figure: a proxy may keep a connection's buffers for a
    // short grace after its answer (coregate does for 250 ms) and give memory back on its next
    // housekeeping tick.
    std::thread::sleep(Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())));
    let rss_held = args.pid.and_then(rss_tree);
    let established = shared.ready.load(Ordering::Relaxed);
    let mut rss_end = None;
    while !handles.iter().all(|h| h.is_finished()) {
        if Instant::now() + Duration::from_millis(300) >= end && rss_end.is_none() {
            rss_end = args.pid.and_then(rss_tree);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for h in handles {
        let _ = h.join();
    }
    let rss_end = rss_end.or_else(|| args.pid.and_then(rss_tree));
    Ok(IdleReport {
        connections: n,
        established,
        ok: shared.ok.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        rss_before,
        rss_held,
        rss_end,
        bytes_per_connection: match (rss_before, rss_held) {
            (Some(b), Some(h)) if established > 0 => {
                Some((h as f64 - b as f64) / established as f64)
            }
            _ => None,
        },
    })
}

async fn hold(
    addr: std::net::SocketAddr,
    request: Bytes,
    interval: Duration,
    offset: Duration,
    end: Instant,
    shared: Arc<Shared>,
) {
    let fail = || shared.errors.fetch_add(1, Ordering::Relaxed);
    let Ok(Ok(mut stream)) =
        monoio::time::timeout(Duration::from_secs(5), TcpStream::connect_addr(addr)).await
    else {
        fail();
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut rx = RxBuf::with_capacity(4096);
    let mut first = true;
    let mut next = Instant::now();
    while Instant::now() < end {
        let (res, _) = stream.write_all(request.clone()).await;
        if res.is_err() {
            fail();
            return;
        }
        match monoio::time::timeout(
            Duration::from_secs(5),
            read_response(&mut stream, &mut rx, false),
        )
        .await
        {
            Ok(Ok(r)) if r.status < 400 && !r.close => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                fail();
                return;
            }
        }
        if first {
            shared.ready.fetch_add(1, Ordering::Relaxed);
            first = false;
            next += offset;
        }
        next += interval;
        let wake = next.min(end);
        monoio::time::sleep_until(monoio::time::Instant::from_std(wake)).await;
    }
}
