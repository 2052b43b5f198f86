//! `loadtest idle` holds N keep-alive connections (each answered, none dropped) and reports the
//! memory of the process given with --pid.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{backend_stats, run_bounded, serve, tempdir, u, BIN};

#[test]
fn idle_holds_connections_and_reports_rss() {
    let be = serve(&["backend", "--listen", "127.0.0.1:0"]);
    let dir = tempdir();
    let json = dir.join("idle.json");
    let pid = be.child.id().to_string();
    let url = format!("http://{}/", be.addr);
    let mut cmd = Command::new(BIN);
    cmd.args(["idle", &url, "-c", "300", "--interval", "500ms", "-d", "2s"])
        .args(["--pid", &pid, "--json"])
        .arg(&json);
    let (code, out) = run_bounded(&mut cmd, Duration::from_secs(20));
    assert_eq!(code, 0, "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(u(&r, &["established"]), 300);
    assert_eq!(u(&r, &["errors"]), 0);
    // At least one request per connection, and more as the interval comes round.
    assert!(u(&r, &["ok"]) >= 600, "{r}");
    assert!(u(&r, &["rss_held"]) > 0);
    assert!(r["bytes_per_connection"].as_f64().is_some());
    // The backend saw exactly those connections, each carrying every request sent on it.
    let stats = backend_stats(&be.addr);
    assert_eq!(u(&stats, &["connections"]), 301); // + the stats request itself
    assert_eq!(u(&stats, &["requests"]), u(&r, &["ok"]));
    let _ = std::fs::remove_dir_all(&dir);
}
