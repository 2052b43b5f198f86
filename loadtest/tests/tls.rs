//! `loadtest` over TLS against a real coregate with a TLS listener: `run https://…` verifies the
//! certificate (`--cacert`), keeps connections alive, and with a new connection per request
//! resumes sessions unless `--no-tls-resumption` (counted by coregate's own metrics); and
//! `bench --scenarios tls` measures the three TLS scenarios (relay and direct sit them out).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{coregate_release_bin, run_bounded, run_json, serve, tempdir, u, BIN};

fn certs() -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/certs");
    (root.join("edge-ecdsa.pem"), root.join("edge-ecdsa.key"))
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Coregate(Child);

impl Drop for Coregate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metric(admin: u16, name: &str) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn run_speaks_tls_and_resumes_sessions_unless_told_not_to() {
    let be = serve(&["backend", "--listen", "127.0.0.1:0", "--body-size", "100"]);
    let (cert, key) = certs();
    let (listen, admin) = (port(), port());
    let dir = tempdir();
    let conf = dir.join("coregate.toml");
    std::fs::write(
        &conf,
        format!(
            "[runtime]\nworkers = 1\npin = false\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
             [[listeners]]\naddress = \"127.0.0.1:{listen}\"\n[listeners.tls]\n\
             certificates = [ {{ cert = \"{}\", key = \"{}\" }} ]\n\n\
             [[upstreams]]\nname = \"b\"\nbackends = [ {{ address = \"{}\" }} ]\n\n\
             [[routes]]\nname = \"all\"\nupstream = \"b\"\n",
            cert.display(),
            key.display(),
            be.addr
        ),
    )
    .unwrap();
    let child = Command::new(coregate_release_bin())
        .args(["run", "--config"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _coregate = Coregate(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(Instant::now() < deadline, "coregate did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("https://127.0.0.1:{listen}/");
    let cacert = cert.with_file_name("example-ca.pem").display().to_string();

    // Keep-alive: four connections carry every request.
    let r = run_json(
        &url,
        &[
            "--cacert",
            &cacert,
            "-c",
            "4",
            "-n",
            "400",
            "--tls-suite",
            "TLS13_AES_128_GCM_SHA256",
        ],
    );
    assert_eq!((u(&r, &["ok"]), u(&r, &["errors_total"])), (400, 0), "{r}");
    assert_eq!(u(&r, &["connects"]), 4, "{r}");

    // A new connection per request: all but the first few resume.
    let (h0, r0) = (
        metric(admin, "coregate_tls_handshakes_total"),
        metric(admin, "coregate_tls_resumed_total"),
    );
    let r = run_json(
        &url,
        &[
            "--cacert",
            &cacert,
            "-c",
            "4",
            "-n",
            "200",
            "--no-keepalive",
        ],
    );
    assert_eq!((u(&r, &["ok"]), u(&r, &["errors_total"])), (200, 0), "{r}");
    let (h1, r1) = (
        metric(admin, "coregate_tls_handshakes_total"),
        metric(admin, "coregate_tls_resumed_total"),
    );
    assert_eq!(h1 - h0, 200);
    assert!(r1 - r0 >= 190, "resumed {} of 200", r1 - r0);

    // Without resumption every handshake is full; TLS 1.2 works too.
    for version in ["1.2", "1.3"] {
        let r = run_json(
            &url,
            &[
                "--cacert",
                &cacert,
                "-c",
                "4",
                "-n",
                "100",
                "--no-keepalive",
                "--no-tls-resumption",
                "--tls-version",
                version,
            ],
        );
        assert_eq!((u(&r, &["ok"]), u(&r, &["errors_total"])), (100, 0), "{r}");
    }
    assert_eq!(metric(admin, "coregate_tls_resumed_total"), r1);
    assert_eq!(metric(admin, "coregate_tls_handshakes_total"), h1 + 200);

    // A certificate the generator does not trust (the system roots do not know the example
    // CA): every connect fails.
    let r = run_json(&url, &["-c", "1", "-n", "5", "--timeout", "2s"]);
    assert_eq!(u(&r, &["ok"]), 0, "{r}");
    assert_eq!(u(&r, &["errors", "connect"]), 5, "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_measures_the_tls_scenarios() {
    let bin = coregate_release_bin();
    let dir = tempdir();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "bench",
        "--quick",
        "--proxies",
        "coregate,relay",
        "--scenarios",
        "tls",
        "--results",
    ])
    .arg(&dir)
    .arg("--coregate")
    .arg(&bin);
    let (code, out) = run_bounded(&mut cmd, Duration::from_secs(90));
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let scenarios = json["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tls-small", "tls-noka", "tls-resume"]);
    for s in scenarios {
        let targets = s["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 1, "relay sits TLS out: {s}");
        let t = &targets[0];
        assert_eq!(t["name"], "coregate");
        assert!(t["saturation_median"].as_f64().unwrap() > 0.0, "{t}");
        assert_eq!(t["errors"].as_u64(), Some(0), "{t}");
        assert!(t["cpu_us_per_req_median"].as_f64().unwrap() > 0.0, "{t}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
