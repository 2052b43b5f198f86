//! A backend in a process of its own, so that a test can kill it with SIGKILL and start it
//! again on the same port: this test binary run once more, executing only the ignored test
//! [`serve_backend_process`], which serves until killed (120 s at most).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Reply, TestBackend};

const ENV: &str = "COREGATE_TEST_BACKEND";

/// A backend process on a fixed loopback port. Every request gets `200` and the body
/// `PORT PATH`, or `503` when started with `mode = "503"`. Killed on drop.
pub struct BackendProcess {
    pub port: u16,
    child: Option<Child>,
}

impl BackendProcess {
    pub fn start(port: u16, mode: &str) -> BackendProcess {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "common::process::serve_backend_process",
                "--ignored",
                "--test-threads",
                "1",
            ])
            .env(ENV, format!("{port}:{mode}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "backend process on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        BackendProcess {
            port,
            child: Some(child),
        }
    }

    /// SIGKILL, as an operator or the OOM killer would: connections are cut by the kernel.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Not a test: the body of a [`BackendProcess`] (does nothing unless started as one).
#[test]
#[ignore = "runs only inside a backend process started by BackendProcess"]
fn serve_backend_process() {
    let Ok(spec) = std::env::var(ENV) else { return };
    let (port, mode) = spec.split_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    let failing = mode == "503";
    let _backend = TestBackend::start_on(port, move |r| {
        if failing {
            Reply::new(503, super::Body::Length(b"unavailable".to_vec()))
        } else {
            Reply::ok(format!("{port} {}", r.target))
        }
    });
    std::thread::sleep(Duration::from_secs(120));
}
