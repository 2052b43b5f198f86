//! Validation of `[[upstreams]]` tables into [`Upstream`]s: backends, balancer and hash key
//! (with the Maglev table built here, once per snapshot), pool, timeouts, response limits,
//! health checks, outlier ejection, retries, circuit breaking, slow start.

use std::time::Duration;

use toml::Spanned;

use super::schema::{BalancerKind, RawBackend, RawHealth, RawRetry, RawUpstream};
use super::snapshot::*;
use super::validate::{err, in_range, resolve, Errors, Result};
use crate::upstream::maglev::{is_prime, DEFAULT_TABLE_SIZE};
use crate::upstream::Maglev;

fn backend(index: usize, b: &RawBackend, errs: &mut Errors) -> Option<Backend> {
    let addr = errs.take(resolve(&b.address, "backend"));
    let weight = match &b.weight {
        None => Some(1),
        Some(w) => errs.take(in_range(w, 1..=65535, "weight", "1 to 65535").map(|w| w as u32)),
    };
    Some(Backend {
        index,
        addr: addr?,
        address: b.address.get_ref().clone(),
        by_name: b.address.get_ref().parse::<std::net::SocketAddr>().is_err(),
        weight: weight?,
    })
}

pub(super) fn upstream(index: usize, u: &RawUpstream, errs: &mut Errors) -> Option<Upstream> {
    let name = u.name.get_ref();
    if u.backends.get_ref().is_empty() {
        errs.at(&u.backends, format!("upstream {name:?} has no backends"));
    }
    let backends: Vec<Option<Backend>> = u
        .backends
        .get_ref()
        .iter()
        .enumerate()
        .map(|(i, b)| backend(i, b.get_ref(), errs))
        .collect();
    let mut seen = std::collections::HashMap::new();
    for b in u.backends.get_ref() {
        let a = b.get_ref().address.get_ref();
        if seen.insert(a.as_str(), ()).is_some() {
            errs.at(&b.get_ref().address, format!("backend {a:?} listed twice"));
        }
    }
    let max_idle = match &u.pool.max_idle {
        None => Some(64),
        Some(n) => {
            errs.take(in_range(n, 0..=100_000, "max_idle", "0 to 100000").map(|n| n as usize))
        }
    };
    let max_response_head = match &u.max_response_head_bytes {
        None => Some(DEFAULT_MAX_RESPONSE_HEAD),
        Some(s) if (1024..=(1 << 20)).contains(&s.get_ref().0) => Some(s.get_ref().0 as usize),
        Some(s) => {
            errs.at(
                s,
                format!(
                    "invalid max_response_head_bytes {}: must be from 1024 to 1MiB",
                    s.get_ref().0
                ),
            );
            None
        }
    };
    let max_response_headers = match &u.max_response_headers {
        None => Some(DEFAULT_MAX_RESPONSE_HEADERS),
        Some(n) => errs
            .take(in_range(n, 1..=1024, "max_response_headers", "1 to 1024").map(|n| n as usize)),
    };
    let hash_on = hash_on(u, errs);
    let table_size = match &u.table_size {
        None => Some(DEFAULT_TABLE_SIZE),
        Some(t) if u.balancer != BalancerKind::ConsistentHash => {
            errs.at(
                t,
                "table_size applies to balancer = \"consistent_hash\" only",
            );
            None
        }
        Some(t) => {
            let n = *t.get_ref();
            if !(backends.len() as u64..=10_000_019).contains(&n) || !is_prime(n) {
                errs.at(
                    t,
                    format!(
                        "invalid table_size {n}: must be a prime from the number of backends to 10000019 (about 100 times the backends or more spreads keys evenly)"
                    ),
                );
                None
            } else {
                Some(n)
            }
        }
    };
    let health = u.health.as_ref().and_then(|h| errs.take(health(h)));
    let outlier = outlier(u, errs);
    let retry = errs.take(retry(&u.retry));
    let panic_threshold = match &u.panic_threshold {
        None => Some(0),
        Some(p) => errs.take(in_range(p, 0..=100, "panic_threshold", "0 to 100")),
    };
    let max_connections = match &u.max_connections {
        None => Some(u32::MAX),
        Some(n) => errs.take(in_range(
            n,
            1..=1_000_000,
            "max_connections",
            "1 to 1000000",
        )),
    };
    let max_pending = match &u.max_pending {
        None => Some(1024),
        Some(n) => errs.take(in_range(n, 0..=1_000_000, "max_pending", "0 to 1000000")),
    };
    let tls = super::tls::upstream_tls(u, errs);
    if backends.iter().any(Option::is_none) || u.backends.get_ref().is_empty() {
        return None;
    }
    let backends: Vec<Backend> = backends.into_iter().flatten().collect();
    let hash_on = hash_on?;
    let maglev = hash_on.as_ref().map(|_| {
        let names: Vec<&str> = backends.iter().map(|b| b.address.as_str()).collect();
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        Maglev::new(&names, &weights, table_size.unwrap_or(DEFAULT_TABLE_SIZE))
    });
    Some(Upstream {
        index,
        name: name.clone(),
        balancer: u.balancer,
        hash_on,
        maglev,
        backends,
        pool: PoolSettings {
            max_idle: max_idle?,
            idle_timeout: u.pool.idle_timeout.0,
        },
        timeouts: UpstreamTimeouts {
            connect: u.timeouts.connect.0,
            response_head: u.timeouts.response_head.0,
            idle: u.timeouts.idle.0,
        },
        max_response_head: max_response_head?,
        max_response_headers: max_response_headers?,
        proxy_protocol: u.proxy_protocol,
        tls: tls?,
        health: match &u.health {
            Some(_) => Some(health?),
            None => None,
        },
        outlier: outlier?,
        retry: retry?,
        panic_threshold: panic_threshold?,
        slow_start: u.slow_start.map_or(Duration::ZERO, |d| d.0),
        max_connections: max_connections?,
        max_pending: max_pending?,
        resolve_interval: u.resolve_interval.map_or(Duration::from_secs(30), |d| d.0),
    })
}

/// `hash_on`: required by `consistent_hash` and refused elsewhere. `Some(None)`: no hashing.
fn hash_on(u: &RawUpstream, errs: &mut Errors) -> Option<Option<HashOn>> {
    let consistent = u.balancer == BalancerKind::ConsistentHash;
    match &u.hash_on {
        None if consistent => {
            errs.at(
                &u.name,
                format!(
                    "upstream {:?}: balancer = \"consistent_hash\" needs hash_on (\"client_ip\", \"header:NAME\", \"cookie:NAME\" or \"path\")",
                    u.name.get_ref()
                ),
            );
            None
        }
        None => Some(None),
        Some(h) if !consistent => {
            errs.at(h, "hash_on applies to balancer = \"consistent_hash\" only");
            None
        }
        Some(h) => {
            let s = h.get_ref();
            let token = |n: &str| crate::http1::is_token_str(n.as_bytes());
            let on = match s.split_once(':') {
                None if s == "client_ip" => Some(HashOn::ClientIp),
                None if s == "path" => Some(HashOn::Path),
                Some(("header", n)) if token(n) => {
                    Some(HashOn::Header(n.to_ascii_lowercase().into()))
                }
                Some(("cookie", n)) if token(n) => Some(HashOn::Cookie(n.into())),
                _ => None,
            };
            if on.is_none() {
                errs.at(
                    h,
                    format!("invalid hash_on {s:?}: expected \"client_ip\", \"header:NAME\", \"cookie:NAME\" or \"path\""),
                );
            }
            on.map(Some)
        }
    }
}

fn health(h: &Spanned<RawHealth>) -> Result<HealthCheck> {
    let r = h.get_ref();
    let path = match (&r.path, r.tcp) {
        (Some(p), true) => return err(p, "give path (an HTTP check) or tcp = true, not both"),
        (None, false) => {
            return err(
                h,
                "[upstreams.health] needs path = \"/...\" (an HTTP check) or tcp = true",
            )
        }
        (Some(p), false) => {
            let s = p.get_ref();
            if !s.starts_with('/') || s.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
                return err(
                    p,
                    format!("invalid health path {s:?}: must start with '/' and hold visible ASCII only"),
                );
            }
            Some(s.clone())
        }
        (None, true) => None,
    };
    let host = match &r.host {
        Some(hh) => {
            let s = hh.get_ref();
            if s.is_empty() || s.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
                return err(hh, format!("invalid health host {s:?}"));
            }
            Some(s.clone())
        }
        None => None,
    };
    if r.timeout.0 > r.interval.0 {
        return err(h, "health timeout must not be longer than interval");
    }
    let rise = match &r.rise {
        None => 2,
        Some(n) => in_range(n, 1..=100, "rise", "1 to 100")?,
    };
    let fall = match &r.fall {
        None => 3,
        Some(n) => in_range(n, 1..=100, "fall", "1 to 100")?,
    };
    let expect = match &r.expect_status {
        None => vec![(200, 399)],
        Some(e) => status_ranges(e.get_ref()).ok_or(()).or_else(|_| {
            err(
                e,
                format!(
                    "invalid expect_status {:?}: expected codes or ranges from 100 to 599, e.g. \"200-399\" or \"200,204\"",
                    e.get_ref()
                ),
            )
        })?,
    };
    Ok(HealthCheck {
        path,
        host,
        interval: r.interval.0,
        timeout: r.timeout.0,
        rise,
        fall,
        expect,
        start_down: r.start_down,
    })
}

/// `"200-399"`, `"200,204"`, `"200-299,404"`.
fn status_ranges(s: &str) -> Option<Vec<(u16, u16)>> {
    let code = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    s.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => Some((code(a)?, code(b)?)).filter(|(a, b)| a <= b),
            None => code(part).map(|c| (c, c)),
        })
        .collect()
}

fn outlier(u: &RawUpstream, errs: &mut Errors) -> Option<Outlier> {
    let o = &u.outlier;
    let consecutive_failures = match &o.consecutive_failures {
        None => Some(5),
        Some(n) => errs.take(in_range(n, 0..=1000, "consecutive_failures", "0 to 1000")),
    };
    let max_ejected_percent = match &o.max_ejected_percent {
        None => Some(50),
        Some(n) => errs.take(in_range(n, 0..=100, "max_ejected_percent", "0 to 100")),
    };
    Some(Outlier {
        consecutive_failures: consecutive_failures?,
        base_ejection: o.base_ejection.0,
        max_ejected_percent: max_ejected_percent?,
    })
}

fn retry(r: &RawRetry) -> Result<RetryPolicy> {
    let attempts = match &r.attempts {
        None => 2,
        Some(n) => in_range(n, 1..=10, "attempts", "1 to 10")?,
    };
    let budget_percent = match &r.budget_percent {
        None => 20,
        Some(n) => in_range(n, 0..=100, "budget_percent", "0 to 100")?,
    };
    let min_concurrent = match &r.min_concurrent {
        None => 3,
        Some(n) => in_range(n, 0..=100_000, "min_concurrent", "0 to 100000")?,
    };
    let mut p = RetryPolicy {
        attempts,
        budget_percent,
        min_concurrent,
        on_connect: true,
        on_reset: true,
        on_timeout: false,
        on_status: 0,
    };
    if let Some(list) = &r.on {
        p.on_connect = false;
        p.on_reset = false;
        for item in list.get_ref() {
            match item.get_ref().as_str() {
                "connect" => p.on_connect = true,
                "reset" => p.on_reset = true,
                "timeout" => p.on_timeout = true,
                s => match s.parse::<u16>() {
                    Ok(code @ 500..=599) => p.on_status |= 1u128 << (code - 500),
                    _ => {
                        return err(
                            item,
                            format!("invalid retry condition {s:?}: expected \"connect\", \"reset\", \"timeout\" or a 5xx status such as \"503\""),
                        )
                    }
                },
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::status_ranges;

    #[test]
    fn status_range_lists() {
        assert_eq!(status_ranges("200-399"), Some(vec![(200, 399)]));
        assert_eq!(
            status_ranges("200, 204"),
            Some(vec![(200, 200), (204, 204)])
        );
        assert_eq!(
            status_ranges("200-299,404"),
            Some(vec![(200, 299), (404, 404)])
        );
        for bad in ["", "2xx", "399-200", "99", "600", "200-"] {
            assert_eq!(status_ranges(bad), None, "{bad}");
        }
    }
}
