//! The validated, immutable runtime form of the configuration. Everything the request path needs
//! is already typed: `Duration`s, `SocketAddr`s, byte counts, route tables per listener, and
//! upstreams whose backends are addressed by index.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::values::fmt_duration;
use super::{BalancerKind, DriverKind};
use crate::route::{HostPattern, PathMatch, PathOptions, Rewrite, Route, RouteTable};

#[derive(Debug)]
pub struct Snapshot {
    pub runtime: RuntimeSettings,
    pub limits: Limits,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
    /// Every route in file order (`Route::index` is the position here).
    pub routes: Vec<Route>,
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
    /// Keep waiting for the response when the client closes its side (HAProxy's default);
    /// false: abort the exchange as nginx does.
    pub ignore_client_abort: bool,
}

#[derive(Debug)]
pub struct Listener {
    pub index: usize,
    pub name: String,
    pub addr: SocketAddr,
    /// The routes this listener serves, compiled.
    pub routes: RouteTable,
    /// How request paths are normalised before routing.
    pub path: PathOptions,
}

#[derive(Debug)]
pub struct Upstream {
    pub index: usize,
    pub name: String,
    pub balancer: BalancerKind,
    /// Never empty.
    pub backends: Vec<Backend>,
    pub pool: PoolSettings,
    pub timeouts: UpstreamTimeouts,
    /// Largest response head accepted from a backend (bytes).
    pub max_response_head: usize,
    /// Most header fields accepted in a response head.
    pub max_response_headers: usize,
}

/// Default `max_response_head_bytes`: 64 KiB (nginx fails at its 4 or 8 KiB buffer).
pub const DEFAULT_MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Default `max_response_headers` (nginx accepts about 150 fields; we take more).
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 256;

#[derive(Debug, Clone)]
pub struct Backend {
    /// Position in `Upstream::backends`.
    pub index: usize,
    /// Resolved once at load.
    pub addr: SocketAddr,
    /// As written in the config (for logs).
    pub address: String,
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
            "runtime: workers = {}{}, pin = {}, driver = {}, ring_entries = {}, ring_flags = [{}], drain_timeout = {}",
            rt.workers,
            if rt.workers_auto { " (auto)" } else { "" },
            rt.pin,
            rt.driver.as_str(),
            rt.ring_entries,
            rt.ring_flags.names().join(", "),
            fmt_duration(rt.drain_timeout),
        );
        let l = &self.limits;
        let _ = writeln!(
            s,
            "limits: max_head_bytes = {}, max_headers = {}, max_body_bytes = {}, client_header_timeout = {}, client_idle_timeout = {}, ignore_client_abort = {}",
            l.max_head_bytes,
            l.max_headers,
            l.max_body_bytes,
            fmt_duration(l.client_header_timeout),
            fmt_duration(l.client_idle_timeout),
            l.ignore_client_abort,
        );
        let _ = writeln!(s, "listeners: {}", self.listeners.len());
        for li in &self.listeners {
            let names: Vec<&str> = li.routes.routes().iter().map(|r| &*r.name).collect();
            let _ = writeln!(
                s,
                "  {} {} -> routes [{}] (merge_slashes = {}, escaped_slashes = {})",
                li.name,
                li.addr,
                names.join(", "),
                li.path.merge_slashes,
                li.path.escaped_slashes.as_str(),
            );
        }
        let _ = writeln!(s, "upstreams: {}", self.upstreams.len());
        for u in &self.upstreams {
            let _ = writeln!(
                s,
                "  {} ({}, pool max_idle = {}, idle_timeout = {}; timeouts connect = {}, response_head = {}, idle = {}; max_response_head_bytes = {}, max_response_headers = {})",
                u.name,
                u.balancer.as_str(),
                u.pool.max_idle,
                fmt_duration(u.pool.idle_timeout),
                fmt_duration(u.timeouts.connect),
                fmt_duration(u.timeouts.response_head),
                fmt_duration(u.timeouts.idle),
                u.max_response_head,
                u.max_response_headers,
            );
            for b in &u.backends {
                let _ = writeln!(s, "    {} = {} weight {}", b.address, b.addr, b.weight);
            }
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
        format!(
            "{}: {hosts}, {path}{rewrite} -> {}",
            r.name, self.upstreams[r.upstream].name
        )
    }
}
