//! Semantic checks and the conversion of the raw schema into a [`Snapshot`]. Each check points
//! at the span of the value it rejects. Checks go on after an error wherever the rest can still
//! be judged, so one run reports every semantic error of a file (in file order, see
//! `config::parse`); a reference to something that was itself invalid is not reported twice.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::schema::{ListenerProtocol, RawConfig, RawListener, RawRoute, RawRuntime, RingFlag};
use super::snapshot::*;
use super::values::Workers;
use crate::route::{HostPattern, PathMatch, PathOptions, Rewrite, Route, RouteTable};

pub struct Invalid {
    pub span: Option<Range<usize>>,
    pub message: String,
}

pub(super) type Result<T> = std::result::Result<T, Invalid>;

pub(super) fn err<T, S>(at: &Spanned<S>, message: impl Into<String>) -> Result<T> {
    Err(Invalid {
        span: Some(at.span()),
        message: message.into(),
    })
}

/// The errors found so far.
#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<Invalid>);

impl Errors {
    /// The value, or `None` with its error recorded.
    pub(super) fn take<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    pub(super) fn at<S>(&mut self, at: &Spanned<S>, message: impl Into<String>) {
        self.0.push(Invalid {
            span: Some(at.span()),
            message: message.into(),
        });
    }

    fn file(&mut self, message: impl Into<String>) {
        self.0.push(Invalid {
            span: None,
            message: message.into(),
        });
    }
}

pub fn validate(raw: RawConfig) -> std::result::Result<Snapshot, Vec<Invalid>> {
    let mut errs = Errors::default();
    let runtime = errs.take(runtime(&raw.runtime));
    let limits = errs.take(limits(&raw.limits));

    for (empty, what) in [
        (raw.listeners.is_empty(), "listeners"),
        (raw.upstreams.is_empty(), "upstreams"),
        (
            raw.routes.is_empty()
                && raw
                    .listeners
                    .iter()
                    .any(|l| l.get_ref().protocol == ListenerProtocol::Http),
            "routes",
        ),
    ] {
        if empty {
            errs.file(format!(
                "no [[{what}]]: at least one {} is required",
                what.trim_end_matches('s')
            ));
        }
    }

    let mut rate_limits = Vec::with_capacity(raw.rate_limits.len());
    let mut limit_index: HashMap<&str, usize> = HashMap::new();
    for l in &raw.rate_limits {
        let name = l.get_ref().name.get_ref().as_str();
        errs.take(check_name(&l.get_ref().name, "rate limit"));
        if limit_index.insert(name, rate_limits.len()).is_some() {
            errs.at(
                &l.get_ref().name,
                format!("duplicate rate limit name {name:?}"),
            );
        }
        rate_limits.push(super::limits::rate_limit(
            rate_limits.len(),
            l.get_ref(),
            &mut errs,
        ));
    }
    let redis = raw
        .redis
        .as_ref()
        .and_then(|r| errs.take(super::limits::redis(r)));
    super::limits::check_redis(&raw.rate_limits, raw.redis.is_some(), &mut errs);
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| errs.take(super::limits::admin(a)));

    let mut upstreams = Vec::with_capacity(raw.upstreams.len());
    let mut upstream_index: HashMap<&str, usize> = HashMap::new();
    for u in &raw.upstreams {
        let name = u.get_ref().name.get_ref().as_str();
        errs.take(check_name(&u.get_ref().name, "upstream"));
        if upstream_index.contains_key(name) {
            errs.at(
                &u.get_ref().name,
                format!("duplicate upstream name {name:?}"),
            );
        } else {
            upstream_index.insert(name, upstreams.len());
        }
        upstreams.push(super::upstreams::upstream(
            upstreams.len(),
            u.get_ref(),
            &mut errs,
        ));
    }

    let mut auths = Vec::with_capacity(raw.auth.len());
    let mut auth_index: HashMap<&str, usize> = HashMap::new();
    for a in &raw.auth {
        let name = a.get_ref().name.get_ref().as_str();
        errs.take(check_name(&a.get_ref().name, "auth"));
        if auth_index.contains_key(name) {
            errs.at(&a.get_ref().name, format!("duplicate auth name {name:?}"));
        } else {
            auth_index.insert(name, auths.len());
        }
        auths.push(super::auth::auth(a.get_ref(), &mut errs));
    }

    let mut logs = super::logs::Logs::default();
    // Routes by name; `None` for a route that was itself invalid (listeners naming it say
    // nothing more about it).
    let mut routes: Vec<Option<Route>> = Vec::with_capacity(raw.routes.len());
    let mut route_index: HashMap<&str, usize> = HashMap::new();
    let mut policies = Vec::new();
    let consumer_keyed: Vec<bool> = rate_limits
        .iter()
        .map(|l| matches!(l, Some(l) if l.key == crate::config::LimitKey::Consumer))
        .collect();
    // (host pattern, path) -> route name, to reject routes that could never match.
    let mut seen: HashMap<(Option<HostPattern>, PathMatch), &str> = HashMap::new();
    for r in &raw.routes {
        let rr = r.get_ref();
        let name = rr.name.get_ref().as_str();
        errs.take(check_name(&rr.name, "route"));
        if route_index.contains_key(name) {
            errs.at(&rr.name, format!("duplicate route name {name:?}"));
        } else {
            route_index.insert(name, routes.len());
        }
        let route = route(
            routes.len(),
            rr,
            &upstream_index,
            &limit_index,
            &auth_index,
            &consumer_keyed,
            &mut policies,
            &mut logs,
            &mut errs,
        );
        if let Some(route) = &route {
            let path_at: &Spanned<String> = rr
                .path_exact
                .as_ref()
                .or(rr.path_prefix.as_ref())
                .unwrap_or(&rr.name);
            let keys: Vec<Option<HostPattern>> = if route.hosts.is_empty() {
                vec![None]
            } else {
                route.hosts.iter().cloned().map(Some).collect()
            };
            // Only a route without conditions hides later ones of the same host and path.
            for k in keys {
                let key = (k, route.path.clone());
                let earlier = seen.get(&key).copied();
                if route.conditions.is_none() && earlier.is_none() {
                    seen.insert(key, name);
                }
                if let Some(other) = earlier {
                    errs.at(
                        path_at,
                        format!("route {name:?} has the same host and path as route {other:?} and could never match"),
                    );
                    break;
                }
            }
        }
        routes.push(route);
    }

    let mut listeners = Vec::with_capacity(raw.listeners.len());
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, ()> = HashMap::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let Some(li) = listener(
            i,
            l.get_ref(),
            (&routes, &route_index),
            &upstream_index,
            &mut logs,
            &mut errs,
        ) else {
            continue;
        };
        if names.insert(li.name.clone(), ()).is_some() {
            let at = l.get_ref().name.as_ref().map_or(l.span(), |n| n.span());
            errs.0.push(Invalid {
                span: Some(at),
                message: format!("duplicate listener name {:?}", li.name),
            });
        }
        if addrs.insert(li.addr, ()).is_some() {
            errs.at(
                &l.get_ref().address,
                format!("duplicate listener address {}", li.addr),
            );
        }
        listeners.push(li);
    }

    match (runtime, limits) {
        (Some(runtime), Some(limits)) if errs.0.is_empty() => {
            let upstreams: Vec<Upstream> = upstreams.into_iter().flatten().collect();
            let header_slots = upstreams
                .iter()
                .map(|u| u.max_response_headers)
                .fold(limits.max_headers, usize::max);
            Ok(Snapshot {
                runtime,
                limits,
                listeners,
                upstreams,
                routes: routes.into_iter().flatten().collect(),
                policies,
                rate_limits: rate_limits.into_iter().flatten().collect(),
                auths: auths.into_iter().flatten().collect(),
                redis,
                admin,
                access_logs: logs.0,
                header_slots,
            })
        }
        _ => Err(errs.0),
    }
}

fn runtime(r: &RawRuntime) -> Result<RuntimeSettings> {
    let (workers, workers_auto) = match r.workers {
        Workers::Auto => (
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            true,
        ),
        Workers::Count(n) => (n, false),
    };
    let ring_entries = match &r.ring_entries {
        None => 1024,
        Some(e) if (256..=32768).contains(e.get_ref()) => *e.get_ref(),
        Some(e) => {
            return err(
                e,
                format!(
                    "invalid ring_entries {}: must be from 256 to 32768",
                    e.get_ref()
                ),
            )
        }
    };
    let ring_flags = match &r.ring_flags {
        None => RingFlags {
            coop_taskrun: true,
            ..RingFlags::default()
        },
        Some(list) => ring_flags(list)?,
    };
    let sync_interval = match &r.sync_interval {
        None => Duration::from_millis(50),
        Some(d)
            if (Duration::from_millis(5)..=Duration::from_secs(10)).contains(&d.get_ref().0) =>
        {
            d.get_ref().0
        }
        Some(d) => return err(d, "invalid sync_interval: must be from 5ms to 10s"),
    };
    Ok(RuntimeSettings {
        workers,
        workers_auto,
        pin: r.pin,
        driver: r.driver,
        ring_entries,
        ring_flags,
        drain_timeout: r.drain_timeout.0,
        sync_interval,
    })
}

fn ring_flags(list: &Spanned<Vec<Spanned<RingFlag>>>) -> Result<RingFlags> {
    let mut f = RingFlags::default();
    for flag in list.get_ref() {
        let slot = match flag.get_ref() {
            RingFlag::CoopTaskrun => &mut f.coop_taskrun,
            RingFlag::SingleIssuer => &mut f.single_issuer,
            RingFlag::DeferTaskrun => &mut f.defer_taskrun,
            RingFlag::Sqpoll => &mut f.sqpoll,
        };
        if *slot {
            return err(flag, "ring flag listed twice");
        }
        *slot = true;
    }
    if f.defer_taskrun && !f.single_issuer {
        return err(
            list,
            "ring flag \"defer_taskrun\" requires \"single_issuer\"",
        );
    }
    if f.sqpoll && (f.coop_taskrun || f.defer_taskrun) {
        return err(
            list,
            "ring flag \"sqpoll\" cannot be combined with \"coop_taskrun\" or \"defer_taskrun\" (the kernel rejects it)",
        );
    }
    Ok(f)
}

/// `value` when it lies in `range`, else an error naming `what` and the range (`shown` as the
/// user would write its ends).
pub(super) fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    value: &Spanned<T>,
    range: std::ops::RangeInclusive<T>,
    what: &str,
    shown: &str,
) -> Result<T> {
    let v = *value.get_ref();
    if range.contains(&v) {
        Ok(v)
    } else {
        err(value, format!("invalid {what} {v}: must be from {shown}"))
    }
}

fn limits(l: &super::schema::RawLimits) -> Result<Limits> {
    let max_head_bytes = match &l.max_head_bytes {
        None => 32768,
        Some(s) if (1024..=(1 << 20)).contains(&s.get_ref().0) => s.get_ref().0 as usize,
        Some(s) => {
            return err(
                s,
                format!(
                    "invalid max_head_bytes {}: must be from 1024 to 1MiB",
                    s.get_ref().0
                ),
            )
        }
    };
    let max_headers = match &l.max_headers {
        None => 100,
        Some(n) => in_range(n, 1..=1024, "max_headers", "1 to 1024")? as usize,
    };
    let max_body_bytes = match &l.max_body_bytes {
        None => 16 << 20,
        Some(s) => s.get_ref().0,
    };
    Ok(Limits {
        max_head_bytes,
        max_headers,
        max_body_bytes,
        client_header_timeout: l.client_header_timeout.0,
        client_idle_timeout: l.client_idle_timeout.0,
        tunnel_idle_timeout: l.tunnel_idle_timeout.0,
        ignore_client_abort: l.ignore_client_abort,
    })
}

fn check_name(name: &Spanned<String>, what: &str) -> Result<()> {
    let n = name.get_ref();
    if n.is_empty() {
        return err(name, format!("{what} name must not be empty"));
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return err(
            name,
            format!("invalid {what} name {n:?}: use letters, digits, '-', '_' and '.'"),
        );
    }
    Ok(())
}

/// Resolves `host:port` once, at load. Port 0 is refused: every worker must bind the same port.
pub(super) fn resolve(addr: &Spanned<String>, what: &str) -> Result<SocketAddr> {
    let s = addr.get_ref();
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return err(
                addr,
                format!("invalid {what} address {s:?}: port 0 is not allowed"),
            );
        }
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return err(
            addr,
            format!("invalid {what} address {s:?}: expected host:port"),
        );
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return err(
            addr,
            format!("invalid {what} address {s:?}: expected host:port with a port from 1 to 65535"),
        );
    }
    if port.parse::<u16>() == Ok(0) {
        return err(
            addr,
            format!("invalid {what} address {s:?}: port 0 is not allowed"),
        );
    }
    match s.to_socket_addrs() {
        Ok(mut it) => match it.next() {
            Some(a) => Ok(a),
            None => err(
                addr,
                format!("cannot resolve {what} address {s:?}: no address found"),
            ),
        },
        Err(e) => err(addr, format!("cannot resolve {what} address {s:?}: {e}")),
    }
}

/// A path from the config, compared against normalised request paths: percent-escapes are
/// decoded here once, and a path that no normalised request path can have (`//`, `.` or `..`
/// segments, an escaped `/`) is refused.
fn check_path(p: &Spanned<String>, what: &str) -> Result<Box<[u8]>> {
    let s = p.get_ref();
    if !s.starts_with('/') {
        return err(p, format!("invalid {what} {s:?}: must start with '/'"));
    }
    if let Some(c) = s.chars().find(|c| {
        c.is_control() || c.is_whitespace() || *c == '?' || *c == '#' || *c == '\\' || !c.is_ascii()
    }) {
        return err(p, format!("invalid {what} {s:?}: must not contain {c:?}"));
    }
    match crate::route::config_path(s.as_bytes()) {
        Ok(decoded) => Ok(decoded.into()),
        Err(why) => err(p, format!("invalid {what} {s:?}: {why}")),
    }
}

fn host_pattern(h: &Spanned<String>) -> Result<HostPattern> {
    let s = h.get_ref().to_ascii_lowercase();
    let (wild, name) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s.as_str()),
    };
    let ipv6 = name.starts_with('[')
        && name.ends_with(']')
        && name[1..name.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    let ok = ipv6 && !wild
        || !name.is_empty()
            && name.len() <= 253
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !ok {
        let hint = if name.contains(':') && !ipv6 {
            " (hosts are matched without the port)"
        } else {
            ""
        };
        return err(
            h,
            format!(
                "invalid host {:?}: expected a host name or \"*.suffix\"{hint}",
                h.get_ref()
            ),
        );
    }
    Ok(if wild {
        HostPattern::Suffix(format!(".{name}").into_bytes().into())
    } else {
        HostPattern::Exact(name.as_bytes().into())
    })
}

#[allow(clippy::too_many_arguments)]
fn route(
    index: usize,
    r: &RawRoute,
    upstreams: &HashMap<&str, usize>,
    limits: &HashMap<&str, usize>,
    auths: &HashMap<&str, usize>,
    consumer_keyed: &[bool],
    policies: &mut Vec<crate::policy::transform::RoutePolicy>,
    logs: &mut super::logs::Logs,
    errs: &mut Errors,
) -> Option<Route> {
    let path = match (&r.path_prefix, &r.path_exact) {
        (Some(_), Some(e)) => {
            errs.at(e, "path_prefix and path_exact exclude each other: give one");
            None
        }
        (Some(p), None) => errs.take(check_path(p, "path_prefix").map(PathMatch::Prefix)),
        (None, Some(e)) => errs.take(check_path(e, "path_exact").map(PathMatch::Exact)),
        (None, None) => Some(PathMatch::Prefix((*b"/").into())),
    };
    let mut hosts = Vec::new();
    let mut hosts_ok = true;
    if let Some(list) = &r.hosts {
        for h in list {
            let Some(p) = errs.take(host_pattern(h)) else {
                hosts_ok = false;
                continue;
            };
            if hosts.contains(&p) {
                errs.at(h, format!("host {:?} listed twice", h.get_ref()));
                hosts_ok = false;
            }
            hosts.push(p);
        }
    }
    let strip = r.strip_prefix.as_ref().is_some_and(|s| *s.get_ref());
    let rewrite = match &r.replace_prefix {
        Some(rp) if strip => {
            errs.at(
                rp,
                "strip_prefix and replace_prefix exclude each other: give one",
            );
            None
        }
        Some(rp) => errs.take(check_replacement(rp).map(Rewrite::Replace)),
        None if strip => Some(Rewrite::Strip),
        None => Some(Rewrite::None),
    };
    let gateway = super::gateway::gateway(r, upstreams, auths, errs);
    let mut rate_limits = Vec::new();
    let mut limits_ok = true;
    for n in r.rate_limits.iter().flatten() {
        match limits.get(n.get_ref().as_str()) {
            Some(&i) if rate_limits.contains(&i) => {
                errs.at(n, format!("rate limit {:?} listed twice", n.get_ref()));
                limits_ok = false;
            }
            Some(&i) => rate_limits.push(i),
            None => {
                errs.at(n, format!("unknown rate limit {:?}", n.get_ref()));
                limits_ok = false;
            }
        }
    }
    let access_log = logs.route(r.access_log.as_ref(), errs);
    let redirect_https = match &r.https_port {
        Some(p) if !r.redirect_https => {
            errs.at(p, "https_port applies with redirect_https = true only");
            None
        }
        Some(p) if *p.get_ref() == 0 => {
            errs.at(p, "https_port = 0: expected 1 to 65535");
            None
        }
        Some(p) => Some(Some(*p.get_ref())),
        None => Some(r.redirect_https.then_some(443)),
    };
    let mut upgrades: Vec<Box<str>> = Vec::new();
    let mut upgrades_ok = true;
    match &r.upgrades {
        None => upgrades.push("websocket".into()),
        Some(list) => {
            for u in list {
                let t = u.get_ref().to_ascii_lowercase();
                let token =
                    !t.is_empty() && t.bytes().all(|b| b == b'/' || crate::http1::is_token(b));
                if !token || upgrades.iter().any(|x| **x == *t) {
                    errs.at(
                        u,
                        format!("invalid or repeated upgrade protocol {:?}", u.get_ref()),
                    );
                    upgrades_ok = false;
                }
                upgrades.push(t.into());
            }
        }
    }
    let mut subjects: Vec<Box<str>> = Vec::new();
    for p in r.client_subjects.iter().flatten() {
        let v = p.get_ref();
        if v.is_empty()
            || v.chars().any(char::is_control)
            || v.strip_suffix('*').unwrap_or(v).contains('*')
        {
            errs.at(p, format!("invalid client subject pattern {v:?}: a subject, or a prefix ending in one '*'"));
            upgrades_ok = false;
        }
        subjects.push(v.as_str().into());
    }
    if !hosts_ok || !limits_ok || !upgrades_ok {
        return None;
    }
    let gateway = gateway?;
    // Limits keyed by the consumer apply after the auth: last, in their order.
    rate_limits.sort_by_key(|&i| consumer_keyed.get(i).copied().unwrap_or(false));
    let consumer_limits = rate_limits
        .iter()
        .filter(|&&i| consumer_keyed.get(i).copied().unwrap_or(false))
        .count();
    if consumer_limits > 0 && r.auth.is_none() {
        errs.at(
            &r.name,
            format!(
                "route {:?} names a rate limit keyed by the consumer but no auth",
                r.name.get_ref()
            ),
        );
        return None;
    }
    let policy = gateway.policy.map(|p| {
        policies.push(p);
        policies.len() - 1
    });
    Some(Route {
        index,
        name: r.name.get_ref().as_str().into(),
        hosts,
        path: path?,
        rewrite: rewrite?,
        upstream: gateway.upstream,
        split: gateway.split,
        conditions: gateway.conditions,
        policy,
        rate_limits: rate_limits.into(),
        consumer_limits,
        access_log: access_log?,
        redirect_https: redirect_https?,
        upgrades: upgrades.into(),
        client_subjects: subjects.into(),
        connect: r.connect,
    })
}

/// `replace_prefix` is written out as given (it is what the backend receives, not something a
/// request is compared with): it must start with `/` and hold only bytes valid in a path.
fn check_replacement(p: &Spanned<String>) -> Result<Box<[u8]>> {
    let s = p.get_ref();
    if !s.starts_with('/') {
        return err(
            p,
            format!("invalid replace_prefix {s:?}: must start with '/'"),
        );
    }
    if let Some(c) = s.chars().find(|&c| !crate::route::is_path_char(c)) {
        return err(
            p,
            format!("invalid replace_prefix {s:?}: must not contain {c:?}"),
        );
    }
    Ok(s.as_bytes().into())
}

fn listener(
    index: usize,
    l: &RawListener,
    (routes, route_index): (&[Option<Route>], &HashMap<&str, usize>),
    upstream_index: &HashMap<&str, usize>,
    logs: &mut super::logs::Logs,
    errs: &mut Errors,
) -> Option<Listener> {
    if l.protocol == ListenerProtocol::Tcp {
        return tcp_listener(index, l, upstream_index, errs);
    }
    for (set, key) in [
        (l.upstream.as_ref().map(Spanned::span), "upstream"),
        (
            l.max_connections.as_ref().map(Spanned::span),
            "max_connections",
        ),
        (l.idle_timeout.as_ref().map(Spanned::span), "idle_timeout"),
    ] {
        if let Some(span) = set {
            errs.0.push(Invalid {
                span: Some(span),
                message: format!(
                    "{key} applies to protocol = \"tcp\" listeners (HTTP listeners route requests)"
                ),
            });
            return None;
        }
    }
    let (name, addr) = listener_name_addr(index, l, errs);
    let mut ok = true;
    let served = match &l.routes {
        None => routes.iter().flatten().cloned().collect(),
        Some(list) => {
            if list.get_ref().is_empty() {
                errs.at(list, "routes is empty: omit it to serve every route");
                ok = false;
            }
            let mut v: Vec<Route> = Vec::new();
            let mut listed = Vec::new();
            for n in list.get_ref() {
                let Some(&i) = route_index.get(n.get_ref().as_str()) else {
                    errs.at(n, format!("unknown route {:?}", n.get_ref()));
                    ok = false;
                    continue;
                };
                if listed.contains(&i) {
                    errs.at(n, format!("route {:?} listed twice", n.get_ref()));
                    ok = false;
                    continue;
                }
                listed.push(i);
                match &routes[i] {
                    Some(r) => v.push(r.clone()),
                    None => ok = false,
                }
            }
            // Routes sharing a host and path are tried in file order, whatever the list says.
            v.sort_by_key(|r| r.index);
            v
        }
    };
    let path = PathOptions {
        merge_slashes: l.merge_slashes,
        escaped_slashes: l.escaped_slashes,
    };
    let access_log = logs.listener(l.access_log.as_ref(), errs);
    let tls = match &l.tls {
        None => Some(None),
        Some(t) => super::tls::listener_tls(t, addr, true, errs).map(Some),
    };
    if !ok {
        return None;
    }
    let access_log = access_log?;
    let logs_any = access_log.is_some()
        || served
            .iter()
            .any(|r| matches!(r.access_log, crate::route::LogChoice::To(_)));
    Some(Listener {
        index,
        name,
        addr: addr?,
        routes: RouteTable::new(served),
        path,
        access_log,
        logs_any,
        proxy_protocol: l.proxy_protocol,
        tls: tls?,
        tcp: None,
    })
}

/// A listener's name (given, else `listener<N>`) and address.
fn listener_name_addr(
    index: usize,
    l: &RawListener,
    errs: &mut Errors,
) -> (String, Option<SocketAddr>) {
    let name = match &l.name {
        Some(n) => {
            errs.take(check_name(n, "listener"));
            n.get_ref().clone()
        }
        None => format!("listener{index}"),
    };
    (name, errs.take(resolve(&l.address, "listener")))
}

/// A `protocol = "tcp"` listener: an upstream instead of routes, no HTTP settings.
fn tcp_listener(
    index: usize,
    l: &RawListener,
    upstream_index: &HashMap<&str, usize>,
    errs: &mut Errors,
) -> Option<Listener> {
    let (name, addr) = listener_name_addr(index, l, errs);
    let mut ok = true;
    if let Some(r) = &l.routes {
        errs.at(
            r,
            "a protocol = \"tcp\" listener forwards to its upstream: routes do not apply",
        );
        ok = false;
    }
    if let Some(a) = &l.access_log {
        errs.at(a, "access_log applies to HTTP listeners only");
        ok = false;
    }
    let upstream = match &l.upstream {
        None => {
            errs.at(
                &l.address,
                "a protocol = \"tcp\" listener needs upstream = \"NAME\"",
            );
            None
        }
        Some(u) => {
            let i = upstream_index.get(u.get_ref().as_str()).copied();
            if i.is_none() {
                errs.at(u, format!("unknown upstream {:?}", u.get_ref()));
            }
            i
        }
    };
    let max_connections = match &l.max_connections {
        None => Some(u32::MAX),
        Some(n) if *n.get_ref() == 0 => {
            errs.at(n, "max_connections = 0: expected 1 or more");
            None
        }
        Some(n) => Some(*n.get_ref()),
    };
    let tls = match &l.tls {
        None => Some(None),
        Some(t) => super::tls::listener_tls(t, addr, false, errs).map(Some),
    };
    if !ok {
        return None;
    }
    Some(Listener {
        index,
        name,
        addr: addr?,
        routes: RouteTable::new(Vec::new()),
        path: PathOptions {
            merge_slashes: l.merge_slashes,
            escaped_slashes: l.escaped_slashes,
        },
        access_log: None,
        logs_any: false,
        proxy_protocol: l.proxy_protocol,
        tls: tls?,
        tcp: Some(TcpForward {
            upstream: upstream?,
            max_connections: max_connections?,
            idle_timeout: l
                .idle_timeout
                .as_ref()
                .map_or(Duration::from_secs(3600), |d| d.get_ref().0),
        }),
    })
}
