//! Parses one head N times with coregate or httparse: a fixed workload for
//! `valgrind --tool=callgrind` instruction counts (the wall-clock comparison is
//! `cargo bench --bench parser`).
//! `cargo run --release --example parse_loop -- coregate|httparse minimal|browser|post N`
use coregate::http1::{self, Header};
use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let head: &[u8] = match args.get(2).map(String::as_str) {
        Some("browser") => include_bytes!("../benches/heads/browser.txt"),
        Some("post") => include_bytes!("../benches/heads/post.txt"),
        _ => b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    };
    let n: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    if args.get(1).map(String::as_str) == Some("httparse") {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        for _ in 0..n {
            let mut req = httparse::Request::new(&mut headers);
            let r = req.parse(black_box(head));
            black_box((r.ok(), req.method, req.path));
        }
    } else {
        let mut headers = [Header::default(); 32];
        for _ in 0..n {
            black_box(http1::parse_request(black_box(head), &mut headers).ok());
        }
    }
}
