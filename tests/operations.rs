//! Operations over real sockets: `/metrics` read by Prometheus' own text parser (the Python
//! `prometheus_client`, installed by the CI) matches the traffic sent; a storm of 20 reloads
//! under load fails no request and moves the traffic, and an invalid config in the middle
//! leaves the old one serving; the admin API adds a backend that then takes traffic, drains
//! one to zero requests in flight without a failed request, and refuses unauthenticated
//! changes.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A parsed sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);
/// Counts of answers by body.
type Seen = Arc<Mutex<std::collections::HashMap<String, usize>>>;

/// One admin request; returns (status, body).
fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = connect(addr);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Every sample of a Prometheus text page as parsed by `prometheus_client.parser`:
/// (name, labels, value).
fn parse_with_prometheus(text: &str) -> Vec<Sample> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([s.name, sorted(s.labels.items()), s.value])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is required (the CI installs python3 and prometheus_client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the page (pip install prometheus-client): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap().to_string(),
                        kv[1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (
                s[0].as_str().unwrap().to_string(),
                labels,
                s[2].as_f64().unwrap(),
            )
        })
        .collect()
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.2)
}

fn with_admin(rest: &str, admin_lines: &str) -> (Proxy, SocketAddr) {
    let (port, admin_port) = (free_port(), free_port());
    let text = format!(
        "[runtime]\nworkers = 2\npin = false\n\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\n{admin_lines}\n\n\
         [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:{port}\"\n\n{rest}"
    );
    let proxy = Proxy::start(&text, port, "info");
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin(admin_addr, "GET", "/ready", "", None).0 != 200 {
        assert!(Instant::now() < deadline, "admin not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    (proxy, admin_addr)
}

#[test]
fn metrics_parse_with_prometheus_client_and_match_the_traffic() {
    let backend = TestBackend::hello();
    let dead = free_port();
    let rest = upstream_toml("app", &[backend.port], "")
        + &upstream_toml("dead", &[dead], "")
        + "[[routes]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"app\"\n\n\
           [[routes]]\nname = \"gone\"\npath_prefix = \"/gone/\"\nupstream = \"dead\"\n";
    let (proxy, admin_addr) = with_admin(&rest, "");
    let mut c = Client::connect(proxy.addr);
    for i in 0..37 {
        c.send(get_req("a", &format!("/api/{i}"), ""));
        assert_eq!(c.response().status, 200);
    }
    for i in 0..5 {
        c.send(get_req("a", &format!("/none/{i}"), ""));
        assert_eq!(c.response().status, 404);
    }
    for i in 0..3 {
        assert_eq!(get(proxy.addr, "a", &format!("/gone/{i}")).status, 502);
    }
    let (status, page) = admin(admin_addr, "GET", "/metrics", "", None);
    assert_eq!(status, 200);
    let samples = parse_with_prometheus(&page);
    let req = |route: &str, class: &str| {
        sample(
            &samples,
            "coregate_requests_total",
            &[
                ("listener", "main"),
                ("route", route),
                ("status_class", class),
            ],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(req("api", "2xx"), 37.0, "{page}");
    assert_eq!(req("", "4xx"), 5.0, "{page}");
    assert_eq!(req("gone", "5xx"), 3.0, "{page}");
    assert_eq!(
        sample(
            &samples,
            "coregate_upstream_connections_opened_total",
            &[("upstream", "app")]
        ),
        Some(1.0),
        "one pooled connection carried every /api/ request"
    );
    // The request-time histogram: cumulative buckets ending at +Inf = the count.
    let buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "coregate_request_seconds_bucket"
                && l.iter().any(|(k, v)| k == "listener" && v == "main")
        })
        .map(|(_, l, v)| {
            let le = &l.iter().find(|(k, _)| k == "le").unwrap().1;
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                *v,
            )
        })
        .collect();
    assert!(buckets.len() > 5);
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{buckets:?}"
    );
    let count = sample(
        &samples,
        "coregate_request_seconds_count",
        &[("listener", "main")],
    )
    .unwrap();
    assert_eq!(buckets.last().unwrap().1, count);
    assert_eq!(count, 37.0 + 5.0 + 3.0);
    // Bytes from clients: exactly the heads sent; to clients: the bodies and the heads.
    let received: usize = (0..37)
        .map(|i| get_req("a", &format!("/api/{i}"), "").len())
        .chain((0..5).map(|i| get_req("a", &format!("/none/{i}"), "").len()))
        .chain((0..3).map(|i| {
            format!("GET /gone/{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").len()
        }))
        .sum();
    assert_eq!(
        sample(
            &samples,
            "coregate_received_bytes_total",
            &[("listener", "main")]
        ),
        Some(received as f64),
        "{page}"
    );
    let bodies: usize = (0..37).map(|i| format!("backend saw /api/{i}").len()).sum();
    let sent = sample(
        &samples,
        "coregate_sent_bytes_total",
        &[("listener", "main")],
    )
    .unwrap();
    assert!(
        sent > (bodies + 45 * 40) as f64 && sent < (bodies + 45 * 400) as f64,
        "{sent} bytes sent for {bodies} bytes of bodies in 45 answers"
    );
    assert!(sample(&samples, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(sample(&samples, "process_open_fds", &[]).unwrap() > 3.0);
    assert_eq!(
        sample(&samples, "coregate_backend_up", &[("upstream", "app")]),
        Some(1.0)
    );
    // /healthz, /config (defaults applied), /upstreams (JSON).
    assert_eq!(admin(admin_addr, "GET", "/healthz", "", None).0, 200);
    let (_, config) = admin(admin_addr, "GET", "/config", "", None);
    assert!(
        config.contains("gone: any host, prefix /gone/ -> dead"),
        "{config}"
    );
    let (_, ups) = admin(admin_addr, "GET", "/upstreams", "", None);
    let v: serde_json::Value = serde_json::from_str(&ups).unwrap();
    assert_eq!(v["upstreams"][0]["name"], "app");
    assert_eq!(v["upstreams"][0]["backends"][0]["state"], "up");
}

/// Runs `threads` clients sending GETs to `path` until `stop`; counts answers by body, and
/// failures.
fn steady_load(
    addr: SocketAddr,
    path: &'static str,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<std::thread::JoinHandle<()>>, Seen, Arc<AtomicUsize>) {
    let seen: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let handles = (0..threads)
        .map(|_| {
            let (stop, seen, failed) = (stop.clone(), seen.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::SeqCst) {
                    c.send(get_req("a", path, ""));
                    match c.try_response_to("GET") {
                        Some(r) if r.status == 200 => {
                            *seen.lock().unwrap().entry(r.text()).or_default() += 1;
                        }
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::SeqCst);
                            c = Client::connect(addr);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    (handles, seen, failed)
}

#[test]
fn a_storm_of_reloads_under_load_fails_nothing_and_moves_the_traffic() {
    let a = TestBackend::start(|_| Reply::ok("A"));
    let b = TestBackend::start(|_| Reply::ok("B"));
    let config = |to: &str| {
        upstream_toml("a", &[a.port], "")
            + &upstream_toml("b", &[b.port], "")
            + &format!("[[routes]]\nname = \"svc\"\npath_prefix = \"/svc\"\nupstream = \"{to}\"\n")
    };
    let (proxy, admin_addr) = with_admin(&config("a"), "");
    let original = std::fs::read_to_string(proxy.config_path()).unwrap();
    let rest_a = config("a");
    let head = original.replace(&rest_a, "");
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, seen, failed) = steady_load(proxy.addr, "/svc", 4, stop.clone());
    let mut to_b_seen = false;
    for i in 0..20 {
        let target = if i % 2 == 0 { "b" } else { "a" };
        std::fs::write(proxy.config_path(), head.clone() + &config(target)).unwrap();
        if i == 10 {
            // An invalid config in the middle: refused, the one in force stays.
            std::fs::write(proxy.config_path(), head.clone() + "[[routes]]\nname = 1\n").unwrap();
            let (status, body) = admin(admin_addr, "POST", "/reload", "", None);
            assert_eq!(status, 400, "{body}");
            assert!(body.contains(":"), "{body}");
            std::fs::write(proxy.config_path(), head.clone() + &config(target)).unwrap();
        }
        if i % 3 == 0 {
            proxy.signal(libc::SIGHUP);
            std::thread::sleep(Duration::from_millis(250));
        } else {
            let (status, body) = admin(admin_addr, "POST", "/reload", "", None);
            assert_eq!(status, 200, "{body}");
            std::thread::sleep(Duration::from_millis(150));
        }
        // The traffic follows the route.
        let mut c = Client::connect(proxy.addr);
        c.send(get_req("a", "/svc/check", ""));
        let r = c.response();
        assert_eq!(r.text(), target.to_uppercase(), "reload {i}");
        to_b_seen |= target == "b";
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert!(to_b_seen);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests during the reloads"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.get("A").copied().unwrap_or(0) > 50 && seen.get("B").copied().unwrap_or(0) > 50,
        "{seen:?}"
    );
    let log = proxy.log_text();
    assert_eq!(log.matches("config reloaded").count(), 20, "{log}");
    assert!(
        log.contains("reload refused, the config in force stays"),
        "{log}"
    );
    let page = admin(admin_addr, "GET", "/metrics", "", None).1;
    assert!(
        page.contains("coregate_config_reloads_total{result=\"success\"} 20"),
        "{page}"
    );
    assert!(
        page.contains("coregate_config_reloads_total{result=\"failure\"} 1"),
        "{page}"
    );
}

#[test]
fn the_admin_api_adds_and_drains_backends_and_refuses_unauthenticated_changes() {
    let a = TestBackend::start(|_| Reply::ok("A").delay(Duration::from_millis(5)));
    let b = TestBackend::start(|_| Reply::ok("B"));
    let rest =
        upstream_toml("app", &[a.port], "") + "[[routes]]\nname = \"all\"\nupstream = \"app\"\n";
    let (proxy, admin_addr) = with_admin(&rest, "token = \"s3cret\"");
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, seen, failed) = steady_load(proxy.addr, "/x", 3, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    // Reading needs no token on loopback; changing does.
    assert_eq!(admin(admin_addr, "GET", "/upstreams", "", None).0, 200);
    let add = format!("{{\"address\": \"127.0.0.1:{}\", \"weight\": 1}}", b.port);
    let (status, _) = admin(admin_addr, "POST", "/upstreams/app/backends", &add, None);
    assert_eq!(status, 401);
    let (status, _) = admin(
        admin_addr,
        "POST",
        "/upstreams/app/backends",
        &add,
        Some("wrong"),
    );
    assert_eq!(status, 401);
    let (status, body) = admin(
        admin_addr,
        "POST",
        "/upstreams/app/backends",
        &add,
        Some("s3cret"),
    );
    assert_eq!(status, 200, "{body}");
    // The new backend takes traffic.
    let t = Instant::now();
    while b.requests().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the added backend got nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Drain A: its requests in flight reach zero, then it gets nothing new.
    let a_addr = format!("127.0.0.1:{}", a.port);
    let (status, body) = admin(
        admin_addr,
        "POST",
        &format!("/upstreams/app/backends/{a_addr}/drain"),
        "",
        Some("s3cret"),
    );
    assert_eq!(status, 200, "{body}");
    let t = Instant::now();
    loop {
        let (_, ups) = admin(admin_addr, "GET", "/upstreams", "", None);
        let v: serde_json::Value = serde_json::from_str(&ups).unwrap();
        let be = v["upstreams"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == a_addr.as_str())
            .unwrap()
            .clone();
        if be["state"] == "draining" && be["in_flight"] == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "{ups}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let drained_at = a.requests().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        a.requests().len(),
        drained_at,
        "a drained backend took new requests"
    );
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.get("B").copied().unwrap_or(0) > 20, "{seen:?}");
    // Unknown upstream and backend: 404.
    assert_eq!(
        admin(
            admin_addr,
            "POST",
            "/upstreams/nope/backends/x:1/drain",
            "",
            Some("s3cret")
        )
        .0,
        404
    );
}

/// A reload that raises `max_response_headers` while a keep-alive connection holds its buffers
/// (its grace after an answer): the next request is handed to the new config with those
/// buffers, which must get the field slots the new config needs (a response with more fields
/// than the old config had room for is relayed, not a crash).
#[test]
fn buffers_carried_into_a_reloaded_config_get_its_field_slots() {
    let a = TestBackend::start(|r| {
        let mut reply = Reply::ok("A");
        if r.target == "/many" {
            for i in 0..150 {
                reply = reply.header(&format!("X-F{i}"), "v");
            }
        }
        reply
    });
    let config = |fields: u32| {
        format!(
            "[limits]\nmax_headers = 20\n\n[[upstreams]]\nname = \"a\"\nmax_response_headers = {fields}\n\
             backends = [ {{ address = \"127.0.0.1:{}\" }} ]\n\n[[routes]]\nname = \"all\"\nupstream = \"a\"\n",
            a.port
        )
    };
    let (proxy, admin_addr) = with_admin(&config(20), "");
    let original = std::fs::read_to_string(proxy.config_path()).unwrap();
    for _ in 0..3 {
        let mut c = Client::connect(proxy.addr);
        c.send(get_req("a", "/one", ""));
        assert_eq!(c.response().text(), "A");
        std::fs::write(
            proxy.config_path(),
            original.replace(&config(20), &config(200)),
        )
        .unwrap();
        let (status, body) = admin(admin_addr, "POST", "/reload", "", None);
        assert_eq!(status, 200, "{body}");
        c.send(get_req("a", "/many", ""));
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "A"));
        std::fs::write(proxy.config_path(), &original).unwrap();
        let (status, body) = admin(admin_addr, "POST", "/reload", "", None);
        assert_eq!(status, 200, "{body}");
    }
}
