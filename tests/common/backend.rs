//! A configurable HTTP/1.1 backend for end-to-end tests: std threads on loopback, one per
//! connection. It records every request it receives (head fields, decoded body, which
//! connection), counts accepted connections and raw bytes, and answers through a handler that
//! picks the reply per request: status, fields, a Content-Length / chunked / close-delimited
//! body, a delay, a reset part-way, raw bytes, or a silent close. Every wait is bounded; drop
//! stops the threads.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the backend received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Fields in order, names as received.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
    /// The body came chunked.
    pub chunked: bool,
    /// Which accepted connection (0, 1, ...) carried it, and its index on that connection.
    pub conn: usize,
    pub nth_on_conn: usize,
}

impl Recorded {
    /// Every value of the field `name` (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        super::field_values(&self.headers, name)
    }

    /// The only value of `name`; panics when it appears more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} appears {} times: {all:?}",
            all.len()
        );
        all.first().copied()
    }
}

/// How a reply's body is framed.
#[derive(Clone, Debug)]
pub enum Body {
    /// No body and no framing field (204, 304, or fields given explicitly).
    Empty,
    /// `Content-Length` framing (for HEAD only the field is sent).
    Length(Vec<u8>),
    /// Chunked, cutting the body into chunks whose sizes cycle through the list.
    Chunked(Vec<u8>, Vec<usize>),
    /// No framing field; the backend closes after the body.
    UntilClose(Vec<u8>),
    /// Write exactly these bytes instead of a response.
    Raw(Vec<u8>),
}

/// What the backend does after writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    KeepOpen,
    /// Close (FIN) without announcing it.
    Close,
    /// Reset (RST) after writing only this many bytes of the reply.
    ResetAfter(usize),
    /// Write only this many bytes of the reply, then go silent (until stopped).
    StallAfter(usize),
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Wait this long before writing anything.
    pub delay: Duration,
    pub after: Ending,
    /// Write the first bytes of the reply one at a time (with short pauses).
    pub trickle: usize,
    /// After the reply, wait this long and write these bytes too (a misbehaving backend).
    pub late_bytes: Option<(Duration, Vec<u8>)>,
}

impl Reply {
    pub fn new(status: u16, body: Body) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
            after: Ending::KeepOpen,
            trickle: 0,
            late_bytes: None,
        }
    }

    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(200, Body::Length(body.into()))
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// Writes the first `n` bytes one per write.
    pub fn trickle(mut self, n: usize) -> Reply {
        self.trickle = n;
        self
    }

    /// Writes `bytes` `after` the reply, unasked.
    pub fn late_bytes(mut self, after: Duration, bytes: &[u8]) -> Reply {
        self.late_bytes = Some((after, bytes.to_vec()));
        self
    }

    pub fn then(mut self, after: Ending) -> Reply {
        self.after = after;
        self
    }

    /// Close the connection without writing anything.
    pub fn hang_up() -> Reply {
        Reply::new(0, Body::Raw(Vec::new())).then(Ending::Close)
    }

    /// Reset the connection without writing anything.
    pub fn reset() -> Reply {
        Reply::new(0, Body::Raw(Vec::new())).then(Ending::ResetAfter(0))
    }

    /// The bytes of the reply to `req`.
    fn encode(&self, req: &Recorded) -> Vec<u8> {
        if let Body::Raw(b) = &self.body {
            return b.clone();
        }
        let mut out = format!("HTTP/1.1 {} Whatever\r\n", self.status).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        let head_only = req.method == "HEAD";
        match &self.body {
            Body::Length(b) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                if !head_only {
                    out.extend_from_slice(b);
                }
            }
            Body::Chunked(b, sizes) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                if !head_only {
                    let mut rest = &b[..];
                    let mut i = 0;
                    while !rest.is_empty() {
                        let n = sizes[i % sizes.len()].clamp(1, rest.len());
                        i += 1;
                        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                        out.extend_from_slice(&rest[..n]);
                        out.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                }
            }
            Body::UntilClose(b) => {
                out.extend_from_slice(b"\r\n");
                if !head_only {
                    out.extend_from_slice(b);
                }
            }
            Body::Empty => out.extend_from_slice(b"\r\n"),
            Body::Raw(_) => unreachable!(),
        }
        out
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

#[derive(Default)]
struct Log {
    conns: usize,
    /// Connections the backend has finished with (closed or reset).
    ended: usize,
    bytes: usize,
    requests: Vec<Recorded>,
    /// Bytes the backend could not parse as a request (a smuggled or broken message).
    garbage: Vec<Vec<u8>>,
}

/// The backend. `port` is where it listens.
pub struct TestBackend {
    pub port: u16,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBackend {
    /// A backend answering every request through `handler`.
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> TestBackend {
        Self::start_on(0, handler)
    }

    /// [`TestBackend::start`] on a given loopback port (0: any free one).
    pub fn start_on(
        port: u16,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> TestBackend {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop2, log2) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => {
                        let id = {
                            let mut l = log2.lock().unwrap();
                            l.conns += 1;
                            l.conns - 1
                        };
                        let (stop3, log3, h) = (stop2.clone(), log2.clone(), handler.clone());
                        conns.push(std::thread::spawn(move || {
                            serve(s, id, &stop3, &log3, &*h);
                            log3.lock().unwrap().ended += 1;
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        TestBackend {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// A backend that answers `200` with `backend saw TARGET` and echoes nothing else.
    pub fn hello() -> TestBackend {
        TestBackend::start(|r| Reply::ok(format!("backend saw {}", r.target)))
    }

    /// A backend that answers `200` with the request body as a Content-Length body.
    pub fn echo() -> TestBackend {
        TestBackend::start(|r| Reply::ok(r.body.clone()))
    }

    pub fn conns(&self) -> usize {
        self.log.lock().unwrap().conns
    }

    /// Waits (up to 5 s) until the backend has closed `n` connections; returns how many it had.
    pub fn wait_ended(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ended = self.log.lock().unwrap().ended;
            if ended >= n || Instant::now() > deadline {
                return ended;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Raw bytes received on all connections.
    pub fn bytes(&self) -> usize {
        self.log.lock().unwrap().bytes
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().requests.clone()
    }

    pub fn garbage(&self) -> Vec<Vec<u8>> {
        self.log.lock().unwrap().garbage.clone()
    }

    /// Waits (up to 5 s) until `n` requests were recorded, then returns them.
    pub fn wait_requests(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = self.requests();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A deterministic byte pattern of length `n`, different per `seed`. It repeats with a prime
/// period (65521), so a body shifted, cut or spliced at any buffer-sized offset differs from
/// it; repeating a block keeps it cheap in debug builds.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    const PERIOD: usize = 65521;
    let block: Vec<u8> = (0..PERIOD.min(n))
        .map(|i| (i.wrapping_mul(31) ^ (i / 251) ^ (seed as usize).wrapping_mul(97)) as u8)
        .collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let k = (n - out.len()).min(block.len());
        out.extend_from_slice(&block[..k]);
    }
    out
}

/// Reads from `s` into `buf`; false on EOF, error or stop. Read timeouts just return true.
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, stop: &AtomicBool, log: &Mutex<Log>) -> bool {
    let mut chunk = [0u8; 65536];
    if stop.load(Ordering::SeqCst) {
        return false;
    }
    match s.read(&mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            log.lock().unwrap().bytes += n;
            true
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

enum Parsed {
    Partial,
    Bad,
    /// Head length, framing.
    Head(usize, Recorded, Framing),
}

#[derive(Clone, Copy)]
enum Framing {
    None,
    Length(usize),
    Chunked,
}

fn parse_head(buf: &[u8], conn: usize, nth: usize) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Bad,
        Ok(httparse::Status::Complete(len)) => {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let mut framing = Framing::None;
            for (n, v) in &headers {
                if n.eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
                {
                    framing = Framing::Chunked;
                } else if n.eq_ignore_ascii_case("content-length") {
                    // Strict like nginx: one Content-Length field, digits only.
                    if matches!(framing, Framing::Length(_)) {
                        return Parsed::Bad;
                    }
                    match v.trim().parse() {
                        Ok(n) if !matches!(framing, Framing::Chunked) => {
                            framing = Framing::Length(n)
                        }
                        Ok(_) => {}
                        Err(_) => return Parsed::Bad,
                    }
                }
            }
            // Strict like real servers: HTTP/1.1 requires exactly one Host field (RFC 9112
            // §3.2).
            let hosts = headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
                .count();
            if req.version == Some(1) && hosts != 1 {
                return Parsed::Bad;
            }
            let rec = Recorded {
                method: req.method.unwrap_or("").to_string(),
                target: req.path.unwrap_or("").to_string(),
                version: req.version.unwrap_or(1),
                headers,
                body: Vec::new(),
                chunked: matches!(framing, Framing::Chunked),
                conn,
                nth_on_conn: nth,
            };
            Parsed::Head(len, rec, framing)
        }
    }
}

/// Decodes a complete chunked body at the start of `buf`: Ok(Some((consumed, data))), Ok(None)
/// when more bytes are needed, Err on bad framing.
fn dechunk(buf: &[u8]) -> Result<Option<(usize, Vec<u8>)>, ()> {
    let mut pos = 0;
    let mut data = Vec::new();
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + eol]).map_err(drop)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(drop)?;
        pos += eol + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((pos, data)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(());
        }
        pos += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One connection: read requests, record them, answer through the handler.
fn serve(mut s: TcpStream, conn: usize, stop: &AtomicBool, log: &Mutex<Log>, handler: &Handler) {
    s.set_nonblocking(false).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = Vec::new();
    let mut nth = 0;
    while Instant::now() < deadline {
        let (head_len, mut rec, framing) = match parse_head(&buf, conn, nth) {
            Parsed::Partial => {
                if !fill(&mut s, &mut buf, stop, log) {
                    if !buf.is_empty() {
                        log.lock().unwrap().garbage.push(buf);
                    }
                    return;
                }
                continue;
            }
            Parsed::Bad => {
                log.lock().unwrap().garbage.push(buf);
                return;
            }
            Parsed::Head(l, r, f) => (l, r, f),
        };
        // A test asks for a reset before the body is read (the proxy may still be sending it).
        if !rec.all("x-test-reset-early").is_empty() {
            log.lock().unwrap().garbage.push(buf);
            reset(&s);
            return;
        }
        // The body.
        let consumed = loop {
            if Instant::now() > deadline {
                return;
            }
            let body = &buf[head_len..];
            match framing {
                Framing::None => break 0,
                Framing::Length(n) if body.len() >= n => {
                    rec.body = body[..n].to_vec();
                    break n;
                }
                Framing::Length(_) => {}
                Framing::Chunked => match dechunk(body) {
                    Ok(Some((n, data))) => {
                        rec.body = data;
                        break n;
                    }
                    Ok(None) => {}
                    Err(()) => {
                        log.lock().unwrap().garbage.push(buf);
                        return;
                    }
                },
            }
            if !fill(&mut s, &mut buf, stop, log) {
                // Closed inside a body: keep what came as garbage for the record.
                log.lock().unwrap().garbage.push(buf);
                return;
            }
        };
        buf.drain(..head_len + consumed);
        nth += 1;
        log.lock().unwrap().requests.push(rec.clone());
        let reply = handler(&rec);
        let wait_until = Instant::now() + reply.delay;
        while Instant::now() < wait_until {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut bytes = reply.encode(&rec);
        if reply.trickle > 0 && reply.after == Ending::KeepOpen {
            let n = reply.trickle.min(bytes.len());
            for (i, b) in bytes[..n].iter().enumerate() {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                if i % 8 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            bytes.drain(..n);
        }
        match reply.after {
            Ending::ResetAfter(n) => {
                let _ = s.write_all(&bytes[..n.min(bytes.len())]);
                std::thread::sleep(Duration::from_millis(20));
                reset(&s);
                return;
            }
            Ending::StallAfter(n) => {
                let _ = s.write_all(&bytes[..n.min(bytes.len())]);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return;
            }
            Ending::Close => {
                let _ = s.write_all(&bytes);
                return;
            }
            Ending::KeepOpen => {
                if s.write_all(&bytes).is_err() {
                    return;
                }
                if let Some((after, late)) = &reply.late_bytes {
                    std::thread::sleep(*after);
                    if s.write_all(late).is_err() {
                        return;
                    }
                }
                if matches!(reply.body, Body::UntilClose(_)) {
                    return;
                }
            }
        }
    }
}

/// Closes `s` with a reset (SO_LINGER 0); the fd is closed when `s` drops.
pub fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket owned by `s` with a properly sized `linger` value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
