//! Rate limits over real sockets, with 2 workers: 429 with `Retry-After`, `RateLimit-Policy` and
//! `RateLimit`; a rejected POST's body never reaches the backend; and accuracy — a limit of
//! 1,000 req/s offered 3,000 req/s spread over both workers, from one keep-alive connection
//! (one worker), and moving from one worker to the other mid-run: admitted per second within
//! ±5% of the limit for `sync` and `exact`, while `local` misses under skew.

mod common;

use common::load::{add, offer, Seconds};
use common::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn proxy_with_limit(limit: &str, backend: u16, workers: usize) -> Proxy {
    let port = free_port();
    let text = format!(
        "[runtime]\nworkers = {workers}\npin = false\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[rate_limits]]\nname = \"per-client\"\nkey = \"client_ip\"\n{limit}\n\n{}\
         [[routes]]\nname = \"limited\"\npath_prefix = \"/\"\nupstream = \"app\"\nrate_limits = [\"per-client\"]\n",
        upstream_toml("app", &[backend], "")
    );
    Proxy::start(&text, port, "info,coregate::accept=trace")
}

#[test]
fn rejections_carry_retry_after_and_the_ratelimit_fields() {
    let backend = TestBackend::echo();
    let proxy = proxy_with_limit(
        "rate = 5\nperiod = \"1s\"\nburst = 2\nheaders = \"all\"",
        backend.port,
        1,
    );
    let mut c = Client::connect(proxy.addr);
    let mut ok = 0;
    let mut limited = Vec::new();
    for i in 0..20 {
        c.send(get_req("a", &format!("/{i}"), ""));
        let r = c.response();
        match r.status {
            200 => {
                ok += 1;
                assert_eq!(
                    r.header("ratelimit-policy"),
                    Some("\"per-client\";q=5;w=1"),
                    "{r:?}"
                );
                let rl = r.header("ratelimit").unwrap();
                assert!(rl.starts_with("\"per-client\";r="), "{rl}");
            }
            429 => limited.push(r),
            s => panic!("status {s}"),
        }
    }
    // A burst of 2 plus one, plus at most one sync interval's refill.
    assert!((3..=4).contains(&ok), "{ok} admitted");
    let r = &limited[0];
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(after, 1);
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-client\";q=5;w=1"));
    assert_eq!(r.header("ratelimit"), Some("\"per-client\";r=0;t=1"));
    assert!(!r.closes(), "a bodiless request keeps its connection");
    assert_eq!(backend.requests().len(), ok);
    // A rejected POST: answered at once, its body never forwarded.
    let mut c = Client::connect(proxy.addr);
    c.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nsecret-body");
    let r = c.response_to("POST");
    assert_eq!(r.status, 429);
    assert!(r.closes());
    assert!(backend
        .requests()
        .iter()
        .all(|r| r.method != "POST" && !r.body.windows(6).any(|w| w == b"secret")));
    // After a second the key may send again.
    std::thread::sleep(Duration::from_millis(1100));
    let mut c = Client::connect(proxy.addr);
    c.send(get_req("a", "/later", ""));
    assert_eq!(c.response().status, 200);
}

/// A limit far above the traffic never answers 429, not even in a new key's first sync tick
/// (with 2 workers and no burst, a worker's first grant to itself must hold its share of one
/// tick's rate, not just its half of `burst + 1`).
#[test]
fn a_limit_far_above_the_traffic_never_trips() {
    let backend = TestBackend::echo();
    let proxy = proxy_with_limit("rate = 1000000\nperiod = \"1s\"", backend.port, 2);
    let mut statuses = Vec::new();
    for round in 0..4 {
        let mut c = Client::connect(proxy.addr);
        let batch: String = (0..50)
            .map(|i| get_req("a", &format!("/{round}/{i}"), ""))
            .collect();
        c.send(batch);
        statuses.extend((0..50).map(|_| c.response().status));
    }
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(backend.requests().len(), 200);
}

/// Which worker accepted the latest connection (from the accept trace in the log).
fn last_accepting_worker(proxy: &Proxy, before: usize) -> Option<usize> {
    let log = proxy.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("accepted")).collect();
    if lines.len() <= before {
        return None;
    }
    let l = lines.last()?;
    Some(if l.contains("coregate-w0") { 0 } else { 1 })
}

fn accepted_lines(proxy: &Proxy) -> usize {
    proxy
        .log_text()
        .lines()
        .filter(|l| l.contains("accepted"))
        .count()
}

/// A keep-alive connection that lands on worker `want` (retrying new connections until one
/// does), or any worker when `want` is None.
fn connection_on(proxy: &Proxy, want: Option<usize>) -> (TcpStream, usize) {
    for _ in 0..50 {
        let before = accepted_lines(proxy);
        let s = connect(proxy.addr);
        s.set_nodelay(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let w = loop {
            if let Some(w) = last_accepting_worker(proxy, before) {
                break w;
            }
            assert!(Instant::now() < deadline, "no accept logged");
            std::thread::sleep(Duration::from_millis(2));
        };
        if want.is_none_or(|x| x == w) {
            return (s, w);
        }
    }
    panic!("no connection landed on worker {want:?}");
}

const LIMIT: u32 = 1000;
const RUN: Duration = Duration::from_millis(3400);

/// Runs one load shape against a fresh proxy with `mode`; returns admitted per whole second.
fn run_shape(mode: &str, shape: &str, backend: u16) -> Vec<u32> {
    let proxy = proxy_with_limit(
        &format!("rate = {LIMIT}\nperiod = \"1s\"\nburst = 50\nmode = \"{mode}\""),
        backend,
        2,
    );
    let start = Instant::now() + Duration::from_millis(300);
    let until = start + RUN;
    let mut total: Seconds = vec![(0, 0); 16];
    match shape {
        // Six connections, three on each worker: 3,000 req/s spread.
        "spread" => {
            let conns: Vec<TcpStream> = (0..6)
                .map(|i| connection_on(&proxy, Some(i % 2)).0)
                .collect();
            std::thread::sleep(start.saturating_duration_since(Instant::now()));
            let threads: Vec<_> = conns
                .into_iter()
                .map(|s| std::thread::spawn(move || offer(s, 500.0, start, until)))
                .collect();
            for t in threads {
                add(&mut total, &t.join().unwrap());
            }
        }
        // One keep-alive connection: one worker sees all of it.
        "single" => {
            let (s, _) = connection_on(&proxy, None);
            std::thread::sleep(start.saturating_duration_since(Instant::now()));
            total = offer(s, 3000.0, start, until);
        }
        // One connection on one worker, then halfway through one on the other worker.
        "moving" => {
            let (a, w) = connection_on(&proxy, None);
            let (b, _) = connection_on(&proxy, Some(1 - w));
            let half = start + RUN / 2;
            std::thread::sleep(start.saturating_duration_since(Instant::now()));
            let first = offer(a, 3000.0, start, half);
            let second = offer(b, 3000.0, start, until);
            add(&mut total, &first);
            add(&mut total, &second);
        }
        _ => unreachable!(),
    }
    let secs = &total[..RUN.as_secs() as usize];
    println!("{mode} {shape}: (admitted, limited) per second {secs:?}");
    secs.iter().map(|x| x.0).collect()
}

#[test]
fn sync_and_exact_hold_the_limit_within_5_percent_and_local_misses_under_skew() {
    let backend = TestBackend::hello();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    // The first second within ±5% of the limit plus the burst (50); every second after within
    // ±5% of the limit. 5% is one sync interval's worth of traffic (50 ms of 1,000/s), the
    // documented bound, so a tick delayed by a busy machine can push one second just past it
    // (seen once in CI: 942 in the second a "moving" load changed workers): a shape that misses
    // is run once more on a fresh proxy, and fails only when both runs miss.
    let (lo, hi) = (LIMIT * 95 / 100, LIMIT * 105 / 100);
    let first = (LIMIT + 50) * 95 / 100..=(LIMIT + 50) * 105 / 100;
    let holds =
        |secs: &[u32]| first.contains(&secs[0]) && secs[1..].iter().all(|s| (lo..=hi).contains(s));
    for mode in ["sync", "exact"] {
        for shape in ["spread", "single", "moving"] {
            let secs = run_shape(mode, shape, backend.port);
            report.push(format!("{mode} {shape}: {secs:?}"));
            if !holds(&secs) {
                let again = run_shape(mode, shape, backend.port);
                report.push(format!("{mode} {shape} (again): {again:?}"));
                if !holds(&again) {
                    failures.push(format!("{mode} {shape}: {secs:?}, then {again:?}"));
                }
            }
        }
    }
    // `local` divides the limit by the workers: one busy connection gets about half.
    let secs = run_shape("local", "single", backend.port);
    report.push(format!("local single: {secs:?}"));
    if secs[1..].iter().any(|&s| s > LIMIT * 60 / 100) {
        failures.push(format!("local single did not miss: {secs:?}"));
    }
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\nall: {}",
        failures.join("\n"),
        report.join("\n")
    );
}
