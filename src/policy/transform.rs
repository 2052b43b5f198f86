//! What a route does to a request and its response beyond forwarding it: header `set` / `add` /
//! `remove` with variables, a regex path rewrite, query `set` / `remove`, a Host rewrite,
//! `X-Request-Id`, CORS, and static answers (`return`). Compiled once per snapshot into a
//! [`RoutePolicy`]; a route without one pays a single `Option` check.
//!
//! Values are [`Template`]s: literal bytes and `$variables` (`$client_ip`, `$host`, `$uri`,
//! `$request_uri`, `$args`, `$method`, `$scheme`, `$route`, `$request_id`, `$consumer`,
//! `$upstream_addr`, `$status`, `$http_NAME`, `$arg_NAME`, and `$1` / `${name}` for the
//! captures of the route's `path_regex`), expanded straight into the head being written.

use crate::http1::Header;

/// A value with variables, compiled from `"text $var ${var}text"`.
#[derive(Debug, Clone, Default)]
pub struct Template {
    parts: Box<[Part]>,
}

/// Literal bytes, or a reference (`$name`, `${name}`) compiled into a `T`.
#[derive(Debug, Clone)]
enum Piece<T> {
    Lit(Box<[u8]>),
    Ref(T),
}

type Part = Piece<Var>;

/// Splits `src` into literal runs and `$name` / `${name}` references (`$$` is a `$`), each
/// name compiled by `name`.
fn pieces<T>(
    src: &str,
    mut name: impl FnMut(&str) -> Result<T, String>,
) -> Result<Vec<Piece<T>>, String> {
    let b = src.as_bytes();
    let (mut out, mut lit, mut i) = (Vec::new(), Vec::new(), 0);
    while i < b.len() {
        if b[i] != b'$' || b.get(i + 1) == Some(&b'$') {
            lit.push(b[i]);
            i += if b[i] == b'$' { 2 } else { 1 };
            continue;
        }
        let (n, next) = if b.get(i + 1) == Some(&b'{') {
            let end = src[i + 2..]
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {src:?}"))?;
            (&src[i + 2..i + 2 + end], i + 3 + end)
        } else {
            let len = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            (&src[i + 1..i + 1 + len], i + 1 + len)
        };
        if n.is_empty() {
            return Err(format!(
                "'$' without a name in {src:?} (write $$ for a '$')"
            ));
        }
        if !lit.is_empty() {
            out.push(Piece::Lit(std::mem::take(&mut lit).into()));
        }
        out.push(Piece::Ref(name(n)?));
        i = next;
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit.into()));
    }
    Ok(out)
}

/// A variable of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    ClientIp,
    Host,
    Uri,
    RequestUri,
    Args,
    Method,
    Scheme,
    Route,
    RequestId,
    Consumer,
    UpstreamAddr,
    Status,
    /// `$http_x_user` → the first `X-User` field (`_` stands for `-`).
    Http(Box<str>),
    /// `$arg_page` → query parameter `page` as received (not decoded).
    Arg(Box<str>),
    /// `$1`, `${id}`: a capture of the route's `path_regex` (by group index).
    Capture(usize),
}

/// Where a template is used: which variables make sense there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Request fields, the Host rewrite, query values, aggregate part paths, `return`.
    Request,
    /// Response fields: what the request carried is no longer at hand (`$http_*`, `$arg_*`
    /// and captures are refused), but the backend and status are.
    Response,
}

impl Template {
    /// Compiles `src`; `captures` names the groups of the route's `path_regex` (index 0 is the
    /// whole match), empty when it has none. The error says what is wrong.
    pub fn parse(src: &str, place: Place, captures: &[Option<&str>]) -> Result<Template, String> {
        let parts = pieces(src, |name| variable(name, place, captures))?;
        Ok(Template {
            parts: parts.into(),
        })
    }

    /// The value when the template holds no variable.
    pub fn literal(&self) -> Option<&[u8]> {
        match &*self.parts {
            [] => Some(b""),
            [Piece::Lit(l)] => Some(l),
            _ => None,
        }
    }

    /// Writes the value for `cx` to `out`.
    pub fn expand(&self, cx: &Vars, out: &mut impl FnMut(&[u8])) {
        for p in self.parts.iter() {
            match p {
                Piece::Lit(l) => out(l),
                Piece::Ref(v) => cx.write(v, out),
            }
        }
    }

    /// The value for `cx` appended to `out`.
    pub fn expand_into(&self, cx: &Vars, out: &mut Vec<u8>) {
        self.expand(cx, &mut |b: &[u8]| out.extend_from_slice(b));
    }
}

fn variable(name: &str, place: Place, captures: &[Option<&str>]) -> Result<Var, String> {
    let request_only = |v: Var| {
        if place == Place::Response {
            Err(format!(
                "${name} is not available in response_headers (the request is gone by then)"
            ))
        } else {
            Ok(v)
        }
    };
    Ok(match name {
        "client_ip" | "remote_addr" => Var::ClientIp,
        "host" => Var::Host,
        "uri" => Var::Uri,
        "request_uri" => Var::RequestUri,
        "args" | "query_string" => Var::Args,
        "method" | "request_method" => Var::Method,
        "scheme" => Var::Scheme,
        "route" => Var::Route,
        "request_id" => Var::RequestId,
        "consumer" => Var::Consumer,
        "upstream_addr" if place == Place::Response => Var::UpstreamAddr,
        "upstream_addr" => {
            return Err(
                "$upstream_addr is known once the response comes: use it in response_headers"
                    .into(),
            )
        }
        "status" if place == Place::Response => Var::Status,
        "status" => return Err("$status is only available in response_headers".into()),
        n if n.starts_with("http_") && n.len() > 5 => {
            request_only(Var::Http(n[5..].replace('_', "-").into()))?
        }
        n if n.starts_with("arg_") && n.len() > 4 => request_only(Var::Arg(n[4..].into()))?,
        n if n.bytes().all(|b| b.is_ascii_digit()) => {
            let i: usize = n.parse().map_err(|_| format!("bad capture ${n}"))?;
            if i == 0 || i >= captures.len() {
                return Err(format!(
                    "${i}: path_regex has {} capture group(s)",
                    captures.len().saturating_sub(1)
                ));
            }
            request_only(Var::Capture(i))?
        }
        n => match captures.iter().position(|c| *c == Some(n)) {
            Some(i) => request_only(Var::Capture(i))?,
            None => return Err(format!("unknown variable ${n}")),
        },
    })
}

/// Where an expanded value goes, which decides how variable values are escaped (literal text
/// from the config is written as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sink {
    /// A field value: control bytes (a decoded `%0D%0A` in a capture, a claim) are written as
    /// `%XX`, so a value can never end the field or the head.
    #[default]
    Field,
    /// A request target or `Location`: values decoded from the request (captures, fields,
    /// the consumer, the host) are percent-encoded except unreserved characters, `/` and the
    /// sub-delimiters that cannot split a query (`!$'()*,;:@`); values taken from the target as
    /// received (`$uri`, `$request_uri`, `$args`, `$arg_*`) are valid target bytes already.
    Target,
    /// A body: written as it is.
    Body,
}

/// The values variables stand for, for one request.
#[derive(Default, Clone, Copy)]
pub struct Vars<'r> {
    /// How values are escaped.
    pub sink: Sink,
    pub client_ip: &'r str,
    /// The `Host` value without its port.
    pub host: &'r [u8],
    /// The request target as received; the path is the part before `?`.
    pub target: &'r [u8],
    pub method: &'r [u8],
    pub scheme: &'static str,
    pub route: &'r str,
    pub request_id: &'r [u8],
    pub consumer: &'r str,
    pub upstream_addr: &'r str,
    pub status: u16,
    pub headers: &'r [Header],
    pub buf: &'r [u8],
    /// Capture spans of `path_regex` in `captured` (by group index).
    pub captures: &'r [Option<(usize, usize)>],
    pub captured: &'r [u8],
}

impl<'r> Vars<'r> {
    /// The same values, escaped for `sink`.
    pub fn for_sink(self, sink: Sink) -> Vars<'r> {
        Vars { sink, ..self }
    }

    fn write(&self, v: &Var, out: &mut impl FnMut(&[u8])) {
        // Values decoded from the path or taken from a token may hold any byte; field values
        // and the host hold no control byte (the parser checked) but may hold what a target
        // must not; the rest is safe anywhere (addresses, tokens the parser checked, target
        // bytes as received, numbers).
        let any_byte = matches!(v, Var::Capture(_) | Var::Consumer);
        let field_text = matches!(v, Var::Http(_) | Var::Host);
        match self.sink {
            Sink::Field if any_byte => self.raw(v, &mut |b: &[u8]| escape(b, is_field_byte, out)),
            Sink::Target if any_byte || field_text => {
                self.raw(v, &mut |b: &[u8]| escape(b, is_target_byte, out))
            }
            _ => self.raw(v, out),
        }
    }

    fn raw(&self, v: &Var, out: &mut impl FnMut(&[u8])) {
        let split = memchr::memchr(b'?', self.target);
        match v {
            Var::ClientIp => out(self.client_ip.as_bytes()),
            Var::Host => out(self.host),
            Var::Uri => out(&self.target[..split.unwrap_or(self.target.len())]),
            Var::RequestUri => out(self.target),
            Var::Args => out(split.map_or(&b""[..], |i| &self.target[i + 1..])),
            Var::Method => out(self.method),
            Var::Scheme => out(self.scheme.as_bytes()),
            Var::Route => out(self.route.as_bytes()),
            Var::RequestId => out(self.request_id),
            Var::Consumer => out(self.consumer.as_bytes()),
            Var::UpstreamAddr => out(self.upstream_addr.as_bytes()),
            Var::Status => {
                let s = self.status;
                out(&[
                    b'0' + (s / 100 % 10) as u8,
                    b'0' + (s / 10 % 10) as u8,
                    b'0' + (s % 10) as u8,
                ])
            }
            Var::Http(name) => {
                let name = name.as_bytes();
                if let Some(v) = crate::http1::find_all(self.headers, self.buf, name).next() {
                    out(v)
                }
            }
            Var::Arg(name) => {
                let query = split.map_or(&b""[..], |i| &self.target[i + 1..]);
                if let Some(raw) = raw_param(query, name) {
                    out(raw)
                }
            }
            Var::Capture(i) => {
                if let Some(Some((s, e))) = self.captures.get(*i) {
                    out(&self.captured[*s..*e])
                }
            }
        }
    }
}

/// Writes `b` with the bytes `keep` refuses as `%XX` (one call when it refuses none).
fn escape(b: &[u8], keep: fn(u8) -> bool, out: &mut impl FnMut(&[u8])) {
    if b.iter().all(|&c| keep(c)) {
        return out(b);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in b {
        if keep(c) {
            out(&[c]);
        } else {
            out(&[b'%', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        }
    }
}

/// A byte a field value may hold as it is: not a control byte.
fn is_field_byte(c: u8) -> bool {
    c >= 0x20 && c != 0x7f
}

/// A byte a decoded value may keep in a target: unreserved, `/`, and sub-delimiters that
/// neither start a query nor split one.
fn is_target_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~/!$'()*,;:@".contains(&c)
}

/// The first value of `name` in `query`, as received.
fn raw_param<'q>(query: &'q [u8], name: &str) -> Option<&'q [u8]> {
    crate::http1::query_pairs(query).find_map(|(n, v)| (n == name.as_bytes()).then_some(v))
}

/// `set` / `add` / `remove` of header fields, compiled: the names whose received fields give
/// way, the lines whose values hold no variable written out once at load, and the others with
/// their templates.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    /// Removed and set names, lower case.
    drop: Box<[Box<[u8]>]>,
    /// Complete field lines of `set` and `add` values without variables.
    fixed: Box<[u8]>,
    /// `Name: ` and the template of each value with variables.
    dynamic: Box<[(Box<[u8]>, Template)]>,
}

impl HeaderOps {
    /// `set` replaces received fields of its names, `add` appends, `remove` drops (names as
    /// configured; compared ignoring case).
    pub fn new(
        set: Vec<(Box<str>, Template)>,
        add: Vec<(Box<str>, Template)>,
        remove: Vec<Box<str>>,
    ) -> HeaderOps {
        let drop = remove
            .iter()
            .chain(set.iter().map(|(n, _)| n))
            .map(|n| n.to_ascii_lowercase().into_bytes().into())
            .collect();
        let mut fixed = Vec::new();
        let mut dynamic = Vec::new();
        for (name, t) in set.into_iter().chain(add) {
            match t.literal() {
                Some([]) => {}
                Some(value) => {
                    fixed.extend_from_slice(name.as_bytes());
                    fixed.extend_from_slice(b": ");
                    fixed.extend_from_slice(value);
                    fixed.extend_from_slice(b"\r\n");
                }
                None => dynamic.push((format!("{name}: ").into_bytes().into(), t)),
            }
        }
        HeaderOps {
            drop,
            fixed: fixed.into(),
            dynamic: dynamic.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.drop.is_empty() && self.fixed.is_empty() && self.dynamic.is_empty()
    }

    /// Whether writing the fields needs the request's variables.
    pub fn has_variables(&self) -> bool {
        !self.dynamic.is_empty()
    }

    /// Whether a received field named `name` is dropped (removed, or replaced by `set`).
    pub fn drops(&self, name: &[u8]) -> bool {
        self.drop
            .iter()
            .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
    }

    /// Writes the `set` and `add` fields (complete lines); a value that expands to nothing is
    /// left out.
    pub fn write(&self, cx: &Vars, out: &mut impl FnMut(&[u8])) {
        out(&self.fixed);
        for (name, t) in self.dynamic.iter() {
            let mut empty = true;
            t.expand(cx, &mut |b: &[u8]| empty &= b.is_empty());
            if !empty {
                out(name);
                t.expand(cx, out);
                out(b"\r\n");
            }
        }
    }
}

/// `path_rewrite = { regex, replace }`, applied to the normalised path the route was chosen
/// on (so that no spelling of the path dodges it), the result re-encoded for the target.
#[derive(Debug, Clone)]
pub struct PathRewrite {
    regex: regex::bytes::Regex,
    replace: Box<[Piece<usize>]>,
}

impl PathRewrite {
    /// Compiles `replace` (`$1`, `${name}` for the groups of `regex`, `$$` for `$`).
    pub fn new(regex: regex::bytes::Regex, replace: &str) -> Result<PathRewrite, String> {
        let names: Vec<Option<&str>> = regex.capture_names().collect();
        let reps = pieces(replace, |name| match name.parse::<usize>() {
            Ok(n) if n < names.len() => Ok(n),
            _ => names
                .iter()
                .position(|g| *g == Some(name))
                .ok_or_else(|| format!("${name}: no such group in the regex")),
        })?;
        Ok(PathRewrite {
            regex,
            replace: reps.into(),
        })
    }

    /// The rewritten path for the normalised path `path`, appended to `out` (escaped for a
    /// target, starting with `/`); `false` (nothing appended) when the regex does not match.
    pub fn apply(&self, path: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(c) = self.regex.captures(path) else {
            return false;
        };
        let start = out.len();
        let whole = c.get(0).map_or(0..0, |m| m.range());
        let esc = |b: &[u8], out: &mut Vec<u8>| {
            escape(b, is_path_byte, &mut |e: &[u8]| out.extend_from_slice(e))
        };
        esc(&path[..whole.start], out);
        for r in self.replace.iter() {
            match r {
                // Checked at load: path characters only, escapes included.
                Piece::Lit(l) => out.extend_from_slice(l),
                Piece::Ref(g) => esc(c.get(*g).map_or(&b""[..], |m| m.as_bytes()), out),
            }
        }
        esc(&path[whole.end..], out);
        if out.get(start) != Some(&b'/') {
            out.insert(start, b'/');
        }
        true
    }
}

/// A byte a decoded path may keep in a target: a path character other than `%`.
fn is_path_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&c)
}

/// `query = { set, remove }`.
#[derive(Debug, Clone, Default)]
pub struct QueryOps {
    pub set: Box<[(Box<str>, Template)]>,
    pub remove: Box<[Box<str>]>,
}

impl QueryOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Appends the query after the changes (without `?`) to `out`: received parameters in
    /// order except removed and set ones, then the set ones (values percent-encoded).
    pub fn apply(&self, query: &[u8], cx: &Vars, out: &mut Vec<u8>) {
        let start = out.len();
        for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let name = &pair[..memchr::memchr(b'=', pair).unwrap_or(pair.len())];
            let decoded = crate::route::decode_query(name);
            let gone = self
                .remove
                .iter()
                .chain(self.set.iter().map(|(n, _)| n))
                .any(|n| n.as_bytes() == &*decoded);
            if !gone {
                if out.len() > start {
                    out.push(b'&');
                }
                out.extend_from_slice(pair);
            }
        }
        for (name, t) in self.set.iter() {
            if out.len() > start {
                out.push(b'&');
            }
            encode_component(name.as_bytes(), out);
            out.push(b'=');
            // Encoded whole below: no escaping before.
            let cx = cx.for_sink(Sink::Body);
            t.expand(&cx, &mut |b: &[u8]| encode_component(b, out));
        }
    }
}

/// Percent-encodes all but unreserved characters (RFC 3986 §2.3).
pub fn encode_component(b: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'%', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        }
    }
}

/// A route's CORS policy.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Allowed origins (exact, compared ignoring ASCII case); `["*"]`: any.
    pub origins: Box<[Box<str>]>,
    pub any_origin: bool,
    /// `Access-Control-Allow-Methods` value.
    pub methods: Box<str>,
    /// `Access-Control-Allow-Headers` value; `None`: echo the preflight's request headers.
    pub headers: Option<Box<str>>,
    /// `Access-Control-Expose-Headers` value (empty: none).
    pub expose: Box<str>,
    pub credentials: bool,
    pub max_age: Option<u64>,
}

impl Cors {
    /// Whether `origin` may use the route.
    pub fn allows(&self, origin: &[u8]) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
    }

    /// `Access-Control-Allow-Origin` and the fields every answer to `origin` carries.
    pub fn write_common(&self, origin: &[u8], out: &mut impl FnMut(&[u8])) {
        out(b"Access-Control-Allow-Origin: ");
        if self.any_origin && !self.credentials {
            out(b"*\r\n");
        } else {
            out(origin);
            out(b"\r\nVary: Origin\r\n");
        }
        if self.credentials {
            out(b"Access-Control-Allow-Credentials: true\r\n");
        }
    }

    /// The fields of an answer to an actual (not preflight) request from `origin`.
    pub fn write_response(&self, origin: &[u8], out: &mut impl FnMut(&[u8])) {
        self.write_common(origin, out);
        if !self.expose.is_empty() {
            out(b"Access-Control-Expose-Headers: ");
            out(self.expose.as_bytes());
            out(b"\r\n");
        }
    }

    /// The fields of the answer to a preflight from `origin` asking for `request_headers`.
    pub fn preflight(&self, origin: &[u8], request_headers: Option<&[u8]>) -> Vec<u8> {
        let mut v = Vec::with_capacity(256);
        let mut out = |b: &[u8]| v.extend_from_slice(b);
        self.write_common(origin, &mut out);
        out(b"Access-Control-Allow-Methods: ");
        out(self.methods.as_bytes());
        out(b"\r\n");
        let allow = match &self.headers {
            Some(h) => Some(h.as_bytes()),
            None => request_headers,
        };
        if let Some(h) = allow.filter(|h| !h.is_empty()) {
            out(b"Access-Control-Allow-Headers: ");
            out(h);
            out(b"\r\n");
        }
        if let Some(age) = self.max_age {
            out(format!("Access-Control-Max-Age: {age}\r\n").as_bytes());
        }
        v
    }
}

/// `return = { status, location, body, content_type }`: the route answers itself.
#[derive(Debug, Clone)]
pub struct Return {
    pub status: u16,
    pub location: Option<Template>,
    pub body: Option<Template>,
    pub content_type: Box<str>,
}

/// One part of an aggregate route.
#[derive(Debug, Clone)]
pub struct AggregatePart {
    /// The member of the merged object the part's body goes under; `None`: its members are
    /// merged at the top level.
    pub key: Option<Box<str>>,
    pub upstream: usize,
    /// Path and query sent, with variables (`$1`, `${id}`, `$args`, …).
    pub path: Template,
    pub timeout: std::time::Duration,
}

/// `aggregate = [...]` with its error mode and body bound.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub parts: Box<[AggregatePart]>,
    /// `true`: one failed part fails the whole answer (502).
    pub fail_whole: bool,
    /// Largest body accepted from one part.
    pub max_bytes: usize,
}

/// Everything a route applies besides rate limits. Absent for a plain route.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    /// Index into `Snapshot::auths`.
    pub auth: Option<usize>,
    /// Consumers allowed on the route (empty: any authenticated one); others get 403.
    pub consumers: Box<[Box<str>]>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub path_rewrite: Option<PathRewrite>,
    pub query: QueryOps,
    pub host: Option<Template>,
    pub request_id: bool,
    pub cors: Option<Cors>,
    pub ret: Option<Return>,
    pub aggregate: Option<Aggregate>,
}

impl RoutePolicy {
    /// Whether the request target is rebuilt (path rewrite or query changes).
    pub fn rewrites_target(&self) -> bool {
        self.path_rewrite.is_some() || !self.query.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(target: &'a [u8]) -> Vars<'a> {
        Vars {
            client_ip: "10.0.0.1",
            host: b"api.test",
            target,
            method: b"GET",
            scheme: "http",
            route: "r",
            request_id: b"id-1",
            consumer: "alice",
            ..Vars::default()
        }
    }

    fn expand(t: &str, place: Place, target: &[u8]) -> String {
        let t = Template::parse(t, place, &[None]).unwrap();
        let mut v = Vec::new();
        t.expand_into(&vars(target), &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn templates() {
        let r = Place::Request;
        assert_eq!(
            expand("https://$host$request_uri", r, b"/a?b=1"),
            "https://api.test/a?b=1"
        );
        assert_eq!(expand("${uri}x $args", r, b"/a?b=1"), "/ax b=1");
        assert_eq!(
            expand("$$5 $consumer@$client_ip", r, b"/"),
            "$5 alice@10.0.0.1"
        );
        assert_eq!(expand("p=$arg_b;", r, b"/a?a=2&b=x%20y"), "p=x%20y;");
        assert!(Template::parse("$nope", r, &[None]).is_err());
        assert!(Template::parse("$upstream_addr", r, &[None]).is_err());
        assert!(Template::parse("$http_x", Place::Response, &[None]).is_err());
        assert!(Template::parse("${host", r, &[None]).is_err());
        assert!(Template::parse("$1", r, &[None]).is_err());
        assert!(Template::parse("${id}/$1", r, &[None, Some("id")]).is_ok());
    }

    #[test]
    fn decoded_values_cannot_break_out() {
        let t = Template::parse("v=$1", Place::Request, &[None, None]).unwrap();
        let path = b"/u/a\r\nX: 1&b=2?#% /";
        let caps = [None, Some((3, path.len()))];
        let cx = Vars {
            captures: &caps,
            captured: path,
            ..Vars::default()
        };
        let mut field = Vec::new();
        t.expand_into(&cx, &mut field);
        assert_eq!(field, b"v=a%0D%0AX: 1&b=2?#% /");
        let mut target = Vec::new();
        t.expand_into(&cx.for_sink(Sink::Target), &mut target);
        assert_eq!(target, b"v=a%0D%0AX:%201%26b%3D2%3F%23%25%20/");
    }

    #[test]
    fn query_ops() {
        let ops = QueryOps {
            set: Box::new([(
                "v".into(),
                Template::parse("a b&", Place::Request, &[None]).unwrap(),
            )]),
            remove: Box::new(["debug".into()]),
        };
        let mut out = Vec::new();
        ops.apply(b"x=1&debug=1&v=old&de%62ug=2&y", &vars(b"/"), &mut out);
        assert_eq!(out, b"x=1&y&v=a%20b%26");
    }

    #[test]
    fn path_rewrite() {
        let re = regex::bytes::Regex::new("^/users/(?P<id>[^/]+)$").unwrap();
        let p = PathRewrite::new(re.clone(), "/v2/u/${id}/$$x").unwrap();
        let mut out = Vec::new();
        assert!(p.apply(b"/users/42", &mut out));
        assert_eq!(out, b"/v2/u/42/$x");
        out.clear();
        // A decoded capture goes out escaped: no `?`, `#`, space or control byte unescaped.
        assert!(p.apply(b"/users/a?b#c d\r", &mut out));
        assert_eq!(out, b"/v2/u/a%3Fb%23c%20d%0D/$x");
        out.clear();
        assert!(!p.apply(b"/users/x/y", &mut out));
        assert!(out.is_empty());
        // A result that does not start with `/` gets one.
        let p = PathRewrite::new(regex::bytes::Regex::new("^/api(.*)$").unwrap(), "$1").unwrap();
        assert!(p.apply(b"/api", &mut out));
        assert_eq!(out, b"/");
        assert!(PathRewrite::new(re, "/$2").is_err());
    }
}
