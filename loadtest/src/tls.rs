//! TLS for the generator (`https://` URLs): rustls (aws-lc-rs) through monoio-rustls. One
//! client config for the whole run, shared by every connection: with resumption on (the
//! default) a new connection resumes the session of an earlier one (tickets, or session IDs
//! under TLS 1.2), as browsers and most clients do; `--no-tls-resumption` makes every connection
//! a full handshake. The server's certificate is verified against `--cacert` (or the system's
//! roots) unless `--insecure`.

use std::path::Path;
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// How connections of a run speak TLS.
pub struct TlsClient {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

/// What the command line says about TLS.
pub struct TlsOptions<'a> {
    pub cacert: Option<&'a Path>,
    pub insecure: bool,
    pub resumption: bool,
    /// "1.2" or "1.3" only; `None`: both.
    pub version: Option<&'a str>,
    /// Offer only this cipher suite (rustls's name, e.g. TLS13_AES_128_GCM_SHA256).
    pub suite: Option<&'a str>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClient({:?})", self.name)
    }
}

impl TlsClient {
    /// For the server `host` (a DNS name, sent as SNI, or an IP address).
    pub fn new(host: &str, o: &TlsOptions<'_>) -> Result<TlsClient, String> {
        // Key exchange X25519 (P-256 as a fallback) on every target: rustls would offer the
        // post-quantum hybrid X25519MLKEM768 first, which OpenSSL 3.0 (nginx, HAProxy) lacks,
        // and a rustls server (coregate) would pick it: a heavier handshake, not a fair one.
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.kx_groups = vec![
            rustls::crypto::aws_lc_rs::kx_group::X25519,
            rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
        ];
        if let Some(name) = o.suite {
            provider
                .cipher_suites
                .retain(|s| s.suite().as_str() == Some(name));
            if provider.cipher_suites.is_empty() {
                return Err(format!("unknown --tls-suite {name:?}"));
            }
        }
        let provider = Arc::new(provider);
        let versions: &[&rustls::SupportedProtocolVersion] = match o.version {
            None => rustls::ALL_VERSIONS,
            Some("1.2") => &[&rustls::version::TLS12],
            Some("1.3") => &[&rustls::version::TLS13],
            Some(v) => return Err(format!("invalid --tls-version {v:?} (1.2 or 1.3)")),
        };
        let b = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?;
        let b = if o.insecure {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match o.cacert {
                Some(p) => {
                    let certs = CertificateDer::pem_file_iter(p)
                        .map_err(|e| format!("{}: {e}", p.display()))?;
                    for c in certs {
                        let c = c.map_err(|e| format!("{}: {e}", p.display()))?;
                        roots.add(c).map_err(|e| format!("{}: {e}", p.display()))?;
                    }
                }
                None => {
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                }
            }
            b.with_root_certificates(roots)
        };
        let mut config = b.with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !o.resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host:?} is not a TLS server name"))?;
        Ok(TlsClient {
            connector: TlsConnector::from(config),
            name,
        })
    }
}

/// `--insecure`: any certificate (signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A generator connection: plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl AsyncReadRent for Stream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.readv(buf).await,
            Stream::Tls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.write(buf).await,
            Stream::Tls(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.writev(buf).await,
            Stream::Tls(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush().await,
            Stream::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
        }
    }
}
