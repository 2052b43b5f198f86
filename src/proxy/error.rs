//! What the client is told when a request cannot be forwarded (DESIGN.md §6), and the
//! rate-limited log of upstream failures. Error answers are small and complete; those that end
//! the connection say `Connection: close`.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::config::Upstream;

/// The reason phrase coregate sends with `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        410 => "Gone",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
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
    error_response_with(status, detail, close.then_some("close"), "")
}

/// Like [`error_response`], with `Connection: {connection}` when given (`keep-alive` for an
/// HTTP/1.0 client whose connection stays open) and the complete field lines `extra`.
pub fn error_response_with(
    status: u16,
    detail: &str,
    connection: Option<&str>,
    extra: &str,
) -> Vec<u8> {
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
    out.push_str(extra);
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// How long repeats of one failure are counted before they are logged as one line.
pub const FAILURE_LOG_WINDOW: Duration = Duration::from_secs(5);
/// Distinct failures remembered per worker (the least recently logged is forgotten first).
const FAILURE_KINDS: usize = 64;

/// Rate-limited warnings about upstream failures, per worker: the first failure of a kind
/// (status, cause, backend) is logged at once; repeats within [`FAILURE_LOG_WINDOW`] are only
/// counted and logged as one line with their number when the window ends ([`Self::flush`] on
/// the housekeeping tick, or the next repeat after it). A burst of thousands is two lines.
#[derive(Default)]
pub struct FailureLog {
    kinds: RefCell<Vec<Failure>>,
}

struct Failure {
    status: u16,
    detail: &'static str,
    upstream: usize,
    backend: usize,
    /// When the last line about it was written.
    logged: Instant,
    /// Repeats since then.
    repeats: u64,
}

impl FailureLog {
    /// Records a failure answered with `status` (5xx) on `backend` of `u`.
    pub fn upstream(&self, status: u16, detail: &'static str, u: &Upstream, backend: usize) {
        self.upstream_because(status, detail, &"", u, backend);
    }

    /// [`Self::upstream`] with the error behind it, shown when the line is logged (after the
    /// detail, which alone tells kinds apart).
    pub fn upstream_because(
        &self,
        status: u16,
        detail: &'static str,
        cause: &dyn std::fmt::Display,
        u: &Upstream,
        backend: usize,
    ) {
        let now = Instant::now();
        let cause = cause.to_string();
        let cause = if cause.is_empty() {
            cause
        } else {
            format!(": {cause}")
        };
        let mut kinds = self.kinds.borrow_mut();
        let found = kinds.iter_mut().find(|f| {
            f.status == status
                && std::ptr::eq(f.detail, detail)
                && f.upstream == u.index
                && f.backend == backend
        });
        let addr = u.backends.get(backend).map_or("?", |b| &b.address);
        match found {
            Some(f) if now.duration_since(f.logged) < FAILURE_LOG_WINDOW => f.repeats += 1,
            Some(f) => {
                let repeats = f.repeats + 1;
                tracing::warn!(
                    "upstream {} backend {addr}: {detail} ({status}){cause}, {repeats} more time(s) in the last {}s",
                    u.name,
                    now.duration_since(f.logged).as_secs()
                );
                f.logged = now;
                f.repeats = 0;
            }
            None => {
                tracing::warn!(
                    "upstream {} backend {addr}: {detail} ({status}){cause}",
                    u.name
                );
                if kinds.len() >= FAILURE_KINDS {
                    if let Some(oldest) = (0..kinds.len()).min_by_key(|&i| kinds[i].logged) {
                        kinds.swap_remove(oldest);
                    }
                }
                kinds.push(Failure {
                    status,
                    detail,
                    upstream: u.index,
                    backend,
                    logged: now,
                    repeats: 0,
                });
            }
        }
    }

    /// Logs the repeats counted in windows that have ended (housekeeping tick). `upstreams` is
    /// the snapshot the failures were recorded against.
    pub fn flush(&self, now: Instant, upstreams: &[Upstream]) {
        let mut kinds = self.kinds.borrow_mut();
        for f in kinds.iter_mut() {
            if f.repeats > 0 && now.duration_since(f.logged) >= FAILURE_LOG_WINDOW {
                let u = upstreams.get(f.upstream);
                tracing::warn!(
                    "upstream {} backend {}: {} ({}), {} more time(s) in the last {}s",
                    u.map_or("?", |u| &u.name),
                    u.and_then(|u| u.backends.get(f.backend))
                        .map_or("?", |b| &b.address),
                    f.detail,
                    f.status,
                    f.repeats,
                    now.duration_since(f.logged).as_secs()
                );
                f.logged = now;
                f.repeats = 0;
            }
        }
        // Kinds quiet for a long while are forgotten (their next failure logs at once again).
        kinds.retain(|f| f.repeats > 0 || now.duration_since(f.logged) < FAILURE_LOG_WINDOW * 12);
    }

    /// Failures counted but not logged yet (tests).
    pub fn pending(&self) -> u64 {
        self.kinds.borrow().iter().map(|f| f.repeats).sum()
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
    }
}
