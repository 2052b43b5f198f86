//! The benchmark's markdown: one table per scenario (saturation, CPU per request and latency at
//! the fixed rate, RSS, errors) with ratios against coregate (or, without coregate, the first
//! proxy measured) and coregate against the relay floor; with coregate variants, a table of each
//! variant's CPU per request against the first variant.

use std::fmt::Write as _;

use super::accesslog::LogCounts;
use super::measure::median;
use super::{BenchReport, ScenarioResult, TargetResult};
use crate::util::{fmt_bytes, fmt_us};

/// "2026-11-23 21:40:59" (UTC), from the system clock.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "–".into(),
    }
}

fn is_coregate(t: &TargetResult) -> bool {
    t.coregate.is_some()
}

/// coregate from the main binary (not --coregate-extra-bin).
fn is_main_coregate(t: &TargetResult) -> bool {
    t.coregate.as_ref().is_some_and(|c| !c.extra_bin)
}

/// The reference the ratios are taken against: coregate (the main binary's first variant, else
/// the first extra binary), else the first proxy, else the first target; only among targets
/// that gave valid responses.
fn reference(s: &ScenarioResult) -> Option<&TargetResult> {
    let valid = || s.targets.iter().filter(|t| t.saturation_median > 0.0);
    valid()
        .find(|t| is_main_coregate(t))
        .or_else(|| valid().find(|t| is_coregate(t)))
        .or_else(|| valid().find(|t| t.cpu_us_per_req_median.is_some()))
        .or_else(|| valid().next())
}

/// Per-round ratios a[r] / b[r] (rounds alternate the order, so round r of two targets ran
/// minutes apart at most): their median is less sensitive to drift than a ratio of medians.
fn paired_ratio(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || a.len() != b.len() || b.contains(&0.0) {
        return None;
    }
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    Some(median(&r))
}

/// "+1.2%" for a ratio of 1.012.
fn delta(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{:+.1}%", (r - 1.0) * 100.0))
}

/// With two or more coregate targets (variants, extra binaries): each one's CPU per request
/// against the main binary's first variant.
fn variants(m: &mut String, s: &ScenarioResult) {
    let vs: Vec<&TargetResult> = s.targets.iter().filter(|t| is_coregate(t)).collect();
    let first = vs
        .iter()
        .find(|t| is_main_coregate(t))
        .or_else(|| vs.first());
    let Some(&first) = first.filter(|_| vs.len() > 1) else {
        return;
    };
    let _ = writeln!(
        m,
        "\ncoregate variants, CPU per request at {} req/s against {} (per round: the rounds \
         alternate the order; paired = median over rounds of the ratio within a round):\n",
        thousands(s.rate),
        first.name
    );
    let _ = writeln!(
        m,
        "| variant | binary | config | CPU us/req by round | median | vs {0} (medians) | vs {0} (paired) | requests per backend |",
        first.name
    );
    let _ = writeln!(m, "|---|---|---|---|---:|---:|---:|---|");
    for t in vs {
        let rounds: Vec<String> = t.cpu_us_per_req.iter().map(|c| format!("{c:.2}")).collect();
        let total: u64 = t.backend_requests.iter().sum();
        let share: Vec<String> = t
            .backend_requests
            .iter()
            .map(|&n| format!("{:.0}%", n as f64 * 100.0 / total.max(1) as f64))
            .collect();
        let _ = writeln!(
            m,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} |",
            t.name,
            t.coregate.as_ref().map_or("", |c| c.binary.as_str()),
            t.coregate.as_ref().map_or("", |c| c.config.as_str()),
            rounds.join(", "),
            t.cpu_us_per_req_median
                .map_or("–".into(), |c| format!("{c:.2}")),
            delta(
                t.cpu_us_per_req_median
                    .zip(first.cpu_us_per_req_median)
                    .map(|(a, b)| a / b)
            ),
            delta(paired_ratio(&t.cpu_us_per_req, &first.cpu_us_per_req)),
            share.join(" / ")
        );
    }
}

/// The variants that write an access log: its lines against the requests they forwarded.
fn access_logs(m: &mut String, s: &ScenarioResult) {
    let logged: Vec<(&TargetResult, &LogCounts)> = s
        .targets
        .iter()
        .filter_map(|t| Some((t, t.access_log.as_ref()?)))
        .collect();
    if logged.is_empty() {
        return;
    }
    let settle = logged.first().map_or(0.0, |(_, c)| c.settle_s);
    let _ = writeln!(
        m,
        "\naccess logs: lines each round's runs of the variant wrote (its saturation run with \
         warm-up, then its fixed-rate run), counted once its last lines reached the file (waiting \
         up to {settle:.0} s after each run, then the file is cut back to its first 100 lines), against the requests the \
         backends received from it in the same runs; \"buffered\": lines not yet in the file when \
         its runs ended; \"after SIGTERM\": lines that appeared when it was stopped at the end \
         (expected 0):\n"
    );
    let _ = writeln!(
        m,
        "| variant | format | lines by round | requests by round | equal | buffered at end of runs | longest wait | after SIGTERM |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---:|---|");
    let list = |v: &[u64]| {
        v.iter()
            .map(|&x| thousands(x as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (t, c) in logged {
        let equal = if c.equal() {
            "yes".to_string()
        } else {
            let diff: Vec<String> = c
                .lines
                .iter()
                .zip(&c.requests)
                .map(|(&l, &r)| format!("{:+}", l as i64 - r as i64))
                .collect();
            format!("**no** (lines - requests: {})", diff.join(", "))
        };
        let stop = match (c.lines_after_stop, &c.exit) {
            (Some(n), Some(e)) => format!("{n} lines, {e}"),
            (Some(n), None) => format!("{n} lines"),
            _ => "not stopped".into(),
        };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {:.2} s | {} |",
            t.name,
            c.format,
            list(&c.lines),
            list(&c.requests),
            equal,
            list(&c.buffered_at_end_of_run),
            c.longest_wait_s,
            stop
        );
    }
}

pub fn markdown(b: &BenchReport) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "## loadtest bench, {} UTC\n", b.started_utc);
    let _ = writeln!(m, "Command: `{}`\n", b.command);
    let _ = writeln!(
        m,
        "Machine: {} CPUs, Linux {}. Generator and backend on CPUs {:?}, proxy alone on CPUs {:?}. \
         {} round(s) of {:.1} s per measurement, targets alternated each round; medians shown, \
         ± is (max - min) / median over rounds. CPU is utime + stime of the proxy's process tree \
         from /proc (clock-tick resolution) divided by responses, at the fixed offered rate. \
         Latency at that rate is open loop, measured from each request's intended send time, \
         all rounds merged. Only valid responses (status 200, expected length) count. \
         {} Load average (1/5/15 min) at the start {}, at the end {}.\n",
        b.online_cpus,
        b.kernel,
        b.cpus_generator,
        b.cpus_proxy,
        b.rounds,
        b.seconds_per_measurement,
        if b.backends > 1 {
            format!(
                "{} backend processes (one worker each, on the generator's CPUs): coregate, \
                 nginx and HAProxy balance over all of them, relay and direct use the first.",
                b.backends
            )
        } else {
            "One backend process (one worker).".to_string()
        },
        b.loadavg_start,
        b.loadavg_end
    );
    for n in &b.notes {
        let _ = writeln!(m, "- {n}");
    }
    if !b.notes.is_empty() {
        m.push('\n');
    }
    for s in &b.scenarios {
        let _ = writeln!(m, "### {}: {}\n", s.name, s.description);
        let r = reference(s);
        let rname = r.map_or("-", |r| r.name.as_str());
        let _ = writeln!(
            m,
            "Fixed offered rate: {} req/s. Ratios against {rname}.\n",
            thousands(s.rate)
        );
        let _ = writeln!(
            m,
            "| target | saturation req/s | vs {rname} | CPU us/req | vs {rname} | p50 | p99 | p99.9 | max | RSS | errors |"
        );
        let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for t in &s.targets {
            let sat = format!(
                "{} ±{:.0}%",
                thousands(t.saturation_median),
                t.saturation_spread_pct
            );
            let cpu = t.cpu_us_per_req_median.map_or("–".into(), |c| {
                format!("{c:.1} ±{:.0}%", t.cpu_spread_pct.unwrap_or(0.0))
            });
            let l = &t.latency;
            let errs = if t.unsent > 0 {
                format!("{} (+{} unsent)", t.errors, t.unsent)
            } else {
                t.errors.to_string()
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name,
                sat,
                ratio(Some(t.saturation_median), r.map(|r| r.saturation_median)),
                cpu,
                ratio(
                    t.cpu_us_per_req_median,
                    r.and_then(|r| r.cpu_us_per_req_median)
                ),
                fmt_us(l.p50_us),
                fmt_us(l.p99_us),
                fmt_us(l.p99_9_us),
                fmt_us(l.max_us),
                t.rss_bytes.map_or("–".into(), |b| fmt_bytes(b as f64)),
                errs
            );
        }
        let find = |n: &str| s.targets.iter().find(|t| t.name == n);
        let coregate = s
            .targets
            .iter()
            .find(|t| is_main_coregate(t))
            .or_else(|| s.targets.iter().find(|t| is_coregate(t)));
        if let (Some(c), Some(f)) = (coregate, find("relay")) {
            let _ = writeln!(
                m,
                "\n{} against the relay floor: throughput {}, CPU per request {}.",
                c.name,
                ratio(Some(c.saturation_median), Some(f.saturation_median)),
                ratio(c.cpu_us_per_req_median, f.cpu_us_per_req_median)
            );
        }
        variants(&mut m, s);
        access_logs(&mut m, s);
        let lagging: Vec<String> = s
            .targets
            .iter()
            .filter(|t| t.generator_lag.p99_us > 1000)
            .map(|t| format!("{} {}", t.name, fmt_us(t.generator_lag.p99_us)))
            .collect();
        if !lagging.is_empty() {
            let _ = writeln!(
                m,
                "\n- the generator itself sent late (p99 of its own lag: {}); those latencies \
                 include generator stalls, not only the target's",
                lagging.join(", ")
            );
        }
        for t in s.targets.iter().filter(|t| t.errors > 0) {
            let _ = writeln!(m, "\n- {} errors: {}", t.name, t.error_kinds.describe());
        }
        for n in &s.notes {
            let _ = writeln!(m, "\n- {n}");
        }
        m.push('\n');
    }
    if !b.idle.is_empty() {
        let _ = writeln!(
            m,
            "### Memory per idle keep-alive connection\n\n\
             Each proxy holds N connections, answered once and then silent or sending one request \
             per second (a fresh process for each); RSS of its process tree before opening them \
             and after one second of holding them.\n"
        );
        let _ = writeln!(
            m,
            "| target | pattern | connections held | RSS before | RSS holding | per connection | errors |"
        );
        let _ = writeln!(m, "|---|---|---:|---:|---:|---:|---:|");
        for r in &b.idle {
            let opt = |v: Option<u64>| v.map_or("–".into(), |b| fmt_bytes(b as f64));
            let _ = writeln!(
                m,
                "| {} | {} | {} of {} | {} | {} | {} | {} |",
                r.name,
                r.pattern,
                r.established,
                r.connections,
                opt(r.rss_before),
                opt(r.rss_held),
                r.bytes_per_connection
                    .map_or("–".into(), |b| fmt_bytes(b.max(0.0))),
                r.errors
            );
        }
        m.push('\n');
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50x");
        assert_eq!(ratio(None, Some(2.0)), "–");
        assert_eq!(paired_ratio(&[2.0, 3.3, 4.0], &[2.0, 3.0, 5.0]), Some(1.0));
        assert_eq!(paired_ratio(&[1.0], &[1.0, 2.0]), None);
        assert_eq!(delta(Some(1.0123)), "+1.2%");
        assert_eq!(delta(Some(0.97)), "-3.0%");
        let now = utc_now();
        assert_eq!(now.len(), 19);
        assert!(now.starts_with("20"));
    }
}
