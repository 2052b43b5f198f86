//! Step 2: validate the parsed request, route it, check its body limit, answer
//! `Expect: 100-continue`, and plan the head that goes upstream (rewritten target, hop-by-hop
//! fields out, `X-Forwarded-*` in).

use super::client::LimitFields;
use super::client::{ClientConn, Done, Next, ReqInfo};
use super::gateway::RequestText;
use super::io::write_all;
use crate::config::Snapshot;
use crate::config::{HashOn, LimitHeaders, LimitKey, RateLimit};
use crate::http1::{
    self, connection_has, ConnectionOptions, Framing, Header, HeaderKind, Method, NewTarget,
    Request, Span, Version,
};
use crate::observe::access::Captured;
use crate::policy::auth::Verdict;
use crate::policy::ratelimit::Verdict as LimitVerdict;
use crate::policy::transform::Sink;
use crate::route::{self, Normalized};
use crate::upstream::maglev;

impl<'a> ClientConn<'a> {
    pub(super) async fn forward(&mut self, req: Request) -> Next {
        let snap: &'a Snapshot = self.snap;
        let buf = self.buf.data();
        let hs = &self.headers[..req.header_count];
        self.tally.bytes_in = req.head_len as u64;
        if snap.listeners[self.listener].logs_any {
            capture(&mut self.captured, &req, hs, buf);
        }
        let framing = match http1::request_framing(&req, hs, buf) {
            Ok(f) => f,
            Err(e) => return self.reject(e.status(), e.as_str()).await,
        };
        if req.method == Method::Connect {
            // Only a route that enables it tunnels CONNECT (routed on the target authority).
            let listener = &snap.listeners[self.listener];
            return match listener.routes.find(req.target.of(buf), b"/") {
                Some(route) if route.connect => {
                    self.route = Some(route.index);
                    if !route.admits_subject(self.client_subject.as_deref()) {
                        return self
                            .reject(403, "client certificate not allowed on this route")
                            .await;
                    }
                    let head_len = req.head_len;
                    self.connect_tunnel(route, head_len).await
                }
                _ => self.reject(501, "CONNECT is not supported").await,
            };
        }
        let mut expect_continue = false;
        for h in hs.iter().filter(|h| h.kind == HeaderKind::Expect) {
            if !h.value.of(buf).eq_ignore_ascii_case(b"100-continue") {
                return self.reject(417, "only 100-continue is supported").await;
            }
            expect_continue = true;
        }

        // Route on the Host field, or the authority of an absolute-form target.
        let absolute = req.absolute_parts(buf);
        let (host, target) = match absolute {
            Some((authority, path)) => (authority, path),
            None => (
                req.host.map_or(Span::default(), |i| hs[i as usize].value),
                req.target,
            ),
        };
        let target_bytes = target.of(buf);
        let path_end = memchr::memchr(b'?', target_bytes).unwrap_or(target_bytes.len());
        let raw_path = &target_bytes[..path_end];
        let conn = ConnectionOptions::parse(hs, buf);
        let listener = &snap.listeners[self.listener];
        // Route on the normalised path (`crate::route::normalize`); the asterisk form ("*") and
        // the empty path of `http://host` are left as they are.
        let (decision, forward) = (&mut self.scratch.decision, &mut self.scratch.forward);
        let normalized = if raw_path.first() == Some(&b'/') {
            match route::normalize(raw_path, listener.path, decision, forward) {
                Ok(n) => n,
                Err(e) => return self.reject(400, e.as_str()).await,
            }
        } else {
            Normalized::Unchanged
        };
        let decision: &[u8] = match normalized {
            Normalized::Unchanged => raw_path,
            _ => decision,
        };
        let query = target_bytes.get(path_end + 1..).unwrap_or_default();
        // A CORS preflight is routed as the request it announces (a route for POST answers the
        // OPTIONS before it).
        let method = match req.method {
            Method::Options => header_value(hs, buf, "access-control-request-method")
                .filter(|_| header_value(hs, buf, "origin").is_some())
                .unwrap_or(req.method_span.of(buf)),
            _ => req.method_span.of(buf),
        };
        let view = route::RequestView {
            method,
            path: decision,
            headers: hs,
            buf,
            query,
        };
        let found = listener
            .routes
            .find_matching(host.of(buf), decision, &|c| c.admit(&view));
        // How the connection ends when the proxy answers this request itself.
        let done = Done::of(req.method, req.version, req.head_len, framing, &conn);
        let Some(route) = found else {
            return self
                .refuse(404, "no route for this host and path", "", done)
                .await;
        };
        self.route = Some(route.index);
        if route.policy.is_some() {
            // No consumer until this request's auth admits one (the log must not name the
            // previous request's).
            self.scratch.gateway.identity.consumer.clear();
        }
        if !route.admits_subject(self.client_subject.as_deref()) {
            let detail = "client certificate not allowed on this route";
            return self.refuse(403, detail, "", done).await;
        }
        if let Some(port) = route.redirect_https {
            if !self.stream.is_tls() {
                // An HTTP/1.0 request without Host: the address it came to.
                let fallback;
                let host = match host.of(buf) {
                    [] => {
                        fallback = match self.listen_addr.ip() {
                            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                            ip => ip.to_string(),
                        };
                        fallback.as_bytes()
                    }
                    h => h,
                };
                let location = https_location(host, port, target_bytes);
                return self.redirect(&location, done).await;
            }
        }
        // Policy: the route's rate limits, in order (nothing at all for a route without any);
        // all but those keyed by the consumer before the auth, so that a flood of bad
        // credentials is limited before it costs a verification.
        let mut limit_fields = LimitFields::default();
        let limits_before = route.rate_limits.len() - route.consumer_limits;
        if limits_before > 0 {
            let key = LimitKeys {
                hs,
                buf,
                route: route.index,
                peer: self.peer_key,
                consumer: None,
            };
            let rejected = apply_limits(
                snap,
                self.state,
                route,
                &key,
                ..limits_before,
                &mut limit_fields,
            );
            if let Some((status, extra)) = rejected {
                return self
                    .refuse(status, "rate limit exceeded", &extra, done)
                    .await;
            }
        }
        // Gateway policies the route names (nothing but this check for a plain route).
        let policy = route.policy.map(|p| &snap.policies[p]);
        // What templates see of the request (made only where a policy needs it).
        let (client_ip, tls) = (&*self.peer_ip, self.stream.is_tls());
        let text = || RequestText {
            client_ip,
            tls,
            route: &route.name,
            host: host.of(buf),
            target: target_bytes,
            method: req.method_span.of(buf),
            headers: hs,
            buf,
        };
        if let Some(p) = policy {
            let g = &mut self.scratch.gateway;
            g.begin(p, route, decision, text());
            if p.request_id {
                g.request_id(hs, buf, &self.state.upstreams);
                self.captured.set_request_id(&g.request_id);
            }
            let origin = p
                .cors
                .as_ref()
                .and_then(|_| header_value(hs, buf, "origin"))
                .filter(|o| !o.is_empty());
            if let (Some(cors), Some(origin)) = (&p.cors, origin) {
                g.origin.clear();
                g.origin.extend_from_slice(origin);
                let preflight = req.method == Method::Options
                    && header_value(hs, buf, "access-control-request-method").is_some();
                if preflight {
                    // Answered here, never forwarded (and before auth: browsers send no
                    // credentials with a preflight).
                    if !cors.allows(origin) {
                        return self.refuse(403, "origin not allowed", "", done).await;
                    }
                    let asked = header_value(hs, buf, "access-control-request-headers");
                    let mut fields = cors.preflight(origin, asked);
                    if p.request_id {
                        g.request_id_field(&mut fields);
                    }
                    return self.respond(204, &fields, b"", done).await;
                }
                if !cors.allows(origin) {
                    g.origin.clear();
                }
            }
            if let Some(ai) = p.auth {
                let auth = &snap.auths[ai];
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let verdict = self.state.auth_cache.borrow_mut().check(
                    self.gen_id,
                    ai,
                    auth,
                    hs,
                    buf,
                    query,
                    now,
                    &mut g.identity,
                );
                let refused = match verdict {
                    Verdict::Allowed
                        if p.consumers.is_empty()
                            || p.consumers.iter().any(|c| **c == *g.identity.consumer) =>
                    {
                        None
                    }
                    Verdict::Allowed => {
                        Some((403, "consumer not allowed on this route", String::new()))
                    }
                    v @ Verdict::Forbidden(why) => Some((403, why, auth.challenge(v))),
                    v @ (Verdict::Missing | Verdict::Invalid(_)) => {
                        let why = match v {
                            Verdict::Invalid(why) => why,
                            _ => "credentials missing",
                        };
                        Some((401, why, auth.challenge(v)))
                    }
                };
                let decision = match verdict {
                    Verdict::Allowed if refused.is_none() => 0,
                    Verdict::Missing => 1,
                    Verdict::Invalid(_) => 2,
                    _ => 3,
                };
                self.state.stats.auth(ai, decision).inc();
                if let Some((status, why, mut extra)) = refused {
                    extra.push_str(&self.scratch.gateway.answer_fields(p));
                    return self.refuse(status, why, &extra, done).await;
                }
            }
            if let Some(ret) = &p.ret {
                let g = &self.scratch.gateway;
                let vars = g.vars(text());
                let mut fields = Vec::new();
                if let Some(l) = &ret.location {
                    fields.extend_from_slice(b"Location: ");
                    l.expand_into(&vars.for_sink(Sink::Target), &mut fields);
                    fields.extend_from_slice(b"\r\n");
                }
                let mut body = Vec::new();
                if let Some(b) = &ret.body {
                    b.expand_into(&vars.for_sink(Sink::Body), &mut body);
                    fields.extend_from_slice(b"Content-Type: ");
                    fields.extend_from_slice(ret.content_type.as_bytes());
                    fields.extend_from_slice(b"\r\n");
                }
                let status = ret.status;
                let answer = Some(("", status));
                g.response_fields(p, answer, &mut |b: &[u8]| fields.extend_from_slice(b));
                return self.respond(status, &fields, &body, done).await;
            }
        }
        // The limits keyed by the consumer, once the auth has named it.
        if route.rate_limits.len() > limits_before {
            let consumer = self.scratch.gateway.identity.consumer.as_str();
            let consumer = policy.and_then(|p| p.auth).map(|_| consumer);
            let key = LimitKeys {
                hs,
                buf,
                route: route.index,
                peer: self.peer_key,
                consumer,
            };
            let rejected = apply_limits(
                snap,
                self.state,
                route,
                &key,
                limits_before..,
                &mut limit_fields,
            );
            if let Some((status, extra)) = rejected {
                return self
                    .refuse(status, "rate limit exceeded", &extra, done)
                    .await;
            }
        }
        if let Some(agg) = policy.and_then(|p| p.aggregate.as_ref()) {
            let g = &self.scratch.gateway;
            let vars = g.vars(text());
            let paths: Vec<Vec<u8>> = agg
                .parts
                .iter()
                .map(|part| {
                    let mut v = Vec::new();
                    part.path.expand_into(&vars.for_sink(Sink::Target), &mut v);
                    v
                })
                .collect();
            let p = policy.unwrap_or_else(|| unreachable!());
            return self.aggregate(p, agg, paths, done).await;
        }
        // The upstream, or one of the split by weight.
        let upstream = match (route.split.last(), route.upstream) {
            (Some(&(_, total)), _) => {
                let r = (self.state.upstreams.random() % total as u64) as u32;
                let u = route.split.iter().find(|s| r < s.1).map_or(0, |s| s.0);
                &snap.upstreams[u]
            }
            (None, Some(u)) => &snap.upstreams[u],
            (None, None) => return self.reject(500, "route has no upstream").await,
        };
        let key = match &upstream.hash_on {
            None => 0,
            Some(on) => hash_key(on, hs, buf, decision, &self.peer_ip)
                .unwrap_or_else(|| self.state.upstreams.random()),
        };
        if let Framing::Length(n) = framing {
            if n > snap.limits.max_body_bytes {
                return self
                    .reject(413, "request body larger than max_body_bytes")
                    .await;
            }
        }

        // The head to send: rewritten target, hop-by-hop fields out, X-Forwarded-* in.
        let new_target = if let Some(p) = policy.filter(|p| p.rewrites_target()) {
            // Path rewrite or query changes: the target is rebuilt in the gateway scratch.
            let g = &mut self.scratch.gateway;
            let path: &[u8] = if normalized == Normalized::Rewritten {
                &self.scratch.forward
            } else {
                raw_path
            };
            let mut target = std::mem::take(&mut g.target);
            target.clear();
            // The regex sees the path the route was chosen on (decoded, normalised).
            let rewritten = match &p.path_rewrite {
                Some(pr) => pr.apply(decision, &mut target),
                None => false,
            };
            if !rewritten {
                let r = route.rewrite(path);
                if r.prefix.is_empty() && r.rest.first() != Some(&b'/') {
                    target.push(b'/');
                }
                target.extend_from_slice(r.prefix);
                target.extend_from_slice(r.rest);
            }
            if p.query.is_empty() {
                target.extend_from_slice(&target_bytes[path_end..]);
            } else {
                let g = &self.scratch.gateway;
                let vars = g.vars(text());
                let mark = target.len();
                target.push(b'?');
                p.query.apply(query, &vars, &mut target);
                if target.len() == mark + 1 {
                    target.pop();
                }
            }
            self.scratch.gateway.target = target;
            Some(NewTarget {
                prefix: b"",
                owned: &self.scratch.gateway.target,
                input: Span::default(),
            })
        } else if normalized == Normalized::Rewritten {
            // The normalised path with the query as received, rewritten by the route.
            let owned = &mut self.scratch.forward;
            owned.extend_from_slice(&target_bytes[path_end..]);
            let rewritten = route.rewrite(owned);
            Some(NewTarget {
                prefix: rewritten.prefix,
                owned: rewritten.rest,
                input: Span::default(),
            })
        } else {
            let rewritten = route.rewrite(target_bytes);
            if absolute.is_some() || rewritten.rest.len() != target_bytes.len() {
                let start = rewritten.rest.as_ptr() as usize - buf.as_ptr() as usize;
                let prefix = if rewritten.prefix.is_empty() && rewritten.rest.first() != Some(&b'/')
                {
                    &b"/"[..]
                } else {
                    rewritten.prefix
                };
                Some(NewTarget {
                    prefix,
                    owned: b"",
                    input: Span::new(start, start + rewritten.rest.len()),
                })
            } else {
                None
            }
        };
        // Several identical Content-Length values (repeated fields or a list) were accepted:
        // send one plain field instead (RFC 9110 §8.6), never the duplicates.
        let length = match framing {
            Framing::Length(n) if !single_length_field(hs, buf) => Some(n),
            _ => None,
        };
        // The field carrying a verified client certificate's subject: a client's own is dropped.
        let subject_field = listener
            .tls
            .as_ref()
            .and_then(|t| t.subject_header.as_deref());
        // An upgrade the route allows goes through with its Upgrade field.
        let upgrade = if conn.upgrade {
            upgrade_field(hs, buf, &route.upgrades)
        } else {
            None
        };
        let auth = policy.and_then(|p| p.auth).map(|a| &snap.auths[a]);
        let host_rewrite = policy.and_then(|p| p.host.as_ref());
        let plan = &mut self.plan;
        plan.clear();
        plan.request_head(&req, hs, new_target, |h| {
            !(length.is_some() && h.kind == HeaderKind::ContentLength)
                && keep_request_field(h, buf, hs, &conn, absolute.is_some())
                && subject_field.is_none_or(|n| !same_field_name(h.name.of(buf), n.as_bytes()))
                && policy.is_none_or(|p| {
                    let name = h.name.of(buf);
                    !(p.request_headers.drops(name)
                        || (p.request_id && name.eq_ignore_ascii_case(b"x-request-id"))
                        || (host_rewrite.is_some() && h.kind == HeaderKind::Host)
                        || auth.is_some_and(|a| {
                            a.forwarded()
                                .iter()
                                .any(|f| same_field_name(name, f.as_bytes()))
                        }))
                })
        });
        if let Some(n) = length {
            plan.header(b"Content-Length", n.to_string().as_bytes());
        }
        plan.bytes(b"X-Forwarded-For: ");
        for h in hs.iter().filter(|h| h.kind == HeaderKind::XForwardedFor) {
            plan.bytes(h.value.of(buf));
            plan.bytes(b", ");
        }
        plan.bytes(self.peer_ip.as_bytes());
        plan.bytes(if self.stream.is_tls() {
            b"\r\nX-Forwarded-Proto: https\r\n"
        } else {
            b"\r\nX-Forwarded-Proto: http\r\n"
        });
        if let (Some(name), Some(subject)) = (subject_field, &self.client_subject) {
            plan.header(name.as_bytes(), subject.as_bytes());
        }
        if let Some(protocol) = upgrade {
            // Only the protocol the route allows goes on, never a list (h2c smuggling).
            plan.header(b"Upgrade", protocol);
            plan.bytes(b"Connection: upgrade\r\n");
        }
        if !host.is_empty() {
            plan.header(b"X-Forwarded-Host", host.of(buf));
        }
        if let Some(p) = policy {
            let g = &self.scratch.gateway;
            let vars = g.vars(text());
            let out = &mut |b: &[u8]| plan.bytes(b);
            if let Some(t) = host_rewrite {
                out(b"Host: ");
                t.expand(&vars, out);
                out(b"\r\n");
            }
            if p.request_id {
                out(b"X-Request-Id: ");
                out(&g.request_id);
                out(b"\r\n");
            }
            if let Some(a) = auth {
                g.write_claims(a, out);
            }
            p.request_headers.write(&vars, out);
        }
        if absolute.is_some() && host_rewrite.is_none() {
            plan.header(b"Host", host.of(buf));
        }
        // An HTTP/1.0 request without Host goes out as HTTP/1.1, which requires the field: the
        // exchange adds the backend's address once it has picked one, then ends the head.
        let needs_host = absolute.is_none() && req.host.is_none() && host_rewrite.is_none();
        let head_mark = plan.mark();

        let available = buf.len() - req.head_len;
        let body_in_buf = match framing {
            Framing::Length(n) => (n.min(available as u64)) as usize,
            _ => 0,
        };
        self.tally.bytes_in += body_in_buf as u64;
        let idempotent = matches!(
            req.method,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Trace
                | Method::Put
                | Method::Delete
        ) || hs
            .iter()
            .any(|h| h.name.of(buf).eq_ignore_ascii_case(b"idempotency-key"));
        let info = ReqInfo {
            method: req.method,
            version: req.version,
            conn,
            framing,
            head_len: req.head_len,
            body_in_buf,
            needs_host,
            head_mark,
            idempotent,
            body_kept: match framing {
                Framing::None => true,
                Framing::Length(n) => n == body_in_buf as u64,
                _ => false,
            },
            key,
            limit_fields,
            upgrade: upgrade.is_some(),
            policy: route.policy,
        };
        let needs_continue = expect_continue
            && req.version == Version::Http11
            && framing != Framing::None
            && available == 0;
        if needs_continue {
            let idle = self.limit(self.snap.limits.client_idle_timeout);
            if write_all(&mut self.stream, CONTINUE, idle).await.is_err() {
                return Next::Close;
            }
            self.tally.head_out += CONTINUE.len() as u64;
            self.tally.bytes_out += CONTINUE.len() as u64;
        }
        self.exchange(upstream, info).await
    }
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Keeps what the request's log line needs (its listener, or one of its routes, logs).
fn capture(c: &mut Captured, req: &Request, hs: &[Header], buf: &[u8]) {
    // One pass over the fields, comparing names only where the length fits.
    let (mut referer, mut user_agent, mut request_id) = (None, None, None);
    for h in hs {
        let name = h.name.of(buf);
        let slot = match name.len() {
            7 if name.eq_ignore_ascii_case(b"referer") => &mut referer,
            10 if name.eq_ignore_ascii_case(b"user-agent") => &mut user_agent,
            12 if name.eq_ignore_ascii_case(b"x-request-id") => &mut request_id,
            _ => continue,
        };
        slot.get_or_insert(h.value);
    }
    let protocol = match req.version {
        Version::Http11 => "HTTP/1.1",
        Version::Http10 => "HTTP/1.0",
    };
    let fields = [
        Some(req.method_span),
        Some(req.target),
        req.host.map(|i| hs[i as usize].value),
        referer,
        user_agent,
        request_id,
    ];
    c.keep(&buf[..req.head_len], fields, protocol);
}

/// Request fields forwarded untouched: not hop-by-hop, not one the proxy sets itself.
/// The first protocol of a request's `Upgrade` field when the route allows it (`websocket`,
/// `name/version` compared whole or up to the `/`).
fn upgrade_field<'b>(hs: &[Header], buf: &'b [u8], allowed: &[Box<str>]) -> Option<&'b [u8]> {
    let h = hs.iter().find(|h| h.kind == HeaderKind::Upgrade)?;
    let first = h.value.of(buf).split(|&b| b == b',').next()?.trim_ascii();
    upgrade_allowed(first, allowed).then_some(first)
}

/// Field names equal ignoring case and `_` against `-`: CGI-style backends read `X_A` as `X-A`,
/// so a client's `X_Client_Subject` must go too.
fn same_field_name(a: &[u8], b: &[u8]) -> bool {
    let norm = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| norm(x) == norm(y))
}

/// Whether `protocol` (`name` or `name/version`) is one of `allowed`.
pub(super) fn upgrade_allowed(protocol: &[u8], allowed: &[Box<str>]) -> bool {
    let name = protocol.split(|&b| b == b'/').next().unwrap_or(protocol);
    !protocol.is_empty()
        && allowed.iter().any(|a| {
            let a = a.as_bytes();
            a.eq_ignore_ascii_case(protocol) || a.eq_ignore_ascii_case(name)
        })
}

/// `https://HOST[:PORT]TARGET` for a redirect: the host without its port, the port when it is
/// not 443, the target as received.
fn https_location(host: &[u8], port: u16, target: &[u8]) -> Vec<u8> {
    let name = route::host_without_port(host);
    let mut l = Vec::with_capacity(16 + host.len() + target.len());
    l.extend_from_slice(b"https://");
    l.extend_from_slice(name);
    if port != 443 {
        l.extend_from_slice(format!(":{port}").as_bytes());
    }
    if target.first() == Some(&b'/') {
        l.extend_from_slice(target);
    } else {
        l.push(b'/');
    }
    l
}

fn keep_request_field(
    h: &Header,
    buf: &[u8],
    hs: &[Header],
    conn: &ConnectionOptions,
    absolute: bool,
) -> bool {
    match h.kind {
        HeaderKind::Expect
        | HeaderKind::XForwardedFor
        | HeaderKind::XForwardedProto
        | HeaderKind::XForwardedHost => false,
        HeaderKind::Host => !absolute,
        k if k.is_hop_by_hop() => false,
        _ => !(conn.nominates_others && connection_has(hs, buf, h.name.of(buf))),
    }
}

/// The consistent-hashing key of a request, hashed; `None` when the request has none (no such
/// header or cookie).
fn hash_key(on: &HashOn, hs: &[Header], buf: &[u8], path: &[u8], client_ip: &str) -> Option<u64> {
    let value: &[u8] = match on {
        HashOn::ClientIp => client_ip.as_bytes(),
        HashOn::Path => path,
        HashOn::Header(name) => header_value(hs, buf, name)?,
        HashOn::Cookie(name) => http1::cookie(hs, buf, name)?,
    };
    Some(maglev::hash_key(value))
}

/// What the keys of a request's rate limits are made of.
struct LimitKeys<'b> {
    hs: &'b [Header],
    buf: &'b [u8],
    route: usize,
    peer: u64,
    /// The consumer the route's auth admitted.
    consumer: Option<&'b str>,
}

impl LimitKeys<'_> {
    /// The key of rate limit `l`, hashed; `None` when the request has none.
    fn of(&self, l: &RateLimit) -> Option<u64> {
        Some(match &l.key {
            LimitKey::ClientIp => self.peer,
            LimitKey::Route => self.route as u64,
            LimitKey::Consumer => maglev::hash_key(self.consumer?.as_bytes()),
            LimitKey::Header(name) => maglev::hash_key(header_value(self.hs, self.buf, name)?),
            LimitKey::Cookie(name) => maglev::hash_key(http1::cookie(self.hs, self.buf, name)?),
        })
    }
}

/// Applies the route's rate limits `which` (positions in `route.rate_limits`) in order: the
/// status and fields of the first that rejects, else `None` (the admitting verdicts that
/// announce themselves go to `fields`).
fn apply_limits(
    snap: &Snapshot,
    state: &super::WorkerState,
    route: &route::Route,
    key: &LimitKeys,
    which: impl std::slice::SliceIndex<[usize], Output = [usize]>,
    fields: &mut LimitFields,
) -> Option<(u16, String)> {
    for &li in route.rate_limits[which].iter() {
        let l = &snap.rate_limits[li];
        let Some(k) = key.of(l) else {
            continue; // no such header, cookie or consumer: the limit does not apply
        };
        let v = state.limits.check(l, k);
        let counter = if v.admitted {
            &state.stats.limit_admitted
        } else {
            &state.stats.limit_rejected
        };
        counter[li].inc();
        if !v.admitted {
            return Some((l.status, rejection_fields(l, &v)));
        }
        if l.headers == LimitHeaders::All {
            fields.push(li, v);
        }
    }
    None
}

/// The first value of header `name` (given lowercase).
fn header_value<'b>(hs: &[Header], buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
    http1::find_all(hs, buf, name.as_bytes()).next()
}

/// `Retry-After`, and unless `headers = "none"`, `RateLimit-Policy` and `RateLimit`, for a
/// rejection by `l`.
fn rejection_fields(l: &RateLimit, v: &LimitVerdict) -> String {
    let mut s = format!("Retry-After: {}\r\n", v.reset);
    if l.headers != LimitHeaders::None {
        s.push_str(&l.policy_field);
        s.push_str(&format!("RateLimit: \"{}\";r=0;t={}\r\n", l.name, v.reset));
    }
    s
}

/// True when the message has at most one `Content-Length` field and it holds no list.
pub(super) fn single_length_field(hs: &[Header], buf: &[u8]) -> bool {
    let mut fields = hs.iter().filter(|h| h.kind == HeaderKind::ContentLength);
    match (fields.next(), fields.next()) {
        (None, _) => true,
        (Some(h), None) => !h.value.of(buf).contains(&b','),
        (Some(_), Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{https_location, same_field_name, upgrade_allowed};

    #[test]
    fn redirect_locations() {
        let l = |h: &str, p, t: &str| {
            String::from_utf8(https_location(h.as_bytes(), p, t.as_bytes())).unwrap()
        };
        assert_eq!(l("a.test:8080", 443, "/x?y=1"), "https://a.test/x?y=1");
        assert_eq!(l("a.test", 8443, "/"), "https://a.test:8443/");
        assert_eq!(l("[::1]:80", 443, "/p"), "https://[::1]/p");
        assert_eq!(l("127.0.0.1", 443, "*"), "https://127.0.0.1/");
    }

    #[test]
    fn upgrade_protocols_and_field_names() {
        let allowed: Vec<Box<str>> = vec!["websocket".into(), "foo/2".into()];
        assert!(upgrade_allowed(b"WebSocket", &allowed));
        assert!(upgrade_allowed(b"websocket/13", &allowed));
        assert!(upgrade_allowed(b"foo/2", &allowed));
        assert!(!upgrade_allowed(b"h2c", &allowed));
        assert!(!upgrade_allowed(b"", &allowed));
        assert!(same_field_name(b"X_Client_Subject", b"x-client-subject"));
        assert!(!same_field_name(b"X-Client-Subjects", b"x-client-subject"));
    }
}
