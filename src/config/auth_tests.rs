use std::path::PathBuf;

use crate::config::{line_col, parse, ConfigError};
use crate::policy::auth::Kind;

use crate::config::tests::MINIMAL as BASE;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const BCRYPT: &str = "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe";

/// A fresh directory for one test's files.
fn dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coregate-auth-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `text` to `dir/name` and returns the path as TOML would quote it.
fn file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn errors(src: &str) -> Vec<ConfigError> {
    parse("t.toml", src).expect_err("config accepted").0
}

/// Asserts an error whose message contains `msg`, positioned where `at` first occurs in `src`.
fn assert_error(src: &str, at: &str, msg: &str) {
    let errs = errors(src);
    let pos = src
        .find(at)
        .unwrap_or_else(|| panic!("{at:?} not in the config"));
    let (line, col) = line_col(src, pos);
    assert!(
        errs.iter()
            .any(|e| e.line == line && e.col == col && e.message.contains(msg)),
        "wanted {line}:{col}: …{msg}…, got:\n{}",
        errs.iter()
            .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn with_auth(tables: &str) -> String {
    format!("{BASE}\n{tables}")
}

#[test]
fn every_kind_loads_with_its_files() {
    let d = dir("loads");
    let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = file(&d, "key.pem", &k.public_key_pem());
    let raw = k.public_key_raw();
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let jwks = file(
        &d,
        "jwks.json",
        &serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..])}]})
        .to_string(),
    );
    let keys = file(&d, "keys.txt", "# partners\nk-1 acme\nk-2\n");
    let htpasswd = file(&d, "htpasswd", &format!("admin:{BCRYPT}\n"));
    let src = with_auth(&format!(
        r#"
[[auth]]
name = "users"
kind = "jwt"
secret = "{SECRET}"
issuer = "https://id.example"
audience = "api"
algorithms = ["HS256"]
leeway = "30s"
required_claims = ["sub", "tenant"]
claims = {{ role = "admin", level = 3, staff = true }}
cookie = "session"
forward_claims = {{ sub = "X-User-Id", tenant = "X-Tenant", email = "X-Email" }}
consumer_claim = "email"
realm = "Example API"

[[auth]]
name = "keyed"
kind = "jwt"
public_key = "{pem}"

[[auth]]
name = "sso"
kind = "jwt"
jwks = "{jwks}"

[[auth]]
name = "partners"
kind = "api_key"
header = "X-Api-Key"
query = "api_key"
keys_file = "{keys}"

[[auth]]
name = "staff"
kind = "basic"
htpasswd = "{htpasswd}"
"#
    ));
    let s = parse("t.toml", &src).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = s.auths.iter().map(|a| &*a.name).collect();
    assert_eq!(names, ["users", "keyed", "sso", "partners", "staff"]);
    let users = &s.auths[0];
    assert_eq!(&*users.realm, "Example API");
    // Forwarded in file order.
    let fwd: Vec<&str> = users.forwarded().iter().map(|h| &**h).collect();
    assert_eq!(fwd, ["X-User-Id", "X-Tenant", "X-Email"]);
    let Kind::Jwt(j) = &users.kind else {
        panic!("not jwt")
    };
    assert_eq!(j.leeway, 30);
    assert_eq!(&*j.consumer_claim, "email");
    assert_eq!(j.claims.len(), 3);
    assert_eq!(j.keys.algorithms(), [jsonwebtoken::Algorithm::HS256]);
    let Kind::Jwt(keyed) = &s.auths[1].kind else {
        panic!("not jwt")
    };
    assert_eq!(keyed.leeway, 60, "the default leeway");
    assert_eq!(&*keyed.consumer_claim, "sub");
    assert_eq!(
        &*s.auths[1].realm, "keyed",
        "the realm defaults to the name"
    );
    assert_eq!(s.auths[3].credential_query(), Some("api_key"));
    let summary = s.summary();
    assert!(summary.contains("auth: 5"), "{summary}");
    assert!(summary
        .contains("partners: api_key from header X-Api-Key or query parameter api_key, 2 keys"));
    assert!(summary.contains("staff: basic, 1 users"));
    assert!(!summary.contains(SECRET), "no secret in the summary");
}

#[test]
fn names_kinds_and_keys_are_checked() {
    let jwt = format!("kind = \"jwt\"\nsecret = \"{SECRET}\"");
    let src = with_auth(&format!(
        "[[auth]]\nname = \"a\"\n{jwt}\n[[auth]]\nname = \"a\"\n{jwt}\n"
    ));
    let pos = src.rfind("\"a\"").unwrap();
    let (line, col) = line_col(&src, pos);
    let e = &errors(&src)[0];
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (line, col, "duplicate auth name \"a\"")
    );
    assert_error(
        &with_auth(&format!("[[auth]]\nname = \"a b\"\n{jwt}\n")),
        "\"a b\"",
        "invalid auth name",
    );
    assert_error(
        &with_auth("[[auth]]\nname = \"a\"\nkind = \"oauth\"\n"),
        "\"oauth\"",
        "unknown variant `oauth`",
    );
    assert_error(
        &with_auth(&format!("[[auth]]\nname = \"a\"\n{jwt}\nsecrets = 1\n")),
        "secrets",
        "unknown field `secrets`",
    );
    assert_error(
        &with_auth(&format!(
            "[[auth]]\nname = \"a\"\n{jwt}\nheader = \"X-Key\"\n"
        )),
        "\"X-Key\"",
        "header applies to kind = \"api_key\", not \"jwt\"",
    );
    assert_error(
        &with_auth("[[auth]]\nname = \"a\"\nkind = \"basic\"\nhtpasswd = \"x\"\nclaims = { role = \"x\" }\n"),
        "role",
        "claims applies to kind = \"jwt\", not \"basic\"",
    );
    assert_error(
        &with_auth(&format!(
            "[[auth]]\nname = \"a\"\n{jwt}\nrealm = 'say \"hi\"'\n"
        )),
        "'say",
        "invalid realm",
    );
}

#[test]
fn jwt_keys_are_checked() {
    let jwt = |rest: &str| with_auth(&format!("[[auth]]\nname = \"u\"\nkind = \"jwt\"\n{rest}\n"));
    assert_error(&jwt(""), "\"jwt\"", "a jwt auth needs its key");
    assert_error(
        &jwt(&format!("secret = \"{SECRET}\"\njwks = \"j.json\"")),
        "\"j.json\"",
        "give one of secret, public_key and jwks",
    );
    assert_error(
        &jwt("secret = \"short\""),
        "\"short\"",
        "secret has 5 bytes: an HMAC secret needs at least 32",
    );
    let s = format!("secret = \"{SECRET}\"\n");
    assert_error(
        &jwt(&format!("{s}algorithms = [\"HS256\", \"none\"]")),
        "\"none\"",
        "unknown algorithm \"none\": expected one of HS256, HS384, HS512, RS256",
    );
    assert_error(
        &jwt(&format!("{s}algorithms = [\"HS256\", \"RS256\"]")),
        "\"RS256\"",
        "algorithm \"RS256\" does not fit an HMAC secret",
    );
    assert_error(
        &jwt(&format!("{s}algorithms = [\"HS256\", \"HS256\"]")),
        "\"HS256\"]",
        "algorithm \"HS256\" listed twice",
    );
    assert_error(
        &jwt(&format!("{s}algorithms = []")),
        "[]",
        "algorithms is empty",
    );
    assert_error(
        &jwt(&format!("{s}leeway = \"2h\"")),
        "\"2h\"",
        "invalid leeway",
    );
    assert_error(
        &jwt(&format!("{s}leeway = \"1500ms\"")),
        "\"1500ms\"",
        "whole seconds",
    );
    assert_error(
        &jwt(&format!("{s}leeway = \"soon\"")),
        "\"soon\"",
        "invalid duration",
    );
    assert_error(
        &jwt(&format!("{s}issuer = \"\"")),
        "\"\"",
        "issuer must not be empty",
    );
    assert_error(
        &jwt(&format!("{s}required_claims = [\"sub\", \"sub\"]")),
        "\"sub\"]",
        "claim \"sub\" listed twice",
    );
    assert_error(
        &jwt(&format!("{s}claims = {{ level = 1.5 }}")),
        "1.5",
        "a string, an integer or a boolean",
    );
    assert_error(
        &jwt(&format!("{s}cookie = \"a b\"")),
        "\"a b\"",
        "invalid cookie name",
    );
    assert_error(
        &jwt(&format!(
            "{s}forward_claims = {{ sub = \"Content-Length\" }}"
        )),
        "\"Content-Length\"",
        "cannot carry a claim",
    );
    assert_error(
        &jwt(&format!("{s}forward_claims = {{ sub = \"X User\" }}")),
        "\"X User\"",
        "invalid header name",
    );
    assert_error(
        &jwt(&format!(
            "{s}forward_claims = {{ sub = \"X-U\", email = \"x-u\" }}"
        )),
        "\"x-u\"",
        "header \"x-u\" receives two claims",
    );
    assert_error(
        &jwt(&format!("{s}consumer_claim = \"\"")),
        "\"\"",
        "a claim name must not be empty",
    );
}

#[test]
fn key_files_are_read_and_their_errors_point_at_the_key() {
    let d = dir("files");
    let jwt = |key: &str, path: &str| {
        with_auth(&format!(
            "[[auth]]\nname = \"u\"\nkind = \"jwt\"\n{key} = \"{path}\"\n"
        ))
    };
    let missing = d.join("missing.pem").display().to_string();
    assert_error(
        &jwt("public_key", &missing),
        &format!("\"{missing}"),
        &format!("cannot read public_key {missing:?}: No such file or directory"),
    );
    let cert = rcgen::generate_simple_self_signed(vec!["x.example".into()]).unwrap();
    let cert_pem = file(&d, "cert.pem", &cert.cert.pem());
    assert_error(
        &jwt("public_key", &cert_pem),
        &format!("\"{cert_pem}"),
        &format!("public_key {cert_pem:?}: expected a PEM public key"),
    );
    let jwks = file(
        &d,
        "jwks.json",
        r#"{"keys": [{"kty": "EC", "kid": "k", "crv": "P-521", "x": "AA", "y": "AA"}]}"#,
    );
    assert_error(
        &jwt("jwks", &jwks),
        &format!("\"{jwks}"),
        &format!("jwks {jwks:?}: key 0 (kid \"k\"):"),
    );
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let rsa_pem = file(&d, "rsa.pem", &rsa.public_key_pem());
    let src = with_auth(&format!(
        "[[auth]]\nname = \"u\"\nkind = \"jwt\"\npublic_key = \"{rsa_pem}\"\nalgorithms = [\"PS256\", \"ES256\"]\n"
    ));
    assert_error(
        &src,
        "\"ES256\"",
        "algorithm \"ES256\" does not fit an RSA key",
    );

    let api = |rest: &str| {
        with_auth(&format!(
            "[[auth]]\nname = \"k\"\nkind = \"api_key\"\n{rest}\n"
        ))
    };
    let keys = file(&d, "keys.txt", "# keys\nk1 acme\n\nk1 other\n");
    assert_error(
        &api(&format!("header = \"X-Key\"\nkeys_file = \"{keys}\"")),
        &format!("\"{keys}"),
        &format!("keys_file {keys:?} line 4: duplicate key (also on line 2)"),
    );
    let empty = file(&d, "empty.txt", "# none yet\n");
    assert_error(
        &api(&format!("header = \"X-Key\"\nkeys_file = \"{empty}\"")),
        &format!("\"{empty}"),
        &format!("keys_file {empty:?}: holds no key"),
    );
    let good = file(&d, "good.txt", "k1\n");
    assert_error(
        &api(&format!("keys_file = \"{good}\"")),
        "\"api_key\"",
        "an api_key auth needs header, query or both",
    );
    assert_error(
        &api("header = \"X-Key\""),
        "\"api_key\"",
        "an api_key auth needs keys_file",
    );
    assert_error(
        &api(&format!("query = \"a&b\"\nkeys_file = \"{good}\"")),
        "\"a&b\"",
        "invalid query parameter name",
    );

    let basic = |path: &str| {
        with_auth(&format!(
            "[[auth]]\nname = \"b\"\nkind = \"basic\"\nhtpasswd = \"{path}\"\n"
        ))
    };
    let apr = file(
        &d,
        "apr",
        &format!("ok:{BCRYPT}\nold:$apr1$abcdefgh$5VEbMkemELfbhC5ck.U.z1\n"),
    );
    assert_error(
        &basic(&apr),
        &format!("\"{apr}"),
        &format!("htpasswd {apr:?} line 2: user \"old\": unsupported password hash $apr1$: use bcrypt ($2y$, htpasswd -B), {{SHA}} (htpasswd -s)"),
    );
    assert_error(
        &with_auth("[[auth]]\nname = \"b\"\nkind = \"basic\"\n"),
        "\"basic\"",
        "a basic auth needs htpasswd",
    );
}

#[test]
fn a_reload_reads_the_files_again() {
    let d = dir("reload");
    let keys = file(&d, "keys.txt", "first one\n");
    let src = with_auth(&format!(
        "[[auth]]\nname = \"k\"\nkind = \"api_key\"\nheader = \"X-Key\"\nkeys_file = \"{keys}\"\n"
    ));
    let describe = |s: &crate::config::Snapshot| s.auths[0].describe();
    assert!(describe(&parse("t.toml", &src).unwrap()).contains("1 keys"));
    std::fs::write(&keys, "first one\nsecond two\n").unwrap();
    assert!(describe(&parse("t.toml", &src).unwrap()).contains("2 keys"));
}
