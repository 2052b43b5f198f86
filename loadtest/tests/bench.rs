//! `loadtest bench --quick` end to end: backend, coregate, relay floor and direct, every
//! scenario, within a minute (plus building coregate when $COREGATE_BIN is not set), producing
//! the table and the JSON. coregate is always measured: `coregate_release_bin` builds it (a
//! stale or missing binary is rebuilt, never silently left out).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{coregate_release_bin, run_bounded, tempdir, BIN};

#[test]
fn bench_quick_produces_the_table() {
    let bin = coregate_release_bin();
    let dir = tempdir();
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "--quick", "--results"]).arg(&dir);
    cmd.arg("--coregate").arg(&bin);
    cmd.args(["--proxies", "coregate,relay,direct"]);
    let started = Instant::now();
    let (code, out) = run_bounded(&mut cmd, Duration::from_secs(60));
    eprintln!("bench --quick took {:?}", started.elapsed());
    assert_eq!(code, 0, "{out}");
    for scenario in ["small", "16k", "256k", "post4k", "c1000", "noka"] {
        assert!(out.contains(&format!("### {scenario}: ")), "{out}");
    }
    assert!(out.contains("| coregate | "), "{out}");
    assert!(out.contains("| relay | "), "{out}");
    assert!(out.contains("| direct | "), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let scenarios = json["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 6);
    for s in scenarios {
        let names: Vec<&str> = s["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["coregate", "relay", "direct"], "{s}");
        for t in s["targets"].as_array().unwrap() {
            assert!(t["saturation_median"].as_f64().unwrap() > 0.0, "{t}");
            assert_eq!(t["errors"].as_u64(), Some(0), "{t}");
            if t["name"] == "relay" || t["name"] == "coregate" {
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
    let cg = idle
        .iter()
        .find(|r| r["name"] == "coregate")
        .expect("coregate idle row");
    assert_eq!(cg["established"], cg["connections"], "{cg}");
    assert_eq!(cg["errors"].as_u64(), Some(0), "{cg}");
    assert!(
        out.contains("### Memory per idle keep-alive connection"),
        "{out}"
    );
    assert!(std::fs::read_to_string(dir.join("results.md"))
        .unwrap()
        .contains("| target | saturation req/s |"));
    let _ = std::fs::remove_dir_all(&dir);
}
