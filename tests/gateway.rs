//! The API-gateway features of a route, end to end with real backends: header `set` / `add` /
//! `remove` with variables on both sides, regex path rewrite, query changes, Host rewrite,
//! `X-Request-Id`, routing by method / header / query / `path_regex`, the weighted `split`,
//! CORS, static `return`, and request aggregation. Every rule is checked on the exact bytes the
//! backend or the client received.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

both_drivers!(transforms_rewrite_the_exact_bytes);

fn transforms_rewrite_the_exact_bytes(driver: &str) {
    let b = TestBackend::start(|r| {
        Reply::ok(format!("saw {}", r.target))
            .header("X-Internal", "secret")
            .header("Server", "app/1.0")
            .header("X-Kept", "yes")
    });
    let rest = upstream_toml("app", &[b.port], "")
        + r#"
[[routes]]
name = "users"
path_prefix = "/users/"
path_rewrite = { regex = "^/users/([0-9]+)/profile$", replace = "/v2/profiles/$1" }
query = { set = { source = "gw $route" }, remove = ["debug", "token"] }
host_rewrite = "profiles.internal"
upstream = "app"
[routes.request_headers]
set = { "X-Client" = "$client_ip", "X-Env" = "prod" }
add = { "X-Via" = "coregate $method $host$uri ?$args", "X-Lang" = "$http_accept_language", "X-Page" = "$arg_page" }
remove = ["X-Debug", "Cookie"]
[routes.response_headers]
set = { "Server" = "coregate" }
add = { "X-Upstream" = "$upstream_addr", "X-Status" = "$status", "X-Route" = "$route for $client_ip" }
remove = ["X-Internal"]
"#;
    let p = start_proxy(driver, "", &rest);
    let r = send(
        p.addr,
        "GET /users/42/profile?page=3&debug=1&token=x&keep=a%20b HTTP/1.1\r\nHost: API.example.com:8080\r\n\
         X-Env: dev\r\nX-Debug: 1\r\nCookie: a=b\r\nAccept-Language: de\r\nX-Other: o\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = b.wait_requests(1).remove(0);
    assert_eq!(
        seen.target,
        "/v2/profiles/42?page=3&keep=a%20b&source=gw%20users"
    );
    assert_eq!(seen.header("Host"), Some("profiles.internal"));
    assert_eq!(
        seen.header("X-Forwarded-Host"),
        Some("API.example.com:8080")
    );
    assert_eq!(seen.header("X-Client"), Some("127.0.0.1"));
    assert_eq!(seen.all("X-Env"), vec!["prod"]);
    assert_eq!(
        seen.header("X-Via"),
        Some("coregate GET API.example.com/users/42/profile ?page=3&debug=1&token=x&keep=a%20b")
    );
    assert_eq!(seen.header("X-Lang"), Some("de"));
    assert_eq!(seen.header("X-Page"), Some("3"));
    assert_eq!(seen.header("X-Debug"), None);
    assert_eq!(seen.header("Cookie"), None);
    assert_eq!(seen.header("X-Other"), Some("o"));

    assert_eq!(r.values("Server"), vec!["coregate"]);
    assert!(r.values("X-Internal").is_empty(), "{}", r.head);
    assert_eq!(r.values("X-Kept"), vec!["yes"]);
    assert_eq!(
        r.values("X-Upstream"),
        vec![format!("127.0.0.1:{}", b.port)]
    );
    assert_eq!(r.values("X-Status"), vec!["200"]);
    assert_eq!(r.values("X-Route"), vec!["users for 127.0.0.1"]);

    // A path the regex does not match keeps its path (and still gets the query changes); a
    // variable without a value adds no field.
    let r = send(
        p.addr,
        "GET /users/me?token=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = b.wait_requests(2).remove(1);
    assert_eq!(seen.target, "/users/me?source=gw%20users");
    assert_eq!(seen.header("X-Lang"), None);
    assert_eq!(seen.header("X-Page"), None);
}

#[test]
fn request_ids_are_generated_or_propagated() {
    let b = TestBackend::hello();
    let dir = TempDir::new("reqid");
    let log = dir.0.join("access.log");
    let rest = upstream_toml("app", &[b.port], "")
        + &format!(
            r#"
[[routes]]
name = "ids"
path_prefix = "/ids/"
request_id = true
upstream = "app"
access_log = {{ path = "{}", format = "json", flush = "10ms" }}

[[routes]]
name = "plain"
upstream = "app"
"#,
            log.display()
        );
    let p = start_proxy("io_uring", "", &rest);
    let r = get(p.addr, "a", "/ids/1");
    let id = r.values("X-Request-Id");
    assert_eq!(id.len(), 1, "{}", r.head);
    let id = id[0].to_string();
    let seen = b.wait_requests(1).remove(0);
    assert_eq!(seen.header("X-Request-Id"), Some(id.as_str()));
    // UUIDv7: 8-4-4-4-12 hex, version 7, variant 10xx.
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id}"
    );
    assert!(
        parts[2].starts_with('7') && "89ab".contains(&parts[3][..1]),
        "{id}"
    );
    // Two requests, two ids.
    let r2 = get(p.addr, "a", "/ids/2");
    assert_ne!(r2.values("X-Request-Id"), vec![id.as_str()]);

    // A client's id goes on unchanged (once), and comes back.
    let r = send(
        p.addr,
        "GET /ids/3 HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-abc.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.values("X-Request-Id"), vec!["client-abc.1"]);
    let seen = b.wait_requests(3).remove(2);
    assert_eq!(seen.all("X-Request-Id"), vec!["client-abc.1"]);
    // The access log names the id that was forwarded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains("client-abc.1") {
        std::thread::sleep(Duration::from_millis(20));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    assert!(text.contains(&format!("\"request_id\":\"{id}\"")), "{text}");
    assert!(text.contains("\"request_id\":\"client-abc.1\""), "{text}");

    // A route without request_id adds nothing.
    let r = get(p.addr, "a", "/other");
    assert!(r.values("X-Request-Id").is_empty());
    assert_eq!(b.wait_requests(4)[3].header("X-Request-Id"), None);
}

#[test]
fn routes_by_method_header_query_and_path_regex() {
    let names = ["get", "canary-header", "beta-query", "regex", "fallback"];
    let backends: Vec<TestBackend> = names
        .iter()
        .map(|n| {
            let n = n.to_string();
            TestBackend::start(move |_| Reply::ok(n.clone()))
        })
        .collect();
    let mut rest = String::new();
    for (n, b) in names.iter().zip(&backends) {
        rest += &upstream_toml(n, &[b.port], "");
    }
    rest += r#"
[[routes]]
name = "canary-header"
path_prefix = "/api/"
match_headers = [{ name = "X-Canary", exact = "1" }, { name = "Authorization", present = false }]
upstream = "canary-header"

[[routes]]
name = "beta-query"
path_prefix = "/api/"
match_query = [{ name = "beta version", regex = "^v[0-9]+$" }]
upstream = "beta-query"

[[routes]]
name = "regex"
path_prefix = "/api/"
path_regex = "^/api/items/[0-9]+$"
methods = ["GET", "HEAD"]
upstream = "regex"

[[routes]]
name = "get"
path_prefix = "/api/"
methods = ["GET"]
match_headers = [{ name = "user-agent", prefix = "curl/" }]
upstream = "get"

[[routes]]
name = "fallback"
path_prefix = "/api/"
upstream = "fallback"
"#;
    let p = start_proxy("io_uring", "", &rest);
    let body = |method: &str, target: &str, extra: &str| {
        let r = send(
            p.addr,
            &format!("{method} {target} HTTP/1.1\r\nHost: a\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 200, "{method} {target}: {r:?}");
        String::from_utf8(r.body).unwrap()
    };
    assert_eq!(body("GET", "/api/x", "X-Canary: 1\r\n"), "canary-header");
    assert_eq!(
        body("GET", "/api/x", "X-Canary: 1\r\nAuthorization: x\r\n"),
        "fallback"
    );
    assert_eq!(body("GET", "/api/x", "X-Canary: 2\r\n"), "fallback");
    assert_eq!(body("GET", "/api/x?beta%20version=v12", ""), "beta-query");
    assert_eq!(body("GET", "/api/x?beta+version=v12&a=1", ""), "beta-query");
    assert_eq!(body("GET", "/api/x?beta%20version=12", ""), "fallback");
    assert_eq!(body("GET", "/api/items/17", ""), "regex");
    assert_eq!(body("POST", "/api/items/17", ""), "fallback");
    // The regex sees the normalised path.
    assert_eq!(body("GET", "/api/x/../items/%31%37", ""), "regex");
    assert_eq!(
        body("GET", "/api/items/17/x", "User-Agent: curl/8\r\n"),
        "get"
    );
    assert_eq!(
        body("PUT", "/api/items/17/x", "User-Agent: curl/8\r\n"),
        "fallback"
    );
}

#[test]
fn split_sends_the_configured_share_to_each_upstream() {
    let v1 = TestBackend::start(|_| Reply::ok("v1"));
    let v2 = TestBackend::start(|_| Reply::ok("v2"));
    let rest = upstream_toml("v1", &[v1.port], "")
        + &upstream_toml("v2", &[v2.port], "")
        + r#"
[[routes]]
name = "canary"
split = [{ upstream = "v1", weight = 90 }, { upstream = "v2", weight = 10 }]
"#;
    let p = start_proxy("io_uring", "", &rest);
    let mut s = connect(p.addr);
    let n = 10_000;
    let mut counts = [0usize; 2];
    // Pipelined in batches of 100 over one keep-alive connection; the answers are read off one
    // buffer (each is `HTTP/1.1 200 OK ... content-length: 2\r\n\r\nv1` or `v2`).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    for _ in 0..n / 100 {
        let batch = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n".repeat(100);
        s.write_all(batch.as_bytes()).unwrap();
        let mut answered = 0;
        while answered < 100 {
            match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) if buf.len() >= end + 6 => {
                    assert!(
                        buf.starts_with(b"HTTP/1.1 200 "),
                        "{:?}",
                        String::from_utf8_lossy(&buf)
                    );
                    counts[(&buf[end + 4..end + 6] == b"v2") as usize] += 1;
                    buf.drain(..end + 6);
                    answered += 1;
                }
                _ => {
                    let got = std::io::Read::read(&mut s, &mut chunk).unwrap();
                    assert!(got > 0, "closed after {answered} answers of a batch");
                    buf.extend_from_slice(&chunk[..got]);
                }
            }
        }
    }
    let share = counts[1] as f64 / n as f64;
    assert!(
        (share - 0.10).abs() <= 0.02,
        "v2 got {share} of {n} ({counts:?})"
    );
    assert_eq!(counts[0] + counts[1], n);
}

#[test]
fn cors_answers_preflights_and_marks_responses() {
    let b = TestBackend::start(|_| Reply::ok("data").header("Access-Control-Allow-Origin", "*"));
    let rest = upstream_toml("app", &[b.port], "")
        + r#"
[[routes]]
name = "api"
upstream = "app"
cors = { origins = ["https://app.example"], methods = ["GET", "POST"], expose_headers = ["X-Total"], credentials = true, max_age = "10m" }
"#;
    let p = start_proxy("io_uring", "", &rest);
    let r = send(
        p.addr,
        "OPTIONS /items HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type, x-api-key\r\n\r\n",
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.head,
        "http/1.1 204 no content\r\naccess-control-allow-origin: https://app.example\r\nvary: origin\r\n\
         access-control-allow-credentials: true\r\naccess-control-allow-methods: get, post\r\n\
         access-control-allow-headers: content-type, x-api-key\r\naccess-control-max-age: 600\r\n\r\n"
    );
    // Another origin's preflight is refused; neither reaches the backend.
    let r = send(
        p.addr,
        "OPTIONS /items HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\n\
         Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 403);
    assert!(b.requests().is_empty());
    // An actual request from the allowed origin: forwarded, and the route's CORS fields replace
    // the backend's.
    let r = send(
        p.addr,
        "GET /items HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.values("Access-Control-Allow-Origin"),
        vec!["https://app.example"]
    );
    assert_eq!(r.values("Access-Control-Expose-Headers"), vec!["x-total"]);
    assert_eq!(r.values("Vary"), vec!["origin"]);
    // From another origin: forwarded without CORS fields (the browser keeps the answer from
    // the page), and the backend's own are dropped too.
    let r = send(
        p.addr,
        "GET /items HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.values("Access-Control-Allow-Origin").is_empty(),
        "{}",
        r.head
    );
    assert_eq!(b.requests().len(), 2);
}

#[test]
fn return_answers_without_a_backend() {
    let rest = upstream_toml("app", &[free_port()], "")
        + r#"
[[routes]]
name = "moved"
path_prefix = "/old/"
return = { status = 301, location = "https://$host/new$uri?$args" }

[[routes]]
name = "teapot"
path_exact = "/tea"
return = { status = 418, body = "short and stout: $http_x_name\n", content_type = "text/plain; charset=utf-8" }

[[routes]]
name = "rest"
upstream = "app"
"#;
    let p = start_proxy("io_uring", "", &rest);
    let mut s = connect(p.addr);
    s.write_all(b"GET /old/page?a=1 HTTP/1.1\r\nHost: www.example.com:8080\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!(
        r.head,
        "http/1.1 301 moved permanently\r\nlocation: https://www.example.com/new/old/page?a=1\r\ncontent-length: 0\r\n\r\n"
    );
    // Same connection (kept alive).
    s.write_all(b"GET /tea HTTP/1.1\r\nHost: a\r\nX-Name: Bob\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 418);
    assert_eq!(r.body, b"short and stout: Bob\n");
    assert_eq!(r.values("Content-Type"), vec!["text/plain; charset=utf-8"]);
    s.write_all(b"HEAD /tea HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.starts_with("HTTP/1.1 418 ") && text.ends_with("\r\n\r\n"),
        "{text}"
    );
}

/// A JSON backend answering after `delay`.
fn json_backend(body: &'static str, delay: Duration) -> TestBackend {
    TestBackend::start(move |r| {
        Reply::ok(body.replace("PATH", &r.target))
            .header("Content-Type", "application/json")
            .delay(delay)
    })
}

#[test]
fn aggregate_merges_parts_in_the_time_of_the_slowest() {
    let users = json_backend(r#"{"id":7,"path":"PATH"}"#, Duration::from_millis(100));
    let orders = json_backend(r#"[{"n":1},{"n":2}]"#, Duration::from_millis(300));
    let flags = json_backend(
        r#"{"beta":true,"theme":"dark"}"#,
        Duration::from_millis(200),
    );
    let rest = upstream_toml("users", &[users.port], "")
        + &upstream_toml("orders", &[orders.port], "")
        + &upstream_toml("flags", &[flags.port], "")
        + r#"
[[routes]]
name = "dashboard"
path_prefix = "/dashboard/"
path_regex = "^/dashboard/(?P<user>[0-9]+)$"
request_id = true
aggregate = [
  { key = "user", upstream = "users", path = "/users/${user}?$args" },
  { key = "orders", upstream = "orders", path = "/orders?user=$1" },
  { upstream = "flags", path = "/flags" },
]
"#;
    let p = start_proxy("io_uring", "", &rest);
    let started = Instant::now();
    let r = send(
        p.addr,
        "GET /dashboard/7?full=1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: agg-1\r\nConnection: close\r\n\r\n",
    );
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        String::from_utf8(r.body.clone()).unwrap(),
        r#"{"beta":true,"orders":[{"n":1},{"n":2}],"theme":"dark","user":{"id":7,"path":"/users/7?full=1"}}"#
    );
    assert_eq!(r.values("Content-Type"), vec!["application/json"]);
    // Concurrent: about the slowest part (300 ms), not the sum (600 ms).
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(500),
        "took {took:?}"
    );
    let seen = orders.wait_requests(1).remove(0);
    assert_eq!(seen.target, "/orders?user=7");
    assert_eq!(seen.header("X-Request-Id"), Some("agg-1"));
    assert_eq!(seen.header("X-Forwarded-For"), Some("127.0.0.1"));
}

#[test]
fn aggregate_reports_failed_parts_or_fails_whole() {
    let ok = json_backend(r#"{"a":1}"#, Duration::ZERO);
    let slow = json_backend(r#"{"b":2}"#, Duration::from_millis(800));
    let broken = TestBackend::start(|_| Reply::new(500, Body::Length(b"oops".to_vec())));
    let rest = upstream_toml("ok", &[ok.port], "")
        + &upstream_toml("slow", &[slow.port], "")
        + &upstream_toml("broken", &[broken.port], "")
        + r#"
[[routes]]
name = "partial"
path_exact = "/partial"
aggregate = [
  { key = "a", upstream = "ok", path = "/a" },
  { key = "b", upstream = "slow", path = "/b", timeout = "200ms" },
  { key = "c", upstream = "broken", path = "/c" },
]

[[routes]]
name = "whole"
path_exact = "/whole"
aggregate_on_error = "fail"
aggregate = [
  { key = "a", upstream = "ok", path = "/a" },
  { key = "c", upstream = "broken", path = "/c" },
]
"#;
    let p = start_proxy("io_uring", "", &rest);
    let started = Instant::now();
    let r = get(p.addr, "a", "/partial");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body.clone()).unwrap(),
        r#"{"a":{"a":1},"errors":{"b":"timed out after 200 ms","c":"upstream answered 500"},"partial":true}"#
    );
    let r = get(p.addr, "a", "/whole");
    assert_eq!(r.status, 502);
}

#[test]
fn decoded_values_cannot_inject_fields_or_targets() {
    let b = TestBackend::hello();
    let rest = upstream_toml("app", &[b.port], "")
        + r#"
[[routes]]
name = "users"
path_prefix = "/u/"
path_regex = "^/u/(?P<name>[^/]+)$"
request_headers = { set = { "X-Name" = "${name}" } }
path_rewrite = { regex = "^/u/([^/]+)$", replace = "/users/$1" }
upstream = "app"

[[routes]]
name = "go"
path_prefix = "/go/"
path_regex = "(?s)^/go/(.+)$"
return = { status = 302, location = "/to/$1?from=$http_x_from" }
"#;
    let p = start_proxy("io_uring", "", &rest);
    // %0D%0A decodes to CR LF in the path the route sees: it must reach neither a field nor the
    // request line as such.
    let r = send(
        p.addr,
        "GET /u/a%0D%0AX-Evil:%201?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = b.wait_requests(1).remove(0);
    assert_eq!(seen.header("X-Name"), Some("a%0D%0AX-Evil: 1"));
    assert_eq!(seen.header("X-Evil"), None);
    assert_eq!(seen.target, "/users/a%0D%0AX-Evil:%201?x=1");
    assert!(b.garbage().is_empty());
    // The same through a Location: escaped for a target (no space, CR, LF, `?`, `&` or `#`
    // from a decoded value).
    let r = send(
        p.addr,
        "GET /go/x%0D%0ASet-Cookie:%20a=b%26c%3Fd HTTP/1.1\r\nHost: a\r\nX-From: me&you\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 302);
    assert_eq!(
        r.values("Location"),
        vec!["/to/x%0d%0aset-cookie:%20a%3db%26c%3fd?from=me%26you"]
    );
    assert!(r.values("Set-Cookie").is_empty(), "{}", r.head);
}

#[test]
fn path_rewrite_sees_the_normalised_path() {
    let b = TestBackend::hello();
    let rest = upstream_toml("app", &[b.port], "")
        + r#"
[[routes]]
name = "partners"
path_prefix = "/partner/"
path_rewrite = { regex = "^/partner/v1/(.*)$", replace = "/$1" }
upstream = "app"
"#;
    let p = start_proxy("io_uring", "", &rest);
    for target in [
        "/partner/v1/orders/7?a=1",
        "/partner/v%31/orders/7?a=1",
        "/partner/x/../v1//orders/7?a=1",
    ] {
        let r = get(p.addr, "a", target);
        assert_eq!(r.status, 200, "{target}");
    }
    let targets: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/orders/7?a=1"; 3]);
}

#[test]
fn cors_preflights_route_by_the_announced_method_and_refusals_carry_cors_fields() {
    let dir = TempDir::new("cors-auth");
    let keys = dir.write("keys.txt", "k1 acme\n");
    let b = TestBackend::hello();
    let rest = upstream_toml("app", &[b.port], "")
        + &format!(
            r#"
[[auth]]
name = "partners"
kind = "api_key"
header = "X-Api-Key"
keys_file = "{}"

[[routes]]
name = "writes"
methods = ["POST"]
auth = "partners"
request_id = true
cors = {{ origins = ["https://app.example"], headers = ["X-Api-Key", "Content-Type"] }}
upstream = "app"
"#,
            keys.display()
        );
    let p = start_proxy("io_uring", "", &rest);
    // The preflight for a POST reaches the POST route (its methods would refuse OPTIONS) and is
    // answered without credentials.
    let r = send(
        p.addr,
        "OPTIONS /items HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.values("Access-Control-Allow-Headers"),
        vec!["x-api-key, content-type"]
    );
    assert_eq!(r.values("X-Request-Id").len(), 1);
    // A refusal by the auth can be read by the page: CORS fields and the request id.
    let r = send(
        p.addr,
        "POST /items HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.values("Access-Control-Allow-Origin"),
        vec!["https://app.example"]
    );
    assert_eq!(r.values("X-Request-Id").len(), 1);
    assert!(b.requests().is_empty());
}
