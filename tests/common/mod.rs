//! Helpers for end-to-end tests: temporary config files, the real `coregate` binary as a child
//! process with its log captured, and a tiny blocking HTTP/1.1 client. Loopback only; every wait
//! is bounded.

#![allow(dead_code, unused_imports, unused_macros)]

pub mod backend;
pub mod client;
pub mod load;
pub mod process;
pub mod tls;

pub use backend::{pattern, Body, Ending, Recorded, Reply, TestBackend};
pub use client::{chunk, get_req, Client, Resp};
pub use process::BackendProcess;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_coregate");

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "coregate-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on right now, and never handed out before in this test
/// process (tests run in parallel: two of them must not start a proxy on the same port).
/// Every value of the field `name` (case-insensitive) in a list of (name, value) pairs.
pub fn field_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh loopback port after 100 tries");
}

/// A config with one listener on `port`, one upstream (the backend on `backend`) and two routes
/// (`/api/` and a catch-all), plus `runtime` lines for [runtime] and `limits` lines for [limits].
pub fn config(port: u16, backend: u16, runtime: &str, limits: &str) -> String {
    format!(
        r#"[runtime]
{runtime}

[limits]
{limits}

[[listeners]]
name = "main"
address = "127.0.0.1:{port}"

[[upstreams]]
name = "app"
backends = [ {{ address = "127.0.0.1:{backend}" }} ]

[[routes]]
name = "api"
path_prefix = "/api/"
upstream = "app"

[[routes]]
name = "default"
upstream = "app"
"#
    )
}

/// A minimal HTTP/1.1 backend on loopback: answers every request head with `200` and the body
/// `backend saw PATH\n`, keep-alive, no request bodies. Stops (and joins its threads) on drop.
pub struct Backend {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    pub fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let stop3 = stop2.clone();
                        conns.push(std::thread::spawn(move || backend_conn(s, stop3)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Backend {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

fn backend_conn(mut s: TcpStream, stop: Arc<AtomicBool>) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let path = head.split(' ').nth(1).unwrap_or("?").to_string();
            let body = format!("backend saw {path}\n");
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(reply.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running `coregate run`, killed on drop if still alive.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Proxy {
    /// Starts `coregate run` on `config_text` and waits (up to 10 s) until it accepts on `port`.
    pub fn start(config_text: &str, port: u16, rust_log: &str) -> Proxy {
        Self::start_with_env(config_text, port, rust_log, &[])
    }

    /// [`Proxy::start`] with extra environment variables.
    pub fn start_with_env(
        config_text: &str,
        port: u16,
        rust_log: &str,
        env: &[(&str, &str)],
    ) -> Proxy {
        Self::launch(config_text, port, rust_log, env, None)
    }

    /// [`Proxy::start`] in a mount namespace of its own where `hosts` is `/etc/hosts` (to make
    /// host names resolve where a test says; needs root and `unshare`). Rewriting `hosts` in
    /// place changes what coregate resolves next.
    pub fn start_with_hosts(config_text: &str, port: u16, rust_log: &str, hosts: &Path) -> Proxy {
        Self::launch(config_text, port, rust_log, &[], Some(hosts))
    }

    fn launch(
        config_text: &str,
        port: u16,
        rust_log: &str,
        env: &[(&str, &str)],
        hosts: Option<&Path>,
    ) -> Proxy {
        let dir = TempDir::new("run");
        let cfg = dir.write("coregate.toml", config_text);
        let log = dir.0.join("coregate.log");
        let mut cmd = match hosts {
            None => {
                let mut c = Command::new(BIN);
                c.args(["run", "--config"]).arg(&cfg);
                c
            }
            Some(h) => {
                let mut c = Command::new("unshare");
                c.args([
                    "--mount",
                    "sh",
                    "-c",
                    "mount --bind \"$1\" /etc/hosts && exec \"$2\" run --config \"$3\"",
                    "sh",
                ])
                .arg(h)
                .arg(BIN)
                .arg(&cfg);
                c
            }
        };
        let child = cmd
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut p = Proxy {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("coregate exited early ({status}):\n{}", p.log_text());
            }
            if p.log_text().contains("started:") && TcpStream::connect(addr).is_ok() {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "coregate did not start:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The config file the proxy was started with (rewrite it, then reload).
    pub fn config_path(&self) -> PathBuf {
        self._dir.0.join("coregate.toml")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Connects with read/write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A parsed response: status, lowercased header lines, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// The values of the field `name` (any case), in order, trimmed.
    pub fn values(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .map(str::trim)
            .collect()
    }
}

/// Sends `raw` (one whole request) on a new connection and reads the answer.
pub fn send(addr: SocketAddr, raw: &str) -> Response {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s)
}

/// Reads one response with a Content-Length body from `s`.
pub fn read_response(s: &mut TcpStream) -> Response {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).expect("read body");
        assert!(n > 0, "connection closed inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    Response {
        status,
        head,
        body: buf[head_end..head_end + len].to_vec(),
    }
}

/// One GET on a new connection.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut s)
}

/// True when the peer closed `s` (EOF) within its read timeout.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// Runs `coregate check --config path`.
pub fn check(path: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

/// One upstream `name` over the loopback backends `ports` with the upstream-level lines
/// `lines` (`balancer = ...`, ...); subtables (`[upstreams.health]`, ...) may follow it.
pub fn upstream_with(name: &str, ports: &[u16], lines: &str) -> String {
    let backends: Vec<String> = ports
        .iter()
        .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
        .collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\nbackends = [ {} ]\n{lines}\n\n",
        backends.join(", ")
    )
}

/// One upstream `name` over the loopback backends `ports`, with extra `[upstreams.timeouts]`
/// lines `timeouts` (empty for the defaults).
pub fn upstream_toml(name: &str, ports: &[u16], timeouts: &str) -> String {
    let backends: Vec<String> = ports
        .iter()
        .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
        .collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\nbackends = [ {} ]\n[upstreams.timeouts]\n{timeouts}\n\n",
        backends.join(", ")
    )
}

/// A running proxy with one unpinned worker on `driver` ("io_uring" or "epoll"), the `[limits]`
/// lines `limits`, and `rest` (upstream and route tables) as its config.
pub fn start_proxy(driver: &str, limits: &str, rest: &str) -> Proxy {
    let port = free_port();
    let text = format!(
        "[runtime]\nworkers = 1\npin = false\ndriver = \"{driver}\"\ndrain_timeout = \"1s\"\n\n\
         [limits]\n{limits}\n\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n{rest}"
    );
    let p = Proxy::start(&text, port, "info");
    // The startup summary names each worker's driver (logged just after "started:").
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p.log_text().contains("worker 0: driver") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = p.log_text();
    assert!(
        log.contains(&format!("worker 0: driver {driver},")),
        "coregate is not running the {driver} driver:\n{log}"
    );
    p
}

/// A proxy on `driver` whose every path goes to the single backend `port`; `timeouts` as in
/// [`upstream_toml`].
pub fn proxy_to(driver: &str, port: u16, limits: &str, timeouts: &str) -> Proxy {
    let rest = upstream_toml("app", &[port], timeouts)
        + "[[routes]]\nname = \"all\"\nupstream = \"app\"\n";
    start_proxy(driver, limits, &rest)
}

/// Defines, for each named `fn NAME(driver: &str)`, a module `NAME` with one test per driver
/// (`NAME::io_uring`, `NAME::epoll`): the same test body runs against both.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn io_uring() {
                    super::$name("io_uring")
                }
                #[test]
                fn epoll() {
                    super::$name("epoll")
                }
            }
        )*
    };
}

/// The admin page `/metrics` at `admin`, as text.
pub fn scrape(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `series` (name and labels exactly as exposed) in `text`; 0 when
/// absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
