//! coregate's request head parser against httparse on three heads: a minimal GET, a
//! browser-like GET (~700 bytes, 15 fields) and a JSON POST head.
//!
//! Run: `cargo bench --bench parser`. Criterion measures each parser alone (ns and bytes/s per
//! head); it runs one after the other, so on a shared machine whose speed drifts over seconds
//! the two can land in different phases. The bench then also runs an interleaved race: the
//! two parsers alternate in ~2 ms turns, 101 rounds per head, and it prints the median of the
//! per-round ratios, which such drift cannot bias.

use coregate::http1::{self, Header};
use criterion::{criterion_group, Criterion, Throughput};
use std::hint::black_box;
use std::time::Instant;

const HEADS: [(&str, &[u8]); 3] = [
    (
        "minimal_get",
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ),
    ("browser_get", include_bytes!("heads/browser.txt")),
    ("post_json", include_bytes!("heads/post.txt")),
];

fn coregate(head: &[u8], headers: &mut [Header]) {
    black_box(http1::parse_request(black_box(head), headers).ok());
}

fn httparse<'h>(head: &'h [u8], headers: &mut [httparse::Header<'h>]) {
    let mut req = httparse::Request::new(headers);
    let r = req.parse(black_box(head));
    black_box((r.ok(), req.method, req.path));
}

fn bench(c: &mut Criterion) {
    for (name, head) in HEADS {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(head.len() as u64));
        group.bench_function("coregate", |b| {
            let mut headers = [Header::default(); 32];
            b.iter(|| coregate(head, &mut headers))
        });
        group.bench_function("httparse", |b| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            b.iter(|| httparse(head, &mut headers))
        });
        group.finish();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The interleaved comparison described at the top.
fn race(rounds: usize) {
    println!("\ninterleaved race, median of {rounds} rounds");
    println!(
        "{:<12} {:>11} {:>11} {:>18}",
        "head", "coregate ns", "httparse ns", "coregate/httparse"
    );
    let mut ours = [Header::default(); 32];
    let mut theirs = [httparse::EMPTY_HEADER; 32];
    for (name, head) in HEADS {
        let n = 2_000_000 / (head.len() + 50);
        let (mut c, mut h, mut ratio) = (vec![], vec![], vec![]);
        for round in 0..=rounds {
            let t = Instant::now();
            (0..n).for_each(|_| coregate(head, &mut ours));
            let tc = t.elapsed().as_nanos() as f64 / n as f64;
            let t = Instant::now();
            (0..n).for_each(|_| httparse(head, &mut theirs));
            let th = t.elapsed().as_nanos() as f64 / n as f64;
            if round > 0 {
                // round 0 warms up
                c.push(tc);
                h.push(th);
                ratio.push(tc / th);
            }
        }
        println!(
            "{name:<12} {:>11.1} {:>11.1} {:>18.3}",
            median(&mut c),
            median(&mut h),
            median(&mut ratio)
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes `--bench`; `cargo test --benches` runs each criterion bench once
    // as a smoke test and needs no race.
    if std::env::args().any(|a| a == "--bench") {
        race(101);
    }
}
