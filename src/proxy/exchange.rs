//! Step 3: choose a backend, take a connection to it, send the request head and body, hand
//! over to the response relay. A failure before any response byte reached the client may be
//! retried on another backend, within the upstream's retry policy and budget:
//!
//! - a connect failure (nothing was sent): any method;
//! - a reset or close before any response byte, a response timeout, or a 5xx status the policy
//!   lists: only for an idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or one
//!   carrying `Idempotency-Key`) whose body is still held (none, or all of it came with the
//!   head) — never once the body was streamed.
//!
//! Connect failures, resets and 5xx answers count towards the backend's ejection; a stale
//! pooled connection closed by the backend does not.

use super::body::{self, RelayFail};
use super::client::{ClientConn, Next, ReqInfo, UpFail};
use super::io::{write_head, IoFail};
use crate::config::Upstream;
use crate::http1::Framing;
use crate::upstream::{CheckoutError, ClientEnds, Conn, Tried};
use std::time::Duration;

/// What became of a relayed response.
pub(super) struct Relayed {
    pub(super) next: Next,
    /// The upstream connection can carry another request.
    pub(super) reusable: bool,
    pub(super) status: u16,
}

impl<'a> ClientConn<'a> {
    /// Steps 3–5: send the request upstream and relay the response.
    pub(super) async fn exchange(&mut self, upstream: &'a Upstream, info: ReqInfo) -> Next {
        let stats = &self.state.stats;
        let ups = &self.state.upstreams;
        let policy = &upstream.retry;
        let replayable = info.idempotent && info.body_kept;
        let mut active = ups.begin(upstream);
        let mut tried = Tried::default();
        let mut attempt = 0;
        // The answer if nothing better comes: the last failure.
        let mut last: Option<(u16, &'static str)> = None;
        let mut same_again = false;
        loop {
            attempt += 1;
            let more = attempt < policy.attempts;
            // Another backend than those tried; the same one again only after a stale pooled
            // connection (the backend itself did not fail).
            let mut picked = ups.pick(upstream, info.key, &tried);
            if picked.is_none() && same_again {
                picked = ups.pick(upstream, info.key, &Tried::default());
            }
            same_again = false;
            let Some(backend) = picked else {
                if let Some((status, detail)) = last {
                    return self.reject(status, detail).await;
                }
                let retry_after = ups.retry_after(upstream);
                tracing::debug!(upstream = %upstream.name, "no backend available (503)");
                return self
                    .reject_unavailable(
                        "no backend of the upstream is available",
                        retry_after,
                        &info,
                    )
                    .await;
            };
            tried.add(backend);
            self.tally.backend = Some((upstream.index, backend));
            if attempt > 1 {
                stats.retries[upstream.index].inc();
            }
            let client = ClientEnds {
                source: self.peer,
                destination: match upstream.proxy_protocol {
                    Some(_) => self.local_addr(),
                    None => self.listen_addr,
                },
                owner: self.conn_id,
            };
            let mut conn = match ups.checkout(upstream, backend, &client).await {
                Ok(c) => c,
                Err(e @ (CheckoutError::Connect(_) | CheckoutError::Tls(_))) => {
                    let failure = connect_status(&e);
                    self.state
                        .failures
                        .upstream_because(failure.0, failure.1, &e, upstream, backend);
                    self.backend_failed(upstream, backend);
                    last = Some(failure);
                    if policy.on_connect && more && ups.take_retry(upstream, &mut active) {
                        continue;
                    }
                    return self.reject(failure.0, failure.1).await;
                }
                Err(CheckoutError::Full) => {
                    let failure = (503, "backend at max_connections with max_pending waiting");
                    self.state
                        .failures
                        .upstream(failure.0, failure.1, upstream, backend);
                    last = Some(failure);
                    if more && ups.take_retry(upstream, &mut active) {
                        continue;
                    }
                    return self.reject(failure.0, failure.1).await;
                }
            };
            if conn.reused {
                stats.reuses[upstream.index].inc();
            } else {
                stats.connects[upstream.index].inc();
            }
            self.end_head(&info, upstream, backend);
            // A 5xx the policy lists is not relayed when another try may follow.
            let retry_status =
                replayable && more && policy.on_status != 0 && ups.retry_possible(upstream);
            let result = self
                .send_and_relay(&mut conn, upstream, &info, retry_status)
                .await;
            let (failure, retry): ((u16, &'static str), bool) = match result {
                Ok(r) => {
                    if r.status >= 500 {
                        self.backend_failed(upstream, backend);
                    } else {
                        ups.success(upstream, backend);
                    }
                    if r.reusable {
                        ups.release(upstream, conn);
                    }
                    return r.next;
                }
                Err(UpFail::ClientGone) => {
                    self.tally.status = CLIENT_CLOSED;
                    return Next::Close;
                }
                Err(UpFail::ClientAborted) => {
                    self.tally.status = CLIENT_CLOSED;
                    stats.client_aborts.inc();
                    tracing::debug!(
                        client = %self.peer_ip,
                        upstream = %upstream.name,
                        backend = %upstream.backends[backend].address,
                        "client closed the connection before the response (499)"
                    );
                    return Next::Close;
                }
                Err(UpFail::ClosedEarly) => {
                    // A pooled connection may simply have been closed by the backend while
                    // idle: not the backend's failure. A fresh one was reset.
                    if conn.reused {
                        same_again = true;
                    } else {
                        self.backend_failed(upstream, backend);
                    }
                    let f = (502, "upstream closed the connection before responding");
                    (f, replayable && (conn.reused || policy.on_reset))
                }
                Err(UpFail::RetryStatus(code)) => {
                    self.backend_failed(upstream, backend);
                    (
                        (
                            code,
                            "upstream answered with a status the retry policy lists",
                        ),
                        true,
                    )
                }
                Err(UpFail::Status(504, d)) if d == RESPONSE_TIMEOUT => {
                    self.backend_failed(upstream, backend);
                    ((504, d), replayable && policy.on_timeout)
                }
                Err(UpFail::Status(status, detail)) => {
                    if status >= 500 {
                        self.backend_failed(upstream, backend);
                    }
                    ((status, detail), false)
                }
            };
            drop(conn);
            if failure.0 >= 500 {
                self.state
                    .failures
                    .upstream(failure.0, failure.1, upstream, backend);
            }
            last = Some(failure);
            if retry && more && ups.take_retry(upstream, &mut active) {
                continue;
            }
            return self.reject(failure.0, failure.1).await;
        }
    }

    /// The address the client connected to (for a PROXY protocol header sent upstream): what
    /// its own PROXY header said, else the listener's address, else — on a wildcard listener —
    /// the socket's local address, read once per connection.
    pub(super) fn local_addr(&mut self) -> std::net::SocketAddr {
        let a = super::client::destination(self.local, self.listen_addr, &self.stream);
        self.local = Some(a);
        a
    }

    /// Sends the head (and body) on `conn` and relays the response.
    async fn send_and_relay(
        &mut self,
        conn: &mut Conn<'_>,
        upstream: &Upstream,
        info: &ReqInfo,
        retry_status: bool,
    ) -> Result<Relayed, UpFail> {
        self.send_head(conn, info, upstream.timeouts.idle).await?;
        if !info.body_kept {
            self.send_body(conn, upstream, info).await?;
        }
        self.relay_response(conn, upstream, info, retry_status)
            .await
    }

    /// Counts a failure towards the backend's ejection (and the ejection, when it happens).
    fn backend_failed(&self, upstream: &Upstream, backend: usize) {
        if self.state.upstreams.failure(upstream, backend) {
            self.state.stats.ejection(upstream.index, backend).inc();
        }
    }

    /// Ends the planned head for `backend`: a request without Host (HTTP/1.0) gets the
    /// backend's address as written in the config.
    fn end_head(&mut self, info: &ReqInfo, upstream: &Upstream, backend: usize) {
        let plan = &mut self.plan;
        plan.truncate(info.head_mark);
        if info.needs_host {
            plan.header(b"Host", upstream.backends[backend].address.as_bytes());
        }
        plan.end();
    }

    /// Writes the planned head and the body bytes that came with it, in one vectored write.
    /// The client buffer is not consumed (a retry needs it).
    async fn send_head(
        &mut self,
        conn: &mut Conn<'_>,
        info: &ReqInfo,
        timeout: Duration,
    ) -> Result<(), UpFail> {
        let tail = info.head_len..info.head_len + info.body_in_buf;
        let timeout = self.limit(timeout);
        let (buf, plan, iovecs) = (&mut self.buf, &mut self.plan, &mut self.iovecs);
        match write_head(&mut conn.stream, buf, plan, iovecs, tail, timeout).await {
            Ok(()) => Ok(()),
            Err(IoFail::TimedOut) => Err(UpFail::Status(
                504,
                "upstream did not accept the request in time",
            )),
            Err(_) => Err(UpFail::ClosedEarly),
        }
    }

    /// Streams the rest of the request body (the part after what went with the head).
    async fn send_body(
        &mut self,
        conn: &mut Conn<'_>,
        upstream: &Upstream,
        info: &ReqInfo,
    ) -> Result<(), UpFail> {
        self.buf.consume(info.head_len + info.body_in_buf);
        let idle = self.limit(upstream.timeouts.idle);
        let received = &mut self.tally.bytes_in;
        let res = match info.framing {
            Framing::Length(n) => {
                body::length(
                    &mut self.stream,
                    &mut self.buf,
                    &mut conn.stream,
                    n - info.body_in_buf as u64,
                    idle,
                    received,
                )
                .await
            }
            Framing::Chunked => {
                let max = self.snap.limits.max_body_bytes;
                body::chunked(
                    &mut self.stream,
                    &mut self.buf,
                    &mut conn.stream,
                    false,
                    max,
                    idle,
                    received,
                )
                .await
            }
            Framing::None | Framing::UntilClose => Ok(()),
        };
        res.map_err(|e| match e {
            RelayFail::Source => UpFail::ClientGone,
            RelayFail::Dest => {
                UpFail::Status(502, "upstream failed while receiving the request body")
            }
            RelayFail::Invalid => UpFail::Status(400, "malformed chunked request body"),
            RelayFail::TooLarge => UpFail::Status(413, "request body larger than max_body_bytes"),
        })
    }
}

/// The status logged when the client went away before its answer (nginx's 499).
const CLIENT_CLOSED: u16 = 499;

/// The detail of a response-head timeout (a retry condition of its own).
pub(super) const RESPONSE_TIMEOUT: &str = "upstream response timed out";

/// The answer to a failed connect: a timeout (connect or TLS handshake) is a 504, else a 502
/// that says whether the connect or the TLS handshake failed.
fn connect_status(e: &CheckoutError) -> (u16, &'static str) {
    match e {
        CheckoutError::Connect(io) | CheckoutError::Tls(io)
            if io.kind() == std::io::ErrorKind::TimedOut =>
        {
            (504, "upstream connect timed out")
        }
        CheckoutError::Tls(_) => (502, "upstream TLS handshake failed"),
        _ => (502, "upstream refused the connection"),
    }
}
