//! Step 3: take an upstream connection, send the request head and body, hand over to the
//! response relay; a reused connection the backend had closed is replaced once.

use super::body::{self, RelayFail};
use super::client::{count, ClientConn, Next, ReqInfo, UpFail};
use super::io::{write_head, IoFail};
use crate::config::Upstream;
use crate::http1::Framing;
use crate::upstream::Conn;
use std::time::Duration;

impl<'a> ClientConn<'a> {
    /// Steps 3–5: send the request upstream and relay the response.
    pub(super) async fn exchange(&mut self, upstream: &'a Upstream, info: ReqInfo) -> Next {
        let stats = &self.state.stats;
        let ups = &self.state.upstreams;
        // A connect that fails sent nothing: the next backend may take the request (DESIGN.md
        // §6), once per backend at most.
        let attempts = upstream.backends.len().max(1);
        let mut attempt = 1;
        let mut conn = loop {
            match ups.acquire(upstream).await {
                Ok(c) => break c,
                Err(e) => {
                    let (status, detail) = connect_status(&e.error);
                    self.state
                        .failures
                        .upstream(status, detail, upstream, e.backend);
                    if attempt < attempts {
                        attempt += 1;
                        count(&stats.upstream_retries);
                        continue;
                    }
                    return self.reject(status, detail).await;
                }
            }
        };
        let mut retried = false;
        loop {
            count(if conn.reused {
                &stats.upstream_reuses
            } else {
                &stats.upstream_connects
            });
            self.end_head(&info, upstream, conn.backend);
            let sent = self
                .send_head(&mut conn, &info, upstream.timeouts.idle)
                .await;
            let result = match sent {
                Ok(()) if info.framing == Framing::None => {
                    self.relay_response(&mut conn, upstream, &info).await
                }
                Ok(()) => match self.send_body(&mut conn, upstream, &info).await {
                    Ok(()) => self.relay_response(&mut conn, upstream, &info).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let (status, detail) = match result {
                Ok((next, reusable)) => {
                    if reusable {
                        ups.release(conn);
                    }
                    return next;
                }
                // A reused connection the backend had closed: once more on a new one, if no
                // request body was consumed from the client.
                Err(UpFail::ClosedEarly)
                    if conn.reused && !retried && info.framing == Framing::None =>
                {
                    retried = true;
                    count(&stats.upstream_retries);
                    conn = match ups.reconnect(upstream, conn.backend).await {
                        Ok(c) => c,
                        Err(e) => {
                            let (status, detail) = connect_status(&e.error);
                            self.state
                                .failures
                                .upstream(status, detail, upstream, e.backend);
                            return self.reject(status, detail).await;
                        }
                    };
                    continue;
                }
                Err(UpFail::ClosedEarly) => (502, "upstream closed the connection"),
                Err(UpFail::Status(s, d)) => (s, d),
                Err(UpFail::ClientGone) => return Next::Close,
                Err(UpFail::ClientAborted) => {
                    count(&stats.client_aborts);
                    tracing::debug!(
                        client = %self.peer_ip,
                        upstream = %upstream.name,
                        backend = %upstream.backends[conn.backend].address,
                        "client closed the connection before the response (499)"
                    );
                    return Next::Close;
                }
            };
            if status >= 500 {
                self.state
                    .failures
                    .upstream(status, detail, upstream, conn.backend);
            }
            return self.reject(status, detail).await;
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
        conn: &mut Conn,
        info: &ReqInfo,
        timeout: Duration,
    ) -> Result<(), UpFail> {
        let tail = info.head_len..info.head_len + info.body_in_buf;
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
        conn: &mut Conn,
        upstream: &Upstream,
        info: &ReqInfo,
    ) -> Result<(), UpFail> {
        self.buf.consume(info.head_len + info.body_in_buf);
        let idle = upstream.timeouts.idle;
        let res = match info.framing {
            Framing::Length(n) => {
                body::length(
                    &mut self.stream,
                    &mut self.buf,
                    &mut conn.stream,
                    n - info.body_in_buf as u64,
                    idle,
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

fn connect_status(e: &std::io::Error) -> (u16, &'static str) {
    if e.kind() == std::io::ErrorKind::TimedOut {
        (504, "upstream connect timed out")
    } else {
        (502, "upstream refused the connection")
    }
}
