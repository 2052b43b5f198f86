//! The runtime end to end with the real binary on loopback: worker threads pinned to distinct
//! cores with connections spread over both, drivers (epoll, io_uring with flags), detection of a
//! foreign listener, graceful shutdown on SIGTERM, SIGINT and SIGQUIT, SIGHUP/SIGUSR1/SIGUSR2
//! survived.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Worker threads of `pid`: name -> (tid, Cpus_allowed_list, last CPU).
fn worker_threads(pid: i32) -> BTreeMap<String, (u32, String, u32)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .parse()
            .unwrap();
        let base = format!("/proc/{pid}/task/{tid}");
        let Ok(comm) = std::fs::read_to_string(format!("{base}/comm")) else {
            continue;
        };
        let comm = comm.trim().to_string();
        if !comm.starts_with("coregate-w") {
            continue;
        }
        let status = std::fs::read_to_string(format!("{base}/status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        let stat = std::fs::read_to_string(format!("{base}/stat")).unwrap();
        // Fields after the parenthesised comm; `processor` is field 39 overall.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let last_cpu: u32 = after.split(' ').nth(39 - 3).unwrap().parse().unwrap();
        out.insert(comm, (tid, allowed, last_cpu));
    }
    out
}

fn accepted_by(log: &str, worker: usize) -> usize {
    let needle = format!("coregate-w{worker} coregate::accept: accepted worker={worker} ");
    log.lines().filter(|l| l.contains(&needle)).count()
}

#[test]
fn two_pinned_workers_on_distinct_cores_share_the_connections() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("skipped: needs 2 cores, have {cores}");
        return;
    }
    let backend = Backend::start();
    let port = free_port();
    let mut proxy = Proxy::start(
        &config(port, backend.port, "workers = 2\npin = true", ""),
        port,
        "info,coregate::accept=trace",
    );

    let threads = worker_threads(proxy.pid());
    assert_eq!(
        threads.keys().collect::<Vec<_>>(),
        ["coregate-w0", "coregate-w1"],
        "{threads:?}"
    );
    let (w0, w1) = (&threads["coregate-w0"], &threads["coregate-w1"]);
    assert_eq!(w0.1, "0", "worker 0 must be pinned to core 0 alone");
    assert_eq!(w1.1, "1", "worker 1 must be pinned to core 1 alone");
    assert_ne!(w0.0, w1.0);

    for i in 0..60 {
        assert_eq!(get(proxy.addr, "x", &format!("/api/{i}")).status, 200);
    }
    // Both threads have run since, and only on their own core.
    let threads = worker_threads(proxy.pid());
    assert_eq!(threads["coregate-w0"].2, 0);
    assert_eq!(threads["coregate-w1"].2, 1);

    proxy.signal(libc::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
    let log = proxy.log_text();
    let (a, b) = (accepted_by(&log, 0), accepted_by(&log, 1));
    assert!(a + b >= 60, "{log}"); // plus the readiness probe of Proxy::start
    assert!(
        a > 0 && b > 0,
        "the kernel should spread 60 connections over both workers: {a}/{b}"
    );
    assert!(
        log.contains("worker 0: driver io_uring, pinned to core 0"),
        "{log}"
    );
    assert!(
        log.contains("worker 1: driver io_uring, pinned to core 1"),
        "{log}"
    );
}

#[test]
fn unpinned_workers_may_run_anywhere() {
    let backend = Backend::start();
    let port = free_port();
    let proxy = Proxy::start(
        &config(port, backend.port, "workers = 1\npin = false", ""),
        port,
        "info",
    );
    let threads = worker_threads(proxy.pid());
    let allowed = std::fs::read_to_string(format!("/proc/{}/status", std::process::id()))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|s| s.trim().to_string())
        })
        .unwrap();
    assert_eq!(threads["coregate-w0"].1, allowed);
    assert!(proxy
        .log_text()
        .contains("worker 0: driver io_uring, not pinned"));
}

#[test]
fn epoll_driver_serves() {
    let backend = Backend::start();
    let port = free_port();
    // The catch-all route answers host `h` only, so that another host is a routing miss.
    let text = config(port, backend.port, "workers = 1\ndriver = \"epoll\"", "").replace(
        "name = \"default\"\n",
        "name = \"default\"\nhosts = [\"h\"]\n",
    );
    assert!(text.contains("hosts = [\"h\"]"), "{text}");
    let proxy = Proxy::start(&text, port, "info");
    assert!(
        proxy.log_text().contains("worker 0: driver epoll"),
        "{}",
        proxy.log_text()
    );
    // Keep-alive: three requests on one connection, then a routing miss (404, the connection
    // kept), then one more on the same connection.
    let mut s = connect(proxy.addr);
    for path in ["/api/a", "/", "/api/b?x=1"] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("backend saw {path}\n").as_bytes());
        assert!(!r.head.contains("connection: close"));
    }
    write!(s, "GET /x HTTP/1.1\r\nHost: elsewhere\r\n\r\n").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!r.head.contains("connection: close"), "{r:?}");
    write!(s, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).body, b"backend saw /x\n");
    assert_eq!(get(proxy.addr, "h", "/api/x").status, 200);
}

#[test]
fn io_uring_driver_with_single_issuer_and_defer_taskrun() {
    let backend = Backend::start();
    let port = free_port();
    let proxy = Proxy::start(
        &config(
            port,
            backend.port,
            "workers = 1\ndriver = \"io_uring\"\nring_entries = 256\nring_flags = [\"single_issuer\", \"defer_taskrun\"]",
            "",
        ),
        port,
        "info",
    );
    let log = proxy.log_text();
    assert!(log.contains("worker 0: driver io_uring"), "{log}");
    assert!(
        log.contains("ring_entries 256, ring_flags [single_issuer, defer_taskrun]"),
        "{log}"
    );
    assert_eq!(get(proxy.addr, "h", "/api/").status, 200);
}

#[test]
fn foreign_listener_on_the_port_is_refused() {
    // A plain socket (another program) and a running coregate (SO_REUSEPORT) both block start.
    let backend = Backend::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("foreign");
    let cfg = dir.write("c.toml", &config(port, backend.port, "workers = 1", ""));
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "listener main: 127.0.0.1:{port} is already in use"
        )),
        "{stderr}"
    );
    drop(taken);

    let backend = Backend::start();
    let port = free_port();
    let first = Proxy::start(&config(port, backend.port, "workers = 2", ""), port, "info");
    let cfg = dir.write("d.toml", &config(port, backend.port, "workers = 2", ""));
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    assert_eq!(get(first.addr, "h", "/").status, 200);
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let backend = Backend::start();
    let port = free_port();
    let mut proxy = Proxy::start(
        &config(
            port,
            backend.port,
            "workers = 2\ndrain_timeout = \"20s\"",
            "client_header_timeout = \"30s\"",
        ),
        port,
        "info",
    );
    // In flight: half a request head.
    let mut slow = connect(proxy.addr);
    slow.write_all(b"GET /api/slow HTTP/1.1\r\nHost: h\r\n")
        .unwrap();
    // Idle keep-alive connection after one request.
    let mut idle = connect(proxy.addr);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle).status, 200);
    std::thread::sleep(Duration::from_millis(100));

    proxy.signal(libc::SIGTERM);
    // The idle connection is closed promptly; new connections are refused.
    assert!(
        closed_by_peer(&mut idle),
        "idle keep-alive connection must be closed on shutdown"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(proxy.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The in-flight request holds the process up...
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    // ...and is answered when it completes, with Connection: close.
    slow.write_all(b"\r\n").unwrap();
    let r = read_response(&mut slow);
    assert_eq!(r.status, 200);
    assert!(r.head.contains("connection: close"), "{}", r.head);
    assert!(closed_by_peer(&mut slow));

    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exit after drain");
    assert_eq!(status.code(), Some(0));
    let log = proxy.log_text();
    assert!(log.contains("SIGTERM: stopped accepting"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(!log.contains("drain timeout reached"), "{log}");
}

#[test]
fn drain_timeout_bounds_the_shutdown() {
    let backend = Backend::start();
    let port = free_port();
    let mut proxy = Proxy::start(
        &config(
            port,
            backend.port,
            "workers = 1\ndrain_timeout = \"500ms\"",
            "client_header_timeout = \"60s\"",
        ),
        port,
        "info",
    );
    let mut stuck = connect(proxy.addr);
    stuck.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    proxy.signal(libc::SIGINT);
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exit after drain timeout");
    assert_eq!(status.code(), Some(0));
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "did not wait for the drain"
    );
    assert!(closed_by_peer(&mut stuck));
    let log = proxy.log_text();
    assert!(log.contains("SIGINT: stopped accepting"), "{log}");
    assert!(
        log.contains("worker 0: drain timeout reached; closing 1 connection(s)"),
        "{log}"
    );
}

#[test]
fn oversized_head_gets_431_and_slowloris_is_closed() {
    let backend = Backend::start();
    let port = free_port();
    let proxy = Proxy::start(
        &config(
            port,
            backend.port,
            "workers = 1",
            "max_head_bytes = 1024\nclient_header_timeout = \"300ms\"",
        ),
        port,
        "info",
    );
    let mut big = connect(proxy.addr);
    let _ = big.write_all(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000)).as_bytes());
    assert_eq!(read_response(&mut big).status, 431);

    let mut slowloris = connect(proxy.addr);
    slowloris.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let t0 = Instant::now();
    assert!(closed_by_peer(&mut slowloris));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn each_listener_serves_only_its_routes() {
    let backend = Backend::start();
    let (public, internal) = (free_port(), free_port());
    let text = format!(
        r#"[runtime]
workers = 2

[[listeners]]
name = "public"
address = "127.0.0.1:{public}"

[[listeners]]
name = "internal"
address = "127.0.0.1:{internal}"
routes = ["health"]

[[upstreams]]
name = "app"
backends = [ {{ address = "127.0.0.1:{}" }} ]

[[routes]]
name = "site"
hosts = ["www.example.com", "*.example.org"]
upstream = "app"

[[routes]]
name = "health"
path_exact = "/healthz"
upstream = "app"
"#,
        backend.port
    );
    let proxy = Proxy::start(&text, public, "info");
    let internal: std::net::SocketAddr = format!("127.0.0.1:{internal}").parse().unwrap();
    assert_eq!(get(proxy.addr, "WWW.example.com:8080", "/x").status, 200);
    assert_eq!(get(proxy.addr, "a.b.example.org", "/x").status, 200);
    assert_eq!(get(proxy.addr, "example.org", "/x").status, 404);
    assert_eq!(get(proxy.addr, "other.test", "/healthz").status, 200);
    assert_eq!(get(internal, "www.example.com", "/x").status, 404);
    assert_eq!(get(internal, "anything", "/healthz").status, 200);
    assert_eq!(get(internal, "anything", "/healthz/more").status, 404);
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_file_descriptors_backs_off_instead_of_spinning() {
    use std::os::unix::process::CommandExt;

    let backend = Backend::start();
    let port = free_port();
    let dir = TempDir::new("emfile");
    let cfg = dir.write("c.toml", &config(port, backend.port, "workers = 1", ""));
    let log = dir.0.join("log");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pid = child.0.id() as i32;
    let started = Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("started:") {
        assert!(started.elapsed() < Duration::from_secs(10), "did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // More connections than descriptors: the kernel completes them into the backlog, coregate
    // accepts until EMFILE.
    let clients: Vec<_> = (0..80).map(|_| connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("accept failed") && text.contains("backing off"),
        "{text}"
    );
    eprintln!("CPU while out of descriptors: {used} ticks in one second");
    assert!(
        used < 20,
        "accept loop spun: {used} ticks of CPU in one second"
    );
    // Once descriptors are free again it serves.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect(addr);
        let _ = s.write_all(b"GET /api/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let mut buf = [0u8; 12];
        if std::io::Read::read_exact(&mut s, &mut buf).is_ok() && &buf == b"HTTP/1.1 200" {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn auto_driver_falls_back_to_epoll_and_io_uring_driver_refuses() {
    // monoio's own switch makes io_uring look unavailable.
    let env = [("MONOIO_FORCE_LEGACY_DRIVER", "1")];
    let backend = Backend::start();
    let port = free_port();
    let proxy = Proxy::start_with_env(
        &config(port, backend.port, "workers = 1\ndriver = \"auto\"", ""),
        port,
        "info",
        &env,
    );
    let log = proxy.log_text();
    assert!(
        log.contains("io_uring is not available; falling back to epoll"),
        "{log}"
    );
    assert!(log.contains("worker 0: driver epoll"), "{log}");
    assert_eq!(get(proxy.addr, "h", "/").status, 200);
    drop(proxy);

    let port = free_port();
    let dir = TempDir::new("uring-only");
    let cfg = dir.write(
        "c.toml",
        &config(port, backend.port, "workers = 1\ndriver = \"io_uring\"", ""),
    );
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .envs(env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("worker 0: driver = \"io_uring\" but io_uring is not available"),
        "{stderr}"
    );
}

#[test]
fn a_second_signal_exits_at_once_with_status_1() {
    let backend = Backend::start();
    let port = free_port();
    let mut proxy = Proxy::start(
        &config(
            port,
            backend.port,
            "workers = 1\ndrain_timeout = \"60s\"",
            "client_header_timeout = \"60s\"",
        ),
        port,
        "info",
    );
    let mut stuck = connect(proxy.addr);
    // One whole exchange first, so the connection is surely accepted before the signal.
    stuck
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stuck).status, 200);
    stuck.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    proxy.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "must still be draining"
    );
    proxy.signal(libc::SIGINT);
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exit after the second signal");
    assert_eq!(status.code(), Some(1));
    assert!(
        proxy
            .log_text()
            .contains("SIGINT again: exiting without waiting"),
        "{}",
        proxy.log_text()
    );
}

/// SIGHUP (reload), SIGUSR1 (reopen the access logs) and SIGUSR2 (logged, ignored) mid-download: the download completes
/// intact and the process keeps serving. Their default action would kill the process.
#[test]
fn reload_and_log_signals_do_not_stop_a_download() {
    const SIZE: usize = 24 * 1024 * 1024;
    let backend = TestBackend::start(|_| Reply::ok(pattern(SIZE, 3)));
    let proxy = proxy_to("io_uring", backend.port, "", "");
    let mut client = connect(proxy.addr);
    client
        .write_all(get_req("a", "/big", "").as_bytes())
        .unwrap();
    let mut got = Vec::with_capacity(SIZE + 4096);
    let mut chunk = vec![0u8; 256 * 1024];
    let signals = [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP];
    let mut sent = 0;
    let mut head_len = None;
    while head_len.is_none_or(|h| got.len() < h + SIZE) {
        let n = std::io::Read::read(&mut client, &mut chunk)
            .unwrap_or_else(|e| panic!("{e} at {} bytes:\n{}", got.len(), proxy.log_text()));
        assert!(n > 0, "download cut at {} bytes", got.len());
        got.extend_from_slice(&chunk[..n]);
        if head_len.is_none() {
            head_len = got.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        }
        // Read slowly at first so the signals land mid-download.
        if sent < signals.len() && got.len() > (sent + 1) * 1024 * 1024 {
            proxy.signal(signals[sent]);
            sent += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let head_len = head_len.unwrap();
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    let body = &got[head_len..];
    assert_eq!(sent, signals.len());
    assert!(body == pattern(SIZE, 3), "download corrupted");
    assert!(proxy_alive(&proxy));
    assert_eq!(get(proxy.addr, "a", "/after").status, 200);
    let log = proxy.log_text();
    // SIGHUP reloads the (unchanged) config: twice, with the download going on.
    assert_eq!(log.matches("config reloaded").count(), 2, "{log}");
    assert!(log.contains("SIGUSR1: reopening the access logs"), "{log}");
    assert!(log.contains("SIGUSR2 received: ignored"), "{log}");
}

fn proxy_alive(proxy: &Proxy) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that our child exists.
    unsafe { libc::kill(proxy.pid(), 0) == 0 }
}

/// SIGQUIT drains like SIGTERM: idle connections close, the process exits 0.
#[test]
fn sigquit_drains_like_sigterm() {
    let backend = TestBackend::hello();
    let mut proxy = proxy_to("epoll", backend.port, "", "");
    let mut idle = Client::connect(proxy.addr);
    idle.send(get_req("a", "/", ""));
    assert_eq!(idle.response().status, 200);
    proxy.signal(libc::SIGQUIT);
    assert!(idle.closed(), "idle connection left open by SIGQUIT");
    let status = proxy.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(status.code(), Some(0));
    let log = proxy.log_text();
    assert!(log.contains("SIGQUIT: stopped accepting"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}
