use std::time::Duration;

use super::*;

/// The smallest valid config (the auth tests build on it too).
pub(super) const MINIMAL: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[[upstreams]]
name = "app"
backends = [ { address = "127.0.0.1:9000" } ]

[[routes]]
name = "all"
upstream = "app"
"#;

fn error_of(src: &str) -> (usize, usize, String) {
    let errs = parse("t.toml", src).expect_err("config accepted");
    let e = errs.first().clone();
    assert_eq!(e.file, "t.toml");
    (e.line, e.col, e.message)
}

#[test]
fn line_col_is_one_based_and_counts_characters() {
    let src = "ab\ncdé\nfg";
    assert_eq!(line_col(src, 0), (1, 1));
    assert_eq!(line_col(src, 1), (1, 2));
    assert_eq!(line_col(src, 3), (2, 1));
    assert_eq!(line_col(src, 8), (3, 1)); // 'é' is two bytes, one column
    assert_eq!(line_col(src, 7), (2, 4));
    assert_eq!(line_col(src, 1000), (3, 3));
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let s = parse("t.toml", MINIMAL).unwrap();
    let rt = &s.runtime;
    assert!(rt.workers >= 1 && rt.workers_auto);
    assert!(rt.pin);
    assert_eq!(rt.driver, DriverKind::Auto);
    assert_eq!(rt.ring_entries, 1024);
    assert_eq!(rt.ring_flags.names(), vec!["coop_taskrun"]);
    assert_eq!(rt.drain_timeout, Duration::from_secs(10));
    let l = &s.limits;
    assert_eq!(l.max_head_bytes, 32768);
    assert_eq!(l.max_headers, 100);
    assert_eq!(l.max_body_bytes, 16 << 20);
    assert_eq!(l.client_header_timeout, Duration::from_secs(10));
    assert_eq!(l.client_idle_timeout, Duration::from_secs(60));
    let u = &s.upstreams[0];
    assert_eq!(u.pool.max_idle, 64);
    assert_eq!(u.pool.idle_timeout, Duration::from_secs(60));
    assert_eq!(u.timeouts.connect, Duration::from_secs(2));
    assert_eq!(u.timeouts.response_head, Duration::from_secs(30));
    assert_eq!(u.timeouts.idle, Duration::from_secs(60));
    assert_eq!(u.backends[0].weight, 1);
    assert_eq!(u.backends[0].addr, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(s.listeners[0].name, "listener0");
    let r = s.listeners[0].routes.find(b"any", b"/x").unwrap();
    assert_eq!((&*r.name, r.upstream), ("all", Some(0)));
}

#[test]
fn listener_route_subset_and_rewrites_compile() {
    let src = r#"
[runtime]
workers = 3
driver = "epoll"
ring_flags = ["single_issuer", "defer_taskrun"]
drain_timeout = "0s"
[limits]
max_body_bytes = "1GiB"
max_head_bytes = 4096
[[listeners]]
name = "pub"
address = "127.0.0.1:8080"
routes = ["api"]
[[listeners]]
address = "127.0.0.1:8081"
[[upstreams]]
name = "a"
backends = [ { address = "localhost:9000", weight = 3 }, { address = "127.0.0.1:9001" } ]
[[routes]]
name = "api"
hosts = ["API.example.com", "*.example.org"]
path_prefix = "/api/"
replace_prefix = "/v2/"
upstream = "a"
[[routes]]
name = "health"
path_exact = "/health"
strip_prefix = true
upstream = "a"
"#;
    let s = parse("t.toml", src).unwrap();
    assert_eq!(s.runtime.workers, 3);
    assert!(!s.runtime.workers_auto);
    assert_eq!(s.runtime.driver, DriverKind::Epoll);
    assert_eq!(
        s.runtime.ring_flags.names(),
        vec!["single_issuer", "defer_taskrun"]
    );
    assert_eq!(s.runtime.drain_timeout, Duration::ZERO);
    assert_eq!(s.limits.max_body_bytes, 1 << 30);
    assert_eq!(s.limits.max_head_bytes, 4096);
    assert_eq!(s.upstreams[0].backends[0].weight, 3);
    assert!(s.upstreams[0].backends[0].addr.ip().is_loopback());
    let public = &s.listeners[0].routes;
    assert!(public.find(b"x.example.org", b"/health").is_none());
    let r = public.find(b"api.example.com:80", b"/api/x").unwrap();
    assert_eq!(r.rewrite(b"/api/x?q").to_vec(), b"/v2/x?q");
    let all = &s.listeners[1].routes;
    assert_eq!(&*all.find(b"", b"/health").unwrap().name, "health");
    assert!(s.summary().contains("pub 127.0.0.1:8080 -> routes [api]"));
}

#[test]
fn toml_syntax_error_has_position() {
    let (line, col, msg) = error_of("[runtime]\nworkers = \n");
    assert_eq!((line, col), (2, 11), "{msg}");
}

#[test]
fn unknown_field_points_at_the_key() {
    let src = MINIMAL.replace("name = \"all\"", "name = \"all\"\nmethod = \"GET\"");
    let (line, col, msg) = error_of(&src);
    assert_eq!((line, col), (11, 1), "{msg}");
    assert!(msg.contains("unknown field `method`"), "{msg}");
}

#[test]
fn bad_duration_points_at_the_value() {
    let src = format!("[runtime]\ndrain_timeout = \"10 s\"\n{MINIMAL}");
    let (line, col, msg) = error_of(&src);
    assert_eq!((line, col), (2, 17), "{msg}");
    assert!(msg.contains("invalid duration \"10 s\""), "{msg}");
}

#[test]
fn unknown_upstream_points_at_the_reference() {
    let src = MINIMAL.replace("upstream = \"app\"", "upstream = \"nope\"");
    let (line, col, msg) = error_of(&src);
    assert_eq!((line, col), (11, 12), "{msg}");
    assert_eq!(msg, "unknown upstream \"nope\"");
}

#[test]
fn missing_sections_are_reported_at_the_start() {
    let (line, col, msg) = error_of("");
    assert_eq!((line, col), (1, 1));
    assert!(msg.contains("listeners"), "{msg}");
}

#[test]
fn unreadable_file_says_so_without_a_position() {
    let e = load(Path::new("/nonexistent/coregate.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read /nonexistent/coregate.toml: No such file or directory"
    );
}

#[test]
fn every_semantic_error_is_reported_in_file_order() {
    let src = r#"
[[listeners]]
address = "127.0.0.1:0"
routes = ["all", "ghost"]
[[upstreams]]
name = "app"
backends = [ { address = "127.0.0.1:9000", weight = 0 }, { address = "nowhere" } ]
max_response_headers = 0
[[routes]]
name = "all"
path_prefix = "/a/../b"
upstream = "nope"
"#;
    let errs = parse("t.toml", src).unwrap_err();
    let got: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "t.toml:3:11: invalid listener address \"127.0.0.1:0\": port 0 is not allowed",
            "t.toml:4:18: unknown route \"ghost\"",
            "t.toml:7:53: invalid weight 0: must be from 1 to 65535",
            "t.toml:7:70: invalid backend address \"nowhere\": expected host:port",
            "t.toml:8:24: invalid max_response_headers 0: must be from 1 to 1024",
            "t.toml:11:15: invalid path_prefix \"/a/../b\": '.' and '..' segments never match (requests are routed on normalised paths)",
            "t.toml:12:12: unknown upstream \"nope\"",
        ]
    );
}

fn with_route_line(line: &str) -> String {
    MINIMAL.replace("name = \"all\"", &format!("name = \"all\"\n{line}"))
}

#[test]
fn host_patterns() {
    for ok in [
        "\"a.test\"",
        "\"*.a.test\"",
        "\"A-B_c.Test\"",
        "\"127.0.0.1\"",
        "\"[::1]\"",
        "\"localhost\"",
    ] {
        parse("t.toml", &with_route_line(&format!("hosts = [{ok}]")))
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "\"*\"",
        "\"*.\"",
        "\"a..b\"",
        "\".a\"",
        "\"a b\"",
        "\"a.test:80\"",
        "\"*.[::1]\"",
        "\"\"",
        "\"a.*.b\"",
    ] {
        let (line, col, msg) = error_of(&with_route_line(&format!("hosts = [{bad}]")));
        assert_eq!((line, col), (11, 10), "{bad}: {msg}");
        assert!(msg.starts_with("invalid host"), "{bad}: {msg}");
    }
    let (_, _, msg) = error_of(&with_route_line("hosts = [\"a.test\", \"A.TEST\"]"));
    assert_eq!(msg, "host \"A.TEST\" listed twice");
}

#[test]
fn paths_and_rewrites() {
    for bad in [
        "path_prefix = \"\"",
        "path_exact = \"x\"",
        "path_prefix = \"/a b\"",
        "path_prefix = \"/a?b\"",
        "replace_prefix = \"v2\"",
    ] {
        let (line, col, msg) = error_of(&with_route_line(bad));
        assert_eq!(line, 11, "{bad}: {msg}");
        assert!(col > 1 && msg.starts_with("invalid "), "{bad}: {msg}");
    }
    // strip_prefix = false with replace_prefix is fine: only true excludes it.
    let s = parse(
        "t.toml",
        &with_route_line("strip_prefix = false\nreplace_prefix = \"/v2/\""),
    )
    .unwrap();
    assert_eq!(
        s.routes[0].rewrite,
        crate::route::Rewrite::Replace((*b"/v2/").into())
    );
}

#[test]
fn numeric_ranges() {
    let cases = [
        ("[runtime]\nworkers = -1\n", "invalid workers -1"),
        (
            "[runtime]\nworkers = \"many\"\n",
            "invalid workers \"many\"",
        ),
        (
            "[runtime]\nring_entries = 65536\n",
            "invalid ring_entries 65536",
        ),
        (
            "[runtime]\nring_flags = [\"coop_taskrun\", \"coop_taskrun\"]\n",
            "ring flag listed twice",
        ),
        (
            "[limits]\nmax_head_bytes = 100\n",
            "invalid max_head_bytes 100",
        ),
        ("[limits]\nmax_headers = 0\n", "invalid max_headers 0"),
        ("[limits]\nmax_body_bytes = -5\n", "invalid size -5"),
        (
            "[limits]\nclient_idle_timeout = \"0s\"\n",
            "must be greater than zero",
        ),
    ];
    for (prefix, want) in cases {
        let (line, _, msg) = error_of(&format!("{prefix}{MINIMAL}"));
        assert_eq!(line, 2, "{prefix}: {msg}");
        assert!(msg.contains(want), "{prefix}: {msg}");
    }
    let (_, _, msg) = error_of(&MINIMAL.replace(
        "address = \"127.0.0.1:9000\"",
        "address = \"127.0.0.1:9000\", weight = 70000",
    ));
    assert!(msg.contains("invalid weight 70000"), "{msg}");
    let (_, _, msg) =
        error_of(&MINIMAL.replace("address = \"127.0.0.1:8080\"", "address = \"127.0.0.1:0\""));
    assert!(msg.contains("port 0 is not allowed"), "{msg}");
    let (_, _, msg) = error_of(&MINIMAL.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8080\"\nroutes = []",
    ));
    assert_eq!(msg, "routes is empty: omit it to serve every route");
}

#[test]
fn path_and_response_limit_keys() {
    let s = parse("t.toml", MINIMAL).unwrap();
    assert_eq!(s.listeners[0].path, crate::route::PathOptions::default());
    assert_eq!(s.upstreams[0].max_response_head, 64 * 1024);
    assert_eq!(s.upstreams[0].max_response_headers, 256);
    assert!(!s.limits.ignore_client_abort);
    assert_eq!(s.header_slots, 256);
    let src = MINIMAL
        .replace(
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\nmerge_slashes = false\nescaped_slashes = \"decode\"",
        )
        .replace(
            "backends = [ { address = \"127.0.0.1:9000\" } ]",
            "backends = [ { address = \"127.0.0.1:9000\" } ]\nmax_response_head_bytes = \"8KiB\"\nmax_response_headers = 500",
        );
    let src = format!("[limits]\nignore_client_abort = true\nmax_headers = 600\n{src}");
    let s = parse("t.toml", &src).unwrap();
    let p = s.listeners[0].path;
    assert!(!p.merge_slashes);
    assert_eq!(p.escaped_slashes, EscapedSlashes::Decode);
    assert_eq!(s.upstreams[0].max_response_head, 8192);
    assert_eq!(s.upstreams[0].max_response_headers, 500);
    assert!(s.limits.ignore_client_abort);
    assert_eq!(s.header_slots, 600);
    let (_, _, msg) = error_of(&MINIMAL.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8080\"\nescaped_slashes = \"drop\"",
    ));
    assert!(msg.contains("unknown variant `drop`"), "{msg}");
    let (_, _, msg) = error_of(&MINIMAL.replace(
        "backends = [ { address = \"127.0.0.1:9000\" } ]",
        "backends = [ { address = \"127.0.0.1:9000\" } ]\nmax_response_head_bytes = 100",
    ));
    assert_eq!(
        msg,
        "invalid max_response_head_bytes 100: must be from 1024 to 1MiB"
    );
}

#[test]
fn balancing_keys_are_checked() {
    let up = |lines: &str| {
        MINIMAL.replace(
            "backends = [ { address = \"127.0.0.1:9000\" } ]",
            &format!("backends = [ {{ address = \"127.0.0.1:9000\" }}, {{ address = \"127.0.0.1:9001\" }} ]\n{lines}"),
        )
    };
    let s = parse("t.toml", &up("")).unwrap();
    let u = &s.upstreams[0];
    assert_eq!(u.balancer, BalancerKind::P2c);
    assert!(u.health.is_none() && u.hash_on.is_none() && u.maglev.is_none());
    assert_eq!(
        (
            u.outlier.consecutive_failures,
            u.outlier.max_ejected_percent
        ),
        (5, 50)
    );
    assert_eq!(u.outlier.base_ejection, Duration::from_secs(30));
    assert_eq!(
        (
            u.retry.attempts,
            u.retry.budget_percent,
            u.retry.min_concurrent
        ),
        (2, 20, 3)
    );
    assert!(u.retry.on_connect && u.retry.on_reset && !u.retry.on_timeout);
    assert!(!u.retry.on_status(503));
    assert_eq!(
        (u.panic_threshold, u.max_connections, u.max_pending),
        (0, u32::MAX, 1024)
    );
    assert_eq!(s.runtime.sync_interval, Duration::from_millis(50));

    let s = parse(
        "t.toml",
        &up(
            "balancer = \"consistent_hash\"\nhash_on = \"header:X-User\"\ntable_size = 251\n\
             [upstreams.health]\npath = \"/hz\"\nexpect_status = \"200,204\"\n\
             [upstreams.retry]\non = [\"timeout\", \"503\"]",
        ),
    )
    .unwrap();
    let u = &s.upstreams[0];
    assert_eq!(u.hash_on, Some(HashOn::Header("x-user".into())));
    assert_eq!(u.maglev.as_ref().unwrap().len(), 251);
    let h = u.health.as_ref().unwrap();
    assert_eq!((h.path.as_deref(), h.rise, h.fall), (Some("/hz"), 2, 3));
    assert_eq!(h.expect, vec![(200, 200), (204, 204)]);
    assert!(u.retry.on_timeout && u.retry.on_status(503) && !u.retry.on_connect);

    for (lines, want) in [
        ("balancer = \"consistent_hash\"", "needs hash_on"),
        (
            "hash_on = \"client_ip\"",
            "hash_on applies to balancer = \"consistent_hash\" only",
        ),
        (
            "balancer = \"consistent_hash\"\nhash_on = \"query:x\"",
            "invalid hash_on \"query:x\"",
        ),
        (
            "balancer = \"consistent_hash\"\nhash_on = \"path\"\ntable_size = 65536",
            "invalid table_size 65536",
        ),
        ("balancer = \"hash\"", "unknown variant `hash`"),
        (
            "panic_threshold = 101",
            "invalid panic_threshold 101: must be from 0 to 100",
        ),
        ("max_connections = 0", "invalid max_connections 0"),
        (
            "[upstreams.health]\ninterval = \"1s\"",
            "needs path = \"/...\" (an HTTP check) or tcp = true",
        ),
        (
            "[upstreams.health]\npath = \"/\"\ntcp = true",
            "give path (an HTTP check) or tcp = true, not both",
        ),
        (
            "[upstreams.health]\npath = \"x\"",
            "invalid health path \"x\"",
        ),
        (
            "[upstreams.health]\ntcp = true\ninterval = \"1s\"\ntimeout = \"2s\"",
            "timeout must not be longer than interval",
        ),
        (
            "[upstreams.health]\ntcp = true\nexpect_status = \"2xx\"",
            "invalid expect_status \"2xx\"",
        ),
        ("[upstreams.health]\ntcp = true\nfall = 0", "invalid fall 0"),
        (
            "[upstreams.outlier]\nmax_ejected_percent = 200",
            "invalid max_ejected_percent 200",
        ),
        ("[upstreams.retry]\nattempts = 0", "invalid attempts 0"),
        (
            "[upstreams.retry]\non = [\"404\"]",
            "invalid retry condition \"404\"",
        ),
    ] {
        let (_, _, msg) = error_of(&up(lines));
        assert!(msg.contains(want), "{lines:?}: {msg}");
    }
    let (_, _, msg) = error_of(&MINIMAL.replace(
        "backends = [ { address = \"127.0.0.1:9000\" } ]",
        "backends = [ { address = \"127.0.0.1:9000\" }, { address = \"127.0.0.1:9000\" } ]",
    ));
    assert_eq!(msg, "backend \"127.0.0.1:9000\" listed twice");
    let (_, _, msg) = error_of(&format!("[runtime]\nsync_interval = \"1ms\"\n{MINIMAL}"));
    assert_eq!(msg, "invalid sync_interval: must be from 5ms to 10s");
}

#[test]
fn rate_limit_keys_are_checked() {
    let with = |limits: &str, route: &str| {
        format!(
            "{limits}\n{}",
            MINIMAL.replace(
                "upstream = \"app\"\n",
                &format!("upstream = \"app\"\n{route}\n")
            )
        )
    };
    let ok = "[[rate_limits]]\nname = \"l\"\nkey = \"header:X-Api-Key\"\nrate = 10";
    let s = parse("t.toml", &with(ok, "rate_limits = [\"l\"]")).unwrap();
    let l = &s.rate_limits[0];
    assert_eq!(l.key, LimitKey::Header("x-api-key".into()));
    assert_eq!(
        (l.rate, l.burst, l.status, l.max_keys),
        (10, 0, 429, 100_000)
    );
    assert_eq!(l.mode, LimitMode::Sync);
    assert_eq!(l.period, Duration::from_secs(1));
    assert_eq!(&*l.policy_field, "RateLimit-Policy: \"l\";q=10;w=1\r\n");
    assert_eq!(&*s.routes[0].rate_limits, &[0]);
    assert!(s.summary().contains("rate limits [l]"));
    for (limits, route, want) in [
        (ok, "rate_limits = [\"m\"]", "unknown rate limit \"m\""),
        (
            ok,
            "rate_limits = [\"l\", \"l\"]",
            "rate limit \"l\" listed twice",
        ),
        (
            "[[rate_limits]]\nname = \"l\"\nkey = \"ip\"\nrate = 10",
            "",
            "invalid key \"ip\"",
        ),
        (
            "[[rate_limits]]\nname = \"l\"\nkey = \"route\"\nrate = 0",
            "",
            "invalid rate 0",
        ),
        (
            "[[rate_limits]]\nname = \"l\"\nkey = \"route\"\nrate = 1\nstatus = 200",
            "",
            "invalid status 200",
        ),
        (
            "[[rate_limits]]\nname = \"l\"\nkey = \"route\"\nrate = 1\nmode = \"redis\"",
            "",
            "has mode = \"redis\" but there is no [redis] table",
        ),
        (
            "[[rate_limits]]\nname = \"l\"\nkey = \"route\"\nrate = 1\nmode = \"fast\"",
            "",
            "unknown variant `fast`",
        ),
        (
            "[redis]\nurl = \"http://x\"",
            "",
            "invalid redis url \"http://x\"",
        ),
    ] {
        let (_, _, msg) = error_of(&with(limits, route));
        assert!(msg.contains(want), "{limits:?} {route:?}: {msg}");
    }
}

#[test]
fn access_logs_are_gathered_per_file() {
    let src = r#"
[[listeners]]
name = "main"
address = "127.0.0.1:8080"
access_log = { path = "/var/log/coregate/access.log" }

[[listeners]]
name = "other"
address = "127.0.0.1:8081"
access_log = { path = "/var/log/coregate/access.log" }

[[upstreams]]
name = "app"
backends = [ { address = "127.0.0.1:9000" } ]

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "app"
access_log = { path = "/var/log/coregate/api.json", format = "json", buffer = "16KiB", flush = "200ms" }

[[routes]]
name = "health"
path_exact = "/health"
upstream = "app"
access_log = "off"

[[routes]]
name = "all"
upstream = "app"
"#;
    let s = parse("t.toml", src).unwrap();
    assert_eq!(s.access_logs.len(), 2, "one entry per file");
    let main = &s.access_logs[s.listeners[0].access_log.unwrap()];
    assert_eq!(
        &*main.path,
        std::path::Path::new("/var/log/coregate/access.log")
    );
    assert_eq!(main.format, LogFormat::Combined);
    assert_eq!(main.buffer, 64 * 1024);
    assert_eq!(main.flush, Duration::from_secs(1));
    assert_eq!(s.listeners[1].access_log, s.listeners[0].access_log);
    assert!(s.listeners.iter().all(|l| l.logs_any));
    use crate::route::LogChoice;
    let api = &s.routes[0];
    let LogChoice::To(i) = api.access_log else {
        panic!("{:?}", api.access_log)
    };
    assert_eq!(s.access_logs[i].format, LogFormat::Json);
    assert_eq!(s.access_logs[i].buffer, 16 * 1024);
    assert_eq!(s.access_logs[i].flush, Duration::from_millis(200));
    assert_eq!(s.routes[1].access_log, LogChoice::Off);
    assert_eq!(s.routes[2].access_log, LogChoice::Listener);
    let summary = s.summary();
    assert!(
        summary.contains("access_log = /var/log/coregate/access.log (combined"),
        "{summary}"
    );
    assert!(
        summary.contains("health: any host, exact /health, access_log off"),
        "{summary}"
    );

    // Without any log, nothing is kept per request.
    let s = parse("t.toml", MINIMAL).unwrap();
    assert!(s.access_logs.is_empty() && !s.listeners[0].logs_any);
}

#[test]
fn access_log_keys_are_checked() {
    let with = |listener: &str, route: &str| {
        MINIMAL
            .replace(
                "address = \"127.0.0.1:8080\"",
                &format!("address = \"127.0.0.1:8080\"\n{listener}"),
            )
            .replace(
                "upstream = \"app\"",
                &format!("upstream = \"app\"\n{route}"),
            )
    };
    for (listener, route, line, col, message) in [
        (
            "access_log = { path = \"access.log\" }",
            "",
            4,
            23,
            "access_log path \"access.log\" must be absolute",
        ),
        (
            "access_log = { path = \"/tmp/a.log\", format = \"xml\" }",
            "",
            4,
            46,
            "unknown variant `xml`, expected `combined` or `json`",
        ),
        (
            "access_log = \"on\"",
            "",
            4,
            14,
            "invalid access_log \"on\": give a table { path = \"...\" } or \"off\"",
        ),
        (
            "access_log = { path = \"/tmp/a.log\", buffer = 100 }",
            "",
            4,
            46,
            "invalid access_log buffer 100: must be from 4KiB to 16MiB",
        ),
        (
            "access_log = { path = \"/tmp/a.log\", flush = \"2m\" }",
            "",
            4,
            45,
            "access_log flush must be between 10ms and 60s",
        ),
        (
            "access_log = { path = \"/tmp/a.log\", colour = true }",
            "",
            4,
            37,
            "unknown field `colour`, expected one of `path`, `format`, `buffer`, `flush`",
        ),
        (
            "access_log = { path = \"/tmp/a.log\" }",
            "access_log = { path = \"/tmp/a.log\", format = \"json\" }",
            4,
            14,
            "access log /tmp/a.log is given elsewhere with another format, buffer or flush",
        ),
    ] {
        let (l, c, m) = error_of(&with(listener, route));
        assert_eq!(
            (l, c, m.as_str()),
            (line, col, message),
            "{listener} / {route}"
        );
    }
}

#[test]
fn admin_keys_are_checked() {
    let with = |admin: &str| format!("{MINIMAL}\n[admin]\n{admin}\n");
    let s = parse("t.toml", &with("address = \"127.0.0.1:9901\"")).unwrap();
    let a = s.admin.as_ref().unwrap();
    assert_eq!(a.addr, "127.0.0.1:9901".parse().unwrap());
    assert!(a.token.is_none());
    assert!(!format!("{a:?}").contains("s3cret"));
    let s = parse(
        "t.toml",
        &with("address = \"0.0.0.0:9901\"\ntoken = \"s3cret\""),
    )
    .unwrap();
    let a = s.admin.as_ref().unwrap();
    assert_eq!(a.token.as_deref(), Some("s3cret"));
    assert!(
        !format!("{a:?}").contains("s3cret"),
        "the token is redacted"
    );
    assert!(!s.summary().contains("s3cret"));

    let dir = std::env::temp_dir().join(format!("coregate-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "  from-file\n").unwrap();
    let s = parse(
        "t.toml",
        &with(&format!(
            "address = \"0.0.0.0:9901\"\ntoken_file = \"{}\"",
            file.display()
        )),
    )
    .unwrap();
    assert_eq!(s.admin.unwrap().token.as_deref(), Some("from-file"));
    let _ = std::fs::remove_dir_all(&dir);

    for (admin, col, message) in [
        (
            "address = \"0.0.0.0:9901\"",
            11,
            "admin address 0.0.0.0:9901 is not loopback: give token or token_file (anyone who reaches it could change the proxy)",
        ),
        (
            "address = \"127.0.0.1:9901\"\ntoken = \"\"",
            9,
            "token must not be empty",
        ),
        (
            "address = \"127.0.0.1:9901\"\ntoken = \"a\"\ntoken_file = \"/x\"",
            9,
            "give token or token_file, not both",
        ),
        (
            "address = \"127.0.0.1:9901\"\ntoken_file = \"/nonexistent/coregate-token\"",
            14,
            "cannot read token_file \"/nonexistent/coregate-token\": No such file or directory (os error 2)",
        ),
    ] {
        let (_, c, m) = error_of(&with(admin));
        assert_eq!((c, m.as_str()), (col, message), "{admin}");
    }
}
