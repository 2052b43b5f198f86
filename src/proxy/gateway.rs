//! Per-connection state of the gateway policies (`crate::policy`): the request id, the
//! admitted identity, the CORS origin, `path_regex` captures, the rebuilt target, and the copies
//! of request values that response templates use once the request buffer has moved on. Buffers
//! are reused from request to request; a route without policies never touches them.

use crate::http1::Header;
use crate::policy::auth::{Auth, Identity};
use crate::policy::transform::{RoutePolicy, Sink, Vars};
use crate::route::Route;

#[derive(Default)]
pub(super) struct GatewayScratch {
    /// `X-Request-Id` forwarded (a route with `request_id`).
    pub(super) request_id: Vec<u8>,
    /// The request's `Origin` when the route's CORS policy allows it (else empty).
    pub(super) origin: Vec<u8>,
    /// The rebuilt request target (path rewrite, query changes).
    pub(super) target: Vec<u8>,
    pub(super) identity: Identity,
    /// `path_regex` capture spans in `path`.
    captures: Vec<Option<(usize, usize)>>,
    path: Vec<u8>,
    /// Request values kept for the response's templates.
    host: Vec<u8>,
    request_target: Vec<u8>,
    method: Vec<u8>,
    route: Box<str>,
    client_ip: String,
    tls: bool,
}

/// The request as the variables of templates see it.
#[derive(Clone, Copy)]
pub(super) struct RequestText<'v> {
    pub(super) client_ip: &'v str,
    pub(super) tls: bool,
    /// The route's name.
    pub(super) route: &'v str,
    /// The `Host` value (or the authority of an absolute-form target) as received.
    pub(super) host: &'v [u8],
    /// The target as received.
    pub(super) target: &'v [u8],
    pub(super) method: &'v [u8],
    pub(super) headers: &'v [Header],
    pub(super) buf: &'v [u8],
}

/// Longest `X-Request-Id` taken from a client (longer ones are replaced).
const MAX_REQUEST_ID: usize = 128;

impl GatewayScratch {
    /// Starts a request on a route with policy `p`: forgets the previous request's values and
    /// records what the response's templates need.
    pub(super) fn begin(
        &mut self,
        p: &RoutePolicy,
        route: &Route,
        decision: &[u8],
        r: RequestText,
    ) {
        self.request_id.clear();
        self.origin.clear();
        self.identity.consumer.clear();
        self.captures.clear();
        if let Some(re) = route
            .conditions
            .as_ref()
            .and_then(|c| c.path_regex.as_ref())
        {
            self.path.clear();
            self.path.extend_from_slice(decision);
            if let Some(c) = re.captures(&self.path) {
                self.captures
                    .extend(c.iter().map(|m| m.map(|m| (m.start(), m.end()))));
            }
        }
        if p.response_headers.has_variables() {
            let keep = |v: &mut Vec<u8>, b: &[u8]| {
                v.clear();
                v.extend_from_slice(b);
            };
            keep(&mut self.host, crate::route::host_without_port(r.host));
            keep(&mut self.request_target, r.target);
            keep(&mut self.method, r.method);
            if *self.route != *r.route {
                self.route = r.route.into();
            }
            if self.client_ip != r.client_ip {
                self.client_ip.clear();
                self.client_ip.push_str(r.client_ip);
            }
            self.tls = r.tls;
        }
    }

    /// Takes the client's `X-Request-Id` when it is a sane one (1 to 128 visible ASCII
    /// characters), else makes a UUIDv7.
    pub(super) fn request_id(
        &mut self,
        hs: &[Header],
        buf: &[u8],
        rng: &crate::upstream::Upstreams,
    ) {
        let received = crate::http1::find_all(hs, buf, b"x-request-id")
            .next()
            .filter(|v| {
                (1..=MAX_REQUEST_ID).contains(&v.len()) && v.iter().all(|b| b.is_ascii_graphic())
            });
        self.request_id.clear();
        match received {
            Some(v) => self.request_id.extend_from_slice(v),
            None => {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let mut out = [0u8; 36];
                let id = crate::observe::access::uuid_v7(&mut out, ms, rng.random());
                self.request_id.extend_from_slice(id);
            }
        }
    }

    /// The variables of the request being forwarded.
    pub(super) fn vars<'v>(&'v self, r: RequestText<'v>) -> Vars<'v> {
        Vars {
            sink: Sink::Field,
            client_ip: r.client_ip,
            host: crate::route::host_without_port(r.host),
            target: r.target,
            method: r.method,
            scheme: if r.tls { "https" } else { "http" },
            route: r.route,
            request_id: &self.request_id,
            consumer: &self.identity.consumer,
            upstream_addr: "",
            status: 0,
            headers: r.headers,
            buf: r.buf,
            captures: &self.captures,
            captured: &self.path,
        }
    }

    /// `X-Request-Id: …` (a route with `request_id`) appended to `out`.
    pub(super) fn request_id_field(&self, out: &mut Vec<u8>) {
        self.write_request_id(&mut |b: &[u8]| out.extend_from_slice(b));
    }

    fn write_request_id(&self, out: &mut impl FnMut(&[u8])) {
        out(b"X-Request-Id: ");
        out(&self.request_id);
        out(b"\r\n");
    }

    /// The request id (a route with `request_id`) and, for an allowed origin, the CORS fields.
    fn write_id_and_cors(&self, p: &RoutePolicy, out: &mut impl FnMut(&[u8])) {
        if p.request_id {
            self.write_request_id(out);
        }
        if let Some(cors) = p.cors.as_ref().filter(|_| !self.origin.is_empty()) {
            cors.write_response(&self.origin, out);
        }
    }

    /// The fields of an error answer on a policy route (a refusal by auth or a limit, a failed
    /// aggregate): the request id and, for an allowed origin, the CORS fields, so that a
    /// browser can read the refusal. `response_headers` are for relayed answers only.
    pub(super) fn answer_fields(&self, p: &RoutePolicy) -> String {
        let mut out = Vec::new();
        self.write_id_and_cors(p, &mut |b: &[u8]| out.extend_from_slice(b));
        // Field lines made of checked bytes (ids, origins and config text).
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The auth's forwarded claims as request fields.
    pub(super) fn write_claims(&self, auth: &Auth, out: &mut impl FnMut(&[u8])) {
        for (name, value) in auth.forwarded().iter().zip(&self.identity.claims) {
            if let Some(v) = value {
                out(name.as_bytes());
                out(b": ");
                out(v.as_bytes());
                out(b"\r\n");
            }
        }
    }

    /// Writes the fields the route adds to its responses: `X-Request-Id`, CORS fields for an
    /// allowed origin, and `response_headers`' `set` / `add`. `answer`: (backend address,
    /// status) of a relayed response.
    pub(super) fn response_fields(
        &self,
        p: &RoutePolicy,
        answer: Option<(&str, u16)>,
        out: &mut impl FnMut(&[u8]),
    ) {
        self.write_id_and_cors(p, out);
        if !p.response_headers.is_empty() {
            let (upstream_addr, status) = answer.unwrap_or(("", 0));
            // The request's values as `begin` kept them.
            let kept = RequestText {
                client_ip: &self.client_ip,
                tls: self.tls,
                route: &self.route,
                host: &self.host,
                target: &self.request_target,
                method: &self.method,
                headers: &[],
                buf: &[],
            };
            let vars = Vars {
                upstream_addr,
                status,
                ..self.vars(kept)
            };
            p.response_headers.write(&vars, out);
        }
    }

    /// Whether a response field named `name` gives way to the route's own (removed or set by
    /// `response_headers`, or a backend's CORS field on a route whose CORS policy decides).
    pub(super) fn drops_response_field(&self, p: &RoutePolicy, name: &[u8]) -> bool {
        p.response_headers.drops(name)
            || (p.request_id && name.eq_ignore_ascii_case(b"x-request-id"))
            || (p.cors.is_some()
                && name.len() > 15
                && name[..15].eq_ignore_ascii_case(b"access-control-"))
    }
}
