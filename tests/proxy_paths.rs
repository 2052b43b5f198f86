//! Path normalisation end to end: routes are decided on the decoded, normalised path, so dot
//! segments in any spelling cannot climb out of a prefix route; what the backend receives is the
//! path as sent when it needs no change, else the normalised one; broken escapes and paths above
//! the root are 400 and reach no backend.

mod common;

use common::*;

both_drivers!(dot_segments_cannot_leave_a_prefix_route);

/// The black-box report: a listener whose only route is `/sub/` served `/big.bin` through
/// `/sub/../big.bin` and its encoded spellings. Each must be 404 and reach no backend.
fn dot_segments_cannot_leave_a_prefix_route(driver: &str) {
    let backend = TestBackend::hello();
    let rest = upstream_toml("static", &[backend.port], "")
        + "[[routes]]\nname = \"sub\"\npath_prefix = \"/sub/\"\nupstream = \"static\"\n";
    let proxy = start_proxy(driver, "", &rest);
    for (method, target) in [
        ("GET", "/big.bin"),
        ("HEAD", "/sub/../big.bin"),
        ("HEAD", "/sub/%2e%2e/big.bin"),
        ("HEAD", "/sub/..%2fbig.bin"),
        ("GET", "/sub/../big.bin"),
        ("GET", "/sub/%2E%2e/big.bin"),
        ("GET", "/sub/.%2E/big.bin"),
        ("GET", "/sub/..%2Fbig.bin"),
        ("GET", "/sub/..%5cbig.bin"),
        ("GET", "/sub/..\\big.bin"),
        ("GET", "/sub//../big.bin"),
        ("GET", "/sub/./../big.bin"),
    ] {
        let mut c = Client::connect(proxy.addr);
        c.send(format!(
            "{method} {target} HTTP/1.1\r\nHost: files.test\r\n\r\n"
        ));
        let r = c.response_to(method);
        assert_eq!(r.status, 404, "{method} {target}: {r:?}");
    }
    // A request inside the route still works, and nothing else reached the backend.
    assert_eq!(get(proxy.addr, "files.test", "/sub/a.bin").status, 200);
    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(seen, ["/sub/a.bin"]);
}

/// Sends each `(path, _)` of `cases` on one connection through a proxy with `routes` in front
/// of one backend (upstream `app`), and checks that the backend received each `(_, path)`.
fn assert_forwarded(routes: &str, cases: &[(&str, &str)]) {
    let backend = TestBackend::hello();
    let rest = upstream_toml("app", &[backend.port], "") + routes;
    let proxy = start_proxy("io_uring", "", &rest);
    let mut c = Client::connect(proxy.addr);
    for (sent, _) in cases {
        c.send(get_req("a.test", sent, ""));
        assert_eq!(c.response().status, 200, "{sent}");
    }
    let got: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    let want: Vec<&str> = cases.iter().map(|(_, w)| *w).collect();
    assert_eq!(got, want);
}

/// Exact bytes on the backend side for each rule, on a catch-all route.
#[test]
fn the_backend_sees_the_path_as_sent_or_normalised() {
    // (sent, received by the backend)
    let cases = [
        ("/plain/path?q=1", "/plain/path?q=1"),
        ("//a//b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/%2E/b", "/a/b"),
        ("/a/b/%2e%2E/c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/api/projects/group%2Fname", "/api/projects/group%2Fname"),
        ("/api/projects/group%2fname/../x", "/api/projects/group/x"),
        ("/x/..%5cy", "/y"),
        ("/a%20b/%7Euser", "/a%20b/%7Euser"),
        ("/a%20b/./%7euser", "/a%20b/~user"),
        ("/a/%3b/./b", "/a/%3B/b"),
        ("/a/../b?x=/../y&z=%zz", "/b?x=/../y&z=%zz"),
        ("/.well-known/x", "/.well-known/x"),
    ];
    assert_forwarded("[[routes]]\nname = \"all\"\nupstream = \"app\"\n", &cases);
}

#[test]
fn broken_and_climbing_paths_are_400_and_reach_nothing() {
    let backend = TestBackend::hello();
    let rest = upstream_toml("app", &[backend.port], "")
        + "[[routes]]\nname = \"all\"\nupstream = \"app\"\n";
    let proxy = start_proxy("epoll", "", &rest);
    for target in [
        "/..",
        "/a/../..",
        "/%2e%2e/etc/passwd",
        "/..%2f..%2fetc/passwd",
        "/a/%zz",
        "/a/%",
        "/a/%4",
        "/a/%00/b",
        "/a#frag",
    ] {
        let mut c = Client::connect(proxy.addr);
        c.send(get_req("a.test", target, ""));
        let r = c.response();
        assert_eq!(r.status, 400, "{target}: {r:?}");
        assert!(r.closes(), "{target}");
        assert!(c.closed(), "{target}");
    }
    assert_eq!(backend.requests().len(), 0);
    assert_eq!(backend.conns(), 0);
}

#[test]
fn strip_prefix_applies_to_the_normalised_path() {
    let cases = [
        ("/api/users?q=1", "/users?q=1"),
        ("/api/./v1/%2e%2e/users?q", "/users?q"),
        ("/api//users", "/users"),
        ("/api%2Fusers", "/users"),
        ("/x/../api/users", "/users"),
    ];
    assert_forwarded(
        "[[routes]]\nname = \"api\"\npath_prefix = \"/api/\"\nstrip_prefix = true\nupstream = \"app\"\n",
        &cases,
    );
}

#[test]
fn a_path_normalised_out_of_a_prefix_route_is_404() {
    let backend = TestBackend::hello();
    let rest = upstream_toml("app", &[backend.port], "")
        + "[[routes]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"app\"\n";
    let proxy = start_proxy("io_uring", "", &rest);
    assert_eq!(get(proxy.addr, "a", "/api/../users").status, 404);
    assert_eq!(backend.requests().len(), 0);
}

#[test]
fn escaped_slashes_reject_and_decode_and_merge_slashes_off() {
    let backend = TestBackend::hello();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let text = format!(
        "[runtime]\nworkers = 1\npin = false\n\n\
         [[listeners]]\nname = \"reject\"\naddress = \"127.0.0.1:{p1}\"\nescaped_slashes = \"reject\"\n\n\
         [[listeners]]\nname = \"decode\"\naddress = \"127.0.0.1:{p2}\"\nescaped_slashes = \"decode\"\n\n\
         [[listeners]]\nname = \"raw\"\naddress = \"127.0.0.1:{p3}\"\nmerge_slashes = false\n\n{}\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream_toml("app", &[backend.port], "")
    );
    let proxy = Proxy::start(&text, p1, "info");
    let at = |p: u16| -> std::net::SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    assert_eq!(get(at(p1), "a", "/a%2Fb").status, 400);
    assert_eq!(get(at(p1), "a", "/a%5cb").status, 400);
    assert_eq!(get(at(p1), "a", "/a/b").status, 200);
    assert_eq!(get(at(p2), "a", "/a%2Fb").status, 200);
    assert_eq!(get(at(p3), "a", "/a//b").status, 200);
    assert_eq!(get(at(p3), "a", "/a//../b").status, 200);
    let got: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(got, ["/a/b", "/a/b", "/a//b", "/a/b"]);
    drop(proxy);
}
