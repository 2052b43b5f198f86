//! `loadtest bench --quick` end to end: backend, relay floor and direct (and coregate when its
//! release binary exists), every scenario, within a minute, producing the table and the JSON.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_bounded, tempdir, BIN};

fn coregate_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COREGATE_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/coregate");
    p.is_file().then_some(p)
}

#[test]
fn bench_quick_produces_the_table() {
    let dir = tempdir();
    let mut proxies = String::from("relay,direct");
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "--quick", "--results"]).arg(&dir);
    if let Some(bin) = coregate_bin() {
        proxies.insert_str(0, "coregate,");
        cmd.arg("--coregate").arg(bin);
    }
    cmd.args(["--proxies", &proxies]);
    let started = Instant::now();
    let (code, out) = run_bounded(&mut cmd, Duration::from_secs(60));
    eprintln!("bench --quick took {:?}", started.elapsed());
    assert_eq!(code, 0, "{out}");
    for scenario in ["small", "16k", "256k", "post4k", "c1000", "noka"] {
        assert!(out.contains(&format!("### {scenario}: ")), "{out}");
    }
    assert!(out.contains("| relay | "), "{out}");
    assert!(out.contains("| direct | "), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let scenarios = json["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 6);
    for s in scenarios {
        for t in s["targets"].as_array().unwrap() {
            assert!(t["saturation_median"].as_f64().unwrap() > 0.0, "{t}");
            assert_eq!(t["errors"].as_u64(), Some(0), "{t}");
            if t["name"] == "relay" {
                assert!(t["cpu_us_per_req_median"].as_f64().unwrap() > 0.0, "{t}");
                assert!(t["rss_bytes"].as_u64().unwrap() > 0, "{t}");
            }
        }
    }
    // Memory per idle connection: the relay held every connection and its RSS was read.
    let idle = json["idle"].as_array().unwrap();
    let relay = idle
        .iter()
        .find(|r| r["name"] == "relay")
        .expect("relay idle row");
    assert_eq!(relay["established"], relay["connections"], "{relay}");
    assert!(relay["rss_held"].as_u64().unwrap() > 0, "{relay}");
    assert!(
        out.contains("### Memory per idle keep-alive connection"),
        "{out}"
    );
    assert!(std::fs::read_to_string(dir.join("results.md"))
        .unwrap()
        .contains("| target | saturation req/s |"));
    let _ = std::fs::remove_dir_all(&dir);
}
