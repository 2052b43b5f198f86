//! Helpers for the end-to-end tests: spawn the real `loadtest` binary, find the port it bound,
//! run the generator with a JSON report, and read the backend's counters. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_loadtest");

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `loadtest <args>` and waits (at most 10 s) for its "listening on ADDR" line.
pub fn serve(args: &[&str]) -> Proc {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn loadtest");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!("loadtest {args:?} did not report its address");
        }
    };
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Proc { child, addr }
}

/// Runs a command to completion within `limit`, killing it otherwise. Returns (status, stdout).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (i32, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        reader.join().unwrap_or_default(),
    )
}

/// `loadtest run <args> --json FILE --quiet`, returning the parsed report.
pub fn run_json(url: &str, args: &[&str]) -> serde_json::Value {
    let dir = tempdir();
    let json = dir.join("run.json");
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg(url)
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(&json);
    let (code, _) = run_bounded(&mut cmd, Duration::from_secs(30));
    assert_eq!(code, 0, "loadtest run {args:?} failed");
    let text = std::fs::read_to_string(&json).expect("json written");
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&text).expect("valid json")
}

/// A fresh directory under the system temp dir.
pub fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "loadtest-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// One blocking HTTP/1.1 exchange with Connection: close; returns the raw response.
pub fn http_raw(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    out
}

/// The backend's counters from its stats path.
pub fn backend_stats(addr: &str) -> serde_json::Value {
    let raw = http_raw(
        addr,
        b"GET /__stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8(raw).expect("utf8");
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    serde_json::from_str(body).expect("stats json")
}

pub fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("no integer at {path:?} in {v}"))
}

/// coregate's release binary: $COREGATE_BIN, else built from the workspace's sources with
/// `cargo build --release -p coregate` (a no-op when up to date). Panics when there is none:
/// the tests that use it never skip coregate.
pub fn coregate_release_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COREGATE_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "COREGATE_BIN={} is not a file", p.display());
        return p;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target");
    let cargo = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(String::from))
        .unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "coregate"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo} to build coregate: {e}"));
    assert!(
        status.success(),
        "`cargo build --release -p coregate` failed ({status}): cannot test against coregate"
    );
    eprintln!("coregate built or up to date in {:?}", started.elapsed());
    let bin = target.join("release/coregate");
    assert!(bin.is_file(), "no coregate binary at {}", bin.display());
    bin
}
