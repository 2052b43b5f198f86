//! Parses one head N times with coregate or httparse: a fixed workload for
//! `valgrind --tool=callgrind` instruction counts, and an interleaved timing race.
//!
//! `cargo run --release --example parse_loop -- coregate|httparse minimal|browser|post N`
//! `cargo run --release --example parse_loop -- race [ROUNDS]` alternates the two parsers in
//! short rounds on each head (so machine noise hits both alike) and prints the median ns per
//! head of each and the median of the per-round ratios.
use coregate::http1::{self, Header};
use std::hint::black_box;
use std::time::Instant;

const HEADS: [(&str, &[u8]); 3] = [
    ("minimal", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ("browser", include_bytes!("../benches/heads/browser.txt")),
    ("post", include_bytes!("../benches/heads/post.txt")),
];

fn coregate(head: &[u8], n: usize) {
    let mut headers = [Header::default(); 32];
    for _ in 0..n {
        black_box(http1::parse_request(black_box(head), &mut headers).ok());
    }
}

fn httparse(head: &[u8], n: usize) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    for _ in 0..n {
        let mut req = httparse::Request::new(&mut headers);
        black_box((req.parse(black_box(head)).ok(), req.method, req.path));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn race(rounds: usize) {
    println!("head      coregate ns  httparse ns  coregate/httparse (median of {rounds} rounds)");
    for (name, head) in HEADS {
        // About 2 ms per turn: long enough to dwarf the clock, short enough to alternate often.
        let n = 2_000_000 / (head.len() + 50);
        let (mut c, mut h, mut ratio) = (vec![], vec![], vec![]);
        for round in 0..rounds + 1 {
            let t = Instant::now();
            coregate(head, n);
            let tc = t.elapsed().as_nanos() as f64 / n as f64;
            let t = Instant::now();
            httparse(head, n);
            let th = t.elapsed().as_nanos() as f64 / n as f64;
            if round > 0 {
                c.push(tc);
                h.push(th);
                ratio.push(tc / th);
            }
        }
        println!(
            "{name:<9} {:>11.1}  {:>11.1}  {:>8.3}",
            median(&mut c),
            median(&mut h),
            median(&mut ratio)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("race") {
        return race(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(201));
    }
    let head = HEADS
        .iter()
        .find(|(name, _)| Some(*name) == args.get(2).map(String::as_str))
        .map_or(HEADS[0].1, |(_, h)| h);
    let n: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    if args.get(1).map(String::as_str) == Some("httparse") {
        httparse(head, n);
    } else {
        coregate(head, n);
    }
}
