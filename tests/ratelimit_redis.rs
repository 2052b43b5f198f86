//! A limit shared by two coregate instances through a real `redis-server` (started here; the CI
//! installs it): together they admit within ±10% of the limit; with Redis killed mid-run the
//! traffic goes on under the `local` fallback (still limited) and no request waits on Redis;
//! once Redis is back the limit is shared again.

mod common;

use common::load::{add, offer_timed, Seconds};
use common::*;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Redis {
    child: Child,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is required for this test (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

const LIMIT: u32 = 1000;

fn instance(redis: u16, backend: u16) -> Proxy {
    let port = free_port();
    let text = format!(
        "[runtime]\nworkers = 1\npin = false\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [redis]\nurl = \"redis://127.0.0.1:{redis}/0\"\ntimeout = \"200ms\"\n\n\
         [[rate_limits]]\nname = \"shared\"\nkey = \"client_ip\"\nrate = {LIMIT}\nperiod = \"1s\"\n\
         mode = \"redis\"\non_redis_error = \"local\"\n\n{}\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\nrate_limits = [\"shared\"]\n",
        upstream_toml("app", &[backend], "")
    );
    Proxy::start(&text, port, "info")
}

/// Both instances offered 1,500 req/s each for `secs` seconds from `start`.
fn load(a: &Proxy, b: &Proxy, start: Instant, secs: u64) -> (Seconds, Duration) {
    let until = start + Duration::from_secs(secs);
    let threads: Vec<_> = [a.addr, b.addr]
        .into_iter()
        .map(|addr| {
            let s = connect(addr);
            s.set_nodelay(true).unwrap();
            std::thread::spawn(move || offer_timed(s, 1500.0, start, until))
        })
        .collect();
    let mut total: Seconds = vec![(0, 0); 16];
    let mut slowest = Duration::ZERO;
    for t in threads {
        let (s, w) = t.join().unwrap();
        add(&mut total, &s);
        slowest = slowest.max(w);
    }
    total.truncate(secs as usize);
    (total, slowest)
}

#[test]
fn two_instances_share_one_limit_through_redis_and_survive_its_outage() {
    let backend = TestBackend::hello();
    let rport = free_port();
    let mut redis = Redis::start(rport);
    let a = instance(rport, backend.port);
    let b = instance(rport, backend.port);
    let within = |secs: &Seconds, from: usize, pct: u32| {
        secs[from..]
            .iter()
            .all(|&(ok, _)| (LIMIT * (100 - pct) / 100..=LIMIT * (100 + pct) / 100).contains(&ok))
    };

    // Shared: together within ±10% of the limit (the first second may carry the start).
    let (shared, slow) = load(&a, &b, Instant::now() + Duration::from_millis(200), 4);
    println!("shared: {shared:?} slowest batch {slow:?}");
    assert!(within(&shared, 1, 10), "shared through redis: {shared:?}");

    // Redis killed: both go on with their last share; nothing waits for Redis.
    redis.kill();
    let (alone, slow) = load(&a, &b, Instant::now() + Duration::from_millis(200), 3);
    println!("redis down: {alone:?} slowest batch {slow:?}");
    assert!(
        alone.iter().all(|&(ok, _)| ok > 0),
        "traffic stopped: {alone:?}"
    );
    // The fallback enforces each instance's last known share of the limit on its own: it
    // stays limited (never more than each instance admitting the whole limit), not exact.
    assert!(
        alone[1..]
            .iter()
            .all(|&(ok, _)| (LIMIT / 4..=LIMIT * 2 + 50).contains(&ok)),
        "local fallback: {alone:?}\n{}",
        a.log_text()
    );
    assert!(
        slow < Duration::from_millis(300),
        "a request waited on redis: {slow:?}"
    );
    for p in [&a, &b] {
        assert!(
            p.log_text().contains("redis limits use their fallback"),
            "{}",
            p.log_text()
        );
    }

    // Redis back: shared again.
    let _redis = Redis::start(rport);
    std::thread::sleep(Duration::from_millis(1500));
    let (again, _) = load(&a, &b, Instant::now() + Duration::from_millis(200), 3);
    println!("redis back: {again:?}");
    assert!(within(&again, 1, 10), "shared again: {again:?}");
    for p in [&a, &b] {
        assert!(
            p.log_text().contains("redis limits shared again"),
            "{}",
            p.log_text()
        );
    }
}
