use super::*;

fn route(name: &str, hosts: &[&str], path: &str, rewrite: Rewrite) -> Route {
    let hosts = hosts
        .iter()
        .map(|h| match h.strip_prefix('*') {
            Some(s) => HostPattern::Suffix(s.as_bytes().into()),
            None => HostPattern::Exact(h.as_bytes().into()),
        })
        .collect();
    let path = match path.strip_prefix('=') {
        Some(p) => PathMatch::Exact(p.as_bytes().into()),
        None => PathMatch::Prefix(path.as_bytes().into()),
    };
    Route {
        redirect_https: None,
        upgrades: Box::new([]),
        client_subjects: Box::new([]),
        connect: false,
        index: 0,
        name: name.into(),
        hosts,
        path,
        rewrite,
        upstream: Some(0),
        split: Box::new([]),
        conditions: None,
        policy: None,
        rate_limits: Box::new([]),
        consumer_limits: 0,
        access_log: Default::default(),
    }
}

fn table(routes: Vec<Route>) -> RouteTable {
    let routes = routes
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.index = i;
            r.upstream = Some(i);
            r
        })
        .collect();
    RouteTable::new(routes)
}

fn name<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
    t.find(host.as_bytes(), path.as_bytes()).map(|r| &*r.name)
}

#[test]
fn longest_prefix_wins_regardless_of_order() {
    let t = table(vec![
        route("root", &[], "/", Rewrite::None),
        route("api", &[], "/api/", Rewrite::None),
        route("api-v2", &[], "/api/v2/", Rewrite::None),
    ]);
    assert_eq!(name(&t, "", "/"), Some("root"));
    assert_eq!(name(&t, "", "/index.html"), Some("root"));
    assert_eq!(name(&t, "", "/api/"), Some("api"));
    assert_eq!(name(&t, "", "/api/v1/x"), Some("api"));
    assert_eq!(name(&t, "", "/api/v2/x"), Some("api-v2"));
    assert_eq!(name(&t, "", "/api"), Some("root"));
}

#[test]
fn exact_path_beats_prefix() {
    let t = table(vec![
        route("api", &[], "/api/", Rewrite::None),
        route("health", &[], "=/api/health", Rewrite::None),
    ]);
    assert_eq!(name(&t, "x", "/api/health"), Some("health"));
    assert_eq!(name(&t, "x", "/api/health/more"), Some("api"));
    assert_eq!(name(&t, "x", "/api/healt"), Some("api"));
}

#[test]
fn no_match_is_none() {
    let t = table(vec![route("api", &[], "/api/", Rewrite::None)]);
    assert_eq!(name(&t, "", "/other"), None);
    assert_eq!(name(&t, "", ""), None);
    let empty = table(vec![]);
    assert_eq!(name(&empty, "a", "/"), None);
    assert!(empty.is_empty());
}

#[test]
fn exact_host_case_insensitive_without_port_and_dot() {
    let t = table(vec![route("a", &["api.example.com"], "/", Rewrite::None)]);
    for host in [
        "api.example.com",
        "API.Example.COM",
        "api.example.com:8080",
        "api.example.com.",
        "Api.Example.Com.:443",
    ] {
        assert_eq!(name(&t, host, "/x"), Some("a"), "{host}");
    }
    for host in [
        "example.com",
        "xapi.example.com",
        "api.example.co",
        "",
        ":80",
    ] {
        assert_eq!(name(&t, host, "/x"), None, "{host}");
    }
}

#[test]
fn wildcard_matches_subdomains_only() {
    let t = table(vec![route("w", &["*.example.com"], "/", Rewrite::None)]);
    assert_eq!(name(&t, "a.example.com", "/"), Some("w"));
    assert_eq!(name(&t, "a.b.EXAMPLE.com:1", "/"), Some("w"));
    assert_eq!(name(&t, "example.com", "/"), None);
    assert_eq!(name(&t, "badexample.com", "/"), None);
    assert_eq!(name(&t, ".example.com", "/"), None);
}

#[test]
fn exact_host_beats_wildcard_beats_any() {
    let t = table(vec![
        route("any", &[], "/", Rewrite::None),
        route("wild", &["*.example.com"], "/", Rewrite::None),
        route("exact", &["api.example.com"], "/", Rewrite::None),
    ]);
    assert_eq!(name(&t, "api.example.com", "/"), Some("exact"));
    assert_eq!(name(&t, "www.example.com", "/"), Some("wild"));
    assert_eq!(name(&t, "other.org", "/"), Some("any"));
    assert_eq!(name(&t, "", "/"), Some("any"));
}

#[test]
fn host_group_beats_longer_prefix_of_a_less_specific_group() {
    let t = table(vec![
        route("any-api", &[], "/api/", Rewrite::None),
        route("exact-root", &["a.example.com"], "/", Rewrite::None),
    ]);
    assert_eq!(name(&t, "a.example.com", "/api/x"), Some("exact-root"));
    assert_eq!(name(&t, "b.example.com", "/api/x"), Some("any-api"));
}

#[test]
fn falls_through_to_less_specific_group_when_path_misses() {
    let t = table(vec![
        route("any", &[], "/", Rewrite::None),
        route("wild-static", &["*.example.com"], "/static/", Rewrite::None),
        route("exact-api", &["api.example.com"], "/api/", Rewrite::None),
    ]);
    assert_eq!(name(&t, "api.example.com", "/api/1"), Some("exact-api"));
    assert_eq!(
        name(&t, "api.example.com", "/static/x"),
        Some("wild-static")
    );
    assert_eq!(name(&t, "api.example.com", "/other"), Some("any"));
}

#[test]
fn longest_wildcard_suffix_first() {
    let t = table(vec![
        route("short", &["*.example.com"], "/", Rewrite::None),
        route("long", &["*.eu.example.com"], "/", Rewrite::None),
    ]);
    assert_eq!(name(&t, "x.eu.example.com", "/"), Some("long"));
    assert_eq!(name(&t, "x.us.example.com", "/"), Some("short"));
    assert_eq!(name(&t, "eu.example.com", "/"), Some("short"));
}

#[test]
fn route_with_several_hosts() {
    let t = table(vec![route(
        "multi",
        &["a.test", "b.test", "*.c.test"],
        "/",
        Rewrite::None,
    )]);
    for h in ["a.test", "b.test", "x.c.test"] {
        assert_eq!(name(&t, h, "/"), Some("multi"), "{h}");
    }
    assert_eq!(name(&t, "c.test", "/"), None);
}

#[test]
fn ipv6_host_literal() {
    let t = table(vec![route("v6", &["[::1]"], "/", Rewrite::None)]);
    assert_eq!(name(&t, "[::1]:8080", "/"), Some("v6"));
    assert_eq!(name(&t, "[::1]", "/"), Some("v6"));
    assert_eq!(name(&t, "[::2]", "/"), None);
}

#[test]
fn overlong_host_only_matches_any_host_routes() {
    let t = table(vec![
        route("any", &[], "/", Rewrite::None),
        route("exact", &["a.test"], "/", Rewrite::None),
    ]);
    let long = "a".repeat(300);
    assert_eq!(name(&t, &long, "/"), Some("any"));
}

#[test]
fn first_duplicate_wins() {
    let t = table(vec![
        route("first", &[], "/x/", Rewrite::None),
        route("second", &[], "/x/", Rewrite::None),
    ]);
    assert_eq!(name(&t, "", "/x/1"), Some("first"));
}

#[test]
fn route_knows_its_upstream() {
    let t = table(vec![
        route("a", &[], "/a/", Rewrite::None),
        route("b", &[], "/b/", Rewrite::None),
    ]);
    assert_eq!(t.find(b"", b"/b/x").unwrap().upstream, Some(1));
    assert_eq!(t.find(b"", b"/a/x").unwrap().index, 0);
    assert_eq!(t.routes().len(), 2);
}

fn rewritten(r: &Route, target: &str) -> String {
    String::from_utf8(r.rewrite(target.as_bytes()).to_vec()).unwrap()
}

#[test]
fn no_rewrite_borrows_the_target() {
    let r = route("a", &[], "/api/", Rewrite::None);
    let t = b"/api/x?y=1";
    let out = r.rewrite(t);
    assert!(out.prefix.is_empty());
    assert!(std::ptr::eq(out.rest, &t[..]));
}

#[test]
fn strip_prefix() {
    let r = route("a", &[], "/api", Rewrite::Strip);
    assert_eq!(rewritten(&r, "/api/users?x=1"), "/users?x=1");
    assert_eq!(rewritten(&r, "/api"), "/");
    assert_eq!(rewritten(&r, "/api?x=1"), "/?x=1");
    let r = route("a", &[], "/api/", Rewrite::Strip);
    assert_eq!(rewritten(&r, "/api/users"), "/users");
    assert_eq!(rewritten(&r, "/api/"), "/");
    let out = r.rewrite(b"/api//x");
    assert_eq!(out.prefix, b"");
    assert_eq!(out.rest, b"/x");
}

#[test]
fn replace_prefix() {
    let r = route("a", &[], "/api/", Rewrite::Replace((*b"/v2/").into()));
    assert_eq!(rewritten(&r, "/api/users?x"), "/v2/users?x");
    assert_eq!(rewritten(&r, "/api/"), "/v2/");
    let r = route("a", &[], "/api", Rewrite::Replace((*b"/v2/").into()));
    assert_eq!(rewritten(&r, "/api/users"), "/v2/users");
    let r = route("a", &[], "/api", Rewrite::Replace((*b"/v2").into()));
    assert_eq!(rewritten(&r, "/api/users"), "/v2/users");
    assert_eq!(rewritten(&r, "/api"), "/v2");
}

#[test]
fn rewrite_exact_path_replaces_whole_path() {
    let r = route("h", &[], "=/health", Rewrite::Replace((*b"/status").into()));
    assert_eq!(rewritten(&r, "/health?full=1"), "/status?full=1");
    let r = route("h", &[], "=/health", Rewrite::Strip);
    assert_eq!(rewritten(&r, "/health"), "/");
}

#[test]
fn rewrite_counts_escapes_in_the_matched_part_as_one_byte() {
    // The decision path `/api/users` matched `/api/`; the target as received spells the
    // separator `%2F`.
    let r = route("a", &[], "/api/", Rewrite::Strip);
    assert_eq!(rewritten(&r, "/api%2Fusers?x"), "/users?x");
    let r = route("a", &[], "/caf\u{e9}/", Rewrite::Replace((*b"/c/").into()));
    assert_eq!(rewritten(&r, "/caf%C3%A9/menu"), "/c/menu");
}

#[test]
fn a_thousand_prefixes_are_found_through_their_first_segment() {
    let mut routes = vec![
        route("root", &[], "/", Rewrite::None),
        route("short", &[], "/sv", Rewrite::None),
        route("svc7-exact", &[], "=/svc7/health", Rewrite::None),
    ];
    for i in 0..1000 {
        routes.push(route(
            &format!("svc{i}"),
            &[],
            &format!("/svc{i}/"),
            Rewrite::None,
        ));
        routes.push(route(
            &format!("svc{i}-v2"),
            &[],
            &format!("/svc{i}/v2/"),
            Rewrite::None,
        ));
    }
    let t = table(routes);
    assert_eq!(name(&t, "", "/svc7/x"), Some("svc7"));
    assert_eq!(name(&t, "", "/svc7/v2/x"), Some("svc7-v2"));
    assert_eq!(name(&t, "", "/svc999/v2/"), Some("svc999-v2"));
    assert_eq!(name(&t, "", "/svc7/health"), Some("svc7-exact"));
    // No route of the segment matches: the prefixes without a second slash decide.
    assert_eq!(name(&t, "", "/svc7"), Some("short"));
    assert_eq!(name(&t, "", "/svc1000/x"), Some("short"));
    assert_eq!(name(&t, "", "/other/x"), Some("root"));
}

#[test]
fn conditions_choose_among_routes_of_one_path() {
    let mut post = route("post", &[], "/api/", Rewrite::None);
    post.conditions = Some(Box::new(Conditions {
        methods: Box::new([(*b"POST").into()]),
        ..Conditions::default()
    }));
    let t = table(vec![
        post,
        route("any", &[], "/api/", Rewrite::None),
        route("root", &[], "/", Rewrite::None),
    ]);
    let view = |method: &'static [u8]| RequestView {
        method,
        path: b"/api/x",
        headers: &[],
        buf: b"",
        query: b"",
    };
    let find = |m: &'static [u8]| {
        let v = view(m);
        t.find_matching(b"", b"/api/x", &|c| c.admit(&v))
            .map(|r| &*r.name)
    };
    assert_eq!(find(b"POST"), Some("post"));
    assert_eq!(find(b"GET"), Some("any"));
    // Plain `find` never takes a route with conditions.
    assert_eq!(name(&t, "", "/api/x"), Some("any"));
}

#[test]
fn a_host_group_whose_routes_refuse_decides() {
    // `api.test` has a route for /admin/ that only admits POST: a GET to it gets no route,
    // rather than the any-host catch-all (the documented "first group with a route for the path
    // decides"); within the group a shorter prefix still catches it.
    let mut post = route("admin-post", &["api.test"], "/admin/", Rewrite::None);
    post.conditions = Some(Box::new(Conditions {
        methods: Box::new([(*b"POST").into()]),
        ..Conditions::default()
    }));
    let t = table(vec![
        post,
        route("www", &[], "/", Rewrite::None),
        route("other-host-root", &["other.test"], "/", Rewrite::None),
    ]);
    let find = |host: &str, m: &'static [u8]| {
        let v = RequestView {
            method: m,
            path: b"/admin/x",
            headers: &[],
            buf: b"",
            query: b"",
        };
        t.find_matching(host.as_bytes(), b"/admin/x", &|c| c.admit(&v))
            .map(|r| &*r.name)
    };
    assert_eq!(find("api.test", b"POST"), Some("admin-post"));
    assert_eq!(find("api.test", b"GET"), None);
    assert_eq!(find("other.test", b"GET"), Some("other-host-root"));
    assert_eq!(find("else.test", b"GET"), Some("www"));
}
