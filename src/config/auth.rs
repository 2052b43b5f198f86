//! `[[auth]]`: authentication policies that routes name. Key, keys, htpasswd and JWKS files are
//! read and parsed here, when the config loads (a reload reads them again; a bad file keeps the
//! old config serving), each error pointing at the key that named the file.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Errors;
use super::values::Dur;
use crate::http1::{is_token_str, HeaderKind};
use crate::policy::auth::{self, ApiKey, Auth, Htpasswd, Jwt, KeySet, KeyTable, Kind};

/// Clock skew allowed on `exp` and `nbf` unless `leeway` says otherwise (Envoy's default).
const LEEWAY: u64 = 60;
/// The largest `leeway`.
const MAX_LEEWAY: u64 = 3600;

/// `[[auth]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub name: Spanned<String>,
    pub kind: Spanned<AuthKind>,
    pub realm: Option<Spanned<String>>,
    // jwt
    pub secret: Option<Spanned<String>>,
    pub public_key: Option<Spanned<String>>,
    pub jwks: Option<Spanned<String>>,
    pub issuer: Option<Spanned<String>>,
    pub audience: Option<Spanned<String>>,
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    pub leeway: Option<Spanned<Dur<true>>>,
    pub required_claims: Option<Vec<Spanned<String>>>,
    pub claims: Option<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
    pub cookie: Option<Spanned<String>>,
    pub forward_claims: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub consumer_claim: Option<Spanned<String>>,
    // api_key
    pub header: Option<Spanned<String>>,
    pub query: Option<Spanned<String>>,
    pub keys_file: Option<Spanned<String>>,
    // basic
    pub htpasswd: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    Jwt,
    ApiKey,
    Basic,
}

impl AuthKind {
    fn as_str(self) -> &'static str {
        match self {
            AuthKind::Jwt => "jwt",
            AuthKind::ApiKey => "api_key",
            AuthKind::Basic => "basic",
        }
    }
}

/// One `[[auth]]` table; `None` when something in it is wrong (the errors recorded).
pub(super) fn auth(a: &RawAuth, errs: &mut Errors) -> Option<Auth> {
    let before = errs.0.len();
    let kind = *a.kind.get_ref();
    if let Some(r) = &a.realm {
        let v = r.get_ref();
        if v.is_empty() || v.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            errs.at(
                r,
                format!("invalid realm {v:?}: non-empty, without '\"', '\\' or control characters"),
            );
        }
    }
    stray_keys(a, kind, errs);
    let built = match kind {
        AuthKind::Jwt => jwt(a, errs).map(|j| Kind::Jwt(Box::new(j))),
        AuthKind::ApiKey => api_key(a, errs).map(Kind::ApiKey),
        AuthKind::Basic => basic(a, errs).map(Kind::Basic),
    };
    if errs.0.len() > before {
        return None;
    }
    let realm = a.realm.as_ref().map(|r| r.get_ref().as_str());
    Some(Auth::new(a.name.get_ref(), realm, built?))
}

/// Keys of another kind are errors, not silently ignored settings.
fn stray_keys(a: &RawAuth, kind: AuthKind, errs: &mut Errors) {
    use AuthKind::*;
    let keys: [(Option<std::ops::Range<usize>>, &str, AuthKind); 16] = [
        (a.secret.as_ref().map(Spanned::span), "secret", Jwt),
        (a.public_key.as_ref().map(Spanned::span), "public_key", Jwt),
        (a.jwks.as_ref().map(Spanned::span), "jwks", Jwt),
        (a.issuer.as_ref().map(Spanned::span), "issuer", Jwt),
        (a.audience.as_ref().map(Spanned::span), "audience", Jwt),
        (a.algorithms.as_ref().map(Spanned::span), "algorithms", Jwt),
        (a.leeway.as_ref().map(Spanned::span), "leeway", Jwt),
        (first_span(&a.required_claims), "required_claims", Jwt),
        (key_span(&a.claims), "claims", Jwt),
        (a.cookie.as_ref().map(Spanned::span), "cookie", Jwt),
        (key_span(&a.forward_claims), "forward_claims", Jwt),
        (
            a.consumer_claim.as_ref().map(Spanned::span),
            "consumer_claim",
            Jwt,
        ),
        (a.header.as_ref().map(Spanned::span), "header", ApiKey),
        (a.query.as_ref().map(Spanned::span), "query", ApiKey),
        (a.keys_file.as_ref().map(Spanned::span), "keys_file", ApiKey),
        (a.htpasswd.as_ref().map(Spanned::span), "htpasswd", Basic),
    ];
    for (span, key, owner) in keys {
        if let (Some(span), true) = (span, owner != kind) {
            errs.0.push(super::validate::Invalid {
                span: Some(span),
                message: format!(
                    "{key} applies to kind = \"{}\", not \"{}\"",
                    owner.as_str(),
                    kind.as_str()
                ),
            });
        }
    }
}

fn first_span<T>(list: &Option<Vec<Spanned<T>>>) -> Option<std::ops::Range<usize>> {
    list.as_ref().and_then(|l| l.first()).map(Spanned::span)
}

fn key_span<V>(map: &Option<BTreeMap<Spanned<String>, V>>) -> Option<std::ops::Range<usize>> {
    map.as_ref()
        .and_then(|m| m.keys().map(Spanned::span).min_by_key(|s| s.start))
}

/// The contents of the file `path` names, or the error recorded at `path`.
fn read(path: &Spanned<String>, key: &str, errs: &mut Errors) -> Option<String> {
    match std::fs::read_to_string(path.get_ref()) {
        Ok(s) => Some(s),
        Err(e) => {
            errs.at(
                path,
                format!(
                    "cannot read {key} {:?}: {}",
                    path.get_ref(),
                    super::io_reason(&e)
                ),
            );
            None
        }
    }
}

/// `KEY "FILE" line N: MESSAGE` (line 0: the file as a whole).
fn file_error(path: &Spanned<String>, key: &str, (line, m): (usize, String), errs: &mut Errors) {
    let at = if line == 0 {
        String::new()
    } else {
        format!(" line {line}")
    };
    errs.at(path, format!("{key} {:?}{at}: {m}", path.get_ref()));
}

fn jwt(a: &RawAuth, errs: &mut Errors) -> Option<Jwt> {
    let sources = [&a.secret, &a.public_key, &a.jwks];
    let mut given = sources.iter().filter_map(|s| s.as_ref());
    let (Some(_), extra) = (given.next(), given.next()) else {
        errs.at(
            &a.kind,
            "a jwt auth needs its key: secret, public_key or jwks",
        );
        return None;
    };
    if let Some(extra) = extra {
        errs.at(extra, "give one of secret, public_key and jwks");
        return None;
    }
    let mut keys = if let Some(s) = &a.secret {
        if s.get_ref().len() < auth::jwt::MIN_SECRET {
            errs.at(
                s,
                format!(
                    "secret has {} bytes: an HMAC secret needs at least {} (RFC 7518 §3.2)",
                    s.get_ref().len(),
                    auth::jwt::MIN_SECRET
                ),
            );
            None
        } else {
            Some(KeySet::secret(s.get_ref().as_bytes()))
        }
    } else {
        let (path, key) = match (&a.public_key, &a.jwks) {
            (Some(p), _) => (p, "public_key"),
            (None, Some(j)) => (j, "jwks"),
            (None, None) => return None,
        };
        read(path, key, errs).and_then(|text| {
            let parsed = if key == "jwks" {
                KeySet::from_jwks(text.as_bytes())
            } else {
                KeySet::from_pem(text.as_bytes())
            };
            parsed.map_err(|m| file_error(path, key, (0, m), errs)).ok()
        })
    };
    if let Some(list) = &a.algorithms {
        let algs = algorithms(list, errs);
        if let (Some(algs), Some(k)) = (algs, keys.as_mut()) {
            if let Err(i) = k.restrict(&algs) {
                errs.at(
                    &list.get_ref()[i],
                    format!(
                        "algorithm {:?} does not fit {}",
                        list.get_ref()[i].get_ref(),
                        k.kind()
                    ),
                );
            }
        }
    }
    let leeway = match &a.leeway {
        None => Some(LEEWAY),
        Some(d) => {
            let d = d.get_ref().0;
            if d.subsec_nanos() != 0 || d.as_secs() > MAX_LEEWAY {
                errs.at(
                    a.leeway.as_ref()?,
                    format!("invalid leeway: whole seconds, at most {MAX_LEEWAY}s"),
                );
                None
            } else {
                Some(d.as_secs())
            }
        }
    };
    for (what, v) in [("issuer", &a.issuer), ("audience", &a.audience)] {
        if let Some(v) = v.as_ref().filter(|v| v.get_ref().is_empty()) {
            errs.at(v, format!("{what} must not be empty"));
        }
    }
    let mut required: Vec<Box<str>> = Vec::new();
    for c in a.required_claims.iter().flatten() {
        if check_claim_name(c, errs) && required.iter().any(|r| **r == **c.get_ref()) {
            errs.at(c, format!("claim {:?} listed twice", c.get_ref()));
        }
        required.push(c.get_ref().as_str().into());
    }
    let mut claims = Vec::new();
    for (name, value) in a.claims.iter().flatten() {
        check_claim_name(name, errs);
        let v = match value.get_ref() {
            toml::Value::String(s) => serde_json::Value::from(s.as_str()),
            toml::Value::Integer(i) => serde_json::Value::from(*i),
            toml::Value::Boolean(b) => serde_json::Value::from(*b),
            _ => {
                errs.at(
                    value,
                    "a required claim value is a string, an integer or a boolean",
                );
                continue;
            }
        };
        claims.push((name.get_ref().as_str().into(), v));
    }
    if let Some(c) = &a.cookie {
        if !is_token_str(c.get_ref().as_bytes()) {
            errs.at(c, format!("invalid cookie name {:?}", c.get_ref()));
        }
    }
    let (forward_claims, forward_headers) = forward(a.forward_claims.as_ref(), errs);
    let consumer_claim = match &a.consumer_claim {
        None => "sub".into(),
        Some(c) => {
            check_claim_name(c, errs);
            c.get_ref().as_str().into()
        }
    };
    Some(Jwt {
        keys: keys?,
        issuer: a.issuer.as_ref().map(|v| v.get_ref().as_str().into()),
        audience: a.audience.as_ref().map(|v| v.get_ref().as_str().into()),
        leeway: leeway?,
        required_claims: required.into(),
        claims: claims.into(),
        cookie: a.cookie.as_ref().map(|v| v.get_ref().as_str().into()),
        forward_claims,
        forward_headers,
        consumer_claim,
    })
}

/// `algorithms`, each known and listed once.
fn algorithms(
    list: &Spanned<Vec<Spanned<String>>>,
    errs: &mut Errors,
) -> Option<Vec<jsonwebtoken::Algorithm>> {
    if list.get_ref().is_empty() {
        errs.at(
            list,
            "algorithms is empty: omit it to allow every algorithm the key fits",
        );
        return None;
    }
    let mut algs = Vec::new();
    let mut ok = true;
    for n in list.get_ref() {
        match auth::jwt::algorithm(n.get_ref()) {
            Some(a) if algs.contains(&a) => {
                errs.at(n, format!("algorithm {:?} listed twice", n.get_ref()));
                ok = false;
            }
            Some(a) => algs.push(a),
            None => {
                errs.at(
                    n,
                    format!(
                        "unknown algorithm {:?}: expected one of {}",
                        n.get_ref(),
                        auth::jwt::ALGORITHMS
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(algs)
}

fn check_claim_name(c: &Spanned<String>, errs: &mut Errors) -> bool {
    if c.get_ref().is_empty() {
        errs.at(c, "a claim name must not be empty");
        return false;
    }
    true
}

/// Names, in order.
type Names = Box<[Box<str>]>;

/// `forward_claims`, in file order: the claims and the header each goes to.
fn forward(
    map: Option<&BTreeMap<Spanned<String>, Spanned<String>>>,
    errs: &mut Errors,
) -> (Names, Names) {
    let mut pairs: Vec<(&Spanned<String>, &Spanned<String>)> = map.into_iter().flatten().collect();
    pairs.sort_by_key(|(c, _)| c.span().start);
    let mut claims: Vec<Box<str>> = Vec::new();
    let mut headers: Vec<Box<str>> = Vec::new();
    for (claim, header) in pairs {
        check_claim_name(claim, errs);
        let h = header.get_ref();
        if !is_token_str(h.as_bytes()) {
            errs.at(header, format!("invalid header name {h:?}"));
        } else if HeaderKind::of(h.as_bytes()) != HeaderKind::Other
            || h.eq_ignore_ascii_case("authorization")
            || h.eq_ignore_ascii_case("cookie")
        {
            errs.at(
                header,
                format!("{h:?} cannot carry a claim (the proxy or the credential uses it)"),
            );
        } else if headers.iter().any(|x| x.eq_ignore_ascii_case(h)) {
            errs.at(header, format!("header {h:?} receives two claims"));
        }
        claims.push(claim.get_ref().as_str().into());
        headers.push(h.as_str().into());
    }
    (claims.into(), headers.into())
}

fn api_key(a: &RawAuth, errs: &mut Errors) -> Option<ApiKey> {
    if let Some(h) = &a.header {
        if !is_token_str(h.get_ref().as_bytes()) {
            errs.at(h, format!("invalid header name {:?}", h.get_ref()));
        }
    }
    if let Some(q) = &a.query {
        let v = q.get_ref();
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            errs.at(
                q,
                format!("invalid query parameter name {v:?}: use letters, digits, '-', '.', '_' and '~'"),
            );
        }
    }
    if a.header.is_none() && a.query.is_none() {
        errs.at(
            &a.kind,
            "an api_key auth needs header, query or both (where the key is looked for)",
        );
    }
    let Some(path) = &a.keys_file else {
        errs.at(&a.kind, "an api_key auth needs keys_file");
        return None;
    };
    let keys = read(path, "keys_file", errs).and_then(|text| {
        KeyTable::parse(&text)
            .map_err(|e| file_error(path, "keys_file", e, errs))
            .ok()
    })?;
    Some(ApiKey {
        header: a.header.as_ref().map(|h| h.get_ref().as_str().into()),
        query: a.query.as_ref().map(|q| q.get_ref().as_str().into()),
        keys,
    })
}

fn basic(a: &RawAuth, errs: &mut Errors) -> Option<Htpasswd> {
    let Some(path) = &a.htpasswd else {
        errs.at(&a.kind, "a basic auth needs htpasswd");
        return None;
    };
    read(path, "htpasswd", errs).and_then(|text| {
        Htpasswd::parse(&text)
            .map_err(|e| file_error(path, "htpasswd", e, errs))
            .ok()
    })
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
