//! After `101 Switching Protocols` (WebSocket and the other upgrades a route allows), the client
//! and upstream connections become a two-way byte tunnel: whatever either side sends goes to
//! the other, until both have closed their sending side (each close is passed on as a
//! half-close, so a WebSocket close handshake completes), either fails, or no byte has moved
//! either way for `tunnel_idle_timeout`.
//!
//! One task relays both directions: it waits until one side is readable (a poll, which loses
//! nothing when dropped, unlike a read), reads what is there and writes it to the other side.
//! A TLS side may already hold decrypted bytes, which are relayed without waiting.

use super::io::RecvBuf;
use crate::tls::Stream;
use monoio::io::AsyncWriteRent;
use std::time::Duration;

const CHUNK: usize = 16 * 1024;

/// Bytes moved each way, and how the tunnel ended.
#[derive(Debug, Default)]
pub struct Moved {
    pub to_upstream: u64,
    pub to_client: u64,
    pub idle_timeout: bool,
}

enum Side {
    Client,
    Upstream,
}

/// Relays between `client` and `upstream` as described above.
pub async fn relay(client: &mut Stream, upstream: &mut Stream, idle: Duration) -> Moved {
    let mut moved = Moved::default();
    let (mut c_open, mut u_open) = (true, true);
    let mut buf = RecvBuf::with_capacity(CHUNK);
    while c_open || u_open {
        let side = if c_open && client.has_buffered() {
            Side::Client
        } else if u_open && upstream.has_buffered() {
            Side::Upstream
        } else {
            let c = async {
                if c_open {
                    client.tcp().readable(false).await
                } else {
                    std::future::pending().await
                }
            };
            let u = async {
                if u_open {
                    upstream.tcp().readable(false).await
                } else {
                    std::future::pending().await
                }
            };
            let ready = monoio::time::timeout(idle, async {
                monoio::select! {
                    r = c => (Side::Client, r),
                    r = u => (Side::Upstream, r),
                }
            })
            .await;
            match ready {
                Err(_) => {
                    moved.idle_timeout = true;
                    break;
                }
                Ok((_, Err(_))) => break,
                Ok((side, Ok(()))) => side,
            }
        };
        let (from, to, open, count) = match side {
            Side::Client => (
                &mut *client,
                &mut *upstream,
                &mut c_open,
                &mut moved.to_upstream,
            ),
            Side::Upstream => (
                &mut *upstream,
                &mut *client,
                &mut u_open,
                &mut moved.to_client,
            ),
        };
        match buf.read_from(from, idle, CHUNK).await {
            Ok(_) => {
                let n = buf.data().len();
                if super::io::write_all(to, buf.take(), idle)
                    .await
                    .map(|data| buf.put_back(data))
                    .is_err()
                {
                    break;
                }
                buf.consume(n);
                *count += n as u64;
            }
            Err(super::io::IoFail::Eof) => {
                // Pass the close on; the other direction goes on until it closes too.
                *open = false;
                let _ = to.shutdown().await;
            }
            Err(_) => break,
        }
    }
    moved
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
        let u = &snap.upstreams[route.upstream];
        let ends = crate::upstream::ClientEnds {
            source: self.peer,
            destination: self.listen_addr,
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
        let idle = snap.limits.client_idle_timeout;
        if super::io::write_all(&mut self.stream, ESTABLISHED, idle)
            .await
            .is_err()
        {
            return Next::Close;
        }
        self.tally.head_out += ESTABLISHED.len() as u64;
        self.tally.bytes_out += ESTABLISHED.len() as u64;
        self.buf.consume(head_len);
        let pending = self.buf.data().len();
        if pending > 0 {
            if self
                .buf
                .write_range(&mut conn.stream, 0..pending, idle)
                .await
                .is_err()
            {
                return Next::Close;
            }
            self.buf.consume(pending);
            self.tally.bytes_in += pending as u64;
        }
        stats.tunnels_open.inc();
        let moved = relay(
            &mut self.stream,
            &mut conn.stream,
            snap.limits.tunnel_idle_timeout,
        )
        .await;
        self.state.stats.tunnels_open.dec();
        self.tally.bytes_in += moved.to_upstream;
        self.tally.bytes_out += moved.to_client;
        Next::Close
    }
}
