//! `loadtest ratelimit`: how closely a proxy with several workers holds a rate limit when all of
//! the load arrives on ONE keep-alive connection, so that one worker sees all of it. For each
//! target (coregate with the limit in `sync`, `exact` or `local` mode, and nginx's `limit_req`,
//! whose shared-memory zone is exact: the anchor): one `loadtest backend`, the proxy in front of
//! it with `--workers` workers and a limit of `--limit` req/s (burst `--burst`) by client
//! address, then `--offered` req/s of `GET /` for `--duration`, paced as pipelined batches of
//! `--batch` requests on that one connection (a batch every batch/offered seconds, each written
//! once the previous batch is answered, the schedule absolute so that a late batch is caught up).
//! Answers are counted per second of their arrival: 200 admitted, 429 limited, anything else an
//! error. Reported per target: admitted in each second, their mean over seconds 2..D (the first
//! second also spends the burst), its deviation from the limit, 429s and errors, and what the
//! backend received (which must equal the 200s).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{self, targets};
use crate::http;
use crate::run;
use crate::util::{self, parse_duration};

#[derive(clap::Args, Debug, Clone)]
pub struct RateLimitArgs {
    /// Targets: coregate's modes sync, exact, local (targets coregate-sync, ...) and nginx
    /// (limit_req; skipped with a message when not installed).
    #[arg(long, default_value = "sync,exact,local,nginx")]
    pub targets: String,
    /// The limit, requests per second per client address.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Extra requests a quiet client may send at once (coregate `burst`, nginx `burst ...
    /// nodelay`).
    #[arg(long, default_value_t = 50)]
    pub burst: u32,
    /// Requests per second offered on the one connection.
    #[arg(short = 'R', long, default_value_t = 3000.0)]
    pub offered: f64,
    /// How long the load runs (whole seconds are counted).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The proxy's workers: coregate `[runtime] workers`, nginx `worker_processes`.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Requests written at once (pipelined) on the connection.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Runs; each run tests every target once, the order rotating.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// CPU sets "GENERATOR/PROXY": generator and backend on the first, the proxy (all its
    /// workers) on the second.
    #[arg(long, default_value = "0/1")]
    pub cpus: String,
    /// A batch without all its answers after this long: the rest count as timeouts and the
    /// connection is replaced.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// coregate binary (default: target/release/coregate under the workspace root).
    #[arg(long)]
    pub coregate: Option<PathBuf>,
    /// Build coregate with `cargo build --release -p coregate` when the binary is missing.
    #[arg(long)]
    pub build: bool,
    /// Results folder (default: loadtest/results/ratelimit-<UTC time> under the workspace
    /// root): ratelimit.json, ratelimit.md and every target's config and log.
    #[arg(long)]
    pub results: Option<PathBuf>,
}

/// coregate's modes this command measures (`redis` needs a Redis server: not here).
pub const MODES: [&str; 3] = ["sync", "exact", "local"];

/// "sync" or "coregate-sync" → "coregate-sync"; "nginx" → "nginx".
fn target_name(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_lowercase();
    let mode = s.strip_prefix("coregate-").unwrap_or(&s);
    if MODES.contains(&mode) {
        Ok(format!("coregate-{mode}"))
    } else if s == "nginx" {
        Ok(s)
    } else {
        Err(format!(
            "unknown target {s:?} (sync, exact, local, nginx; or coregate-sync, ...)"
        ))
    }
}

fn parse_targets(s: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let n = target_name(part)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.is_empty() {
        return Err("no target given".into());
    }
    Ok(out)
}

/// The limit every coregate target applies, `mode` as given.
pub fn coregate_limit(limit: u32, burst: u32, mode: &str) -> String {
    format!(
        "[[rate_limits]]\nname = \"limit\"\nkey = \"client_ip\"\nrate = {limit}\n\
         period = \"1s\"\nburst = {burst}\nmode = \"{mode}\"\n\n"
    )
}

pub fn coregate_config(
    listen: SocketAddr,
    backend: &[SocketAddr],
    workers: usize,
    limit: u32,
    burst: u32,
    mode: &str,
) -> String {
    let tables = coregate_limit(limit, burst, mode);
    targets::CoregateToml {
        workers,
        tables: &tables,
        balancer: Some("round_robin"),
        route: "rate_limits = [\"limit\"]\n",
        ..targets::CoregateToml::new("loadtest ratelimit", listen, backend)
    }
    .render()
}

pub fn nginx_config(
    dir: &Path,
    listen: SocketAddr,
    backend: &[SocketAddr],
    workers: usize,
    limit: u32,
    burst: u32,
) -> String {
    let http = format!("    limit_req_zone $binary_remote_addr zone=z:10m rate={limit}r/s;\n");
    let location = format!(
        "            limit_req zone=z burst={burst} nodelay;\n            \
         limit_req_status 429;\n            limit_req_log_level info;\n"
    );
    targets::NginxConf {
        workers,
        http: &http,
        location: &location,
        ..targets::NginxConf::new("loadtest ratelimit", dir, listen, backend)
    }
    .render()
}

fn setup(target: &str, a: &RateLimitArgs) -> String {
    match target.strip_prefix("coregate-") {
        Some(mode) => format!(
            "[runtime] workers = {}, pin = false; [[rate_limits]] key = \"client_ip\", rate = {}, \
             period = \"1s\", burst = {}, mode = \"{mode}\" (sync_interval and the rest at their \
             defaults), named by the catch-all route",
            a.workers, a.limit, a.burst
        ),
        None => format!(
            "worker_processes {}; limit_req_zone $binary_remote_addr zone=z:10m rate={}r/s; \
             limit_req zone=z burst={} nodelay; limit_req_status 429; limit_req_log_level info \
             (rejections not written to the error log); upstream keepalive 1024",
            a.workers, a.limit, a.burst
        ),
    }
}

/// What one connection's paced load got back, per second since the start of the load (index
/// k is second k+1; the last slot, index D, holds what was answered after the end).
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Tally {
    pub admitted: Vec<u64>,
    pub limited: Vec<u64>,
    pub errors: Vec<u64>,
    /// Requests written, by the second they were written in.
    pub sent: Vec<u64>,
    pub error_kinds: run::Errors,
    /// Connections opened (1 unless one failed or was closed).
    pub connections: u64,
    /// The longest a batch waited for all its answers, in ms.
    pub slowest_batch_ms: f64,
}

impl Tally {
    fn new(secs: usize) -> Tally {
        let v = vec![0; secs + 1];
        Tally {
            admitted: v.clone(),
            limited: v.clone(),
            errors: v.clone(),
            sent: v,
            ..Tally::default()
        }
    }

    fn error(&mut self, slot: usize, n: u64, kind: fn(&mut run::Errors) -> &mut u64) {
        self.errors[slot] += n;
        *kind(&mut self.error_kinds) += n;
    }
}

/// One response at the start of `buf`: (status, its length, whether it closes the connection),
/// None while incomplete.
fn parse_one(buf: &[u8]) -> Result<Option<(u16, usize, bool)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("unparsable response: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let mut body = http::framing(r.headers, true).map_err(|e| e.to_string())?;
    if body == http::Body::UntilClose {
        return Err("a response without Content-Length or chunked encoding".into());
    }
    let close = http::wants_close(r.headers);
    let mut pos = head;
    while !body.is_done() {
        let (n, _) = body.advance(&buf[pos..]).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        pos += n;
    }
    Ok(Some((status, pos, close)))
}

/// The paced load of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    pub rate: f64,
    pub batch: usize,
    /// Whole seconds of load.
    pub secs: usize,
    pub timeout: Duration,
}

fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout.max(Duration::from_millis(10))))?;
    s.set_write_timeout(Some(timeout.max(Duration::from_millis(10))))?;
    Ok(s)
}

/// Offers `o.rate` req/s of `GET /` to `addr` on one keep-alive connection (opened before
/// `start`; replaced only when it fails), as pipelined batches of `o.batch` due every
/// batch/rate seconds from `start` until `o.secs` seconds after it; a batch is written once the
/// previous one is answered (late batches are sent at once until the schedule is met again).
/// Bounded: at most rate·secs/batch + 1 batches, each waiting at most `o.timeout`.
pub fn offer(addr: SocketAddr, o: Offer, start: Instant) -> Tally {
    let batch = o.batch.max(1);
    let secs = o.secs.max(1);
    let mut t = Tally::new(secs);
    let until = start + Duration::from_secs(secs as u64);
    let every = Duration::from_secs_f64(batch as f64 / o.rate.max(1.0));
    let max_batches = (o.rate * secs as f64 / batch as f64).ceil() as u64 + 1;
    let slot = |at: Instant| (at.saturating_duration_since(start).as_secs() as usize).min(secs);
    let one = "GET / HTTP/1.1\r\nHost: ratelimit\r\nUser-Agent: loadtest-ratelimit\r\n\r\n";
    let burst = one.repeat(batch);
    let mut conn = connect(addr, o.timeout).ok();
    t.connections += u64::from(conn.is_some());
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let mut next = start;
    for _ in 0..max_batches {
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        next += every;
        let now = Instant::now();
        if now >= until {
            break;
        }
        if conn.is_none() {
            match connect(addr, o.timeout) {
                Ok(s) => {
                    t.connections += 1;
                    buf.clear();
                    conn = Some(s);
                }
                Err(_) => {
                    t.error(slot(now), batch as u64, |e| &mut e.connect);
                    continue;
                }
            }
        }
        let Some(s) = conn.as_mut() else { continue };
        if s.write_all(burst.as_bytes()).is_err() {
            t.error(slot(now), batch as u64, |e| &mut e.reset);
            conn = None;
            continue;
        }
        t.sent[slot(now)] += batch as u64;
        let deadline = now + o.timeout;
        let mut got = 0;
        // Each pass either takes one response out of the buffer or reads (bounded by the
        // deadline and the read timeout).
        while got < batch {
            match parse_one(&buf) {
                Ok(Some((status, len, close))) => {
                    buf.drain(..len);
                    got += 1;
                    let k = slot(Instant::now());
                    match status {
                        200 => t.admitted[k] += 1,
                        429 => t.limited[k] += 1,
                        other => {
                            t.errors[k] += 1;
                            t.error_kinds.status(other);
                        }
                    }
                    if close {
                        // The proxy closes: the rest of the batch is lost.
                        t.error(k, (batch - got) as u64, |e| &mut e.reset);
                        conn = None;
                        break;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(_) => {
                    t.error(slot(Instant::now()), (batch - got) as u64, |e| &mut e.parse);
                    conn = None;
                    break;
                }
            }
            let k = slot(Instant::now());
            if Instant::now() >= deadline {
                t.error(k, (batch - got) as u64, |e| &mut e.timeout);
                conn = None;
                break;
            }
            let Some(s) = conn.as_mut() else { break };
            match s.read(&mut chunk) {
                Ok(0) => {
                    t.error(k, (batch - got) as u64, |e| &mut e.reset);
                    conn = None;
                    break;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    t.error(k, (batch - got) as u64, |e| &mut e.timeout);
                    conn = None;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    t.error(k, (batch - got) as u64, |e| &mut e.reset);
                    conn = None;
                    break;
                }
            }
        }
        t.slowest_batch_ms = t.slowest_batch_ms.max(now.elapsed().as_secs_f64() * 1e3);
        if conn.is_none() {
            buf.clear();
        }
    }
    t
}

/// One target in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub run: usize,
    pub target: String,
    /// Admitted (200) per second of the load, seconds 1..D.
    pub admitted_per_second: Vec<u64>,
    /// Limited (429) per second.
    pub limited_per_second: Vec<u64>,
    pub errors_per_second: Vec<u64>,
    /// Requests written per second.
    pub sent_per_second: Vec<u64>,
    /// Answers that came after the last second (the last batch's).
    pub admitted_after: u64,
    pub limited_after: u64,
    /// Mean admitted per second over seconds 2..D (all of them when D < 2).
    pub mean_admitted: f64,
    /// (mean - limit) / limit, in percent.
    pub deviation_pct: f64,
    /// The second among 2..D farthest from the limit: its deviation in percent.
    pub worst_second_pct: f64,
    pub admitted: u64,
    pub limited: u64,
    pub errors: u64,
    pub error_kinds: run::Errors,
    /// Requests the backend received (its own counter): expected to equal `admitted`.
    pub backend_requests: Option<u64>,
    pub connections: u64,
    pub slowest_batch_ms: f64,
    /// How the proxy ended when stopped with SIGTERM after the load.
    pub exit: Option<String>,
    pub notes: Vec<String>,
}

/// Seconds 2..D of `v` (all of it when it has fewer than 2).
fn steady(v: &[u64]) -> &[u64] {
    if v.len() >= 2 {
        &v[1..]
    } else {
        v
    }
}

impl Trial {
    fn new(run: usize, target: &str, limit: u32, t: Tally) -> Trial {
        let secs = t.admitted.len() - 1;
        let during = |v: &[u64]| v[..secs].to_vec();
        let admitted_per_second = during(&t.admitted);
        let st = steady(&admitted_per_second);
        let mean = st.iter().sum::<u64>() as f64 / st.len().max(1) as f64;
        let limit = f64::from(limit.max(1));
        let dev = |x: f64| (x - limit) / limit * 100.0;
        let worst =
            st.iter()
                .map(|&x| dev(x as f64))
                .fold(0.0f64, |w, d| if d.abs() > w.abs() { d } else { w });
        Trial {
            run,
            target: target.to_string(),
            limited_per_second: during(&t.limited),
            errors_per_second: during(&t.errors),
            sent_per_second: during(&t.sent),
            admitted_after: t.admitted[secs],
            limited_after: t.limited[secs],
            mean_admitted: mean,
            deviation_pct: dev(mean),
            worst_second_pct: worst,
            admitted: t.admitted.iter().sum(),
            limited: t.limited.iter().sum(),
            errors: t.errors.iter().sum(),
            error_kinds: t.error_kinds,
            admitted_per_second,
            backend_requests: None,
            connections: t.connections,
            slowest_batch_ms: t.slowest_batch_ms,
            exit: None,
            notes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RateLimitReport {
    pub command: String,
    pub started_utc: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub online_cpus: usize,
    pub cpus_generator: Vec<usize>,
    pub cpus_proxy: Vec<usize>,
    pub limit: u32,
    pub burst: u32,
    pub offered: f64,
    pub seconds: usize,
    pub workers: usize,
    pub batch: usize,
    /// What each target was configured to do.
    pub setups: Vec<(String, String)>,
    pub trials: Vec<Trial>,
    pub notes: Vec<String>,
}

pub fn main(args: RateLimitArgs) -> i32 {
    match ratelimit(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("loadtest ratelimit: {e}");
            2
        }
    }
}

struct Setup {
    gen: Vec<usize>,
    proxy: Vec<usize>,
    coregate: PathBuf,
    secs: usize,
}

fn ratelimit(args: &RateLimitArgs) -> Result<(), String> {
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
    if !(args.offered > 0.0 && args.offered.is_finite() && args.offered <= 1e6) {
        return Err("--offered must be a positive number up to 1000000".into());
    }
    let secs = args.duration.as_secs() as usize;
    if !(1..=3600).contains(&secs) {
        return Err("--duration must be between 1 s and 1 h (whole seconds count)".into());
    }
    if !(1..=1000).contains(&args.batch) || !(1..=256).contains(&args.workers) {
        return Err("--batch must be 1..1000 and --workers 1..256".into());
    }
    if args.limit == 0 {
        return Err("--limit must be at least 1".into());
    }
    let root = bench::workspace_root();
    let mut notes = Vec::new();
    let mut names = parse_targets(&args.targets)?;
    let mut coregate = PathBuf::new();
    if names.iter().any(|n| n.starts_with("coregate-")) {
        match targets::coregate_binary(args.coregate.as_deref(), args.build, &root) {
            Ok(p) => coregate = p,
            Err(e) if args.coregate.is_some() => return Err(e),
            Err(e) => {
                let n = format!("coregate skipped: {e}");
                eprintln!("{n}");
                notes.push(n);
                names.retain(|n| !n.starts_with("coregate-"));
            }
        }
    }
    bench::drop_missing(&mut names, &mut notes, &["nginx"]);
    if names.is_empty() {
        return Err("no target left to measure".into());
    }
    let bench::RunStart {
        started,
        loadavg_start,
        dir,
    } = bench::begin_run(&gen, args.results.as_deref(), &root, "ratelimit-")?;
    let s = Setup {
        gen: gen.clone(),
        proxy: proxy.clone(),
        coregate,
        secs,
    };
    let runs = args.runs.clamp(1, 100);
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
                        "  admitted per second {:?}; mean of seconds 2..{secs} {:.1} ({:+.1}%), \
                         429s {}, errors {}",
                        t.admitted_per_second,
                        t.mean_admitted,
                        t.deviation_pct,
                        t.limited,
                        t.errors
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
    let report = RateLimitReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_utc: started,
        loadavg_start,
        loadavg_end: bench::loadavg(),
        online_cpus: online.len(),
        cpus_generator: gen,
        cpus_proxy: proxy,
        limit: args.limit,
        burst: args.burst,
        offered: args.offered,
        seconds: secs,
        workers: args.workers,
        batch: args.batch,
        setups: names.iter().map(|n| (n.clone(), setup(n, args))).collect(),
        trials,
        notes,
    };
    bench::write_report(&dir, "ratelimit", &report, &markdown(&report))?;
    if report.trials.is_empty() {
        return Err("no trial completed".into());
    }
    Ok(())
}

fn trial(
    run: usize,
    name: &str,
    args: &RateLimitArgs,
    s: &Setup,
    dir: &Path,
) -> Result<Trial, String> {
    let backend = targets::spawn_backend(0, &[], &s.gen)?;
    let backends = [backend.addr];
    let port = targets::free_port().map_err(|e| format!("free port: {e}"))?;
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let mut proxy = match name.strip_prefix("coregate-") {
        Some(mode) => {
            let conf = dir.join("coregate.toml");
            let text = coregate_config(
                listen,
                &backends,
                args.workers,
                args.limit,
                args.burst,
                mode,
            );
            std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
            targets::spawn_external(
                "coregate",
                &s.coregate,
                &["run".into(), "--config".into(), conf.display().to_string()],
                listen,
                dir,
                &s.proxy,
            )?
        }
        None => targets::spawn_nginx(
            &nginx_config(dir, listen, &backends, args.workers, args.limit, args.burst),
            dir,
            listen,
            &s.proxy,
        )?,
    };
    // Let every worker (and coregate's coordinator) settle; the limit's key is still unseen.
    std::thread::sleep(Duration::from_millis(500));
    let o = Offer {
        rate: args.offered,
        batch: args.batch,
        secs: s.secs,
        timeout: args.timeout,
    };
    // The connection is opened inside `offer` before the start.
    let start = Instant::now() + Duration::from_millis(200);
    let tally = offer(listen, o, start);
    let mut t = Trial::new(run, name, args.limit, tally);
    if let Some(st) = proxy.exited() {
        t.notes.push(format!("{name} exited during the run ({st})"));
    }
    t.backend_requests = targets::backend_counts(backend.addr).map(|(n, _)| n);
    match t.backend_requests {
        Some(n) if n != t.admitted => t.notes.push(format!(
            "the backend received {n} requests, the client got {} admitted answers",
            t.admitted
        )),
        None => t
            .notes
            .push("the backend's counter could not be read".into()),
        _ => {}
    }
    if t.connections != 1 {
        t.notes.push(format!(
            "{} connections were used (one failed or was closed): the load may have moved \
             between workers",
            t.connections
        ));
    }
    t.exit = proxy.stop(Duration::from_secs(15));
    Ok(t)
}

fn list(v: &[u64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn markdown(r: &RateLimitReport) -> String {
    use std::fmt::Write as _;
    let mut m = String::new();
    let _ = writeln!(m, "## loadtest ratelimit, {} UTC\n", r.started_utc);
    let _ = writeln!(m, "Command: `{}`\n", r.command);
    let last = r.seconds.max(2);
    let _ = writeln!(
        m,
        "A limit of {} req/s per client address (burst {}) in a proxy with {} workers; {} req/s \
         of `GET /` offered on ONE keep-alive connection (so one worker sees all of it) for {} s, \
         paced as pipelined batches of {} (a batch every {:.2} ms, each written once the previous \
         one is answered). Answers counted by the second they arrived in: 200 admitted, 429 \
         limited, anything else an error. \"mean\" is the mean of seconds 2..{last} (second 1 \
         also spends the burst); \"vs limit\" its deviation from {}; \"worst\" the second among \
         2..{last} farthest from it. \"backend\" is what the backend received (equal to the 200s \
         unless noted). Generator and backend on CPUs {:?}, the proxy on CPUs {:?} ({} CPUs \
         online). Load average (1/5/15 min) at the start {}, at the end {}.\n",
        r.limit,
        r.burst,
        r.workers,
        r.offered,
        r.seconds,
        r.batch,
        r.batch as f64 / r.offered * 1e3,
        r.limit,
        r.cpus_generator,
        r.cpus_proxy,
        r.online_cpus,
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
        "| run | target | admitted per second (s1..s{}) | mean s2..s{last} | vs limit | worst \
         second | 429s | errors | backend | offered/s |",
        r.seconds
    );
    let _ = writeln!(m, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for t in &r.trials {
        let sent: u64 = t.sent_per_second.iter().sum();
        let _ = writeln!(
            m,
            "| {} | {} | {} | {:.1} | {:+.1}% | {:+.1}% | {} | {} | {} | {:.0} |",
            t.run,
            t.target,
            list(&t.admitted_per_second),
            t.mean_admitted,
            t.deviation_pct,
            t.worst_second_pct,
            t.limited,
            t.errors,
            t.backend_requests
                .map_or("?".to_string(), |n| n.to_string()),
            sent as f64 / t.sent_per_second.len().max(1) as f64,
        );
    }
    for t in &r.trials {
        if t.errors > 0 {
            let _ = writeln!(
                m,
                "\n- run {} {} errors: {}",
                t.run,
                t.target,
                t.error_kinds.describe()
            );
        }
        if t.admitted_after + t.limited_after > 0 {
            let _ = writeln!(
                m,
                "\n- run {} {}: {} admitted and {} limited answers came after second {} (not in \
                 the seconds above)",
                t.run, t.target, t.admitted_after, t.limited_after, r.seconds
            );
        }
        for n in &t.notes {
            let _ = writeln!(m, "\n- run {} {}: {n}", t.run, t.target);
        }
    }
    m.push('\n');
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_configs() {
        assert_eq!(
            parse_targets("sync, coregate-exact,LOCAL,nginx,sync"),
            Ok(vec![
                "coregate-sync".to_string(),
                "coregate-exact".into(),
                "coregate-local".into(),
                "nginx".into()
            ])
        );
        assert!(parse_targets("redis").is_err());
        assert!(parse_targets("").is_err());
        let l: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let b: Vec<SocketAddr> = vec!["127.0.0.1:9001".parse().unwrap()];
        let c = coregate_config(l, &b, 2, 1000, 50, "exact");
        assert!(c.contains("[runtime]\nworkers = 2\npin = false\n"), "{c}");
        assert!(
            c.contains(
                "[[rate_limits]]\nname = \"limit\"\nkey = \"client_ip\"\nrate = 1000\n\
                 period = \"1s\"\nburst = 50\nmode = \"exact\"\n\n[[upstreams]]"
            ),
            "{c}"
        );
        assert!(
            c.ends_with("upstream = \"backend\"\nrate_limits = [\"limit\"]\n"),
            "{c}"
        );
        assert!(
            c.starts_with("# Written by `loadtest ratelimit`: 2 workers"),
            "{c}"
        );
        let n = nginx_config(Path::new("/tmp/x"), l, &b, 2, 1000, 50);
        for line in [
            "worker_processes 2;\n",
            "    limit_req_zone $binary_remote_addr zone=z:10m rate=1000r/s;\n    upstream backend {\n",
            "            limit_req zone=z burst=50 nodelay;\n",
            "            limit_req_status 429;\n",
            "        keepalive 1024;\n",
            "        server 127.0.0.1:9001;\n",
        ] {
            assert!(n.contains(line), "{line:?} missing in\n{n}");
        }
        // The bench's nginx is unchanged: one worker, no limit.
        let plain = targets::nginx_config(Path::new("/tmp/x"), l, &b, None);
        assert!(plain.contains("worker_processes 1;\n"), "{plain}");
        assert!(
            plain.contains("# Written by `loadtest bench`: 1 worker,"),
            "{plain}"
        );
        assert!(!plain.contains("limit_req"), "{plain}");
    }

    #[test]
    fn responses_are_framed() {
        let ok =
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 429 Too Many Requests\r\n\
                   Content-Length: 0\r\nRetry-After: 1\r\n\r\n";
        assert_eq!(parse_one(ok), Ok(Some((200, 41, false))));
        assert_eq!(parse_one(&ok[41..]), Ok(Some((429, ok.len() - 41, false))));
        assert_eq!(parse_one(&ok[..40]), Ok(None));
        assert_eq!(parse_one(&ok[..10]), Ok(None));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                        3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(parse_one(chunked), Ok(Some((200, chunked.len(), true))));
        assert_eq!(parse_one(&chunked[..chunked.len() - 2]), Ok(None));
        assert!(parse_one(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_one(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn trial_figures() {
        let mut t = Tally::new(4);
        t.admitted = vec![1050, 990, 1010, 1020, 7];
        t.limited = vec![1950, 2010, 1990, 1980, 3];
        t.connections = 1;
        let tr = Trial::new(1, "coregate-sync", 1000, t);
        assert_eq!(tr.admitted_per_second, vec![1050, 990, 1010, 1020]);
        assert_eq!(tr.admitted_after, 7);
        assert_eq!(tr.admitted, 4077);
        assert_eq!(tr.limited, 7933);
        assert!((tr.mean_admitted - 1006.666).abs() < 0.01);
        assert!((tr.deviation_pct - 0.6667).abs() < 0.01);
        assert!((tr.worst_second_pct - 2.0).abs() < 1e-9);
    }

    /// The pacing against a tiny in-process server answering 200 to every other request and
    /// 429 to the rest: every request answered, counted in its second, at the offered rate.
    #[test]
    fn paced_batches_on_one_connection() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // One small write per response: without it Nagle holds the second until the ACK.
            s.set_nodelay(true).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let mut n = 0u64;
            // Bounded: the client sends about 600 requests in 2 s, then closes.
            for _ in 0..100_000 {
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    n += 1;
                    let r: &[u8] = if n.is_multiple_of(2) {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    } else {
                        b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n"
                    };
                    s.write_all(r).unwrap();
                }
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            n
        });
        let o = Offer {
            rate: 300.0,
            batch: 5,
            secs: 2,
            timeout: Duration::from_secs(2),
        };
        let t = offer(addr, o, Instant::now() + Duration::from_millis(50));
        let served = server.join().unwrap();
        let answered: u64 = t.admitted.iter().chain(&t.limited).sum();
        assert_eq!(t.errors.iter().sum::<u64>(), 0, "{t:?}");
        assert_eq!(answered, served, "{t:?}");
        assert_eq!(t.sent.iter().sum::<u64>(), served, "{t:?}");
        assert_eq!(t.connections, 1);
        // 300 req/s for 2 s: 600 requests, 120 batches of 5.
        assert!((590..=600).contains(&served), "{served}");
        for k in 0..2 {
            assert!((290..=310).contains(&t.sent[k]), "{t:?}");
            assert!((140..=160).contains(&t.admitted[k]), "{t:?}");
        }
    }
}
