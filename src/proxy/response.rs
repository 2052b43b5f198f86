//! Steps 4 and 5: read the response head (interim 1xx passed on), decide the framing and
//! whether either connection can carry another message, write the rewritten head and relay
//! the body.

use super::body;
use super::client::{ClientConn, Next, ReqInfo, UpFail, MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS};
use super::forward::single_length_field;
use super::io::{write_head, IoFail, RecvBuf};
use crate::config::Upstream;
use crate::http1::{
    self, connection_has, ConnectionOptions, Framing, HeadReader, Header, HeaderKind, Status,
    Version,
};
use crate::upstream::Conn;
use monoio::io::AsyncWriteRent;
use std::time::Instant;

impl<'a> ClientConn<'a> {
    /// Steps 4 and 5: read the response head, write it and the body to the client. Also says
    /// whether the upstream connection can carry another request.
    pub(super) async fn relay_response(
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
