//! Routing end to end, under both drivers: by host (exact, `*.suffix`, case and port ignored)
//! and longest path prefix or exact path, prefix stripping and replacing (the backend sees the
//! rewritten path with the query kept), absolute-form targets, round robin over the backends of
//! an upstream.

mod common;

use common::*;

both_drivers!(
    routes_by_host_and_longest_prefix_and_rewrites_the_path,
    absolute_form_target_is_routed_and_rewritten,
    round_robin_spreads_requests_over_backends,
);

fn routes_by_host_and_longest_prefix_and_rewrites_the_path(driver: &str) {
    let names = ["exact", "wild", "strip", "replace", "health", "default"];
    let backends: Vec<TestBackend> = names.iter().map(|_| TestBackend::hello()).collect();
    let mut rest = String::new();
    for (name, b) in names.iter().zip(&backends) {
        rest += &upstream_toml(name, &[b.port], "");
    }
    rest += r#"
[[routes]]
name = "exact"
hosts = ["api.example.com"]
upstream = "exact"

[[routes]]
name = "wild"
hosts = ["*.example.com"]
upstream = "wild"

[[routes]]
name = "strip"
path_prefix = "/static/"
strip_prefix = true
upstream = "strip"

[[routes]]
name = "replace"
path_prefix = "/static/img/"
replace_prefix = "/images/"
upstream = "replace"

[[routes]]
name = "health"
path_exact = "/health"
upstream = "health"

[[routes]]
name = "default"
upstream = "default"
"#;
    let proxy = start_proxy(driver, "", &rest);
    // (host, path, backend, path the backend sees)
    let cases = [
        ("api.example.com", "/x?y=1", "exact", "/x?y=1"),
        ("API.Example.COM:8080", "/static/a", "exact", "/static/a"),
        ("shop.example.com", "/static/a", "wild", "/static/a"),
        ("other.test", "/static/a/b?q=1&r=2", "strip", "/a/b?q=1&r=2"),
        ("other.test", "/static/", "strip", "/"),
        ("other.test", "/static/?q", "strip", "/?q"),
        (
            "other.test",
            "/static/img/cat.png?s=2",
            "replace",
            "/images/cat.png?s=2",
        ),
        ("other.test", "/staticx", "default", "/staticx"),
        ("other.test", "/health", "health", "/health"),
        ("other.test", "/health/deep", "default", "/health/deep"),
        ("other.test", "/", "default", "/"),
    ];
    let mut client = Client::connect(proxy.addr);
    for (host, path, _, _) in cases {
        client.send(get_req(host, path, ""));
        let r = client.response();
        assert_eq!(r.status, 200, "{host} {path}");
    }
    for (i, name) in names.iter().enumerate() {
        let want: Vec<(&str, &str)> = cases
            .iter()
            .filter(|c| c.2 == *name)
            .map(|c| (c.0, c.3))
            .collect();
        let got: Vec<(String, String)> = backends[i]
            .requests()
            .iter()
            .map(|r| (r.header("host").unwrap().to_string(), r.target.clone()))
            .collect();
        let got: Vec<(&str, &str)> = got.iter().map(|(h, t)| (h.as_str(), t.as_str())).collect();
        assert_eq!(got, want, "backend {name}");
    }
}

fn absolute_form_target_is_routed_and_rewritten(driver: &str) {
    let (a, b) = (TestBackend::hello(), TestBackend::hello());
    let rest = upstream_toml("a", &[a.port], "")
        + &upstream_toml("b", &[b.port], "")
        + "[[routes]]\nname = \"a\"\nhosts = [\"a.test\"]\nupstream = \"a\"\n\n\
           [[routes]]\nname = \"b\"\nupstream = \"b\"\n";
    let proxy = start_proxy(driver, "", &rest);
    let mut client = Client::connect(proxy.addr);
    // The authority in the target wins over the Host field (RFC 9112 §3.2.2).
    client.send("GET http://a.test/abs?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n");
    let r = client.response();
    assert_eq!((r.status, r.text().as_str()), (200, "backend saw /abs?q=1"));
    let reqs = a.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("host"), Some("a.test"));
    assert!(b.requests().is_empty());
}

fn round_robin_spreads_requests_over_backends(driver: &str) {
    let backends = [
        TestBackend::hello(),
        TestBackend::hello(),
        TestBackend::hello(),
    ];
    let ports: Vec<u16> = backends.iter().map(|b| b.port).collect();
    let rest = upstream_with("app", &ports, "balancer = \"round_robin\"")
        + "[[routes]]\nname = \"all\"\nupstream = \"app\"\n";
    let proxy = start_proxy(driver, "", &rest);
    let mut client = Client::connect(proxy.addr);
    for i in 0..30 {
        client.send(get_req("a", &format!("/{i}"), ""));
        assert_eq!(client.response().status, 200);
    }
    let counts: Vec<usize> = backends.iter().map(|b| b.requests().len()).collect();
    assert_eq!(counts, [10, 10, 10]);
    // Each backend's pooled connection carried all of its requests.
    assert!(backends.iter().all(|b| b.conns() == 1));
}
