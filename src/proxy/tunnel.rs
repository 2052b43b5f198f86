//! After `101 Switching Protocols` (WebSocket and the other upgrades a route allows), a
//! `CONNECT` a route enables, or on a TCP listener, the client and upstream connections become a
//! two-way byte tunnel: whatever either side sends goes to the other, until both have closed
//! their sending side (each close is passed on as a half-close, so a WebSocket close handshake
//! completes), either fails, or no byte has moved either way for the idle timeout.
//!
//! One task relays both directions, each with its own buffer of at most one chunk. It waits for
//! whichever comes first of: a side readable whose direction's buffer is empty, a side writable
//! that has bytes waiting for it (polls, which lose nothing when dropped, unlike a read or a
//! write). A read takes what is there; a write to a plain socket sends what fits, the rest waits
//! for the next writable. So a peer that stops reading holds back only the direction towards it:
//! the other keeps flowing (an echo-style peer that writes before it reads cannot deadlock the
//! tunnel). A TLS side may already hold decrypted bytes, relayed without waiting; a write to a
//! TLS side is one record flight sent whole (rustls cannot take part of one back).

use super::io::{IoFail, Limit, RecvBuf};
use crate::tls::Stream;
use monoio::buf::IoBuf;
use monoio::io::AsyncWriteRent;

const CHUNK: usize = 16 * 1024;

/// Bytes moved each way, and how the tunnel ended.
#[derive(Debug, Default)]
pub struct Moved {
    pub to_upstream: u64,
    pub to_client: u64,
    pub idle_timeout: bool,
}

/// One direction: bytes read from its source and not yet written to its destination.
struct Direction {
    buf: RecvBuf,
    /// The source has not closed.
    open: bool,
    /// The close was passed on to the destination.
    shut: bool,
    moved: u64,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            buf: RecvBuf::with_capacity(CHUNK),
            open: true,
            shut: false,
            moved: 0,
        }
    }

    fn wants_read(&self) -> bool {
        self.open && self.buf.is_empty()
    }

    fn wants_write(&self) -> bool {
        !self.buf.is_empty()
    }

    fn done(&self) -> bool {
        !self.open && self.buf.is_empty() && self.shut
    }
}

enum Event {
    Read(bool),
    Write(bool),
}

/// Waits for `wanted` readiness of `s`, or forever when not wanted.
async fn ready(s: &Stream, wanted: bool, write: bool) -> std::io::Result<()> {
    match (wanted, write) {
        (false, _) => std::future::pending().await,
        (true, false) => s.tcp().readable(false).await,
        (true, true) => s.tcp().writable(false).await,
    }
}

/// Relays between `client` and `upstream` as described above.
pub async fn relay(client: &mut Stream, upstream: &mut Stream, idle: Limit<'_>) -> Moved {
    // [client → upstream, upstream → client]
    let mut dirs = [Direction::new(), Direction::new()];
    let mut idle_timeout = false;
    while !(dirs[0].done() && dirs[1].done()) {
        // A source's close is passed on once its last bytes are out.
        for (d, to) in dirs.iter_mut().zip([&mut *upstream, &mut *client]) {
            if !d.open && d.buf.is_empty() && !d.shut {
                d.shut = true;
                let _ = to.shutdown().await;
            }
        }
        if dirs[0].done() && dirs[1].done() {
            break;
        }
        let event = if dirs[0].wants_read() && client.has_buffered() {
            Event::Read(true)
        } else if dirs[1].wants_read() && upstream.has_buffered() {
            Event::Read(false)
        } else {
            let (c, u) = (&*client, &*upstream);
            let waited = idle
                .run(async {
                    monoio::select! {
                        r = ready(c, dirs[0].wants_read(), false) => r.map(|_| Event::Read(true)),
                        r = ready(u, dirs[1].wants_read(), false) => r.map(|_| Event::Read(false)),
                        r = ready(u, dirs[0].wants_write(), true) => r.map(|_| Event::Write(true)),
                        r = ready(c, dirs[1].wants_write(), true) => r.map(|_| Event::Write(false)),
                    }
                })
                .await;
            match waited {
                None => {
                    idle_timeout = true;
                    break;
                }
                Some(Err(_)) => break,
                Some(Ok(e)) => e,
            }
        };
        let ok = match event {
            Event::Read(up) => {
                let (d, from) = if up {
                    (&mut dirs[0], &mut *client)
                } else {
                    (&mut dirs[1], &mut *upstream)
                };
                match d.buf.read_from(from, idle, CHUNK).await {
                    Ok(_) => true,
                    Err(IoFail::Eof) => {
                        d.open = false;
                        true
                    }
                    Err(_) => false,
                }
            }
            Event::Write(up) => {
                let (d, to) = if up {
                    (&mut dirs[0], &mut *upstream)
                } else {
                    (&mut dirs[1], &mut *client)
                };
                write_some(d, to, idle).await
            }
        };
        if !ok {
            break;
        }
    }
    Moved {
        to_upstream: dirs[0].moved,
        to_client: dirs[1].moved,
        idle_timeout,
    }
}

/// Writes what `to` takes of `d`'s bytes (a plain socket: what fits; TLS: all of them).
async fn write_some(d: &mut Direction, to: &mut Stream, idle: Limit<'_>) -> bool {
    // What a partial write left goes to the front (`take` hands over the buffer from 0).
    d.buf.compact();
    let n = d.buf.data().len();
    let vec = d.buf.take();
    if to.is_tls() {
        return match super::io::write_all(to, vec, idle).await {
            Ok(v) => {
                d.buf.put_back(v);
                d.buf.consume(n);
                d.moved += n as u64;
                true
            }
            Err(_) => false,
        };
    }
    let Some((res, slice)) = idle.run(to.write(vec.slice(0..n))).await else {
        return false;
    };
    d.buf.put_back(slice.into_inner());
    match res {
        Ok(w) if w > 0 => {
            d.buf.consume(w);
            d.moved += w as u64;
            true
        }
        _ => false,
    }
}

impl super::client::ClientConn<'_> {
    /// A `CONNECT` to a route that enables it: a backend of the route's upstream is connected
    /// (as a TCP listener's connection would be), the client is answered `200`, and the
    /// connection becomes a tunnel to it (bytes the client sent after its request go first).
    pub(super) async fn connect_tunnel(
        &mut self,
        route: &crate::route::Route,
        head_len: usize,
    ) -> super::client::Next {
        use super::client::Next;
        let snap = self.snap;
        let Some(u) = route.upstream.map(|u| &snap.upstreams[u]) else {
            return self.reject(501, "CONNECT is not supported").await;
        };
        let ends = crate::upstream::ClientEnds {
            source: self.peer,
            destination: self.local_addr(),
            owner: 0,
        };
        let Some(mut conn) = super::tcp::open_any(u, self.state, self.peer_key, &ends).await else {
            return self
                .reject(502, "no backend of the upstream could be reached")
                .await;
        };
        let stats = &self.state.stats;
        stats.request(self.listener, self.route, 200);
        stats.tunnels.inc();
        self.tally.status = 200;
        self.tally.backend = Some((u.index, conn.backend));
        const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";
        let idle = self.limit(snap.limits.client_idle_timeout);
        if super::io::write_all(&mut self.stream, ESTABLISHED, idle)
            .await
            .is_err()
        {
            return Next::Close;
        }
        self.tally.head_out += ESTABLISHED.len() as u64;
        self.tally.bytes_out += ESTABLISHED.len() as u64;
        self.relay_as_tunnel(&mut conn.stream, head_len, idle).await;
        Next::Close
    }

    /// The client's buffered bytes after the first `request` (what it sent after its request)
    /// go to `upstream` (within `idle`), then the two connections are relayed as a tunnel until
    /// it ends (`limits.tunnel_idle_timeout`), counted as open meanwhile, its bytes added to the
    /// request's tally. False when those first bytes could not be written.
    pub(super) async fn relay_as_tunnel(
        &mut self,
        upstream: &mut Stream,
        request: usize,
        idle: Limit<'_>,
    ) -> bool {
        self.buf.consume(request);
        let pending = self.buf.data().len();
        if pending > 0 {
            if self
                .buf
                .write_range(upstream, 0..pending, idle)
                .await
                .is_err()
            {
                return false;
            }
            self.buf.consume(pending);
            self.tally.bytes_in += pending as u64;
        }
        let stats = &self.state.stats;
        stats.tunnels_open.inc();
        let limit = self.limit(self.snap.limits.tunnel_idle_timeout);
        let moved = relay(&mut self.stream, upstream, limit).await;
        stats.tunnels_open.dec();
        self.tally.bytes_in += moved.to_upstream;
        self.tally.bytes_out += moved.to_client;
        if moved.idle_timeout {
            tracing::debug!(client = %self.peer_ip, "tunnel closed after tunnel_idle_timeout without traffic");
        }
        true
    }
}
