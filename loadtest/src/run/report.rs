//! What a run measured, as figures: the summary (human table and JSON), the HdrHistogram
//! percentile distribution text (the format wrk2 prints) and a latency-by-percentile SVG plot.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Errors, Plan, Stats};
use crate::util::{fmt_bytes, fmt_us};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub stdev_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub p99_99_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            mean_us: h.mean(),
            stdev_us: h.stdev(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p99_9_us: h.value_at_quantile(0.999),
            p99_99_us: h.value_at_quantile(0.9999),
            max_us: h.max(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub url: String,
    /// "closed" or "open".
    pub mode: &'static str,
    pub threads: usize,
    pub connections: usize,
    pub pipeline: usize,
    pub keepalive: bool,
    pub target_rate: Option<f64>,
    pub seconds: f64,
    /// Valid responses (expected status and length) in the measured window.
    pub ok: u64,
    pub requests_per_sec: f64,
    pub bytes: u64,
    pub bytes_per_sec: f64,
    pub errors_total: u64,
    pub errors: Errors,
    /// Open loop: requests due before the end that were never sent (the target fell behind).
    pub unsent: u64,
    pub warmup_responses: u64,
    pub connects: u64,
    /// CPU time of the generator process per valid response, in µs.
    pub generator_cpu_us_per_req: f64,
    /// Latency of valid responses (open loop: from the intended send time).
    pub latency: Latency,
    /// Open loop only: from the actual send time (what a tool without correction reports).
    pub service_latency: Option<Latency>,
    /// Open loop only: the generator's own sending lateness (timer, CPU starvation).
    pub generator_lag: Option<Latency>,
}

impl Summary {
    pub fn new(url: &str, threads: usize, plan: &Plan, s: &Stats, secs: f64) -> Summary {
        Summary {
            url: url.to_string(),
            mode: if plan.interval.is_some() {
                "open"
            } else {
                "closed"
            },
            threads: threads.clamp(1, plan.connections),
            connections: plan.connections,
            pipeline: plan.pipeline,
            keepalive: plan.keepalive,
            target_rate: plan.interval.map(|iv| plan.connections as f64 / iv),
            seconds: secs,
            ok: s.ok,
            requests_per_sec: s.ok as f64 / secs,
            bytes: s.bytes,
            bytes_per_sec: s.bytes as f64 / secs,
            errors_total: s.errors.total(),
            errors: s.errors.clone(),
            unsent: s.unsent,
            warmup_responses: s.warmup,
            connects: s.connects,
            generator_cpu_us_per_req: s.cpu_secs * 1e6 / s.ok.max(1) as f64,
            latency: Latency::of(&s.latency),
            service_latency: plan.interval.map(|_| Latency::of(&s.service)),
            generator_lag: plan.interval.map(|_| Latency::of(&s.lag)),
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let rate = self
            .target_rate
            .map_or(String::new(), |r| format!(", offered {r:.0} req/s"));
        let _ = writeln!(
            t,
            "{} loop: {} for {:.2}s, {} thread(s), {} connection(s){}{}{}",
            self.mode,
            self.url,
            self.seconds,
            self.threads,
            self.connections,
            if self.pipeline > 1 {
                format!(", pipeline {}", self.pipeline)
            } else {
                String::new()
            },
            if self.keepalive {
                ""
            } else {
                ", no keep-alive"
            },
            rate
        );
        let _ = writeln!(
            t,
            "  requests/s {:>12.1}   ok {:>10}   transfer {}/s   generator CPU {:.2}us/req",
            self.requests_per_sec,
            self.ok,
            fmt_bytes(self.bytes_per_sec),
            self.generator_cpu_us_per_req
        );
        let row = |t: &mut String, name: &str, l: &Latency| {
            let _ = writeln!(
                t,
                "  {name:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                fmt_us(l.mean_us as u64),
                fmt_us(l.p50_us),
                fmt_us(l.p90_us),
                fmt_us(l.p99_us),
                fmt_us(l.p99_9_us),
                fmt_us(l.p99_99_us),
                fmt_us(l.max_us)
            );
        };
        let _ = writeln!(
            t,
            "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        row(&mut t, "", &self.latency);
        if let Some(s) = &self.service_latency {
            row(&mut t, "uncorrected", s);
        }
        if let Some(g) = &self.generator_lag {
            row(&mut t, "gen. lag", g);
        }
        let e = &self.errors;
        if self.errors_total > 0 || self.unsent > 0 {
            let _ = writeln!(
                t,
                "  errors {}: connect {}, timeout {}, reset {}, parse {}, status 1xx/2xx/3xx/4xx/5xx {}/{}/{}/{}/{}, body length {}{}",
                self.errors_total,
                e.connect,
                e.timeout,
                e.reset,
                e.parse,
                e.status_1xx,
                e.status_2xx,
                e.status_3xx,
                e.status_4xx,
                e.status_5xx,
                e.body_length,
                if self.unsent > 0 {
                    format!("; {} requests never sent (target too slow)", self.unsent)
                } else {
                    String::new()
                }
            );
        } else {
            let _ = writeln!(t, "  errors 0");
        }
        t
    }
}

/// The percentile distribution in HdrHistogram's text format (values in milliseconds, five
/// steps per halving of the remaining tail), as wrk2 --latency and HdrHistogram print it.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if h.is_empty() {
        let _ = writeln!(out, "#[no samples]");
        return out;
    }
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let ms = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{ms:>12.3} {q:>14.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{ms:>12.3} {q:>14.12} {total:>10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        // HdrHistogram's sub-bucket count: the power of two covering 2 * 10^sigfig.
        1u64 << (2.0 * 10f64.powi(i32::from(h.sigfig()))).log2().ceil() as u32
    );
    out
}

/// (percentile as a fraction, latency µs) points for plotting.
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
        .collect()
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Latency by percentile: x is 1/(1-p) on a log scale (50%, 90%, 99%, ... 99.999%), y is
/// latency in ms (linear from 0). One line per series.
pub fn svg(title: &str, series: &[(String, Vec<(f64, u64)>)]) -> String {
    let (w, h) = (800.0, 480.0);
    let (l, r, t, b) = (70.0, 20.0, 40.0, 60.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let decades = 6.0; // x from 1 (p = 0) to 10^6 (p = 99.9999 %)
    let ymax_us = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    // A round top for the y axis.
    let ymax_ms = nice_ceiling(ymax_us / 1000.0 * 1.05);
    let xpos = |q: f64| {
        let inv = 1.0 / (1.0 - q.min(0.999_999));
        l + (inv.log10() / decades).min(1.0) * pw
    };
    let ypos = |us: f64| t + ph - (us / 1000.0 / ymax_ms).min(1.0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
        .iter()
        .enumerate()
    {
        let x = l + i as f64 / decades * pw;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            t + ph,
            t + ph + 16.0
        );
    }
    for i in 0..=5 {
        let v = ymax_ms * i as f64 / 5.0;
        let y = t + ph - ph * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 6.0,
            y + 4.0,
            trim_float(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text transform="translate(16 {}) rotate(-90)" text-anchor="middle">latency (ms)</text>"#,
        l + pw / 2.0,
        h - 14.0,
        t + ph / 2.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(q, v)| format!("{:.1},{:.1}", xpos(q), ypos(v as f64)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = t + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            l + 10.0,
            ly - 4.0,
            l + 28.0,
            ly,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn nice_ceiling(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= x {
            return m * mag;
        }
    }
    10.0 * mag
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_and_svg_shapes() {
        let mut h = crate::run::new_hist();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let text = hgrm(&h);
        assert!(text.contains("Percentile"));
        assert!(text.contains("#[Max     =       10.007"), "{text}");
        assert!(text.contains("Total count    =         1000"));
        let svg = svg("t <x>", &[("a".into(), percentile_points(&h))]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("t &lt;x&gt;"));
        assert!(svg.contains("<polyline"));
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(0.21), 0.25);
    }
}
