//! `loadtest bench --quick` end to end: backend, relay floor and direct (and coregate when
//! $COREGATE_BIN is set or target/release/coregate is up to date), every scenario, within a
//! minute, producing the table and the JSON.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{run_bounded, tempdir, BIN};

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let m = if e.path().is_dir() {
            newest_mtime(&e.path())
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(m);
    }
    newest
}

/// coregate's release binary: $COREGATE_BIN, else target/release/coregate when it is newer than
/// every source file (a stale binary would measure old code).
fn coregate_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COREGATE_BIN") {
        return Some(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/release/coregate");
    let built = bin.metadata().and_then(|m| m.modified()).ok()?;
    if newest_mtime(&root.join("src")).is_some_and(|src| src > built) {
        eprintln!("{} is older than src/: not benchmarked", bin.display());
        return None;
    }
    Some(bin)
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
