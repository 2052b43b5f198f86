//! TLS to upstreams: the rustls client config of an upstream with `tls = true` (verification
//! against the system roots or a configured CA, on unless `insecure_skip_verify`; an optional
//! client certificate; session resumption through rustls's per-config cache), and the handshake
//! after a connect.

use super::stream::{Stream, TlsStream};
use monoio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// What an upstream's TLS keys ask for, files loaded.
pub struct ClientSpec {
    /// `None`: the system's trust anchors.
    pub roots: Option<rustls::RootCertStore>,
    pub insecure_skip_verify: bool,
    /// A client certificate chain and its key.
    pub client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// The name sent as SNI and verified; `None`: each backend's host.
    pub sni: Option<ServerName<'static>>,
}

/// An upstream's TLS settings in a config snapshot.
#[derive(Debug)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub sni: Option<ServerName<'static>>,
    pub insecure: bool,
}

impl ClientTls {
    pub fn new(spec: ClientSpec) -> Result<ClientTls, String> {
        let provider = super::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if spec.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            let roots = match spec.roots {
                Some(r) => Arc::new(r),
                None => super::certs::system_roots(),
            };
            builder.with_root_certificates(roots)
        };
        let mut config = match spec.client_cert {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert/client_key: {e}"))?,
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            sni: spec.sni,
            insecure: spec.insecure_skip_verify,
        })
    }

    /// The TLS handshake on a new connection to a backend whose host is `host` (its name when
    /// the backend was given by name, else its IP). The caller bounds it in time.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &ServerName<'static>,
    ) -> std::io::Result<Stream> {
        let name = self.sni.as_ref().unwrap_or(host).clone();
        let conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut tls = Box::new(TlsStream::new(tcp, conn)).strict_eof();
        tls.handshake().await?;
        Ok(Stream::Client(tls))
    }
}

/// `insecure_skip_verify = true`: any certificate is accepted, the handshake signatures are
/// still checked (the connection is encrypted, not authenticated).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name a backend is verified against (and sent as SNI when it is a DNS name): the host of
/// `address` (`host:port`, `[v6]:port`), a DNS name or an IP address.
pub fn backend_name(address: &str) -> Option<ServerName<'static>> {
    let host = match address.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => address.rsplit_once(':').map_or(address, |(h, _)| h),
    };
    ServerName::try_from(host.to_string()).ok()
}
