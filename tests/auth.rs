//! Authentication end to end: JWT (tokens made by PyJWT, an encoder independent of ours, and by
//! the `jsonwebtoken` crate), API keys from a hashed key file, Basic auth from an htpasswd file
//! with bcrypt and SHA entries. Each refusal gets the right status and `WWW-Authenticate`, and
//! nothing reaches the backend unless the credentials are valid.

mod common;

use std::process::Command;

use common::*;

/// Tokens and keys made by PyJWT (`python3 -m pip install pyjwt cryptography`; `.ci/run`
/// installs them). Fails the test when Python or PyJWT is missing: never skipped.
fn pyjwt(dir: &TempDir) -> serde_json::Value {
    let script = dir.write(
        "gen.py",
        r#"
import base64, hashlib, hmac, json, time
import jwt
from jwt.algorithms import RSAAlgorithm, ECAlgorithm, OKPAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, ec, ed25519

now = int(time.time())
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
ed_key = ed25519.Ed25519PrivateKey.generate()
pem = lambda k: k.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
rsa_pub = pem(rsa_key)
base = {"iss": "https://id.test", "aud": "api", "sub": "alice", "role": "admin",
        "email": "alice@example.com", "exp": now + 600, "iat": now}

def tok(key, alg, kid=None, **over):
    c = dict(base)
    c.update(over)
    c = {k: v for k, v in c.items() if v is not None}
    return jwt.encode(c, key, algorithm=alg, headers={"kid": kid} if kid else None)

b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def raw(header, claims, sign):
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return signing + "." + sign(signing.encode())

good = tok(rsa_key, "RS256")
h, p, s = good.split(".")
claims = json.loads(base64.urlsafe_b64decode(p + "=="))
claims["sub"] = "mallory"
tampered = h + "." + b64(json.dumps(claims).encode()) + "." + s

def jwk(alg_cls, key, kid, alg):
    d = json.loads(alg_cls.to_jwk(key.public_key()))
    d.update({"kid": kid, "alg": alg, "use": "sig"})
    return d

print(json.dumps({
    "rsa_pub": rsa_pub.decode(),
    "jwks": {"keys": [jwk(RSAAlgorithm, rsa_key, "r1", "RS256"),
                      jwk(ECAlgorithm, ec_key, "e1", "ES256"),
                      jwk(OKPAlgorithm, ed_key, "d1", "EdDSA")]},
    "rs256": good,
    "ps256": tok(rsa_key, "PS256"),
    "expired": tok(rsa_key, "RS256", exp=now - 3600),
    "not_yet": tok(rsa_key, "RS256", nbf=now + 3600),
    "within_leeway": tok(rsa_key, "RS256", exp=now - 5),
    "wrong_iss": tok(rsa_key, "RS256", iss="https://evil.test"),
    "wrong_aud": tok(rsa_key, "RS256", aud="other"),
    "no_sub": tok(rsa_key, "RS256", sub=None),
    "user_role": tok(rsa_key, "RS256", role="user"),
    "tampered": tampered,
    "none": raw({"alg": "none", "typ": "JWT"}, base, lambda m: ""),
    "hs_confusion": raw({"alg": "HS256", "typ": "JWT"}, base,
                        lambda m: b64(hmac.new(rsa_pub, m, hashlib.sha256).digest())),
    "jwks_rs": tok(rsa_key, "RS256", kid="r1"),
    "jwks_es": tok(ec_key, "ES256", kid="e1", sub="erin"),
    "jwks_ed": tok(ed_key, "EdDSA", kid="d1", sub="dave"),
    "jwks_unknown_kid": tok(ec_key, "ES256", kid="zz"),
    "jwks_es_as_rs": tok(rsa_key, "RS256", kid="e1"),
    "hs256": tok("a-shared-secret-of-at-least-32-bytes", "HS256", sub="hugo"),
}))
"#,
    );
    let out = Command::new("python3")
        .arg(&script)
        .output()
        .expect("python3 is required for the JWT tests");
    assert!(
        out.status.success(),
        "PyJWT failed (install: pip install pyjwt cryptography):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One request with the extra field lines `fields` on a new connection.
fn request(addr: std::net::SocketAddr, target: &str, fields: &str) -> Response {
    send(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: api.test\r\n{fields}Connection: close\r\n\r\n"),
    )
}

fn bearer(token: &serde_json::Value) -> String {
    format!("Authorization: Bearer {}\r\n", token.as_str().unwrap())
}

fn challenge(r: &Response) -> String {
    r.values("WWW-Authenticate")
        .first()
        .map_or(String::new(), |v| v.to_string())
}

#[test]
fn jwt_with_a_pem_key_admits_only_valid_tokens() {
    let dir = TempDir::new("jwt-pem");
    let t = pyjwt(&dir);
    let key = dir.write("rsa.pem", t["rsa_pub"].as_str().unwrap());
    let b = TestBackend::hello();
    let rest = upstream_toml("app", &[b.port], "")
        + &format!(
            r#"
[[auth]]
name = "users"
kind = "jwt"
public_key = "{}"
issuer = "https://id.test"
audience = "api"
leeway = "30s"
required_claims = ["sub"]
forward_claims = {{ sub = "X-User-Id", email = "X-User-Email" }}
realm = "api"

[[auth]]
name = "admins"
kind = "jwt"
public_key = "{}"
issuer = "https://id.test"
audience = "api"
claims = {{ role = "admin" }}

[[routes]]
name = "api"
path_prefix = "/api/"
auth = "users"
upstream = "app"

[[routes]]
name = "admin"
path_prefix = "/admin/"
auth = "admins"
upstream = "app"
"#,
            key.display(),
            key.display()
        );
    let p = start_proxy("io_uring", "", &rest);

    // Valid (RS256 and PS256, and just expired but within the leeway): forwarded with the
    // claims the route forwards; a client's own X-User-Id does not survive.
    for name in ["rs256", "ps256", "within_leeway"] {
        let r = request(
            p.addr,
            "/api/x",
            &(bearer(&t[name]) + "X-User-Id: mallory\r\n"),
        );
        assert_eq!(r.status, 200, "{name}: {r:?}");
    }
    let seen = b.wait_requests(3);
    for s in &seen {
        assert_eq!(s.all("X-User-Id"), vec!["alice"]);
        assert_eq!(s.header("X-User-Email"), Some("alice@example.com"));
    }

    // Missing: 401 with the realm.
    let r = request(p.addr, "/api/x", "");
    assert_eq!(r.status, 401);
    assert!(
        challenge(&r).starts_with("bearer realm=\"api\""),
        "{}",
        r.head
    );
    // Invalid in every way: 401 saying invalid_token.
    for name in [
        "expired",
        "not_yet",
        "wrong_iss",
        "wrong_aud",
        "no_sub",
        "tampered",
        "none",
        "hs_confusion",
    ] {
        let r = request(p.addr, "/api/x", &bearer(&t[name]));
        assert_eq!(r.status, 401, "{name}: {r:?}");
        assert!(
            challenge(&r).contains("error=\"invalid_token\""),
            "{name}: {}",
            r.head
        );
    }
    let r = request(p.addr, "/api/x", "Authorization: Bearer not.a.token\r\n");
    assert_eq!(r.status, 401);
    let r = request(p.addr, "/api/x", "Authorization: Basic YTpi\r\n");
    assert_eq!(r.status, 401);

    // Valid but not allowed: 403.
    let r = request(p.addr, "/admin/x", &bearer(&t["user_role"]));
    assert_eq!(r.status, 403, "{r:?}");
    let r = request(p.addr, "/admin/x", &bearer(&t["rs256"]));
    assert_eq!(r.status, 200);
    assert_eq!(
        b.requests().len(),
        4,
        "only valid requests reach the backend"
    );
}

#[test]
fn jwt_from_a_jwks_file_picks_the_key_by_kid() {
    let dir = TempDir::new("jwt-jwks");
    let t = pyjwt(&dir);
    let jwks = dir.write("jwks.json", &t["jwks"].to_string());
    let b = TestBackend::hello();
    let rest = upstream_toml("app", &[b.port], "")
        + &format!(
            r#"
[[auth]]
name = "users"
kind = "jwt"
jwks = "{}"
issuer = "https://id.test"
audience = "api"
forward_claims = {{ sub = "X-User-Id" }}

[[routes]]
name = "api"
auth = "users"
upstream = "app"
"#,
            jwks.display()
        );
    let p = start_proxy("io_uring", "", &rest);
    for (name, sub) in [
        ("jwks_rs", "alice"),
        ("jwks_es", "erin"),
        ("jwks_ed", "dave"),
    ] {
        let r = request(p.addr, "/x", &bearer(&t[name]));
        assert_eq!(r.status, 200, "{name}: {r:?}");
        let seen = b.requests();
        assert_eq!(seen.last().unwrap().header("X-User-Id"), Some(sub));
    }
    for name in ["jwks_unknown_kid", "jwks_es_as_rs", "hs_confusion", "none"] {
        let r = request(p.addr, "/x", &bearer(&t[name]));
        assert_eq!(r.status, 401, "{name}: {r:?}");
    }
    assert_eq!(b.requests().len(), 3);
}

#[test]
fn jwt_hs256_from_both_encoders_and_from_a_cookie() {
    let dir = TempDir::new("jwt-hs");
    let t = pyjwt(&dir);
    let secret = "a-shared-secret-of-at-least-32-bytes";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({ "sub": "rusty", "exp": now + 600 });
    let ours = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let wrong = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes"),
    )
    .unwrap();
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let b = TestBackend::hello();
    let rest = upstream_toml("app", &[b.port], "")
        + &format!(
            r#"
[[auth]]
name = "users"
kind = "jwt"
secret = "{secret}"
algorithms = ["HS256"]
cookie = "session"
forward_claims = {{ sub = "X-User-Id" }}

[[routes]]
name = "api"
auth = "users"
upstream = "app"
"#
        );
    let p = start_proxy("io_uring", "", &rest);
    let r = request(p.addr, "/x", &format!("Authorization: Bearer {ours}\r\n"));
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(p.addr, "/x", &bearer(&t["hs256"]));
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(
        p.addr,
        "/x",
        &format!("Cookie: theme=dark; session={ours}\r\n"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let subs: Vec<String> = b
        .requests()
        .iter()
        .map(|r| r.header("X-User-Id").unwrap_or("").to_string())
        .collect();
    assert_eq!(subs, ["rusty", "hugo", "rusty"]);
    // Another secret, an algorithm the auth does not allow.
    for tok in [&wrong, &hs384] {
        let r = request(p.addr, "/x", &format!("Authorization: Bearer {tok}\r\n"));
        assert_eq!(r.status, 401, "{r:?}");
    }
    assert_eq!(b.requests().len(), 3);
}

fn sha256_hex(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn api_keys_from_a_hashed_file_key_rate_limits_by_consumer() {
    let dir = TempDir::new("apikey");
    let keys = dir.write(
        "keys.txt",
        &format!(
            "# partner keys\nsha256:{} acme\nsha256:{} globex\nplain-key-3 initech\n",
            sha256_hex("key-acme-1"),
            sha256_hex("key-globex-2")
        ),
    );
    let b = TestBackend::hello();
    let admin = free_port();
    let rest = format!("[admin]\naddress = \"127.0.0.1:{admin}\"\n\n")
        + &upstream_toml("app", &[b.port], "")
        + &format!(
            r#"
[[auth]]
name = "partners"
kind = "api_key"
header = "X-Api-Key"
query = "api_key"
keys_file = "{}"

[[rate_limits]]
name = "per-consumer"
key = "consumer"
rate = 3
period = "1m"
burst = 2

[[routes]]
name = "api"
path_prefix = "/api/"
auth = "partners"
rate_limits = ["per-consumer"]
request_headers = {{ set = {{ "X-Consumer" = "$consumer" }} }}
upstream = "app"

[[routes]]
name = "acme-only"
path_prefix = "/acme/"
auth = "partners"
consumers = ["acme"]
upstream = "app"
"#,
            keys.display()
        );
    let p = start_proxy("io_uring", "", &rest);
    let r = request(p.addr, "/api/a", "X-Api-Key: key-acme-1\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(p.addr, "/api/a?x=1&api_key=key-globex-2", "");
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(p.addr, "/api/a?api_key=plain%2Dkey%2D3", "");
    assert_eq!(r.status, 200, "{r:?}");
    let consumers: Vec<String> = b
        .requests()
        .iter()
        .map(|r| r.header("X-Consumer").unwrap_or("").to_string())
        .collect();
    assert_eq!(consumers, ["acme", "globex", "initech"]);
    for fields in ["", "X-Api-Key: key-acme-2\r\n", "X-Api-Key: \r\n"] {
        let r = request(p.addr, "/api/a", fields);
        assert_eq!(r.status, 401, "{fields:?}: {r:?}");
        assert!(!challenge(&r).is_empty(), "{}", r.head);
    }
    // The limit counts per consumer: acme has 2 left, globex 2.
    for _ in 0..2 {
        assert_eq!(
            request(p.addr, "/api/a", "X-Api-Key: key-acme-1\r\n").status,
            200
        );
    }
    assert_eq!(
        request(p.addr, "/api/a", "X-Api-Key: key-acme-1\r\n").status,
        429
    );
    assert_eq!(
        request(p.addr, "/api/a", "X-Api-Key: key-globex-2\r\n").status,
        200
    );
    // A valid consumer not on the route's list: 403.
    assert_eq!(
        request(p.addr, "/acme/a", "X-Api-Key: key-globex-2\r\n").status,
        403
    );
    assert_eq!(
        request(p.addr, "/acme/a", "X-Api-Key: key-acme-1\r\n").status,
        200
    );
    assert_eq!(b.requests().len(), 7);
    // The decisions, by kind (the 429 was admitted, then limited; the consumer the route does
    // not list was admitted by the auth and refused by the route: forbidden).
    let text = scrape(([127, 0, 0, 1], admin).into());
    let n = |d: &str| {
        sample(
            &text,
            &format!("coregate_auth_decisions_total{{auth=\"partners\",decision=\"{d}\"}}"),
        )
    };
    assert_eq!(n("allowed"), 8.0, "{text}");
    assert_eq!(n("forbidden"), 1.0, "{text}");
    assert_eq!(n("missing") + n("invalid"), 3.0, "{text}");
}

#[test]
fn basic_auth_from_htpasswd_with_bcrypt_and_sha() {
    let dir = TempDir::new("basic");
    let bcrypt = pwhash::bcrypt::hash_with(
        pwhash::bcrypt::BcryptSetup {
            cost: Some(5),
            variant: Some(pwhash::bcrypt::BcryptVariant::V2y),
            ..Default::default()
        },
        "open sesame",
    )
    .unwrap();
    // {SHA}: base64 of the SHA-1 of the password (htpasswd -s).
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b"hunter2");
    use base64::Engine;
    let sha = base64::engine::general_purpose::STANDARD.encode(sha1.as_ref());
    let file = dir.write("htpasswd", &format!("ali:{bcrypt}\nbob:{{SHA}}{sha}\n"));
    let b = TestBackend::hello();
    let rest = upstream_toml("app", &[b.port], "")
        + &format!(
            r#"
[[auth]]
name = "staff"
kind = "basic"
htpasswd = "{}"
realm = "Staff only"

[[routes]]
name = "api"
auth = "staff"
request_headers = {{ set = {{ "X-User" = "$consumer" }} }}
upstream = "app"
access_log = {{ path = "{}", format = "combined", flush = "10ms" }}
"#,
            file.display(),
            dir.0.join("access.log").display()
        );
    let p = start_proxy("io_uring", "", &rest);
    let basic = |user: &str, pass: &str| {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!("Authorization: Basic {v}\r\n")
    };
    for _ in 0..2 {
        // The second one is admitted from the worker's cache of verified credentials.
        assert_eq!(
            request(p.addr, "/x", &basic("ali", "open sesame")).status,
            200
        );
    }
    assert_eq!(request(p.addr, "/x", &basic("bob", "hunter2")).status, 200);
    for (u, pw) in [("ali", "open sesame!"), ("bob", "hunter3"), ("eve", "x")] {
        let r = request(p.addr, "/x", &basic(u, pw));
        assert_eq!(r.status, 401, "{u}: {r:?}");
        assert!(
            challenge(&r).starts_with("basic realm=\"staff only\""),
            "{}",
            r.head
        );
    }
    let users: Vec<String> = b
        .requests()
        .iter()
        .map(|r| r.header("X-User").unwrap_or("").to_string())
        .collect();
    assert_eq!(users, ["ali", "ali", "bob"]);
    // The access log names the consumer where nginx writes $remote_user.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut log = String::new();
    while log.lines().count() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        log = std::fs::read_to_string(dir.0.join("access.log")).unwrap_or_default();
    }
    let who: Vec<&str> = log.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
    assert_eq!(who, ["ali", "ali", "bob", "-", "-", "-"], "{log}");
}

#[test]
fn a_reload_reads_the_keys_file_again() {
    let dir = TempDir::new("apikey-reload");
    let keys = dir.write("keys.txt", "old-key acme\n");
    let b = TestBackend::hello();
    let rest = upstream_toml("app", &[b.port], "")
        + &format!(
            "[[auth]]\nname = \"k\"\nkind = \"api_key\"\nheader = \"X-Api-Key\"\nkeys_file = \"{}\"\n\n\
             [[routes]]\nname = \"api\"\nauth = \"k\"\nupstream = \"app\"\n",
            keys.display()
        );
    let p = start_proxy("io_uring", "", &rest);
    assert_eq!(request(p.addr, "/", "X-Api-Key: old-key\r\n").status, 200);
    assert_eq!(request(p.addr, "/", "X-Api-Key: new-key\r\n").status, 401);
    dir.write("keys.txt", "new-key acme\n");
    p.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while request(p.addr, "/", "X-Api-Key: new-key\r\n").status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never admitted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(request(p.addr, "/", "X-Api-Key: old-key\r\n").status, 401);
    // A broken file on reload keeps the keys in force.
    dir.write("keys.txt", "new-key acme\nnew-key globex\n");
    p.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !p.log_text().contains("duplicate key") {
        assert!(std::time::Instant::now() < deadline, "{}", p.log_text());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(request(p.addr, "/", "X-Api-Key: new-key\r\n").status, 200);
}
