//! coregate's request head parser against httparse on three heads: a minimal GET, a
//! browser-like GET (~700 bytes, 15 fields) and a JSON POST head.
//! Run: `cargo bench --bench parser`.

use coregate::http1::{self, Header};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const MINIMAL: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

const BROWSER: &[u8] = include_bytes!("heads/browser.txt");

const POST_JSON: &[u8] = include_bytes!("heads/post.txt");

fn bench(c: &mut Criterion) {
    for (name, head) in [
        ("minimal_get", MINIMAL),
        ("browser_get", BROWSER),
        ("post_json", POST_JSON),
    ] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(head.len() as u64));
        group.bench_function("coregate", |b| {
            let mut headers = [Header::default(); 32];
            b.iter(|| {
                let r = http1::parse_request(black_box(head), &mut headers);
                black_box(r.ok());
            })
        });
        group.bench_function("httparse", |b| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            b.iter(|| {
                let mut req = httparse::Request::new(&mut headers);
                let r = req.parse(black_box(head));
                black_box((r.ok(), req.method, req.path));
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
