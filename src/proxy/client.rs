//! One client connection: the request loop described in `mod.rs` (step 1 here: reading and
//! parsing the head; steps 2–5 in `forward.rs`, `exchange.rs` and `response.rs`), and the error
//! answers every step can end with.

use super::error::error_response_with;
use super::io::{write_all, IoFail, RecvBuf};
use super::WorkerState;
use super::{Generation, WorkerCtx};
use crate::config::Snapshot;
use crate::http1::{
    ConnectionOptions, Framing, HeadPlan, HeadReader, Header, Method, PlanMark, Request, Status,
    Version,
};
use crate::observe::access::{Captured, Entry};
use crate::route::LogChoice;
use crate::tls::Stream;
use monoio::io::AsyncWriteRent;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Initial client buffer (held by every idle keep-alive connection's pending read); it grows up
/// to `max_head_bytes` for a large head.
const CLIENT_BUF: usize = 4 * 1024;
/// After an error answer that closes the connection: how long and how much of what the client
/// still sends is read and dropped, so that closing does not reset the connection before the
/// client has read the answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;

/// What happens to the client connection after a request.
pub(super) enum Next {
    KeepAlive,
    Close,
}

/// Why forwarding stopped before a response could be relayed.
pub(super) enum UpFail {
    /// The upstream closed or reset before any response byte (retryable on a reused connection).
    ClosedEarly,
    /// Answer the client with this status and detail.
    Status(u16, &'static str),
    /// The client went away or timed out: close without an answer.
    ClientGone,
    /// The client closed its side while the response head was awaited (nginx's 499): close
    /// both connections.
    ClientAborted,
    /// The backend answered with this 5xx, which the retry policy lists; nothing was relayed.
    RetryStatus(u16),
}

pub struct ClientConn<'a> {
    pub(super) stream: Stream,
    pub(super) peer_ip: String,
    /// The client address hashed once (the key of `client_ip` rate limits).
    pub(super) peer_key: u64,
    /// The client's address and port (from the PROXY protocol header when the listener takes
    /// one), for a PROXY protocol header sent upstream.
    pub(super) peer: SocketAddr,
    /// This connection's number on the worker (the owner of upstream connections kept for it).
    pub(super) conn_id: u64,
    /// The address the client connected to, for a PROXY protocol header sent upstream: the one
    /// its own PROXY header gave, else set when first needed (`ClientConn::local_addr`).
    pub(super) local: Option<SocketAddr>,
    /// The subject of the client's verified certificate, when its TLS listener forwards it.
    pub(super) client_subject: Option<Box<str>>,
    pub(super) listener: usize,
    pub(super) ctx: &'a WorkerCtx,
    pub(super) state: &'a WorkerState,
    pub(super) snap: &'a Snapshot,
    pub(super) buf: RecvBuf,
    /// Parsed fields: the request's (at most `max_headers`), then, once the request is sent,
    /// the response's in the same storage.
    pub(super) headers: Vec<Header>,
    pub(super) reader: HeadReader,
    pub(super) plan: HeadPlan,
    pub(super) iovecs: Vec<libc::iovec>,
    pub(super) scratch: PathScratch,
    /// The client has sent a request before the previous one was answered.
    pub(super) pipelining: bool,
    /// The route of the request in progress, once matched.
    pub(super) route: Option<usize>,
    /// What the request in progress sent, received and got, for the counters and the log.
    pub(super) tally: Tally,
    /// The request line and fields its log line needs (when its listener logs).
    pub(super) captured: Captured,
    /// The generation `state` and `snap` belong to, and the listener's address (stable across
    /// generations, unlike its index).
    pub(super) gen_id: u64,
    pub(super) listen_addr: SocketAddr,
}

/// What a connection keeps when it moves to a new generation: everything but the borrowed
/// config, plus the request head already read.
pub struct ConnParts {
    stream: Stream,
    peer_ip: String,
    peer_key: u64,
    peer: SocketAddr,
    conn_id: u64,
    local: Option<SocketAddr>,
    client_subject: Option<Box<str>>,
    listen_addr: SocketAddr,
    buf: RecvBuf,
    headers: Vec<Header>,
    reader: HeadReader,
    plan: HeadPlan,
    iovecs: Vec<libc::iovec>,
    scratch: PathScratch,
    pipelining: bool,
    captured: Captured,
    pending: Option<Request>,
}

/// What one request moved and how it ended (reset after each request).
#[derive(Default)]
pub(super) struct Tally {
    /// Request head and body bytes received.
    pub(super) bytes_in: u64,
    /// Bytes written to the client, and how many of them were heads (interim ones included).
    pub(super) bytes_out: u64,
    pub(super) head_out: u64,
    /// The status answered (499: the client went away first; 0: none).
    pub(super) status: u16,
    /// The upstream and backend of the last try.
    pub(super) backend: Option<(usize, usize)>,
    /// From sending the request to the response head, on the last try.
    pub(super) upstream_time: Option<Duration>,
    /// When an error answer was written (closing may linger after it).
    pub(super) answered: Option<Instant>,
}

/// How [`ClientConn::run`] ended.
pub enum Ended {
    Closed,
    /// A new generation is in force: go on with it (the head of the next request is read).
    NewGeneration(Box<ConnParts>),
}

impl ConnParts {
    pub fn new(
        stream: Stream,
        peer: SocketAddr,
        conn_id: u64,
        listen_addr: SocketAddr,
        snap: &Snapshot,
    ) -> Self {
        let (peer_ip, peer_key) = peer_fields(peer);
        ConnParts {
            stream,
            peer_key,
            peer_ip,
            peer,
            conn_id,
            local: None,
            client_subject: None,
            listen_addr,
            buf: RecvBuf::with_capacity(CLIENT_BUF.min(snap.limits.max_head_bytes.max(1024))),
            headers: vec![Header::default(); snap.header_slots],
            reader: HeadReader::new(snap.limits.max_head_bytes),
            plan: HeadPlan::new(),
            iovecs: Vec::with_capacity(16),
            scratch: PathScratch::default(),
            pipelining: false,
            captured: Captured::default(),
            pending: None,
        }
    }

    /// Reads the PROXY protocol header that opens a connection on a listener that expects one,
    /// within `timeout` in all; the client it names becomes the connection's peer (for
    /// `X-Forwarded-For`, the access log and rate-limit keys), and what follows it is the first
    /// request. `Err`: the connection is to be closed (no header, a bad one, or none in time).
    pub async fn read_proxy_header(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match super::proxy_protocol::parse(self.buf.data()) {
                Ok(Some(p)) => {
                    self.buf.consume(p.len);
                    if let Some(source) = p.source {
                        (self.peer_ip, self.peer_key) = peer_fields(source);
                        self.peer = source;
                        self.local = p.destination;
                    }
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let max = super::proxy_protocol::V2_MAX;
            match self.buf.read_from(&mut self.stream, left, max).await {
                Ok(_) => {}
                Err(IoFail::TimedOut) => return Err("no PROXY protocol header in time".into()),
                Err(IoFail::Eof) => return Err("closed before a PROXY protocol header".into()),
                Err(IoFail::Io(e)) => return Err(e.to_string()),
            }
        }
    }

    /// For a TCP listener: what it needs of the connection.
    pub fn into_tcp(self) -> TcpClient {
        TcpClient {
            early: self.buf.data().to_vec(),
            stream: self.stream,
            peer: self.peer,
            peer_key: self.peer_key,
            local: self.local,
        }
    }

    /// The TLS handshake of a connection to a TLS listener (bytes read after a PROXY protocol
    /// header are its first bytes); `Ok(resumed)`. The connection then speaks TLS.
    pub async fn start_tls(
        mut self,
        tls: &crate::tls::ListenerTls,
    ) -> Result<(Self, bool), crate::tls::FailureReason> {
        let Stream::Plain(tcp) = self.stream else {
            return Err(crate::tls::FailureReason::Other);
        };
        let accepted = tls.accept(tcp, self.buf.data()).await?;
        let n = self.buf.data().len();
        self.buf.consume(n);
        self.stream = accepted.stream;
        self.client_subject = accepted.subject.map(Into::into);
        Ok((self, accepted.resumed))
    }
}

/// The address a client connected to, for a PROXY protocol header sent upstream: what its own
/// PROXY header said (`local`), else the listener's address, on a wildcard listener the
/// socket's local address.
pub(super) fn destination(local: Option<SocketAddr>, listen: SocketAddr, s: &Stream) -> SocketAddr {
    match local {
        Some(a) => a,
        None if listen.ip().is_unspecified() => s.tcp().local_addr().unwrap_or(listen),
        None => listen,
    }
}

/// A client address as the request path uses it: its text (IPv4-mapped IPv6 shown as IPv4) and
/// its hash (the key of `client_ip` rate limits and hashing).
fn peer_fields(peer: SocketAddr) -> (String, u64) {
    let ip = peer.ip().to_canonical().to_string();
    let key = crate::upstream::maglev::hash_key(ip.as_bytes());
    (ip, key)
}

/// A connection of a TCP listener.
pub struct TcpClient {
    pub stream: Stream,
    /// Bytes already read from it (what followed a PROXY protocol header in the same read),
    /// which go to the backend first.
    pub early: Vec<u8>,
    /// The client (as its PROXY header named it, else the socket's peer), and its hash.
    pub peer: SocketAddr,
    pub peer_key: u64,
    /// The address it connected to, when its PROXY header said.
    pub local: Option<SocketAddr>,
}

/// What the response path needs to know about the request, copied out of the buffer.
pub(super) struct ReqInfo {
    pub(super) method: Method,
    pub(super) version: Version,
    pub(super) conn: ConnectionOptions,
    pub(super) framing: Framing,
    pub(super) head_len: usize,
    /// Body bytes that arrived with the head and go out with it.
    pub(super) body_in_buf: usize,
    /// The request has no Host (HTTP/1.0): the exchange sends the backend's address.
    pub(super) needs_host: bool,
    /// Where the planned head stops before the exchange ends it for the chosen backend.
    pub(super) head_mark: PlanMark,
    /// Safe to send again: an idempotent method, or `Idempotency-Key`.
    pub(super) idempotent: bool,
    /// The whole body (if any) is still in the client buffer: it went out with the head and
    /// can go out again.
    pub(super) body_kept: bool,
    /// The request's hash for consistent hashing (0 otherwise).
    pub(super) key: u64,
    /// Rate limits with `headers = "all"` that admitted the request, for its response.
    pub(super) limit_fields: LimitFields,
    /// The request asks for a protocol upgrade its route allows: a 101 makes the connection a
    /// tunnel.
    pub(super) upgrade: bool,
    /// The route's policy (index into `Snapshot::policies`), for the response's fields.
    pub(super) policy: Option<usize>,
}

/// Up to four (limit, verdict) pairs whose `RateLimit` fields go on the response.
#[derive(Default)]
pub(super) struct LimitFields {
    n: u8,
    items: [(u16, crate::policy::ratelimit::Verdict); 4],
}

impl LimitFields {
    pub(super) fn push(&mut self, limit: usize, v: crate::policy::ratelimit::Verdict) {
        if (self.n as usize) < self.items.len() {
            self.items[self.n as usize] = (limit as u16, v);
            self.n += 1;
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &(u16, crate::policy::ratelimit::Verdict)> {
        self.items[..self.n as usize].iter()
    }
}

/// Per-connection scratch space for path normalisation and gateway policies (empty until a
/// request needs it).
#[derive(Default)]
pub(super) struct PathScratch {
    pub(super) decision: Vec<u8>,
    pub(super) forward: Vec<u8>,
    pub(super) gateway: super::gateway::GatewayScratch,
}

impl<'a> ClientConn<'a> {
    /// Serves `parts` with generation `gen`; `None` when the listener the connection came in on
    /// is not in `gen` (the connection stays with the generation it has).
    pub fn resume(
        parts: ConnParts,
        ctx: &'a WorkerCtx,
        gen: &'a Generation,
    ) -> Result<(Self, Option<Request>), Box<ConnParts>> {
        let snap = &*gen.snapshot;
        let Some(listener) = snap
            .listeners
            .iter()
            .position(|l| l.addr == parts.listen_addr)
        else {
            return Err(Box::new(parts));
        };
        let ConnParts {
            stream,
            peer_ip,
            peer_key,
            peer,
            conn_id,
            local,
            client_subject,
            listen_addr,
            buf,
            mut headers,
            mut reader,
            plan,
            iovecs,
            scratch,
            pipelining,
            captured,
            pending,
        } = parts;
        if headers.len() < snap.header_slots {
            headers.resize(snap.header_slots, Header::default());
        }
        if pending.is_none() {
            reader = HeadReader::new(snap.limits.max_head_bytes);
        }
        Ok((
            ClientConn {
                stream,
                peer_ip,
                peer_key,
                peer,
                conn_id,
                local,
                client_subject,
                listener,
                ctx,
                state: &gen.proxy,
                snap,
                buf,
                headers,
                reader,
                plan,
                iovecs,
                scratch,
                pipelining,
                route: None,
                tally: Tally::default(),
                captured,
                gen_id: gen.id,
                listen_addr,
            },
            pending,
        ))
    }

    fn into_parts(self, pending: Option<Request>) -> ConnParts {
        ConnParts {
            stream: self.stream,
            peer_ip: self.peer_ip,
            peer_key: self.peer_key,
            peer: self.peer,
            conn_id: self.conn_id,
            local: self.local,
            client_subject: self.client_subject,
            listen_addr: self.listen_addr,
            buf: self.buf,
            headers: self.headers,
            reader: self.reader,
            plan: self.plan,
            iovecs: self.iovecs,
            scratch: self.scratch,
            pipelining: self.pipelining,
            captured: self.captured,
            pending,
        }
    }

    /// Serves requests until the connection ends, or until a request arrives after a new
    /// generation was installed (it is then handed over with the connection).
    pub async fn run(mut self, mut pending: Option<Request>) -> Ended {
        loop {
            let req = match pending.take() {
                Some(r) => r,
                None => {
                    if self.ctx.shutting_down() && self.buf.is_empty() {
                        return Ended::Closed;
                    }
                    let Some(req) = self.read_head().await else {
                        return Ended::Closed;
                    };
                    // A new config: the request goes to it, unless it no longer has the listener
                    // this connection came in on (then the connection drains on this one).
                    if self.ctx.current_id() != self.gen_id {
                        if self.ctx.current_has_listener(self.listen_addr) {
                            return Ended::NewGeneration(Box::new(self.into_parts(Some(req))));
                        }
                        self.gen_id = self.ctx.current_id();
                    }
                    req
                }
            };
            let started = Instant::now();
            self.route = None;
            let next = self.forward(req).await;
            self.finish(started);
            match next {
                Next::KeepAlive => continue,
                Next::Close => return Ended::Closed,
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
                        self.tally.bytes_in = self.buf.data().len() as u64;
                        let started = deadline.map_or_else(Instant::now, |d| {
                            d.checked_sub(limits.client_header_timeout).unwrap_or(d)
                        });
                        self.route = None;
                        self.reject(e.status(), e.as_str()).await;
                        self.finish(started);
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
                    self.state.stats.client_timeouts.inc();
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

    /// The end of a request that began at `started`: its time and bytes are counted, and its
    /// line logged when its route or listener has an access log.
    fn finish(&mut self, started: Instant) {
        let t = std::mem::take(&mut self.tally);
        let now = Instant::now();
        let elapsed = t.answered.unwrap_or(now).saturating_duration_since(started);
        let stats = &self.state.stats;
        if let Some(h) = stats.request_seconds.get(self.listener) {
            h.observe(elapsed);
        }
        if let Some(c) = stats.bytes_in.get(self.listener) {
            c.add(t.bytes_in);
        }
        if let Some(c) = stats.bytes_out.get(self.listener) {
            c.add(t.bytes_out);
        }
        let snap = self.snap;
        let listener = &snap.listeners[self.listener];
        if !listener.logs_any {
            return;
        }
        let route = self.route.map(|r| &snap.routes[r]);
        let log = match route.map(|r| r.access_log) {
            Some(LogChoice::To(i)) => Some(i),
            Some(LogChoice::Off) => None,
            _ => listener.access_log,
        };
        if let Some(i) = log {
            let upstream = t.backend.map(|(u, b)| {
                let u = &snap.upstreams[u];
                (u.name.as_str(), u.backends[b].address.as_str())
            });
            let entry = Entry {
                client: &self.peer_ip,
                listener: &listener.name,
                route: route.map(|r| &*r.name),
                request: self.captured.line(),
                status: t.status,
                bytes_sent: t.bytes_out,
                body_bytes_sent: t.bytes_out - t.head_out,
                request_length: t.bytes_in,
                request_time: elapsed,
                upstream,
                upstream_time: t.upstream_time,
                consumer: route
                    .and_then(|r| r.policy)
                    .and_then(|p| snap.policies[p].auth)
                    .map(|_| self.scratch.gateway.identity.consumer.as_str())
                    .filter(|c| !c.is_empty()),
            };
            let slot = self.state.log_slots[i];
            self.ctx
                .logs
                .log(slot, snap.access_logs[i].format, &entry, now);
        }
        self.captured.clear();
    }

    /// Counts an error answer. Those the client caused (4xx, and 501 for a method coregate does
    /// not proxy) are logged at debug level; upstream failures were logged, rate-limited, by
    /// the exchange.
    fn count_error(&mut self, status: u16, detail: &str) {
        self.tally.status = status;
        let stats = &self.state.stats;
        stats.error(status);
        stats.request(self.listener, self.route, status);
        if status < 500 || status == 501 {
            tracing::debug!(client = %self.peer_ip, "answered {status}: {detail}");
        }
    }

    /// Answers with an error and closes (after reading what the client still sends, briefly).
    pub(super) async fn reject(&mut self, status: u16, detail: &str) -> Next {
        self.reject_with(status, detail, "").await
    }

    /// [`Self::reject`] with the complete field lines `extra` in the answer.
    pub(super) async fn reject_with(&mut self, status: u16, detail: &str, extra: &str) -> Next {
        self.count_error(status, detail);
        let idle = self.snap.limits.client_idle_timeout;
        let answer = error_response_with(status, detail, Some("close"), extra);
        let sizes = answer_sizes(&answer);
        if write_all(&mut self.stream, answer, idle).await.is_ok() {
            self.answered(sizes);
            self.linger().await;
        }
        Next::Close
    }

    /// Closes our side after an answer and reads what the client still sends, briefly, so that
    /// a body it had not finished sending does not reset the connection before the answer is
    /// read.
    async fn linger(&mut self) {
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

    /// Answers with an error and the complete field lines `extra`; the connection ends as
    /// `done` says.
    pub(super) async fn refuse(
        &mut self,
        status: u16,
        detail: &str,
        extra: &str,
        done: Done,
    ) -> Next {
        if done.close {
            return self.reject_with(status, detail, extra).await;
        }
        let framing = Framing::None;
        self.reject_keep(status, detail, framing, done.head_len, done.version, extra)
            .await
    }

    /// Answers with an error; keeps the connection when the request had no body.
    pub(super) async fn reject_keep(
        &mut self,
        status: u16,
        detail: &str,
        framing: Framing,
        head_len: usize,
        version: Version,
        extra: &str,
    ) -> Next {
        if framing != Framing::None || self.ctx.shutting_down() {
            return self.reject_with(status, detail, extra).await;
        }
        self.count_error(status, detail);
        let idle = self.snap.limits.client_idle_timeout;
        let answer = error_response_with(
            status,
            detail,
            (version == Version::Http10).then_some("keep-alive"),
            extra,
        );
        let sizes = answer_sizes(&answer);
        match write_all(&mut self.stream, answer, idle).await {
            Ok(_) => {
                self.answered(sizes);
                self.buf.consume(head_len);
                Next::KeepAlive
            }
            Err(_) => Next::Close,
        }
    }
}

impl ClientConn<'_> {
    /// Answers with a redirect to `location` (301 for GET and HEAD, else 308, which keeps the
    /// method and body).
    pub(super) async fn redirect(&mut self, location: &[u8], done: Done) -> Next {
        let status = match done.method {
            Method::Get | Method::Head => 301,
            _ => 308,
        };
        let mut fields = Vec::with_capacity(16 + location.len());
        fields.extend_from_slice(b"Location: ");
        fields.extend_from_slice(location);
        fields.extend_from_slice(b"\r\n");
        self.respond(status, &fields, b"", done).await
    }

    /// Answers the request itself with `status`, the complete field lines `fields` and `body`
    /// (left out for HEAD and statuses without one). The connection is kept unless `done`
    /// says to close (then what the client still sends is read briefly, as for an error).
    pub(super) async fn respond(
        &mut self,
        status: u16,
        fields: &[u8],
        body: &[u8],
        done: Done,
    ) -> Next {
        let close = done.close || self.ctx.shutting_down();
        let mut answer = Vec::with_capacity(128 + fields.len() + body.len());
        let line = format!("HTTP/1.1 {status} {}\r\n", super::error::reason(status));
        answer.extend_from_slice(line.as_bytes());
        answer.extend_from_slice(fields);
        let no_body = status == 204 || status == 304;
        if !no_body {
            answer.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        if close {
            answer.extend_from_slice(b"Connection: close\r\n");
        } else if done.version == Version::Http10 {
            answer.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        answer.extend_from_slice(b"\r\n");
        let head = answer.len() as u64;
        if done.method != Method::Head && !no_body {
            answer.extend_from_slice(body);
        }
        self.tally.status = status;
        self.state.stats.request(self.listener, self.route, status);
        let idle = self.snap.limits.client_idle_timeout;
        let sizes = (answer.len() as u64, head);
        match write_all(&mut self.stream, answer, idle).await {
            Ok(_) => {
                self.answered(sizes);
                if close {
                    self.linger().await;
                    return Next::Close;
                }
                self.buf.consume(done.head_len);
                Next::KeepAlive
            }
            Err(_) => Next::Close,
        }
    }
}

/// How a request the proxy answers itself ends: its method and version, the length of its
/// head, and whether the connection closes after the answer (a body not read, or the client's
/// wish).
#[derive(Clone, Copy)]
pub(super) struct Done {
    pub(super) method: Method,
    pub(super) version: Version,
    pub(super) head_len: usize,
    pub(super) close: bool,
}

impl Done {
    /// A request of `method` and `version` whose head is `head_len` bytes: the connection
    /// closes when a body is left unread or the client asked to close.
    pub(super) fn of(
        method: Method,
        version: Version,
        head_len: usize,
        framing: Framing,
        conn: &ConnectionOptions,
    ) -> Done {
        Done {
            method,
            version,
            head_len,
            close: framing != Framing::None || conn.closes_after(version),
        }
    }
}

/// (all bytes, head bytes) of an error answer.
fn answer_sizes(answer: &[u8]) -> (u64, u64) {
    let head = memchr::memmem::find(answer, b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
    (answer.len() as u64, head as u64)
}

impl ClientConn<'_> {
    /// Counts an error answer that was written.
    fn answered(&mut self, (all, head): (u64, u64)) {
        self.tally.bytes_out += all;
        self.tally.head_out += head;
        self.tally.answered = Some(Instant::now());
    }

    /// 503 with `Retry-After` when no backend can take the request; the connection stays
    /// open when the request had no body and the client did not ask to close.
    pub(super) async fn reject_unavailable(
        &mut self,
        detail: &str,
        retry_after: u64,
        info: &ReqInfo,
    ) -> Next {
        let extra = format!("Retry-After: {retry_after}\r\n");
        let done = Done::of(
            info.method,
            info.version,
            info.head_len,
            info.framing,
            &info.conn,
        );
        self.refuse(503, detail, &extra, done).await
    }
}
