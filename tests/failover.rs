//! Failure handling over real sockets: active health checks take a backend out within
//! `interval × fall + timeout` and bring it back after `rise`; a backend that accepts and hangs
//! is caught by the check's timeout; a backend killed with SIGKILL under load costs clients
//! nothing and gets traffic again once restarted; a backend answering 503 is ejected; a POST
//! whose body was sent is never replayed, while one that could not connect goes elsewhere;
//! nothing available gives 503 with Retry-After; `max_connections` answers 503 at once; a
//! backend given by host name follows its name.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn route_all() -> &'static str {
    "[[routes]]\nname = \"all\"\nupstream = \"app\"\n"
}

/// Requests of `b` to a path starting with `prefix`.
fn served(b: &TestBackend, prefix: &str) -> usize {
    b.requests()
        .iter()
        .filter(|r| r.target.starts_with(prefix))
        .count()
}

#[test]
fn a_failing_health_check_takes_a_backend_out_and_rise_brings_it_back() {
    let sick = Arc::new(AtomicBool::new(false));
    let s2 = sick.clone();
    let good = TestBackend::hello();
    let flaky = TestBackend::start(move |r| {
        if r.target == "/healthz" && s2.load(Ordering::SeqCst) {
            Reply::new(503, Body::Length(b"sick".to_vec()))
        } else {
            Reply::ok("ok")
        }
    });
    let rest = upstream_with(
        "app",
        &[good.port, flaky.port],
        "balancer = \"round_robin\"",
    )
        + "[upstreams.health]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
           fall = 2\nrise = 3\n\n"
        + route_all();
    let proxy = start_proxy("io_uring", "", &rest);
    let mut c = Client::connect(proxy.addr);
    let mut send = |n: usize| {
        for i in 0..n {
            c.send(get_req("a", &format!("/r/{i}"), ""));
            assert_eq!(c.response().status, 200);
        }
    };
    send(10);
    assert_eq!(served(&flaky, "/r/"), 5);
    sick.store(true, Ordering::SeqCst);
    let t = Instant::now();
    // Out within interval × fall + timeout (500 ms), plus a sync tick and slack.
    let limit = Duration::from_millis(200 * 2 + 100 + 50 + 300);
    loop {
        let before = served(&flaky, "/r/");
        send(4);
        if served(&flaky, "/r/") == before {
            break;
        }
        assert!(
            t.elapsed() < limit,
            "still routed to after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(proxy
        .log_text()
        .contains("is down: status 503 (2 check(s) failed)"));
    // While it is out, it gets nothing.
    let out = served(&flaky, "/r/");
    send(20);
    assert_eq!(served(&flaky, "/r/"), out);
    // Healthy again: back after `rise` passed checks.
    sick.store(false, Ordering::SeqCst);
    let t = Instant::now();
    loop {
        send(4);
        if served(&flaky, "/r/") > out {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "not back after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "back before 3 checks"
    );
    assert!(proxy.log_text().contains("is up (3 check(s) passed)"));
    // One checker per process: about one check per interval, whatever the workers.
    let checks = served(&flaky, "/healthz");
    assert!(checks > 3, "{checks}");
}

#[test]
fn a_backend_that_accepts_and_hangs_is_caught_by_the_check_timeout() {
    let good = TestBackend::hello();
    let hung = TestBackend::start(|r| {
        if r.target == "/healthz" {
            Reply::ok("late").delay(Duration::from_secs(5))
        } else {
            Reply::ok("ok")
        }
    });
    let rest = upstream_with("app", &[good.port, hung.port], "")
        + "[upstreams.health]\npath = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"100ms\"\nfall = 1\n\n"
        + route_all();
    let proxy = start_proxy("epoll", "", &rest);
    let t = Instant::now();
    while !proxy.log_text().contains("is down: no answer within 100ms") {
        assert!(t.elapsed() < Duration::from_secs(3), "{}", proxy.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut c = Client::connect(proxy.addr);
    for i in 0..20 {
        c.send(get_req("a", &format!("/r/{i}"), ""));
        assert_eq!(c.response().status, 200);
    }
    assert_eq!(served(&hung, "/r/"), 0);
    assert_eq!(served(&good, "/r/"), 20);
}

/// The headline: three backend processes under steady load, one killed with SIGKILL mid-run
/// and restarted later. No client request fails, and the restarted backend gets traffic again.
#[test]
fn killing_a_backend_under_load_fails_no_request() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut backends: Vec<BackendProcess> = ports
        .iter()
        .map(|&p| BackendProcess::start(p, "ok"))
        .collect();
    let rest = format!(
        "[runtime]\nworkers = 2\npin = false\n\n{}\
         [upstreams.health]\npath = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n\n{}",
        upstream_with("app", &ports, ""),
        route_all()
    );
    let port = free_port();
    let proxy = Proxy::start(
        &format!("[[listeners]]\naddress = \"127.0.0.1:{port}\"\n{rest}"),
        port,
        "info",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    // Which backend answered, per phase: [before kill, while dead, after restart].
    let by_backend: Arc<std::sync::Mutex<Vec<[usize; 3]>>> =
        Arc::new(std::sync::Mutex::new(vec![[0; 3]; 3]));
    let phase = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, failed, ok, by, phase, ports) = (
                stop.clone(),
                failed.clone(),
                ok.clone(),
                by_backend.clone(),
                phase.clone(),
                ports.clone(),
            );
            let addr = proxy.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    c.send(get_req("a", &format!("/t{t}/{i}"), ""));
                    match c.try_response_to("GET") {
                        Some(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            let who: u16 = r.text().split(' ').next().unwrap().parse().unwrap();
                            let b = ports.iter().position(|&p| p == who).unwrap();
                            by.lock().unwrap()[b][phase.load(Ordering::SeqCst)] += 1;
                        }
                        other => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            eprintln!("client {t} request {i} failed: {other:?}");
                            c = Client::connect(addr);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    backends[1].kill();
    phase.store(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2500));
    backends[1] = BackendProcess::start(ports[1], "ok");
    phase.store(2, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let by = by_backend.lock().unwrap().clone();
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(
        failed,
        0,
        "{failed} failed of {}; by backend {by:?}",
        ok + failed
    );
    assert!(ok > 500, "only {ok} requests");
    assert!(by[1][0] > 50, "the backend had traffic before: {by:?}");
    assert!(
        by[1][2] > 20,
        "the restarted backend gets traffic again: {by:?}"
    );
    let log = proxy.log_text();
    assert!(
        log.contains(&format!("backend 127.0.0.1:{} is down", ports[1])),
        "{log}"
    );
    assert!(
        log.contains(&format!("backend 127.0.0.1:{} is up", ports[1])),
        "{log}"
    );
}

#[test]
fn a_backend_answering_503_is_ejected_and_its_503s_are_retried() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let good: Vec<TestBackend> = [0, 1]
        .iter()
        .map(|&i| TestBackend::start_on(ports[i], |_| Reply::ok("fine")))
        .collect();
    let bad = TestBackend::start_on(ports[2], |_| Reply::new(503, Body::Length(b"no".to_vec())));
    let rest = upstream_with("app", &ports, "balancer = \"round_robin\"")
        + "[upstreams.outlier]\nconsecutive_failures = 3\nbase_ejection = \"30s\"\n\n\
           [upstreams.retry]\non = [\"connect\", \"reset\", \"503\"]\n\n"
        + route_all();
    let proxy = start_proxy("io_uring", "", &rest);
    let mut c = Client::connect(proxy.addr);
    for i in 0..60 {
        c.send(get_req("a", &format!("/{i}"), ""));
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "fine"), "request {i}");
    }
    // Three 503s in a row eject it; after that it gets nothing.
    assert_eq!(bad.requests().len(), 3);
    assert_eq!(good.iter().map(|b| b.requests().len()).sum::<usize>(), 60);
    assert!(proxy.log_text().contains(&format!(
        "backend 127.0.0.1:{} ejected for 30s after 3 consecutive failures",
        ports[2]
    )));
}

#[test]
fn a_post_is_never_replayed_after_its_body_was_sent_but_goes_elsewhere_when_nothing_was() {
    // Backend 0 resets once it has read a request; backend 1 answers. Round robin starts at
    // backend 0 on a single worker.
    let resetting = TestBackend::start(|_| Reply::reset());
    let fine = TestBackend::echo();
    let rest = upstream_with(
        "app",
        &[resetting.port, fine.port],
        "balancer = \"round_robin\"",
    ) + "[upstreams.outlier]\nconsecutive_failures = 0\n\n"
        + route_all();
    let proxy = start_proxy("epoll", "", &rest);
    let post = |extra: &str| {
        format!("POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n{extra}\r\nhello")
    };
    let mut c = Client::connect(proxy.addr);
    c.send(post(""));
    let r = c.response_to("POST");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(fine.requests().len(), 0, "the POST was replayed");
    assert_eq!(resetting.requests().len(), 1);
    // With an Idempotency-Key the client says a replay is safe: it goes to the other backend.
    let mut c = Client::connect(proxy.addr);
    c.send(post("Idempotency-Key: 7f3a\r\n"));
    let r = c.response_to("POST");
    assert_eq!(r.status, 200, "{r:?}");
    let mut c = Client::connect(proxy.addr);
    c.send(post("Idempotency-Key: 8b4c\r\n"));
    let r = c.response_to("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{r:?}");
    assert_eq!(fine.requests().len(), 2);
    assert_eq!(resetting.requests().len(), 2);

    // A POST that cannot connect sent nothing: it goes to another backend.
    let dead = free_port();
    let rest = upstream_with("app", &[dead, fine.port], "balancer = \"round_robin\"") + route_all();
    let proxy = start_proxy("io_uring", "", &rest);
    let mut c = Client::connect(proxy.addr);
    c.send(post(""));
    let r = c.response_to("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{r:?}");
    assert_eq!(fine.requests().len(), 3);
}

#[test]
fn nothing_available_gives_503_with_retry_after() {
    let (a, b) = (free_port(), free_port());
    let rest = upstream_with("app", &[a, b], "")
        + "[upstreams.health]\ntcp = true\ninterval = \"2s\"\ntimeout = \"500ms\"\nstart_down = true\n\n"
        + route_all();
    let proxy = start_proxy("io_uring", "", &rest);
    let mut c = Client::connect(proxy.addr);
    for _ in 0..3 {
        c.send(get_req("a", "/", ""));
        let r = c.response();
        assert_eq!(r.status, 503, "{r:?}");
        let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=4).contains(&after), "{after}");
        assert!(!r.closes(), "the connection stays usable");
    }
}

#[test]
fn max_connections_answers_503_at_once_instead_of_queueing() {
    let slow = TestBackend::start(|_| Reply::ok("slow").delay(Duration::from_millis(800)));
    let rest =
        upstream_with("app", &[slow.port], "max_connections = 1\nmax_pending = 0") + route_all();
    let proxy = start_proxy("io_uring", "", &rest);
    let addr = proxy.addr;
    let first = std::thread::spawn(move || get(addr, "a", "/1").status);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(get(proxy.addr, "a", "/2").status, 503);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(slow.requests().len(), 1);
}

/// A backend given by host name follows its name: when the name resolves to another address
/// (rewritten /etc/hosts in coregate's own mount namespace), traffic moves there within
/// `resolve_interval` and a tick, and the idle connections to the old address are closed.
#[test]
fn a_backend_given_by_name_moves_when_its_name_resolves_elsewhere() {
    let port = free_port();
    let old = TestBackend::start_on(port, |_| Reply::ok("old"));
    let new_listener =
        std::net::TcpListener::bind(("127.0.0.2", port)).expect("127.0.0.2 is loopback on Linux");
    drop(new_listener);
    let dir = TempDir::new("hosts");
    let hosts = dir.write("hosts", "127.0.0.1 localhost\n127.0.0.1 app.test\n");
    let rest = format!(
        "[[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"app.test:{port}\" }}]\n\
         resolve_interval = \"200ms\"\n\n{}",
        route_all()
    );
    let lport = free_port();
    let text = format!(
        "[runtime]\nworkers = 1\npin = false\n\n[[listeners]]\naddress = \"127.0.0.1:{lport}\"\n\n{rest}"
    );
    let proxy = Proxy::start_with_hosts(&text, lport, "info", &hosts);
    let mut c = Client::connect(proxy.addr);
    c.send(get_req("a", "/1", ""));
    assert_eq!(c.response().text(), "old");
    assert_eq!(old.conns(), 1);
    // The name moves to 127.0.0.2, where another backend listens on the same port.
    let moved = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let m2 = moved.clone();
    let new = std::thread::spawn(move || {
        let l = std::net::TcpListener::bind(("127.0.0.2", port)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        m2.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        std::io::Write::write_all(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew")
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.2 app.test\n").unwrap();
    let t = Instant::now();
    let mut answer = String::new();
    while answer != "new" {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still at the old address"
        );
        std::thread::sleep(Duration::from_millis(100));
        c.send(get_req("a", "/2", ""));
        answer = c.response().text();
    }
    new.join().unwrap();
    assert!(moved.lock().unwrap()[0].starts_with("GET /2 HTTP/1.1\r\n"));
    // The pooled connection to the old address was closed by coregate.
    assert_eq!(old.wait_ended(1), 1);
    assert!(proxy.log_text().contains(&format!(
        "backend app.test:{port} moved from 127.0.0.1:{port} to 127.0.0.2:{port}"
    )));
}
