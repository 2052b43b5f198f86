//! `loadtest failover`: a backend killed under load. For each proxy (coregate, HAProxy, nginx):
//! three `loadtest backend` processes on loopback and the proxy in front of them, each set up to
//! retry idempotent requests elsewhere and to take a dead backend out; then a steady open-loop
//! load of GETs during which one backend is killed with SIGKILL and later restarted on the same
//! port. Reported per proxy and run: requests sent, ok, failed by kind (502/503/504, other
//! statuses, reset, connect, timeout), latency, and what the restarted backend served after its
//! restart (its own counter, health checks apart) and how soon after it got its first request.
//! Pinned as `bench` pins: generator and backends on the first CPU set, the proxy on the second.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{self, targets};
use crate::run::{self, report::Latency, RunArgs};
use crate::util::{self, fmt_us, parse_duration};

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Proxies to test: any of coregate, nginx, haproxy.
    #[arg(long, default_value = "coregate")]
    pub proxies: String,
    /// Also test these (nginx, haproxy) when installed.
    #[arg(long, default_value = "")]
    pub compare: String,
    /// CPU sets "GENERATOR/PROXY": generator and backends on the first, the proxy on the second.
    #[arg(long, default_value = "0/1")]
    pub cpus: String,
    /// Offered load, requests per second (open loop).
    #[arg(short = 'R', long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Keep-alive connections from the generator to the proxy.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,
    /// How long the load runs.
    #[arg(short = 'd', long, default_value = "12s", value_parser = parse_duration)]
    pub duration: Duration,
    /// When (after the load starts) backend 2 of 3 is killed with SIGKILL.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub kill_at: Duration,
    /// When (after the load starts) it is started again on the same port.
    #[arg(long, default_value = "7s", value_parser = parse_duration)]
    pub restart_at: Duration,
    /// Runs; each run tests every proxy once, the order rotating.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Each backend waits this long before answering (`backend --delay`): more requests are in
    /// flight on the killed backend when it dies.
    #[arg(long, value_parser = parse_duration)]
    pub backend_delay: Option<Duration>,
    /// A request without a complete response after this long counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// coregate's balancer (default: none written, i.e. coregate's default, p2c).
    #[arg(long)]
    pub balancer: Option<String>,
    /// More TOML for coregate's upstream, after its health table (e.g.
    /// $'[upstreams.retry]\nbudget_percent = 100'); shown in the report.
    #[arg(long, default_value = "")]
    pub coregate_extra: String,
    /// coregate binary (default: target/release/coregate under the workspace root).
    #[arg(long)]
    pub coregate: Option<PathBuf>,
    /// Build coregate with `cargo build --release -p coregate` when the binary is missing.
    #[arg(long)]
    pub build: bool,
    /// Results folder (default: loadtest/results/failover-<UTC time> under the workspace root):
    /// failover.json, failover.md and every proxy's config and log.
    #[arg(long)]
    pub results: Option<PathBuf>,
}

/// One proxy in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub run: usize,
    pub proxy: String,
    /// Requests that got an outcome: ok + failed.
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub status_502: u64,
    pub status_503: u64,
    pub status_504: u64,
    /// Unexpected statuses other than 502, 503 and 504.
    pub other_status: u64,
    pub reset: u64,
    pub connect: u64,
    pub timeout: u64,
    /// Unparsable responses and wrong body lengths.
    pub other: u64,
    /// Due before the end but never sent (the generator could not keep up).
    pub unsent: u64,
    pub errors: run::Errors,
    /// Open-loop latency of the valid responses (from each request's intended send time).
    pub latency: Latency,
    /// When the kill and the restart actually happened, in seconds after the load started.
    pub killed_at_s: Option<f64>,
    pub restarted_at_s: Option<f64>,
    /// Requests the restarted backend served (it counts from its restart; checks apart).
    pub restarted_requests: Option<u64>,
    /// Health checks the restarted backend answered.
    pub restarted_checks: Option<u64>,
    /// Seconds from the restart to its first forwarded request (polled every 50 ms).
    pub first_request_after_restart_s: Option<f64>,
    /// Requests served by backends 1 and 3 (never killed).
    pub survivors_requests: Vec<Option<u64>>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub command: String,
    pub started_utc: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub cpus_generator: Vec<usize>,
    pub cpus_proxy: Vec<usize>,
    pub rate: f64,
    pub connections: usize,
    pub duration_s: f64,
    pub kill_at_s: f64,
    pub restart_at_s: f64,
    pub timeout_s: f64,
    /// Milliseconds each backend waits before answering.
    pub backend_delay_ms: f64,
    /// What each proxy was configured to do, one line each.
    pub setups: Vec<(String, String)>,
    pub trials: Vec<Trial>,
    pub notes: Vec<String>,
}

const PROXIES: [&str; 3] = ["coregate", "haproxy", "nginx"];

/// The health checks every proxy with active checks runs (the backend answers the path at once
/// and counts checks apart from forwarded requests).
const HEALTH_PATH: &str = "/__health";

fn coregate_health() -> String {
    format!(
        "[upstreams.health]\npath = \"{HEALTH_PATH}\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\n\
         rise = 2\nfall = 2\n"
    )
}

pub fn coregate_config(
    listen: SocketAddr,
    backends: &[SocketAddr],
    balancer: Option<&str>,
    extra: &str,
) -> String {
    let mut tables = coregate_health();
    if !extra.trim().is_empty() {
        tables.push_str(extra.trim_end());
        tables.push('\n');
    }
    targets::coregate_toml("loadtest failover", listen, backends, balancer, &tables)
}

pub fn haproxy_config(listen: SocketAddr, backends: &[SocketAddr]) -> String {
    targets::haproxy_cfg(
        "loadtest failover",
        listen,
        backends,
        "    timeout check 300ms\n    retries 3\n    option redispatch\n    \
         retry-on all-retryable-errors\n",
        &format!("    balance roundrobin\n    option httpchk GET {HEALTH_PATH}\n"),
        " check inter 500 fall 2 rise 2",
    )
}

pub fn nginx_config(dir: &Path, listen: SocketAddr, backends: &[SocketAddr]) -> String {
    targets::nginx_conf(
        "loadtest failover",
        dir,
        listen,
        backends,
        " max_fails=1 fail_timeout=2s",
        "            proxy_next_upstream error timeout http_502 http_503;\n",
    )
}

fn setup(proxy: &str, args: &FailoverArgs) -> String {
    match proxy {
        "coregate" if !args.coregate_extra.trim().is_empty() => format!(
            "balancer {}; [upstreams.health] GET {HEALTH_PATH} every 500ms, timeout 300ms, \
             rise 2, fall 2; and `{}`",
            args.balancer
                .as_ref()
                .map_or("p2c (the default)".to_string(), |b| format!("\"{b}\"")),
            args.coregate_extra.trim().replace('\n', "; ")
        ),
        "coregate" => format!(
            "balancer {}; [upstreams.health] GET {HEALTH_PATH} every 500ms, timeout 300ms, \
             rise 2, fall 2; [upstreams.retry] and [upstreams.outlier] at their defaults \
             (2 attempts on connect and reset, idempotent requests only after a reset, retry \
             budget 20% of the requests in progress or 3; ejection after 5 consecutive \
             failures)",
            args.balancer
                .as_ref()
                .map_or("p2c (the default)".to_string(), |b| format!("\"{b}\""))
        ),
        "haproxy" => format!(
            "balance roundrobin; retries 3, option redispatch, retry-on all-retryable-errors; \
             servers `check inter 500 fall 2 rise 2` (option httpchk GET {HEALTH_PATH}, timeout \
             check 300ms); http-reuse always"
        ),
        "nginx" => "round robin; proxy_next_upstream error timeout http_502 http_503 (not \
                    non_idempotent); max_fails=1 fail_timeout=2s per server; upstream keepalive \
                    1024. nginx OSS has no active health checks: a dead server is found by \
                    failing live requests (retried on the next server), and tried again after \
                    fail_timeout"
            .to_string(),
        _ => String::new(),
    }
}

pub fn main(args: FailoverArgs) -> i32 {
    match failover(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("loadtest failover: {e}");
            2
        }
    }
}

struct Setup {
    gen: Vec<usize>,
    proxy: Vec<usize>,
    coregate: PathBuf,
    /// Extra arguments of every backend.
    backend_args: Vec<String>,
}

fn failover(args: &FailoverArgs) -> Result<(), String> {
    let (gen, proxy) = bench::parse_cpus(&args.cpus)?;
    let online = util::allowed_cpus();
    for c in gen.iter().chain(&proxy) {
        if !online.contains(c) {
            return Err(format!(
                "--cpus {:?}: CPU {c} not available (have {online:?})",
                args.cpus
            ));
        }
    }
    if !(args.kill_at < args.restart_at && args.restart_at < args.duration) {
        return Err("need --kill-at < --restart-at < --duration".into());
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err("--rate must be a positive number".into());
    }
    let root = bench::workspace_root();
    let mut notes = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for n in args.proxies.split(',').chain(args.compare.split(',')) {
        let n = n.trim().to_ascii_lowercase();
        if n.is_empty() || names.contains(&n) {
            continue;
        }
        if !PROXIES.contains(&n.as_str()) {
            return Err(format!("unknown proxy {n:?} (coregate, haproxy, nginx)"));
        }
        names.push(n);
    }
    let mut coregate = PathBuf::new();
    if names.iter().any(|n| n == "coregate") {
        match targets::coregate_binary(args.coregate.as_deref(), args.build, &root) {
            Ok(p) => coregate = p,
            Err(e) if args.coregate.is_some() => return Err(e),
            Err(e) => {
                let n = format!("coregate skipped: {e}");
                eprintln!("{n}");
                notes.push(n);
                names.retain(|n| n != "coregate");
            }
        }
    }
    bench::drop_missing(&mut names, &mut notes, &["nginx", "haproxy"]);
    if names.is_empty() {
        return Err("no proxy left to test".into());
    }
    let bench::RunStart {
        started,
        loadavg_start,
        dir,
    } = bench::begin_run(&gen, args.results.as_deref(), &root, "failover-")?;
    let s = Setup {
        gen: gen.clone(),
        proxy: proxy.clone(),
        coregate,
        backend_args: args.backend_delay.map_or(Vec::new(), |d| {
            vec!["--delay".into(), format!("{}us", d.as_micros())]
        }),
    };
    let runs = args.runs.max(1);
    let mut trials = Vec::new();
    for run in 1..=runs {
        for k in 0..names.len() {
            let name = &names[(k + run - 1) % names.len()];
            let tdir = dir.join(format!("run{run}-{name}"));
            std::fs::create_dir_all(&tdir).map_err(|e| format!("{}: {e}", tdir.display()))?;
            eprintln!("run {run}/{runs} {name}");
            match trial(run, name, args, &s, &tdir) {
                Ok(t) => {
                    eprintln!(
                        "  sent {} ok {} failed {} ({}) unsent {}; restarted backend served {} \
                         after its restart",
                        t.sent,
                        t.ok,
                        t.failed,
                        t.errors.describe(),
                        t.unsent,
                        t.restarted_requests
                            .map_or("?".to_string(), |n| n.to_string())
                    );
                    trials.push(t);
                }
                Err(e) => {
                    let n = format!("run {run} {name}: not completed: {e}");
                    eprintln!("{n}");
                    notes.push(n);
                }
            }
        }
    }
    let report = FailoverReport {
        // One line even when an argument holds newlines (--coregate-extra).
        command: std::env::args()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('\n', "\\n"),
        started_utc: started,
        loadavg_start,
        loadavg_end: bench::loadavg(),
        cpus_generator: gen,
        cpus_proxy: proxy,
        rate: args.rate,
        connections: args.connections,
        duration_s: args.duration.as_secs_f64(),
        kill_at_s: args.kill_at.as_secs_f64(),
        restart_at_s: args.restart_at.as_secs_f64(),
        timeout_s: args.timeout.as_secs_f64(),
        backend_delay_ms: args.backend_delay.map_or(0.0, |d| d.as_secs_f64() * 1e3),
        setups: names.iter().map(|n| (n.clone(), setup(n, args))).collect(),
        trials,
        notes,
    };
    bench::write_report(&dir, "failover", &report, &markdown(&report))?;
    if report.trials.is_empty() {
        return Err("no trial completed".into());
    }
    Ok(())
}

fn start_proxy(
    name: &str,
    backends: &[SocketAddr],
    args: &FailoverArgs,
    s: &Setup,
    dir: &Path,
) -> Result<targets::Running, String> {
    let port = targets::free_port().map_err(|e| format!("free port: {e}"))?;
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let write = |file: &str, text: String| {
        let p = dir.join(file);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok::<String, String>(p.display().to_string())
    };
    match name {
        "coregate" => {
            let conf = write(
                "coregate.toml",
                coregate_config(
                    listen,
                    backends,
                    args.balancer.as_deref(),
                    &args.coregate_extra,
                ),
            )?;
            targets::spawn_external(
                "coregate",
                &s.coregate,
                &["run".into(), "--config".into(), conf],
                listen,
                dir,
                &s.proxy,
            )
        }
        "haproxy" => {
            let conf = write("haproxy.cfg", haproxy_config(listen, backends))?;
            let prog = targets::which("haproxy").ok_or("haproxy not installed")?;
            targets::spawn_external(
                "haproxy",
                &prog,
                &["-f".into(), conf, "-db".into()],
                listen,
                dir,
                &s.proxy,
            )
        }
        "nginx" => {
            targets::spawn_nginx(&nginx_config(dir, listen, backends), dir, listen, &s.proxy)
        }
        other => Err(format!("unknown proxy {other}")),
    }
}

/// What the kill-and-restart thread saw.
#[derive(Default)]
struct Chaos {
    killed: Option<Duration>,
    restarted: Option<(targets::Running, Duration)>,
    first_request: Option<Duration>,
    notes: Vec<String>,
}

/// When and how the victim dies and comes back.
struct ChaosPlan {
    /// The backend to kill, and the port it listens on (its successor's).
    victim: targets::Running,
    port: u16,
    /// The load's start; kill and restart are relative to it.
    t0: Instant,
    kill_at: Duration,
    restart_at: Duration,
    /// Stop waiting for the restarted backend's first request then.
    until: Instant,
    backend_args: Vec<String>,
    cpus: Vec<usize>,
}

/// Kills the victim with SIGKILL at `t0 + kill_at`, starts a backend on its port at
/// `t0 + restart_at`, then polls that one's counter until its first request or `until`.
fn chaos(p: ChaosPlan) -> Chaos {
    let ChaosPlan {
        mut victim,
        port,
        t0,
        kill_at,
        restart_at,
        until,
        backend_args,
        cpus,
    } = p;
    let mut c = Chaos::default();
    std::thread::sleep((t0 + kill_at).saturating_duration_since(Instant::now()));
    if let Some(mut child) = victim.child.take() {
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        c.killed = Some(t0.elapsed());
    }
    std::thread::sleep((t0 + restart_at).saturating_duration_since(Instant::now()));
    // The port is free again at once (SO_REUSEADDR); retry briefly in case it is not.
    let mut last = String::new();
    for _ in 0..20 {
        match targets::spawn_backend(port, &backend_args, &cpus) {
            Ok(r) => {
                c.restarted = Some((r, t0.elapsed()));
                break;
            }
            Err(e) => {
                last = e;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let Some((r, at)) = &c.restarted else {
        c.notes
            .push(format!("the killed backend could not be restarted: {last}"));
        return c;
    };
    let addr = r.addr;
    let at = *at;
    while Instant::now() < until {
        if targets::backend_counts(addr).is_some_and(|(n, _)| n > 0) {
            c.first_request = Some(t0.elapsed().saturating_sub(at));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

fn trial(
    run: usize,
    name: &str,
    args: &FailoverArgs,
    s: &Setup,
    dir: &Path,
) -> Result<Trial, String> {
    let ports: Vec<u16> = (0..3)
        .map(|_| targets::free_port().map_err(|e| format!("free port: {e}")))
        .collect::<Result<_, _>>()?;
    let mut backends = targets::spawn_backends(3, &ports, &s.backend_args, &s.gen)?;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let mut proxy = start_proxy(name, &addrs, args, s, dir)?;
    // Let the first health checks pass (HAProxy and coregate spread them over one interval).
    std::thread::sleep(Duration::from_secs(1));
    let plan = run::plan(&RunArgs {
        url: format!("http://{}/", proxy.addr),
        threads: s.gen.len(),
        connections: args.connections,
        duration: Some(args.duration),
        requests: None,
        warmup: Duration::ZERO,
        rate: Some(args.rate),
        pipeline: 1,
        method: "GET".into(),
        headers: Vec::new(),
        body: None,
        body_file: None,
        body_size: None,
        timeout: args.timeout,
        no_keepalive: false,
        cacert: None,
        insecure: false,
        no_tls_resumption: false,
        tls_version: None,
        tls_suite: None,
        expect_status: "200".into(),
        expect_body_len: Some(100),
        json: None,
        hgrm: None,
        svg: None,
        no_pin: false,
        quiet: true,
    })?;
    let t0 = Instant::now();
    let plan_b = ChaosPlan {
        victim: backends.remove(1),
        port: ports[1],
        t0,
        kill_at: args.kill_at,
        restart_at: args.restart_at,
        until: t0 + args.duration + Duration::from_secs(1),
        backend_args: s.backend_args.clone(),
        cpus: s.gen.clone(),
    };
    let chaos = std::thread::spawn(move || chaos(plan_b));
    let (_, st, _) = run::execute(plan, s.gen.len(), true, false);
    let c = chaos
        .join()
        .map_err(|_| "the kill/restart thread panicked")?;
    let mut notes = c.notes;
    if let Some(st) = proxy.exited() {
        notes.push(format!("{name} exited during the run ({st})"));
    }
    let restarted = c.restarted.as_ref().map(|(r, _)| r.addr);
    let counts = restarted.and_then(targets::backend_counts);
    let survivors = backends
        .iter()
        .map(|b| targets::backend_counts(b.addr).map(|(n, _)| n))
        .collect();
    let e = &st.errors;
    let failed = e.total();
    let statuses = e.status_1xx + e.status_2xx + e.status_3xx + e.status_4xx + e.status_5xx;
    let gateway = e.with_status(502) + e.with_status(503) + e.with_status(504);
    Ok(Trial {
        run,
        proxy: name.to_string(),
        sent: st.ok + failed,
        ok: st.ok,
        failed,
        status_502: e.with_status(502),
        status_503: e.with_status(503),
        status_504: e.with_status(504),
        other_status: statuses - gateway,
        reset: e.reset,
        connect: e.connect,
        timeout: e.timeout,
        other: e.parse + e.body_length,
        unsent: st.unsent,
        errors: e.clone(),
        latency: Latency::of(&st.latency),
        killed_at_s: c.killed.map(|d| d.as_secs_f64()),
        restarted_at_s: c.restarted.as_ref().map(|(_, d)| d.as_secs_f64()),
        restarted_requests: counts.map(|(n, _)| n),
        restarted_checks: counts.map(|(_, h)| h),
        first_request_after_restart_s: c.first_request.map(|d| d.as_secs_f64()),
        survivors_requests: survivors,
        notes,
    })
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("–".into(), |v| v.to_string())
}

pub fn markdown(r: &FailoverReport) -> String {
    use std::fmt::Write as _;
    let mut m = String::new();
    let _ = writeln!(m, "## loadtest failover, {} UTC\n", r.started_utc);
    let _ = writeln!(m, "Command: `{}`\n", r.command);
    let _ = writeln!(
        m,
        "Three `loadtest backend` processes (100 B responses{}) behind the proxy; {} req/s of \
         `GET /` offered open loop over {} keep-alive connections for {:.0} s (a request without \
         a complete response after {:.0} s is a timeout); backend 2 killed with SIGKILL at {:.1} s \
         and started again on its port at {:.1} s. Generator and backends on CPUs {:?}, proxy on \
         CPUs {:?}. Only `200` with the full body counts as ok. \"after restart\" is the \
         restarted backend's own count of forwarded requests (health checks are counted apart); \
         \"first\" is how long after the restart its first one came (polled every 50 ms). \
         \"other\": other statuses, unparsable responses, short bodies. Latency is from each \
         request's intended send time. Load average (1/5/15 min) at the \
         start {}, at the end {}.\n",
        if r.backend_delay_ms > 0.0 {
            format!(", each answered after {} ms", r.backend_delay_ms)
        } else {
            String::new()
        },
        r.rate,
        r.connections,
        r.duration_s,
        r.timeout_s,
        r.kill_at_s,
        r.restart_at_s,
        r.cpus_generator,
        r.cpus_proxy,
        r.loadavg_start,
        r.loadavg_end
    );
    for (name, setup) in &r.setups {
        let _ = writeln!(m, "- {name}: {setup}");
    }
    m.push('\n');
    for n in &r.notes {
        let _ = writeln!(m, "- {n}");
    }
    if !r.notes.is_empty() {
        m.push('\n');
    }
    let _ = writeln!(
        m,
        "| run | proxy | sent | ok | failed | 502 | 503 | 504 | other | reset | connect | \
         timeout | unsent | p99 | p99.9 | max | backend 2 after restart | first |"
    );
    let _ = writeln!(
        m,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for t in &r.trials {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.run,
            t.proxy,
            t.sent,
            t.ok,
            t.failed,
            t.status_502,
            t.status_503,
            t.status_504,
            t.other_status + t.other,
            t.reset,
            t.connect,
            t.timeout,
            t.unsent,
            fmt_us(t.latency.p99_us),
            fmt_us(t.latency.p99_9_us),
            fmt_us(t.latency.max_us),
            opt(t.restarted_requests),
            t.first_request_after_restart_s
                .map_or("never".into(), |s| format!("{s:.2} s")),
        );
    }
    for t in &r.trials {
        for n in &t.notes {
            let _ = writeln!(m, "\n- run {} {}: {n}", t.run, t.proxy);
        }
    }
    m.push('\n');
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_retry_and_check() {
        let l: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let b: Vec<SocketAddr> = (1..=3)
            .map(|p| format!("127.0.0.1:900{p}").parse().unwrap())
            .collect();
        let c = coregate_config(l, &b, None, "");
        assert!(!c.contains("balancer"), "{c}");
        assert!(c.contains("interval = \"500ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\n"));
        let c = coregate_config(
            l,
            &b,
            Some("round_robin"),
            "[upstreams.retry]\nattempts = 3",
        );
        assert!(c.contains("balancer = \"round_robin\""), "{c}");
        assert!(
            c.contains("fall = 2\n[upstreams.retry]\nattempts = 3\n\n[[routes]]"),
            "{c}"
        );
        let h = haproxy_config(l, &b);
        for line in [
            "    retries 3\n",
            "    option redispatch\n",
            "    retry-on all-retryable-errors\n",
            "    option httpchk GET /__health\n",
            "    server b2 127.0.0.1:9002 check inter 500 fall 2 rise 2\n",
        ] {
            assert!(h.contains(line), "{line:?} missing in\n{h}");
        }
        let n = nginx_config(Path::new("/tmp/x"), l, &b);
        assert!(n.contains("        server 127.0.0.1:9003 max_fails=1 fail_timeout=2s;\n"));
        assert!(n.contains("proxy_next_upstream error timeout http_502 http_503;"));
        assert!(!n.contains("non_idempotent"));
    }
}
