//! The validated, immutable runtime form of the configuration. Everything the request path needs
//! is already typed: `Duration`s, `SocketAddr`s, byte counts, route tables per listener, and
//! upstreams whose backends are addressed by index.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::values::fmt_duration;
use super::{BalancerKind, DriverKind};
use crate::route::{HostPattern, PathMatch, Rewrite, Route, RouteTable};

#[derive(Debug)]
pub struct Snapshot {
    pub runtime: RuntimeSettings,
    pub limits: Limits,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
    /// Every route in file order (`Route::index` is the position here).
    pub routes: Vec<Route>,
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
}

#[derive(Debug)]
pub struct Listener {
    pub index: usize,
    pub name: String,
    pub addr: SocketAddr,
    /// The routes this listener serves, compiled.
    pub routes: RouteTable,
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
}

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
            "limits: max_head_bytes = {}, max_headers = {}, max_body_bytes = {}, client_header_timeout = {}, client_idle_timeout = {}",
            l.max_head_bytes,
            l.max_headers,
            l.max_body_bytes,
            fmt_duration(l.client_header_timeout),
            fmt_duration(l.client_idle_timeout),
        );
        let _ = writeln!(s, "listeners: {}", self.listeners.len());
        for li in &self.listeners {
            let names: Vec<&str> = li.routes.routes().iter().map(|r| &*r.name).collect();
            let _ = writeln!(
                s,
                "  {} {} -> routes [{}]",
                li.name,
                li.addr,
                names.join(", ")
            );
        }
        let _ = writeln!(s, "upstreams: {}", self.upstreams.len());
        for u in &self.upstreams {
            let _ = writeln!(
                s,
                "  {} ({}, pool max_idle = {}, idle_timeout = {}; timeouts connect = {}, response_head = {}, idle = {})",
                u.name,
                u.balancer.as_str(),
                u.pool.max_idle,
                fmt_duration(u.pool.idle_timeout),
                fmt_duration(u.timeouts.connect),
                fmt_duration(u.timeouts.response_head),
                fmt_duration(u.timeouts.idle),
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
