//! Validation of `[[rate_limits]]` and `[redis]`.

use std::time::Duration;

use toml::Spanned;

use super::schema::{LimitMode, RawRateLimit, RawRedis};
use super::snapshot::{LimitKey, RateLimit, RedisSettings};
use super::validate::{err, in_range, Errors, Result};

pub(super) fn rate_limit(index: usize, l: &RawRateLimit, errs: &mut Errors) -> Option<RateLimit> {
    let name = l.name.get_ref();
    let key = errs.take(limit_key(&l.key));
    let rate = errs.take(in_range(
        &l.rate,
        1..=1_000_000_000,
        "rate",
        "1 to 1000000000",
    ));
    let burst = match &l.burst {
        None => Some(0),
        Some(b) => errs.take(in_range(b, 0..=1_000_000_000, "burst", "0 to 1000000000")),
    };
    let sync_interval = match &l.sync_interval {
        None => Some(Duration::from_millis(50)),
        Some(d)
            if (Duration::from_millis(5)..=Duration::from_secs(10)).contains(&d.get_ref().0) =>
        {
            Some(d.get_ref().0)
        }
        Some(d) => {
            errs.at(d, "invalid sync_interval: must be from 5ms to 10s");
            None
        }
    };
    let max_keys = match &l.max_keys {
        None => Some(100_000),
        Some(n) => errs.take(in_range(n, 1..=100_000_000, "max_keys", "1 to 100000000")),
    };
    let status = match &l.status {
        None => Some(429),
        Some(s) => errs.take(in_range(s, 400..=599, "status", "400 to 599")),
    };
    let period = l.period.0;
    let (rate, burst) = (rate? as u64, burst? as u64);
    let window = period.as_secs_f64();
    let w = if window.fract() == 0.0 {
        format!("{}", window as u64)
    } else {
        format!("{window}")
    };
    Some(RateLimit {
        index,
        name: name.clone(),
        key: key?,
        rate,
        period,
        burst,
        mode: l.mode,
        sync_interval: sync_interval?,
        max_keys: max_keys? as usize,
        status: status?,
        headers: l.headers,
        on_redis_error: l.on_redis_error,
        policy_field: format!("RateLimit-Policy: \"{name}\";q={rate};w={w}\r\n").into(),
    })
}

fn limit_key(k: &Spanned<String>) -> Result<LimitKey> {
    let s = k.get_ref();
    let token = |n: &str| crate::http1::is_token_str(n.as_bytes());
    match s.split_once(':') {
        None if s == "client_ip" => Ok(LimitKey::ClientIp),
        None if s == "route" => Ok(LimitKey::Route),
        None if s == "consumer" => Ok(LimitKey::Consumer),
        Some(("header", n)) if token(n) => Ok(LimitKey::Header(n.to_ascii_lowercase().into())),
        Some(("cookie", n)) if token(n) => Ok(LimitKey::Cookie(n.into())),
        _ => err(
            k,
            format!("invalid key {s:?}: expected \"client_ip\", \"route\", \"consumer\", \"header:NAME\" or \"cookie:NAME\""),
        ),
    }
}

pub(super) fn redis(r: &Spanned<RawRedis>) -> Result<RedisSettings> {
    let url = r.get_ref().url.get_ref();
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"))
    {
        return err(
            &r.get_ref().url,
            format!("invalid redis url {url:?}: expected redis://HOST:PORT/DB"),
        );
    }
    Ok(RedisSettings {
        url: url.clone(),
        timeout: r.get_ref().timeout.0,
    })
}

/// A `redis` limit needs `[redis]`.
pub(super) fn check_redis(limits: &[Spanned<RawRateLimit>], have: bool, errs: &mut Errors) {
    if have {
        return;
    }
    for l in limits {
        if l.get_ref().mode == LimitMode::Redis {
            errs.at(
                &l.get_ref().name,
                format!(
                    "rate limit {:?} has mode = \"redis\" but there is no [redis] table",
                    l.get_ref().name.get_ref()
                ),
            );
        }
    }
}

pub(super) fn admin(
    a: &Spanned<super::schema::RawAdmin>,
) -> Result<super::snapshot::AdminSettings> {
    let r = a.get_ref();
    let addr = super::validate::resolve(&r.address, "admin")?;
    let token = match (&r.token, &r.token_file) {
        (Some(t), Some(_)) => return err(t, "give token or token_file, not both"),
        (Some(t), None) if t.get_ref().is_empty() => return err(t, "token must not be empty"),
        (Some(t), None) => Some(t.get_ref().clone()),
        (None, Some(f)) => match std::fs::read_to_string(f.get_ref()) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Ok(_) => return err(f, format!("token_file {:?} is empty", f.get_ref())),
            Err(e) => return err(f, format!("cannot read token_file {:?}: {e}", f.get_ref())),
        },
        (None, None) => None,
    };
    if token.is_none() && !addr.ip().is_loopback() {
        return err(
            &r.address,
            format!("admin address {addr} is not loopback: give token or token_file (anyone who reaches it could change the proxy)"),
        );
    }
    Ok(super::snapshot::AdminSettings { addr, token })
}
