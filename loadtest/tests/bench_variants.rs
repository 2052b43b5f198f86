//! `loadtest bench --coregate-variants rr,log-combined,log-json --coregate-extra-bin base=...`
//! against a real coregate, end to end: every target measured, each log variant's access log got
//! exactly one line per request its backends received, in its format, and the extra binary ran
//! as its own target with the rr configuration. coregate is $COREGATE_BIN or built from the
//! workspace (`cargo build --release -p coregate`): this test never skips coregate. The extra
//! binary is the same coregate ($COREGATE_EXTRA_BIN to use another one, e.g. an older build).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{coregate_release_bin, run_bounded, tempdir, BIN};

#[test]
fn access_log_variants_and_an_extra_binary() {
    let bin = coregate_release_bin();
    let extra = std::env::var_os("COREGATE_EXTRA_BIN").map_or(bin.clone(), PathBuf::from);
    let dir = tempdir();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "bench",
        "--quick",
        "--rounds",
        "2",
        "--proxies",
        "coregate",
        "--scenarios",
        "small",
        "--coregate-variants",
        "rr,log-combined,log-json",
    ])
    .arg("--coregate-extra-bin")
    .arg(format!("base={}", extra.display()))
    .arg("--coregate")
    .arg(&bin)
    .arg("--results")
    .arg(&dir);
    let started = Instant::now();
    let (code, out) = run_bounded(&mut cmd, Duration::from_secs(180));
    eprintln!("bench took {:?}", started.elapsed());
    assert_eq!(code, 0, "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let targets = json["scenarios"][0]["targets"].as_array().unwrap();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "coregate-base",
            "coregate-rr",
            "coregate-log-combined",
            "coregate-log-json"
        ],
        "{out}"
    );
    for t in targets {
        assert!(t["saturation_median"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["cpu_us_per_req_median"].as_f64().unwrap() > 0.0, "{t}");
        assert_eq!(t["errors"].as_u64(), Some(0), "{t}");
        assert_eq!(t["cpu_us_per_req"].as_array().unwrap().len(), 2, "{t}");
        let c = &t["coregate"];
        let is_base = t["name"] == "coregate-base";
        assert_eq!(c["extra_bin"], is_base, "{t}");
        let binary = if is_base { &extra } else { &bin };
        assert_eq!(c["binary"], binary.display().to_string(), "{t}");
        let logged = t["name"].as_str().unwrap().contains("-log-");
        assert_eq!(t["access_log"].is_null(), !logged, "{t}");
        if !logged {
            assert_eq!(c["variant"], "rr", "{t}");
        }
    }
    // Every round, each log variant's log got one line per request its backends received; none
    // was left for the SIGTERM at the end, and coregate exited cleanly.
    for (name, format) in [("log-combined", "combined"), ("log-json", "json")] {
        let t = targets
            .iter()
            .find(|t| t["name"] == format!("coregate-{name}"))
            .unwrap();
        let log = &t["access_log"];
        assert_eq!(log["format"], format, "{log}");
        let lines: Vec<u64> = serde_json::from_value(log["lines"].clone()).unwrap();
        let requests: Vec<u64> = serde_json::from_value(log["requests"].clone()).unwrap();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(lines.iter().all(|&n| n > 1000), "{log}");
        assert_eq!(lines, requests, "{log}");
        assert_eq!(log["lines_after_stop"].as_u64(), Some(0), "{log}");
        assert_eq!(log["exit"], "exit status: 0", "{log}");
        // The sample left in the results: the first 100 lines, in the variant's format.
        let path = dir.join(format!("small/{name}.access.log"));
        assert_eq!(log["path"], path.display().to_string(), "{log}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100, "{}", path.display());
        let first = text.lines().next().unwrap();
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(first).unwrap();
            assert_eq!(v["method"], "GET", "{first}");
            assert_eq!(v["status"], 200, "{first}");
            assert_eq!(v["body_bytes_sent"], 100, "{first}");
        } else {
            assert!(first.contains("\"GET / HTTP/1.1\" 200 100 "), "{first}");
        }
        let conf =
            std::fs::read_to_string(dir.join(format!("small/coregate-{name}.toml"))).unwrap();
        assert!(
            conf.contains(&format!(
                "access_log = {{ path = \"{}\", format = \"{format}\" }}",
                path.display()
            )),
            "{conf}"
        );
    }
    for plain in ["coregate-base", "coregate-rr"] {
        let conf = std::fs::read_to_string(dir.join(format!("small/{plain}.toml"))).unwrap();
        assert!(!conf.contains("access_log"), "{conf}");
        assert!(conf.contains("balancer = \"round_robin\""), "{conf}");
    }
    // The tables: ratios against the main binary's first variant, the extra binary listed.
    assert!(out.contains("Ratios against coregate-rr."), "{out}");
    assert!(
        out.contains("| variant | binary | config | CPU us/req by round |"),
        "{out}"
    );
    assert!(
        out.contains(&format!("| coregate-base | {} |", extra.display())),
        "{out}"
    );
    for row in [
        "| coregate-log-combined | combined | ",
        "| coregate-log-json | json | ",
    ] {
        let line = out.lines().find(|l| l.starts_with(row)).expect(row);
        assert!(line.contains(" | yes | "), "{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The gateway variants (`jwt`, `transforms`, `routes1000`) against coregate: each config is
/// accepted and every request answered 200 (the JWT variant's requests carry the token its auth
/// admits; without it every one would be a 401 and the bench would count errors).
#[test]
fn gateway_variants_measure_without_errors() {
    let bin = coregate_release_bin();
    let dir = tempdir();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "bench",
        "--quick",
        "--rounds",
        "1",
        "--proxies",
        "coregate",
        "--scenarios",
        "small",
        "--coregate-variants",
        "rr,jwt,transforms,routes1000",
    ])
    .arg("--coregate")
    .arg(&bin)
    .arg("--results")
    .arg(&dir);
    let (code, out) = run_bounded(&mut cmd, Duration::from_secs(180));
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let targets = json["scenarios"][0]["targets"].as_array().unwrap();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "coregate-rr",
            "coregate-jwt",
            "coregate-transforms",
            "coregate-routes1000"
        ],
        "{out}"
    );
    for t in targets {
        assert_eq!(t["errors"].as_u64(), Some(0), "{t}");
        assert!(t["saturation_median"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["cpu_us_per_req_median"].as_f64().unwrap() > 0.0, "{t}");
    }
    // The idle-memory phase holds its connections with requests each variant answers 200 (the
    // JWT one's carry the token too).
    let idle = json["idle"].as_array().expect("an idle phase");
    // Each variant in both patterns: answered once then silent, and one request per second.
    assert_eq!(idle.len(), 8, "{idle:?}");
    for pattern in ["after one request", "one request per second"] {
        assert_eq!(
            idle.iter().filter(|t| t["pattern"] == pattern).count(),
            4,
            "{idle:?}"
        );
    }
    for t in idle {
        assert_eq!(t["errors"].as_u64(), Some(0), "{t}");
        assert_eq!(t["established"], t["connections"], "{t}");
    }
    let conf =
        |n: &str| std::fs::read_to_string(dir.join(format!("small/coregate-{n}.toml"))).unwrap();
    assert!(conf("jwt").contains("kind = \"jwt\""));
    assert!(conf("transforms").contains("[routes.response_headers]"));
    assert_eq!(conf("routes1000").matches("[[routes]]").count(), 1001);
    let _ = std::fs::remove_dir_all(&dir);
}
