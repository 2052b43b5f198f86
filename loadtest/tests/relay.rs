//! The relay floor forwards bytes intact, both ways, including multi-megabyte payloads.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use common::{http_raw, run_json, serve, u};

fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

#[test]
fn relay_forwards_bytes_intact() {
    let be = serve(&["backend", "--listen", "127.0.0.1:0", "--echo"]);
    let relay = serve(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &be.addr,
        "--workers",
        "2",
    ]);
    // 6 MiB of varied bytes up, echoed back down through the relay.
    let body: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut request = format!(
        "POST /blob HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let response = http_raw(&relay.addr, &request);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let head = String::from_utf8_lossy(&response[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}", request.len())));
    let echoed = &response[split..];
    assert_eq!(echoed.len(), request.len());
    assert_eq!(hash(echoed), hash(&request));

    // And under load: every response through the relay has the backend's exact length.
    let plain = serve(&[
        "backend",
        "--listen",
        "127.0.0.1:0",
        "--body-size",
        "256KiB",
    ]);
    let relay2 = serve(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &plain.addr,
    ]);
    let r = run_json(
        &format!("http://{}/", relay2.addr),
        &["-c", "4", "-n", "400", "--expect-body-len", "262144"],
    );
    assert_eq!(u(&r, &["ok"]), 400);
    assert_eq!(u(&r, &["errors_total"]), 0);
}
