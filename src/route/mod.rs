//! The compiled route table: step three of the forwarding path (accept → parse → **route** →
//! balance → forward). The proxy hands it the request's `Host` and path once the head is parsed
//! and gets back a borrowed [`Route`] naming the upstream (by index into the snapshot) and how to
//! rewrite the request target. Built once per listener when the config snapshot is validated;
//! immutable afterwards and shared read-only by every worker, so a lookup allocates nothing and
//! touches no lock or atomic.
//!
//! Precedence: host groups are tried from most to least specific — the exact host, then
//! `*.suffix` wildcards (longest suffix first), then routes without `hosts` — and the first group
//! with a matching path wins. Inside a group an exact path beats every prefix, and among
//! prefixes the longest wins; routes with the same path are tried in file order, the first
//! whose conditions (method, header, query: [`Conditions`]) hold winning. Hosts compare case-insensitively, without the port and a trailing
//! dot. Paths compare byte for byte against the request's normalised path ([`normalize`]:
//! decoded, dot segments resolved, slashes merged), never against the bytes as received.

#![forbid(unsafe_code)]

mod matcher;
mod path;

pub use matcher::{decode as decode_query, query_param, Conditions, FieldMatch, RequestView, Test};
pub use path::{
    config_path, encoded_len, is_path_char, normalize, Normalized, PathError, PathOptions,
};

use ahash::AHashMap;

/// Longest host name we look up (DNS caps names at 253 bytes); longer hosts only match routes
/// without `hosts`.
pub const MAX_HOST_LEN: usize = 255;

/// How a route matches the path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The path starts with these bytes.
    Prefix(Box<[u8]>),
    /// The path is exactly these bytes.
    Exact(Box<[u8]>),
}

impl PathMatch {
    fn len(&self) -> usize {
        match self {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p.len(),
        }
    }
}

/// A host a route answers for (stored lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `api.example.com`
    Exact(Box<[u8]>),
    /// `*.example.com`, stored as the suffix `.example.com`: matches any subdomain, not the bare
    /// domain.
    Suffix(Box<[u8]>),
}

/// How the request target is rewritten before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Forward the target unchanged.
    None,
    /// Remove the matched prefix; an empty result (or one not starting with `/`) gets a `/`.
    Strip,
    /// Replace the matched prefix with these bytes.
    Replace(Box<[u8]>),
}

/// One route of the snapshot.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in `Snapshot::routes` (file order).
    pub index: usize,
    pub name: Box<str>,
    /// Empty: any host.
    pub hosts: Vec<HostPattern>,
    pub path: PathMatch,
    pub rewrite: Rewrite,
    /// Index into `Snapshot::upstreams`; `None` for a route that answers itself (`return`) or
    /// only aggregates.
    pub upstream: Option<usize>,
    /// Weighted split between upstreams: (upstream index, cumulative weight), empty when the
    /// route has one upstream.
    pub split: Box<[(usize, u32)]>,
    /// Conditions beyond host and path (method, header, query); `None`: host and path decide.
    pub conditions: Option<Box<Conditions>>,
    /// Index into `Snapshot::policies` when the route names policies or transforms beyond rate
    /// limits; `None` for a plain route (one check on the path).
    pub policy: Option<usize>,
    /// Indices into `Snapshot::rate_limits`, in the order they apply: those keyed by the
    /// consumer last (they apply after the auth).
    pub rate_limits: Box<[usize]>,
    /// How many of `rate_limits` (the last ones) are keyed by the consumer.
    pub consumer_limits: usize,
    /// Where the route's requests are logged.
    pub access_log: LogChoice,
    /// On a listener without TLS, requests are answered with a redirect to `https://` on this
    /// port instead of being forwarded.
    pub redirect_https: Option<u16>,
    /// The `Upgrade` protocols forwarded (lower case; `websocket` unless the route says).
    pub upgrades: Box<[Box<str>]>,
    /// When not empty, only clients whose verified certificate's subject matches one of these
    /// (exactly, or up to a final `*`) are forwarded; others get 403.
    pub client_subjects: Box<[Box<str>]>,
    /// `CONNECT` requests are answered 200 and tunnelled to a backend of the upstream.
    pub connect: bool,
}

impl Route {
    /// Whether a connection whose verified client certificate has `subject` may use the route.
    pub fn admits_subject(&self, subject: Option<&str>) -> bool {
        self.client_subjects.is_empty()
            || subject.is_some_and(|s| {
                self.client_subjects
                    .iter()
                    .any(|p| match p.strip_suffix('*') {
                        Some(prefix) => s.starts_with(prefix),
                        None => s == &**p,
                    })
            })
    }
}

/// A route's `access_log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogChoice {
    /// The listener's, if it has one.
    #[default]
    Listener,
    /// Not logged.
    Off,
    /// This one (index into `Snapshot::access_logs`).
    To(usize),
}

/// A rewritten request target in two borrowed pieces: write `prefix` then `rest`. Nothing is
/// allocated; with [`Rewrite::None`] `prefix` is empty and `rest` is the original target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrittenTarget<'a> {
    pub prefix: &'a [u8],
    pub rest: &'a [u8],
}

impl RewrittenTarget<'_> {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The target as one owned buffer (tests and slow paths only).
    pub fn to_vec(&self) -> Vec<u8> {
        [self.prefix, self.rest].concat()
    }
}

impl Route {
    /// Rewrites an origin-form request target (`/path?query`) whose path this route matched:
    /// the path is the one received or the normalised one, and its decoded form (what was given
    /// to [`RouteTable::find`]) starts with the route's path. Escapes in the matched part count
    /// as the one byte they stand for.
    pub fn rewrite<'a>(&'a self, target: &'a [u8]) -> RewrittenTarget<'a> {
        let unchanged = RewrittenTarget {
            prefix: b"",
            rest: target,
        };
        if self.rewrite == Rewrite::None {
            return unchanged;
        }
        let rest = &target[encoded_len(target, self.path.len())..];
        match &self.rewrite {
            Rewrite::None => unchanged,
            Rewrite::Strip if rest.first() == Some(&b'/') => RewrittenTarget { prefix: b"", rest },
            Rewrite::Strip => RewrittenTarget { prefix: b"/", rest },
            Rewrite::Replace(with) => {
                let rest = if with.last() == Some(&b'/') && rest.first() == Some(&b'/') {
                    &rest[1..]
                } else {
                    rest
                };
                RewrittenTarget { prefix: with, rest }
            }
        }
    }
}

/// What a host group says about a request.
enum Lookup {
    Found(usize),
    /// Routes of the group match the path, but none whose conditions hold: the group decides
    /// (no route), later groups are not tried.
    Refused,
    /// No route of the group matches the path.
    Miss,
}

/// Prefixes tried one by one below this many in a host group; from it on, indexed by first
/// segment.
const SEGMENT_INDEX_FROM: usize = 16;

/// Routes sharing one path (file order): the first whose conditions hold wins.
type Candidates = Box<[usize]>;

/// Prefixes with their candidates, longest first.
type Prefixes = Vec<(Box<[u8]>, Candidates)>;

/// Path rules of one host group: exact paths in a map; prefixes longest first, indexed by their
/// first segment so that a table of a thousand prefixes is not scanned whole.
#[derive(Debug, Default, Clone)]
struct PathRules {
    exact: AHashMap<Box<[u8]>, Candidates>,
    /// Prefixes holding a second `/` (`/api/…`), by their first segment (`/api`), longest first.
    by_segment: AHashMap<Box<[u8]>, Prefixes>,
    /// Prefixes without a second `/` (`/`, `/api`, `/ap`), longest first. A path matching one
    /// of these never matches a longer prefix of another segment, so the segment's own list is
    /// tried first and these after.
    short: Prefixes,
}

/// `/seg` of `/seg/…`; `None` when the bytes hold no second `/`.
fn first_segment(p: &[u8]) -> Option<&[u8]> {
    let rest = p.get(1..)?;
    memchr::memchr(b'/', rest).map(|i| &p[..i + 1])
}

fn push_candidate(list: &mut Prefixes, p: &[u8], pos: usize) {
    match list.iter_mut().find(|(q, _)| &**q == p) {
        Some((_, c)) => *c = c.iter().copied().chain([pos]).collect(),
        None => list.push((p.into(), Box::new([pos]))),
    }
}

impl PathRules {
    fn insert(&mut self, path: &PathMatch, pos: usize) {
        match path {
            PathMatch::Exact(p) => {
                let c = self.exact.entry(p.clone()).or_default();
                *c = c.iter().copied().chain([pos]).collect();
            }
            PathMatch::Prefix(p) => match first_segment(p) {
                Some(seg) => push_candidate(self.by_segment.entry(seg.into()).or_default(), p, pos),
                None => push_candidate(&mut self.short, p, pos),
            },
        }
    }

    fn finish(&mut self) {
        // A few prefixes are scanned faster than hashed: one list then.
        if self.by_segment.values().map(Vec::len).sum::<usize>() + self.short.len()
            < SEGMENT_INDEX_FROM
        {
            self.short
                .extend(self.by_segment.drain().flat_map(|(_, l)| l));
        }
        // Longest first; equal lengths keep file order (stable sort).
        let by_len = |l: &mut Prefixes| {
            l.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        };
        by_len(&mut self.short);
        self.by_segment.values_mut().for_each(by_len);
    }

    fn find(&self, routes: &[Route], path: &[u8], admits: &impl Fn(&Conditions) -> bool) -> Lookup {
        let mut matched = false;
        let mut first = |c: &Candidates| {
            matched = true;
            c.iter()
                .copied()
                .find(|&pos| routes[pos].conditions.as_deref().is_none_or(admits))
        };
        let mut found = None;
        if !self.exact.is_empty() {
            found = self.exact.get(path).and_then(&mut first);
        }
        if found.is_none() && !self.by_segment.is_empty() {
            if let Some(list) = first_segment(path).and_then(|s| self.by_segment.get(s)) {
                found = list
                    .iter()
                    .filter(|(p, _)| path.starts_with(p))
                    .find_map(|(_, c)| first(c));
            }
        }
        if found.is_none() {
            found = self
                .short
                .iter()
                .filter(|(p, _)| path.starts_with(p))
                .find_map(|(_, c)| first(c));
        }
        match found {
            Some(pos) => Lookup::Found(pos),
            None if matched => Lookup::Refused,
            None => Lookup::Miss,
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.by_segment.is_empty() && self.short.is_empty()
    }
}

/// The routes one listener serves, compiled for lookup.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact_hosts: AHashMap<Box<[u8]>, PathRules>,
    /// (suffix including the leading dot, rules), longest suffix first.
    wildcard_hosts: Vec<(Box<[u8]>, PathRules)>,
    any_host: PathRules,
}

impl RouteTable {
    /// Compiles a table. When two routes have the same host and path, the first one wins (the
    /// config validation rejects that case before it gets here).
    pub fn new(routes: Vec<Route>) -> Self {
        let mut t = RouteTable {
            routes,
            ..RouteTable::default()
        };
        for (pos, r) in t.routes.iter().enumerate() {
            if r.hosts.is_empty() {
                t.any_host.insert(&r.path, pos);
            }
            for h in &r.hosts {
                match h {
                    HostPattern::Exact(h) => t
                        .exact_hosts
                        .entry(h.clone())
                        .or_default()
                        .insert(&r.path, pos),
                    HostPattern::Suffix(s) => {
                        match t.wildcard_hosts.iter_mut().find(|(q, _)| q == s) {
                            Some((_, rules)) => rules.insert(&r.path, pos),
                            None => {
                                let mut rules = PathRules::default();
                                rules.insert(&r.path, pos);
                                t.wildcard_hosts.push((s.clone(), rules));
                            }
                        }
                    }
                }
            }
        }
        t.any_host.finish();
        t.exact_hosts.values_mut().for_each(PathRules::finish);
        t.wildcard_hosts.iter_mut().for_each(|(_, r)| r.finish());
        t.wildcard_hosts
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        t
    }

    /// The routes of this table, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finds the route for a request by host and path alone (routes with conditions never
    /// match): CONNECT targets, tests and benchmarks.
    pub fn find(&self, host: &[u8], path: &[u8]) -> Option<&Route> {
        self.find_matching(host, path, &|_: &Conditions| false)
    }

    /// Finds the route for a request. `host` is the `Host` header value as received (any case,
    /// with or without `:port`), empty when absent; `path` is the path of the target without the
    /// query; `admits` decides a route's extra conditions (called only for routes that have
    /// some).
    pub fn find_matching(
        &self,
        host: &[u8],
        path: &[u8],
        admits: &impl Fn(&Conditions) -> bool,
    ) -> Option<&Route> {
        let mut buf = [0u8; MAX_HOST_LEN];
        let routes = &self.routes[..];
        // The first group with a route for the path decides, even when none of its routes'
        // conditions hold (then: no route).
        let decide = |l: Lookup| match l {
            Lookup::Found(pos) => Some(Some(&routes[pos])),
            Lookup::Refused => Some(None),
            Lookup::Miss => None,
        };
        if let Some(host) = normalize_host(host, &mut buf) {
            if !self.exact_hosts.is_empty() {
                if let Some(rules) = self.exact_hosts.get(host) {
                    if let Some(d) = decide(rules.find(routes, path, admits)) {
                        return d;
                    }
                }
            }
            for (suffix, rules) in &self.wildcard_hosts {
                if host.len() > suffix.len() && host.ends_with(suffix) {
                    if let Some(d) = decide(rules.find(routes, path, admits)) {
                        return d;
                    }
                }
            }
        }
        if self.any_host.is_empty() {
            return None;
        }
        decide(self.any_host.find(routes, path, admits)).flatten()
    }
}

/// `host` (a `Host` value or an authority) without its port; an IPv6 literal keeps its brackets.
pub fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        // IPv6 literal: keep through the closing bracket.
        match memchr::memchr(b']', host) {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match memchr::memchr(b':', host) {
            Some(colon) => &host[..colon],
            None => host,
        }
    }
}

/// Lowercases `host` into `buf` without its port and trailing dot. `None` when empty or longer
/// than [`MAX_HOST_LEN`].
pub fn normalize_host<'b>(host: &[u8], buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b [u8]> {
    let host = host_without_port(host);
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (o, &b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

#[cfg(test)]
mod tests;
