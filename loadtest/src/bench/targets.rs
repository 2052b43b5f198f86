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

impl Running {
    /// Stops the process: SIGTERM, up to `limit` for it to exit, then SIGKILL. How it ended
    /// ("exit status: 0" after a graceful stop), or None when it was not running.
    pub fn stop(&mut self, limit: Duration) -> Option<String> {
        let mut c = self.child.take()?;
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st.to_string());
        }
        // SIGTERM first so nginx/HAProxy masters take their workers down with them.
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match c.try_wait() {
                Ok(Some(st)) => return Some(st.to_string()),
                Err(e) => return Some(e.to_string()),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = c.kill();
        let st = c.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
        Some(format!(
            "{st} (killed: still running {limit:?} after SIGTERM)"
        ))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
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

/// How coregate is set up in a benchmark: `loadtest bench --coregate-variants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `balancer = "round_robin"`, no health checks: the configuration bench always measured.
    Rr,
    /// `balancer = "p2c"` (the default balancer), no health checks.
    P2c,
    /// p2c plus active HTTP health checks every second.
    Health,
    /// rr plus an access log on the listener, format "combined".
    LogCombined,
    /// rr plus an access log on the listener, format "json".
    LogJson,
    /// rr plus a `[[rate_limits]]` table (sync mode, by client_ip) that never trips, named by
    /// the route: the cost of a limit's bookkeeping on every request.
    Limit,
    /// rr plus JWT authentication (HS256) on the route; the generator sends a valid token.
    Jwt,
    /// rr plus five header transforms on the route (four on the request, one on the response).
    Transforms,
    /// rr with 1,000 more routes (`/svcN/`, half with JWT auth, half with transforms) before the
    /// plain catch-all route the requests take.
    Routes1000,
}

impl Variant {
    pub const ALL: [Variant; 9] = [
        Variant::Rr,
        Variant::P2c,
        Variant::Health,
        Variant::LogCombined,
        Variant::LogJson,
        Variant::Limit,
        Variant::Jwt,
        Variant::Transforms,
        Variant::Routes1000,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Rr => "rr",
            Variant::P2c => "p2c",
            Variant::Health => "health",
            Variant::LogCombined => "log-combined",
            Variant::LogJson => "log-json",
            Variant::Limit => "limit",
            Variant::Jwt => "jwt",
            Variant::Transforms => "transforms",
            Variant::Routes1000 => "routes1000",
        }
    }

    pub fn parse(s: &str) -> Result<Variant, String> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown coregate variant {s:?} (rr, p2c, health, log-combined, log-json, \
                     limit, jwt, transforms, routes1000)"
                )
            })
    }

    /// What the variant sets, in one line for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Variant::Rr => "balancer = \"round_robin\"",
            Variant::P2c => "balancer = \"p2c\"",
            Variant::Health => {
                "balancer = \"p2c\", [upstreams.health] path = \"/__health\", interval = \"1s\""
            }
            Variant::LogCombined => {
                "balancer = \"round_robin\", listener access_log = { format = \"combined\" }"
            }
            Variant::LogJson => {
                "balancer = \"round_robin\", listener access_log = { format = \"json\" }"
            }
            Variant::Limit => {
                "balancer = \"round_robin\", [[rate_limits]] name = \"never\", key = \"client_ip\", \
                 rate = 100000000, period = \"1s\", mode = \"sync\"; route rate_limits = [\"never\"]"
            }
            Variant::Jwt => {
                "balancer = \"round_robin\", [[auth]] kind = \"jwt\" (HS256 secret, issuer, \
                 forward_claims sub), route auth; requests carry a valid token"
            }
            Variant::Transforms => {
                "balancer = \"round_robin\", route request_headers set 2 / add 1 / remove 1, \
                 response_headers set 1"
            }
            Variant::Routes1000 => {
                "balancer = \"round_robin\", 1,000 more routes /svcN/ (half JWT, half transforms) \
                 before the plain catch-all the requests take"
            }
        }
    }

    /// The balancer line and the extra tables of the upstream.
    fn upstream(self) -> (&'static str, &'static str) {
        match self {
            Variant::Rr
            | Variant::LogCombined
            | Variant::LogJson
            | Variant::Limit
            | Variant::Jwt
            | Variant::Transforms
            | Variant::Routes1000 => ("round_robin", ""),
            Variant::P2c => ("p2c", ""),
            Variant::Health => (
                "p2c",
                "[upstreams.health]\npath = \"/__health\"\ninterval = \"1s\"\n",
            ),
        }
    }

    /// The top-level tables (`[[rate_limits]]`, `[[auth]]`, more `[[routes]]`) and the
    /// catch-all route's extra lines of the variants that add policy.
    pub fn policy(self) -> (String, &'static str) {
        match self {
            Variant::Limit => (NEVER_LIMIT.into(), "rate_limits = [\"never\"]\n"),
            Variant::Jwt => (JWT_AUTH.into(), "auth = \"bench\"\n"),
            Variant::Transforms => (String::new(), TRANSFORMS),
            Variant::Routes1000 => {
                let mut t = String::from(JWT_AUTH);
                for i in 0..1000 {
                    let policy = if i % 2 == 0 {
                        "auth = \"bench\"\n"
                    } else {
                        TRANSFORMS
                    };
                    t += &format!(
                        "[[routes]]\nname = \"svc{i}\"\npath_prefix = \"/svc{i}/\"\nupstream = \"backend\"\n{policy}\n"
                    );
                }
                (t, "")
            }
            _ => (String::new(), ""),
        }
    }

    /// Fields every request of the variant carries (a token for [`Variant::Jwt`]).
    pub fn request_headers(self) -> Vec<String> {
        match self {
            Variant::Jwt => vec![format!("Authorization: Bearer {BENCH_JWT}")],
            _ => Vec::new(),
        }
    }

    /// The `format` of the listener's access log, for the variants that have one.
    pub fn access_log_format(self) -> Option<&'static str> {
        match self {
            Variant::LogCombined => Some("combined"),
            Variant::LogJson => Some("json"),
            _ => None,
        }
    }

    /// Where the variant's access log goes when its config is written in `dir`:
    /// `dir/<variant>.access.log`.
    pub fn access_log_path(self, dir: &Path) -> Option<PathBuf> {
        self.access_log_format()
            .map(|_| dir.join(format!("{}.access.log", self.name())))
    }

    /// The variant of a target named "coregate" (rr) or "coregate-NAME".
    pub fn of_target(name: &str) -> Option<Variant> {
        match name {
            "coregate" => Some(Variant::Rr),
            _ => Variant::parse(name.strip_prefix("coregate-")?).ok(),
        }
    }
}

/// A TOML basic string: quoted, with `"`, `\\` and control characters escaped.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `backends = [ ... ]` for coregate.
fn coregate_backends(backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\", weight = 1 }}"))
        .collect();
    format!("[ {} ]", list.join(", "))
}

/// coregate with one worker (pinned from outside), one listener, one upstream holding the
/// backends, one catch-all route. `balancer`: None leaves the key out (coregate's default);
/// `extra`: more tables of the upstream (`[upstreams.health]`, ...), appended after its pool.
pub fn coregate_toml(
    writer: &str,
    listen: SocketAddr,
    backends: &[SocketAddr],
    balancer: Option<&str>,
    extra: &str,
) -> String {
    CoregateToml {
        balancer,
        extra,
        ..CoregateToml::new(writer, listen, backends)
    }
    .render()
}

/// A coregate configuration: `workers` workers (not pinned by coregate: pinned from outside),
/// one listener, one upstream holding the backends, one catch-all route. Every text field holds
/// whole lines (each ending in a newline) or nothing.
#[derive(Debug, Clone)]
pub struct CoregateToml<'a> {
    pub writer: &'a str,
    pub workers: usize,
    pub listen: SocketAddr,
    /// More keys of the listener's table.
    pub listener: &'a str,
    /// Top-level tables between the listener and the upstream (`[[rate_limits]]`), each ending
    /// in an empty line.
    pub tables: &'a str,
    pub backends: &'a [SocketAddr],
    /// None leaves the key out (coregate's default).
    pub balancer: Option<&'a str>,
    /// More tables of the upstream (`[upstreams.health]`, ...), after its pool.
    pub extra: &'a str,
    /// More keys of the route's table (`rate_limits = [...]`).
    pub route: &'a str,
}

impl<'a> CoregateToml<'a> {
    pub fn new(writer: &'a str, listen: SocketAddr, backends: &'a [SocketAddr]) -> Self {
        CoregateToml {
            writer,
            workers: 1,
            listen,
            listener: "",
            tables: "",
            backends,
            balancer: None,
            extra: "",
            route: "",
        }
    }

    pub fn render(&self) -> String {
        let CoregateToml {
            writer,
            workers,
            listen,
            listener,
            tables,
            backends,
            balancer,
            extra,
            route,
        } = *self;
        let balancer = balancer.map_or(String::new(), |b| format!("balancer = \"{b}\"\n"));
        let list = coregate_backends(backends);
        let who = if workers == 1 {
            "one worker".to_string()
        } else {
            format!("{workers} workers")
        };
        format!(
            r#"# Written by `{writer}`: {who} (pinned from outside), one listener,
# one upstream holding the backends, one catch-all route.
[runtime]
workers = {workers}
pin = false

[[listeners]]
name = "bench"
address = "{listen}"
{listener}
{tables}[[upstreams]]
name = "backend"
{balancer}backends = {list}
[upstreams.pool]
max_idle = 1024
{extra}
[[routes]]
name = "all"
path_prefix = "/"
upstream = "backend"
{route}"#
        )
    }
}

/// The auth of [`Variant::Jwt`]: HS256 with a fixed secret; [`BENCH_JWT`] passes it.
pub const JWT_AUTH: &str = "[[auth]]
name = \"bench\"
kind = \"jwt\"
secret = \"loadtest-bench-secret-0123456789abcdef\"
issuer = \"loadtest\"
forward_claims = { sub = \"X-User\" }

";

/// A token [`JWT_AUTH`] admits: `{"sub":"bench","iss":"loadtest","exp":4102444800}` (2100-01-01)
/// signed HS256 with its secret (made with PyJWT).
pub const BENCH_JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCIsImlzcyI6ImxvYWR0ZXN0IiwiZXhwIjo0MTAyNDQ0ODAwfQ.Q-s9782I42lwpAqc3FKiVRoIBT6NDdiY40NsZnIwmqI";

/// The five header transforms of [`Variant::Transforms`] (route subtables).
const TRANSFORMS: &str = "[routes.request_headers]
set = { \"X-Client\" = \"$client_ip\", \"X-Env\" = \"bench\" }
add = { \"X-Via\" = \"coregate $method\" }
remove = [\"X-Debug\"]
[routes.response_headers]
set = { \"Server\" = \"coregate\" }
";

/// The limit of [`Variant::Limit`]: by client address, sync mode (coregate's default), a rate
/// no benchmark reaches, so it never trips and only its bookkeeping is measured.
pub const NEVER_LIMIT: &str = "[[rate_limits]]
name = \"never\"
key = \"client_ip\"
rate = 100000000
period = \"1s\"
mode = \"sync\"

";

/// The certificate every target serves in the TLS scenarios (the repository's example ECDSA
/// P-256 certificate for localhost and 127.0.0.1), copied into a scenario's folder: PEM
/// certificate, key, and both in one file (HAProxy's `crt`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub combined: PathBuf,
}

impl TlsFiles {
    pub fn copy_into(root: &Path, dir: &Path) -> Result<TlsFiles, String> {
        let read = |p: PathBuf| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()));
        let cert = read(root.join("config/certs/edge-ecdsa.pem"))?;
        let key = read(root.join("config/certs/edge-ecdsa.key"))?;
        let files = TlsFiles {
            cert: dir.join("tls-cert.pem"),
            key: dir.join("tls-key.pem"),
            combined: dir.join("tls-combined.pem"),
        };
        let write = |p: &Path, data: &[u8]| {
            std::fs::write(p, data).map_err(|e| format!("{}: {e}", p.display()))
        };
        write(&files.cert, &cert)?;
        write(&files.key, &key)?;
        write(&files.combined, &[cert, key].concat())?;
        Ok(files)
    }

    /// The `[listeners.tls]` table of coregate's listener.
    fn coregate(&self) -> String {
        format!(
            "[listeners.tls]\ncertificates = [ {{ cert = {}, key = {} }} ]\n",
            toml_string(&self.cert.display().to_string()),
            toml_string(&self.key.display().to_string())
        )
    }
}

/// The config of `variant`, written in `dir` (where the access log of a log variant goes:
/// [`Variant::access_log_path`], which must be absolute and UTF-8).
pub fn coregate_config(
    listen: SocketAddr,
    backends: &[SocketAddr],
    variant: Variant,
    dir: &Path,
    tls: Option<&TlsFiles>,
) -> Result<String, String> {
    let (balancer, extra) = variant.upstream();
    let mut listener = String::new();
    if let (Some(format), Some(path)) = (variant.access_log_format(), variant.access_log_path(dir))
    {
        if !path.is_absolute() {
            return Err(format!(
                "access log {}: not an absolute path",
                path.display()
            ));
        }
        let path = path
            .to_str()
            .ok_or_else(|| format!("access log {}: not UTF-8", path.display()))?;
        listener = format!(
            "access_log = {{ path = {}, format = \"{format}\" }}\n",
            toml_string(path)
        );
    }
    if let Some(t) = tls {
        listener.push_str(&t.coregate());
    }
    let (tables, route) = variant.policy();
    Ok(CoregateToml {
        listener: &listener,
        tables: &tables,
        balancer: Some(balancer),
        extra,
        route,
        ..CoregateToml::new("loadtest bench", listen, backends)
    }
    .render())
}

/// The nginx process and its temp paths, around an `http { ... }` block's upstream and server
/// contents. `server_opts` follow each `server ADDR` line of the upstream; `location` holds
/// extra directives of `location /`.
pub fn nginx_conf(
    writer: &str,
    dir: &Path,
    listen: SocketAddr,
    backends: &[SocketAddr],
    server_opts: &str,
    location: &str,
) -> String {
    NginxConf {
        server_opts,
        location,
        ..NginxConf::new(writer, dir, listen, backends)
    }
    .render()
}

/// An nginx configuration: `workers` worker processes, upstream keepalive, no access log, temp
/// paths under `dir`. Text fields hold whole lines (each ending in a newline) or nothing, except
/// `server_opts`, which follows each `server ADDR` of the upstream.
#[derive(Debug, Clone)]
pub struct NginxConf<'a> {
    pub writer: &'a str,
    pub dir: &'a Path,
    pub workers: usize,
    pub listen: SocketAddr,
    pub backends: &'a [SocketAddr],
    /// Directives of the `http` block before the upstream (`limit_req_zone ...`), indented.
    pub http: &'a str,
    pub server_opts: &'a str,
    /// Directives of `location /`, indented.
    pub location: &'a str,
    /// The listener speaks TLS with this certificate (session cache and tickets on).
    pub tls: Option<&'a TlsFiles>,
}

impl<'a> NginxConf<'a> {
    pub fn new(
        writer: &'a str,
        dir: &'a Path,
        listen: SocketAddr,
        backends: &'a [SocketAddr],
    ) -> Self {
        NginxConf {
            writer,
            dir,
            workers: 1,
            listen,
            backends,
            http: "",
            server_opts: "",
            location: "",
            tls: None,
        }
    }

    pub fn render(&self) -> String {
        let NginxConf {
            writer,
            dir,
            workers,
            listen,
            backends,
            http,
            server_opts,
            location,
            tls,
        } = *self;
        let (ssl, ssl_lines) = match tls {
            None => ("", String::new()),
            Some(t) => (
                " ssl",
                format!(
                    "        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:SSL:10m;\n        ssl_session_tickets on;\n",
                    t.cert.display(),
                    t.key.display()
                ),
            ),
        };
        let d = dir.display();
        let servers: String = backends
            .iter()
            .map(|b| format!("        server {b}{server_opts};\n"))
            .collect();
        let who = if workers == 1 {
            "1 worker".to_string()
        } else {
            format!("{workers} workers")
        };
        format!(
            r#"# Written by `{writer}`: {who}, upstream keepalive, no access log.
worker_processes {workers};
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
{http}    upstream backend {{
{servers}        keepalive 1024;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen}{ssl} backlog=4096;
{ssl_lines}        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
{location}        }}
    }}
}}
"#
        )
    }
}

pub fn nginx_config(
    dir: &Path,
    listen: SocketAddr,
    backends: &[SocketAddr],
    tls: Option<&TlsFiles>,
) -> String {
    NginxConf {
        tls,
        ..NginxConf::new("loadtest bench", dir, listen, backends)
    }
    .render()
}

/// HAProxy with one thread and server connections always reused. `defaults` and `server_opts`
/// (after each `server NAME ADDR`) and `backend` (lines of the backend section) add to it.
pub fn haproxy_cfg(
    writer: &str,
    listen: SocketAddr,
    backends: &[SocketAddr],
    defaults: &str,
    backend: &str,
    server_opts: &str,
) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("    server b{} {b}{server_opts}\n", i + 1))
        .collect();
    format!(
        r#"# Written by `{writer}`: one thread, server connections reused always.
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
{defaults}
frontend bench
    bind {listen}
    default_backend backend

backend backend
    http-reuse always
{backend}{servers}"#
    )
}

/// With `tls`: the frontend speaks TLS (HAProxy's default session cache and tickets).
pub fn haproxy_config(
    listen: SocketAddr,
    backends: &[SocketAddr],
    tls: Option<&TlsFiles>,
) -> String {
    let cfg = haproxy_cfg("loadtest bench", listen, backends, "", "", "");
    match tls {
        None => cfg,
        Some(t) => cfg.replacen(
            &format!("    bind {listen}\n"),
            &format!(
                "    bind {listen} ssl crt {} alpn http/1.1\n",
                t.combined.display()
            ),
            1,
        ),
    }
}

/// Where coregate's binary is: `explicit` (must exist), else target/release/coregate under
/// `root`, built with `cargo build --release -p coregate` first when `build` is set and it is
/// missing. Err says why there is none.
pub fn coregate_binary(
    explicit: Option<&Path>,
    build: bool,
    root: &Path,
) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("coregate binary {} not found", p.display()))
        };
    }
    let bin = root.join("target/release/coregate");
    if !bin.is_file() && build {
        eprintln!("building coregate (cargo build --release -p coregate) ...");
        let ok = Command::new("cargo")
            .args(["build", "--release", "-p", "coregate"])
            .current_dir(root)
            .env("CARGO_TARGET_DIR", root.join("target"))
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("building coregate failed".into());
        }
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no binary at {} (build it with `cargo build --release`, or pass --coregate PATH or --build)",
            bin.display()
        ))
    }
}

/// A backend's counters from its stats path (`loadtest backend`): requests forwarded to it and
/// health checks it answered. None when it does not answer within a second.
pub fn backend_counts(addr: SocketAddr) -> Option<(u64, u64)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"GET /__stats HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let body = out.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some((v["requests"].as_u64()?, v["checks"].as_u64().unwrap_or(0)))
}

/// Starts `n` backends (`loadtest backend`, one worker each) on `cpus`, on the given ports or
/// on free ones (`ports` empty).
pub fn spawn_backends(
    n: usize,
    ports: &[u16],
    extra: &[String],
    cpus: &[usize],
) -> Result<Vec<Running>, String> {
    (0..n)
        .map(|i| spawn_backend(ports.get(i).copied().unwrap_or(0), extra, cpus))
        .collect()
}

/// One `loadtest backend --listen 127.0.0.1:PORT --workers 1 EXTRA...` on `cpus`.
pub fn spawn_backend(port: u16, extra: &[String], cpus: &[usize]) -> Result<Running, String> {
    let mut args: Vec<String> = vec![
        "backend".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--workers".into(),
        "1".into(),
    ];
    args.extend_from_slice(extra);
    spawn_self("backend", &args, cpus)
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

/// Starts nginx (found on PATH or in /usr/sbin) with `conf` written to `dir/nginx.conf`, its
/// prefix and temp directories in `dir` (as [`NginxConf`] names them), logging to
/// `dir/nginx.log`, pinned to `cpus`.
pub fn spawn_nginx(
    conf: &str,
    dir: &Path,
    listen: SocketAddr,
    cpus: &[usize],
) -> Result<Running, String> {
    for d in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = std::fs::create_dir_all(dir.join(d));
    }
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
    let prog = which("nginx").ok_or("nginx not installed")?;
    spawn_external(
        "nginx",
        &prog,
        &[
            "-p".into(),
            dir.display().to_string(),
            "-c".into(),
            path.display().to_string(),
        ],
        listen,
        dir,
        cpus,
    )
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
