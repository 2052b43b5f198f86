//! Certificate chains, private keys and CA bundles read from PEM files, with errors that say
//! which file and what is wrong; and the names a certificate is valid for (its DNS subject
//! alternative names, else its common name), which the SNI store uses.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::collections::HashMap;
use std::sync::Arc;

/// What is wrong with a certificate, key or CA file (the message names the file), and whether
/// it is the key file (so that a config error points at `key`, not `cert`).
#[derive(Debug)]
pub struct CertError {
    pub message: String,
    pub in_key: bool,
}

impl CertError {
    fn cert(message: String) -> CertError {
        CertError {
            message,
            in_key: false,
        }
    }

    fn key(message: String) -> CertError {
        CertError {
            message,
            in_key: true,
        }
    }
}

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A certificate chain with its key, the names it serves and its leaf's subject.
#[derive(Debug, Clone)]
pub struct Certified {
    pub key: Arc<CertifiedKey>,
    /// Lower-case DNS names, `*.example.com` for wildcards.
    pub names: Vec<String>,
    /// The key type, for the description (`RSA`, `ECDSA`, `Ed25519`).
    pub key_type: &'static str,
}

fn read(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {path:?}: {e}"))
}

/// The certificates of a PEM file, in order (at least one).
pub fn load_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = read(path, "certificate file").map_err(CertError::cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::cert(format!("certificate file {path:?}: bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::cert(format!(
            "certificate file {path:?} holds no CERTIFICATE block"
        )));
    }
    Ok(chain)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    let pem = read(path, "key file").map_err(CertError::key)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| CertError::key(format!("key file {path:?}: no usable private key: {e}")))
}

/// A certificate chain and its key, checked to belong together.
pub fn load_certified(cert: &str, key: &str) -> Result<Certified, CertError> {
    let chain = load_chain(cert)?;
    let signing = super::provider()
        .key_provider
        .load_private_key(load_key(key)?)
        .map_err(|e| CertError::key(format!("key file {key:?}: unsupported key: {e}")))?;
    let key_type = match signing.algorithm() {
        rustls::SignatureAlgorithm::RSA => "RSA",
        rustls::SignatureAlgorithm::ECDSA => "ECDSA",
        rustls::SignatureAlgorithm::ED25519 => "Ed25519",
        _ => "other",
    };
    let names = names_of(&chain[0])
        .map_err(|e| CertError::cert(format!("certificate file {cert:?}: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        CertError::key(format!(
            "key file {key:?} does not belong to the certificate in {cert:?}: {e}"
        ))
    })?;
    Ok(Certified {
        key: Arc::new(certified),
        names,
        key_type,
    })
}

/// The DNS names of a certificate, lower case.
fn names_of(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// The subject of a DER certificate as text (`CN=client, O=Example`), for a verified client.
/// Attributes in certificate order, `, ` between RDNs and `+` inside one, each value escaped as
/// RFC 4514 says (`,`, `+`, `"`, `\`, `<`, `>`, `;`, a leading `#` or space, a trailing space),
/// so that one attribute cannot pose as two; control characters become `?` (the text goes into
/// a request field). `None` when a value is not a string: nothing is forwarded then.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    for (i, rdn) in cert.subject().iter().enumerate() {
        for (j, attr) in rdn.iter().enumerate() {
            out.push_str(match (i, j) {
                (0, 0) => "",
                (_, 0) => ", ",
                _ => "+",
            });
            match x509_parser::objects::oid2abbrev(attr.attr_type(), registry) {
                Ok(name) => out.push_str(name),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            let value = attr.as_str().ok()?;
            let last = value.chars().count().saturating_sub(1);
            for (k, c) in value.chars().enumerate() {
                let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
                    || (k == 0 && matches!(c, '#' | ' '))
                    || (k == last && c == ' ');
                if special {
                    out.push('\\');
                }
                out.push(if c.is_control() { '?' } else { c });
            }
        }
    }
    Some(out)
}

/// The certificates of a CA bundle as trust anchors.
pub fn load_roots(path: &str) -> Result<RootCertStore, CertError> {
    let chain = load_chain(path)?;
    let mut roots = RootCertStore::empty();
    for (i, c) in chain.into_iter().enumerate() {
        roots.add(c).map_err(|e| {
            CertError::cert(format!(
                "CA file {path:?}: certificate {} is not a usable trust anchor: {e}",
                i + 1
            ))
        })?;
    }
    Ok(roots)
}

/// The trust anchors of the system (read once per process).
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("system CA certificates: {e}");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            tracing::debug!("{added} system CA certificates");
            Arc::new(roots)
        })
        .clone()
}

/// The SNI certificate store of a listener: exact names, then `*.` wildcards (one label), then
/// the default certificates (those of the first one listed) for a client without SNI or with a
/// name no certificate has. A name may have several certificates (RSA and ECDSA, say): the first
/// whose key can sign with a scheme the client offers is chosen.
#[derive(Debug)]
pub struct SniStore {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    default: Vec<Arc<CertifiedKey>>,
}

impl SniStore {
    /// `certs` in config order (the first is the default); `None` when there is none.
    pub fn new(certs: &[Certified]) -> Option<SniStore> {
        let first = certs.first()?;
        let mut exact: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        for c in certs {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(n.clone()),
                }
                .or_default()
                .push(c.key.clone());
            }
        }
        // The default: the first certificate, then any other with the same names.
        let default = certs
            .iter()
            .filter(|c| c.names == first.names)
            .map(|c| c.key.clone())
            .collect();
        Some(SniStore {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificates for `sni` (already without a trailing dot).
    fn candidates(&self, sni: Option<&str>) -> &[Arc<CertifiedKey>] {
        let Some(name) = sni else {
            return &self.default;
        };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            &lower
        } else {
            name
        };
        if let Some(k) = self.exact.get(name) {
            return k;
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return k;
            }
        }
        &self.default
    }

    /// The certificate for `sni` that can sign with one of `schemes` (else the first).
    pub fn pick(
        &self,
        sni: Option<&str>,
        schemes: &[rustls::SignatureScheme],
    ) -> &Arc<CertifiedKey> {
        let c = self.candidates(sni.map(|n| n.trim_end_matches('.')));
        c.iter()
            .find(|k| c.len() == 1 || k.key.choose_scheme(schemes).is_some())
            .unwrap_or(&c[0])
    }
}

impl rustls::server::ResolvesServerCert for SniStore {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.pick(hello.server_name(), hello.signature_schemes())
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::subject_of;

    fn cert_with(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            p.distinguished_name.push(t.clone(), *v);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn one_attribute_cannot_pose_as_two() {
        use rcgen::DnType::{CommonName, OrganizationName};
        let plain = cert_with(&[(CommonName, "alice"), (OrganizationName, "Admins")]);
        assert_eq!(subject_of(&plain).unwrap(), "CN=alice, O=Admins");
        let forged = cert_with(&[(CommonName, "alice, O=Admins")]);
        assert_eq!(subject_of(&forged).unwrap(), "CN=alice\\, O=Admins");
        let odd = cert_with(&[(CommonName, " #a+b;\"c\\<d> ")]);
        assert_eq!(
            subject_of(&odd).unwrap(),
            "CN=\\ #a\\+b\\;\\\"c\\\\\\<d\\>\\ "
        );
        let hash = cert_with(&[(CommonName, "#x")]);
        assert_eq!(subject_of(&hash).unwrap(), "CN=\\#x");
        let ctl = cert_with(&[(CommonName, "a\r\nX-Evil: 1")]);
        assert_eq!(subject_of(&ctl).unwrap(), "CN=a??X-Evil: 1");
    }
}
