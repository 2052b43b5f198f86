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
use std::time::{Duration, Instant};

use crate::config::{AccessLog, LogFormat};
use crate::http1::Span;
pub use format::uuid_v7;
use format::{Clock, Id};

mod format;

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
            ids: Cell::new(format::seed(worker)),
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
        let mut clock = self.clock.borrow_mut();
        let wall = clock.wall(now);
        let mut generated = [0u8; 36];
        let id = match &e.request {
            Some(r) if !r.request_id.is_empty() => Id::Received(r.request_id),
            _ => {
                let n = self.ids.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
                self.ids.set(n);
                Id::Generated(uuid_v7(&mut generated, wall.as_millis() as u64, n))
            }
        };
        let json = format == LogFormat::Json;
        format::line(&mut s.buf, json, e, &clock, wall.subsec_millis(), id);
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
    /// The consumer the route's auth admitted.
    pub consumer: Option<&'a str>,
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

/// The parts of a request a log line needs: its head copied out of the connection's buffer
/// before the body moves it (one copy, into a buffer per connection, reused) and where each
/// field lies in it.
#[derive(Default)]
pub struct Captured {
    head: Vec<u8>,
    /// Method, target, host, referer, user agent, request id.
    spans: [Span; 6],
    /// Bit `i`: field `i` is present.
    present: u8,
    protocol: &'static str,
    valid: bool,
}

impl Captured {
    /// Keeps a request head and where its fields lie in it (`None`: absent).
    pub fn keep(&mut self, head: &[u8], fields: [Option<Span>; 6], protocol: &'static str) {
        self.head.clear();
        self.head.extend_from_slice(head);
        self.present = 0;
        for (i, f) in fields.into_iter().enumerate() {
            if let Some(span) = f {
                self.spans[i] = span;
                self.present |= 1 << i;
            }
        }
        self.protocol = protocol;
        self.valid = true;
    }

    /// Records the request id the proxy forwarded (a route with `request_id`), in place of the
    /// received one.
    pub fn set_request_id(&mut self, id: &[u8]) {
        if !self.valid {
            return;
        }
        let start = self.head.len();
        self.head.extend_from_slice(id);
        self.spans[5] = Span::new(start, self.head.len());
        self.present |= 1 << 5;
    }

    /// Forgets the request (after its line).
    pub fn clear(&mut self) {
        self.valid = false;
    }

    fn field(&self, i: usize) -> Option<&[u8]> {
        if self.present & (1 << i) == 0 {
            return None;
        }
        let s = self.spans[i];
        self.head.get(s.start as usize..s.end as usize)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_fields_round_trip() {
        let mut c = Captured::default();
        assert!(c.line().is_none());
        let head = b"POST /x HTTP/1.0\r\nReferer: r\r\n\r\n";
        let span = |from: usize, to: usize| {
            Some(Span {
                start: from as u32,
                end: to as u32,
            })
        };
        c.keep(
            head,
            [span(0, 4), span(5, 7), None, span(27, 28), None, None],
            "HTTP/1.0",
        );
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
