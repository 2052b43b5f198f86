//! Paced load for limit tests: pipelined batches of GETs on one connection at a fixed rate,
//! answers counted per second as admitted (200) or limited (429).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::get_req;

/// Per second since `start`: (admitted, limited) responses.
pub type Seconds = Vec<(u32, u32)>;

/// Sends pipelined batches of 10 GETs on `s` at `rate` requests per second until `until`,
/// counting 200 and 429 answers per second since `start`.
pub fn offer(s: TcpStream, rate: f64, start: Instant, until: Instant) -> Seconds {
    offer_timed(s, rate, start, until).0
}

/// [`offer`], also returning the longest a batch waited for its answers.
pub fn offer_timed(
    mut s: TcpStream,
    rate: f64,
    start: Instant,
    until: Instant,
) -> (Seconds, Duration) {
    let batch = 10;
    let every = Duration::from_secs_f64(batch as f64 / rate);
    let req = get_req("a", "/x", "");
    let burst: String = (0..batch).map(|_| req.as_str()).collect();
    let mut secs: Seconds = vec![(0, 0); 16];
    let mut next = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let sent = Instant::now();
        s.write_all(burst.as_bytes()).unwrap();
        let mut got = 0;
        while got < batch {
            // Count complete responses in the buffer (heads ending with an empty line; bodies
            // are sized by Content-Length).
            if let Some((status, len)) = parse_one(&buf) {
                buf.drain(..len);
                let sec = start.elapsed().as_secs() as usize;
                if let Some(slot) = secs.get_mut(sec) {
                    match status {
                        200 => slot.0 += 1,
                        429 => slot.1 += 1,
                        other => panic!("status {other}"),
                    }
                }
                got += 1;
                continue;
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        slowest = slowest.max(sent.elapsed());
        next += every;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    (secs, slowest)
}

/// The status and total length of the first complete response in `buf`.
fn parse_one(buf: &[u8]) -> Option<(u16, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= end + len).then_some((status, end + len))
}

pub fn add(a: &mut Seconds, b: &Seconds) {
    for (x, y) in a.iter_mut().zip(b) {
        x.0 += y.0;
        x.1 += y.1;
    }
}
