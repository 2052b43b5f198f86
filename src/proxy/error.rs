//! What the client is told when a request cannot be forwarded (DESIGN.md §6), and the per-worker
//! counters of those answers. Error answers are small and complete; those that end the
//! connection say `Connection: close`.

use std::cell::Cell;

/// The reason phrase coregate sends with `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A complete error response: status line, a short text body naming the problem.
pub fn error_response(status: u16, detail: &str, close: bool) -> Vec<u8> {
    error_response_with(status, detail, close.then_some("close"))
}

/// Like [`error_response`], with `Connection: {connection}` when given (`keep-alive` for an
/// HTTP/1.0 client whose connection stays open).
pub fn error_response_with(status: u16, detail: &str, connection: Option<&str>) -> Vec<u8> {
    let body = format!("{status} {}: {detail}\n", reason(status));
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if let Some(c) = connection {
        out.push_str("Connection: ");
        out.push_str(c);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Per-worker counters (plain `Cell`s: one worker owns them).
#[derive(Default)]
pub struct Stats {
    pub requests: Cell<u64>,
    /// Responses relayed from upstreams, by class 1xx..5xx (index 0..4).
    pub relayed: [Cell<u64>; 5],
    /// Error answers coregate generated, by status.
    pub errors: ErrorCounts,
    /// Upstream connections opened / reused from the pool.
    pub upstream_connects: Cell<u64>,
    pub upstream_reuses: Cell<u64>,
    pub upstream_retries: Cell<u64>,
    /// Client connections closed for a slow head (slowloris) or idle keep-alive.
    pub client_timeouts: Cell<u64>,
}

#[derive(Default)]
pub struct ErrorCounts {
    counts: [Cell<u64>; 11],
}

const COUNTED: [u16; 11] = [400, 404, 408, 413, 417, 431, 501, 502, 503, 504, 505];

impl ErrorCounts {
    pub fn count(&self, status: u16) {
        if let Some(i) = COUNTED.iter().position(|&s| s == status) {
            self.counts[i].set(self.counts[i].get() + 1);
        }
    }

    pub fn get(&self, status: u16) -> u64 {
        COUNTED
            .iter()
            .position(|&s| s == status)
            .map_or(0, |i| self.counts[i].get())
    }

    /// `status=count` pairs for the non-zero counters.
    pub fn summary(&self) -> String {
        COUNTED
            .iter()
            .zip(&self.counts)
            .filter(|(_, c)| c.get() > 0)
            .map(|(s, c)| format!("{s}={}", c.get()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Stats {
    pub fn relayed(&self, status: u16) {
        if let Some(c) = self.relayed.get((status / 100) as usize - 1) {
            c.set(c.get() + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_complete() {
        let r = String::from_utf8(error_response(502, "upstream refused the connection", true))
            .unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(head.contains("Connection: close"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let r = String::from_utf8(error_response(404, "no route", false)).unwrap();
        assert!(!r.contains("Connection: close"));
        let stats = Stats::default();
        stats.errors.count(502);
        stats.errors.count(502);
        stats.errors.count(299);
        assert_eq!(
            (stats.errors.get(502), stats.errors.summary()),
            (2, "502=2".to_string())
        );
    }
}
