//! The generator against its own backend, over loopback: counts agree, coordinated omission is
//! corrected in open loop, and invalid responses are counted as errors rather than as fast.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{backend_stats, run_json, serve, u};

#[test]
fn counts_match_the_backend() {
    let be = serve(&["backend", "--listen", "127.0.0.1:0", "--workers", "2"]);
    let url = format!("http://{}/", be.addr);
    // A fixed number of requests, pipelined, over two threads.
    let r = run_json(
        &url,
        &["-t", "2", "-c", "8", "-n", "5000", "--pipeline", "4"],
    );
    assert_eq!(u(&r, &["ok"]), 5000);
    assert_eq!(u(&r, &["errors_total"]), 0);
    assert_eq!(u(&backend_stats(&be.addr), &["requests"]), 5000);
    // A timed run: in-flight requests are drained at the end, so the counts still agree.
    let r = run_json(&url, &["-c", "4", "-d", "1s"]);
    let ok = u(&r, &["ok"]);
    assert!(ok > 0);
    assert_eq!(u(&backend_stats(&be.addr), &["requests"]), 5000 + ok);
    // No keep-alive: one connection per request.
    let r = run_json(&url, &["-c", "2", "-n", "200", "--no-keepalive"]);
    assert_eq!(u(&r, &["ok"]), 200);
    assert_eq!(u(&r, &["connects"]), 200);
    let stats = backend_stats(&be.addr);
    assert_eq!(u(&stats, &["requests"]), 5200 + ok);
}

#[test]
fn open_loop_reports_a_stall_that_closed_loop_hides() {
    // Every 250th request stalls 200 ms; the rest take well under a millisecond.
    let be = serve(&[
        "backend",
        "--listen",
        "127.0.0.1:0",
        "--stall-every",
        "250",
        "--stall",
        "200ms",
    ]);
    let url = format!("http://{}/", be.addr);
    let closed = run_json(&url, &["-c", "1", "-d", "2s"]);
    let open = run_json(&url, &["-c", "1", "-d", "2s", "-R", "500"]);
    assert_eq!(u(&closed, &["errors_total"]), 0);
    assert_eq!(u(&open, &["errors_total"]), 0);
    // Closed loop: one sample in 250 is slow, so p99 looks fine; only max shows the stall.
    let closed_p99 = u(&closed, &["latency", "p99_us"]);
    assert!(u(&closed, &["latency", "max_us"]) >= 190_000);
    // Open loop: the requests due during each stall wait for it and are counted as slow.
    let open_p99 = u(&open, &["latency", "p99_us"]);
    assert!(open_p99 >= 100_000, "open-loop p99 {open_p99} us");
    assert!(
        closed_p99 * 4 < open_p99,
        "closed p99 {closed_p99} us vs open p99 {open_p99} us"
    );
    // The uncorrected view of the same open-loop run hides it, as closed loop does.
    let service_p99 = u(&open, &["service_latency", "p99_us"]);
    assert!(
        service_p99 * 4 < open_p99,
        "uncorrected p99 {service_p99} us"
    );
    // The delay is the target's: the generator's own lag stays apart from it.
    let lag_p99 = u(&open, &["generator_lag", "p99_us"]);
    assert!(lag_p99 * 4 < open_p99, "generator lag p99 {lag_p99} us");
}

#[test]
fn invalid_responses_count_as_errors() {
    let be = serve(&["backend", "--listen", "127.0.0.1:0", "--body-size", "100"]);
    let url = format!("http://{}/", be.addr);
    let r = run_json(&url, &["-c", "2", "-n", "100", "--expect-body-len", "100"]);
    assert_eq!((u(&r, &["ok"]), u(&r, &["errors_total"])), (100, 0));
    let r = run_json(&url, &["-c", "2", "-n", "100", "--expect-body-len", "50"]);
    assert_eq!(u(&r, &["ok"]), 0);
    assert_eq!(u(&r, &["errors", "body_length"]), 100);
    assert_eq!(u(&r, &["latency", "count"]), 0);
    let r = run_json(&url, &["-c", "2", "-n", "100", "--expect-status", "204"]);
    assert_eq!(u(&r, &["errors", "status_2xx"]), 100);

    // A fast 502 is an error, not a fast response.
    let bad = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = bad.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in bad.incoming().take(64) {
            let Ok(mut c) = conn else { break };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                while let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.drain(..i + 4);
                    let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                }
            }
        }
    });
    let r = run_json(&format!("http://{addr}/"), &["-c", "1", "-n", "50"]);
    assert_eq!(u(&r, &["ok"]), 0);
    assert_eq!(u(&r, &["errors", "status_5xx"]), 50);

    // A body cut short by the server closing is a reset, not a response.
    let short = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = short.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in short.incoming().take(64) {
            let Ok(mut c) = conn else { break };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-half");
        }
    });
    let r = run_json(&format!("http://{addr}/"), &["-c", "1", "-n", "5"]);
    assert_eq!(u(&r, &["ok"]), 0);
    assert_eq!(u(&r, &["errors", "reset"]), 5);
}

#[test]
fn chunked_and_large_bodies_are_framed() {
    let be = serve(&[
        "backend",
        "--listen",
        "127.0.0.1:0",
        "--chunked",
        "--body-size",
        "100000",
    ]);
    let url = format!("http://{}/", be.addr);
    let r = run_json(
        &url,
        &[
            "-c",
            "2",
            "-n",
            "300",
            "--pipeline",
            "3",
            "--expect-body-len",
            "100000",
        ],
    );
    assert_eq!(u(&r, &["ok"]), 300);
    assert_eq!(u(&r, &["errors_total"]), 0);
    // POST bodies reach the backend whole: the echo body is the request we sent.
    let echo = serve(&["backend", "--listen", "127.0.0.1:0", "--echo"]);
    let url = format!("http://{}/up", echo.addr);
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadtest\r\nContent-Length: 4096\r\n\r\n",
        echo.addr
    );
    let expect = (head.len() + 4096).to_string();
    let r = run_json(
        &url,
        &[
            "-c",
            "2",
            "-n",
            "100",
            "-m",
            "POST",
            "--body-size",
            "4KiB",
            "--expect-body-len",
            &expect,
        ],
    );
    assert_eq!(u(&r, &["ok"]), 100);
}
