//! The Prometheus text exposition (format 0.0.4) of everything coregate counts: each worker's
//! stats merged (summed) at scrape time, the backends' health from the shared table, the config
//! reloads, and the process's memory and descriptors. Written by hand — it is a few `write!`s —
//! and checked in the tests against Prometheus' own Python parser.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::stats::{Histogram, WorkerStats, AUTH_DECISIONS, BUCKETS_US, CLASSES, ERROR_STATUSES};
use super::Registry;
use crate::config::Snapshot;
use crate::upstream::Shared;

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Sums of histograms: per-bucket counts and the sum in µs.
fn merged<'a>(hs: impl Iterator<Item = &'a Histogram>) -> ([u64; BUCKETS_US.len() + 1], u64) {
    let mut total = [0u64; BUCKETS_US.len() + 1];
    let mut sum = 0;
    for h in hs {
        let (b, s) = h.read();
        for (t, x) in total.iter_mut().zip(b) {
            *t += x;
        }
        sum += s;
    }
    (total, sum)
}

fn histogram(out: &mut String, name: &str, labels: &str, (buckets, sum_us): ([u64; 17], u64)) {
    let mut cumulative = 0;
    for (i, count) in buckets.iter().enumerate() {
        cumulative += count;
        let le = match BUCKETS_US.get(i) {
            Some(us) => format!("{}", *us as f64 / 1e6),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// The whole `/metrics` page.
pub fn encode(snapshot: &Snapshot, reg: &Registry, backends: &Shared) -> String {
    let workers = reg.workers();
    let mut out = String::with_capacity(16 * 1024);
    let sum = |f: &dyn Fn(&WorkerStats) -> u64| workers.iter().map(|w| f(w)).sum::<u64>();

    head(
        &mut out,
        "coregate_requests_total",
        "counter",
        "Requests answered, by listener, route, upstream and status class (route and upstream empty when no route matched).",
    );
    for (li, l) in snapshot.listeners.iter().enumerate() {
        for route in (0..snapshot.routes.len()).map(Some).chain([None]) {
            let (rname, uname) = match route {
                Some(r) => {
                    let r = &snapshot.routes[r];
                    let u = r
                        .upstream
                        .map_or("", |u| snapshot.upstreams[u].name.as_str());
                    (&*r.name, u)
                }
                None => ("", ""),
            };
            for class in 0..CLASSES {
                let n = sum(&|w| w.requests(li, route, class));
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "coregate_requests_total{{listener=\"{}\",route=\"{}\",upstream=\"{}\",status_class=\"{}xx\"}} {n}",
                        esc(&l.name),
                        esc(rname),
                        esc(uname),
                        class + 1
                    );
                }
            }
        }
    }

    head(
        &mut out,
        "coregate_request_seconds",
        "histogram",
        "Time from a complete request head to the end of its answer, by listener.",
    );
    for (li, l) in snapshot.listeners.iter().enumerate() {
        let h = merged(workers.iter().filter_map(|w| w.request_seconds.get(li)));
        histogram(
            &mut out,
            "coregate_request_seconds",
            &format!("listener=\"{}\"", esc(&l.name)),
            h,
        );
    }

    head(
        &mut out,
        "coregate_upstream_response_seconds",
        "histogram",
        "Time from a request sent upstream to its response head, by upstream.",
    );
    for u in &snapshot.upstreams {
        let h = merged(
            workers
                .iter()
                .filter_map(|w| w.upstream_seconds.get(u.index)),
        );
        histogram(
            &mut out,
            "coregate_upstream_response_seconds",
            &format!("upstream=\"{}\"", esc(&u.name)),
            h,
        );
    }

    for (name, help, f) in [
        (
            "coregate_received_bytes_total",
            "Bytes received from clients (heads and bodies), by listener.",
            (|w: &WorkerStats, i: usize| w.bytes_in.get(i).map_or(0, |c| c.get()))
                as fn(&WorkerStats, usize) -> u64,
        ),
        (
            "coregate_sent_bytes_total",
            "Bytes sent to clients (heads and bodies), by listener.",
            |w: &WorkerStats, i: usize| w.bytes_out.get(i).map_or(0, |c| c.get()),
        ),
    ] {
        head(&mut out, name, "counter", help);
        for (li, l) in snapshot.listeners.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{listener=\"{}\"}} {}",
                esc(&l.name),
                sum(&|w| f(w, li))
            );
        }
    }

    head(
        &mut out,
        "coregate_client_connections",
        "gauge",
        "Client connections open, by worker.",
    );
    for w in &workers {
        let _ = writeln!(
            out,
            "coregate_client_connections{{worker=\"{}\"}} {}",
            w.worker,
            w.client_connections.get()
        );
    }
    for (name, help, f) in [
        (
            "coregate_client_timeouts_total",
            "Client connections closed for a slow head or an idle keep-alive.",
            (|w: &WorkerStats| w.client_timeouts.get()) as fn(&WorkerStats) -> u64,
        ),
        (
            "coregate_client_aborts_total",
            "Clients that closed while their response was awaited (nginx's 499).",
            |w: &WorkerStats| w.client_aborts.get(),
        ),
        (
            "coregate_proxy_protocol_errors_total",
            "Connections closed on a listener with proxy_protocol = true for a missing, invalid or late PROXY header.",
            |w: &WorkerStats| w.proxy_protocol_errors.get(),
        ),
        (
            "coregate_tls_handshakes_total",
            "TLS handshakes completed on listeners.",
            |w: &WorkerStats| w.tls_handshakes.get(),
        ),
        (
            "coregate_tls_resumed_total",
            "TLS handshakes on listeners that resumed a session (ticket or cache).",
            |w: &WorkerStats| w.tls_resumed.get(),
        ),
        (
            "coregate_tcp_connections_total",
            "Connections of TCP listeners relayed to a backend.",
            |w: &WorkerStats| w.tcp_connections.get(),
        ),
        (
            "coregate_tcp_refused_total",
            "Connections of TCP listeners closed at once: over max_connections, or no backend reachable.",
            |w: &WorkerStats| w.tcp_refused.get(),
        ),
        (
            "coregate_tunnels_total",
            "Upgraded connections (WebSocket and others) relayed as byte tunnels.",
            |w: &WorkerStats| w.tunnels.get(),
        ),
    ] {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", sum(&|w| f(w)));
    }
    head(
        &mut out,
        "coregate_tunnels_open",
        "gauge",
        "Upgraded connections relayed as byte tunnels now.",
    );
    let _ = writeln!(
        out,
        "coregate_tunnels_open {}",
        sum(&|w| w.tunnels_open.get())
    );
    head(
        &mut out,
        "coregate_tls_handshake_failures_total",
        "counter",
        "Failed TLS handshakes on listeners, by reason.",
    );
    for r in crate::tls::FAILURE_REASONS {
        let n = sum(&|w| w.tls_failures[r.index()].get());
        let _ = writeln!(
            out,
            "coregate_tls_handshake_failures_total{{reason=\"{}\"}} {n}",
            r.as_str()
        );
    }

    head(
        &mut out,
        "coregate_generated_responses_total",
        "counter",
        "Answers coregate generated itself (errors, rate limits), by status (0: other).",
    );
    for st in ERROR_STATUSES {
        let n = sum(&|w| w.errors(st));
        if n > 0 {
            let _ = writeln!(
                out,
                "coregate_generated_responses_total{{status=\"{st}\"}} {n}"
            );
        }
    }

    for (name, help, pick) in [
        (
            "coregate_upstream_retries_total",
            "Requests sent again to a backend after a failure, by upstream.",
            0usize,
        ),
        (
            "coregate_upstream_connections_opened_total",
            "Connections opened to backends, by upstream.",
            1,
        ),
        (
            "coregate_upstream_connections_reused_total",
            "Requests sent on a pooled connection, by upstream.",
            2,
        ),
    ] {
        head(&mut out, name, "counter", help);
        for u in &snapshot.upstreams {
            let n = sum(&|w| {
                let c = match pick {
                    0 => &w.retries,
                    1 => &w.connects,
                    _ => &w.reuses,
                };
                c.get(u.index).map_or(0, |c| c.get())
            });
            let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {n}", esc(&u.name));
        }
    }

    let now = std::time::Instant::now();
    let now_ms = backends.ms(now);
    for (name, kind, help) in [
        (
            "coregate_backend_up",
            "gauge",
            "1 when the backend passes its health checks (or has none).",
        ),
        (
            "coregate_backend_ejected",
            "gauge",
            "1 while the backend is ejected for consecutive failures.",
        ),
        (
            "coregate_backend_ejections_total",
            "counter",
            "Times the backend was ejected.",
        ),
        (
            "coregate_backend_requests_in_flight",
            "gauge",
            "Requests sent to the backend and not finished (at the workers' last sync tick).",
        ),
        (
            "coregate_backend_idle_connections",
            "gauge",
            "Idle pooled connections to the backend (at the workers' last sync tick).",
        ),
    ] {
        head(&mut out, name, kind, help);
        for u in &snapshot.upstreams {
            for b in &u.backends {
                let sb = backends.backend(u.index, b.index);
                let v = match name {
                    "coregate_backend_up" => sb.up.load(Relaxed) as u64,
                    "coregate_backend_ejected" => {
                        (sb.ejected_until_ms.load(Relaxed) > now_ms) as u64
                    }
                    "coregate_backend_ejections_total" => {
                        sum(&|w| w.ejection(u.index, b.index).get())
                    }
                    "coregate_backend_requests_in_flight" => {
                        sum(&|w| w.backend_in_flight[w.backend_slot(u.index, b.index)].get())
                    }
                    _ => sum(&|w| w.backend_idle[w.backend_slot(u.index, b.index)].get()),
                };
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",backend=\"{}\"}} {v}",
                    esc(&u.name),
                    esc(&b.address)
                );
            }
        }
    }

    head(
        &mut out,
        "coregate_rate_limit_decisions_total",
        "counter",
        "Requests a rate limit admitted or rejected, by limit.",
    );
    for l in &snapshot.rate_limits {
        for (decision, c) in [("admitted", true), ("rejected", false)] {
            let n = sum(&|w| {
                let v = if c {
                    &w.limit_admitted
                } else {
                    &w.limit_rejected
                };
                v.get(l.index).map_or(0, |c| c.get())
            });
            let _ = writeln!(
                out,
                "coregate_rate_limit_decisions_total{{limit=\"{}\",decision=\"{decision}\"}} {n}",
                esc(&l.name)
            );
        }
    }

    head(
        &mut out,
        "coregate_auth_decisions_total",
        "counter",
        "Requests an auth policy decided on, by auth and decision (missing and invalid credentials are answered 401, forbidden 403).",
    );
    for (i, a) in snapshot.auths.iter().enumerate() {
        for (d, decision) in AUTH_DECISIONS.iter().enumerate() {
            let n = sum(&|w| w.auth(i, d).get());
            let _ = writeln!(
                out,
                "coregate_auth_decisions_total{{auth=\"{}\",decision=\"{decision}\"}} {n}",
                esc(&a.name)
            );
        }
    }

    head(
        &mut out,
        "coregate_config_reloads_total",
        "counter",
        "Config reloads, by result (a failed one leaves the previous config in force).",
    );
    let _ = writeln!(
        out,
        "coregate_config_reloads_total{{result=\"success\"}} {}",
        reg.reloads_ok.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "coregate_config_reloads_total{{result=\"failure\"}} {}",
        reg.reloads_failed.load(Relaxed)
    );
    let (hash, at) = reg.config.lock().map(|c| c.clone()).unwrap_or_default();
    head(
        &mut out,
        "coregate_config_info",
        "gauge",
        "The config in force: the xxh3-64 hash of its text, in hex.",
    );
    let _ = writeln!(out, "coregate_config_info{{hash=\"{}\"}} 1", esc(&hash));
    head(
        &mut out,
        "coregate_config_loaded_timestamp_seconds",
        "gauge",
        "When the config in force was loaded (Unix time).",
    );
    let _ = writeln!(out, "coregate_config_loaded_timestamp_seconds {at}");

    head(
        &mut out,
        "coregate_access_log_dropped_lines_total",
        "counter",
        "Access-log lines lost: the writer was behind, or the file could not be written.",
    );
    let _ = writeln!(
        out,
        "coregate_access_log_dropped_lines_total {}",
        reg.logs.dropped()
    );
    head(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    let _ = writeln!(out, "process_resident_memory_bytes {}", rss_bytes());
    head(
        &mut out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
    );
    let _ = writeln!(out, "process_open_fds {}", open_fds());
    out
}

/// Resident set size, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
