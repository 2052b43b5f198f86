//! `kind = "jwt"`: a JSON Web Token (RFC 7519) from `Authorization: Bearer` or a cookie.
//!
//! The token is split and its header read here; the signature is checked by the
//! `jsonwebtoken` crate (aws-lc-rs underneath) with the one key the header selects, and only for
//! an algorithm that key allows: every key carries its own list, derived from its type (an HMAC
//! secret allows HS*, an RSA key RS* and PS*, a P-256 key ES256 …) and narrowed by the JWK's
//! `alg` and the `algorithms` setting, so `none` and HS/RS confusion never verify. The claims
//! are checked here against the caller's clock (`exp`, `nbf` with `leeway`, `iss`, `aud`,
//! required claims, required values).

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use serde_json::{Map, Value};

use super::{Identity, Verdict};

/// Every algorithm a token may use, as written in the config and in token headers.
pub const ALGORITHMS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// The shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size; 256 bits).
pub const MIN_SECRET: usize = 32;

/// How long an admitted token without `exp` stays in a worker's cache (seconds).
pub(super) const NO_EXP_TTL: u64 = 60;

/// A `jwt` auth's settings and keys.
#[derive(Debug, Clone)]
pub struct Jwt {
    pub keys: KeySet,
    /// Required `iss`.
    pub issuer: Option<Box<str>>,
    /// Required member of `aud` (a string or an array of strings).
    pub audience: Option<Box<str>>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Claims that must be present (and not null).
    pub required_claims: Box<[Box<str>]>,
    /// Claims that must hold a value (a claim that is an array must contain it); a string,
    /// number or boolean.
    pub claims: Box<[(Box<str>, Value)]>,
    /// Cookie the token is taken from when there is no `Authorization: Bearer`.
    pub cookie: Option<Box<str>>,
    /// Claims forwarded to the upstream, and the header each goes to (same order).
    pub forward_claims: Box<[Box<str>]>,
    pub forward_headers: Box<[Box<str>]>,
    /// The claim that names the consumer.
    pub consumer_claim: Box<str>,
}

/// The keys a token may be verified with.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
    /// From a JWKS file: keys are chosen by `kid`.
    jwks: bool,
}

#[derive(Clone)]
struct VerifyKey {
    kid: Option<Box<str>>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for k in &self.keys {
            l.entry(&(k.kid.as_deref(), &k.algorithms));
        }
        l.finish()
    }
}

/// An algorithm by its JOSE name (`none` is not one).
pub fn algorithm(name: &str) -> Option<Algorithm> {
    Algorithm::from_str(name).ok()
}

impl KeySet {
    /// An HMAC secret (HS256, HS384, HS512).
    pub fn secret(secret: &[u8]) -> KeySet {
        KeySet {
            keys: vec![VerifyKey {
                kid: None,
                key: DecodingKey::from_secret(secret),
                algorithms: AlgorithmFamily::Hmac.algorithms().to_vec(),
            }],
            jwks: false,
        }
    }

    /// A PEM public key (`-----BEGIN PUBLIC KEY-----`, or `RSA PUBLIC KEY`): RSA, EC P-256 or
    /// P-384, or Ed25519.
    pub fn from_pem(pem: &[u8]) -> Result<KeySet, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_string())?;
        let first = text.find("-----BEGIN ").map(|i| &text[i..]);
        if !first.is_some_and(|b| {
            b.starts_with("-----BEGIN PUBLIC KEY-----")
                || b.starts_with("-----BEGIN RSA PUBLIC KEY-----")
        }) {
            return Err("expected a PEM public key (-----BEGIN PUBLIC KEY-----); a certificate or a private key is not accepted".into());
        }
        let (key, algorithms) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            check_rsa(&k)?;
            (k, AlgorithmFamily::Rsa.algorithms().to_vec())
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            let alg =
                ec_algorithm(&k).ok_or("EC key on an unsupported curve (P-256 and P-384 are)")?;
            (k, vec![alg])
        } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            if k.as_bytes().len() != 32 {
                return Err("EdDSA key that is not Ed25519".into());
            }
            (k, vec![Algorithm::EdDSA])
        } else {
            return Err("not an RSA, EC (P-256, P-384) or Ed25519 public key".into());
        };
        Ok(KeySet {
            keys: vec![VerifyKey {
                kid: None,
                key,
                algorithms,
            }],
            jwks: false,
        })
    }

    /// A JWKS document (RFC 7517 §5: `{"keys": [...]}`). Encryption keys (`"use": "enc"` or
    /// an encryption `alg`) are skipped; any other key that cannot verify tokens is an error
    /// naming it.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("expected a JSON object with a \"keys\" array")?;
        let mut keys = Vec::new();
        for (i, k) in list.iter().enumerate() {
            let what = match k.get("kid").and_then(Value::as_str) {
                Some(kid) => format!("key {i} (kid {kid:?})"),
                None => format!("key {i}"),
            };
            let alg = k.get("alg").and_then(Value::as_str);
            if k.get("use").and_then(Value::as_str) == Some("enc")
                || matches!(alg, Some("RSA1_5" | "RSA-OAEP" | "RSA-OAEP-256"))
            {
                continue;
            }
            let vk = jwk_key(k, alg).map_err(|m| format!("{what}: {m}"))?;
            keys.push(vk);
        }
        if keys.is_empty() {
            return Err("holds no signing key".into());
        }
        Ok(KeySet { keys, jwks: true })
    }

    /// Narrows every key to `algs`. `Err(i)`: `algs[i]` fits no key.
    pub fn restrict(&mut self, algs: &[Algorithm]) -> Result<(), usize> {
        for (i, a) in algs.iter().enumerate() {
            if !self.keys.iter().any(|k| k.algorithms.contains(a)) {
                return Err(i);
            }
        }
        for k in &mut self.keys {
            k.algorithms.retain(|a| algs.contains(a));
        }
        Ok(())
    }

    /// What the keys are, e.g. `"an HMAC secret"`, for error messages.
    pub fn kind(&self) -> &'static str {
        if self.jwks {
            return "the JWKS keys";
        }
        match self.keys.first().map(|k| k.key.family()) {
            Some(AlgorithmFamily::Hmac) => "an HMAC secret",
            Some(AlgorithmFamily::Rsa) => "an RSA key",
            Some(AlgorithmFamily::Ec) => "this EC key",
            _ => "an Ed25519 key",
        }
    }

    /// Every algorithm some key allows, in a fixed order.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut v: Vec<Algorithm> = Vec::new();
        for k in &self.keys {
            for a in &k.algorithms {
                if !v.contains(a) {
                    v.push(*a);
                }
            }
        }
        v
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token with `kid` and `alg` is verified with.
    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, &'static str> {
        let fits = |k: &&VerifyKey| k.algorithms.contains(&alg);
        let single = || -> Result<&DecodingKey, &'static str> {
            let k = &self.keys[0];
            fits(&k).then_some(&k.key).ok_or("algorithm not allowed")
        };
        match kid {
            _ if !self.jwks => single(),
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Err("unknown key id");
                }
                named
                    .find(fits)
                    .map(|k| &k.key)
                    .ok_or("algorithm not allowed")
            }
            None if self.keys.len() == 1 => single(),
            None => Err("token names no key id"),
        }
    }
}

/// The smallest RSA modulus aws-lc-rs verifies signatures with.
const MIN_RSA_BITS: usize = 2048;

/// An RSA key that can verify: its modulus parses and has at least [`MIN_RSA_BITS`] (a shorter
/// one would fail every signature, silently).
fn check_rsa(k: &DecodingKey) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let modulus = match k.kind() {
        DecodingKeyKind::RsaModulusExponent { n, .. } => &n[..],
        DecodingKeyKind::SecretOrDer(der) => {
            match x509_parser::public_key::RSAPublicKey::from_der(der) {
                Ok((_, key)) => key.modulus,
                Err(_) => return Err("malformed RSA public key".into()),
            }
        }
    };
    let n = &modulus[modulus.iter().take_while(|&&b| b == 0).count()..];
    let bits = n
        .first()
        .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA key of {bits} bits: at least {MIN_RSA_BITS} are needed"
        ));
    }
    Ok(())
}

/// The curve of an EC public key, by the length of its uncompressed point.
fn ec_algorithm(k: &DecodingKey) -> Option<Algorithm> {
    match k.as_bytes() {
        [4, rest @ ..] if rest.len() == 64 => Some(Algorithm::ES256),
        [4, rest @ ..] if rest.len() == 96 => Some(Algorithm::ES384),
        _ => None,
    }
}

/// One JWK, checked.
fn jwk_key(k: &Value, alg: Option<&str>) -> Result<VerifyKey, String> {
    let kty = k.get("kty").and_then(Value::as_str).unwrap_or("");
    if !matches!(kty, "RSA" | "EC" | "OKP" | "oct") {
        return Err(format!(
            "unsupported kty {kty:?}: expected \"RSA\", \"EC\", \"OKP\" (Ed25519) or \"oct\""
        ));
    }
    let jwk: Jwk = serde_json::from_value(k.clone()).map_err(|e| format!("malformed: {e}"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("malformed: {e}"))?;
    let mut algorithms = match key.family() {
        AlgorithmFamily::Hmac if key.as_bytes().len() < MIN_SECRET => {
            return Err(format!("an HMAC key must have at least {MIN_SECRET} bytes"))
        }
        AlgorithmFamily::Hmac => key.family().algorithms().to_vec(),
        AlgorithmFamily::Rsa => {
            check_rsa(&key)?;
            key.family().algorithms().to_vec()
        }
        AlgorithmFamily::Ec => {
            let by_point = ec_algorithm(&key);
            let by_name = match k.get("crv").and_then(Value::as_str) {
                Some("P-256") => Some(Algorithm::ES256),
                Some("P-384") => Some(Algorithm::ES384),
                _ => None,
            };
            match (by_point, by_name) {
                (Some(a), Some(b)) if a == b => vec![a],
                _ => {
                    return Err(
                        "unsupported curve or malformed point (P-256 and P-384 are supported)"
                            .into(),
                    )
                }
            }
        }
        AlgorithmFamily::Ed if key.as_bytes().len() == 32 && kty == "OKP" => {
            if k.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                return Err("unsupported curve (Ed25519 is supported)".into());
            }
            vec![Algorithm::EdDSA]
        }
        AlgorithmFamily::Ed => return Err("unsupported or malformed Ed25519 key".into()),
    };
    if let Some(a) = alg {
        let a = algorithm(a).ok_or_else(|| format!("unsupported alg {a:?}"))?;
        if !algorithms.contains(&a) {
            return Err(format!("alg {a:?} does not fit the {kty} key"));
        }
        algorithms = vec![a];
    }
    Ok(VerifyKey {
        kid: jwk.common.key_id.map(Into::into),
        key,
        algorithms,
    })
}

/// The JOSE header fields read here.
#[derive(serde::Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    /// Extensions the verifier must understand (RFC 7515 §4.1.11): none are.
    crit: Option<Value>,
}

impl Jwt {
    /// Verifies `token` at `now` (unix seconds). Allowed: the identity is written to `out` and
    /// the time until which the token may be admitted again without verifying is returned.
    pub(super) fn verify(
        &self,
        token: &[u8],
        now: u64,
        out: &mut Identity,
    ) -> Result<u64, Verdict> {
        const MALFORMED: Verdict = Verdict::Invalid("malformed token");
        let token = std::str::from_utf8(token).map_err(|_| MALFORMED)?;
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MALFORMED);
        };
        let header: JoseHeader = URL_SAFE_NO_PAD
            .decode(head)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(MALFORMED)?;
        if header.crit.is_some() {
            return Err(Verdict::Invalid("unsupported critical header"));
        }
        let alg = algorithm(&header.alg).ok_or(Verdict::Invalid("unsupported algorithm"))?;
        let key = self
            .keys
            .select(header.kid.as_deref(), alg)
            .map_err(Verdict::Invalid)?;
        #[cfg(test)]
        super::tests::count_verification();
        let message = &token[..head.len() + 1 + body.len()];
        if !jsonwebtoken::crypto::verify(sig, message.as_bytes(), key, alg).unwrap_or(false) {
            return Err(Verdict::Invalid("bad signature"));
        }
        let claims: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Verdict::Invalid("malformed claims"))?;
        let until = self.check_claims(&claims, now)?;
        out.consumer.clear();
        if let Some(c) = claims.get(&*self.consumer_claim).and_then(claim_text) {
            out.consumer.push_str(&c);
        }
        out.claims.clear();
        for name in &self.forward_claims {
            out.claims.push(claims.get(&**name).and_then(claim_text));
        }
        Ok(until)
    }

    /// The registered and configured claims; the time the token stops being valid.
    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<u64, Verdict> {
        let time = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or(Verdict::Invalid("malformed claims")),
        };
        let (exp, nbf) = (time("exp")?, time("nbf")?);
        let (now_f, leeway) = (now as f64, self.leeway as f64);
        if exp.is_some_and(|exp| now_f >= exp + leeway) {
            return Err(Verdict::Invalid("token expired"));
        }
        if nbf.is_some_and(|nbf| now_f + leeway < nbf) {
            return Err(Verdict::Invalid("token not yet valid"));
        }
        if let Some(want) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(want) {
                return Err(Verdict::Invalid("wrong issuer"));
            }
        }
        if let Some(want) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == &**want,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
                _ => false,
            };
            if !ok {
                return Err(Verdict::Invalid("wrong audience"));
            }
        }
        if self
            .required_claims
            .iter()
            .any(|c| claims.get(&**c).is_none_or(Value::is_null))
        {
            return Err(Verdict::Invalid("required claim missing"));
        }
        for (name, want) in &self.claims {
            let ok = match claims.get(&**name) {
                Some(Value::Array(list)) => list.contains(want),
                Some(v) => v == want,
                None => false,
            };
            if !ok {
                return Err(Verdict::Forbidden("claim value not allowed"));
            }
        }
        Ok(match exp {
            // Admitted again until `exp` + leeway, as verifying again would.
            Some(exp) => (exp + leeway).min(u64::MAX as f64) as u64,
            None => now.saturating_add(NO_EXP_TTL),
        })
    }

    pub(super) fn describe(&self) -> String {
        let algs: Vec<String> = self
            .keys
            .algorithms()
            .iter()
            .map(|a| format!("{a:?}"))
            .collect();
        let mut s = format!(
            "jwt ({}; {} key{}), leeway {}s",
            algs.join(" "),
            self.keys.len(),
            if self.keys.len() == 1 { "" } else { "s" },
            self.leeway
        );
        if let Some(i) = &self.issuer {
            s.push_str(&format!(", issuer {i:?}"));
        }
        if let Some(a) = &self.audience {
            s.push_str(&format!(", audience {a:?}"));
        }
        if !self.required_claims.is_empty() {
            s.push_str(&format!(", required [{}]", self.required_claims.join(", ")));
        }
        for (n, v) in &self.claims {
            s.push_str(&format!(", {n} = {v}"));
        }
        if let Some(c) = &self.cookie {
            s.push_str(&format!(", cookie {c}"));
        }
        for (c, h) in self.forward_claims.iter().zip(&self.forward_headers) {
            s.push_str(&format!(", {c} -> {h}"));
        }
        s
    }
}

/// A claim as header text: a string (without control characters), a number or a boolean.
fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) => {
            Some(s.clone())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
