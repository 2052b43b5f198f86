//! Measuring one scenario: start the backend and the targets, then per round and per target
//! (the order rotating each round) a closed-loop saturation run, then at one fixed rate an
//! open-loop run with the proxy's CPU time read around it; and the idle-connection memory phase.

use std::path::Path;
use std::time::{Duration, Instant};

use super::accesslog::{self, AccessLog, LogCounts};
use super::targets::{self, Running, Variant};
use super::{
    BenchArgs, CoregateRun, CoregateSetup, IdleRow, Plan, Scenario, ScenarioResult, TargetResult,
};
use crate::run::{self, report::Latency, RunArgs, Stats};

/// A started target: where to send load, and the process to watch (None for direct).
struct Target {
    name: String,
    addr: std::net::SocketAddr,
    proc: Option<Running>,
    /// coregate's configuration.
    variant: Option<Variant>,
    /// coregate's binary and configuration.
    coregate: Option<CoregateRun>,
    /// The access log of a variant that writes one.
    log: Option<AccessLog>,
}

/// Starts target `name` in front of `backends` (relay and direct use the first one only).
fn start_target(
    name: &str,
    backends: &[std::net::SocketAddr],
    plan: &Plan,
    dir: &Path,
    tls: Option<&targets::TlsFiles>,
) -> Result<Target, String> {
    if tls.is_some() && matches!(name, "direct" | "relay") {
        return Err("it does not speak TLS".into());
    }
    let backend = *backends.first().ok_or("no backend")?;
    let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let port = || targets::free_port().map_err(|e| format!("free port: {e}"));
    let run = plan.coregate_of(name);
    let variant = run.as_ref().map(|r| r.variant);
    let mut log: Option<std::path::PathBuf> = None;
    let running = match name {
        "direct" => {
            return Ok(Target {
                name: name.into(),
                addr: backend,
                proc: None,
                variant,
                coregate: None,
                log: None,
            })
        }
        "relay" => targets::spawn_self(
            "relay",
            &[
                "relay".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--upstream".into(),
                backend.to_string(),
                "--workers".into(),
                "1".into(),
            ],
            &plan.proxy,
        )?,
        _ if run.is_some() => {
            let CoregateRun {
                binary, variant, ..
            } = run.clone().ok_or("coregate")?;
            let listen = local(port()?);
            let conf = dir.join(format!("{name}.toml"));
            std::fs::write(
                &conf,
                targets::coregate_config(listen, backends, variant, dir, tls)?,
            )
            .map_err(|e| format!("{}: {e}", conf.display()))?;
            log = variant.access_log_path(dir);
            if let Some(l) = &log {
                // Left by an earlier start (a restarted scenario): count from an empty file.
                let _ = std::fs::remove_file(l);
            }
            let running = targets::spawn_external(
                name,
                &binary,
                &["run".into(), "--config".into(), conf.display().to_string()],
                listen,
                dir,
                &plan.proxy,
            )?;
            if let Some(l) = log.as_ref().filter(|l| !l.is_file()) {
                return Err(format!(
                    "{name} is running but did not create its access log {}",
                    l.display()
                ));
            }
            running
        }
        "nginx" => {
            let listen = local(port()?);
            targets::spawn_nginx(
                &targets::nginx_config(dir, listen, backends, tls),
                dir,
                listen,
                &plan.proxy,
            )?
        }
        "haproxy" => {
            let listen = local(port()?);
            let conf = dir.join("haproxy.cfg");
            std::fs::write(&conf, targets::haproxy_config(listen, backends, tls))
                .map_err(|e| format!("{}: {e}", conf.display()))?;
            let prog = targets::which("haproxy").ok_or("haproxy not installed")?;
            targets::spawn_external(
                "haproxy",
                &prog,
                &["-f".into(), conf.display().to_string(), "-db".into()],
                listen,
                dir,
                &plan.proxy,
            )?
        }
        other => return Err(format!("unknown target {other}")),
    };
    Ok(Target {
        name: name.into(),
        addr: running.addr,
        proc: Some(running),
        variant,
        coregate: run,
        log: log.map(AccessLog::new),
    })
}

fn load(
    t: &Target,
    s: &Scenario,
    rate: Option<f64>,
    duration: Duration,
    warmup: Duration,
    threads: usize,
) -> Result<(run::Plan, Stats, f64), String> {
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    let args = RunArgs {
        url: format!("{scheme}://{}/", t.addr),
        cacert: None,
        insecure: s.tls.is_some(),
        no_tls_resumption: s.tls == Some(false),
        tls_version: s.tls.map(|_| "1.3".to_string()),
        tls_suite: s.tls.map(|_| "TLS13_AES_128_GCM_SHA256".to_string()),
        threads,
        connections: s.connections,
        duration: Some(duration),
        requests: None,
        warmup,
        rate,
        pipeline: 1,
        method: if s.post_body.is_some() { "POST" } else { "GET" }.into(),
        headers: t.variant.map(Variant::request_headers).unwrap_or_default(),
        body: None,
        body_file: None,
        body_size: s.post_body,
        timeout: Duration::from_secs(5),
        no_keepalive: !s.keepalive,
        expect_status: "200".into(),
        expect_body_len: Some(s.body_size),
        json: None,
        hgrm: None,
        svg: None,
        no_pin: false,
        quiet: true,
    };
    let plan = run::plan(&args)?;
    Ok(run::execute(plan, threads, true, false))
}

/// Memory per idle connection: each proxy holds `n` keep-alive connections (one request every
/// second on each); RSS of its process tree before and while holding them.
pub(super) fn idle_memory(
    plan: &Plan,
    args: &BenchArgs,
    dir: &Path,
) -> Result<Vec<IdleRow>, String> {
    let n = if args.quick { 500 } else { 2000 };
    let hold = if args.quick { 1 } else { 4 };
    eprintln!("idle connections: {n} per proxy");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let backends = targets::spawn_backends(plan.backends, &[], &[], &plan.gen)?;
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let mut rows = Vec::new();
    // Connections answered once and then silent (the interval outlasts the hold), and
    // connections sending a request every second; a fresh proxy process for each.
    let patterns = [
        ("after one request", Duration::from_secs(3600)),
        ("one request per second", Duration::from_secs(1)),
    ];
    for (pattern, interval) in patterns {
        for name in plan.targets.iter().filter(|n| *n != "direct") {
            let t = match start_target(name, &addrs, plan, dir, None) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("  {name} skipped: {e}");
                    continue;
                }
            };
            let r = crate::idle::measure(&crate::idle::IdleArgs {
                url: format!("http://{}/", t.addr),
                connections: n,
                interval,
                duration: Duration::from_secs(hold),
                pid: t.proc.as_ref().and_then(Running::pid),
                threads: 1,
                json: None,
                headers: t.variant.map(Variant::request_headers).unwrap_or_default(),
            })?;
            eprintln!(
                "  {:<9} {pattern}: {} of {n} held, {:.0} bytes per connection",
                name,
                r.established,
                r.bytes_per_connection.unwrap_or(0.0)
            );
            rows.push(IdleRow {
                name: name.clone(),
                pattern,
                connections: n,
                established: r.established,
                rss_before: r.rss_before,
                rss_held: r.rss_held,
                bytes_per_connection: r.bytes_per_connection,
                errors: r.errors,
            });
            let Target { proc, log, .. } = t;
            drop(proc);
            if let Some(mut log) = log {
                let _ = log.cut(LOG_SAMPLE);
            }
        }
    }
    Ok(rows)
}

/// Fails when a backend or the target has died: its figures would be meaningless.
fn alive(backends: &mut [Running], t: &mut Target) -> Result<(), String> {
    for (i, b) in backends.iter_mut().enumerate() {
        if let Some(st) = b.exited() {
            return Err(format!("backend {} exited ({st})", i + 1));
        }
    }
    if let Some(st) = t.proc.as_mut().and_then(Running::exited) {
        return Err(format!("{} exited ({st})", t.name));
    }
    Ok(())
}

/// Lines of each access log kept in the results folder: after every run the file is cut back to
/// its first lines (so it does not fill the disk, and shows what the variant wrote).
const LOG_SAMPLE: usize = 100;

/// After a run of a target that writes an access log: the requests the backends received from
/// it in the run (their counters `before` and `after` it), the lines in the log when the run
/// ended and once its last lines have reached the file (up to [`accesslog::SETTLE`]), added to
/// `round`; then the log is cut back to a sample for the next run.
fn settle_log(
    log: &mut AccessLog,
    before: &[u64],
    after: &[u64],
    round: usize,
    c: &mut LogCounts,
) -> Result<(), String> {
    let at_end = log.lines()?;
    let requests = after
        .iter()
        .sum::<u64>()
        .saturating_sub(before.iter().sum());
    let waited = Instant::now();
    let lines = log.wait_for(requests, accesslog::SETTLE)?;
    c.longest_wait_s = c.longest_wait_s.max(waited.elapsed().as_secs_f64());
    log.cut(LOG_SAMPLE)?;
    for v in [&mut c.lines, &mut c.requests, &mut c.buffered_at_end_of_run] {
        if v.len() <= round {
            v.resize(round + 1, 0);
        }
    }
    c.lines[round] += lines;
    c.requests[round] += requests;
    c.buffered_at_end_of_run[round] += requests.saturating_sub(at_end);
    Ok(())
}

pub(super) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(super) fn spread_pct(v: &[f64]) -> f64 {
    let m = median(v);
    if v.len() < 2 || m == 0.0 {
        return 0.0;
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    (hi - lo) / m * 100.0
}

/// Rounds a rate down to two significant digits.
pub(super) fn round_rate(r: f64) -> f64 {
    if r < 10.0 {
        return r.max(1.0).floor();
    }
    let mag = 10f64.powf(r.log10().floor() - 1.0);
    (r / mag).floor() * mag
}

pub(super) fn scenario(
    s: &Scenario,
    plan: &Plan,
    args: &BenchArgs,
    dir: &Path,
) -> Result<ScenarioResult, String> {
    eprintln!("scenario {}: {}", s.name, s.description);
    let sdir = dir.join(s.name);
    std::fs::create_dir_all(&sdir).map_err(|e| format!("{}: {e}", sdir.display()))?;
    let mut backends = targets::spawn_backends(
        plan.backends,
        &[],
        &["--body-size".into(), s.body_size.to_string()],
        &plan.gen,
    )?;
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let mut notes = Vec::new();
    let tls = match s.tls {
        Some(_) => Some(targets::TlsFiles::copy_into(
            &super::workspace_root(),
            &sdir,
        )?),
        None => None,
    };
    let mut tgts = Vec::new();
    for name in &plan.targets {
        match start_target(name, &addrs, plan, &sdir, tls.as_ref()) {
            Ok(t) => tgts.push(t),
            Err(e) => {
                eprintln!("  {name} skipped: {e}");
                notes.push(format!("{name} skipped: {e}"));
            }
        }
    }
    let threads = plan.gen.len();
    let n = tgts.len();
    let mut sat: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut errors = vec![run::Errors::default(); n];
    let mut unsent = vec![0u64; n];
    // Requests each backend has received so far (None if one did not answer).
    let counts = || -> Option<Vec<u64>> {
        addrs
            .iter()
            .map(|&a| targets::backend_counts(a).map(|(r, _)| r))
            .collect()
    };
    let unreadable = || "a backend's counters could not be read".to_string();
    let mut logs: Vec<Option<LogCounts>> = tgts
        .iter()
        .map(|t| {
            let log = t.log.as_ref()?;
            Some(LogCounts {
                path: log.path.display().to_string(),
                format: t.variant?.access_log_format()?.into(),
                settle_s: accesslog::SETTLE.as_secs_f64(),
                ..LogCounts::default()
            })
        })
        .collect();
    for round in 0..plan.rounds {
        for k in 0..n {
            let i = (k + round) % n;
            alive(&mut backends, &mut tgts[i])?;
            let served_before = match tgts[i].log {
                Some(_) => Some(counts().ok_or_else(unreadable)?),
                None => None,
            };
            let (_, st, secs) = load(&tgts[i], s, None, plan.duration, plan.warmup, threads)?;
            alive(&mut backends, &mut tgts[i])?;
            if let (Some(log), Some(c), Some(b)) =
                (tgts[i].log.as_mut(), logs[i].as_mut(), served_before)
            {
                settle_log(log, &b, &counts().ok_or_else(unreadable)?, round, c)?;
            }
            let rps = st.ok as f64 / secs;
            eprintln!(
                "  round {}/{} {:<9} saturation {:>10.0} req/s  errors {}",
                round + 1,
                plan.rounds,
                tgts[i].name,
                rps,
                st.errors.total()
            );
            sat[i].push(rps);
            errors[i].add(&st.errors);
        }
    }
    // The fixed rate sits below the slowest proxy that answered correctly at all; a target
    // with no valid response (e.g. answering 502) is reported, not used to pick the rate.
    for (t, v) in tgts.iter().zip(&sat) {
        if median(v) == 0.0 {
            notes.push(format!("{}: no valid response at saturation", t.name));
        }
    }
    let pick = |proxies_only: bool| {
        tgts.iter()
            .zip(&sat)
            .filter(|(t, _)| !proxies_only || t.proc.is_some())
            .map(|(_, v)| median(v))
            .filter(|&m| m > 0.0)
            .fold(f64::INFINITY, f64::min)
    };
    let slowest = Some(pick(true))
        .filter(|s| s.is_finite())
        .or_else(|| Some(pick(false)).filter(|s| s.is_finite()))
        .unwrap_or(1.0);
    let rate = match args.rate {
        Some(r) => r,
        None => round_rate((slowest * args.rate_fraction).max(1.0)),
    };
    eprintln!("  fixed rate for CPU and latency: {rate} req/s");
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut hist: Vec<Stats> = vec![Stats::default(); n];
    let mut achieved = vec![0f64; n];
    let mut gen_cpu = vec![0f64; n];
    let mut per_backend = vec![vec![0u64; addrs.len()]; n];
    for round in 0..plan.rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let pid = tgts[i].proc.as_ref().and_then(Running::pid);
            let served_before = counts();
            let before = pid.map(targets::cpu_tree);
            // The fixed-rate run has no warm-up: the proxy's CPU over the whole run is divided
            // by every valid response of that run.
            alive(&mut backends, &mut tgts[i])?;
            let (_, st, secs) = load(
                &tgts[i],
                s,
                Some(rate),
                plan.duration,
                Duration::ZERO,
                threads,
            )?;
            alive(&mut backends, &mut tgts[i])?;
            if let (Some(pid), Some(b)) = (pid, before) {
                let used = targets::cpu_tree(pid) - b;
                if st.ok > 0 {
                    cpu[i].push(used * 1e6 / st.ok as f64);
                }
            }
            let served_after = counts();
            if let (Some(b), Some(a)) = (&served_before, &served_after) {
                for (k, (b, a)) in b.iter().zip(a).enumerate() {
                    per_backend[i][k] += a.saturating_sub(*b);
                }
            }
            if let (Some(log), Some(c)) = (tgts[i].log.as_mut(), logs[i].as_mut()) {
                let (b, a) = served_before.zip(served_after).ok_or_else(unreadable)?;
                settle_log(log, &b, &a, round, c)?;
            }
            eprintln!(
                "  round {}/{} {:<9} at {rate} req/s: p99 {}us  errors {}",
                round + 1,
                plan.rounds,
                tgts[i].name,
                st.latency.value_at_quantile(0.99),
                st.errors.total()
            );
            achieved[i] += st.ok as f64 / secs / plan.rounds as f64;
            gen_cpu[i] += st.cpu_secs * 1e6 / st.ok.max(1) as f64 / plan.rounds as f64;
            errors[i].add(&st.errors);
            unsent[i] += st.unsent;
            hist[i].merge(&st);
        }
    }
    let series: Vec<(String, Vec<(f64, u64)>)> = tgts
        .iter()
        .zip(&hist)
        .map(|(t, h)| (t.name.clone(), run::report::percentile_points(&h.latency)))
        .collect();
    let title = format!("{}: latency by percentile at {rate} req/s", s.name);
    let svg = dir.join(format!("{}-latency.svg", s.name));
    if let Err(e) = std::fs::write(&svg, run::report::svg(&title, &series)) {
        notes.push(format!("{}: {e}", svg.display()));
    }
    let mut out = Vec::new();
    for (i, t) in tgts.iter().enumerate() {
        let pid = t.proc.as_ref().and_then(Running::pid);
        out.push(TargetResult {
            name: t.name.clone(),
            saturation_median: median(&sat[i]),
            saturation_spread_pct: spread_pct(&sat[i]),
            saturation_rps: sat[i].clone(),
            cpu_us_per_req_median: (!cpu[i].is_empty()).then(|| median(&cpu[i])),
            cpu_spread_pct: (!cpu[i].is_empty()).then(|| spread_pct(&cpu[i])),
            cpu_us_per_req: cpu[i].clone(),
            latency: Latency::of(&hist[i].latency),
            generator_lag: Latency::of(&hist[i].lag),
            achieved_rps: achieved[i],
            rss_bytes: pid.and_then(targets::rss_tree),
            errors: errors[i].total(),
            error_kinds: errors[i].clone(),
            unsent: unsent[i],
            generator_cpu_us_per_req: gen_cpu[i],
            backend_requests: per_backend[i].clone(),
            access_log: None,
            coregate: t.coregate.as_ref().map(|c| CoregateSetup {
                binary: c.binary.display().to_string(),
                variant: c.variant.name().into(),
                config: c.variant.describe().into(),
                extra_bin: c.extra_bin,
            }),
        });
    }
    // Coregate writes out the lines still buffered when it stops gracefully: every run's lines
    // were counted already, so none should appear now.
    for (i, t) in tgts.iter_mut().enumerate() {
        let (Some(log), Some(mut c)) = (t.log.as_mut(), logs[i].take()) else {
            continue;
        };
        c.exit = t
            .proc
            .as_mut()
            .and_then(|p| p.stop(Duration::from_secs(15)));
        c.lines_after_stop = Some(log.lines()?);
        log.cut(LOG_SAMPLE)?;
        out[i].access_log = Some(c);
    }
    drop(tgts);
    drop(backends);
    Ok(ScenarioResult {
        name: s.name.into(),
        description: s.description.clone(),
        rate,
        targets: out,
        notes,
    })
}
