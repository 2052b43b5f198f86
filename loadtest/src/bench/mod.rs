//! `loadtest bench`: the side-by-side comparison. For each scenario it starts the backend (on
//! the generator's CPUs) and every target (coregate, optionally nginx and HAProxy, the relay
//! floor, and direct = no proxy; proxies alone on their own CPUs), then, alternating the order of
//! the targets every round: saturation throughput in closed loop; then, at one fixed offered rate
//! below every target's saturation, open-loop latency and the proxy's CPU time per request
//! (utime + stime of its process tree). Results: a table on stdout, JSON and markdown under the
//! results folder, and with `--record` the markdown appended to docs/benchmarks.md.

mod accesslog;
mod measure;
pub(crate) mod report;
pub(crate) mod targets;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::run::{self, report::Latency};
use crate::util::{self, parse_duration};
use measure::{idle_memory, scenario};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// A short run (one round, ~1 s per measurement), under a minute with three targets.
    #[arg(long)]
    pub quick: bool,
    /// Targets to measure: any of coregate, relay, direct, nginx, haproxy.
    #[arg(long, default_value = "coregate,relay,direct")]
    pub proxies: String,
    /// Also compare with these (nginx, haproxy) when installed.
    #[arg(long, default_value = "")]
    pub compare: String,
    /// Measure coregate in several configurations side by side, in the same alternating
    /// rounds, instead of one: any of rr (balancer = "round_robin", what `coregate` alone
    /// measures), p2c (balancer = "p2c"), health (p2c and [upstreams.health] every 1s),
    /// log-combined and log-json (rr and an access log on the listener, format "combined" or
    /// "json", written to <results>/<scenario>/<variant>.access.log, cut back to its first
    /// 100 lines after every run), limit (rr and a [[rate_limits]] table that never trips:
    /// client_ip, rate = 100000000 per 1s, mode = "sync", named by the route). Targets are
    /// named coregate-rr, coregate-p2c, ...; ratios are against the first listed.
    #[arg(long, default_value = "")]
    pub coregate_variants: String,
    /// Another coregate binary (e.g. an older build), run with the rr configuration as target
    /// coregate-NAME in the same alternating rounds (before the main binary's targets; ratios
    /// stay against the main binary's first variant). Repeatable.
    #[arg(long = "coregate-extra-bin", value_name = "NAME=PATH")]
    pub coregate_extra_bin: Vec<String>,
    /// Backend processes behind the proxies (one worker each, on the generator's CPUs); coregate,
    /// nginx and HAProxy balance over all of them, relay and direct use the first. Default 1,
    /// or 3 with --coregate-variants.
    #[arg(long)]
    pub backends: Option<usize>,
    /// CPU sets "GENERATOR/PROXY": generator and backend on the first, the proxy alone on the
    /// second (lists and ranges: "0/1", "0-1/2-3").
    #[arg(long, default_value = "0/1")]
    pub cpus: String,
    /// Rounds per measurement (median and spread are over rounds).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Length of each measurement.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Fixed offered rate (req/s) for the CPU and latency figures; default: a fraction of the
    /// slowest target's saturation.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The fraction of the slowest saturation used as the fixed rate.
    #[arg(long, default_value_t = 0.5)]
    pub rate_fraction: f64,
    /// Scenarios: a list of all (the plain HTTP ones: small, 16k, 256k, post4k, c1000, noka),
    /// tls (tls-small, tls-noka, tls-resume: HTTPS to the proxies with the certificate
    /// config/certs/edge-ecdsa.pem, TLS 1.3, TLS_AES_128_GCM_SHA256, X25519, on every target;
    /// relay and direct sit them out), or names.
    #[arg(long, default_value = "all")]
    pub scenarios: String,
    /// coregate binary (default: target/release/coregate under the workspace root).
    #[arg(long)]
    pub coregate: Option<PathBuf>,
    /// Build coregate with `cargo build --release -p coregate` when the binary is missing.
    #[arg(long)]
    pub build: bool,
    /// Results folder (default: loadtest/results/<UTC time> under the workspace root).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Append the markdown to docs/benchmarks.md under the workspace root.
    #[arg(long)]
    pub record: bool,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub description: String,
    pub body_size: u64,
    pub post_body: Option<u64>,
    pub connections: usize,
    pub keepalive: bool,
    /// HTTPS (TLS 1.3) to the proxies, with session resumption or not; the relay and direct
    /// targets, which do not speak TLS, sit these out.
    pub tls: Option<bool>,
}

/// The scenarios `--scenarios all` runs (plain HTTP), then those of `--scenarios tls`.
pub fn scenarios() -> Vec<Scenario> {
    let s = |name, description: &str, body_size, post_body, connections, keepalive| Scenario {
        name,
        description: description.to_string(),
        body_size,
        post_body,
        connections,
        keepalive,
        tls: None,
    };
    let tls = |name, description: &str, keepalive, resumption| Scenario {
        tls: Some(resumption),
        ..s(name, description, 100, None, 50, keepalive)
    };
    vec![
        s(
            "small",
            "GET, 100 B responses, 50 keep-alive connections",
            100,
            None,
            50,
            true,
        ),
        s(
            "16k",
            "GET, 16 KiB responses, 50 keep-alive connections",
            16 << 10,
            None,
            50,
            true,
        ),
        s(
            "256k",
            "GET, 256 KiB responses, 50 keep-alive connections",
            256 << 10,
            None,
            50,
            true,
        ),
        s(
            "post4k",
            "POST 4 KiB bodies, 100 B responses, 50 keep-alive connections",
            100,
            Some(4096),
            50,
            true,
        ),
        s(
            "c1000",
            "GET, 100 B responses, 1000 keep-alive connections",
            100,
            None,
            1000,
            true,
        ),
        s(
            "noka",
            "GET, 100 B responses, no keep-alive (a new connection per request), 50 clients",
            100,
            None,
            50,
            false,
        ),
        tls(
            "tls-small",
            "HTTPS: GET, 100 B responses, 50 keep-alive TLS connections",
            true,
            true,
        ),
        tls(
            "tls-noka",
            "HTTPS: a new TLS connection per request, full handshakes (no resumption), 50 clients",
            false,
            false,
        ),
        tls(
            "tls-resume",
            "HTTPS: a new TLS connection per request, sessions resumed, 50 clients",
            false,
            true,
        ),
    ]
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub name: String,
    pub saturation_rps: Vec<f64>,
    pub saturation_median: f64,
    /// (max - min) / median over rounds, in percent.
    pub saturation_spread_pct: f64,
    pub cpu_us_per_req: Vec<f64>,
    pub cpu_us_per_req_median: Option<f64>,
    pub cpu_spread_pct: Option<f64>,
    /// Latency at the fixed rate, all rounds merged (coordinated omission corrected).
    pub latency: Latency,
    pub achieved_rps: f64,
    pub rss_bytes: Option<u64>,
    pub errors: u64,
    pub error_kinds: run::Errors,
    pub unsent: u64,
    pub generator_cpu_us_per_req: f64,
    /// The generator's own sending lateness at the fixed rate (included in `latency`).
    pub generator_lag: Latency,
    /// Requests each backend received during this target's fixed-rate runs (all rounds).
    pub backend_requests: Vec<u64>,
    /// Lines of its access log against the requests it forwarded (log-combined, log-json).
    pub access_log: Option<accesslog::LogCounts>,
    /// How coregate ran (None for the other targets).
    pub coregate: Option<CoregateSetup>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CoregateSetup {
    pub binary: String,
    /// rr, p2c, ... (rr for --coregate-extra-bin).
    pub variant: String,
    /// What the variant sets.
    pub config: String,
    /// From --coregate-extra-bin rather than the main binary.
    pub extra_bin: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub description: String,
    pub rate: f64,
    pub targets: Vec<TargetResult>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleRow {
    pub name: String,
    /// How the connections were held: "after one request" (each answered once, then silent)
    /// or "one request per second".
    pub pattern: &'static str,
    pub connections: usize,
    pub established: u64,
    pub rss_before: Option<u64>,
    pub rss_held: Option<u64>,
    pub bytes_per_connection: Option<f64>,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub command: String,
    pub started_utc: String,
    /// /proc/loadavg (1, 5, 15 min) at the start and at the end: other work on the machine
    /// shows here, and in the spreads.
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub cpus_generator: Vec<usize>,
    pub cpus_proxy: Vec<usize>,
    pub online_cpus: usize,
    pub kernel: String,
    pub rounds: usize,
    pub seconds_per_measurement: f64,
    /// Backend processes behind the proxies.
    pub backends: usize,
    pub quick: bool,
    pub scenarios: Vec<ScenarioResult>,
    /// Memory per idle keep-alive connection, per proxy.
    pub idle: Vec<IdleRow>,
    pub notes: Vec<String>,
}

fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("invalid CPU list {s:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b > 1023 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("empty CPU list {s:?}"));
    }
    Ok(out)
}

pub fn parse_cpus(s: &str) -> Result<(Vec<usize>, Vec<usize>), String> {
    let (g, p) = s
        .split_once('/')
        .ok_or_else(|| format!("invalid --cpus {s:?} (expected GENERATOR/PROXY, e.g. 0/1)"))?;
    Ok((parse_cpu_list(g)?, parse_cpu_list(p)?))
}

/// `--coregate-variants`: "rr,p2c,health" (empty: none; no duplicates).
fn parse_variants(s: &str) -> Result<Vec<targets::Variant>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let v = targets::Variant::parse(&part.to_ascii_lowercase())?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// `--coregate-extra-bin NAME=PATH`, each: NAME of letters, digits, `-`, `_` or `.`, not a
/// variant's name, not given twice; PATH an existing file.
fn parse_extra_bins(specs: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for spec in specs {
        let bad = |why: &str| format!("--coregate-extra-bin {spec:?}: {why}");
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=PATH"))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad("NAME must be letters, digits, '-', '_' or '.'"));
        }
        if targets::Variant::parse(name).is_ok() {
            return Err(bad(
                "NAME is a variant's name (the target would be ambiguous)",
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad("NAME given twice"));
        }
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(bad("no such file"));
        }
        out.push((name.to_string(), path));
    }
    Ok(out)
}

/// Drops from `names` the external proxies among `progs` that are not installed, noting why.
pub(crate) fn drop_missing(names: &mut Vec<String>, notes: &mut Vec<String>, progs: &[&str]) {
    for &prog in progs {
        if names.iter().any(|n| n == prog) && targets::which(prog).is_none() {
            let n =
                format!("{prog} skipped: not installed (install with `apt-get install {prog}`)");
            eprintln!("{n}");
            notes.push(n);
            names.retain(|n| n != prog);
        }
    }
}

/// Prints a run's report (`md`) and writes it to `dir` as NAME.json and NAME.md.
pub(crate) fn write_report<T: serde::Serialize>(
    dir: &std::path::Path,
    name: &str,
    report: &T,
    md: &str,
) -> Result<(), String> {
    print!("{md}");
    let json = serde_json::to_string_pretty(report).unwrap_or_default() + "\n";
    for (ext, text) in [("json", json.as_str()), ("md", md)] {
        let p = dir.join(format!("{name}.{ext}"));
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    eprintln!("results written to {}", dir.display());
    Ok(())
}

/// How a measuring run began.
pub(crate) struct RunStart {
    pub started: String,
    pub loadavg_start: String,
    /// The results folder, made and absolute (nginx resolves its paths against its prefix and
    /// coregate's access_log path must be absolute).
    pub dir: std::path::PathBuf,
}

/// Pins this process (generator threads, backends it starts) to `gen`, raises its file limit,
/// and makes the results folder: `results`, or `<root>/loadtest/results/<prefix><UTC time>`.
pub(crate) fn begin_run(
    gen: &[usize],
    results: Option<&std::path::Path>,
    root: &std::path::Path,
    prefix: &str,
) -> Result<RunStart, String> {
    util::set_affinity(0, gen).map_err(|e| format!("pinning to CPUs {gen:?}: {e}"))?;
    util::raise_nofile();
    let started = report::utc_now();
    let loadavg_start = loadavg();
    let stamp = started.replace([':', '-'], "").replace(' ', "-");
    let dir = results.map_or_else(
        || {
            root.join("loadtest/results")
                .join(format!("{prefix}{stamp}"))
        },
        |p| p.to_path_buf(),
    );
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(RunStart {
        started,
        loadavg_start,
        dir,
    })
}

pub(crate) fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The workspace root: the nearest ancestor of the current directory whose Cargo.toml declares
/// a workspace, else the one this binary was built from.
pub fn workspace_root() -> PathBuf {
    if let Ok(mut d) = std::env::current_dir() {
        loop {
            let toml = d.join("Cargo.toml");
            if std::fs::read_to_string(&toml).is_ok_and(|t| t.contains("[workspace]")) {
                return d;
            }
            if !d.pop() {
                break;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

struct Plan {
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    gen: Vec<usize>,
    proxy: Vec<usize>,
    targets: Vec<String>,
    coregate: PathBuf,
    /// --coregate-extra-bin: target coregate-NAME runs this binary with the rr configuration.
    extra_bins: Vec<(String, PathBuf)>,
    backends: usize,
}

/// How a coregate target runs.
#[derive(Debug, Clone)]
pub(crate) struct CoregateRun {
    pub binary: PathBuf,
    pub variant: targets::Variant,
    /// From --coregate-extra-bin, not the main binary.
    pub extra_bin: bool,
}

impl Plan {
    /// A coregate target's binary and configuration: "coregate" and "coregate-VARIANT" run the
    /// main binary; "coregate-NAME" of --coregate-extra-bin runs its binary with rr.
    fn coregate_of(&self, target: &str) -> Option<CoregateRun> {
        let extra = target
            .strip_prefix("coregate-")
            .and_then(|n| self.extra_bins.iter().find(|(name, _)| name == n));
        match extra {
            Some((_, bin)) => Some(CoregateRun {
                binary: bin.clone(),
                variant: targets::Variant::Rr,
                extra_bin: true,
            }),
            None => Some(CoregateRun {
                binary: self.coregate.clone(),
                variant: targets::Variant::of_target(target)?,
                extra_bin: false,
            }),
        }
    }
}

pub fn main(args: BenchArgs) -> i32 {
    match bench(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("loadtest bench: {e}");
            2
        }
    }
}

fn bench(args: &BenchArgs) -> Result<(), String> {
    let (gen, proxy) = parse_cpus(&args.cpus)?;
    let online = util::allowed_cpus();
    let check = |set: &[usize]| {
        set.iter()
            .all(|c| online.contains(c))
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "--cpus {:?}: CPU not available (have {online:?})",
                    args.cpus
                )
            })
    };
    check(&gen)?;
    check(&proxy)?;
    let root = workspace_root();
    let mut notes = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for n in args.proxies.split(',').chain(args.compare.split(',')) {
        let n = n.trim().to_ascii_lowercase();
        if n.is_empty() || names.contains(&n) {
            continue;
        }
        if !["coregate", "relay", "direct", "nginx", "haproxy"].contains(&n.as_str()) {
            return Err(format!(
                "unknown target {n:?} (coregate, relay, direct, nginx, haproxy)"
            ));
        }
        names.push(n);
    }
    let variants = parse_variants(&args.coregate_variants)?;
    if !variants.is_empty() {
        // The variants take coregate's place (or lead the list when coregate was not named).
        let at = names.iter().position(|n| n == "coregate").unwrap_or(0);
        names.retain(|n| n != "coregate");
        for (k, v) in variants.iter().enumerate() {
            names.insert(at + k, format!("coregate-{}", v.name()));
        }
    }
    let extra_bins = parse_extra_bins(&args.coregate_extra_bin)?;
    if !extra_bins.is_empty() {
        // Before the main binary's targets (or leading the list when there are none).
        let at = names
            .iter()
            .position(|n| targets::Variant::of_target(n).is_some())
            .unwrap_or(0);
        for (k, (name, _)) in extra_bins.iter().enumerate() {
            names.insert(at + k, format!("coregate-{name}"));
        }
    }
    // The main binary's targets (not those of --coregate-extra-bin).
    let is_coregate = |n: &String| targets::Variant::of_target(n).is_some();
    let mut coregate = args
        .coregate
        .clone()
        .unwrap_or_else(|| root.join("target/release/coregate"));
    if names.iter().any(is_coregate) {
        match targets::coregate_binary(args.coregate.as_deref(), args.build, &root) {
            Ok(p) => coregate = p,
            Err(e) if args.coregate.is_some() => return Err(e),
            Err(e) => {
                let n = format!("coregate skipped: {e}");
                eprintln!("{n}");
                notes.push(n);
                names.retain(|n| !is_coregate(n));
            }
        }
    }
    drop_missing(&mut names, &mut notes, &["nginx", "haproxy"]);
    if names.is_empty() {
        return Err("no target left to measure".into());
    }
    let all = scenarios();
    let mut wanted: Vec<Scenario> = Vec::new();
    for n in args.scenarios.split(',').map(str::trim) {
        let picked: Vec<&Scenario> = match n {
            "all" => all.iter().filter(|s| s.tls.is_none()).collect(),
            "tls" => all.iter().filter(|s| s.tls.is_some()).collect(),
            _ => vec![all.iter().find(|s| s.name == n).ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|s| s.name).collect();
                format!("unknown scenario {n:?} (all, tls, {})", names.join(", "))
            })?],
        };
        wanted.extend(picked.into_iter().cloned());
    }
    let plan = Plan {
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        duration: args.duration.unwrap_or(if args.quick {
            Duration::from_millis(800)
        } else {
            Duration::from_secs(3)
        }),
        warmup: if args.quick {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(500)
        },
        gen: gen.clone(),
        proxy: proxy.clone(),
        targets: names,
        coregate,
        extra_bins,
        backends: args
            .backends
            .unwrap_or(if variants.is_empty() { 1 } else { 3 })
            .clamp(1, 64),
    };
    // Everything this process runs from now on (generator threads, backend) stays on `gen`.
    let RunStart {
        started,
        loadavg_start,
        dir,
    } = begin_run(&gen, args.results.as_deref(), &root, "")?;
    let mut results = Vec::new();
    for s in &wanted {
        // A scenario whose backend or target died is run again once from scratch.
        let mut outcome = scenario(s, &plan, args, &dir);
        if let Err(e) = &outcome {
            let n = format!("scenario {} restarted: {e}", s.name);
            eprintln!("{n}");
            notes.push(n);
            outcome = scenario(s, &plan, args, &dir);
        }
        match outcome {
            Ok(r) => results.push(r),
            Err(e) => {
                let n = format!("scenario {} abandoned: {e}", s.name);
                eprintln!("{n}");
                notes.push(n);
            }
        }
    }
    if results.is_empty() {
        return Err("no scenario completed".into());
    }
    let idle = match idle_memory(&plan, args, &dir.join("idle")) {
        Ok(rows) => rows,
        Err(e) => {
            let n = format!("idle-connection memory not measured: {e}");
            eprintln!("{n}");
            notes.push(n);
            Vec::new()
        }
    };
    let bench = BenchReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_utc: started,
        loadavg_start,
        loadavg_end: loadavg(),
        cpus_generator: gen,
        cpus_proxy: proxy,
        online_cpus: online.len(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        rounds: plan.rounds,
        seconds_per_measurement: plan.duration.as_secs_f64(),
        backends: plan.backends,
        quick: args.quick,
        scenarios: results,
        idle,
        notes,
    };
    let md = report::markdown(&bench);
    write_report(&dir, "results", &bench, &md)?;
    if args.record {
        let path = root.join("docs/benchmarks.md");
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(format!("\n{md}").as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::measure::{median, round_rate, spread_pct};
    use super::*;

    #[test]
    fn cpu_sets_and_stats() {
        assert_eq!(parse_cpus("0/1"), Ok((vec![0], vec![1])));
        assert_eq!(parse_cpus("0-1/2,3"), Ok((vec![0, 1], vec![2, 3])));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("1-0/2").is_err());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(spread_pct(&[90.0, 100.0, 110.0]), 20.0);
        assert_eq!(round_rate(12345.0), 12000.0);
        assert_eq!(round_rate(987.0), 980.0);
    }

    #[test]
    fn extra_binaries() {
        let me = std::env::current_exe().unwrap();
        let spec = |s: &str| format!("{s}={}", me.display());
        assert_eq!(
            parse_extra_bins(&[spec("base"), spec("v1.2_x")]),
            Ok(vec![
                ("base".into(), me.clone()),
                ("v1.2_x".into(), me.clone())
            ])
        );
        for bad in [
            vec![spec("rr")],
            vec![spec("log-json")],
            vec![spec("a b")],
            vec![spec("")],
            vec![spec("base"), spec("base")],
            vec!["base".to_string()],
            vec!["base=/nonexistent/coregate".to_string()],
        ] {
            assert!(parse_extra_bins(&bad).is_err(), "{bad:?}");
        }
        let plan = Plan {
            rounds: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            gen: vec![0],
            proxy: vec![1],
            targets: Vec::new(),
            coregate: PathBuf::from("/main"),
            extra_bins: vec![("base".into(), PathBuf::from("/old"))],
            backends: 3,
        };
        let run = |t: &str| {
            plan.coregate_of(t)
                .map(|r| (r.binary, r.variant, r.extra_bin))
        };
        use targets::Variant;
        assert_eq!(
            run("coregate-base"),
            Some((PathBuf::from("/old"), Variant::Rr, true))
        );
        assert_eq!(
            run("coregate-log-json"),
            Some((PathBuf::from("/main"), Variant::LogJson, false))
        );
        assert_eq!(
            run("coregate"),
            Some((PathBuf::from("/main"), Variant::Rr, false))
        );
        assert_eq!(run("coregate-other"), None);
        assert_eq!(run("nginx"), None);
    }

    #[test]
    fn variants_and_their_configs() {
        use targets::Variant;
        assert_eq!(parse_variants(""), Ok(vec![]));
        assert_eq!(
            parse_variants("rr, P2C,health,rr"),
            Ok(vec![Variant::Rr, Variant::P2c, Variant::Health])
        );
        assert!(parse_variants("rr,wrr").is_err());
        assert_eq!(Variant::of_target("coregate"), Some(Variant::Rr));
        assert_eq!(Variant::of_target("coregate-health"), Some(Variant::Health));
        assert_eq!(Variant::of_target("coregate-x"), None);
        assert_eq!(Variant::of_target("nginx"), None);
        let l: std::net::SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let b: Vec<std::net::SocketAddr> = (1..=3)
            .map(|p| format!("127.0.0.1:900{p}").parse().unwrap())
            .collect();
        let dir = std::path::Path::new("/tmp/r \"x\"");
        let rr = targets::coregate_config(l, &b, Variant::Rr, dir, None).unwrap();
        assert!(rr.contains("balancer = \"round_robin\"\n"), "{rr}");
        assert!(
            rr.contains("{ address = \"127.0.0.1:9003\", weight = 1 } ]"),
            "{rr}"
        );
        assert!(!rr.contains("[upstreams.health]"), "{rr}");
        assert!(!rr.contains("access_log"), "{rr}");
        let h = targets::coregate_config(l, &b, Variant::Health, dir, None).unwrap();
        assert!(h.contains("balancer = \"p2c\""), "{h}");
        assert!(h.contains("[upstreams.health]\npath = \"/__health\"\ninterval = \"1s\"\n"));
        // The health table belongs to the upstream: it comes before the routes.
        assert!(h.find("[upstreams.health]") < h.find("[[routes]]"));
        assert!(!h.contains("access_log"), "{h}");
        // The log variants are rr plus an access log on the listener, in the given directory.
        for (v, format) in [
            (Variant::LogCombined, "combined"),
            (Variant::LogJson, "json"),
        ] {
            let c = targets::coregate_config(l, &b, v, dir, None).unwrap();
            assert_eq!(
                c.replace(
                    &format!(
                        "access_log = {{ path = \"/tmp/r \\\"x\\\"/{}.access.log\", \
                         format = \"{format}\" }}\n",
                        v.name()
                    ),
                    ""
                ),
                rr,
                "{c}"
            );
            assert!(
                c.contains("address = \"127.0.0.1:8000\"\naccess_log = {"),
                "{c}"
            );
            assert!(c.find("access_log") < c.find("[[upstreams]]"), "{c}");
        }
        assert!(targets::coregate_config(
            l,
            &b,
            Variant::LogJson,
            std::path::Path::new("rel"),
            None
        )
        .is_err());
        assert_eq!(
            parse_variants("rr,log-combined,LOG-JSON"),
            Ok(vec![Variant::Rr, Variant::LogCombined, Variant::LogJson])
        );
        assert_eq!(
            Variant::of_target("coregate-log-json"),
            Some(Variant::LogJson)
        );
        // limit: rr plus the never-tripping limit before the upstream, named by the route.
        let lim = targets::coregate_config(l, &b, Variant::Limit, dir, None).unwrap();
        assert_eq!(
            lim.replace(targets::NEVER_LIMIT, "")
                .replace("rate_limits = [\"never\"]\n", ""),
            rr,
            "{lim}"
        );
        assert!(
            lim.contains(
                "[[rate_limits]]\nname = \"never\"\nkey = \"client_ip\"\nrate = 100000000\n\
                 period = \"1s\"\nmode = \"sync\"\n\n[[upstreams]]"
            ),
            "{lim}"
        );
        assert!(
            lim.ends_with("upstream = \"backend\"\nrate_limits = [\"never\"]\n"),
            "{lim}"
        );
        assert_eq!(
            parse_variants("rr,limit"),
            Ok(vec![Variant::Rr, Variant::Limit])
        );
        assert_eq!(Variant::of_target("coregate-limit"), Some(Variant::Limit));
        // The rr config is what bench always wrote (the comparison across builds holds).
        assert!(rr.starts_with(
            "# Written by `loadtest bench`: one worker (pinned from outside), one listener,\n"
        ));
        assert!(rr.ends_with(
            "max_idle = 1024\n\n[[routes]]\nname = \"all\"\npath_prefix = \"/\"\n\
             upstream = \"backend\"\n"
        ));
        assert!(
            rr.contains("address = \"127.0.0.1:8000\"\n\n[[upstreams]]\n"),
            "{rr}"
        );
        let hc = targets::haproxy_config(l, &b, None);
        assert!(hc.contains("    server b3 127.0.0.1:9003\n"), "{hc}");
        let nc = targets::nginx_config(std::path::Path::new("/tmp/x"), l, &b, None);
        assert!(nc.contains("        server 127.0.0.1:9002;\n"), "{nc}");
    }
}
