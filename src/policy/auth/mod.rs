//! Authentication policies (`[[auth]]`): who a request is, decided from the request head
//! alone, between routing and balancing (DESIGN.md §1).
//!
//! In: a route's [`Auth`] (built once when the config loads: keys, key files and htpasswd
//! files already read and parsed), the parsed request head (field spans into the received
//! buffer) and the raw query string. Out: a [`Verdict`] — allowed, with the consumer and the
//! claims to forward written into a reused [`Identity`]; or missing / invalid credentials (a
//! 401 whose `WWW-Authenticate` line [`Auth::challenge`] builds) or forbidden (403). The proxy
//! calls [`AuthCache::check`] on the worker that serves the request; nothing crosses cores.
//!
//! Three kinds:
//! - `jwt` ([`jwt`]): `Authorization: Bearer` (or a cookie), signature checked with the
//!   `jsonwebtoken` crate against an HMAC secret, a PEM public key or a JWKS file; `exp`, `nbf`,
//!   `iss`, `aud`, required claims and claim values checked here.
//! - `api_key` ([`keys`]): a header or query parameter, looked up by its SHA-256.
//! - `basic` ([`basic`]): `Authorization: Basic` against an htpasswd file (bcrypt, `{SHA}`,
//!   SHA-256-crypt, SHA-512-crypt).
//!
//! Verifying a signature or a bcrypt hash is slow (tens of µs to 100 ms), so each worker keeps
//! an [`AuthCache`] of credentials it has admitted: a credential seen before is admitted by an
//! exact comparison of its bytes until it expires, without allocating.

pub mod basic;
mod cache;
pub mod jwt;
pub mod keys;
mod request;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

pub use basic::Htpasswd;
pub use cache::AuthCache;
pub use jwt::{Jwt, KeySet};
pub use keys::{ApiKey, KeyTable};

/// One `[[auth]]` table, ready to check requests.
#[derive(Debug, Clone)]
pub struct Auth {
    pub name: Box<str>,
    /// The `realm` of the challenge (the name unless configured).
    pub realm: Box<str>,
    pub kind: Kind,
    /// Fields that carry the credential, as configured.
    credential_fields: Box<[Box<str>]>,
}

/// What an [`Auth`] checks, with its keys.
#[derive(Debug, Clone)]
pub enum Kind {
    Jwt(Box<Jwt>),
    ApiKey(ApiKey),
    Basic(Htpasswd),
}

/// The identity of an admitted request; reused across requests (`clone_from` / `clear`, no
/// allocation in steady state).
#[derive(Default, Debug)]
pub struct Identity {
    /// The consumer: the `consumer_claim` of a token, the name an API key is listed with
    /// (empty when none), the user of Basic credentials.
    pub consumer: String,
    /// Values of the forwarded claims, in [`Auth::forwarded`] order; `None`: the claim is absent
    /// (or not a string, number or boolean, or not a valid field value).
    pub claims: Vec<Option<String>>,
}

impl Identity {
    pub fn clear(&mut self) {
        self.consumer.clear();
        self.claims.clear();
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            consumer: self.consumer.clone(),
            claims: self.claims.clone(),
        }
    }

    /// Field by field, reusing `self`'s strings (a derived `clone_from` would allocate anew).
    fn clone_from(&mut self, source: &Self) {
        self.consumer.clone_from(&source.consumer);
        self.claims.clone_from(&source.claims);
    }
}

/// The outcome of checking one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No credential of this kind in the request: 401.
    Missing,
    /// A credential that is malformed, wrongly signed, expired, unknown …: 401.
    Invalid(&'static str),
    /// A valid credential that lacks a required claim value: 403.
    Forbidden(&'static str),
}

impl Auth {
    /// `realm` defaults to `name`; `realm` must hold no `"`, `\` or control character (it is
    /// written into the challenge as a quoted string; the config checks it).
    pub fn new(name: &str, realm: Option<&str>, kind: Kind) -> Auth {
        let credential_fields: Vec<Box<str>> = match &kind {
            Kind::Jwt(_) | Kind::Basic(_) => vec!["Authorization".into()],
            Kind::ApiKey(k) => k.header.iter().cloned().collect(),
        };
        Auth {
            name: name.into(),
            realm: realm.unwrap_or(name).into(),
            kind,
            credential_fields: credential_fields.into(),
        }
    }

    /// Header names (as configured) the forwarded claims go to, in order.
    pub fn forwarded(&self) -> &[Box<str>] {
        match &self.kind {
            Kind::Jwt(j) => &j.forward_headers,
            _ => &[],
        }
    }

    /// Field names that carry the credential (`Authorization`, the API-key header), so the
    /// proxy can decide whether to strip them before forwarding.
    pub fn credential_fields(&self) -> &[Box<str>] {
        &self.credential_fields
    }

    /// The query parameter that carries an API key, if one does.
    pub fn credential_query(&self) -> Option<&str> {
        match &self.kind {
            Kind::ApiKey(k) => k.query.as_deref(),
            _ => None,
        }
    }

    /// The cookie a token may come in, if one may.
    pub fn credential_cookie(&self) -> Option<&str> {
        match &self.kind {
            Kind::Jwt(j) => j.cookie.as_deref(),
            _ => None,
        }
    }

    /// The complete `WWW-Authenticate: …\r\n` field line answering `v` (RFC 6750 §3 for
    /// tokens, RFC 7617 for Basic); empty for [`Verdict::Allowed`]. Allocates: error path only.
    pub fn challenge(&self, v: Verdict) -> String {
        let realm = &self.realm;
        let mut s = String::with_capacity(96);
        let (scheme, code) = match &self.kind {
            Kind::Jwt(_) => ("Bearer", "invalid_token"),
            Kind::ApiKey(_) => ("ApiKey", "invalid_key"),
            Kind::Basic(_) => ("Basic", ""),
        };
        let _ = write!(s, "WWW-Authenticate: {scheme} realm=\"{realm}\"");
        match (v, &self.kind) {
            (Verdict::Allowed, _) => return String::new(),
            (Verdict::Missing, _) => {}
            (Verdict::Invalid(_) | Verdict::Forbidden(_), Kind::Basic(_)) => {}
            (Verdict::Invalid(d), _) => {
                let _ = write!(s, ", error=\"{code}\", error_description=\"{d}\"");
            }
            (Verdict::Forbidden(d), _) => {
                let _ = write!(
                    s,
                    ", error=\"insufficient_scope\", error_description=\"{d}\""
                );
            }
        }
        if matches!(self.kind, Kind::Basic(_)) {
            s.push_str(", charset=\"UTF-8\"");
        }
        s.push_str("\r\n");
        s
    }

    /// One line for `coregate check`: the kind and what it checks (no secret).
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            Kind::Jwt(j) => j.describe(),
            Kind::ApiKey(k) => k.describe(),
            Kind::Basic(h) => h.describe(),
        };
        if *self.realm == *self.name {
            format!("{}: {what}", self.name)
        } else {
            format!("{}: {what}, realm {:?}", self.name, self.realm)
        }
    }
}

/// The lines of a keys or htpasswd file that hold something, trimmed, with their 1-based
/// numbers: a leading byte-order mark, blank lines and `#` comments are skipped.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}
