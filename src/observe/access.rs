//! Access logs. A worker formats each logged request into its own buffer for that file
//! ([`LogBuffers`]: no lock, no syscall, no allocation once the buffer has grown); the buffer
//! goes to the process's one writer thread ([`Writer`]) when it is full or its oldest line is
//! `flush` old (the housekeeping tick looks), through a bounded channel that a worker never
//! waits on: when the writer is behind, the buffer is dropped and counted. The writer appends
//! with plain blocking writes and reopens every file on `SIGUSR1` (logrotate's convention). A
//! file that cannot be written is reported once; its lines are dropped and counted until it can.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{AccessLog, LogFormat};

/// Buffers in flight to the writer at most (beyond that a worker drops what it would send).
const QUEUE: usize = 256;
/// Spare buffers kept for reuse.
const SPARE: usize = 64;

/// What reaches the writer thread.
enum Msg {
    Write(Arc<Path>, Vec<u8>),
    Reopen,
    Stop,
}

/// What the writer thread and the workers share: spare buffers and the count of lost lines.
#[derive(Default)]
struct Common {
    spare: Mutex<Vec<Vec<u8>>>,
    dropped: AtomicU64,
}

impl Common {
    fn spare(&self, cap: usize) -> Vec<u8> {
        let got = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        got.unwrap_or_else(|| Vec::with_capacity(cap))
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE {
            spare.push(buf);
        }
    }

    fn lost(&self, buf: &[u8]) {
        let lines = memchr::memchr_iter(b'\n', buf).count() as u64;
        self.dropped.fetch_add(lines, Relaxed);
    }
}

/// The process's access-log writer: one thread, started with the first worker that has a log.
#[derive(Default)]
pub struct Writer {
    running: Mutex<Option<(SyncSender<Msg>, JoinHandle<()>)>>,
    common: Arc<Common>,
}

impl Writer {
    /// Lines lost so far (writer behind, or a file that could not be written).
    pub fn dropped(&self) -> u64 {
        self.common.dropped.load(Relaxed)
    }

    /// Checks that every log of a config can be opened for appending (created if missing), as
    /// nginx does before it starts or reloads.
    pub fn check(&self, logs: &[AccessLog]) -> std::io::Result<()> {
        for l in logs {
            open(&l.path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("access log {}: {e}", l.path.display()))
            })?;
        }
        Ok(())
    }

    fn sender(&self) -> Option<SyncSender<Msg>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.is_none() {
            let (tx, rx) = sync_channel(QUEUE);
            let common = self.common.clone();
            match std::thread::Builder::new()
                .name("coregate-log".into())
                .spawn(move || write_loop(rx, &common))
            {
                Ok(t) => *running = Some((tx, t)),
                Err(e) => {
                    tracing::error!("cannot start the access-log writer: {e}");
                    return None;
                }
            }
        }
        running.as_ref().map(|(tx, _)| tx.clone())
    }

    /// Buffers for one worker.
    pub fn buffers(&self, worker: usize) -> LogBuffers {
        LogBuffers {
            slots: RefCell::new(Vec::new()),
            tx: RefCell::new(None),
            writer_common: self.common.clone(),
            warned: Cell::new(false),
            clock: RefCell::new(Clock::default()),
            ids: Cell::new(seed(worker)),
        }
    }

    /// Reopens every file (after `SIGUSR1`): lines written from now on go to a file at the
    /// configured path, created if it was moved away.
    pub fn reopen(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((tx, _)) = running.as_ref() {
            // Blocks only the signal thread, and only while the queue is full.
            let _ = tx.send(Msg::Reopen);
        }
    }

    /// Writes out what was sent and stops the thread (at exit, after the workers).
    pub fn stop(&self) {
        let taken = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((tx, thread)) = taken {
            let _ = tx.send(Msg::Stop);
            drop(tx);
            let _ = thread.join();
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
}

/// One file as the writer holds it.
struct Out {
    file: Option<File>,
    /// A failure was reported and not followed by a success yet.
    failing: bool,
}

fn write_loop(rx: Receiver<Msg>, common: &Common) {
    let mut files: HashMap<Arc<Path>, Out> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Write(path, buf) => {
                let out = files.entry(path.clone()).or_insert(Out {
                    file: None,
                    failing: false,
                });
                let res = match &mut out.file {
                    Some(f) => f.write_all(&buf),
                    None => open(&path).and_then(|mut f| {
                        let r = f.write_all(&buf);
                        out.file = Some(f);
                        r
                    }),
                };
                match res {
                    Ok(()) if out.failing => {
                        out.failing = false;
                        tracing::info!("access log {}: writing again", path.display());
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if !out.failing {
                            tracing::error!(
                                "access log {}: cannot write ({e}): its lines are dropped until it can be written",
                                path.display()
                            );
                        }
                        out.failing = true;
                        out.file = None;
                        common.lost(&buf);
                    }
                }
                common.give_back(buf);
            }
            Msg::Reopen => {
                for (path, out) in files.iter_mut() {
                    out.file = match open(path) {
                        Ok(f) => Some(f),
                        Err(e) => {
                            tracing::error!("access log {}: cannot reopen: {e}", path.display());
                            out.failing = true;
                            None
                        }
                    };
                }
                tracing::info!("access logs reopened ({} file(s))", files.len());
            }
            Msg::Stop => break,
        }
    }
}

/// One worker's buffered lines, per file (slots outlive config generations: a reload that
/// keeps a file keeps its slot).
pub struct LogBuffers {
    slots: RefCell<Vec<Slot>>,
    tx: RefCell<Option<SyncSender<Msg>>>,
    writer_common: Arc<Common>,
    /// A dropped buffer was reported (once per worker until a send succeeds again).
    warned: Cell<bool>,
    clock: RefCell<Clock>,
    /// State of the request-id generator.
    ids: Cell<u64>,
}

struct Slot {
    path: Arc<Path>,
    buffer: usize,
    flush: Duration,
    buf: Vec<u8>,
    /// When the oldest buffered line was written.
    since: Option<Instant>,
}

impl LogBuffers {
    /// The slot of each of `logs` (created for new files; starts the writer when needed).
    pub fn slots_for(&self, writer: &Writer, logs: &[AccessLog]) -> Box<[usize]> {
        if !logs.is_empty() && self.tx.borrow().is_none() {
            *self.tx.borrow_mut() = writer.sender();
        }
        let mut slots = self.slots.borrow_mut();
        logs.iter()
            .map(|l| match slots.iter().position(|s| s.path == l.path) {
                Some(i) => {
                    slots[i].buffer = l.buffer;
                    slots[i].flush = l.flush;
                    i
                }
                None => {
                    slots.push(Slot {
                        path: l.path.clone(),
                        buffer: l.buffer,
                        flush: l.flush,
                        buf: Vec::with_capacity(l.buffer + 1024),
                        since: None,
                    });
                    slots.len() - 1
                }
            })
            .collect()
    }

    /// Appends the line of `e` to slot `slot` in `format`; sends the buffer when it is full.
    pub fn log(&self, slot: usize, format: LogFormat, e: &Entry<'_>, now: Instant) {
        let mut slots = self.slots.borrow_mut();
        let Some(s) = slots.get_mut(slot) else {
            return;
        };
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut clock = self.clock.borrow_mut();
        clock.set(wall.as_secs());
        let mut id = [0u8; 36];
        let request_id: &[u8] = match &e.request {
            Some(r) if !r.request_id.is_empty() => r.request_id,
            _ => {
                let n = self.ids.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
                self.ids.set(n);
                uuid_v7(&mut id, wall.as_millis() as u64, n);
                &id
            }
        };
        match format {
            LogFormat::Combined => combined(&mut s.buf, e, &clock, request_id),
            LogFormat::Json => json(&mut s.buf, e, &clock, wall.subsec_millis(), request_id),
        }
        drop(clock);
        s.since.get_or_insert(now);
        if s.buf.len() >= s.buffer {
            self.send(s);
        }
    }

    /// Sends every buffer whose oldest line is older than its `flush` (housekeeping tick).
    pub fn flush_due(&self, now: Instant) {
        let mut slots = self.slots.borrow_mut();
        for s in slots.iter_mut() {
            if s.since.is_some_and(|t| now.duration_since(t) >= s.flush) {
                self.send(s);
            }
        }
    }

    /// Sends every buffer (when the worker stops).
    pub fn flush_all(&self) {
        let mut slots = self.slots.borrow_mut();
        for s in slots.iter_mut().filter(|s| !s.buf.is_empty()) {
            self.send(s);
        }
    }

    fn send(&self, s: &mut Slot) {
        s.since = None;
        if s.buf.is_empty() {
            return;
        }
        let fresh = self.writer_common.spare(s.buffer + 1024);
        let full = std::mem::replace(&mut s.buf, fresh);
        let tx = self.tx.borrow();
        let Some(tx) = tx.as_ref() else {
            self.writer_common.lost(&full);
            return;
        };
        match tx.try_send(Msg::Write(s.path.clone(), full)) {
            Ok(()) => self.warned.set(false),
            Err(TrySendError::Full(Msg::Write(_, buf)))
            | Err(TrySendError::Disconnected(Msg::Write(_, buf))) => {
                self.writer_common.lost(&buf);
                if !self.warned.replace(true) {
                    tracing::warn!(
                        "access log {}: the writer is behind; lines are dropped",
                        s.path.display()
                    );
                }
                self.writer_common.give_back(buf);
            }
            Err(_) => {}
        }
    }
}

/// A logged request as the proxy saw it.
pub struct Entry<'a> {
    pub client: &'a str,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    /// `None`: the head could not be parsed.
    pub request: Option<RequestLine<'a>>,
    pub status: u16,
    /// Bytes written to the client, head included, and the part after the head.
    pub bytes_sent: u64,
    pub body_bytes_sent: u64,
    /// Bytes of the request: head and body.
    pub request_length: u64,
    pub request_time: Duration,
    /// The upstream's name and the backend's address as the config gives it.
    pub upstream: Option<(&'a str, &'a str)>,
    pub upstream_time: Option<Duration>,
}

/// What a log line says about the request itself (raw bytes as received).
#[derive(Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub protocol: &'static str,
    pub host: Option<&'a [u8]>,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// `X-Request-Id` as received; empty: one is generated for the line.
    pub request_id: &'a [u8],
}

/// The parts of a request a log line needs, copied out of the connection's buffer before the
/// body moves it (one buffer per connection, reused).
#[derive(Default)]
pub struct Captured {
    bytes: Vec<u8>,
    /// End offsets in `bytes` of method, target, host, referer, user agent, request id; `u32::MAX`
    /// for an absent field.
    ends: [u32; 6],
    starts: [u32; 6],
    protocol: &'static str,
    valid: bool,
}

impl Captured {
    /// Keeps the fields of a request (`None`: absent).
    #[allow(clippy::too_many_arguments)]
    pub fn keep(
        &mut self,
        method: &[u8],
        target: &[u8],
        protocol: &'static str,
        host: Option<&[u8]>,
        referer: Option<&[u8]>,
        user_agent: Option<&[u8]>,
        request_id: Option<&[u8]>,
    ) {
        self.bytes.clear();
        for (i, f) in [
            Some(method),
            Some(target),
            host,
            referer,
            user_agent,
            request_id,
        ]
        .into_iter()
        .enumerate()
        {
            match f {
                Some(v) => {
                    self.starts[i] = self.bytes.len() as u32;
                    self.bytes.extend_from_slice(v);
                    self.ends[i] = self.bytes.len() as u32;
                }
                None => (self.starts[i], self.ends[i]) = (u32::MAX, u32::MAX),
            }
        }
        self.protocol = protocol;
        self.valid = true;
    }

    /// Forgets the request (after its line).
    pub fn clear(&mut self) {
        self.valid = false;
    }

    fn field(&self, i: usize) -> Option<&[u8]> {
        (self.ends[i] != u32::MAX)
            .then(|| &self.bytes[self.starts[i] as usize..self.ends[i] as usize])
    }

    /// The request's fields, when some were kept.
    pub fn line(&self) -> Option<RequestLine<'_>> {
        if !self.valid {
            return None;
        }
        Some(RequestLine {
            method: self.field(0).unwrap_or_default(),
            target: self.field(1).unwrap_or_default(),
            protocol: self.protocol,
            host: self.field(2),
            referer: self.field(3),
            user_agent: self.field(4),
            request_id: self.field(5).unwrap_or_default(),
        })
    }
}

/// The wall clock as log lines show it, formatted once per second.
#[derive(Default)]
struct Clock {
    secs: u64,
    /// `01/Dec/2026:16:30:00 +0000`
    common: [u8; 26],
    /// `2026-12-01T16:30:00`
    iso: [u8; 19],
}

impl Clock {
    fn set(&mut self, secs: u64) {
        if secs == self.secs && self.iso[0] != 0 {
            return;
        }
        self.secs = secs;
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let t = secs % 86_400;
        let (h, mi, s) = (t / 3600, t / 60 % 60, t % 60);
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let two = |out: &mut [u8], v: u64| {
            out[0] = b'0' + (v / 10 % 10) as u8;
            out[1] = b'0' + (v % 10) as u8;
        };
        let four = |out: &mut [u8], v: u64| {
            two(&mut out[..2], v / 100);
            two(&mut out[2..4], v % 100);
        };
        let c = &mut self.common;
        two(&mut c[0..2], d);
        c[2] = b'/';
        c[3..6].copy_from_slice(MONTHS[(mo - 1) as usize]);
        c[6] = b'/';
        four(&mut c[7..11], y);
        c[11] = b':';
        two(&mut c[12..14], h);
        c[14] = b':';
        two(&mut c[15..17], mi);
        c[17] = b':';
        two(&mut c[18..20], s);
        c[20..26].copy_from_slice(b" +0000");
        let i = &mut self.iso;
        four(&mut i[0..4], y);
        i[4] = b'-';
        two(&mut i[5..7], mo);
        i[7] = b'-';
        two(&mut i[8..10], d);
        i[10] = b'T';
        two(&mut i[11..13], h);
        i[13] = b':';
        two(&mut i[14..16], mi);
        i[16] = b':';
        two(&mut i[17..19], s);
    }
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (u64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y.max(0) as u64, m as u64, d as u64)
}

/// A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 bits from `n` (scrambled).
fn uuid_v7(out: &mut [u8; 36], ms: u64, n: u64) -> &[u8] {
    let r = splitmix(n);
    let hi = (ms << 16) | 0x7000 | (r >> 52);
    let lo = (r & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let v = ((hi as u128) << 64) | lo as u128;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut j = 0;
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out[j] = b'-';
            j += 1;
        }
        out[j] = HEX[((v >> (124 - 4 * i)) & 15) as usize];
        j += 1;
    }
    &out[..]
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A per-worker start for request ids (different in every process and worker).
fn seed(worker: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(worker);
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Seconds with millisecond resolution: `0.003`.
fn seconds(out: &mut Vec<u8>, d: Duration) {
    let ms = d.as_millis() as u64;
    decimal(out, ms / 1000);
    let f = ms % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (f / 100) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ]);
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// A quoted field of the combined format: `"`, `\`, control and non-ASCII bytes as `\xHH`
/// (as nginx writes them), empty or absent as `-`.
fn quoted(out: &mut Vec<u8>, v: Option<&[u8]>) {
    out.push(b'"');
    match v {
        None | Some([]) => out.push(b'-'),
        Some(v) => escaped(out, v),
    }
    out.push(b'"');
}

fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    let mut run = 0;
    for (i, &b) in v.iter().enumerate() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&v[run..i]);
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX_UPPER[(b >> 4) as usize],
                HEX_UPPER[(b & 15) as usize],
            ]);
            run = i + 1;
        }
    }
    out.extend_from_slice(&v[run..]);
}

/// `client - - [time] "METHOD TARGET PROTOCOL" status body_bytes "referer" "user agent"
/// rt=SECONDS upstream=ADDR urt=SECONDS id=REQUEST-ID`
fn combined(out: &mut Vec<u8>, e: &Entry<'_>, clock: &Clock, id: &[u8]) {
    out.extend_from_slice(e.client.as_bytes());
    out.extend_from_slice(b" - - [");
    out.extend_from_slice(&clock.common);
    out.extend_from_slice(b"] \"");
    match &e.request {
        Some(r) => {
            escaped(out, r.method);
            out.push(b' ');
            escaped(out, r.target);
            out.push(b' ');
            out.extend_from_slice(r.protocol.as_bytes());
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\" ");
    decimal(out, e.status as u64);
    out.push(b' ');
    decimal(out, e.body_bytes_sent);
    out.push(b' ');
    let r = e.request.as_ref();
    quoted(out, r.and_then(|r| r.referer));
    out.push(b' ');
    quoted(out, r.and_then(|r| r.user_agent));
    out.extend_from_slice(b" rt=");
    seconds(out, e.request_time);
    out.extend_from_slice(b" upstream=");
    match e.upstream {
        Some((_, addr)) => escaped(out, addr.as_bytes()),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" urt=");
    match e.upstream_time {
        Some(t) => seconds(out, t),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" id=");
    escaped(out, id);
    out.push(b'\n');
}

/// A JSON string: `"`, `\` and control bytes escaped; bytes that are not UTF-8 as `\u00HH`, so
/// that every line is valid JSON whatever the client sent.
fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    let utf8 = std::str::from_utf8(v).is_ok();
    out.push(b'"');
    let mut run = 0;
    for (i, &b) in v.iter().enumerate() {
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..0x20 | 0x7f => None,
            0x80.. if !utf8 => None,
            _ => continue,
        };
        out.extend_from_slice(&v[run..i]);
        match esc {
            Some(s) => out.extend_from_slice(s),
            None => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX_UPPER[(b >> 4) as usize],
                HEX_UPPER[(b & 15) as usize],
            ]),
        }
        run = i + 1;
    }
    out.extend_from_slice(&v[run..]);
    out.push(b'"');
}

fn json_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// One JSON object per line.
fn json(out: &mut Vec<u8>, e: &Entry<'_>, clock: &Clock, millis: u32, id: &[u8]) {
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(&clock.iso);
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
        b'"',
    ]);
    out.extend_from_slice(b",\"client\":");
    json_str(out, e.client.as_bytes());
    out.extend_from_slice(b",\"listener\":");
    json_str(out, e.listener.as_bytes());
    out.extend_from_slice(b",\"route\":");
    json_opt(out, e.route.map(str::as_bytes));
    let r = e.request.as_ref();
    out.extend_from_slice(b",\"method\":");
    json_opt(out, r.map(|r| r.method));
    out.extend_from_slice(b",\"target\":");
    json_opt(out, r.map(|r| r.target));
    out.extend_from_slice(b",\"protocol\":");
    json_opt(out, r.map(|r| r.protocol.as_bytes()));
    out.extend_from_slice(b",\"host\":");
    json_opt(out, r.and_then(|r| r.host));
    out.extend_from_slice(b",\"status\":");
    decimal(out, e.status as u64);
    out.extend_from_slice(b",\"bytes_sent\":");
    decimal(out, e.bytes_sent);
    out.extend_from_slice(b",\"body_bytes_sent\":");
    decimal(out, e.body_bytes_sent);
    out.extend_from_slice(b",\"request_length\":");
    decimal(out, e.request_length);
    out.extend_from_slice(b",\"request_time\":");
    seconds(out, e.request_time);
    out.extend_from_slice(b",\"upstream\":");
    json_opt(out, e.upstream.map(|u| u.0.as_bytes()));
    out.extend_from_slice(b",\"upstream_addr\":");
    json_opt(out, e.upstream.map(|u| u.1.as_bytes()));
    out.extend_from_slice(b",\"upstream_time\":");
    match e.upstream_time {
        Some(t) => seconds(out, t),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"referer\":");
    json_opt(out, r.and_then(|r| r.referer));
    out.extend_from_slice(b",\"user_agent\":");
    json_opt(out, r.and_then(|r| r.user_agent));
    out.extend_from_slice(b",\"request_id\":");
    json_str(out, id);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(request: Option<RequestLine<'a>>) -> Entry<'a> {
        Entry {
            client: "127.0.0.1",
            listener: "main",
            route: Some("api"),
            request,
            status: 200,
            bytes_sent: 120,
            body_bytes_sent: 5,
            request_length: 78,
            request_time: Duration::from_micros(3_456),
            upstream: Some(("app", "127.0.0.1:9001")),
            upstream_time: Some(Duration::from_millis(2)),
        }
    }

    fn line<'a>() -> RequestLine<'a> {
        RequestLine {
            method: b"GET",
            target: b"/a\"b?c=\x01",
            protocol: "HTTP/1.1",
            host: Some(b"example.com"),
            referer: None,
            user_agent: Some(b"curl/8 \xff"),
            request_id: b"abc",
        }
    }

    #[test]
    fn clock_formats_utc() {
        let mut c = Clock::default();
        c.set(1_796_142_600); // 2026-12-01T16:30:00Z
        assert_eq!(&c.common, b"01/Dec/2026:16:30:00 +0000");
        assert_eq!(&c.iso, b"2026-12-01T16:30:00");
        c.set(951_782_400); // 2000-02-29T00:00:00Z
        assert_eq!(&c.iso, b"2000-02-29T00:00:00");
        c.set(0);
        assert_eq!(&c.common, b"01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn combined_line_escapes_like_nginx() {
        let mut c = Clock::default();
        c.set(1_796_142_600);
        let mut out = Vec::new();
        combined(&mut out, &entry(Some(line())), &c, b"abc");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [01/Dec/2026:16:30:00 +0000] \"GET /a\\x22b?c=\\x01 HTTP/1.1\" 200 5 \"-\" \"curl/8 \\xFF\" rt=0.003 upstream=127.0.0.1:9001 urt=0.002 id=abc\n"
        );
        let mut out = Vec::new();
        let mut e = entry(None);
        e.status = 400;
        e.upstream = None;
        e.upstream_time = None;
        combined(&mut out, &e, &c, b"x");
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("] \"-\" 400 5 \"-\" \"-\" rt=0.003 upstream=- urt=- id=x\n"),
            "{s}"
        );
    }

    #[test]
    fn json_lines_parse_whatever_the_bytes() {
        let mut c = Clock::default();
        c.set(1_796_142_600);
        let mut out = Vec::new();
        json(&mut out, &entry(Some(line())), &c, 7, b"abc");
        let v: serde_json::Value = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
        assert_eq!(v["time"], "2026-12-01T16:30:00.007Z");
        assert_eq!(v["target"], "/a\"b?c=\u{1}");
        assert_eq!(v["user_agent"], "curl/8 \u{ff}");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["status"], 200);
        assert_eq!(v["request_time"], 0.003);
        assert_eq!(v["upstream_addr"], "127.0.0.1:9001");
        assert_eq!(v["request_id"], "abc");
        let mut out = Vec::new();
        json(
            &mut out,
            &entry(Some(RequestLine {
                user_agent: Some("é".as_bytes()),
                ..line()
            })),
            &c,
            0,
            b"x",
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user_agent"], "é");
    }

    #[test]
    fn request_ids_are_uuid_v7() {
        let mut out = [0u8; 36];
        let s = std::str::from_utf8(uuid_v7(&mut out, 0x0192_3456_789a, 1))
            .unwrap()
            .to_string();
        assert_eq!(s.len(), 36);
        assert!(s.starts_with("01923456-789a-7"), "{s}");
        assert!(matches!(s.as_bytes()[19], b'8' | b'9' | b'a' | b'b'), "{s}");
        let mut other = [0u8; 36];
        assert_ne!(uuid_v7(&mut other, 0x0192_3456_789a, 2), s.as_bytes());
    }

    #[test]
    fn captured_fields_round_trip() {
        let mut c = Captured::default();
        assert!(c.line().is_none());
        c.keep(b"POST", b"/x", "HTTP/1.0", None, Some(b"r"), None, None);
        let l = c.line().unwrap();
        assert_eq!(
            (l.method, l.target, l.protocol),
            (&b"POST"[..], &b"/x"[..], "HTTP/1.0")
        );
        assert_eq!(
            (l.host, l.referer, l.user_agent),
            (None, Some(&b"r"[..]), None)
        );
        assert!(l.request_id.is_empty());
        c.clear();
        assert!(c.line().is_none());
    }
}
