//! One client connection: the request loop described in `mod.rs` (step 1 here: reading and
//! parsing the head; steps 2–5 in `forward.rs`, `exchange.rs` and `response.rs`), and the error
//! answers every step can end with.

use super::deadline::Timer;
use super::error::error_response_with;
use super::io::{write_all, IoFail, Limit, RecvBuf};
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
use monoio::buf::IoBufMut;
use monoio::io::{AsyncWriteRent, CancelableAsyncReadRent};
use std::future::Future;
use std::net::SocketAddr;
use std::task::Poll;
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
    /// The connection's deadline slot: every I/O step of the connection is bounded by it.
    pub(super) timer: Timer<'a>,
    /// Cancels the read that waits for the next request when its grace ends.
    canceller: monoio::io::Canceller,
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

/// What a connection keeps while it waits for a request without buffers: its socket and who
/// it is. An idle keep-alive connection's task holds this and nothing else of it.
pub struct Conn {
    stream: Stream,
    peer: SocketAddr,
    conn_id: u64,
    listen_addr: SocketAddr,
    /// Its slot in the worker's [`super::deadline::Deadlines`].
    pub(super) slot: u32,
    pipelining: bool,
    /// What few connections have: a PROXY protocol destination, a TLS client's subject.
    extra: Option<Box<Extra>>,
}

struct Extra {
    local: Option<SocketAddr>,
    client_subject: Option<Box<str>>,
}

/// The buffers a connection uses while it serves requests, lent from its worker's pool
/// ([`WorkerCtx::workspace`]) and given back when the connection goes idle or closes.
pub struct Workspace {
    buf: RecvBuf,
    headers: Vec<Header>,
    reader: HeadReader,
    plan: HeadPlan,
    iovecs: Vec<libc::iovec>,
    scratch: PathScratch,
    captured: Captured,
    peer_ip: String,
    /// Kept with the buffers so that its table is allocated once, not per connection.
    canceller: monoio::io::Canceller,
}

impl Workspace {
    pub fn new(snap: &Snapshot) -> Workspace {
        Workspace {
            buf: RecvBuf::with_capacity(CLIENT_BUF.min(snap.limits.max_head_bytes.max(1024))),
            headers: vec![Header::default(); snap.header_slots],
            reader: HeadReader::new(snap.limits.max_head_bytes),
            plan: HeadPlan::new(),
            iovecs: Vec::with_capacity(16),
            scratch: PathScratch::default(),
            captured: Captured::default(),
            peer_ip: String::new(),
            canceller: monoio::io::Canceller::new(),
        }
    }

    /// Made ready for a connection of `snap` (after another used it).
    pub fn reset(&mut self, snap: &Snapshot) {
        self.release();
        self.fit(snap);
        self.reader = HeadReader::new(snap.limits.max_head_bytes);
    }

    /// Emptied for the pool: bytes a closed connection left unread are not the next one's
    /// (a timed-out step may have taken the buffer itself), and a buffer that grew for a large
    /// head or body shrinks back.
    pub fn release(&mut self) {
        self.buf.clear();
        self.buf.shrink(CLIENT_BUF);
        self.captured.clear();
    }

    /// Has the field slots `snap` needs (a reload may raise `max_headers`).
    fn fit(&mut self, snap: &Snapshot) {
        if self.headers.len() < snap.header_slots {
            self.headers.resize(snap.header_slots, Header::default());
        }
    }
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
    /// The client sent nothing for a grace period after its last answer: wait for its next
    /// request without buffers ([`idle_wait`]).
    Idle,
    /// A new generation is in force: go on with it (the head of this request is in the
    /// workspace's buffer).
    NewGeneration(Request),
}

impl Conn {
    pub fn new(
        stream: Stream,
        peer: SocketAddr,
        conn_id: u64,
        listen_addr: SocketAddr,
        slot: u32,
    ) -> Conn {
        Conn {
            stream,
            peer,
            conn_id,
            listen_addr,
            slot,
            pipelining: false,
            extra: None,
        }
    }

    /// Reads the PROXY protocol header that opens a connection on a listener that expects one,
    /// within `timeout` in all; the client it names becomes the connection's peer (for
    /// `X-Forwarded-For`, the access log and rate-limit keys), and what follows it is the first
    /// request (left in `ws`). `Err`: the connection is to be closed (no header, a bad one, or
    /// none in time).
    pub async fn read_proxy_header(
        &mut self,
        ws: &mut Workspace,
        timer: Timer<'_>,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match super::proxy_protocol::parse(ws.buf.data()) {
                Ok(Some(p)) => {
                    ws.buf.consume(p.len);
                    if let Some(source) = p.source {
                        self.peer = source;
                        self.extra_mut().local = p.destination;
                    }
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let max = super::proxy_protocol::V2_MAX;
            match ws
                .buf
                .read_until(&mut self.stream, timer, deadline, max)
                .await
            {
                Ok(_) => {}
                Err(IoFail::TimedOut) => return Err("no PROXY protocol header in time".into()),
                Err(IoFail::Eof) => return Err("closed before a PROXY protocol header".into()),
                Err(IoFail::Io(e)) => return Err(e.to_string()),
            }
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    pub fn id(&self) -> u64 {
        self.conn_id
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(|| {
            Box::new(Extra {
                local: None,
                client_subject: None,
            })
        })
    }

    /// For a TCP listener: what it needs of the connection.
    pub fn into_tcp(self, ws: &Workspace) -> TcpClient {
        TcpClient {
            early: ws.buf.data().to_vec(),
            stream: self.stream,
            peer: self.peer,
            peer_key: peer_text(self.peer, &mut String::new()),
            local: self.extra.and_then(|e| e.local),
        }
    }

    /// The TLS handshake of a connection to a TLS listener (bytes read after a PROXY protocol
    /// header are its first bytes); `Ok(resumed)`. The connection then speaks TLS.
    pub async fn start_tls(
        mut self,
        ws: &mut Workspace,
        tls: &crate::tls::ListenerTls,
    ) -> Result<(Self, bool), crate::tls::FailureReason> {
        let Stream::Plain(tcp) = self.stream else {
            return Err(crate::tls::FailureReason::Other);
        };
        let accepted = tls.accept(tcp, ws.buf.data()).await?;
        let n = ws.buf.data().len();
        ws.buf.consume(n);
        self.stream = accepted.stream;
        if let Some(s) = accepted.subject {
            self.extra_mut().client_subject = Some(s.into());
        }
        Ok((self, accepted.resumed))
    }
}

/// Waits, holding no buffer, until an idle plain connection has bytes to read (`true`), or its
/// idle deadline passes, or the worker shuts down (`false`: close it).
pub async fn idle_wait(conn: &Conn, ctx: &WorkerCtx, stats: &crate::observe::WorkerStats) -> bool {
    let Stream::Plain(tcp) = &conn.stream else {
        return false;
    };
    let ready = ctx.deadlines.timer(conn.slot).current(tcp.readable(true));
    monoio::select! {
        r = ready => match r {
            Some(Ok(())) => true,
            Some(Err(_)) => false,
            None => {
                stats.client_timeouts.inc();
                false
            }
        },
        _ = ctx.shutdown_signal() => false,
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

/// Writes `peer`'s address into `out` (its storage reused) as the request path uses it: as text
/// (IPv4-mapped IPv6 shown as IPv4); returns its hash (the key of `client_ip` rate limits and
/// hashing).
fn peer_text(peer: SocketAddr, out: &mut String) -> u64 {
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "{}", peer.ip().to_canonical());
    crate::upstream::maglev::hash_key(out.as_bytes())
}

/// What reading a request head ended with.
enum Head {
    Request(Request),
    /// Nothing arrived within the grace period: go idle.
    Idle,
    Close,
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
    /// Serves `conn` with the buffers `ws` and generation `gen`, which has the listener the
    /// connection came in on.
    pub fn resume(conn: Conn, mut ws: Workspace, ctx: &'a WorkerCtx, gen: &'a Generation) -> Self {
        let snap = &*gen.snapshot;
        let listener = snap
            .listeners
            .iter()
            .position(|l| l.addr == conn.listen_addr)
            .unwrap_or(0);
        let Conn {
            stream,
            peer,
            conn_id,
            listen_addr,
            slot,
            pipelining,
            extra,
        } = conn;
        let (local, client_subject) = extra.map_or((None, None), |e| (e.local, e.client_subject));
        let peer_key = peer_text(peer, &mut ws.peer_ip);
        // Buffers carried over from another generation keep their request and get the field
        // slots this one needs.
        ws.fit(snap);
        ClientConn {
            stream,
            peer_ip: ws.peer_ip,
            peer_key,
            peer,
            conn_id,
            local,
            client_subject,
            listener,
            ctx,
            state: &gen.proxy,
            snap,
            timer: ctx.deadlines.timer(slot),
            canceller: ws.canceller,
            buf: ws.buf,
            headers: ws.headers,
            reader: ws.reader,
            plan: ws.plan,
            iovecs: ws.iovecs,
            scratch: ws.scratch,
            pipelining,
            route: None,
            tally: Tally::default(),
            captured: ws.captured,
            gen_id: gen.id,
            listen_addr,
        }
    }

    fn into_parts(self) -> (Conn, Workspace) {
        let extra = (self.local.is_some() || self.client_subject.is_some()).then(|| {
            Box::new(Extra {
                local: self.local,
                client_subject: self.client_subject,
            })
        });
        let conn = Conn {
            stream: self.stream,
            peer: self.peer,
            conn_id: self.conn_id,
            listen_addr: self.listen_addr,
            slot: self.timer.slot(),
            pipelining: self.pipelining,
            extra,
        };
        let ws = Workspace {
            buf: self.buf,
            headers: self.headers,
            reader: self.reader,
            plan: self.plan,
            iovecs: self.iovecs,
            scratch: self.scratch,
            captured: self.captured,
            peer_ip: self.peer_ip,
            canceller: self.canceller,
        };
        (conn, ws)
    }

    /// Serves requests until the connection ends, goes idle, or a request arrives after a new
    /// generation was installed (it is then handed over with the connection); gives the
    /// connection and its buffers back.
    pub async fn run(mut self, mut pending: Option<Request>) -> (Ended, Conn, Workspace) {
        let ended = loop {
            let req = match pending.take() {
                Some(r) => r,
                None => {
                    if self.ctx.shutting_down() && self.buf.is_empty() {
                        break Ended::Closed;
                    }
                    let req = match self.read_head().await {
                        Head::Request(r) => r,
                        Head::Idle => break Ended::Idle,
                        Head::Close => break Ended::Closed,
                    };
                    // A new config: the request goes to it, unless it no longer has the listener
                    // this connection came in on (then the connection drains on this one).
                    if self.ctx.current_id() != self.gen_id {
                        if self.ctx.current_has_listener(self.listen_addr) {
                            break Ended::NewGeneration(req);
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
                Next::Close => break Ended::Closed,
            }
        };
        let (conn, ws) = self.into_parts();
        (ended, conn, ws)
    }

    /// Step 1: a complete, valid request head at the start of the buffer; or the connection
    /// goes idle, or is to be closed (answered already if the head was malformed).
    async fn read_head(&mut self) -> Head {
        self.buf.compact();
        self.reader.reset();
        let limits = &self.snap.limits;
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + limits.client_header_timeout);
                let max = limits.max_headers;
                match self
                    .reader
                    .request(self.buf.data(), &mut self.headers[..max])
                {
                    Ok(Status::Complete(req)) => return Head::Request(req),
                    Ok(Status::Partial) => {}
                    Err(e) => {
                        self.tally.bytes_in = self.buf.data().len() as u64;
                        let started = deadline.map_or_else(Instant::now, |d| {
                            d.checked_sub(limits.client_header_timeout).unwrap_or(d)
                        });
                        self.route = None;
                        self.reject(e.status(), e.as_str()).await;
                        self.finish(started);
                        return Head::Close;
                    }
                }
            }
            let max = limits.max_head_bytes;
            let res = match deadline {
                Some(d) => {
                    self.buf
                        .read_until(&mut self.stream, self.timer, d, max)
                        .await
                }
                None => match self.await_request(max).await {
                    Some(r) => r,
                    None => return Head::Idle,
                },
            };
            match res {
                Ok(_) => {}
                Err(IoFail::TimedOut) => {
                    self.state.stats.client_timeouts.inc();
                    return Head::Close;
                }
                Err(IoFail::Io(e)) => {
                    tracing::debug!(error = %e, "client read failed");
                    return Head::Close;
                }
                Err(IoFail::Eof) => return Head::Close,
            }
        }
    }

    /// The first read of a request, within the idle timeout. On a plain connection it waits
    /// for a grace period with its buffer posted; when that passes without a byte, the read is
    /// cancelled and `None` says to go idle (see [`super::deadline`]). A TLS connection keeps
    /// its read (its stream holds buffers of its own) and closes at shutdown.
    async fn await_request(&mut self, max: usize) -> Option<Result<usize, IoFail>> {
        let ctx = self.ctx;
        let idle = Instant::now() + self.snap.limits.client_idle_timeout;
        let Stream::Plain(tcp) = &mut self.stream else {
            let read = self.buf.read_until(&mut self.stream, self.timer, idle, max);
            return Some(monoio::select! {
                r = read => r,
                _ = ctx.shutdown_signal() => Err(IoFail::Eof),
            });
        };
        let timer = self.timer;
        let vec = self.buf.lend(max);
        let len = vec.len();
        let handle = self.canceller.handle();
        timer.set(idle);
        timer.begin_grace();
        let mut read = std::pin::pin!(tcp.cancelable_read(vec.slice_mut(len..), handle));
        let mut cancelled = false;
        let canceller = &mut self.canceller;
        let (res, slice) = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if !cancelled && timer.poll_graced(cx) {
                // The read ends with its bytes or with ECANCELED; it is polled to its end.
                cancelled = true;
                *canceller = std::mem::take(canceller).cancel();
            }
            Poll::Pending
        })
        .await;
        let vec = slice.into_inner();
        if cancelled && vec.len() == len {
            if let Err(e) = &res {
                if e.raw_os_error() == Some(libc::ECANCELED) {
                    self.buf.put_back(vec);
                    if timer.expired() {
                        return Some(Err(IoFail::TimedOut));
                    }
                    return None;
                }
            }
        }
        Some(self.buf.settle(vec, res, max))
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
        let idle = self.limit(self.snap.limits.client_idle_timeout);
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
            let read = self
                .buf
                .read_until(&mut self.stream, self.timer, deadline, 16 * 1024);
            match read.await {
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
        let idle = self.limit(self.snap.limits.client_idle_timeout);
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
        let idle = self.limit(self.snap.limits.client_idle_timeout);
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

impl<'a> ClientConn<'a> {
    /// `after` from now on the connection's deadline slot.
    pub(super) fn limit(&self, after: Duration) -> Limit<'a> {
        Limit::new(self.timer, after)
    }

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
