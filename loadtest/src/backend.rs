//! `loadtest backend`: the origin server behind the proxy under test. Requests come in from the
//! proxy (or straight from the generator), are parsed with httparse and answered from prebuilt
//! buffers (fixed body, chunked body, or an echo of the raw request). One pinned monoio worker per
//! `--workers`, each with its own SO_REUSEPORT listener. Counts connections and requests and
//! serves them as JSON at the stats path; answers a proxy's health checks at the health path
//! (counted apart, so `requests` is what the proxy forwarded); can stall every Nth request to
//! test latency reporting.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::http::{framing, wants_close};
use crate::util::{self, parse_duration, parse_size, RxBuf};

const MAX_REQUEST: usize = 64 << 20;

#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Worker threads, each pinned to one allowed CPU with its own SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Response body size (e.g. 100, 16KiB, 256KiB).
    #[arg(long, default_value = "100", value_parser = parse_size)]
    pub body_size: u64,
    /// Wait this long before answering each request.
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,
    /// Send the body with Transfer-Encoding: chunked instead of Content-Length.
    #[arg(long)]
    pub chunked: bool,
    /// Answer with the raw request received (head and body) as the response body.
    #[arg(long)]
    pub echo: bool,
    /// Stall every Nth request (per worker) for --stall (0 = never).
    #[arg(long, default_value_t = 0)]
    pub stall_every: u64,
    /// How long a stalled request waits.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub stall: Duration,
    /// Path answering {"connections":N,"requests":M,"open":K,"checks":H} (not counted as a
    /// request).
    #[arg(long, default_value = "/__stats")]
    pub stats_path: String,
    /// Path for a proxy's active health checks: answered 200 "ok" at once (no delay, no stall),
    /// counted as `checks`, not as `requests`.
    #[arg(long, default_value = "/__health")]
    pub health_path: String,
    /// Do not pin worker threads.
    #[arg(long)]
    pub no_pin: bool,
}

/// One worker's counters; written only by its worker, read by any worker serving stats.
#[repr(align(128))]
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    open: AtomicU64,
    checks: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64, by: i64) {
        // Single writer: a load and a store, no locked instruction.
        let v = c.load(Ordering::Relaxed);
        c.store(v.wrapping_add(by as u64), Ordering::Relaxed);
    }
}

/// A prebuilt response and the length of its head.
#[derive(Clone)]
struct Canned {
    bytes: Bytes,
    head_len: usize,
}

struct Ctx {
    args: BackendArgs,
    keep: Canned,
    close: Canned,
    all: Vec<Arc<Counters>>,
    mine: Arc<Counters>,
    seen: Cell<u64>,
}

fn body_pattern(n: usize) -> Vec<u8> {
    const PAT: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_\n";
    PAT.iter().copied().cycle().take(n).collect()
}

fn canned(args: &BackendArgs, close: bool) -> Canned {
    let body = body_pattern(args.body_size as usize);
    let conn = if close { "Connection: close\r\n" } else { "" };
    let mut out = Vec::with_capacity(body.len() + 256);
    if args.chunked {
        out.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nServer: loadtest\r\nContent-Type: application/octet-stream\r\n\
                 Transfer-Encoding: chunked\r\n{conn}\r\n"
            )
            .as_bytes(),
        );
        let head_len = out.len();
        for piece in body.chunks(8192) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        return Canned {
            bytes: out.into(),
            head_len,
        };
    }
    out.extend_from_slice(
        format!(
            "HTTP/1.1 200 OK\r\nServer: loadtest\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n{conn}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let head_len = out.len();
    out.extend_from_slice(&body);
    Canned {
        bytes: out.into(),
        head_len,
    }
}

pub fn main(args: BackendArgs) -> i32 {
    util::raise_nofile();
    let workers = args.workers.max(1);
    let counters: Vec<Arc<Counters>> = (0..workers).map(|_| Arc::default()).collect();
    let (listen, pin) = (args.listen, !args.no_pin);
    util::serve_workers("backend", listen, workers, pin, move |i, addr, ready| {
        worker(i, addr, args.clone(), counters.clone(), ready)
    })
}

async fn worker(
    index: usize,
    addr: SocketAddr,
    args: BackendArgs,
    all: Vec<Arc<Counters>>,
    tx: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
) {
    let Some(listener) = util::bind_listener(addr, &tx) else {
        return;
    };
    let local = listener.local_addr().unwrap_or(addr);
    let _ = tx.send(Ok(local));
    drop(tx);
    let ctx = Rc::new(Ctx {
        keep: canned(&args, false),
        close: canned(&args, true),
        mine: all[index].clone(),
        all,
        args,
        seen: Cell::new(0),
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                monoio::spawn(async move {
                    Counters::bump(&ctx.mine.connections, 1);
                    Counters::bump(&ctx.mine.open, 1);
                    serve(stream, &ctx).await;
                    Counters::bump(&ctx.mine.open, -1);
                });
            }
            Err(e) => {
                eprintln!("loadtest backend: accept: {e}");
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// What one parsed request asks for (copied out of the buffer before it is consumed).
struct Req {
    total: usize,
    stats: bool,
    check: bool,
    head: bool,
    close: bool,
}

enum Parsed {
    Done(Req),
    Partial,
    Bad(&'static str),
}

fn parse(data: &[u8], stats_path: &str, health_path: &str) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if data.len() > 64 * 1024 {
                Parsed::Bad("431 Request Header Fields Too Large")
            } else {
                Parsed::Partial
            }
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad("431 Request Header Fields Too Large")
        }
        Err(_) => return Parsed::Bad("400 Bad Request"),
    };
    let mut body = match framing(req.headers, false) {
        Ok(b) => b,
        Err(_) => return Parsed::Bad("400 Bad Request"),
    };
    let close = wants_close(req.headers)
        || (req.version == Some(0)
            && !req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection")
                    && h.value.eq_ignore_ascii_case(b"keep-alive")
            }));
    let path = req.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or(path);
    let stats = path == stats_path;
    let check = path == health_path;
    let head = req.method == Some("HEAD");
    let mut used = 0;
    if !body.is_done() {
        match body.advance(&data[head_len..]) {
            Ok((n, _)) => used = n,
            Err(_) => return Parsed::Bad("400 Bad Request"),
        }
        if !body.is_done() {
            return if data.len() > MAX_REQUEST {
                Parsed::Bad("413 Content Too Large")
            } else {
                Parsed::Partial
            };
        }
    }
    Parsed::Done(Req {
        total: head_len + used,
        stats,
        check,
        head,
        close,
    })
}

async fn write(stream: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let buf = std::mem::take(out);
    let (res, mut buf) = stream.write_all(buf).await;
    buf.clear();
    *out = buf;
    res.is_ok()
}

async fn serve(mut stream: TcpStream, ctx: &Ctx) {
    let _ = stream.set_nodelay(true);
    let mut rx = RxBuf::with_capacity(16384);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let req = match parse(rx.data(), &ctx.args.stats_path, &ctx.args.health_path) {
            Parsed::Done(r) => r,
            Parsed::Partial => {
                if !write(&mut stream, &mut out).await {
                    return;
                }
                match rx.fill(&mut stream).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
            Parsed::Bad(status) => {
                out.extend_from_slice(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
                write(&mut stream, &mut out).await;
                return;
            }
        };
        if req.stats || req.check {
            let body = if req.stats {
                let (mut c, mut r, mut o, mut h) = (0, 0, 0, 0);
                for w in &ctx.all {
                    c += w.connections.load(Ordering::Relaxed);
                    r += w.requests.load(Ordering::Relaxed);
                    o += w.open.load(Ordering::Relaxed);
                    h += w.checks.load(Ordering::Relaxed);
                }
                format!("{{\"connections\":{c},\"requests\":{r},\"open\":{o},\"checks\":{h}}}")
            } else {
                Counters::bump(&ctx.mine.checks, 1);
                "ok".to_string()
            };
            let ctype = if req.stats {
                "application/json"
            } else {
                "text/plain"
            };
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            if !req.head {
                out.extend_from_slice(body.as_bytes());
            }
            rx.consume(req.total);
            if req.close {
                write(&mut stream, &mut out).await;
                return;
            }
            continue;
        }
        Counters::bump(&ctx.mine.requests, 1);
        let seen = ctx.seen.get() + 1;
        ctx.seen.set(seen);
        let mut wait = ctx.args.delay.unwrap_or_default();
        if ctx.args.stall_every > 0 && seen.is_multiple_of(ctx.args.stall_every) {
            wait += ctx.args.stall;
        }
        if !wait.is_zero() {
            if !write(&mut stream, &mut out).await {
                return;
            }
            monoio::time::sleep(wait).await;
        }
        if ctx.args.echo {
            let raw = &rx.data()[..req.total];
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nServer: loadtest\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {}\r\n{}\r\n",
                    raw.len(),
                    if req.close { "Connection: close\r\n" } else { "" }
                )
                .as_bytes(),
            );
            if !req.head {
                out.extend_from_slice(raw);
            }
            rx.consume(req.total);
        } else {
            let canned = if req.close { &ctx.close } else { &ctx.keep };
            rx.consume(req.total);
            let bytes = if req.head {
                canned.bytes.slice(..canned.head_len)
            } else {
                canned.bytes.clone()
            };
            if out.is_empty() && rx.data().is_empty() {
                // Nothing else queued: hand the shared prebuilt buffer to the kernel as is.
                if stream.write_all(bytes).await.0.is_err() {
                    return;
                }
            } else {
                out.extend_from_slice(&bytes);
            }
        }
        if req.close {
            write(&mut stream, &mut out).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(data: &[u8]) -> Req {
        match parse(data, "/__stats", "/__health") {
            Parsed::Done(r) => r,
            Parsed::Partial => panic!("partial"),
            Parsed::Bad(s) => panic!("bad: {s}"),
        }
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET";
        let first = done(two);
        assert_eq!(first.total, 28);
        assert!(!first.close && !first.stats && !first.head);
        let second = done(&two[first.total..]);
        assert_eq!(second.total, 42);
        assert!(matches!(
            parse(&two[first.total + second.total..], "/__stats", "/__health"),
            Parsed::Partial
        ));
    }

    #[test]
    fn bodies_close_and_stats() {
        // A chunked body is complete only with its last chunk.
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        assert!(matches!(
            parse(chunked, "/__stats", "/__health"),
            Parsed::Partial
        ));
        let mut whole = chunked.to_vec();
        whole.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(done(&whole).total, whole.len());
        assert!(done(b"GET / HTTP/1.0\r\n\r\n").close);
        assert!(!done(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close);
        assert!(done(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").close);
        assert!(done(b"GET /__stats?x=1 HTTP/1.1\r\n\r\n").stats);
        assert!(done(b"GET /__health HTTP/1.1\r\n\r\n").check);
        assert!(!done(b"GET /__health/x HTTP/1.1\r\n\r\n").check);
        assert!(done(b"HEAD / HTTP/1.1\r\n\r\n").head);
        assert!(matches!(
            parse(
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                "/__stats",
                "/__health"
            ),
            Parsed::Bad(_)
        ));
        assert!(matches!(
            parse(b"\x01\x02 nonsense\r\n\r\n", "/", "/__health"),
            Parsed::Bad(_)
        ));
    }

    #[test]
    fn canned_responses() {
        let mut args = BackendArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 1,
            body_size: 20000,
            delay: None,
            chunked: false,
            echo: false,
            stall_every: 0,
            stall: Duration::ZERO,
            stats_path: "/__stats".into(),
            health_path: "/__health".into(),
            no_pin: true,
        };
        let c = canned(&args, false);
        assert_eq!(c.bytes.len() - c.head_len, 20000);
        assert!(std::str::from_utf8(&c.bytes[..c.head_len])
            .unwrap()
            .contains("Content-Length: 20000\r\n"));
        args.chunked = true;
        let c = canned(&args, true);
        let head = std::str::from_utf8(&c.bytes[..c.head_len]).unwrap();
        assert!(head.contains("Transfer-Encoding: chunked") && head.contains("Connection: close"));
        let mut body = crate::http::Body::Chunked(crate::http::Chunk::Size);
        let (used, payload) = body.advance(&c.bytes[c.head_len..]).unwrap();
        assert!(body.is_done());
        assert_eq!((used, payload), (c.bytes.len() - c.head_len, 20000));
    }
}
