//! One client connection: the request loop described in `mod.rs`, steps 1–5.

use super::body::{self, RelayFail};
use super::error::{error_response, error_response_with};
use super::io::{write_all, write_head, IoFail, RecvBuf};
use super::WorkerState;
use crate::config::{Snapshot, Upstream};
use crate::http1::{
    self, connection_has, ConnectionOptions, Framing, HeadPlan, HeadReader, Header, HeaderKind,
    Method, Request, Span, Status, Version,
};
use crate::runtime::WorkerCtx;
use crate::upstream::Conn;
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Largest response head accepted from an upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Header fields accepted in an upstream response.
const MAX_RESPONSE_HEADERS: usize = 128;
/// Initial client buffer (held by every idle keep-alive connection's pending read); it grows up
/// to `max_head_bytes` for a large head.
const CLIENT_BUF: usize = 4 * 1024;
/// After an error answer that closes the connection: how long and how much of what the client
/// still sends is read and dropped, so that closing does not reset the connection before the
/// client has read the answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;

/// What happens to the client connection after a request.
enum Next {
    KeepAlive,
    Close,
}

/// Why forwarding stopped before a response could be relayed.
enum UpFail {
    /// The upstream closed or reset before any response byte (retryable on a reused connection).
    ClosedEarly,
    /// Answer the client with this status and detail.
    Status(u16, &'static str),
    /// The client went away or timed out: close without an answer.
    ClientGone,
}

pub struct ClientConn<'a> {
    stream: TcpStream,
    peer_ip: String,
    listener: usize,
    ctx: &'a WorkerCtx,
    state: &'a WorkerState,
    snap: &'a Snapshot,
    buf: RecvBuf,
    /// Parsed fields: the request's (at most `max_headers`), then, once the request is sent,
    /// the response's in the same storage.
    headers: Vec<Header>,
    reader: HeadReader,
    plan: HeadPlan,
    iovecs: Vec<libc::iovec>,
}

/// What the response path needs to know about the request, copied out of the buffer.
struct ReqInfo {
    method: Method,
    version: Version,
    conn: ConnectionOptions,
    framing: Framing,
    head_len: usize,
    /// Body bytes that arrived with the head and go out with it.
    body_in_buf: usize,
}

impl<'a> ClientConn<'a> {
    pub fn new(stream: TcpStream, peer: SocketAddr, listener: usize, ctx: &'a WorkerCtx) -> Self {
        let snap = &*ctx.snapshot;
        ClientConn {
            stream,
            peer_ip: peer.ip().to_canonical().to_string(),
            listener,
            ctx,
            state: &ctx.proxy,
            snap,
            buf: RecvBuf::with_capacity(CLIENT_BUF.min(snap.limits.max_head_bytes.max(1024))),
            headers: vec![Header::default(); snap.limits.max_headers.max(MAX_RESPONSE_HEADERS)],
            reader: HeadReader::new(snap.limits.max_head_bytes),
            plan: HeadPlan::new(),
            iovecs: Vec::with_capacity(16),
        }
    }

    pub async fn run(mut self) {
        loop {
            if self.ctx.shutting_down() && self.buf.is_empty() {
                return;
            }
            let Some(req) = self.read_head().await else {
                return;
            };
            let s = &self.state.stats.requests;
            s.set(s.get() + 1);
            match self.forward(req).await {
                Next::KeepAlive => continue,
                Next::Close => return,
            }
        }
    }

    /// Step 1: a complete, valid request head at the start of the buffer, or `None` when the
    /// connection is to be closed (answered already if it was malformed).
    async fn read_head(&mut self) -> Option<Request> {
        self.buf.compact();
        self.reader.reset();
        let limits = &self.snap.limits;
        let ctx = self.ctx;
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + limits.client_header_timeout);
                let max = limits.max_headers;
                match self
                    .reader
                    .request(self.buf.data(), &mut self.headers[..max])
                {
                    Ok(Status::Complete(req)) => return Some(req),
                    Ok(Status::Partial) => {}
                    Err(e) => {
                        self.reject(e.status(), e.as_str()).await;
                        return None;
                    }
                }
            }
            let max = limits.max_head_bytes;
            let res = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    self.buf.read_from(&mut self.stream, left, max).await
                }
                None => {
                    let read =
                        self.buf
                            .read_from(&mut self.stream, limits.client_idle_timeout, max);
                    monoio::select! {
                        r = read => r,
                        _ = ctx.shutdown_signal() => return None,
                    }
                }
            };
            match res {
                Ok(_) => {}
                Err(IoFail::TimedOut) => {
                    let t = &self.state.stats.client_timeouts;
                    t.set(t.get() + 1);
                    return None;
                }
                Err(IoFail::Io(e)) => {
                    tracing::debug!(error = %e, "client read failed");
                    return None;
                }
                Err(IoFail::Eof) => return None,
            }
        }
    }

    /// Steps 2–5 for one parsed request.
    async fn forward(&mut self, req: Request) -> Next {
        let snap: &'a Snapshot = self.snap;
        let buf = self.buf.data();
        let hs = &self.headers[..req.header_count];
        let framing = match http1::request_framing(&req, hs, buf) {
            Ok(f) => f,
            Err(e) => return self.reject(e.status(), e.as_str()).await,
        };
        if req.method == Method::Connect {
            return self.reject(501, "CONNECT is not supported").await;
        }
        let mut expect_continue = false;
        for h in hs.iter().filter(|h| h.kind == HeaderKind::Expect) {
            if !h.value.of(buf).eq_ignore_ascii_case(b"100-continue") {
                return self.reject(417, "only 100-continue is supported").await;
            }
            expect_continue = true;
        }

        // Route on the Host field, or the authority of an absolute-form target.
        let absolute = req.absolute_parts(buf);
        let (host, target) = match absolute {
            Some((authority, path)) => (authority, path),
            None => (
                req.host.map_or(Span::default(), |i| hs[i as usize].value),
                req.target,
            ),
        };
        let target_bytes = target.of(buf);
        let path_end = memchr::memchr(b'?', target_bytes).unwrap_or(target_bytes.len());
        let conn = ConnectionOptions::parse(hs, buf);
        let table = &snap.listeners[self.listener].routes;
        let Some(route) = table.find(host.of(buf), &target_bytes[..path_end]) else {
            let wants_close = match req.version {
                Version::Http11 => conn.close,
                Version::Http10 => !conn.keep_alive,
            };
            if wants_close {
                return self.reject(404, "no route for this host and path").await;
            }
            return self
                .reject_keep(
                    404,
                    "no route for this host and path",
                    framing,
                    req.head_len,
                    req.version,
                )
                .await;
        };
        let upstream = &snap.upstreams[route.upstream];
        if let Framing::Length(n) = framing {
            if n > snap.limits.max_body_bytes {
                return self
                    .reject(413, "request body larger than max_body_bytes")
                    .await;
            }
        }

        // The head to send: rewritten target, hop-by-hop fields out, X-Forwarded-* in.
        let rewritten = route.rewrite(target_bytes);
        let new_target = if absolute.is_some() || rewritten.rest.len() != target_bytes.len() {
            let start = rewritten.rest.as_ptr() as usize - buf.as_ptr() as usize;
            let prefix = if rewritten.prefix.is_empty() && rewritten.rest.first() != Some(&b'/') {
                &b"/"[..]
            } else {
                rewritten.prefix
            };
            Some((prefix, Span::new(start, start + rewritten.rest.len())))
        } else {
            None
        };
        // Several identical Content-Length values (repeated fields or a list) were accepted:
        // send one plain field instead (RFC 9110 §8.6), never the duplicates.
        let length = match framing {
            Framing::Length(n) if !single_length_field(hs, buf) => Some(n),
            _ => None,
        };
        let plan = &mut self.plan;
        plan.clear();
        plan.request_head(&req, hs, new_target, |h| {
            !(length.is_some() && h.kind == HeaderKind::ContentLength)
                && keep_request_field(h, buf, hs, &conn, absolute.is_some())
        });
        if let Some(n) = length {
            plan.header(b"Content-Length", n.to_string().as_bytes());
        }
        plan.bytes(b"X-Forwarded-For: ");
        for h in hs.iter().filter(|h| h.kind == HeaderKind::XForwardedFor) {
            plan.bytes(h.value.of(buf));
            plan.bytes(b", ");
        }
        plan.bytes(self.peer_ip.as_bytes());
        plan.bytes(b"\r\nX-Forwarded-Proto: http\r\n");
        if !host.is_empty() {
            plan.header(b"X-Forwarded-Host", host.of(buf));
        }
        if absolute.is_some() {
            plan.header(b"Host", host.of(buf));
        } else if req.host.is_none() {
            // An HTTP/1.0 request without Host goes out as HTTP/1.1, which requires the field:
            // empty when there is no authority (RFC 9112 §3.2).
            plan.static_bytes(b"Host: \r\n");
        }
        plan.end();

        let available = buf.len() - req.head_len;
        let body_in_buf = match framing {
            Framing::Length(n) => (n.min(available as u64)) as usize,
            _ => 0,
        };
        let info = ReqInfo {
            method: req.method,
            version: req.version,
            conn,
            framing,
            head_len: req.head_len,
            body_in_buf,
        };
        let needs_continue = expect_continue
            && req.version == Version::Http11
            && framing != Framing::None
            && available == 0;
        if needs_continue {
            let idle = self.snap.limits.client_idle_timeout;
            if write_all(
                &mut self.stream,
                &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
                idle,
            )
            .await
            .is_err()
            {
                return Next::Close;
            }
        }
        self.exchange(upstream, info).await
    }

    /// Steps 3–5: send the request upstream and relay the response.
    async fn exchange(&mut self, upstream: &'a Upstream, info: ReqInfo) -> Next {
        let stats = &self.state.stats;
        let ups = &self.state.upstreams;
        // A connect that fails sent nothing: the next backend may take the request (DESIGN.md
        // §6), once per backend at most.
        let attempts = upstream.backends.len().max(1);
        let mut attempt = 1;
        let mut conn = loop {
            match ups.acquire(upstream).await {
                Ok(c) => break c,
                Err(_) if attempt < attempts => {
                    attempt += 1;
                    count(&stats.upstream_retries);
                }
                Err(e) => {
                    let (status, detail) = connect_status(&e);
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
            match result {
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
                            let (status, detail) = connect_status(&e);
                            return self.reject(status, detail).await;
                        }
                    };
                }
                Err(UpFail::ClosedEarly) => {
                    return self.reject(502, "upstream closed the connection").await
                }
                Err(UpFail::Status(s, d)) => return self.reject(s, d).await,
                Err(UpFail::ClientGone) => return Next::Close,
            }
        }
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

    /// Steps 4 and 5: read the response head, write it and the body to the client. Also says
    /// whether the upstream connection can carry another request.
    async fn relay_response(
        &mut self,
        conn: &mut Conn,
        upstream: &Upstream,
        info: &ReqInfo,
    ) -> Result<(Next, bool), UpFail> {
        let mut rbuf = RecvBuf::from_vec(self.state.lease());
        let result = self.relay_with(&mut rbuf, conn, upstream, info).await;
        self.state.give_back(rbuf.into_vec());
        result
    }

    async fn relay_with(
        &mut self,
        rbuf: &mut RecvBuf,
        conn: &mut Conn,
        upstream: &Upstream,
        info: &ReqInfo,
    ) -> Result<(Next, bool), UpFail> {
        let deadline = Instant::now() + upstream.timeouts.response_head;
        let mut reader = HeadReader::new(MAX_RESPONSE_HEAD);
        let idle = upstream.timeouts.idle;
        let resp = loop {
            if !rbuf.is_empty() {
                match reader.response(rbuf.data(), &mut self.headers[..MAX_RESPONSE_HEADERS]) {
                    Ok(Status::Complete(r)) if (100..200).contains(&r.code) && r.code != 101 => {
                        // Interim response: pass it on (100 Continue was answered by us).
                        if r.code != 100 && info.version == Version::Http11 {
                            rbuf.write_range(&mut self.stream, 0..r.head_len, idle)
                                .await
                                .map_err(|_| UpFail::ClientGone)?;
                        }
                        rbuf.consume(r.head_len);
                        rbuf.compact();
                        reader.reset();
                        continue;
                    }
                    Ok(Status::Complete(r)) => break r,
                    Ok(Status::Partial) => {}
                    Err(_) => return Err(UpFail::Status(502, "invalid response from upstream")),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rbuf
                .read_from(&mut conn.stream, left, MAX_RESPONSE_HEAD)
                .await
            {
                Ok(_) => {}
                Err(IoFail::TimedOut) => {
                    return Err(UpFail::Status(504, "upstream response timed out"))
                }
                Err(_) if rbuf.is_empty() => return Err(UpFail::ClosedEarly),
                Err(_) => return Err(UpFail::Status(502, "upstream closed mid-response")),
            }
        };
        if resp.code == 101 {
            return Err(UpFail::Status(502, "upstream switched protocols unasked"));
        }
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
        let keep_client = !self.ctx.shutting_down()
            && framing != Framing::UntilClose
            && !dechunk
            && match info.version {
                Version::Http11 => !info.conn.close,
                Version::Http10 => info.conn.keep_alive,
            };
        let reusable =
            resp.version == Version::Http11 && !rconn.close && framing != Framing::UntilClose;

        let length = match framing {
            Framing::Length(n) if !single_length_field(rh, data) => Some(n),
            _ => None,
        };
        let plan = &mut self.plan;
        plan.clear();
        plan.response_head(&resp, rh, |h| {
            !(length.is_some() && h.kind == HeaderKind::ContentLength)
                && keep_response_field(h, data, rh, &rconn, dechunk)
        });
        if let Some(n) = length {
            plan.header(b"Content-Length", n.to_string().as_bytes());
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
            Framing::UntilClose => available,
            Framing::None | Framing::Chunked => 0,
        };
        self.state.stats.relayed(resp.code);

        // Write the head and the body bytes that came with it.
        rbuf.compact();
        let (plan, iovecs) = (&mut self.plan, &mut self.iovecs);
        let head = resp.head_len..resp.head_len + tail;
        if write_head(&mut self.stream, rbuf, plan, iovecs, head, idle)
            .await
            .is_err()
        {
            return Ok((Next::Close, false));
        }
        rbuf.consume(resp.head_len + tail);

        let relayed = match framing {
            Framing::Length(n) => {
                body::length(
                    &mut conn.stream,
                    rbuf,
                    &mut self.stream,
                    n - tail as u64,
                    idle,
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
                )
                .await
            }
            Framing::UntilClose => {
                body::until_close(&mut conn.stream, rbuf, &mut self.stream, idle).await
            }
            Framing::None => Ok(()),
        };
        if relayed.is_err() {
            // Part of the response is out: the only honest signal left is closing.
            return Ok((Next::Close, false));
        }
        if info.framing == Framing::None {
            self.buf.consume(info.head_len);
        }
        let reusable = reusable && rbuf.is_empty();
        if !keep_client {
            let _ = self.stream.shutdown().await;
            return Ok((Next::Close, reusable));
        }
        Ok((Next::KeepAlive, reusable))
    }

    /// Answers with an error and closes (after reading what the client still sends, briefly).
    async fn reject(&mut self, status: u16, detail: &str) -> Next {
        self.state.stats.errors.count(status);
        let idle = self.snap.limits.client_idle_timeout;
        if write_all(&mut self.stream, error_response(status, detail, true), idle)
            .await
            .is_ok()
        {
            let _ = self.stream.shutdown().await;
            let mut drained = 0;
            let deadline = Instant::now() + LINGER;
            self.buf = RecvBuf::with_capacity(16 * 1024);
            while drained < LINGER_BYTES {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.buf.read_from(&mut self.stream, left, 16 * 1024).await {
                    Ok(n) => {
                        drained += n;
                        let len = self.buf.data().len();
                        self.buf.consume(len);
                    }
                    Err(_) => break,
                }
            }
        }
        Next::Close
    }

    /// Answers with an error; keeps the connection when the request had no body.
    async fn reject_keep(
        &mut self,
        status: u16,
        detail: &str,
        framing: Framing,
        head_len: usize,
        version: Version,
    ) -> Next {
        if framing != Framing::None || self.ctx.shutting_down() {
            return self.reject(status, detail).await;
        }
        self.state.stats.errors.count(status);
        let idle = self.snap.limits.client_idle_timeout;
        match write_all(
            &mut self.stream,
            error_response_with(
                status,
                detail,
                (version == Version::Http10).then_some("keep-alive"),
            ),
            idle,
        )
        .await
        {
            Ok(_) => {
                self.buf.consume(head_len);
                Next::KeepAlive
            }
            Err(_) => Next::Close,
        }
    }
}

/// Request fields forwarded untouched: not hop-by-hop, not one the proxy sets itself.
fn keep_request_field(
    h: &Header,
    buf: &[u8],
    hs: &[Header],
    conn: &ConnectionOptions,
    absolute: bool,
) -> bool {
    match h.kind {
        HeaderKind::Expect
        | HeaderKind::XForwardedFor
        | HeaderKind::XForwardedProto
        | HeaderKind::XForwardedHost => false,
        HeaderKind::Host => !absolute,
        k if k.is_hop_by_hop() => false,
        _ => !(conn.nominates_others && connection_has(hs, buf, h.name.of(buf))),
    }
}

/// Response fields forwarded untouched: not hop-by-hop, and no `Transfer-Encoding` when the
/// body is de-chunked for an HTTP/1.0 client.
fn keep_response_field(
    h: &Header,
    buf: &[u8],
    hs: &[Header],
    conn: &ConnectionOptions,
    dechunk: bool,
) -> bool {
    match h.kind {
        HeaderKind::TransferEncoding => !dechunk,
        k if k.is_hop_by_hop() => false,
        _ => !(conn.nominates_others && connection_has(hs, buf, h.name.of(buf))),
    }
}

/// True when the message has at most one `Content-Length` field and it holds no list.
fn single_length_field(hs: &[Header], buf: &[u8]) -> bool {
    let mut fields = hs.iter().filter(|h| h.kind == HeaderKind::ContentLength);
    match (fields.next(), fields.next()) {
        (None, _) => true,
        (Some(h), None) => !h.value.of(buf).contains(&b','),
        (Some(_), Some(_)) => false,
    }
}

fn connect_status(e: &std::io::Error) -> (u16, &'static str) {
    if e.kind() == std::io::ErrorKind::TimedOut {
        (504, "upstream connect timed out")
    } else {
        (502, "upstream refused the connection")
    }
}

fn count(c: &std::cell::Cell<u64>) {
    c.set(c.get() + 1);
}
