//! The forwarding state machine (placeholder until the real proxy lands): the runtime's accept
//! loop calls [`serve_connection`] once per accepted connection, on the worker that accepted it.
//!
//! This interim version answers from the route table without contacting an upstream, so the
//! runtime can be exercised end to end: for each request head it replies `200` with
//! `route NAME -> UPSTREAM` in the body, or `404` when no route matches; requests with a body get
//! `501` and the connection is closed. It honours keep-alive, pipelining, the client header and
//! idle timeouts, the head-size limit and graceful shutdown (`Connection: close` once the worker
//! is shutting down; idle connections close at once).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::runtime::WorkerCtx;

/// Serves one client connection until it closes, fails, times out, or the worker shuts down.
pub async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
    ctx: Rc<WorkerCtx>,
) {
    let _ = peer;
    let snapshot = ctx.snapshot.clone();
    let limits = &snapshot.limits;
    let table = &snapshot.listeners[listener].routes;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut first = true;
    loop {
        // Read until a complete head is buffered.
        let head_deadline = Instant::now() + limits.client_header_timeout;
        let (head_len, host, path, keep_alive, has_body) = loop {
            if !buf.is_empty() {
                let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) if n > limits.max_head_bytes => {
                        reply(&mut stream, 431, "request head too large\n", false).await;
                        return;
                    }
                    Ok(httparse::Status::Complete(n)) => {
                        let mut host: &[u8] = b"";
                        let mut close = req.version == Some(0);
                        let mut has_body = false;
                        for h in req.headers.iter() {
                            if h.name.eq_ignore_ascii_case("host") {
                                host = h.value;
                            } else if h.name.eq_ignore_ascii_case("connection") {
                                if h.value.eq_ignore_ascii_case(b"close") {
                                    close = true;
                                } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                                    close = false;
                                }
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                                || (h.name.eq_ignore_ascii_case("content-length")
                                    && h.value != b"0")
                            {
                                has_body = true;
                            }
                        }
                        let target = req.path.unwrap_or("/").as_bytes();
                        let path_len = memchr::memchr(b'?', target).unwrap_or(target.len());
                        break (
                            n,
                            host.to_vec(),
                            target[..path_len].to_vec(),
                            !close,
                            has_body,
                        );
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => {
                        reply(&mut stream, 431, "too many headers\n", false).await;
                        return;
                    }
                    Err(_) => {
                        reply(&mut stream, 400, "bad request\n", false).await;
                        return;
                    }
                }
            }
            if buf.len() >= limits.max_head_bytes {
                reply(&mut stream, 431, "request head too large\n", false).await;
                return;
            }
            if buf.len() == buf.capacity() {
                buf.reserve(4096);
            }
            let len = buf.len();
            let read = stream.read(buf.slice_mut(len..));
            let left = head_deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let result = if len == 0 {
                // Nothing of a request yet: wait for one, but not past shutdown.
                let wait = if first {
                    left
                } else {
                    limits.client_idle_timeout
                };
                monoio::select! {
                    r = monoio::time::timeout(wait, read) => r,
                    _ = ctx.shutdown_signal() => return,
                }
            } else {
                monoio::time::timeout(left, read).await
            };
            // A timed-out read may have lost bytes: close the connection (MONOIO-FACTS).
            let Ok((res, slice)) = result else { return };
            buf = slice.into_inner();
            match res {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        first = false;
        buf.drain(..head_len);
        if has_body {
            reply(
                &mut stream,
                501,
                "request bodies are not supported yet\n",
                false,
            )
            .await;
            return;
        }
        let keep_alive = keep_alive && !ctx.shutting_down();
        let ok = match table.find(&host, &path) {
            Some(r) => {
                let body = format!(
                    "route {} -> {}\n",
                    r.name, snapshot.upstreams[r.upstream].name
                );
                reply(&mut stream, 200, &body, keep_alive).await
            }
            None => reply(&mut stream, 404, "no route\n", keep_alive).await,
        };
        if !ok || !keep_alive {
            return;
        }
    }
}

async fn reply(stream: &mut TcpStream, status: u16, body: &str, keep_alive: bool) -> bool {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        _ => "Not Implemented",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
        body.len(),
        if keep_alive { "" } else { "connection: close\r\n" },
    );
    let (res, _) = stream.write_all(head.into_bytes()).await;
    res.is_ok()
}
