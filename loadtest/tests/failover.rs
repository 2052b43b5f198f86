//! `loadtest failover` against coregate, end to end: one of three backends killed with SIGKILL
//! under load and restarted; no request may fail, and the restarted backend must get traffic
//! again. coregate is built (`cargo build --release -p coregate`, a no-op when up to date) unless
//! $COREGATE_BIN names a binary: this test never skips coregate.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{coregate_release_bin, run_bounded, tempdir, BIN};

#[test]
fn killing_a_backend_behind_coregate_fails_no_request() {
    let bin = coregate_release_bin();
    let dir = tempdir();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "failover",
        "--proxies",
        "coregate",
        "--rate",
        "1000",
        "-c",
        "20",
        "--duration",
        "6s",
        "--kill-at",
        "1500ms",
        "--restart-at",
        "3s",
        "--results",
    ])
    .arg(&dir)
    .arg("--coregate")
    .arg(&bin);
    let started = Instant::now();
    let (code, out) = run_bounded(&mut cmd, Duration::from_secs(30));
    eprintln!("failover took {:?}", started.elapsed());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("| run | proxy | sent | ok | failed |"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("failover.json")).unwrap()).unwrap();
    let trials = json["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 1, "{json}");
    let t = &trials[0];
    assert_eq!(t["proxy"], "coregate", "{t}");
    assert!(t["killed_at_s"].as_f64().is_some(), "{t}");
    assert!(t["restarted_at_s"].as_f64().is_some(), "{t}");
    // Nothing failed, and (nearly) everything offered was sent and answered.
    assert_eq!(t["failed"].as_u64(), Some(0), "{t}");
    let ok = t["ok"].as_u64().unwrap();
    assert!(ok >= 5400, "only {ok} of ~6000 requests answered: {t}");
    // The restarted backend is back in rotation: coregate's checks (every 500 ms, rise 2) saw
    // it, and requests reached it.
    assert!(t["restarted_checks"].as_u64().unwrap() >= 2, "{t}");
    assert!(t["restarted_requests"].as_u64().unwrap() > 0, "{t}");
    let first = t["first_request_after_restart_s"].as_f64().unwrap();
    assert!(
        first < 2.5,
        "first request {first} s after the restart: {t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
