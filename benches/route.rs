//! Route lookup: the compiled table of the gateway example shape, scaled to 50 routes, against
//! typical request hosts and paths; and a table of 1,000 prefix routes (`/svcN/`), found through
//! the first-segment index, against a linear scan of the same prefixes longest first (what the
//! table did before the index).

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

fn thousand() -> coregate::config::Snapshot {
    let mut src = String::from(
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[upstreams]]\nname = \"u\"\nbackends = [{ address = \"127.0.0.1:9000\" }]\n",
    );
    for i in 0..1000 {
        src += &format!(
            "[[routes]]\nname = \"svc{i}\"\npath_prefix = \"/svc{i}/\"\nupstream = \"u\"\n"
        );
    }
    src += "[[routes]]\nname = \"default\"\nupstream = \"u\"\n";
    coregate::config::parse("bench.toml", &src).unwrap()
}

fn bench_thousand(c: &mut Criterion) {
    let snap = thousand();
    let t = &snap.listeners[0].routes;
    let mut linear: Vec<(Vec<u8>, usize)> = (0..1000)
        .map(|i| (format!("/svc{i}/").into_bytes(), i))
        .chain([(b"/".to_vec(), 1000)])
        .collect();
    linear.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut g = c.benchmark_group("route_find_1000");
    for (name, path) in [
        ("prefix /svc500/", &b"/svc500/items/42"[..]),
        ("prefix /svc7/", b"/svc7/x"),
        ("catch-all", b"/static/app.js"),
    ] {
        let want = t.find(b"a.test", path).unwrap().index;
        let scan = linear.iter().find(|(p, _)| path.starts_with(p)).unwrap().1;
        assert_eq!(want, scan);
        g.bench_function(format!("index, {name}"), |b| {
            b.iter(|| {
                t.find(black_box(b"a.test"), black_box(path))
                    .map(|r| r.index)
            })
        });
        g.bench_function(format!("linear scan, {name}"), |b| {
            b.iter(|| {
                linear
                    .iter()
                    .find(|(p, _)| black_box(path).starts_with(p))
                    .map(|r| r.1)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_thousand);
criterion_main!(benches);
