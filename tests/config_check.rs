//! `coregate check` and `coregate run` on valid and invalid configs: every shipped config passes;
//! every invalid one exits 2 with exactly `file:line:col: message`.

mod common;

use std::process::Command;

use common::{check, TempDir, BIN};

#[test]
fn every_shipped_config_passes_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = check(&path);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(": OK"), "{stdout}");
        assert!(
            stdout.contains("listeners:") && stdout.contains("routes:"),
            "{stdout}"
        );
        n += 1;
    }
    assert!(n >= 1, "no config files found in {dir}");
}

#[test]
fn check_prints_a_summary_of_the_bundled_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/coregate.toml");
    let out = check(path.as_ref());
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("main 127.0.0.1:8080 -> routes [default]"), "{s}");
    assert!(
        s.contains("127.0.0.1:9000 = 127.0.0.1:9000 weight 1"),
        "{s}"
    );
    assert!(s.contains("ring_flags = [coop_taskrun]"), "{s}");
    assert!(s.contains("default: any host, prefix / -> app"), "{s}");
}

const BASE: &str = r#"[runtime]
workers = 2
drain_timeout = "5s"

[limits]
max_body_bytes = "1MiB"

[[listeners]]
name = "main"
address = "127.0.0.1:18080"

[[upstreams]]
name = "app"
backends = [ { address = "127.0.0.1:9000", weight = 2 } ]

[[routes]]
name = "api"
hosts = ["api.example.com"]
path_prefix = "/api/"
upstream = "app"
"#;

/// (what is tested, config text, line, column, message)
fn invalid_cases() -> Vec<(&'static str, String, usize, usize, String)> {
    let r = |from: &str, to: &str| {
        assert!(BASE.contains(from), "{from}");
        BASE.replacen(from, to, 1)
    };
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/config/certs");
    // The column of `needle` on line 11 (the paths' length depends on the checkout).
    let col = |text: &str, needle: &str| text.lines().nth(10).unwrap().find(needle).unwrap() + 1;
    let tls = |extra: &str| {
        r(
            "address = \"127.0.0.1:18080\"",
            &format!("address = \"127.0.0.1:18080\"\ntls = {{ certificates = [ {{ cert = \"{certs}/edge-ecdsa.pem\", key = \"{certs}/edge-ecdsa.key\" }} ]{extra} }}"),
        )
    };
    let mismatch = r(
        "address = \"127.0.0.1:18080\"",
        &format!("address = \"127.0.0.1:18080\"\ntls = {{ certificates = [ {{ cert = \"{certs}/edge-ecdsa.pem\", key = \"{certs}/edge-rsa.key\" }} ] }}"),
    );
    let suites = tls(", cipher_suites = [\"TLS_RSA_WITH_RC4_128_SHA\"]");
    let subject = tls(", client_subject_header = \"X-Client\"");
    let version = tls(", min_version = \"1.1\"");
    // Gateway keys of the route: one more line after its `upstream` (line 21).
    let route = |extra: &str| {
        r(
            "upstream = \"app\"",
            &format!("upstream = \"app\"\n{extra}"),
        )
    };
    let col21 = |text: &str, needle: &str| text.lines().nth(20).unwrap().find(needle).unwrap() + 1;
    let unknown_var = route("request_headers = { set = { \"X-A\" = \"$nope\" } }");
    let host_set = route("request_headers = { set = { \"Host\" = \"a\" } }");
    let upstream_addr = route("request_headers = { add = { \"X-B\" = \"$upstream_addr\" } }");
    let bad_regex = route("path_regex = \"(\"");
    let unknown_auth = route("auth = \"nobody\"");
    let consumers = route("consumers = [\"acme\"]");
    let capture = route("path_regex = \"^/api/(x)$\"\nquery = { set = { a = \"$2\" } }");
    let split =
        route("split = [{ upstream = \"app\", weight = 1 }, { upstream = \"app\", weight = 1 }]");
    let redirect = r("upstream = \"app\"", "return = { status = 302 }");
    let any_credentials = route("cors = { origins = [\"*\"], credentials = true }");
    let consumer_limit = route("rate_limits = [\"c\"]")
        + "\n[[rate_limits]]\nname = \"c\"\nkey = \"consumer\"\nrate = 1\nperiod = \"1s\"\n";
    vec![
        (
            "CORS for any origin with credentials",
            any_credentials,
            21,
            20,
            "origins = [\"*\"] with credentials = true would let every site read credentialed answers: list the origins".into(),
        ),
        (
            "a consumer-keyed limit without auth",
            consumer_limit,
            17,
            8,
            "route \"api\" names a rate limit keyed by the consumer but no auth".into(),
        ),
        (
            "unknown template variable",
            unknown_var.clone(),
            21,
            col21(&unknown_var, "\"$nope"),
            "unknown variable $nope".into(),
        ),
        (
            "Host in request_headers",
            host_set.clone(),
            21,
            col21(&host_set, "\"Host"),
            "\"Host\" is managed by the proxy and cannot be transformed (use host_rewrite)".into(),
        ),
        (
            "$upstream_addr on the request",
            upstream_addr.clone(),
            21,
            col21(&upstream_addr, "\"$up"),
            "$upstream_addr is known once the response comes: use it in response_headers".into(),
        ),
        (
            "bad path_regex",
            bad_regex.clone(),
            21,
            14,
            "invalid path_regex \"(\": unclosed group".into(),
        ),
        (
            "unknown auth",
            unknown_auth,
            21,
            8,
            "unknown auth \"nobody\"".into(),
        ),
        (
            "consumers without auth",
            consumers,
            21,
            14,
            "consumers applies to a route with auth only".into(),
        ),
        (
            "capture the path_regex does not have",
            capture.clone(),
            22,
            capture.lines().nth(21).unwrap().find("\"$2").unwrap() + 1,
            "$2: path_regex has 1 capture group(s)".into(),
        ),
        (
            "split with upstream",
            split,
            20,
            12,
            "upstream and split exclude each other: give one".into(),
        ),
        (
            "redirect without location",
            redirect,
            20,
            21,
            "status = 302 needs a location".into(),
        ),
        (
            "missing certificate file",
            r(
                "address = \"127.0.0.1:18080\"",
                "address = \"127.0.0.1:18080\"\ntls = { certificates = [ { cert = \"/nonexistent/c.pem\", key = \"/nonexistent/c.key\" } ] }",
            ),
            11,
            35,
            "cannot read certificate file \"/nonexistent/c.pem\": No such file or directory (os error 2)".into(),
        ),
        (
            "a key that belongs to another certificate",
            mismatch.clone(),
            11,
            col(&mismatch, "key = ") + 6,
            String::new(),
        ),
        (
            "unknown cipher suite",
            suites.clone(),
            11,
            col(&suites, "[\"TLS_RSA") + 1,
            String::new(),
        ),
        (
            "client_subject_header without client_ca",
            subject.clone(),
            11,
            col(&subject, "\"X-Client"),
            "client_subject_header needs client_ca (no client is verified without it)".into(),
        ),
        (
            "bad TLS version",
            version.clone(),
            11,
            col(&version, "\"1.1\""),
            String::new(),
        ),
        (
            "sni without tls",
            r("name = \"app\"", "name = \"app\"\nsni = \"a.test\""),
            14,
            7,
            "this TLS setting needs tls = true on the upstream".into(),
        ),
        (
            "ca and insecure_skip_verify",
            r(
                "name = \"app\"",
                "name = \"app\"\ntls = true\nca = \"/etc/hostname\"\ninsecure_skip_verify = true",
            ),
            13,
            8,
            "give ca or insecure_skip_verify, not both".into(),
        ),
        (
            "a star inside a client subject pattern",
            r("upstream = \"app\"", "upstream = \"app\"\nclient_subjects = [\"CN=*admin*\"]"),
            21,
            20,
            "invalid client subject pattern \"CN=*admin*\": a subject, or a prefix ending in one '*'".into(),
        ),
        (
            "https_port without redirect_https",
            r("upstream = \"app\"", "upstream = \"app\"\nhttps_port = 8443"),
            21,
            14,
            "https_port applies with redirect_https = true only".into(),
        ),
        (
            "unknown field",
            r("workers = 2", "workers = 2\nthreads = 4"),
            3,
            1,
            "unknown field `threads`, expected one of `workers`, `pin`, `driver`, `ring_entries`, `ring_flags`, `drain_timeout`, `sync_interval`".into(),
        ),
        (
            "unknown table",
            format!("{BASE}\n[metrics]\nport = 1\n"),
            22,
            2,
            "unknown field `metrics`, expected one of `runtime`, `limits`, `listeners`, `upstreams`, `routes`, `rate_limits`, `auth`, `redis`, `admin`".into(),
        ),
        (
            "proxy_protocol not a bool",
            r("address = \"127.0.0.1:18080\"", "address = \"127.0.0.1:18080\"\nproxy_protocol = \"v2\""),
            11,
            18,
            "invalid type: string \"v2\", expected a boolean".into(),
        ),
        (
            "unknown PROXY protocol version",
            r("name = \"app\"", "name = \"app\"\nproxy_protocol = \"v3\""),
            14,
            18,
            "unknown variant `v3`, expected `v1` or `v2`".into(),
        ),
        (
            "bad duration",
            r("\"5s\"", "\"5 seconds\""),
            3,
            17,
            "invalid duration \"5 seconds\": unit must be one of ms, s, m, h".into(),
        ),
        (
            "duration unit",
            r("\"5s\"", "\"5d\""),
            3,
            17,
            "invalid duration \"5d\": unit must be one of ms, s, m, h".into(),
        ),
        (
            "bad size",
            r("\"1MiB\"", "\"1MB\""),
            6,
            18,
            "invalid size \"1MB\": unit must be one of B, KiB, MiB, GiB".into(),
        ),
        ("workers 0", r("workers = 2", "workers = 0"), 2, 11, "invalid workers 0: must be \"auto\" or an integer from 1 to 1024".into()),
        (
            "bad driver",
            r("workers = 2", "workers = 2\ndriver = \"kqueue\""),
            3,
            10,
            "unknown variant `kqueue`, expected one of `auto`, `io_uring`, `epoll`".into(),
        ),
        (
            "unknown ring flag",
            r("workers = 2", "workers = 2\nring_flags = [\"coop_taskrun\", \"iopoll\"]"),
            3,
            31,
            "unknown variant `iopoll`, expected one of `coop_taskrun`, `single_issuer`, `defer_taskrun`, `sqpoll`".into(),
        ),
        (
            "defer_taskrun without single_issuer",
            r("workers = 2", "workers = 2\nring_flags = [\"defer_taskrun\"]"),
            3,
            14,
            "ring flag \"defer_taskrun\" requires \"single_issuer\"".into(),
        ),
        (
            "sqpoll with coop_taskrun",
            r("workers = 2", "workers = 2\nring_flags = [\"sqpoll\", \"coop_taskrun\"]"),
            3,
            14,
            "ring flag \"sqpoll\" cannot be combined with \"coop_taskrun\" or \"defer_taskrun\" (the kernel rejects it)".into(),
        ),
        (
            "ring entries",
            r("workers = 2", "workers = 2\nring_entries = 64"),
            3,
            16,
            "invalid ring_entries 64: must be from 256 to 32768".into(),
        ),
        (
            "bad listener address",
            r("127.0.0.1:18080", "127.0.0.1:80800"),
            10,
            11,
            "invalid listener address \"127.0.0.1:80800\": expected host:port with a port from 1 to 65535".into(),
        ),
        (
            "listener address without port",
            r("127.0.0.1:18080", "127.0.0.1"),
            10,
            11,
            "invalid listener address \"127.0.0.1\": expected host:port".into(),
        ),
        (
            "unknown upstream",
            r("upstream = \"app\"", "upstream = \"ap\""),
            20,
            12,
            "unknown upstream \"ap\"".into(),
        ),
        (
            "unknown route on a listener",
            r("address = \"127.0.0.1:18080\"", "address = \"127.0.0.1:18080\"\nroutes = [\"api\", \"web\"]"),
            11,
            18,
            "unknown route \"web\"".into(),
        ),
        (
            "duplicate upstream name",
            format!("{BASE}\n[[upstreams]]\nname = \"app\"\nbackends = [ {{ address = \"127.0.0.1:9001\" }} ]\n"),
            23,
            8,
            "duplicate upstream name \"app\"".into(),
        ),
        (
            "duplicate route name",
            format!("{BASE}\n[[routes]]\nname = \"api\"\nupstream = \"app\"\n"),
            23,
            8,
            "duplicate route name \"api\"".into(),
        ),
        (
            "duplicate listener address",
            format!("{BASE}\n[[listeners]]\naddress = \"127.0.0.1:18080\"\n"),
            23,
            11,
            "duplicate listener address 127.0.0.1:18080".into(),
        ),
        (
            "both path_prefix and path_exact",
            r("path_prefix = \"/api/\"", "path_prefix = \"/api/\"\npath_exact = \"/api\""),
            20,
            14,
            "path_prefix and path_exact exclude each other: give one".into(),
        ),
        (
            "strip_prefix with replace_prefix",
            r("path_prefix = \"/api/\"", "path_prefix = \"/api/\"\nstrip_prefix = true\nreplace_prefix = \"/v2/\""),
            21,
            18,
            "strip_prefix and replace_prefix exclude each other: give one".into(),
        ),
        (
            "path without slash",
            r("path_prefix = \"/api/\"", "path_prefix = \"api/\""),
            19,
            15,
            "invalid path_prefix \"api/\": must start with '/'".into(),
        ),
        (
            "host with port",
            r("[\"api.example.com\"]", "[\"a.test\", \"api.example.com:8080\"]"),
            18,
            20,
            "invalid host \"api.example.com:8080\": expected a host name or \"*.suffix\" (hosts are matched without the port)".into(),
        ),
        (
            "weight 0",
            r("weight = 2", "weight = 0"),
            14,
            53,
            "invalid weight 0: must be from 1 to 65535".into(),
        ),
        (
            "no backends",
            r("[ { address = \"127.0.0.1:9000\", weight = 2 } ]", "[]"),
            14,
            12,
            "upstream \"app\" has no backends".into(),
        ),
        (
            "a route without a destination",
            r("upstream = \"app\"\n", ""),
            17,
            8,
            "route \"api\" names no upstream: give upstream, split, aggregate or return".into(),
        ),
        (
            "wrong type",
            r("workers = 2", "workers = 2\npin = \"yes\""),
            3,
            7,
            "invalid type: string \"yes\", expected a boolean".into(),
        ),
        (
            "same host and path twice",
            format!("{BASE}\n[[routes]]\nname = \"api2\"\nhosts = [\"API.example.com\"]\npath_prefix = \"/api/\"\nupstream = \"app\"\n"),
            25,
            15,
            "route \"api2\" has the same host and path as route \"api\" and could never match".into(),
        ),
        (
            "no listeners",
            BASE.replace("[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:18080\"\n", ""),
            1,
            1,
            "no [[listeners]]: at least one listener is required".into(),
        ),
        (
            "toml syntax",
            r("name = \"main\"", "name = \"main"),
            9,
            13,
            String::new(), // toml's own wording; position checked
        ),
    ]
}

#[test]
fn invalid_configs_exit_2_with_file_line_col() {
    let dir = TempDir::new("invalid");
    let mut failures = Vec::new();
    for (i, (what, text, line, col, message)) in invalid_cases().into_iter().enumerate() {
        let path = dir.write(&format!("case{i}.toml"), &text);
        let out = check(&path);
        let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        let prefix = format!("{}:{line}:{col}: ", path.display());
        let ok = out.status.code() == Some(2)
            && out.stdout.is_empty()
            && if message.is_empty() {
                stderr.starts_with(&prefix) && !stderr.contains('\n')
            } else {
                stderr == format!("{prefix}{message}")
            };
        if !ok {
            failures.push(format!(
                "{what}: status {:?}\n  want: {prefix}{message}\n  got:  {stderr}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn run_with_a_bad_config_exits_2_before_starting() {
    let dir = TempDir::new("run-bad");
    let path = dir.write("bad.toml", &BASE.replace("weight = 2", "weight = -1"));
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:14:53: invalid weight -1: must be from 1 to 65535",
            path.display()
        )
    );
}

#[test]
fn missing_config_file_exits_2_and_says_so() {
    for args in [&["check", "--config"][..], &["run", "--config"][..]] {
        let out = Command::new(BIN)
            .args(args)
            .arg("/nonexistent/dir/coregate.toml")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            "cannot read /nonexistent/dir/coregate.toml: No such file or directory",
            "{args:?}"
        );
    }
}

#[test]
fn every_semantic_error_is_reported_in_one_run() {
    // Three independent mistakes: all three are reported, in file order, exit 2.
    let dir = TempDir::new("many-errors");
    let text = BASE
        .replace("workers = 2", "workers = 2\nring_entries = 64")
        .replace("weight = 2", "weight = 0")
        .replace("upstream = \"app\"", "upstream = \"nope\"");
    let path = dir.write("many.toml", &text);
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    let p = path.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "{p}:3:16: invalid ring_entries 64: must be from 256 to 32768\n\
             {p}:15:53: invalid weight 0: must be from 1 to 65535\n\
             {p}:21:12: unknown upstream \"nope\""
        )
    );
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("coregate {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("config/coregate.toml"), "{help}");
}
