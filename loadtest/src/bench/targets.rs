//! The processes a benchmark drives: the backend and each target (coregate, nginx, HAProxy, the
//! relay floor, or direct), each started with an equivalent configuration written to a temp dir
//! and pinned to its CPU set before exec; plus CPU time and RSS of a process tree from /proc.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util;

/// A running child process, killed (by its own pid) when dropped.
pub struct Running {
    pub child: Option<Child>,
    /// Where clients connect.
    pub addr: SocketAddr,
}

impl Running {
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(st))) => Some(st.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // SIGTERM first so nginx/HAProxy masters take their workers down with them.
            // SAFETY: kill(2) on the pid of a child we started and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Pins the child to `cpus` between fork and exec.
fn pinned(cmd: &mut Command, cpus: Vec<usize>) {
    // SAFETY: the closure only calls sched_setaffinity (async-signal-safe) on the child itself.
    unsafe {
        cmd.pre_exec(move || {
            let _ = util::set_affinity(0, &cpus);
            Ok(())
        });
    }
}

/// A free loopback port (bound then released; good enough for a benchmark run).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(format!("exited with {st} before listening ({tail})"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    Err(format!("not listening on {addr} after 10s"))
}

/// Starts `loadtest backend|relay ...` (this executable) and reads the address it bound.
pub fn spawn_self(name: &str, args: &[String], cpus: &[usize]) -> Result<Running, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    pinned(&mut cmd, cpus.to_vec());
    let mut child = cmd.spawn().map_err(|e| format!("{name}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name} did not start"));
        }
    };
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => Ok(Running {
            child: Some(child),
            addr,
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{name} failed to start: {line:?}"))
        }
    }
}

/// Finds an executable on PATH (or in /usr/sbin, where Debian puts nginx and haproxy).
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file());
    found
}

pub fn coregate_config(listen: SocketAddr, backend: SocketAddr) -> String {
    format!(
        r#"# Written by `loadtest bench`: one worker (pinned from outside by the bench), one listener,
# one upstream holding the benchmark backend, one catch-all route.
[runtime]
workers = 1
pin = false

[[listeners]]
name = "bench"
address = "{listen}"

[[upstreams]]
name = "backend"
balancer = "round_robin"
backends = [ {{ address = "{backend}", weight = 1 }} ]
[upstreams.pool]
max_idle = 1024

[[routes]]
name = "all"
path_prefix = "/"
upstream = "backend"
"#
    )
}

pub fn nginx_config(dir: &Path, listen: SocketAddr, backend: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"# Written by `loadtest bench`: 1 worker, upstream keepalive, no access log.
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream backend {{
        server {backend};
        keepalive 1024;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"#
    )
}

pub fn haproxy_config(listen: SocketAddr, backend: SocketAddr) -> String {
    format!(
        r#"# Written by `loadtest bench`: one thread, server connections reused always.
global
    nbthread 1
    maxconn 8000

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always

frontend bench
    bind {listen}
    default_backend backend

backend backend
    http-reuse always
    server b1 {backend}
"#
    )
}

/// Starts an external proxy with the given command, pinned, logging to `dir/NAME.log`.
pub fn spawn_external(
    name: &str,
    prog: &Path,
    args: &[String],
    listen: SocketAddr,
    dir: &Path,
    cpus: &[usize],
) -> Result<Running, String> {
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| format!("{name} log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    pinned(&mut cmd, cpus.to_vec());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{name}: cannot start {}: {e}", prog.display()))?;
    if let Err(e) = wait_port(&mut child, listen, &log_path) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{name}: {e}"));
    }
    // A master process may listen before its workers exist: let them start.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Running {
        child: Some(child),
        addr: listen,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of one process (all its threads), in seconds, from /proc/PID/stat.
fn cpu_one(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come state (field 3) ...; utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU seconds used so far by a process tree.
pub fn cpu_tree(pid: i32) -> f64 {
    process_tree(pid).into_iter().filter_map(cpu_one).sum()
}

pub use crate::idle::{process_tree, rss_tree};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_and_rss_are_visible() {
        let me = std::process::id() as i32;
        let start = cpu_tree(me);
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(120) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(cpu_tree(me) > start);
        assert!(rss_tree(me).is_some_and(|r| r > 0));
        assert_eq!(process_tree(me)[0], me);
    }
}
