//! Route lookup: the compiled table of the gateway example shape, scaled to 50 routes, against
//! typical request hosts and paths.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

fn table() -> coregate::config::Snapshot {
    let mut src = String::from(
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[upstreams]]\nname = \"u\"\nbackends = [{ address = \"127.0.0.1:9000\" }]\n",
    );
    for i in 0..20 {
        src += &format!(
            "[[routes]]\nname = \"svc{i}\"\nhosts = [\"svc{i}.example.com\"]\npath_prefix = \"/v1/\"\nstrip_prefix = true\nupstream = \"u\"\n"
        );
    }
    for i in 0..20 {
        src += &format!(
            "[[routes]]\nname = \"api{i}\"\npath_prefix = \"/api/{i}/\"\nupstream = \"u\"\n"
        );
    }
    for i in 0..9 {
        src += &format!(
            "[[routes]]\nname = \"wild{i}\"\nhosts = [\"*.t{i}.example.org\"]\nupstream = \"u\"\n"
        );
    }
    src += "[[routes]]\nname = \"default\"\nupstream = \"u\"\n";
    coregate::config::parse("bench.toml", &src).unwrap()
}

fn bench(c: &mut Criterion) {
    let snap = table();
    let t = &snap.listeners[0].routes;
    let cases: [(&str, &[u8], &[u8]); 5] = [
        ("exact host", b"svc7.example.com", b"/v1/users/42"),
        (
            "exact host, mixed case + port",
            b"SVC7.Example.com:8080",
            b"/v1/users/42",
        ),
        ("wildcard host", b"a.t5.example.org", b"/index.html"),
        (
            "prefix, unknown host",
            b"unknown.test",
            b"/api/17/items?x=1",
        ),
        ("default", b"unknown.test", b"/static/app.js"),
    ];
    let mut g = c.benchmark_group("route_find");
    for (name, host, path) in cases {
        assert!(t.find(host, path).is_some());
        g.bench_function(name, |b| {
            b.iter(|| t.find(black_box(host), black_box(path)).map(|r| r.upstream))
        });
    }
    g.finish();
    let r = t.find(b"svc7.example.com", b"/v1/users/42").unwrap();
    c.bench_function("rewrite strip", |b| {
        b.iter(|| r.rewrite(black_box(b"/v1/users/42?x=1")).len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
