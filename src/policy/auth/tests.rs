use std::cell::Cell;
use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header as JoseHeader};
use serde_json::{json, Value};

use super::*;
use crate::http1::{Header, HeaderKind, Span};

thread_local! {
    static VERIFICATIONS: Cell<u32> = const { Cell::new(0) };
}

/// Called by every full verification (signature or password hash).
pub(super) fn count_verification() {
    VERIFICATIONS.with(|c| c.set(c.get() + 1));
}

fn verifications() -> u32 {
    VERIFICATIONS.with(Cell::get)
}

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A request head: header fields as spans into one buffer.
struct Head {
    buf: Vec<u8>,
    hs: Vec<Header>,
}

fn head(fields: &[(&str, &[u8])]) -> Head {
    let mut buf = Vec::new();
    let mut hs = Vec::new();
    for (n, v) in fields {
        let n0 = buf.len();
        buf.extend_from_slice(n.as_bytes());
        let v0 = buf.len();
        buf.extend_from_slice(v);
        hs.push(Header {
            name: Span::new(n0, v0),
            value: Span::new(v0, buf.len()),
            kind: HeaderKind::of(n.as_bytes()),
        });
    }
    Head { buf, hs }
}

/// Checks with a fresh cache.
fn check(auth: &Auth, fields: &[(&str, &[u8])], query: &str) -> (Verdict, Identity) {
    check_at(&mut AuthCache::new(), auth, fields, query, NOW, 1)
}

fn check_at(
    cache: &mut AuthCache,
    auth: &Auth,
    fields: &[(&str, &[u8])],
    query: &str,
    now: u64,
    generation: u64,
) -> (Verdict, Identity) {
    let h = head(fields);
    let mut id = Identity::default();
    let v = cache.check(
        generation,
        0,
        auth,
        &h.hs,
        &h.buf,
        query.as_bytes(),
        now,
        &mut id,
    );
    (v, id)
}

fn jwt_settings(keys: KeySet) -> Jwt {
    Jwt {
        keys,
        issuer: None,
        audience: None,
        leeway: 60,
        required_claims: Box::new([]),
        claims: Box::new([]),
        cookie: None,
        forward_claims: Box::new([]),
        forward_headers: Box::new([]),
        consumer_claim: "sub".into(),
    }
}

fn names(list: &[&str]) -> Box<[Box<str>]> {
    list.iter().map(|&n| n.into()).collect()
}

fn jwt_auth(j: Jwt) -> Auth {
    Auth::new("users", None, Kind::Jwt(Box::new(j)))
}

fn token(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = JoseHeader::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).unwrap()
}

fn bearer(t: &str) -> Vec<u8> {
    format!("Bearer {t}").into_bytes()
}

fn claims() -> Value {
    json!({ "sub": "alice", "exp": NOW + 600 })
}

/// Key pairs made once per test binary: (private key PEM, public key PEM, raw public key).
struct Pair {
    private: String,
    public: String,
    raw: Vec<u8>,
}

fn pair(alg: &'static rcgen::SignatureAlgorithm) -> Pair {
    let k = rcgen::KeyPair::generate_for(alg).unwrap();
    Pair {
        private: k.serialize_pem(),
        public: k.public_key_pem(),
        raw: k.public_key_raw().to_vec(),
    }
}

fn rsa() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| pair(&rcgen::PKCS_RSA_SHA256))
}

fn p256() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| pair(&rcgen::PKCS_ECDSA_P256_SHA256))
}

fn p384() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| pair(&rcgen::PKCS_ECDSA_P384_SHA384))
}

fn ed25519() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| pair(&rcgen::PKCS_ED25519))
}

fn signing_key(p: &Pair, alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(p.private.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(p.private.as_bytes()),
        _ => EncodingKey::from_rsa_pem(p.private.as_bytes()),
    }
    .unwrap()
}

#[test]
fn every_algorithm_verifies() {
    use Algorithm::*;
    for alg in [HS256, HS384, HS512] {
        let auth = jwt_auth(jwt_settings(KeySet::secret(SECRET)));
        let t = token(alg, &EncodingKey::from_secret(SECRET), None, &claims());
        let (v, id) = check(&auth, &[("Authorization", &bearer(&t))], "");
        assert_eq!(
            (v, id.consumer.as_str()),
            (Verdict::Allowed, "alice"),
            "{alg:?}"
        );
    }
    let cases: [(Algorithm, &Pair); 9] = [
        (RS256, rsa()),
        (RS384, rsa()),
        (RS512, rsa()),
        (PS256, rsa()),
        (PS384, rsa()),
        (PS512, rsa()),
        (ES256, p256()),
        (ES384, p384()),
        (EdDSA, ed25519()),
    ];
    for (alg, p) in cases {
        let keys = KeySet::from_pem(p.public.as_bytes()).unwrap();
        let auth = jwt_auth(jwt_settings(keys));
        let t = token(alg, &signing_key(p, alg), None, &claims());
        let (v, id) = check(&auth, &[("Authorization", &bearer(&t))], "");
        assert_eq!(
            (v, id.consumer.as_str()),
            (Verdict::Allowed, "alice"),
            "{alg:?}"
        );
    }
}

#[test]
fn a_key_allows_only_the_algorithms_of_its_type() {
    let rsa_keys = KeySet::from_pem(rsa().public.as_bytes()).unwrap();
    assert_eq!(rsa_keys.algorithms().len(), 6);
    let ec = KeySet::from_pem(p256().public.as_bytes()).unwrap();
    assert_eq!(ec.algorithms(), vec![Algorithm::ES256]);
    let ec384 = KeySet::from_pem(p384().public.as_bytes()).unwrap();
    assert_eq!(ec384.algorithms(), vec![Algorithm::ES384]);
    // A P-384 token against a P-256 key is refused before any verification.
    let auth = jwt_auth(jwt_settings(ec));
    let t = token(
        Algorithm::ES384,
        &signing_key(p384(), Algorithm::ES384),
        None,
        &claims(),
    );
    let (v, _) = check(&auth, &[("Authorization", &bearer(&t))], "");
    assert_eq!(v, Verdict::Invalid("algorithm not allowed"));
    // `algorithms` narrows a key.
    let mut narrowed = rsa_keys.clone();
    assert_eq!(narrowed.restrict(&[Algorithm::PS256]), Ok(()));
    let auth = jwt_auth(jwt_settings(narrowed));
    let t = token(
        Algorithm::RS256,
        &signing_key(rsa(), Algorithm::RS256),
        None,
        &claims(),
    );
    let (v, _) = check(&auth, &[("Authorization", &bearer(&t))], "");
    assert_eq!(v, Verdict::Invalid("algorithm not allowed"));
    let mut bad = rsa_keys;
    assert_eq!(bad.restrict(&[Algorithm::PS256, Algorithm::HS256]), Err(1));
    // P-521 and non-key PEM files are refused with a reason.
    let p521 = pair(&rcgen::PKCS_ECDSA_P521_SHA512);
    assert!(KeySet::from_pem(p521.public.as_bytes())
        .unwrap_err()
        .contains("unsupported curve"));
    let e = KeySet::from_pem(rsa().private.as_bytes()).unwrap_err();
    assert!(e.contains("private key is not accepted"), "{e}");
    assert!(KeySet::from_pem(b"garbage").is_err());
    assert!(
        KeySet::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err()
    );
}

#[test]
fn expiry_and_not_before_allow_the_leeway() {
    let auth = jwt_auth(jwt_settings(KeySet::secret(SECRET)));
    let key = EncodingKey::from_secret(SECRET);
    let at = |c: Value| {
        let t = token(Algorithm::HS256, &key, None, &c);
        check(&auth, &[("Authorization", &bearer(&t))], "").0
    };
    assert_eq!(at(json!({"exp": NOW - 30})), Verdict::Allowed);
    assert_eq!(
        at(json!({"exp": NOW - 60})),
        Verdict::Invalid("token expired")
    );
    assert_eq!(
        at(json!({"exp": NOW - 3600})),
        Verdict::Invalid("token expired")
    );
    assert_eq!(at(json!({"nbf": NOW + 30})), Verdict::Allowed);
    assert_eq!(
        at(json!({"nbf": NOW + 61})),
        Verdict::Invalid("token not yet valid")
    );
    assert_eq!(
        at(json!({"exp": "soon"})),
        Verdict::Invalid("malformed claims")
    );
    // No exp: valid (unless required), as Envoy does.
    assert_eq!(at(json!({"sub": "x"})), Verdict::Allowed);

    let mut strict = jwt_settings(KeySet::secret(SECRET));
    strict.leeway = 0;
    let auth = jwt_auth(strict);
    let t = token(Algorithm::HS256, &key, None, &json!({"exp": NOW}));
    let (v, _) = check(&auth, &[("Authorization", &bearer(&t))], "");
    assert_eq!(v, Verdict::Invalid("token expired"));
    let t = token(Algorithm::HS256, &key, None, &json!({"exp": NOW + 1}));
    let (v, _) = check(&auth, &[("Authorization", &bearer(&t))], "");
    assert_eq!(v, Verdict::Allowed);
}

#[test]
fn issuer_and_audience_must_match() {
    let mut j = jwt_settings(KeySet::secret(SECRET));
    j.issuer = Some("https://id.example".into());
    j.audience = Some("api".into());
    let auth = jwt_auth(j);
    let key = EncodingKey::from_secret(SECRET);
    let at = |c: Value| {
        let t = token(Algorithm::HS256, &key, None, &c);
        check(&auth, &[("Authorization", &bearer(&t))], "").0
    };
    let iss = "https://id.example";
    assert_eq!(at(json!({"iss": iss, "aud": "api"})), Verdict::Allowed);
    assert_eq!(
        at(json!({"iss": iss, "aud": ["web", "api"]})),
        Verdict::Allowed
    );
    assert_eq!(
        at(json!({"iss": iss, "aud": ["web"]})),
        Verdict::Invalid("wrong audience")
    );
    assert_eq!(at(json!({"iss": iss})), Verdict::Invalid("wrong audience"));
    assert_eq!(
        at(json!({"iss": "https://evil", "aud": "api"})),
        Verdict::Invalid("wrong issuer")
    );
    assert_eq!(at(json!({"aud": "api"})), Verdict::Invalid("wrong issuer"));
}

#[test]
fn tampered_and_unsigned_tokens_are_invalid() {
    let auth = jwt_auth(jwt_settings(KeySet::secret(SECRET)));
    let t = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
        None,
        &claims(),
    );
    // A different signature.
    let mut sig_changed = t.clone().into_bytes();
    let last = sig_changed.len() - 2;
    sig_changed[last] = if sig_changed[last] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let (v, _) = check(
        &auth,
        &[("Authorization", &[b"Bearer ", &sig_changed[..]].concat())],
        "",
    );
    assert_eq!(v, Verdict::Invalid("bad signature"));
    // Claims changed under the old signature.
    let parts: Vec<&str> = t.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"root","exp":9999999999}"#);
    let t2 = format!("{}.{forged}.{}", parts[0], parts[2]);
    let (v, _) = check(&auth, &[("Authorization", &bearer(&t2))], "");
    assert_eq!(v, Verdict::Invalid("bad signature"));
    // `alg: none`, with and without a signature.
    let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    for t3 in [
        format!("{none}.{}.", parts[1]),
        format!("{none}.{}.{}", parts[1], parts[2]),
    ] {
        let (v, _) = check(&auth, &[("Authorization", &bearer(&t3))], "");
        assert_eq!(v, Verdict::Invalid("unsupported algorithm"));
    }
    // Critical extensions are not understood.
    let crit = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":["b64"],"b64":false}"#);
    let (v, _) = check(
        &auth,
        &[(
            "Authorization",
            &bearer(&format!("{crit}.{}.{}", parts[1], parts[2])),
        )],
        "",
    );
    assert_eq!(v, Verdict::Invalid("unsupported critical header"));
    for junk in ["", "a.b", "a.b.c.d", "....", "not a token", "e30.e30.e30"] {
        let (v, _) = check(&auth, &[("Authorization", &bearer(junk))], "");
        assert!(matches!(v, Verdict::Invalid(_)), "{junk:?}: {v:?}");
    }
}

#[test]
fn an_hmac_token_never_verifies_against_a_public_key() {
    // The classic confusion: the public key's PEM used as an HMAC secret.
    let keys = KeySet::from_pem(rsa().public.as_bytes()).unwrap();
    let auth = jwt_auth(jwt_settings(keys));
    let forged = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(rsa().public.as_bytes()),
        None,
        &claims(),
    );
    let before = verifications();
    let (v, _) = check(&auth, &[("Authorization", &bearer(&forged))], "");
    assert_eq!(v, Verdict::Invalid("algorithm not allowed"));
    assert_eq!(
        verifications(),
        before,
        "no signature check was even attempted"
    );
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn ec_jwk(p: &Pair, kid: &str, crv: &str) -> Value {
    let half = (p.raw.len() - 1) / 2;
    json!({"kty": "EC", "crv": crv, "kid": kid, "x": b64(&p.raw[1..1 + half]), "y": b64(&p.raw[1 + half..])})
}

#[test]
fn jwks_keys_are_chosen_by_kid() {
    let b = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut rsa_jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(
            &signing_key(rsa(), Algorithm::RS256),
            Algorithm::RS256,
        )
        .unwrap(),
    )
    .unwrap();
    rsa_jwk["kid"] = json!("r");
    // An `alg` that does not fit the key's type.
    let mut misfit = rsa_jwk.clone();
    misfit["alg"] = json!("ES256");
    let e = KeySet::from_jwks(json!({ "keys": [misfit] }).to_string().as_bytes()).unwrap_err();
    assert!(e.contains("alg ES256 does not fit the RSA key"), "{e}");
    let jwks = json!({"keys": [
        ec_jwk(p256(), "a", "P-256"),
        ec_jwk(&b, "b", "P-256"),
        ec_jwk(p384(), "c", "P-384"),
        rsa_jwk,
        {"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": b64(&ed25519().raw)},
        {"kty": "RSA", "use": "enc", "kid": "x", "n": "AQAB", "e": "AQAB"},
    ]});
    let keys = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
    assert_eq!(keys.len(), 5, "the encryption key is skipped");
    let auth = jwt_auth(jwt_settings(keys));
    let sign = |p: &Pair, alg, kid: Option<&str>| {
        let t = token(alg, &signing_key(p, alg), kid, &claims());
        check(&auth, &[("Authorization", &bearer(&t))], "").0
    };
    assert_eq!(sign(&b, Algorithm::ES256, Some("b")), Verdict::Allowed);
    assert_eq!(sign(p384(), Algorithm::ES384, Some("c")), Verdict::Allowed);
    assert_eq!(sign(p256(), Algorithm::ES256, Some("a")), Verdict::Allowed);
    assert_eq!(
        sign(rsa(), Algorithm::PS384, Some("r")),
        Verdict::Invalid("algorithm not allowed")
    );
    assert_eq!(sign(rsa(), Algorithm::RS256, Some("r")), Verdict::Allowed);
    assert_eq!(
        sign(ed25519(), Algorithm::EdDSA, Some("e")),
        Verdict::Allowed
    );
    assert_eq!(
        sign(&b, Algorithm::ES256, Some("a")),
        Verdict::Invalid("bad signature")
    );
    assert_eq!(
        sign(&b, Algorithm::ES256, Some("zzz")),
        Verdict::Invalid("unknown key id")
    );
    assert_eq!(
        sign(&b, Algorithm::ES256, None),
        Verdict::Invalid("token names no key id")
    );

    // One key: a token without kid uses it.
    let one = json!({"keys": [ec_jwk(&b, "only", "P-256")]});
    let auth = jwt_auth(jwt_settings(
        KeySet::from_jwks(one.to_string().as_bytes()).unwrap(),
    ));
    let t = token(
        Algorithm::ES256,
        &signing_key(&b, Algorithm::ES256),
        None,
        &claims(),
    );
    let (v, _) = check(&auth, &[("Authorization", &bearer(&t))], "");
    assert_eq!(v, Verdict::Allowed);

    // Bad documents say what is wrong.
    for (doc, want) in [
        ("[]", "\"keys\" array"),
        ("{", "not JSON"),
        (r#"{"keys": []}"#, "holds no signing key"),
        (
            r#"{"keys": [{"kty": "XYZ", "kid": "q"}]}"#,
            "key 0 (kid \"q\"): unsupported kty",
        ),
        (
            r#"{"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}"#,
            "at least 32 bytes",
        ),
        (
            r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#,
            "malformed point",
        ),
        (
            r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#,
            "RSA key of 17 bits: at least 2048",
        ),
    ] {
        let e = KeySet::from_jwks(doc.as_bytes()).unwrap_err();
        assert!(e.contains(want), "{doc}: {e}");
    }
    // A P-384 point that says it is on P-256.
    let mislabelled = json!({ "keys": [ec_jwk(p384(), "m", "P-256")] }).to_string();
    let e = KeySet::from_jwks(mislabelled.as_bytes()).unwrap_err();
    assert!(e.contains("key 0 (kid \"m\"): unsupported curve"), "{e}");
}

#[test]
fn claims_are_forwarded_required_and_matched() {
    let mut j = jwt_settings(KeySet::secret(SECRET));
    j.forward_claims = names(&["sub", "role", "level", "admin", "org", "missing", "evil"]);
    j.forward_headers = names(&[
        "X-User",
        "X-Role",
        "X-Level",
        "X-Admin",
        "X-Org",
        "X-Missing",
        "X-Evil",
    ]);
    j.consumer_claim = "email".into();
    let auth = jwt_auth(j);
    assert_eq!(auth.forwarded().len(), 7);
    let c = json!({"sub": "alice", "email": "a@example.com", "role": "admin", "level": 3,
                   "admin": true, "org": {"id": 1}, "evil": "x\r\nHost: y"});
    let t = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
        None,
        &c,
    );
    let (v, id) = check(&auth, &[("Authorization", &bearer(&t))], "");
    assert_eq!(v, Verdict::Allowed);
    assert_eq!(id.consumer, "a@example.com");
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        id.claims,
        vec![s("alice"), s("admin"), s("3"), s("true"), None, None, None]
    );

    let mut j = jwt_settings(KeySet::secret(SECRET));
    j.required_claims = names(&["sub", "tenant"]);
    j.claims = vec![("role".into(), json!("admin")), ("level".into(), json!(3))].into();
    let auth = jwt_auth(j);
    let key = EncodingKey::from_secret(SECRET);
    let at = |c: Value| {
        let t = token(Algorithm::HS256, &key, None, &c);
        check(&auth, &[("Authorization", &bearer(&t))], "").0
    };
    let ok = json!({"sub": "a", "tenant": "t", "role": "admin", "level": 3});
    assert_eq!(at(ok), Verdict::Allowed);
    let roles = json!({"sub": "a", "tenant": "t", "role": ["user", "admin"], "level": 3});
    assert_eq!(at(roles), Verdict::Allowed);
    let no_tenant = json!({"sub": "a", "role": "admin", "level": 3});
    assert_eq!(at(no_tenant), Verdict::Invalid("required claim missing"));
    let null_tenant = json!({"sub": "a", "tenant": null, "role": "admin", "level": 3});
    assert_eq!(at(null_tenant), Verdict::Invalid("required claim missing"));
    let user = json!({"sub": "a", "tenant": "t", "role": "user", "level": 3});
    assert_eq!(at(user), Verdict::Forbidden("claim value not allowed"));
    let level_text = json!({"sub": "a", "tenant": "t", "role": "admin", "level": "3"});
    assert_eq!(
        at(level_text),
        Verdict::Forbidden("claim value not allowed")
    );
    let no_role = json!({"sub": "a", "tenant": "t", "level": 3});
    assert_eq!(at(no_role), Verdict::Forbidden("claim value not allowed"));
}

#[test]
fn the_token_comes_from_bearer_or_the_cookie() {
    let mut j = jwt_settings(KeySet::secret(SECRET));
    j.cookie = Some("session".into());
    let auth = jwt_auth(j);
    let t = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
        None,
        &claims(),
    );
    let cookie = format!("theme=dark; session={t}; x=y");
    assert_eq!(
        check(&auth, &[("Cookie", cookie.as_bytes())], "").0,
        Verdict::Allowed
    );
    let quoted = format!("session=\"{t}\"");
    assert_eq!(
        check(&auth, &[("cookie", quoted.as_bytes())], "").0,
        Verdict::Allowed
    );
    // Bearer comes first; the scheme is case-insensitive.
    let lower = format!("bearer   {t}");
    let bad_cookie: &[u8] = b"session=nope";
    assert_eq!(
        check(
            &auth,
            &[("authorization", lower.as_bytes()), ("Cookie", bad_cookie)],
            ""
        )
        .0,
        Verdict::Allowed
    );
    assert_eq!(
        check(&auth, &[("Cookie", b"other=1")], "").0,
        Verdict::Missing
    );
    // Without `cookie`, a cookie is not looked at.
    let plain = jwt_auth(jwt_settings(KeySet::secret(SECRET)));
    assert_eq!(
        check(&plain, &[("Cookie", cookie.as_bytes())], "").0,
        Verdict::Missing
    );
    assert_eq!(check(&plain, &[], "").0, Verdict::Missing);
    assert_eq!(
        check(&plain, &[("Authorization", b"Basic dTpw")], "").0,
        Verdict::Missing
    );
    assert_eq!(
        check(&plain, &[("Authorization", b"Bearer ")], "").0,
        Verdict::Invalid("empty token")
    );
    let twice = [
        ("Authorization", &bearer(&t)[..]),
        ("Authorization", &bearer(&t)[..]),
    ];
    assert_eq!(
        check(&plain, &twice, "").0,
        Verdict::Invalid("several Authorization fields")
    );
}

fn api_auth(header: Option<&str>, query: Option<&str>, file: &str) -> Auth {
    let k = ApiKey {
        header: header.map(Into::into),
        query: query.map(Into::into),
        keys: KeyTable::parse(file).unwrap(),
    };
    Auth::new("partners", None, Kind::ApiKey(k))
}

fn sha256_hex(s: &str) -> String {
    super::request::sha256(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn api_keys_plain_and_hashed_in_header_and_query() {
    let file = format!(
        "# partners\n\nkey-one alice\n  sha256:{} bob\nkey three\nkey+four\n",
        sha256_hex("key/two")
    );
    let auth = api_auth(Some("X-Api-Key"), Some("api_key"), &file);
    let consumer = |fields: &[(&str, &[u8])], q: &str| {
        let (v, id) = check(&auth, fields, q);
        (v, id.consumer)
    };
    let allowed = |c: &str| (Verdict::Allowed, c.to_string());
    assert_eq!(consumer(&[("x-api-key", b"key-one")], ""), allowed("alice"));
    assert_eq!(consumer(&[("X-Api-Key", b"key/two")], ""), allowed("bob"));
    assert_eq!(consumer(&[("X-Api-Key", b"key")], ""), allowed("three"));
    assert_eq!(consumer(&[], "a=1&api_key=key-one"), allowed("alice"));
    assert_eq!(consumer(&[], "api_key=key%2Ftwo&b=2"), allowed("bob"));
    assert_eq!(consumer(&[], "api_key=%6Bey%2D%6fne"), allowed("alice"));
    // `+` is not a space here; a key without a name is named by its digest.
    assert_eq!(
        consumer(&[], "api_key=key+four"),
        allowed("key-78da33903dc3")
    );
    assert_eq!(
        consumer(&[], "api_key=key%2Bfour"),
        allowed("key-78da33903dc3")
    );
    let invalid = |r| (Verdict::Invalid(r), String::new());
    assert_eq!(
        consumer(&[("X-Api-Key", b"key-two")], ""),
        invalid("unknown api key")
    );
    assert_eq!(consumer(&[], "api_key=nope"), invalid("unknown api key"));
    assert_eq!(consumer(&[], "api_key=%zz"), invalid("malformed api key"));
    assert_eq!(consumer(&[], "api_key=%2"), invalid("malformed api key"));
    assert_eq!(consumer(&[], "api_key="), invalid("empty api key"));
    assert_eq!(
        consumer(&[], "api_key=key-one&api_key=x"),
        invalid("api key given more than once")
    );
    let twice: [(&str, &[u8]); 2] = [("X-Api-Key", b"key-one"), ("X-Api-Key", b"key-one")];
    assert_eq!(
        consumer(&twice, ""),
        invalid("api key given more than once")
    );
    assert_eq!(consumer(&[], "other=1"), (Verdict::Missing, String::new()));
    assert_eq!(
        consumer(&[("Authorization", b"Bearer x")], ""),
        (Verdict::Missing, String::new())
    );
    // A long percent-encoded key (more than the stack chunk).
    let long = "k".repeat(200);
    let auth = api_auth(None, Some("key"), &format!("{long} long"));
    let q = format!("key={}", "%6b".repeat(200));
    assert_eq!(
        check(&auth, &[("X-Api-Key", long.as_bytes())], &q)
            .1
            .consumer,
        "long"
    );
    assert_eq!(auth.credential_fields().len(), 0);
    assert_eq!(auth.credential_query(), Some("key"));
}

#[test]
fn keys_files_are_checked_line_by_line() {
    let dup = format!("a\nb\n# c\nsha256:{}\n", sha256_hex("b"));
    for (text, line, want) in [
        (dup.as_str(), 4, "duplicate key (also on line 2)"),
        ("a one two\n", 1, "expected KEY or KEY CONSUMER"),
        ("ok\nsha256:abcd\n", 2, "64 hex digits"),
        ("# nothing\n\n", 0, "holds no key"),
    ] {
        let (l, m) = KeyTable::parse(text).unwrap_err();
        assert_eq!(l, line, "{text:?}");
        assert!(m.contains(want), "{text:?}: {m}");
    }
    assert_eq!(KeyTable::parse("\u{feff}x\n").map(|t| t.len()), Ok(1));
}

const BCRYPT_PASSWORD: &str = "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe";

fn basic_auth(file: &str) -> Auth {
    Auth::new(
        "staff",
        Some("Staff only"),
        Kind::Basic(Htpasswd::parse(file).unwrap()),
    )
}

fn basic(user: &str, pass: &str) -> Vec<u8> {
    format!("Basic {}", STANDARD.encode(format!("{user}:{pass}"))).into_bytes()
}

#[test]
fn htpasswd_formats_verify() {
    let bcrypt4 = |variant, pw: &str| {
        pwhash::bcrypt::hash_with(
            pwhash::bcrypt::BcryptSetup {
                salt: None,
                cost: Some(4),
                variant: Some(variant),
            },
            pw,
        )
        .unwrap()
    };
    use pwhash::bcrypt::BcryptVariant::*;
    let file = format!(
        "# users\nold:{BCRYPT_PASSWORD}\nann:{}\nbob:{}\ncid:{}\ndee:{{SHA}}W8r/fyL/UzygmbNAjq2HbA67qac=\n\
         eve:$5$saltsalt$yrhPKxCqiWcCE9h0g86j6Ugz7SDFdFm.BjU.d8RaQnC\n\
         fay:$6$saltsalt$e/5XKibXPLqVcfjpD.ouauaJrAOL5V0uo80Lt7n7EbRdRiCx3HbQ90yjOHr.G0T.mx79PEMRy8nmtr0qSYhQp1\n\
         gus:$5$rounds=11858$WH1ABM5sKhxbkgCK$aTQsjPkz0rBsH3lQlJxw9HDTDXPKBxC0LlVeV69P.t1\n",
        bcrypt4(V2y, "pw-ann"),
        bcrypt4(V2a, "pw-bob"),
        bcrypt4(V2b, "pw-cid"),
    );
    let auth = basic_auth(&file);
    for (user, pass) in [
        ("old", "password"),
        ("ann", "pw-ann"),
        ("bob", "pw-bob"),
        ("cid", "pw-cid"),
        ("dee", "open sesame"),
        ("eve", "open sesame"),
        ("fay", "open sesame"),
        ("gus", "test"),
    ] {
        let (v, id) = check(&auth, &[("Authorization", &basic(user, pass))], "");
        assert_eq!(
            (v, id.consumer.as_str()),
            (Verdict::Allowed, user),
            "{user}"
        );
        let (v, _) = check(&auth, &[("Authorization", &basic(user, "wrong"))], "");
        assert_eq!(v, Verdict::Invalid("wrong user or password"), "{user}");
    }
    let wrong = Verdict::Invalid("wrong user or password");
    let before = verifications();
    assert_eq!(
        check(&auth, &[("Authorization", &basic("nobody", "x"))], "").0,
        wrong
    );
    assert_eq!(
        verifications(),
        before + 1,
        "an unknown user costs a verification too"
    );
    let malformed = Verdict::Invalid("malformed credentials");
    assert_eq!(
        check(&auth, &[("Authorization", b"Basic !!!")], "").0,
        malformed
    );
    let no_colon = format!("Basic {}", STANDARD.encode("ann"));
    assert_eq!(
        check(&auth, &[("Authorization", no_colon.as_bytes())], "").0,
        malformed
    );
    let unpadded = format!(
        "BASIC {}",
        STANDARD.encode("ann:pw-ann").trim_end_matches('=')
    );
    assert_eq!(
        check(&auth, &[("Authorization", unpadded.as_bytes())], "").0,
        Verdict::Allowed
    );
    assert_eq!(
        check(&auth, &[("Authorization", b"Bearer x")], "").0,
        Verdict::Missing
    );
    // A password longer than bcrypt's 72 bytes does not panic.
    let long = "p".repeat(500);
    assert_eq!(
        check(&auth, &[("Authorization", &basic("ann", &long))], "").0,
        wrong
    );
}

#[test]
fn htpasswd_files_are_checked_line_by_line() {
    for (text, line, want) in [
        (
            "a:$apr1$abcdefgh$5VEbMkemELfbhC5ck.U.z1\n",
            1,
            "unsupported password hash $apr1$",
        ),
        (
            "# x\na:{SSHA}abcdef\n",
            2,
            "unsupported password hash {SSHA}",
        ),
        ("a:secret\n", 1, "plain-text or DES-crypt"),
        ("a:$1$abc$def\n", 1, "unsupported password hash $1$"),
        ("a:$2y$05$short\n", 1, "malformed $2y hash"),
        (
            "a:$2y$99$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe\n",
            1,
            "malformed",
        ),
        (
            "a:$5$rounds=10$salt$yrhPKxCqiWcCE9h0g86j6Ugz7SDFdFm.BjU.d8RaQnC\n",
            1,
            "malformed $5$",
        ),
        ("a:$6$saltsalt$short\n", 1, "malformed $6$"),
        ("a:{SHA}bm90IDIwIGJ5dGVz\n", 1, "20 bytes"),
        ("nocolon\n", 1, "expected USER:HASH"),
        (
            ":{SHA}W8r/fyL/UzygmbNAjq2HbA67qac=\n",
            1,
            "invalid user name",
        ),
        ("\n\n", 0, "holds no user"),
    ] {
        let Err((l, m)) = Htpasswd::parse(text) else {
            panic!("{text:?} accepted");
        };
        assert_eq!(l, line, "{text:?}");
        assert!(m.contains(want), "{text:?}: {m}");
        assert!(!m.contains("secret"), "a password is never echoed: {m}");
    }
    let dup = format!("a:{BCRYPT_PASSWORD}\n\na:{BCRYPT_PASSWORD}\n");
    let (l, m) = Htpasswd::parse(&dup).unwrap_err();
    assert_eq!(
        (l, m.as_str()),
        (3, "duplicate user \"a\" (also on line 1)")
    );
    let err = Htpasswd::parse("a:$apr1$x$y\n").unwrap_err().1;
    assert!(
        err.contains("bcrypt") && err.contains("{SHA}") && err.contains("$6$"),
        "{err}"
    );
}

#[test]
fn admitted_tokens_are_cached_until_they_expire() {
    let auth = jwt_auth(jwt_settings(
        KeySet::from_pem(p256().public.as_bytes()).unwrap(),
    ));
    let c = json!({"sub": "alice", "exp": NOW + 100});
    let t = token(
        Algorithm::ES256,
        &signing_key(p256(), Algorithm::ES256),
        None,
        &c,
    );
    let fields: [(&str, &[u8]); 1] = [("Authorization", &bearer(&t))];
    let mut cache = AuthCache::new();
    let before = verifications();
    let (v, id) = check_at(&mut cache, &auth, &fields, "", NOW, 1);
    assert_eq!((v, id.consumer.as_str()), (Verdict::Allowed, "alice"));
    assert_eq!(verifications(), before + 1);
    for now in [NOW + 1, NOW + 100, NOW + 159] {
        let (v, id) = check_at(&mut cache, &auth, &fields, "", now, 1);
        assert_eq!((v, id.consumer.as_str()), (Verdict::Allowed, "alice"));
    }
    assert_eq!(verifications(), before + 1, "admitted from the cache");
    assert_eq!(cache.len(), 1);
    // Past exp + leeway the cache no longer admits it and the verification says why.
    let (v, id) = check_at(&mut cache, &auth, &fields, "", NOW + 160, 1);
    assert_eq!(
        (v, id.consumer.as_str()),
        (Verdict::Invalid("token expired"), "")
    );
    assert_eq!(verifications(), before + 2);
    // A refusal leaves the entry; a new config generation verifies again (and replaces it).
    check_at(&mut cache, &auth, &fields, "", NOW, 1);
    assert_eq!(verifications(), before + 2);
    check_at(&mut cache, &auth, &fields, "", NOW, 2);
    assert_eq!(verifications(), before + 3);
    check_at(&mut cache, &auth, &fields, "", NOW, 2);
    assert_eq!(verifications(), before + 3);
    // Another auth (index) verifies again; a token that differs by one byte is not a hit.
    let h = head(&fields);
    let mut id = Identity::default();
    assert_eq!(
        cache.check(2, 1, &auth, &h.hs, &h.buf, b"", NOW, &mut id),
        Verdict::Allowed
    );
    assert_eq!(verifications(), before + 4);
    let mut other = t.clone().into_bytes();
    let last = other.len() - 1;
    other[last] ^= 1;
    let (v, _) = check_at(
        &mut cache,
        &auth,
        &[("Authorization", &[b"Bearer ", &other[..]].concat())],
        "",
        NOW,
        2,
    );
    assert!(matches!(v, Verdict::Invalid(_)));
    // Failures are not cached.
    let failures = verifications();
    check_at(
        &mut cache,
        &auth,
        &[("Authorization", &[b"Bearer ", &other[..]].concat())],
        "",
        NOW,
        2,
    );
    assert_eq!(verifications(), failures + 1);
}

#[test]
fn a_hit_copies_the_identity_without_allocating() {
    let mut j = jwt_settings(KeySet::secret(SECRET));
    j.forward_claims = names(&["sub"]);
    j.forward_headers = names(&["X-User"]);
    let auth = jwt_auth(j);
    let t = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
        None,
        &claims(),
    );
    let h = head(&[("Authorization", &bearer(&t))]);
    let mut cache = AuthCache::new();
    let mut id = Identity::default();
    assert_eq!(
        cache.check(1, 0, &auth, &h.hs, &h.buf, b"", NOW, &mut id),
        Verdict::Allowed
    );
    let (consumer, claim) = (
        id.consumer.as_ptr(),
        id.claims[0].as_ref().unwrap().as_ptr(),
    );
    for _ in 0..3 {
        assert_eq!(
            cache.check(1, 0, &auth, &h.hs, &h.buf, b"", NOW, &mut id),
            Verdict::Allowed
        );
        assert_eq!(id.consumer.as_ptr(), consumer);
        assert_eq!(id.claims[0].as_ref().unwrap().as_ptr(), claim);
    }
    assert_eq!(id.claims, vec![Some("alice".to_string())]);
    // A refusal clears it.
    let none = head(&[]);
    assert_eq!(
        cache.check(1, 0, &auth, &none.hs, &none.buf, b"", NOW, &mut id),
        Verdict::Missing
    );
    assert!(id.consumer.is_empty() && id.claims.is_empty());
}

#[test]
fn basic_credentials_are_cached_for_a_while() {
    let auth = basic_auth(&format!("old:{BCRYPT_PASSWORD}\n"));
    let fields: [(&str, &[u8]); 1] = [("Authorization", &basic("old", "password"))];
    let mut cache = AuthCache::new();
    let before = verifications();
    for now in [NOW, NOW + 1, NOW + cache::BASIC_TTL - 1] {
        assert_eq!(
            check_at(&mut cache, &auth, &fields, "", now, 7).0,
            Verdict::Allowed
        );
    }
    assert_eq!(verifications(), before + 1);
    assert_eq!(
        check_at(&mut cache, &auth, &fields, "", NOW + cache::BASIC_TTL, 7).0,
        Verdict::Allowed
    );
    assert_eq!(verifications(), before + 2);
    let wrong: [(&str, &[u8]); 1] = [("Authorization", &basic("old", "passwore"))];
    for _ in 0..2 {
        let v = check_at(&mut cache, &auth, &wrong, "", NOW, 7).0;
        assert_eq!(v, Verdict::Invalid("wrong user or password"));
    }
    assert_eq!(verifications(), before + 4);
}

#[test]
fn the_cache_stays_bounded() {
    let auth = jwt_auth(jwt_settings(KeySet::secret(SECRET)));
    let key = EncodingKey::from_secret(SECRET);
    let mut cache = AuthCache::new();
    for i in 0..9000u64 {
        let t = token(Algorithm::HS256, &key, None, &json!({"sub": i.to_string()}));
        assert_eq!(
            check_at(
                &mut cache,
                &auth,
                &[("Authorization", &bearer(&t))],
                "",
                NOW,
                1
            )
            .0,
            Verdict::Allowed
        );
        assert!(cache.len() <= 8192);
    }
}

#[test]
fn challenges() {
    let jwt = jwt_auth(jwt_settings(KeySet::secret(SECRET)));
    assert_eq!(jwt.challenge(Verdict::Allowed), "");
    assert_eq!(
        jwt.challenge(Verdict::Missing),
        "WWW-Authenticate: Bearer realm=\"users\"\r\n"
    );
    assert_eq!(
        jwt.challenge(Verdict::Invalid("token expired")),
        "WWW-Authenticate: Bearer realm=\"users\", error=\"invalid_token\", error_description=\"token expired\"\r\n"
    );
    assert_eq!(
        jwt.challenge(Verdict::Forbidden("claim value not allowed")),
        "WWW-Authenticate: Bearer realm=\"users\", error=\"insufficient_scope\", error_description=\"claim value not allowed\"\r\n"
    );
    assert_eq!(&*jwt.credential_fields()[0], "Authorization");
    let b = basic_auth(&format!("old:{BCRYPT_PASSWORD}\n"));
    let want = "WWW-Authenticate: Basic realm=\"Staff only\", charset=\"UTF-8\"\r\n";
    assert_eq!(b.challenge(Verdict::Missing), want);
    assert_eq!(
        b.challenge(Verdict::Invalid("wrong user or password")),
        want
    );
    let k = api_auth(Some("X-Api-Key"), None, "k\n");
    assert_eq!(
        k.challenge(Verdict::Missing),
        "WWW-Authenticate: ApiKey realm=\"partners\"\r\n"
    );
    assert_eq!(
        k.challenge(Verdict::Invalid("unknown api key")),
        "WWW-Authenticate: ApiKey realm=\"partners\", error=\"invalid_key\", error_description=\"unknown api key\"\r\n"
    );
    assert_eq!(&*k.credential_fields()[0], "X-Api-Key");
    assert!(b.describe().contains("basic, 1 users"));
    assert!(
        !jwt.describe().contains("0123456789"),
        "no secret in the summary"
    );
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    fn auths() -> &'static [Auth] {
        static A: OnceLock<Vec<Auth>> = OnceLock::new();
        A.get_or_init(|| {
            let mut j = jwt_settings(KeySet::secret(SECRET));
            j.cookie = Some("s".into());
            j.forward_claims = names(&["sub"]);
            j.forward_headers = names(&["X-Sub"]);
            j.claims = vec![("r".into(), json!("a"))].into();
            vec![
                jwt_auth(j),
                api_auth(Some("K"), Some("k"), "key\n"),
                basic_auth("u:{SHA}W8r/fyL/UzygmbNAjq2HbA67qac=\n"),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn on_any_credential(
            value in proptest::collection::vec(any::<u8>(), 0..200),
            query in proptest::collection::vec(any::<u8>(), 0..60),
            scheme in prop_oneof![Just("Bearer "), Just("Basic "), Just("")],
        ) {
            let auth_value = [scheme.as_bytes(), &value].concat();
            let cookie = [b"s=", &value[..]].concat();
            let h = head(&[("Authorization", &auth_value), ("Cookie", &cookie), ("K", &value)]);
            let mut cache = AuthCache::new();
            let mut id = Identity::default();
            for (i, a) in auths().iter().enumerate() {
                let v = cache.check(1, i, a, &h.hs, &h.buf, &query, NOW, &mut id);
                let _ = a.challenge(v);
            }
        }

        #[test]
        fn on_any_token_shape(header in "[ -~]{0,40}", body in "[ -~]{0,80}", sig in "[A-Za-z0-9_-]{0,20}") {
            let t = format!("{}.{}.{sig}", b64(header.as_bytes()), b64(body.as_bytes()));
            let (v, _) = check(&auths()[0], &[("Authorization", &bearer(&t))], "");
            prop_assert_ne!(v, Verdict::Allowed);
        }

        #[test]
        fn on_any_file(text in "[ -~\n]{0,200}") {
            let _ = KeyTable::parse(&text);
            let _ = Htpasswd::parse(&text);
            let _ = KeySet::from_jwks(text.as_bytes());
            let _ = KeySet::from_pem(text.as_bytes());
        }
    }
}

#[test]
fn short_rsa_keys_are_refused_when_loaded() {
    // aws-lc-rs verifies with 2048 bits and more: a shorter key would refuse every token.
    // Made with `openssl genrsa 1024 | openssl rsa -pubout`.
    let pem = "-----BEGIN PUBLIC KEY-----\n\
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCzaRzQyuvo1Tc3xfst1lwqzKDL\n\
nrFbD+Jg6ZJiJ8Gv0l1+DtcAYBRwpaYzfOHt0hG40rieb7UT/lr0cPcydSHqGLhd\n\
leka1LmDAXBw8rmFZS0WOpsxX84EoPDWwTRZupAQbh1g+oDF/7f10HHt3OgKaSR1\n\
HUheQSkKeFImcGAaWwIDAQAB\n\
-----END PUBLIC KEY-----\n";
    let e = KeySet::from_pem(pem.as_bytes()).unwrap_err();
    assert_eq!(e, "RSA key of 1024 bits: at least 2048 are needed");
}
