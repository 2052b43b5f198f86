//! The validated, immutable runtime form of the configuration. Everything the request path needs
//! is already typed: `Duration`s, `SocketAddr`s, byte counts, route tables per listener, and
//! upstreams whose backends are addressed by index.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::schema::{LimitHeaders, LimitMode, RedisFallback};
use super::values::fmt_duration;
use super::{BalancerKind, DriverKind};
use crate::route::{HostPattern, PathMatch, PathOptions, Rewrite, Route, RouteTable};
use crate::upstream::Maglev;

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub runtime: RuntimeSettings,
    pub limits: Limits,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
    /// Every route in file order (`Route::index` is the position here).
    pub routes: Vec<Route>,
    /// Policies and transforms of routes that have them (`Route::policy` indexes here).
    pub policies: Vec<crate::policy::transform::RoutePolicy>,
    /// `[[rate_limits]]` in file order (routes name them by index).
    pub rate_limits: Vec<RateLimit>,
    /// `[[auth]]` in file order (routes name them by index).
    pub auths: Vec<crate::policy::auth::Auth>,
    /// `[redis]`, for limits in `redis` mode.
    pub redis: Option<RedisSettings>,
    /// `[admin]`: off when absent.
    pub admin: Option<AdminSettings>,
    /// Every access log listeners and routes write (they name them by index).
    pub access_logs: Vec<AccessLog>,
    /// Header fields a connection must have room for: the most of `max_headers` and every
    /// upstream's `max_response_headers` (requests and responses share the storage).
    pub header_slots: usize,
}

#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Resolved worker count (`"auto"` already turned into the number of usable cores).
    pub workers: usize,
    pub workers_auto: bool,
    pub pin: bool,
    pub driver: DriverKind,
    pub ring_entries: u32,
    pub ring_flags: RingFlags,
    pub drain_timeout: Duration,
    /// How often workers exchange what crosses cores (health, ejections).
    pub sync_interval: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingFlags {
    pub coop_taskrun: bool,
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub sqpoll: bool,
}

impl RingFlags {
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, name) in [
            (self.coop_taskrun, "coop_taskrun"),
            (self.single_issuer, "single_issuer"),
            (self.defer_taskrun, "defer_taskrun"),
            (self.sqpoll, "sqpoll"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub client_header_timeout: Duration,
    pub client_idle_timeout: Duration,
    /// An upgraded connection (a tunnel) closes after this long without a byte either way.
    pub tunnel_idle_timeout: Duration,
    /// Keep waiting for the response when the client closes its side (HAProxy's default);
    /// false: abort the exchange as nginx does.
    pub ignore_client_abort: bool,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub index: usize,
    pub name: String,
    pub addr: SocketAddr,
    /// The routes this listener serves, compiled.
    pub routes: RouteTable,
    /// How request paths are normalised before routing.
    pub path: PathOptions,
    /// The access log of requests no route of its own logs (index into
    /// `Snapshot::access_logs`).
    pub access_log: Option<usize>,
    /// Some request on this listener may be logged (by it or by a route): the request line is
    /// kept until the answer is out.
    pub logs_any: bool,
    /// Every connection opens with a PROXY protocol header (v1 or v2) naming the client.
    pub proxy_protocol: bool,
    /// TLS is terminated here.
    pub tls: Option<std::sync::Arc<crate::tls::ListenerTls>>,
    /// A TCP (L4) listener: its connections' bytes go to this upstream as they are.
    pub tcp: Option<TcpForward>,
}

/// Where a TCP listener's connections go.
#[derive(Debug, Clone, Copy)]
pub struct TcpForward {
    /// Index into `Snapshot::upstreams`.
    pub upstream: usize,
    /// Connections per worker; more are closed at once.
    pub max_connections: u32,
    /// A connection closes after this long without a byte either way.
    pub idle_timeout: Duration,
}

impl AccessLog {
    /// `PATH (FORMAT, buffer N, flush D)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, buffer {}, flush {})",
            self.path.display(),
            match self.format {
                super::schema::LogFormat::Combined => "combined",
                super::schema::LogFormat::Json => "json",
            },
            self.buffer,
            fmt_duration(self.flush)
        )
    }
}

/// An `access_log` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub path: std::sync::Arc<std::path::Path>,
    pub format: super::schema::LogFormat,
    /// Each worker's buffer: written out when it holds this much.
    pub buffer: usize,
    /// ... or when its oldest line is this old.
    pub flush: Duration,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub index: usize,
    pub name: String,
    pub balancer: BalancerKind,
    /// What `consistent_hash` hashes (set exactly when it is the balancer).
    pub hash_on: Option<HashOn>,
    /// The Maglev table of `consistent_hash`, built once here and read by every worker.
    pub maglev: Option<Maglev>,
    /// Never empty.
    pub backends: Vec<Backend>,
    pub pool: PoolSettings,
    pub timeouts: UpstreamTimeouts,
    /// Largest response head accepted from a backend (bytes).
    pub max_response_head: usize,
    /// Most header fields accepted in a response head.
    pub max_response_headers: usize,
    /// Each new connection opens with a PROXY protocol header naming the client; such
    /// connections are reused only by the client connection they were opened for.
    pub proxy_protocol: Option<super::schema::ProxyVersion>,
    /// Connections to the backends speak TLS.
    pub tls: Option<std::sync::Arc<crate::tls::ClientTls>>,
    pub health: Option<HealthCheck>,
    pub outlier: Outlier,
    pub retry: RetryPolicy,
    /// Percent of backends that must be available; below it, balance over all of them
    /// (0: never; answer 503 when none is available).
    pub panic_threshold: u32,
    /// A backend that comes back ramps its weight up over this long (zero: at once).
    pub slow_start: Duration,
    /// Connections per backend per worker (in use and idle); `u32::MAX`: no limit.
    pub max_connections: u32,
    /// Requests per backend per worker waiting for a connection under `max_connections`.
    pub max_pending: u32,
    /// How often backends given by host name are resolved again.
    pub resolve_interval: Duration,
}

impl Upstream {
    /// `p2c`, `consistent_hash on header:x-user`, ...
    pub fn describe_balancer(&self) -> String {
        match &self.hash_on {
            None => self.balancer.as_str().to_string(),
            Some(on) => {
                let on = match on {
                    HashOn::ClientIp => "client_ip".to_string(),
                    HashOn::Path => "path".to_string(),
                    HashOn::Header(n) => format!("header:{n}"),
                    HashOn::Cookie(n) => format!("cookie:{n}"),
                };
                let size = self.maglev.as_ref().map_or(0, |m| m.len());
                format!("{} on {on}, table {size}", self.balancer.as_str())
            }
        }
    }

    /// Health checks, ejection, retries, circuit breaking and slow start in one line.
    pub fn describe_resilience(&self) -> String {
        let health = match &self.health {
            None => "no health checks".to_string(),
            Some(h) => format!(
                "health {} every {} (timeout {}, rise {}, fall {}{})",
                h.path.as_deref().unwrap_or("tcp"),
                fmt_duration(h.interval),
                fmt_duration(h.timeout),
                h.rise,
                h.fall,
                if h.start_down { ", start down" } else { "" }
            ),
        };
        let o = &self.outlier;
        let outlier = if o.consecutive_failures == 0 {
            "no ejection".to_string()
        } else {
            format!(
                "eject after {} failures for {} (max {}%)",
                o.consecutive_failures,
                fmt_duration(o.base_ejection),
                o.max_ejected_percent
            )
        };
        let r = &self.retry;
        let mut on = Vec::new();
        for (yes, what) in [
            (r.on_connect, "connect".to_string()),
            (r.on_reset, "reset".to_string()),
            (r.on_timeout, "timeout".to_string()),
        ] {
            if yes {
                on.push(what);
            }
        }
        on.extend(
            (500..600)
                .filter(|&c| r.on_status(c))
                .map(|c| c.to_string()),
        );
        let limit = |n: u32| {
            if n == u32::MAX {
                "none".to_string()
            } else {
                n.to_string()
            }
        };
        format!(
            "{health}; {outlier}; {} attempt(s) on [{}] within {}% (min {}); panic_threshold {}%; max_connections {}, max_pending {}; slow_start {}",
            r.attempts,
            on.join(", "),
            r.budget_percent,
            r.min_concurrent,
            self.panic_threshold,
            limit(self.max_connections),
            self.max_pending,
            fmt_duration(self.slow_start)
        )
    }
}

/// Default `max_response_head_bytes`: 64 KiB (nginx fails at its 4 or 8 KiB buffer).
pub const DEFAULT_MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Default `max_response_headers` (nginx accepts about 150 fields; we take more).
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 256;

/// A `[[rate_limits]]` table.
#[derive(Debug, Clone)]
pub struct RateLimit {
    pub index: usize,
    pub name: String,
    pub key: LimitKey,
    /// Requests per `period`.
    pub rate: u64,
    pub period: Duration,
    /// Extra requests a key may spend at once.
    pub burst: u64,
    pub mode: LimitMode,
    pub sync_interval: Duration,
    /// Keys remembered per worker (least recently used ones are forgotten beyond it).
    pub max_keys: usize,
    /// Status of a rejection.
    pub status: u16,
    pub headers: LimitHeaders,
    pub on_redis_error: RedisFallback,
    /// `RateLimit-Policy: "NAME";q=RATE;w=SECONDS\r\n`, built once.
    pub policy_field: Box<str>,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    /// The matched route (one bucket per route).
    Route,
    /// The consumer the route's auth admitted (requests without one are not limited by it).
    Consumer,
    /// A request header's first value (name stored lowercase).
    Header(Box<str>),
    Cookie(Box<str>),
}

/// `[admin]`.
#[derive(Clone)]
pub struct AdminSettings {
    pub addr: SocketAddr,
    /// Required as `Authorization: Bearer TOKEN` for changes (and for everything when the
    /// admin listener is not on loopback).
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[redis]`.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// For connecting and for each round trip.
    pub timeout: Duration,
}

/// The key of `consistent_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    /// A request header's first value (name stored lowercase).
    Header(Box<str>),
    /// A cookie's value.
    Cookie(Box<str>),
    /// The normalised path (without the query).
    Path,
}

/// `[upstreams.health]`.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// `GET` this path; `None`: a connect-only (TCP) check.
    pub path: Option<String>,
    /// `Host` of the check request (default: the backend's address as written).
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Status ranges that pass, inclusive.
    pub expect: Vec<(u16, u16)>,
    pub start_down: bool,
}

/// `[upstreams.outlier]`.
#[derive(Debug, Clone, Copy)]
pub struct Outlier {
    /// Failures in a row that eject a backend (0: never).
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejected_percent: u32,
}

/// `[upstreams.retry]`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries per request, the first included.
    pub attempts: u32,
    pub budget_percent: u32,
    pub min_concurrent: u32,
    pub on_connect: bool,
    pub on_reset: bool,
    pub on_timeout: bool,
    /// Bit `code - 500` for each 5xx status that is retried.
    pub on_status: u128,
}

impl RetryPolicy {
    pub fn on_status(&self, code: u16) -> bool {
        (500..600).contains(&code) && self.on_status >> (code - 500) & 1 == 1
    }
}

#[derive(Debug, Clone)]
pub struct Backend {
    /// Position in `Upstream::backends`.
    pub index: usize,
    /// Resolved once at load.
    pub addr: SocketAddr,
    /// As written in the config (for logs, the `Host` of HTTP/1.0 requests without one, and
    /// consistent hashing).
    pub address: String,
    /// Given by host name: resolved again every `resolve_interval`.
    pub by_name: bool,
    /// >= 1.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Idle connections kept per backend per worker.
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub response_head: Duration,
    pub idle: Duration,
}

impl Snapshot {
    /// A human summary (what `coregate check` prints).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let rt = &self.runtime;
        let _ = writeln!(
            s,
            "runtime: workers = {}{}, pin = {}, driver = {}, ring_entries = {}, ring_flags = [{}], drain_timeout = {}, sync_interval = {}",
            rt.workers,
            if rt.workers_auto { " (auto)" } else { "" },
            rt.pin,
            rt.driver.as_str(),
            rt.ring_entries,
            rt.ring_flags.names().join(", "),
            fmt_duration(rt.drain_timeout),
            fmt_duration(rt.sync_interval),
        );
        let l = &self.limits;
        let _ = writeln!(
            s,
            "limits: max_head_bytes = {}, max_headers = {}, max_body_bytes = {}, client_header_timeout = {}, client_idle_timeout = {}, ignore_client_abort = {}, tunnel_idle_timeout = {}",
            l.max_head_bytes,
            l.max_headers,
            l.max_body_bytes,
            fmt_duration(l.client_header_timeout),
            fmt_duration(l.client_idle_timeout),
            l.ignore_client_abort,
            fmt_duration(l.tunnel_idle_timeout),
        );
        let _ = writeln!(s, "listeners: {}", self.listeners.len());
        for li in &self.listeners {
            let names: Vec<&str> = li.routes.routes().iter().map(|r| &*r.name).collect();
            let _ = writeln!(
                s,
                "  {} {} -> routes [{}] (merge_slashes = {}, escaped_slashes = {}, access_log = {}{})",
                li.name,
                li.addr,
                names.join(", "),
                li.path.merge_slashes,
                li.path.escaped_slashes.as_str(),
                li.access_log
                    .map_or("off".to_string(), |i| self.access_logs[i].describe()),
                if li.proxy_protocol {
                    ", proxy_protocol = true"
                } else {
                    ""
                },
            );
            if let Some(t) = &li.tls {
                let _ = writeln!(s, "    {}", t.describe);
            }
            if let Some(t) = &li.tcp {
                let _ = writeln!(
                    s,
                    "    tcp -> upstream {} (max_connections {} per worker, idle_timeout {})",
                    self.upstreams[t.upstream].name,
                    t.max_connections,
                    fmt_duration(t.idle_timeout)
                );
            }
        }
        let _ = writeln!(s, "upstreams: {}", self.upstreams.len());
        for u in &self.upstreams {
            let _ = writeln!(
                s,
                "  {} ({}, pool max_idle = {}, idle_timeout = {}; timeouts connect = {}, response_head = {}, idle = {}; max_response_head_bytes = {}, max_response_headers = {}{})",
                u.name,
                u.describe_balancer(),
                u.pool.max_idle,
                fmt_duration(u.pool.idle_timeout),
                fmt_duration(u.timeouts.connect),
                fmt_duration(u.timeouts.response_head),
                fmt_duration(u.timeouts.idle),
                u.max_response_head,
                u.max_response_headers,
                u.proxy_protocol
                    .map_or(String::new(), |v| format!(", proxy_protocol = {}", v.as_str())),
            );
            if let Some(t) = &u.tls {
                let _ = writeln!(
                    s,
                    "    tls{}{}",
                    t.sni
                        .as_ref()
                        .map_or(String::new(), |n| format!(", sni = {}", n.to_str())),
                    if t.insecure {
                        ", certificates NOT verified (insecure_skip_verify)"
                    } else {
                        ", certificates verified"
                    }
                );
            }
            let _ = writeln!(s, "    {}", u.describe_resilience());
            for b in &u.backends {
                let _ = writeln!(s, "    {} = {} weight {}", b.address, b.addr, b.weight);
            }
        }
        if !self.rate_limits.is_empty() {
            let _ = writeln!(s, "rate_limits: {}", self.rate_limits.len());
            for l in &self.rate_limits {
                let _ = writeln!(
                    s,
                    "  {}: {} per {} (burst {}) by {}, mode {}, sync_interval {}, max_keys {}, status {}",
                    l.name,
                    l.rate,
                    fmt_duration(l.period),
                    l.burst,
                    match &l.key {
                        LimitKey::ClientIp => "client_ip".to_string(),
                        LimitKey::Route => "route".to_string(),
                        LimitKey::Consumer => "consumer".to_string(),
                        LimitKey::Header(n) => format!("header:{n}"),
                        LimitKey::Cookie(n) => format!("cookie:{n}"),
                    },
                    l.mode.as_str(),
                    fmt_duration(l.sync_interval),
                    l.max_keys,
                    l.status
                );
            }
        }
        if !self.auths.is_empty() {
            let _ = writeln!(s, "auth: {}", self.auths.len());
            for a in &self.auths {
                let _ = writeln!(s, "  {}", a.describe());
            }
        }
        if let Some(r) = &self.redis {
            let _ = writeln!(
                s,
                "redis: {} (timeout {})",
                redact_url(&r.url),
                fmt_duration(r.timeout)
            );
        }
        if let Some(a) = &self.admin {
            let _ = writeln!(
                s,
                "admin: {} ({})",
                a.addr,
                if a.token.is_some() {
                    "token required"
                } else {
                    "no token"
                }
            );
        }
        let _ = writeln!(s, "routes: {}", self.routes.len());
        for r in &self.routes {
            let _ = writeln!(s, "  {}", self.describe_route(r));
        }
        s
    }

    /// One line describing a route.
    pub fn describe_route(&self, r: &Route) -> String {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let hosts: Vec<String> = r
            .hosts
            .iter()
            .map(|h| match h {
                HostPattern::Exact(h) => lossy(h),
                HostPattern::Suffix(s) => format!("*{}", lossy(s)),
            })
            .collect();
        let hosts = if hosts.is_empty() {
            "any host".to_string()
        } else {
            hosts.join(" ")
        };
        let path = match &r.path {
            PathMatch::Prefix(p) => format!("prefix {}", lossy(p)),
            PathMatch::Exact(p) => format!("exact {}", lossy(p)),
        };
        let rewrite = match &r.rewrite {
            Rewrite::None => String::new(),
            Rewrite::Strip => ", strip prefix".to_string(),
            Rewrite::Replace(w) => format!(", replace prefix with {}", lossy(w)),
        };
        let limits: Vec<&str> = r
            .rate_limits
            .iter()
            .map(|&i| self.rate_limits[i].name.as_str())
            .collect();
        let limits = if limits.is_empty() {
            String::new()
        } else {
            format!(", rate limits [{}]", limits.join(", "))
        };
        let log = match r.access_log {
            crate::route::LogChoice::Listener => String::new(),
            crate::route::LogChoice::Off => ", access_log off".to_string(),
            crate::route::LogChoice::To(i) => {
                format!(", access_log {}", self.access_logs[i].describe())
            }
        };
        let redirect = r.redirect_https.map_or(String::new(), |p| {
            format!(", http redirected to https port {p}")
        });
        let upgrades = match &*r.upgrades {
            [] => ", no upgrades".to_string(),
            [w] if &**w == "websocket" => String::new(),
            list => format!(", upgrades [{}]", list.join(", ")),
        };
        let subjects = if r.client_subjects.is_empty() {
            String::new()
        } else {
            format!(", client subjects [{}]", r.client_subjects.join("; "))
        };
        let connect = if r.connect { ", CONNECT tunnels" } else { "" };
        format!(
            "{}: {hosts}, {path}{rewrite}{limits}{log}{redirect}{upgrades}{subjects}{connect} -> {}",
            r.name,
            self.route_target(r)
        )
    }
}

/// `redis://user:secret@host/0` with the password hidden.
impl Snapshot {
    /// Where a route sends its requests, for summaries: an upstream, a split, an aggregate or
    /// its own answer.
    fn route_target(&self, r: &Route) -> String {
        let name = |u: usize| self.upstreams[u].name.as_str();
        let policy = r.policy.map(|p| &self.policies[p]);
        if let Some(ret) = policy.and_then(|p| p.ret.as_ref()) {
            return format!("return {}", ret.status);
        }
        if let Some(a) = policy.and_then(|p| p.aggregate.as_ref()) {
            let parts: Vec<&str> = a.parts.iter().map(|p| name(p.upstream)).collect();
            return format!("aggregate [{}]", parts.join(", "));
        }
        if !r.split.is_empty() {
            let mut last = 0;
            let parts: Vec<String> = r
                .split
                .iter()
                .map(|&(u, cum)| {
                    let w = cum - last;
                    last = cum;
                    format!("{} {w}", name(u))
                })
                .collect();
            return format!("split [{}]", parts.join(", "));
        }
        r.upstream.map_or_else(String::new, |u| name(u).to_string())
    }
}

pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:<redacted>{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
