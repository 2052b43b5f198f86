//! The `tls` table of a listener and the TLS keys of an upstream: files read and checked when
//! the config is loaded (a reload that names a bad file keeps the old config serving), each
//! error pointing at the key that named the file.

use std::sync::Arc;

use toml::Spanned;

use super::schema::{ClientAuth, RawListenerTls, RawUpstream, TlsVersion};
use super::validate::{err, Errors, Result};
use crate::tls::{ClientSpec, ClientTls, ListenerTls, ServerSpec};

/// Sessions a listener's cache holds unless `session_cache` says otherwise (nginx's 10 MB
/// shared cache holds about 40,000).
const SESSION_CACHE: usize = 20_000;

/// A listener's TLS settings; `alpn_http1` for HTTP listeners.
pub(super) fn listener_tls(
    t: &Spanned<RawListenerTls>,
    addr: Option<std::net::SocketAddr>,
    alpn_http1: bool,
    errs: &mut Errors,
) -> Option<Arc<ListenerTls>> {
    let raw = t.get_ref();
    let mut certs = Vec::new();
    let mut ok = true;
    if raw.certificates.get_ref().is_empty() {
        errs.at(
            &raw.certificates,
            "certificates is empty: give at least one { cert, key }",
        );
        ok = false;
    }
    for c in raw.certificates.get_ref() {
        let c = c.get_ref();
        match crate::tls::load_certified(c.cert.get_ref(), c.key.get_ref()) {
            Ok(loaded) => certs.push(loaded),
            Err(e) => {
                errs.at(if e.in_key { &c.key } else { &c.cert }, e.message);
                ok = false;
            }
        }
    }
    let suites = match &raw.cipher_suites {
        None => None,
        Some(list) => {
            let names: Vec<String> = list.iter().map(|s| s.get_ref().clone()).collect();
            match crate::tls::cipher_suites(&names) {
                Ok(s) => Some(s),
                Err((i, m)) => {
                    errs.at(&list[i], m);
                    ok = false;
                    None
                }
            }
        }
    };
    let session_cache = match &raw.session_cache {
        None => Some(SESSION_CACHE),
        Some(n) => errs.take(count(n, "session_cache", 10_000_000)),
    };
    let client_ca = match roots(raw.client_ca.as_ref(), errs) {
        Some(r) => r.map(|r| (r, raw.client_auth == ClientAuth::Optional)),
        None => {
            ok = false;
            None
        }
    };
    let subject_header = match &raw.client_subject_header {
        None => None,
        Some(h) if raw.client_ca.is_none() => {
            errs.at(
                h,
                "client_subject_header needs client_ca (no client is verified without it)",
            );
            ok = false;
            None
        }
        Some(h) => {
            let n = h.get_ref();
            if !crate::http1::is_token_str(n.as_bytes()) {
                errs.at(
                    h,
                    format!("invalid client_subject_header {n:?}: not a field name"),
                );
                ok = false;
            }
            Some(n.as_str().into())
        }
    };
    let (Some(addr), Some(session_cache), true) = (addr, session_cache, ok) else {
        return None;
    };
    let spec = ServerSpec {
        addr,
        certs: &certs,
        tls13_only: raw.min_version == TlsVersion::Tls13,
        suites,
        session_tickets: raw.session_tickets,
        session_cache,
        client_ca,
        alpn_http1,
    };
    match ListenerTls::new(spec, raw.handshake_timeout.0, subject_header) {
        Ok(l) => Some(Arc::new(l)),
        Err(e) => {
            errs.at(t, e);
            None
        }
    }
}

/// The CA certificates of the file `path` names: `Some(None)` when there is none, `None` (the
/// error recorded at `path`) when it cannot be used.
fn roots(
    path: Option<&Spanned<String>>,
    errs: &mut Errors,
) -> Option<Option<rustls::RootCertStore>> {
    let Some(p) = path else {
        return Some(None);
    };
    match crate::tls::load_roots(p.get_ref()) {
        Ok(r) => Some(Some(r)),
        Err(e) => {
            errs.at(p, e.message);
            None
        }
    }
}

fn count(n: &Spanned<i64>, what: &str, max: i64) -> Result<usize> {
    match *n.get_ref() {
        v @ 0.. if v <= max => Ok(v as usize),
        v => err(n, format!("{what} = {v}: expected 0 to {max}")),
    }
}

/// An upstream's TLS settings: `Some(None)` when `tls` is off (and no TLS key is given).
pub(super) fn upstream_tls(u: &RawUpstream, errs: &mut Errors) -> Option<Option<Arc<ClientTls>>> {
    if !u.tls {
        let stray = [&u.sni, &u.ca, &u.client_cert, &u.client_key]
            .into_iter()
            .flatten()
            .next();
        if let Some(k) = stray {
            errs.at(k, "this TLS setting needs tls = true on the upstream");
            return None;
        }
        if u.insecure_skip_verify {
            errs.at(
                &u.name,
                "insecure_skip_verify needs tls = true on the upstream",
            );
            return None;
        }
        return Some(None);
    }
    let mut ok = true;
    let roots = if u.ca.is_some() && u.insecure_skip_verify {
        errs.at(&u.name, "give ca or insecure_skip_verify, not both");
        ok = false;
        None
    } else {
        roots(u.ca.as_ref(), errs).unwrap_or_else(|| {
            ok = false;
            None
        })
    };
    let sni = match &u.sni {
        None => None,
        Some(s) => match rustls::pki_types::ServerName::try_from(s.get_ref().clone()) {
            Ok(n) => Some(n),
            Err(_) => {
                errs.at(
                    s,
                    format!(
                        "invalid sni {:?}: expected a DNS name or an IP address",
                        s.get_ref()
                    ),
                );
                ok = false;
                None
            }
        },
    };
    let client_cert = match (&u.client_cert, &u.client_key) {
        (None, None) => None,
        (Some(c), None) => {
            errs.at(c, "client_cert needs client_key");
            ok = false;
            None
        }
        (None, Some(k)) => {
            errs.at(k, "client_key needs client_cert");
            ok = false;
            None
        }
        (Some(c), Some(k)) => {
            let chain = crate::tls::load_chain(c.get_ref()).map_err(|e| errs.at(c, e.message));
            let key = crate::tls::load_key(k.get_ref()).map_err(|e| errs.at(k, e.message));
            match (chain, key) {
                (Ok(c), Ok(k)) => Some((c, k)),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    if !ok {
        return None;
    }
    let spec = ClientSpec {
        roots,
        insecure_skip_verify: u.insecure_skip_verify,
        client_cert,
        sni,
    };
    match ClientTls::new(spec) {
        Ok(c) => Some(Some(Arc::new(c))),
        Err(e) => {
            errs.at(&u.name, e);
            None
        }
    }
}
