//! `loadtest ratelimit` against a real coregate, end to end: a limit of 1,000 req/s in `sync`
//! mode with 2 workers, 3,000 req/s offered on one keep-alive connection for 4 s; the table and
//! the JSON have their shape, nothing fails, the backend got exactly the admitted requests, and
//! the mean of seconds 2..4 is within ±10% of the limit. coregate is $COREGATE_BIN or built from
//! the workspace (`cargo build --release -p coregate`): this test never skips coregate. nginx
//! (`limit_req`) runs too when it is installed, and is held to the same shape (not required).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{coregate_release_bin, run_bounded, tempdir, BIN};

fn nginx_installed() -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .any(|d| std::path::Path::new(d).join("nginx").is_file());
    found
}

#[test]
fn sync_holds_one_connections_limit_within_10_percent() {
    let bin = coregate_release_bin();
    let nginx = nginx_installed();
    let dir = tempdir();
    let targets = if nginx { "sync,nginx" } else { "sync" };
    let mut cmd = Command::new(BIN);
    cmd.args([
        "ratelimit",
        "--targets",
        targets,
        "--limit",
        "1000",
        "--burst",
        "50",
        "--offered",
        "3000",
        "--workers",
        "2",
        "--duration",
        "4s",
        "--results",
    ])
    .arg(&dir)
    .arg("--coregate")
    .arg(&bin);
    let started = Instant::now();
    let (code, out) = run_bounded(&mut cmd, Duration::from_secs(60));
    eprintln!("ratelimit took {:?}\n{out}", started.elapsed());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "| run | target | admitted per second (s1..s4) | mean s2..s4 | vs limit | worst \
             second | 429s | errors | backend | offered/s |"
        ),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ratelimit.json")).unwrap())
            .unwrap();
    assert_eq!(json["limit"], 1000, "{json}");
    assert_eq!(json["seconds"], 4, "{json}");
    assert_eq!(json["workers"], 2, "{json}");
    let trials = json["trials"].as_array().unwrap();
    let names: Vec<&str> = trials
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    let want: &[&str] = if nginx {
        &["coregate-sync", "nginx"]
    } else {
        &["coregate-sync"]
    };
    assert_eq!(names, want, "{out}");
    for t in trials {
        let name = t["target"].as_str().unwrap();
        let admitted: Vec<u64> = serde_json::from_value(t["admitted_per_second"].clone()).unwrap();
        let limited: Vec<u64> = serde_json::from_value(t["limited_per_second"].clone()).unwrap();
        let sent: Vec<u64> = serde_json::from_value(t["sent_per_second"].clone()).unwrap();
        assert_eq!(admitted.len(), 4, "{t}");
        assert_eq!(limited.len(), 4, "{t}");
        assert_eq!(t["errors"].as_u64(), Some(0), "{t}");
        assert_eq!(t["connections"].as_u64(), Some(1), "{t}");
        // 3,000 offered each second, about 2,000 of them limited.
        for (k, &s) in sent.iter().enumerate() {
            assert!(
                (2850..=3050).contains(&s),
                "second {}: {s} sent: {t}",
                k + 1
            );
        }
        assert!(limited[1..].iter().all(|&l| l > 1500), "{t}");
        // Everything sent was answered; the backend got exactly the admitted ones.
        let total = t["admitted"].as_u64().unwrap() + t["limited"].as_u64().unwrap();
        assert_eq!(total, sent.iter().sum::<u64>(), "{t}");
        assert_eq!(t["backend_requests"], t["admitted"], "{t}");
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("| 1 | {name} | ")))
            .unwrap_or_else(|| panic!("no row for {name} in\n{out}"));
        assert!(row.contains(&format!("| {:.1} |", t["mean_admitted"].as_f64().unwrap())));
        let conf = if name == "nginx" {
            "nginx.conf"
        } else {
            "coregate.toml"
        };
        assert!(dir.join(format!("run1-{name}/{conf}")).is_file(), "{name}");
        if name == "coregate-sync" {
            let mean = t["mean_admitted"].as_f64().unwrap();
            assert!(
                (900.0..=1100.0).contains(&mean),
                "sync: mean of seconds 2..4 {mean}, not within ±10% of 1000: {t}"
            );
            assert_eq!(t["exit"], "exit status: 0", "{t}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
