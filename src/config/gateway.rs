//! The gateway keys of a route: conditions beyond host and path (`methods`, `path_regex`,
//! `match_headers`, `match_query`), the canary `split`, and the policies compiled into a
//! [`RoutePolicy`] (`auth`, `consumers`, header / path / query / Host transforms, `request_id`,
//! `cors`, `return`, `aggregate`). Every error points at the key that is wrong.

use std::collections::HashMap;

use toml::Spanned;

use super::schema::{AggregateOnError, RawFieldMatch, RawHeaderOps, RawRoute};
use super::validate::{err, Errors, Result};
use crate::policy::transform::{
    Aggregate, AggregatePart, Cors, HeaderOps, PathRewrite, Place, QueryOps, Return, RoutePolicy,
    Template,
};
use crate::route::{Conditions, FieldMatch, Test};

/// Largest body an aggregate part may send unless `aggregate_max_bytes` says otherwise.
const AGGREGATE_MAX: u64 = 1 << 20;
/// An aggregate part's timeout unless it gives one.
const PART_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the gateway keys of one route compile to.
pub(super) struct Gateway {
    pub conditions: Option<Box<Conditions>>,
    pub split: Box<[(usize, u32)]>,
    pub policy: Option<RoutePolicy>,
    /// The upstream the route names, or the first of its split.
    pub upstream: Option<usize>,
}

/// Compiles the gateway keys of `r`; `None` when one of them is invalid (errors recorded).
pub(super) fn gateway(
    r: &RawRoute,
    upstreams: &HashMap<&str, usize>,
    auths: &HashMap<&str, usize>,
    errs: &mut Errors,
) -> Option<Gateway> {
    let before = errs.0.len();
    let upstream_of = |n: &Spanned<String>, errs: &mut Errors| {
        let u = upstreams.get(n.get_ref().as_str()).copied();
        if u.is_none() {
            errs.at(n, format!("unknown upstream {:?}", n.get_ref()));
        }
        u
    };

    // Conditions.
    let mut methods = Vec::new();
    for m in r.methods.iter().flatten() {
        let v = m.get_ref();
        if v.is_empty()
            || !crate::http1::is_token_str(v.as_bytes())
            || v.bytes().any(|b| b.is_ascii_lowercase())
        {
            errs.at(
                m,
                format!("invalid method {v:?}: an upper-case token such as \"GET\""),
            );
        }
        methods.push(v.as_bytes().into());
    }
    let path_regex = r
        .path_regex
        .as_ref()
        .and_then(|p| errs.take(regex(p, "path_regex")));
    let headers = field_matches(r.match_headers.as_deref(), true, errs);
    let query = field_matches(r.match_query.as_deref(), false, errs);
    let captures: Vec<Option<String>> = match &path_regex {
        Some(re) => re.capture_names().map(|n| n.map(str::to_string)).collect(),
        None => vec![None],
    };
    let captures: Vec<Option<&str>> = captures.iter().map(|c| c.as_deref()).collect();
    let conditions =
        (!methods.is_empty() || path_regex.is_some() || !headers.is_empty() || !query.is_empty())
            .then(|| {
                Box::new(Conditions {
                    methods: methods.into(),
                    headers: headers.into(),
                    query: query.into(),
                    path_regex,
                })
            });

    // Upstream or split.
    let mut upstream = r.upstream.as_ref().and_then(|u| upstream_of(u, errs));
    let mut split = Vec::new();
    if let Some(list) = &r.split {
        if let Some(u) = &r.upstream {
            errs.at(u, "upstream and split exclude each other: give one");
        }
        if list.get_ref().len() < 2 {
            errs.at(
                list,
                "split needs at least two { upstream, weight } entries",
            );
        }
        let mut total: u32 = 0;
        for s in list.get_ref() {
            let s = s.get_ref();
            let w = *s.weight.get_ref();
            if !(1..=1_000_000).contains(&w) {
                errs.at(&s.weight, format!("weight = {w}: expected 1 to 1000000"));
                continue;
            }
            if let Some(u) = upstream_of(&s.upstream, errs) {
                total += w as u32;
                split.push((u, total));
            }
        }
        upstream = split.first().map(|s| s.0);
    }

    // Policies.
    let auth = r.auth.as_ref().and_then(|a| {
        let i = auths.get(a.get_ref().as_str()).copied();
        if i.is_none() {
            errs.at(a, format!("unknown auth {:?}", a.get_ref()));
        }
        i
    });
    let mut consumers = Vec::new();
    for c in r.consumers.iter().flatten() {
        if r.auth.is_none() {
            errs.at(c, "consumers applies to a route with auth only");
            break;
        }
        consumers.push(c.get_ref().as_str().into());
    }
    let request_headers = header_ops(r.request_headers.as_ref(), Place::Request, &captures, errs);
    let response_headers = header_ops(
        r.response_headers.as_ref(),
        Place::Response,
        &captures,
        errs,
    );
    let path_rewrite = r.path_rewrite.as_ref().and_then(|p| {
        let p = p.get_ref();
        if r.strip_prefix.as_ref().is_some_and(|s| *s.get_ref()) || r.replace_prefix.is_some() {
            errs.at(
                &p.regex,
                "path_rewrite excludes strip_prefix and replace_prefix",
            );
            return None;
        }
        let re = errs.take(regex(&p.regex, "path_rewrite.regex"))?;
        let rep = p.replace.get_ref();
        if !rep.starts_with('/') && !rep.starts_with('$') {
            errs.at(
                &p.replace,
                format!("invalid replace {rep:?}: must start with '/'"),
            );
            return None;
        }
        if let Some(c) = rep
            .chars()
            .find(|&c| !(crate::route::is_path_char(c) || matches!(c, '$' | '{' | '}')))
        {
            errs.at(
                &p.replace,
                format!("invalid replace {rep:?}: must not contain {c:?}"),
            );
            return None;
        }
        errs.take(PathRewrite::new(re, rep).or_else(|e| err(&p.replace, e)))
    });
    let query_ops = r.query.as_ref().map(|q| {
        let q = q.get_ref();
        QueryOps {
            set: q
                .set
                .iter()
                .filter_map(|(n, v)| {
                    let t = errs.take(template(v, Place::Request, &captures))?;
                    Some((n.get_ref().as_str().into(), t))
                })
                .collect(),
            remove: q
                .remove
                .iter()
                .map(|n| n.get_ref().as_str().into())
                .collect(),
        }
    });
    let host = r
        .host_rewrite
        .as_ref()
        .and_then(|h| errs.take(template(h, Place::Request, &captures)));
    let cors = r.cors.as_ref().and_then(|c| cors(c, errs));
    let ret = r.ret.as_ref().and_then(|t| {
        let t = t.get_ref();
        let status = *t.status.get_ref();
        if !(200..=599).contains(&status) {
            errs.at(&t.status, format!("status = {status}: expected 200 to 599"));
        }
        if (300..400).contains(&status) && t.location.is_none() {
            errs.at(&t.status, format!("status = {status} needs a location"));
        }
        let location = t
            .location
            .as_ref()
            .and_then(|l| errs.take(template(l, Place::Request, &captures)));
        let body = t.body.as_ref().and_then(|b| {
            let text = b.get_ref();
            // A body may hold line breaks and tabs; a template for a field may not.
            errs.take(Template::parse(text, Place::Request, &captures).or_else(|e| err(b, e)))
        });
        let content_type = match &t.content_type {
            Some(c) if c.get_ref().chars().any(|c| c.is_control()) => {
                errs.at(c, "content_type must not hold control characters");
                return None;
            }
            Some(c) => c.get_ref().as_str().into(),
            None => "text/plain".into(),
        };
        Some(Return {
            status,
            location,
            body,
            content_type,
        })
    });
    let aggregate = r.aggregate.as_ref().map(|parts| {
        if parts.get_ref().is_empty() {
            errs.at(parts, "aggregate is empty: give at least one part");
        }
        let mut keys: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for p in parts.get_ref() {
            let p = p.get_ref();
            if let Some(k) = &p.key {
                if keys.contains(&k.get_ref().as_str()) || k.get_ref() == "partial" || k.get_ref() == "errors" {
                    errs.at(k, format!("aggregate key {:?} is repeated or reserved (partial, errors)", k.get_ref()));
                }
                keys.push(k.get_ref());
            }
            let path = p.path.get_ref();
            if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
                errs.at(&p.path, format!("invalid aggregate path {path:?}: must start with '/' and hold no spaces or control characters"));
            }
            let tpl = errs.take(template(&p.path, Place::Request, &captures));
            let up = upstream_of(&p.upstream, errs);
            if let (Some(path), Some(upstream)) = (tpl, up) {
                out.push(AggregatePart {
                    key: p.key.as_ref().map(|k| k.get_ref().as_str().into()),
                    upstream,
                    path,
                    timeout: p.timeout.as_ref().map_or(PART_TIMEOUT, |t| t.get_ref().0),
                });
            }
        }
        let max = r
            .aggregate_max_bytes
            .as_ref()
            .map_or(AGGREGATE_MAX, |s| s.get_ref().0);
        Aggregate {
            parts: out.into(),
            fail_whole: r.aggregate_on_error == AggregateOnError::Fail,
            max_bytes: max.min(64 << 20) as usize,
        }
    });
    if let (None, Some(m)) = (&r.aggregate, &r.aggregate_max_bytes) {
        errs.at(
            m,
            "aggregate_max_bytes applies to a route with aggregate only",
        );
    }
    // What the route forwards to: an upstream (or split), unless it answers itself.
    let answers_itself = r.ret.is_some() || r.aggregate.is_some();
    if let (Some(t), Some(_)) = (&r.ret, &r.aggregate) {
        errs.at(t, "return and aggregate exclude each other");
    }
    if answers_itself {
        if r.connect {
            errs.at(
                &r.name,
                "connect = true needs an upstream, not return or aggregate",
            );
        }
        if let Some(s) = &r.split {
            errs.at(
                s,
                "split does not apply to a route with return or aggregate",
            );
        }
    } else if r.upstream.is_none() && r.split.is_none() {
        errs.at(
            &r.name,
            format!(
                "route {:?} names no upstream: give upstream, split, aggregate or return",
                r.name.get_ref()
            ),
        );
    }
    if errs.0.len() > before {
        return None;
    }
    let policy = RoutePolicy {
        auth,
        consumers: consumers.into(),
        request_headers: request_headers.unwrap_or_default(),
        response_headers: response_headers.unwrap_or_default(),
        path_rewrite,
        query: query_ops.unwrap_or_default(),
        host,
        request_id: r.request_id,
        cors,
        ret,
        aggregate,
    };
    let plain = policy.auth.is_none()
        && policy.request_headers.is_empty()
        && policy.response_headers.is_empty()
        && policy.path_rewrite.is_none()
        && policy.query.is_empty()
        && policy.host.is_none()
        && !policy.request_id
        && policy.cors.is_none()
        && policy.ret.is_none()
        && policy.aggregate.is_none();
    Some(Gateway {
        conditions,
        split: split.into(),
        policy: (!plain).then_some(policy),
        upstream,
    })
}

fn regex(p: &Spanned<String>, what: &str) -> Result<regex::bytes::Regex> {
    regex::bytes::RegexBuilder::new(p.get_ref())
        .size_limit(1 << 20)
        .build()
        .or_else(|e| {
            // The regex crate's message spans lines (the pattern, a caret, the error): keep
            // the error.
            let text = e.to_string();
            let why = text
                .lines()
                .last()
                .unwrap_or("")
                .trim_start_matches("error: ");
            err(p, format!("invalid {what} {:?}: {why}", p.get_ref()))
        })
}

fn template(t: &Spanned<String>, place: Place, captures: &[Option<&str>]) -> Result<Template> {
    let s = t.get_ref();
    if s.chars().any(|c| c.is_control()) {
        return err(t, format!("{s:?} holds a control character"));
    }
    Template::parse(s, place, captures).or_else(|e| err(t, e))
}

fn field_name(n: &Spanned<String>, errs: &mut Errors) -> bool {
    let ok = crate::http1::is_token_str(n.get_ref().as_bytes());
    if !ok {
        errs.at(n, format!("invalid field name {:?}", n.get_ref()));
    }
    ok
}

fn field_matches(
    list: Option<&[Spanned<RawFieldMatch>]>,
    header: bool,
    errs: &mut Errors,
) -> Vec<FieldMatch> {
    let mut out = Vec::new();
    for m in list.into_iter().flatten() {
        let m = m.get_ref();
        if header && !field_name(&m.name, errs) {
            continue;
        }
        if !header && m.name.get_ref().is_empty() {
            errs.at(&m.name, "empty query parameter name");
            continue;
        }
        let given = [
            m.exact.is_some(),
            m.prefix.is_some(),
            m.regex.is_some(),
            m.present.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            errs.at(&m.name, "give exactly one of exact, prefix, regex, present");
            continue;
        }
        let test = if let Some(v) = &m.exact {
            Test::Exact(v.get_ref().as_bytes().into())
        } else if let Some(v) = &m.prefix {
            Test::Prefix(v.get_ref().as_bytes().into())
        } else if let Some(v) = &m.regex {
            match errs.take(regex(v, "regex")) {
                Some(r) => Test::Regex(r),
                None => continue,
            }
        } else {
            Test::Present(m.present.as_ref().is_some_and(|p| *p.get_ref()))
        };
        out.push(FieldMatch {
            name: m.name.get_ref().as_str().into(),
            test,
        });
    }
    out
}

/// Names the proxy writes itself: a transform may not set or remove them.
const RESERVED: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
];

fn header_ops(
    raw: Option<&Spanned<RawHeaderOps>>,
    place: Place,
    captures: &[Option<&str>],
    errs: &mut Errors,
) -> Option<HeaderOps> {
    let raw = raw?.get_ref();
    let name = |n: &Spanned<String>, errs: &mut Errors| -> Option<Box<str>> {
        if !field_name(n, errs) {
            return None;
        }
        let lower = n.get_ref().to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) || (place == Place::Request && lower == "host") {
            errs.at(
                n,
                format!(
                    "{:?} is managed by the proxy and cannot be transformed{}",
                    n.get_ref(),
                    if lower == "host" {
                        " (use host_rewrite)"
                    } else {
                        ""
                    }
                ),
            );
            return None;
        }
        Some(n.get_ref().as_str().into())
    };
    let pairs = |m: &std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
                 errs: &mut Errors| {
        m.iter()
            .filter_map(|(n, v)| {
                let n = name(n, errs)?;
                let t = errs.take(template(v, place, captures))?;
                Some((n, t))
            })
            .collect::<Vec<_>>()
    };
    let set = pairs(&raw.set, errs);
    let add = pairs(&raw.add, errs);
    let remove: Vec<Box<str>> = raw.remove.iter().filter_map(|n| name(n, errs)).collect();
    Some(HeaderOps::new(set, add, remove))
}

fn cors(c: &Spanned<super::schema::RawCors>, errs: &mut Errors) -> Option<Cors> {
    let c = c.get_ref();
    let origins: Vec<Box<str>> = c
        .origins
        .get_ref()
        .iter()
        .map(|o| o.get_ref().as_str().into())
        .collect();
    if origins.is_empty() {
        errs.at(&c.origins, "origins is empty: give origins or [\"*\"]");
        return None;
    }
    for o in c.origins.get_ref() {
        let v = o.get_ref();
        if v != "*" && !(v.starts_with("http://") || v.starts_with("https://"))
            || v.chars().any(|c| c.is_control() || c == ' ')
        {
            errs.at(
                o,
                format!("invalid origin {v:?}: \"*\" or scheme://host[:port]"),
            );
            return None;
        }
    }
    let list = |l: &Option<Vec<Spanned<String>>>, errs: &mut Errors| -> Option<String> {
        let l = l.as_ref()?;
        for v in l {
            if !crate::http1::is_token_str(v.get_ref().as_bytes()) {
                errs.at(v, format!("invalid name {:?}", v.get_ref()));
            }
        }
        Some(
            l.iter()
                .map(|v| v.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    if c.credentials && origins.iter().any(|o| &**o == "*") {
        errs.at(
            &c.origins,
            "origins = [\"*\"] with credentials = true would let every site read credentialed answers: list the origins",
        );
        return None;
    }
    let methods = list(&c.methods, errs)
        .unwrap_or_else(|| "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS".into());
    let headers = list(&c.headers, errs);
    let expose = list(&c.expose_headers, errs).unwrap_or_default();
    Some(Cors {
        any_origin: origins.iter().any(|o| &**o == "*"),
        origins: origins.into(),
        methods: methods.into(),
        headers: headers.map(Into::into),
        expose: expose.into(),
        credentials: c.credentials,
        max_age: c.max_age.map(|d| d.0.as_secs()),
    })
}
