//! Access logs over real sockets: every request gives one well-formed line in the log of its
//! route or listener (combined lines field by field, JSON lines through a JSON parser), a route
//! with `access_log = "off"` gives none; after the file is moved and `SIGUSR1` arrives, new lines
//! go to a new file and none are lost under load; a log that cannot be written (`/dev/full`)
//! fails no request, is reported once and its lines are counted as dropped; a log that cannot
//! be opened stops the start with its path.

mod common;

use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const POST: &str = "POST /api/items HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
const BIN: &str = env!("CARGO_BIN_EXE_coregate");

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (up to 5 s) until `path` has `n` lines; returns them.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let l = lines(path);
        if l.len() >= n || Instant::now() > deadline {
            return l;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A proxy with `workers` workers whose listener "main" logs to `listener_log` (a TOML inline
/// table) and whose routes are `routes`, all to the upstream "app" on `backend`.
fn start(workers: usize, listener_log: &str, backend: u16, routes: &str, extra: &str) -> Proxy {
    let port = free_port();
    let text = format!(
        "[runtime]\nworkers = {workers}\npin = false\ndrain_timeout = \"2s\"\n\n\
         [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:{port}\"\naccess_log = {listener_log}\n\n\
         {}{routes}\n{extra}",
        upstream_toml("app", &[backend], "")
    );
    Proxy::start(&text, port, "info")
}

fn is_uuid_v7(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'7'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// A combined line split into its fields: client, time, request line, status, body bytes,
/// referer, user agent, then the `key=value` tail.
struct Combined {
    client: String,
    time: String,
    request: String,
    status: u16,
    body_bytes: u64,
    referer: String,
    user_agent: String,
    tail: std::collections::HashMap<String, String>,
}

fn parse_combined(line: &str) -> Combined {
    let (client, rest) = line.split_once(" - - [").expect(line);
    let (time, rest) = rest.split_once("] \"").expect(line);
    let (request, rest) = rest.split_once("\" ").expect(line);
    let mut it = rest.splitn(3, ' ');
    let status = it.next().unwrap().parse().expect(line);
    let body_bytes = it.next().unwrap().parse().expect(line);
    let rest = it.next().unwrap();
    let quoted: Vec<&str> = rest.splitn(5, '"').collect();
    assert_eq!(quoted[0], "", "{line}");
    let tail = quoted[4]
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect(line);
            (k.to_string(), v.to_string())
        })
        .collect();
    Combined {
        client: client.to_string(),
        time: time.to_string(),
        request: request.to_string(),
        status,
        body_bytes,
        referer: quoted[1].to_string(),
        user_agent: quoted[3].to_string(),
        tail,
    }
}

#[test]
fn every_request_gives_one_well_formed_line_in_its_log() {
    let backend = TestBackend::start(|_| Reply::ok("hello\n"));
    let dir = TempDir::new("access-log");
    let main_log = dir.0.join("access.log");
    let api_log = dir.0.join("api.json");
    let routes = format!(
        "[[routes]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"app\"\n\
         access_log = {{ path = \"{}\", format = \"json\", flush = \"50ms\" }}\n\n\
         [[routes]]\nname = \"health\"\npath_exact = \"/health\"\nupstream = \"app\"\naccess_log = \"off\"\n\n\
         [[routes]]\nname = \"web\"\npath_prefix = \"/web/\"\nupstream = \"app\"\n",
        api_log.display()
    );
    let proxy = start(
        2,
        &format!("{{ path = \"{}\", flush = \"50ms\" }}", main_log.display()),
        backend.port,
        &routes,
        "",
    );
    let mut c = Client::connect(proxy.addr);
    for i in 0..20 {
        let extra = if i == 7 {
            "User-Agent: ua \"quoted\"\r\nReferer: http://r.example/\r\nX-Request-Id: rid-7\r\n"
        } else {
            "User-Agent: ua-test\r\n"
        };
        c.send(get_req("a", &format!("/web/{i}"), extra));
        assert_eq!(c.response().status, 200);
    }
    // No route: 404, logged by the listener.
    c.send(get_req("a", "/nowhere", ""));
    assert_eq!(c.response().status, 404);
    for i in 0..10 {
        if i % 2 == 0 {
            c.send(get_req("a", &format!("/api/items?q={i}"), ""));
        } else {
            c.send(POST);
        }
        assert_eq!(c.response().status, 200);
    }
    for _ in 0..5 {
        c.send(get_req("a", "/health", ""));
        assert_eq!(c.response().status, 200);
    }
    // A head that cannot be parsed: 400, and the line says "-" for the request.
    let mut bad = connect(proxy.addr);
    bad.write_all(b"GET /web/x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut bad).status, 400);

    let combined = wait_lines(&main_log, 22);
    let json = wait_lines(&api_log, 10);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines(&main_log), combined, "no line more after the flush");
    assert_eq!(
        combined.len(),
        22,
        "20 to /web/, one 404, one 400:\n{combined:#?}"
    );
    assert_eq!(json.len(), 10, "{json:#?}");

    let upstream = format!("127.0.0.1:{}", backend.port);
    let parsed: Vec<Combined> = combined.iter().map(|l| parse_combined(l)).collect();
    let web: Vec<&Combined> = parsed.iter().filter(|c| c.status == 200).collect();
    assert_eq!(web.len(), 20);
    for (i, l) in web.iter().enumerate() {
        assert_eq!(l.client, "127.0.0.1");
        assert!(
            l.time.ends_with(" +0000") && l.time.len() == 26,
            "{}",
            l.time
        );
        assert_eq!(l.request, format!("GET /web/{i} HTTP/1.1"));
        assert_eq!(l.body_bytes, 6);
        assert_eq!(l.tail["upstream"], upstream);
        assert!(l.tail["rt"].parse::<f64>().unwrap() < 5.0);
        assert!(l.tail["urt"].parse::<f64>().unwrap() < 5.0);
        if i == 7 {
            assert_eq!(l.user_agent, "ua \\x22quoted\\x22");
            assert_eq!(l.referer, "http://r.example/");
            assert_eq!(
                l.tail["id"], "rid-7",
                "a request's own X-Request-Id is logged"
            );
        } else {
            assert_eq!(l.user_agent, "ua-test");
            assert_eq!(l.referer, "-");
            assert!(is_uuid_v7(&l.tail["id"]), "{}", l.tail["id"]);
        }
    }
    let ids: std::collections::HashSet<&str> = web.iter().map(|l| l.tail["id"].as_str()).collect();
    assert_eq!(ids.len(), 20, "request ids are unique");
    let not_found = parsed.iter().find(|c| c.status == 404).unwrap();
    assert_eq!(not_found.request, "GET /nowhere HTTP/1.1");
    assert_eq!(
        (
            not_found.tail["upstream"].as_str(),
            not_found.tail["urt"].as_str()
        ),
        ("-", "-")
    );
    let bad = parsed.iter().find(|c| c.status == 400).unwrap();
    assert_eq!(bad.request, "-");
    assert!(bad.body_bytes > 0);

    for (i, l) in json.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["listener"], "main");
        assert_eq!(v["route"], "api");
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream"], "app");
        assert_eq!(v["upstream_addr"], upstream.as_str());
        assert_eq!(v["body_bytes_sent"], 6);
        assert!(v["bytes_sent"].as_u64().unwrap() > 6 + 30);
        assert!(v["request_time"].as_f64().unwrap() >= v["upstream_time"].as_f64().unwrap());
        assert!(is_uuid_v7(v["request_id"].as_str().unwrap()), "{l}");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{l}");
        if i % 2 == 0 {
            assert_eq!(v["method"], "GET");
            assert_eq!(v["target"], format!("/api/items?q={i}"));
            assert_eq!(
                v["request_length"],
                get_req("a", &format!("/api/items?q={i}"), "").len()
            );
        } else {
            assert_eq!(v["method"], "POST");
            assert_eq!(v["target"], "/api/items");
            assert_eq!(v["request_length"], POST.len());
        }
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["host"], "a");
        assert_eq!(v["user_agent"], serde_json::Value::Null);
    }
}

/// Clients sending GETs until `stop`; counts the 200s (and fails on anything else).
fn load(
    addr: SocketAddr,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<AtomicUsize>) {
    let ok = Arc::new(AtomicUsize::new(0));
    let handles = (0..threads)
        .map(|t| {
            let (stop, ok) = (stop.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    c.send(get_req("a", &format!("/r/{t}/{i}"), ""));
                    assert_eq!(c.response().status, 200);
                    ok.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                    // New connections now and then, so both workers log.
                    if i % 50 == 0 {
                        c = Client::connect(addr);
                    }
                }
            })
        })
        .collect();
    (handles, ok)
}

#[test]
fn sigusr1_after_a_move_reopens_and_loses_no_line() {
    let backend = TestBackend::hello();
    let dir = TempDir::new("access-rotate");
    let log = dir.0.join("access.log");
    let rotated = dir.0.join("access.log.1");
    let mut proxy = start(
        2,
        &format!("{{ path = \"{}\", flush = \"50ms\" }}", log.display()),
        backend.port,
        "[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        "",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (handles, ok) = load(proxy.addr, 3, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    // logrotate's way: move the file, then signal.
    std::fs::rename(&log, &rotated).unwrap();
    let before = ok.load(Ordering::SeqCst);
    proxy.signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.log_text().contains("access logs reopened") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        proxy.log_text().contains("access logs reopened"),
        "{}",
        proxy.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().unwrap();
    }
    let total = ok.load(Ordering::SeqCst);
    assert!(
        before > 100 && total > before + 100,
        "{before} then {total} requests"
    );
    // The new file fills while the proxy runs (the flush timer), the rest at exit.
    assert!(!wait_lines(&log, 1).is_empty(), "no new file after SIGUSR1");
    proxy.signal(libc::SIGTERM);
    proxy.wait_exit(Duration::from_secs(10)).expect("exit");
    let (old, new) = (lines(&rotated), lines(&log));
    assert!(
        old.len() >= before / 2,
        "{} lines in the moved file",
        old.len()
    );
    assert!(
        new.len() >= total - before,
        "{} lines in the new file",
        new.len()
    );
    assert_eq!(
        old.len() + new.len(),
        total,
        "every request has exactly one line"
    );
    for l in old.iter().chain(&new) {
        let c = parse_combined(l);
        assert_eq!(c.status, 200, "{l}");
    }
}

#[test]
fn a_log_that_cannot_be_written_fails_no_request_and_is_reported_once() {
    let backend = TestBackend::hello();
    let admin = free_port();
    let proxy = start(
        1,
        "{ path = \"/dev/full\", flush = \"20ms\" }",
        backend.port,
        "[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        &format!("[admin]\naddress = \"127.0.0.1:{admin}\"\n"),
    );
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let mut c = Client::connect(proxy.addr);
    for round in 0..4 {
        for i in 0..10 {
            c.send(get_req("a", &format!("/{round}/{i}"), ""));
            assert_eq!(c.response().status, 200);
        }
        // Several flushes, several failed writes.
        std::thread::sleep(Duration::from_millis(60));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut page = scrape(admin);
    while !page.contains("coregate_access_log_dropped_lines_total 40") && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        page = scrape(admin);
    }
    assert!(
        page.contains("coregate_access_log_dropped_lines_total 40\n"),
        "{page}"
    );
    let text = proxy.log_text();
    assert_eq!(
        text.matches("access log /dev/full: cannot write").count(),
        1,
        "{text}"
    );
}

#[test]
fn a_log_that_cannot_be_opened_stops_the_start_with_its_path() {
    let backend = TestBackend::hello();
    let dir = TempDir::new("access-missing");
    let port = free_port();
    let missing = dir.0.join("no-such-dir").join("access.log");
    let cfg = dir.write(
        "c.toml",
        &format!(
            "[runtime]\nworkers = 1\n\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
             access_log = {{ path = \"{}\" }}\n\n{}[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
            missing.display(),
            upstream_toml("app", &[backend.port], "")
        ),
    );
    // `check` judges the config, not this machine's directories.
    assert!(check(&cfg).status.success());
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "access log {}: No such file or directory",
            missing.display()
        )),
        "{stderr}"
    );
}
