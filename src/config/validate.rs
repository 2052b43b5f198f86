//! Semantic checks and the conversion of the raw schema into a [`Snapshot`]. Each check points
//! at the span of the value it rejects.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;

use toml::Spanned;

use super::schema::{RawConfig, RawListener, RawRoute, RawRuntime, RawUpstream, RingFlag};
use super::snapshot::*;
use super::values::Workers;
use crate::route::{HostPattern, PathMatch, Rewrite, Route, RouteTable};

pub struct Invalid {
    pub span: Option<Range<usize>>,
    pub message: String,
}

type Result<T> = std::result::Result<T, Invalid>;

fn err<T, S>(at: &Spanned<S>, message: impl Into<String>) -> Result<T> {
    Err(Invalid {
        span: Some(at.span()),
        message: message.into(),
    })
}

pub fn validate(raw: RawConfig) -> Result<Snapshot> {
    let runtime = runtime(&raw.runtime)?;
    let limits = limits(&raw.limits)?;

    if raw.listeners.is_empty() {
        return Err(Invalid {
            span: None,
            message: "no [[listeners]]: at least one listener is required".into(),
        });
    }
    if raw.upstreams.is_empty() {
        return Err(Invalid {
            span: None,
            message: "no [[upstreams]]: at least one upstream is required".into(),
        });
    }
    if raw.routes.is_empty() {
        return Err(Invalid {
            span: None,
            message: "no [[routes]]: at least one route is required".into(),
        });
    }

    let mut upstreams = Vec::with_capacity(raw.upstreams.len());
    let mut upstream_index: HashMap<&str, usize> = HashMap::new();
    for (i, u) in raw.upstreams.iter().enumerate() {
        let name = u.get_ref().name.get_ref().as_str();
        check_name(&u.get_ref().name, "upstream")?;
        if upstream_index.insert(name, i).is_some() {
            return err(
                &u.get_ref().name,
                format!("duplicate upstream name {name:?}"),
            );
        }
        upstreams.push(upstream(i, u.get_ref())?);
    }

    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut route_index: HashMap<&str, usize> = HashMap::new();
    // (host pattern, path) -> route name, to reject routes that could never match.
    let mut seen: HashMap<(Option<HostPattern>, PathMatch), &str> = HashMap::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let rr = r.get_ref();
        let name = rr.name.get_ref().as_str();
        check_name(&rr.name, "route")?;
        if route_index.insert(name, i).is_some() {
            return err(&rr.name, format!("duplicate route name {name:?}"));
        }
        let route = route(i, rr, &upstream_index)?;
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
        for k in keys {
            if let Some(other) = seen.insert((k, route.path.clone()), name) {
                return err(
                    path_at,
                    format!("route {name:?} has the same host and path as route {other:?} and could never match"),
                );
            }
        }
        routes.push(route);
    }

    let mut listeners = Vec::with_capacity(raw.listeners.len());
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, ()> = HashMap::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let li = listener(i, l.get_ref(), &routes, &route_index)?;
        if names.insert(li.name.clone(), ()).is_some() {
            let at = l.get_ref().name.as_ref().map_or(l.span(), |n| n.span());
            return Err(Invalid {
                span: Some(at),
                message: format!("duplicate listener name {:?}", li.name),
            });
        }
        if addrs.insert(li.addr, ()).is_some() {
            return err(
                &l.get_ref().address,
                format!("duplicate listener address {}", li.addr),
            );
        }
        listeners.push(li);
    }

    Ok(Snapshot {
        runtime,
        limits,
        listeners,
        upstreams,
        routes,
    })
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
    Ok(RuntimeSettings {
        workers,
        workers_auto,
        pin: r.pin,
        driver: r.driver,
        ring_entries,
        ring_flags,
        drain_timeout: r.drain_timeout.0,
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
        Some(n) if (1..=1024).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            return err(
                n,
                format!(
                    "invalid max_headers {}: must be from 1 to 1024",
                    n.get_ref()
                ),
            )
        }
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
fn resolve(addr: &Spanned<String>, what: &str) -> Result<SocketAddr> {
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

fn upstream(index: usize, u: &RawUpstream) -> Result<Upstream> {
    if u.backends.get_ref().is_empty() {
        return err(
            &u.backends,
            format!("upstream {:?} has no backends", u.name.get_ref()),
        );
    }
    let mut backends = Vec::with_capacity(u.backends.get_ref().len());
    for (i, b) in u.backends.get_ref().iter().enumerate() {
        let b = b.get_ref();
        let addr = resolve(&b.address, "backend")?;
        let weight = match &b.weight {
            None => 1,
            Some(w) if (1..=65535).contains(w.get_ref()) => *w.get_ref() as u32,
            Some(w) => {
                return err(
                    w,
                    format!("invalid weight {}: must be from 1 to 65535", w.get_ref()),
                )
            }
        };
        backends.push(Backend {
            index: i,
            addr,
            address: b.address.get_ref().clone(),
            weight,
        });
    }
    let max_idle = match &u.pool.max_idle {
        None => 64,
        Some(n) if (0..=100_000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            return err(
                n,
                format!("invalid max_idle {}: must be from 0 to 100000", n.get_ref()),
            )
        }
    };
    Ok(Upstream {
        index,
        name: u.name.get_ref().clone(),
        balancer: u.balancer,
        backends,
        pool: PoolSettings {
            max_idle,
            idle_timeout: u.pool.idle_timeout.0,
        },
        timeouts: UpstreamTimeouts {
            connect: u.timeouts.connect.0,
            response_head: u.timeouts.response_head.0,
            idle: u.timeouts.idle.0,
        },
    })
}

fn check_path(p: &Spanned<String>, what: &str) -> Result<Box<[u8]>> {
    let s = p.get_ref();
    if !s.starts_with('/') {
        return err(p, format!("invalid {what} {s:?}: must start with '/'"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '?' || *c == '#' || !c.is_ascii())
    {
        return err(p, format!("invalid {what} {s:?}: must not contain {c:?}"));
    }
    Ok(s.as_bytes().into())
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

fn route(index: usize, r: &RawRoute, upstreams: &HashMap<&str, usize>) -> Result<Route> {
    let path = match (&r.path_prefix, &r.path_exact) {
        (Some(_), Some(e)) => {
            return err(e, "path_prefix and path_exact exclude each other: give one")
        }
        (Some(p), None) => PathMatch::Prefix(check_path(p, "path_prefix")?),
        (None, Some(e)) => PathMatch::Exact(check_path(e, "path_exact")?),
        (None, None) => PathMatch::Prefix((*b"/").into()),
    };
    let mut hosts = Vec::new();
    if let Some(list) = &r.hosts {
        for h in list {
            let p = host_pattern(h)?;
            if hosts.contains(&p) {
                return err(h, format!("host {:?} listed twice", h.get_ref()));
            }
            hosts.push(p);
        }
    }
    let strip = r.strip_prefix.as_ref().is_some_and(|s| *s.get_ref());
    let rewrite = match &r.replace_prefix {
        Some(rp) if strip => {
            return err(
                rp,
                "strip_prefix and replace_prefix exclude each other: give one",
            )
        }
        Some(rp) => Rewrite::Replace(check_path(rp, "replace_prefix")?),
        None if strip => Rewrite::Strip,
        None => Rewrite::None,
    };
    let Some(&upstream) = upstreams.get(r.upstream.get_ref().as_str()) else {
        return err(
            &r.upstream,
            format!("unknown upstream {:?}", r.upstream.get_ref()),
        );
    };
    Ok(Route {
        index,
        name: r.name.get_ref().as_str().into(),
        hosts,
        path,
        rewrite,
        upstream,
    })
}

fn listener(
    index: usize,
    l: &RawListener,
    routes: &[Route],
    route_index: &HashMap<&str, usize>,
) -> Result<Listener> {
    let name = match &l.name {
        Some(n) => {
            check_name(n, "listener")?;
            n.get_ref().clone()
        }
        None => format!("listener{index}"),
    };
    let addr = resolve(&l.address, "listener")?;
    let served = match &l.routes {
        None => routes.to_vec(),
        Some(list) => {
            if list.get_ref().is_empty() {
                return err(list, "routes is empty: omit it to serve every route");
            }
            let mut v: Vec<Route> = Vec::new();
            for n in list.get_ref() {
                let Some(&i) = route_index.get(n.get_ref().as_str()) else {
                    return err(n, format!("unknown route {:?}", n.get_ref()));
                };
                if v.iter().any(|r| r.index == i) {
                    return err(n, format!("route {:?} listed twice", n.get_ref()));
                }
                v.push(routes[i].clone());
            }
            v
        }
    };
    Ok(Listener {
        index,
        name,
        addr,
        routes: RouteTable::new(served),
    })
}
