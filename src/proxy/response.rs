//! Steps 4 and 5: read the response head (interim 1xx passed on), decide the framing and
//! whether either connection can carry another message, write the rewritten head and relay
//! the body.

use super::abort::Watched;
use super::body;
use super::client::{ClientConn, Next, ReqInfo, UpFail};
use super::exchange::{Relayed, RESPONSE_TIMEOUT};
use super::forward::single_length_field;
use super::io::{write_head, IoFail, RecvBuf};
use crate::config::Upstream;
use crate::http1::{
    self, connection_has, ConnectionOptions, Framing, HeadReader, Header, HeaderKind, Status,
    Version,
};
use crate::upstream::Conn;
use monoio::io::AsyncWriteRent;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::time::Instant;

impl<'a> ClientConn<'a> {
    /// Steps 4 and 5: read the response head, write it and the body to the client. Also says
    /// whether the upstream connection can carry another request.
    /// With `retry_status`, a 5xx the retry policy lists is not relayed but returned as
    /// [`UpFail::RetryStatus`].
    pub(super) async fn relay_response(
        &mut self,
        conn: &mut Conn<'_>,
        upstream: &Upstream,
        info: &ReqInfo,
        retry_status: bool,
    ) -> Result<Relayed, UpFail> {
        let mut rbuf = RecvBuf::from_vec(self.ctx.lease());
        let result = self
            .relay_with(&mut rbuf, conn, upstream, info, retry_status)
            .await;
        self.ctx.give_back(rbuf.into_vec());
        result
    }

    async fn relay_with(
        &mut self,
        rbuf: &mut RecvBuf,
        conn: &mut Conn<'_>,
        upstream: &Upstream,
        info: &ReqInfo,
        retry_status: bool,
    ) -> Result<Relayed, UpFail> {
        let started = Instant::now();
        let deadline = started + upstream.timeouts.response_head;
        let max_head = upstream.max_response_head;
        let mut reader = HeadReader::new(max_head);
        let idle = self.limit(upstream.timeouts.idle);
        // Watch the client while the head is awaited: one that closes its side aborts the
        // exchange (nginx's 499), unless it pipelines requests (then a half-close after the
        // last one is how it says it is done sending, and it wants every answer) or the config
        // says to ignore client aborts.
        let request_bytes = if info.framing == Framing::None {
            info.head_len
        } else {
            0
        };
        self.pipelining |= self.buf.data().len() > request_bytes;
        let watch = !self.pipelining && !self.snap.limits.ignore_client_abort;
        let resp = loop {
            if !rbuf.is_empty() {
                let fields = &mut self.headers[..upstream.max_response_headers];
                match reader.response(rbuf.data(), fields) {
                    Ok(Status::Complete(r)) if (100..200).contains(&r.code) && r.code != 101 => {
                        // Interim response: pass it on (100 Continue was answered by us).
                        if r.code != 100 && info.version == Version::Http11 {
                            rbuf.write_range(&mut self.stream, 0..r.head_len, idle)
                                .await
                                .map_err(|_| UpFail::ClientGone)?;
                            self.tally.head_out += r.head_len as u64;
                            self.tally.bytes_out += r.head_len as u64;
                        }
                        rbuf.consume(r.head_len);
                        rbuf.compact();
                        reader.reset();
                        continue;
                    }
                    Ok(Status::Complete(r)) => break r,
                    Ok(Status::Partial) => {}
                    Err(e) => {
                        tracing::debug!(error = e.as_str(), "invalid response head from upstream");
                        return Err(UpFail::Status(502, response_error(e)));
                    }
                }
            }
            let res = {
                let read = rbuf.read_until(&mut conn.stream, self.timer, deadline, max_head);
                let mut read = pin!(read);
                if watch {
                    let (abort, fd) = (&self.ctx.aborts, self.stream.as_raw_fd());
                    Watched::new(abort, fd, started, read.as_mut())
                        .await
                        .map_err(|_| UpFail::ClientAborted)?
                } else {
                    read.await
                }
            };
            match res {
                Ok(_) => {}
                Err(IoFail::TimedOut) => return Err(UpFail::Status(504, RESPONSE_TIMEOUT)),
                Err(_) if rbuf.is_empty() => return Err(UpFail::ClosedEarly),
                Err(_) => return Err(UpFail::Status(502, "upstream closed mid-response")),
            }
        };
        if resp.code == 101 {
            if !info.upgrade {
                return Err(UpFail::Status(502, "upstream switched protocols unasked"));
            }
            // ... and only to a protocol the route allows.
            let allowed = self
                .route
                .map_or(&[][..], |r| &*self.snap.routes[r].upgrades);
            let rh = &self.headers[..resp.header_count];
            let to = rh
                .iter()
                .find(|h| h.kind == HeaderKind::Upgrade)
                .map(|h| h.value.of(rbuf.data()).trim_ascii());
            if !to.is_some_and(|p| super::forward::upgrade_allowed(p, allowed)) {
                return Err(UpFail::Status(
                    502,
                    "upstream switched to a protocol the route does not allow",
                ));
            }
            return self
                .tunnel(rbuf, conn, upstream, &resp, info, started)
                .await;
        }
        if retry_status && upstream.retry.on_status(resp.code) {
            return Err(UpFail::RetryStatus(resp.code));
        }
        let status = resp.code;
        let data = rbuf.data();
        let rh = &self.headers[..resp.header_count];
        let framing = match http1::response_framing(&resp, rh, data, info.method) {
            Ok(f) => f,
            Err(_) => {
                return Err(UpFail::Status(
                    502,
                    "ambiguous response framing from upstream",
                ))
            }
        };
        let rconn = ConnectionOptions::parse(rh, data);
        let dechunk = info.version == Version::Http10 && framing == Framing::Chunked;
        // A close-delimited body goes to an HTTP/1.1 client chunked, so that its connection
        // (and the requests it pipelined) survive. A response with a transfer coding other
        // than chunked keeps the close (its Transfer-Encoding would need rewriting).
        let rechunk = info.version == Version::Http11
            && framing == Framing::UntilClose
            && !rh.iter().any(|h| h.kind == HeaderKind::TransferEncoding);
        let keep_client = !self.ctx.shutting_down()
            && (framing != Framing::UntilClose || rechunk)
            && !dechunk
            && !info.conn.closes_after(info.version);
        let reusable =
            resp.version == Version::Http11 && !rconn.close && framing != Framing::UntilClose;

        let length = match framing {
            Framing::Length(n) if !single_length_field(rh, data) => Some(n),
            _ => None,
        };
        let policy = info.policy.map(|p| &self.snap.policies[p]);
        let gateway = &self.scratch.gateway;
        let plan = &mut self.plan;
        plan.clear();
        plan.response_head(&resp, rh, |h| {
            !(length.is_some() && h.kind == HeaderKind::ContentLength)
                && keep_response_field(h, data, rh, &rconn, dechunk)
                && policy.is_none_or(|p| !gateway.drops_response_field(p, h.name.of(data)))
        });
        if let Some(n) = length {
            plan.header(b"Content-Length", n.to_string().as_bytes());
        }
        if rechunk {
            plan.static_bytes(b"Transfer-Encoding: chunked\r\n");
        }
        for (li, v) in info.limit_fields.iter() {
            if let Some(l) = self.snap.rate_limits.get(*li as usize) {
                plan.bytes(l.policy_field.as_bytes());
                let mut line = [0u8; 64];
                plan.bytes(b"RateLimit: \"");
                plan.bytes(l.name.as_bytes());
                plan.bytes(b"\";r=");
                plan.bytes(decimal(&mut line, v.remaining));
                plan.bytes(b";t=");
                plan.bytes(decimal(&mut line, v.reset));
                plan.bytes(b"\r\n");
            }
        }
        if let Some(p) = policy {
            let backend = self.tally.backend.map_or("", |(u, b)| {
                self.snap.upstreams[u].backends[b].address.as_str()
            });
            gateway.response_fields(p, Some((backend, status)), &mut |b: &[u8]| plan.bytes(b));
        }
        if !keep_client {
            plan.static_bytes(b"Connection: close\r\n");
        } else if info.version == Version::Http10 {
            plan.static_bytes(b"Connection: keep-alive\r\n");
        }
        plan.end();
        let available = data.len() - resp.head_len;
        let tail = match framing {
            Framing::Length(n) => n.min(available as u64) as usize,
            Framing::UntilClose if rechunk => 0,
            Framing::UntilClose => available,
            Framing::None | Framing::Chunked => 0,
        };
        let stats = &self.state.stats;
        stats.request(self.listener, self.route, resp.code);
        let upstream_time = started.elapsed();
        if let Some(h) = stats.upstream_seconds.get(upstream.index) {
            h.observe(upstream_time);
        }
        self.tally.status = status;
        self.tally.upstream_time = Some(upstream_time);

        // Write the head and the body bytes that came with it.
        rbuf.compact();
        let (plan, iovecs) = (&mut self.plan, &mut self.iovecs);
        let head = resp.head_len..resp.head_len + tail;
        let head_bytes = plan.len() as u64;
        if write_head(&mut self.stream, rbuf, plan, iovecs, head, idle)
            .await
            .is_err()
        {
            return Ok(Relayed {
                next: Next::Close,
                reusable: false,
                status,
            });
        }
        rbuf.consume(resp.head_len + tail);
        self.tally.head_out += head_bytes;
        self.tally.bytes_out += head_bytes + tail as u64;
        let sent = &mut self.tally.bytes_out;

        let relayed = match framing {
            Framing::Length(n) => {
                body::length(
                    &mut conn.stream,
                    rbuf,
                    &mut self.stream,
                    n - tail as u64,
                    idle,
                    sent,
                )
                .await
            }
            Framing::Chunked => {
                body::chunked(
                    &mut conn.stream,
                    rbuf,
                    &mut self.stream,
                    dechunk,
                    u64::MAX,
                    idle,
                    sent,
                )
                .await
            }
            Framing::UntilClose if rechunk => {
                let (plan, iovecs) = (&mut self.plan, &mut self.iovecs);
                body::rechunk(
                    &mut conn.stream,
                    rbuf,
                    &mut self.stream,
                    plan,
                    iovecs,
                    idle,
                    sent,
                )
                .await
            }
            Framing::UntilClose => {
                body::until_close(&mut conn.stream, rbuf, &mut self.stream, idle, sent).await
            }
            Framing::None => Ok(()),
        };
        if relayed.is_err() {
            // Part of the response is out: the only honest signal left is closing.
            return Ok(Relayed {
                next: Next::Close,
                reusable: false,
                status,
            });
        }
        if info.body_kept {
            self.buf.consume(info.head_len + info.body_in_buf);
        }
        let reusable = reusable && rbuf.is_empty();
        let next = if keep_client {
            Next::KeepAlive
        } else {
            let _ = self.stream.shutdown().await;
            Next::Close
        };
        Ok(Relayed {
            next,
            reusable,
            status,
        })
    }
}

impl ClientConn<'_> {
    /// A `101 Switching Protocols` to a request that asked for an upgrade its route allows: the
    /// head goes to the client with its `Upgrade` field, then both connections become a byte
    /// tunnel (`tunnel.rs`) until it ends; neither connection carries HTTP again.
    async fn tunnel(
        &mut self,
        rbuf: &mut RecvBuf,
        conn: &mut Conn<'_>,
        upstream: &Upstream,
        resp: &http1::Response,
        info: &ReqInfo,
        started: Instant,
    ) -> Result<Relayed, UpFail> {
        let idle = self.limit(upstream.timeouts.idle);
        let rh = &self.headers[..resp.header_count];
        let plan = &mut self.plan;
        plan.clear();
        plan.response_head(resp, rh, |h| {
            h.kind == HeaderKind::Upgrade || !h.kind.is_hop_by_hop()
        });
        plan.static_bytes(b"Connection: upgrade\r\n");
        plan.end();
        let stats = &self.state.stats;
        stats.request(self.listener, self.route, 101);
        stats.tunnels.inc();
        self.tally.status = 101;
        self.tally.upstream_time = Some(started.elapsed());
        // The head, then whatever the upstream sent after it; the client's bytes that came
        // after its request go the other way.
        rbuf.compact();
        let tail = resp.head_len..rbuf.data().len();
        let head_bytes = self.plan.len() as u64;
        let (plan, iovecs) = (&mut self.plan, &mut self.iovecs);
        let closed = Relayed {
            next: Next::Close,
            reusable: false,
            status: 101,
        };
        if write_head(&mut self.stream, rbuf, plan, iovecs, tail.clone(), idle)
            .await
            .is_err()
        {
            return Ok(closed);
        }
        self.tally.head_out += head_bytes;
        self.tally.bytes_out += head_bytes + tail.len() as u64;
        rbuf.consume(tail.end);
        // The request itself is still in the buffer unless its body was streamed.
        let request = if info.body_kept {
            info.head_len + info.body_in_buf
        } else {
            0
        };
        if self.relay_as_tunnel(&mut conn.stream, request, idle).await {
            let _ = self.stream.shutdown().await;
        }
        Ok(closed)
    }
}

/// The cause named for a response head coregate cannot relay.
fn response_error(e: http1::Error) -> &'static str {
    match e {
        http1::Error::TooManyHeaders => {
            "upstream response has more header fields than max_response_headers"
        }
        http1::Error::HeadTooLarge => "upstream response head larger than max_response_head_bytes",
        _ => "invalid response from upstream",
    }
}

/// Response fields forwarded untouched: not hop-by-hop, and no `Transfer-Encoding` or
/// `Trailer` when the body is de-chunked for an HTTP/1.0 client (its trailers are dropped).
fn keep_response_field(
    h: &Header,
    buf: &[u8],
    hs: &[Header],
    conn: &ConnectionOptions,
    dechunk: bool,
) -> bool {
    match h.kind {
        HeaderKind::TransferEncoding | HeaderKind::Trailer => !dechunk,
        k if k.is_hop_by_hop() => false,
        _ => !(conn.nominates_others && connection_has(hs, buf, h.name.of(buf))),
    }
}

/// `n` in decimal, written into `out`.
fn decimal(out: &mut [u8; 64], mut n: u64) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[i..];
        }
    }
}
