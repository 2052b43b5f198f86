//! TLS for end-to-end tests: a test PKI made at test time with rcgen (a CA, server certificates
//! of each key type, client certificates, expired ones), written as PEM files; a blocking rustls
//! client; a small blocking TLS backend.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    SignatureAlgorithm,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub static ECDSA: &SignatureAlgorithm = &rcgen::PKCS_ECDSA_P256_SHA256;
pub static ED25519: &SignatureAlgorithm = &rcgen::PKCS_ED25519;
pub static RSA: &SignatureAlgorithm = &rcgen::PKCS_RSA_SHA256;

/// A CA and the files of what it signed, in `dir`.
pub struct Pki {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// The PEM files of one certificate and its key, and the certificate's DER.
#[derive(Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "coregate test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A certificate for `names` (DNS names or IPs) with a key of `alg`, as `file`.pem and
    /// `file`.key; `expired`: valid only in the past.
    pub fn issue(
        &self,
        file: &str,
        names: &[&str],
        cn: &str,
        alg: &'static SignatureAlgorithm,
        expired: bool,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "coregate tests");
        params.distinguished_name = dn;
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// A client config trusting this CA; `versions` empty for both 1.2 and 1.3.
    pub fn client(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> ClientConfig {
        self.client_with(versions, None)
    }

    /// [`Pki::client`] presenting the client certificate `cert`.
    pub fn client_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        cert: Option<&Issued>,
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let b = ClientConfig::builder_with_provider(provider);
        let b = if versions.is_empty() {
            b.with_safe_default_protocol_versions().unwrap()
        } else {
            b.with_protocol_versions(versions).unwrap()
        }
        .with_root_certificates(roots);
        let mut c = match cert {
            None => b.with_no_client_auth(),
            Some(i) => {
                let chain = vec![CertificateDer::from(i.der.clone())];
                let key = PrivateKeyDer::from_pem_file(&i.key).unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            }
        };
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        c
    }
}

use rustls::pki_types::pem::PemObject;

pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr` naming `server` (a DNS name is sent as SNI; an IP is not), with
/// the handshake completed.
pub fn connect(addr: SocketAddr, server: &str, config: &Arc<ClientConfig>) -> Result<Tls, String> {
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from(server.to_string()).unwrap();
    let conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(s)
}

/// A response read by [`request`].
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends `req` on `s` and reads one response with a Content-Length body (or none).
pub fn request(s: &mut impl ReadWrite, req: &str) -> Result<Answer, String> {
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    s.flush().map_err(|e| format!("flush: {e}"))?;
    let mut got = Vec::new();
    let mut b = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut b).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&got)));
        }
        got.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let mut a = Answer {
        status,
        head,
        body: got[head_end..].to_vec(),
    };
    let len: usize = a
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while a.body.len() < len {
        let n = s.read(&mut b).map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            return Err("closed in the body".into());
        }
        a.body.extend_from_slice(&b[..n]);
    }
    Ok(a)
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// `GET path` to `host` on `s`.
pub fn get(s: &mut impl ReadWrite, host: &str, path: &str) -> Result<Answer, String> {
    request(s, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
}

/// A blocking HTTPS backend on loopback: answers every request head with `200` and the body
/// `tls backend saw PATH`, keep-alive; counts the TLS connections it accepted (and the subjects
/// of client certificates it saw). Stops on drop.
pub struct TlsBackend {
    pub port: u16,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    pub client_subjects: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl TlsBackend {
    /// Serves `cert`; with `client_ca`, asks for (and requires) a client certificate.
    pub fn start(cert: &Issued, client_ca: Option<&Pki>) -> TlsBackend {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let b = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = match client_ca {
            None => b.with_no_client_auth(),
            Some(p) => {
                let mut roots = RootCertStore::empty();
                roots.add(p.ca_der()).unwrap();
                let v = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap();
                b.with_client_cert_verifier(v)
            }
        };
        let chain = vec![CertificateDer::from(cert.der.clone())];
        let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
        let config = Arc::new(b.with_single_cert(chain, key).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let subjects = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, subj, st) = (accepted.clone(), subjects.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !st.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let (config, subj, st) = (config.clone(), subj.clone(), st.clone());
                std::thread::spawn(move || serve_tls(tcp, config, subj, st));
            }
        });
        TlsBackend {
            port,
            accepted,
            client_subjects: subjects,
            stop,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn serve_tls(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    subjects: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut s = StreamOwned::new(conn, tcp);
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    let mut idle = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && idle < 300 {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).into_owned();
            got.drain(..i + 4);
            if let Some(certs) = s.conn.peer_certificates() {
                if let Ok((_, c)) = x509_parser::parse_x509_certificate(certs[0].as_ref()) {
                    subjects.lock().unwrap().push(c.subject().to_string());
                }
            }
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            let body = format!("tls backend saw {path}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes())
                .and_then(|_| s.flush())
                .is_err()
            {
                return;
            }
            continue;
        }
        match s.read(&mut b) {
            Ok(0) => return,
            Ok(n) => {
                idle = 0;
                got.extend_from_slice(&b[..n]);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                idle += 1
            }
            Err(_) => return,
        }
    }
}
