//! TLS listeners: the rustls server config built from a listener's `tls` table, the handshake
//! with its timeout, and the reasons a handshake fails (counted, logged at debug only: a
//! scanner's failed handshakes must not flood the log).

use super::certs::{subject_of, Certified, SniStore};
use super::stream::{Stream, TlsStream};
use monoio::net::TcpStream;
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{ServerConfig, ServerConnection, SupportedCipherSuite};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What a listener's `tls` table asks for, with its files already loaded.
pub struct ServerSpec<'a> {
    /// The listener's address: its session cache and ticket keys outlive reloads.
    pub addr: SocketAddr,
    pub certs: &'a [Certified],
    pub tls13_only: bool,
    /// `None`: the provider's default suites.
    pub suites: Option<Vec<SupportedCipherSuite>>,
    pub session_tickets: bool,
    pub session_cache: usize,
    /// Client certificates checked against these roots; `optional`: a client may send none.
    pub client_ca: Option<(rustls::RootCertStore, bool)>,
    /// Announce ALPN `http/1.1` (HTTP listeners).
    pub alpn_http1: bool,
}

/// A TLS listener's settings in a config snapshot.
#[derive(Debug)]
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
    pub handshake_timeout: Duration,
    /// The field that carries a verified client certificate's subject to the backend (a field
    /// of that name from the client is dropped).
    pub subject_header: Option<Box<str>>,
    /// Client certificates are verified: the subject of one is kept for routes and the field.
    pub verifies_clients: bool,
    /// One line for `coregate check`.
    pub describe: String,
}

/// The cipher suites named (rustls names: `TLS13_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`, …); `Err((index, message))` for an unknown one.
pub fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, (usize, String)> {
    let all = &super::provider().cipher_suites;
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            all.iter()
                .find(|s| s.suite().as_str() == Some(n.as_str()))
                .copied()
                .ok_or_else(|| {
                    let known: Vec<&str> = all.iter().filter_map(|s| s.suite().as_str()).collect();
                    (
                        i,
                        format!("unknown cipher suite {n:?}; known: {}", known.join(", ")),
                    )
                })
        })
        .collect()
}

/// Session caches and ticket keys by listener address and client-certificate settings (a hash
/// of the CA certificates and the mode, [`client_auth_key`]): created once, kept across reloads
/// so that a reload does not cost every client a full handshake, and new when a reload changes
/// the client-certificate rules, so that no session made under the old ones resumes.
type Resumption = (
    Arc<dyn rustls::server::StoresServerSessions>,
    Arc<dyn rustls::server::ProducesTickets>,
);

/// 0 without client certificates; else a hash of every trust anchor and the mode.
fn client_auth_key(client_ca: &Option<(rustls::RootCertStore, bool)>) -> u64 {
    let Some((roots, optional)) = client_ca else {
        return 0;
    };
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for a in &roots.roots {
        h.update(a.subject.as_ref());
        h.update(a.subject_public_key_info.as_ref());
    }
    h.update(&[u8::from(*optional)]);
    h.digest() | 1
}

fn resumption(addr: SocketAddr, cache: usize, client_auth: u64) -> Result<Resumption, String> {
    type Key = (SocketAddr, usize, u64);
    static BY_ADDR: OnceLock<Mutex<HashMap<Key, Resumption>>> = OnceLock::new();
    let mut map = BY_ADDR
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(r) = map.get(&(addr, cache, client_auth)) {
        return Ok(r.clone());
    }
    let store: Arc<dyn rustls::server::StoresServerSessions> = if cache == 0 {
        Arc::new(rustls::server::NoServerSessionStorage {})
    } else {
        ServerSessionMemoryCache::new(cache)
    };
    // Ticket keys rotate every 6 hours; tickets of the previous key stay valid.
    let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| format!("cannot create session ticket keys: {e}"))?;
    let r = (store, ticketer);
    map.insert((addr, cache, client_auth), r.clone());
    Ok(r)
}

impl ListenerTls {
    pub fn new(
        spec: ServerSpec<'_>,
        handshake_timeout: Duration,
        subject_header: Option<Box<str>>,
    ) -> Result<ListenerTls, String> {
        let mut provider = (*super::provider()).clone();
        if let Some(s) = &spec.suites {
            provider.cipher_suites = s.clone();
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if spec.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        };
        let provider = Arc::new(provider);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("no cipher suite for the allowed TLS versions: {e}"))?;
        let verifies_clients = spec.client_ca.is_some();
        let client_auth = client_auth_key(&spec.client_ca);
        let client_auth_text = match &spec.client_ca {
            None => "",
            Some((_, true)) => ", client certificates verified when sent",
            Some((_, false)) => ", client certificates required",
        };
        let builder = match spec.client_ca {
            None => builder.with_no_client_auth(),
            Some((roots, optional)) => {
                let mut b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if optional {
                    b = b.allow_unauthenticated();
                }
                let v = b
                    .build()
                    .map_err(|e| format!("client_ca cannot verify clients: {e}"))?;
                builder.with_client_cert_verifier(v)
            }
        };
        let store = SniStore::new(spec.certs).ok_or("certificates is empty")?;
        let mut config = builder.with_cert_resolver(Arc::new(store));
        if spec.alpn_http1 {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let (cache, ticketer) = resumption(spec.addr, spec.session_cache, client_auth)?;
        config.session_storage = cache;
        if spec.session_tickets {
            config.ticketer = ticketer;
        } else {
            config.send_tls13_tickets = 0;
        }
        let names: Vec<String> = spec
            .certs
            .iter()
            .map(|c| format!("{} [{}]", c.key_type, c.names.join(" ")))
            .collect();
        let describe = format!(
            "tls {}, certificates: {}{}",
            if spec.tls13_only { "1.3" } else { "1.2+1.3" },
            names.join(", "),
            client_auth_text
        );
        Ok(ListenerTls {
            config: Arc::new(config),
            handshake_timeout,
            subject_header,
            verifies_clients,
            describe,
        })
    }

    /// Runs the handshake on `tcp` (after `early`, bytes already read from it: what followed a
    /// PROXY protocol header) within the handshake timeout.
    pub async fn accept(&self, tcp: TcpStream, early: &[u8]) -> Result<Accepted, FailureReason> {
        let conn = ServerConnection::new(self.config.clone()).map_err(|_| FailureReason::Other)?;
        let mut tls = Box::new(TlsStream::new(tcp, conn));
        tls.prefill(early);
        match monoio::time::timeout(self.handshake_timeout, tls.handshake()).await {
            Err(_) => Err(FailureReason::Timeout),
            Ok(Err(e)) => Err(FailureReason::of(&e)),
            Ok(Ok(())) => {
                let c = &tls.conn;
                let resumed = c.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                let subject = match c.peer_certificates() {
                    Some([leaf, ..]) if self.verifies_clients => subject_of(leaf.as_ref()),
                    _ => None,
                };
                Ok(Accepted {
                    stream: Stream::Server(tls),
                    resumed,
                    subject,
                })
            }
        }
    }
}

/// A completed handshake.
pub struct Accepted {
    pub stream: Stream,
    pub resumed: bool,
    /// The verified client certificate's subject, on a listener that verifies clients.
    pub subject: Option<String>,
}

/// Why a TLS handshake failed (the `reason` label of the failure counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// No handshake within `handshake_timeout`.
    Timeout,
    /// The client closed or reset the connection.
    Closed,
    /// Not TLS, or a malformed or unexpected message.
    Protocol,
    /// No TLS version, cipher suite, group or ALPN protocol in common.
    Incompatible,
    /// A client certificate was required and none was sent.
    NoClientCertificate,
    /// The client's certificate failed verification.
    BadClientCertificate,
    /// The client refused our certificate or aborted with an alert.
    AlertReceived,
    Other,
}

/// Every reason, in the order of [`FailureReason::index`].
pub const FAILURE_REASONS: [FailureReason; 8] = [
    FailureReason::Timeout,
    FailureReason::Closed,
    FailureReason::Protocol,
    FailureReason::Incompatible,
    FailureReason::NoClientCertificate,
    FailureReason::BadClientCertificate,
    FailureReason::AlertReceived,
    FailureReason::Other,
];

impl FailureReason {
    /// Its place in [`FAILURE_REASONS`] (which lists them in declaration order).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::Closed => "closed",
            FailureReason::Protocol => "protocol",
            FailureReason::Incompatible => "incompatible",
            FailureReason::NoClientCertificate => "no_client_certificate",
            FailureReason::BadClientCertificate => "bad_client_certificate",
            FailureReason::AlertReceived => "alert_received",
            FailureReason::Other => "other",
        }
    }

    fn of(e: &std::io::Error) -> FailureReason {
        use rustls::Error as E;
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe => FailureReason::Closed,
                _ => FailureReason::Other,
            };
        };
        match tls {
            E::NoCertificatesPresented => FailureReason::NoClientCertificate,
            E::InvalidCertificate(_) | E::InvalidCertRevocationList(_) => {
                FailureReason::BadClientCertificate
            }
            E::PeerIncompatible(_) | E::NoApplicationProtocol => FailureReason::Incompatible,
            E::AlertReceived(_) => FailureReason::AlertReceived,
            E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::InvalidMessage(_)
            | E::DecryptError
            | E::PeerMisbehaved(_)
            | E::InvalidEncryptedClientHello(_) => FailureReason::Protocol,
            _ => FailureReason::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FAILURE_REASONS;

    #[test]
    fn reasons_are_listed_in_declaration_order() {
        for (i, r) in FAILURE_REASONS.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }
}
