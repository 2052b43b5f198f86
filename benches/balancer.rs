//! A pick per balancing algorithm, as the proxy makes it (`Upstreams::pick`: the predicate
//! "available and not tried", the per-worker view), over 3 and 100 backends with equal and
//! different weights. Nothing here allocates.

use std::hint::black_box;
use std::sync::Arc;

use coregate::upstream::{Shared, Tried, Upstreams};
use criterion::{criterion_group, criterion_main, Criterion};

fn snapshot(balancer: &str, n: usize, weighted: bool) -> coregate::config::Snapshot {
    let backends: Vec<String> = (0..n)
        .map(|i| {
            let w = if weighted { 1 + i % 5 } else { 1 };
            format!(
                "{{ address = \"10.0.{}.{}:8080\", weight = {w} }}",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let hash = if balancer == "consistent_hash" {
        "hash_on = \"header:x-user\"\n"
    } else {
        ""
    };
    let src = format!(
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[upstreams]]\nname = \"u\"\nbalancer = \"{balancer}\"\n{hash}backends = [{}]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
        backends.join(", ")
    );
    coregate::config::parse("bench.toml", &src).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    g.warm_up_time(std::time::Duration::from_millis(300));
    g.measurement_time(std::time::Duration::from_secs(1));
    for balancer in [
        "round_robin",
        "least_conn",
        "p2c",
        "random",
        "consistent_hash",
    ] {
        for (n, weighted) in [(3, false), (3, true), (100, false), (100, true)] {
            let snap = snapshot(balancer, n, weighted);
            let ups = Upstreams::new(&snap, 0, Arc::new(Shared::new(&snap)));
            let u = &snap.upstreams[0];
            let tried = Tried::default();
            let name = format!("{balancer}/{n}{}", if weighted { " weighted" } else { "" });
            let mut key = 0x9e37_79b9_7f4a_7c15u64;
            g.bench_function(name, |b| {
                b.iter(|| {
                    key = key.wrapping_mul(6364136223846793005).wrapping_add(1);
                    black_box(ups.pick(u, black_box(key), &tried))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
