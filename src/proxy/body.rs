//! Body streaming between two connections with bounded memory: the bytes already received sit
//! in the source's [`RecvBuf`]; each step reads what the socket has (up to the buffer size) and
//! writes it on. Content-Length bodies stop exactly at their length (bytes after them belong to
//! the next message); chunked bodies are validated by the decoder as they pass and forwarded as
//! received, or de-chunked for HTTP/1.0 clients; close-delimited bodies run to EOF, chunked on
//! the way for HTTP/1.1 clients.

use super::io::{write_all, write_head, IoFail, Limit, RecvBuf};
use crate::http1::{Chunk, ChunkedDecoder, HeadPlan};
use crate::tls::Stream;

/// Why a body relay stopped early.
#[derive(Debug)]
pub enum RelayFail {
    /// The source failed (closed early, timed out, reset).
    Source,
    /// The destination failed.
    Dest,
    /// Malformed chunked framing from the source.
    Invalid,
    /// The body passed the size limit.
    TooLarge,
}

/// Largest buffer a body stream grows to (reads that fill the buffer double it up to this).
pub const BODY_BUF: usize = 64 * 1024;
/// Initial response buffer: enough for nearly every response head and small body.
pub const RESPONSE_BUF: usize = 16 * 1024;

/// Forwards exactly `remaining` more body bytes from `src` to `dst`. Bytes already in `buf`
/// count first.
pub async fn length(
    src: &mut Stream,
    buf: &mut RecvBuf,
    dst: &mut Stream,
    mut remaining: u64,
    idle: Limit<'_>,
    sent: &mut u64,
) -> Result<(), RelayFail> {
    while remaining > 0 {
        if buf.is_empty() {
            buf.read_from(src, idle, BODY_BUF)
                .await
                .map_err(|_| RelayFail::Source)?;
        }
        let n = (buf.data().len() as u64).min(remaining) as usize;
        buf.write_range(dst, 0..n, idle)
            .await
            .map_err(|_| RelayFail::Dest)?;
        buf.consume(n);
        *sent += n as u64;
        remaining -= n as u64;
    }
    Ok(())
}

/// Forwards a chunked body from `src` to `dst`, validating it. With `dechunk`, only the data is
/// written (for a client that cannot take chunked). `max` bounds the body (data bytes).
pub async fn chunked(
    src: &mut Stream,
    buf: &mut RecvBuf,
    dst: &mut Stream,
    dechunk: bool,
    max: u64,
    idle: Limit<'_>,
    sent: &mut u64,
) -> Result<(), RelayFail> {
    let mut decoder = ChunkedDecoder::default();
    loop {
        // Validate as much as is buffered; forward the validated prefix in one write.
        let mut validated = 0;
        let mut done = false;
        loop {
            let (n, chunk) = decoder
                .decode(&buf.data()[validated..])
                .map_err(|_| RelayFail::Invalid)?;
            if decoder.body_len() > max {
                return Err(RelayFail::TooLarge);
            }
            let start = validated;
            validated += n;
            match chunk {
                Chunk::Data(r) if dechunk => {
                    let r = start + r.start..start + r.end;
                    *sent += r.len() as u64;
                    buf.write_range(dst, r, idle)
                        .await
                        .map_err(|_| RelayFail::Dest)?;
                }
                Chunk::Data(_) => {}
                Chunk::NeedMore => break,
                Chunk::Done => {
                    done = true;
                    break;
                }
            }
        }
        if !dechunk && validated > 0 {
            buf.write_range(dst, 0..validated, idle)
                .await
                .map_err(|_| RelayFail::Dest)?;
            *sent += validated as u64;
        }
        buf.consume(validated);
        if done {
            return Ok(());
        }
        buf.read_from(src, idle, BODY_BUF)
            .await
            .map_err(|_| RelayFail::Source)?;
    }
}

/// Forwards everything until `src` closes (close-delimited response bodies).
pub async fn until_close(
    src: &mut Stream,
    buf: &mut RecvBuf,
    dst: &mut Stream,
    idle: Limit<'_>,
    sent: &mut u64,
) -> Result<(), RelayFail> {
    loop {
        if !buf.is_empty() {
            let n = buf.data().len();
            buf.write_range(dst, 0..n, idle)
                .await
                .map_err(|_| RelayFail::Dest)?;
            buf.consume(n);
            *sent += n as u64;
        }
        match buf.read_from(src, idle, BODY_BUF).await {
            Ok(_) => {}
            Err(IoFail::Eof) => return Ok(()),
            Err(_) => return Err(RelayFail::Source),
        }
    }
}

/// Forwards a close-delimited body as a chunked one: each read becomes one chunk (its size line
/// and the data in one vectored write), and the upstream's close becomes the last chunk.
/// `plan` and `iovecs` are the connection's head storage, free at this point.
pub async fn rechunk(
    src: &mut Stream,
    buf: &mut RecvBuf,
    dst: &mut Stream,
    plan: &mut HeadPlan,
    iovecs: &mut Vec<libc::iovec>,
    idle: Limit<'_>,
    sent: &mut u64,
) -> Result<(), RelayFail> {
    let mut first = true;
    loop {
        if !buf.is_empty() {
            buf.compact();
            let n = buf.data().len();
            plan.clear();
            let mut line = [0u8; 24];
            plan.bytes(chunk_line(&mut line, n, first));
            let framed = plan.len() + n;
            write_head(dst, buf, plan, iovecs, 0..n, idle)
                .await
                .map_err(|_| RelayFail::Dest)?;
            buf.consume(n);
            *sent += framed as u64;
            first = false;
        }
        match buf.read_from(src, idle, BODY_BUF).await {
            Ok(_) => {}
            Err(IoFail::Eof) => break,
            Err(_) => return Err(RelayFail::Source),
        }
    }
    let last: &'static [u8] = if first {
        b"0\r\n\r\n"
    } else {
        b"\r\n0\r\n\r\n"
    };
    write_all(dst, last, idle)
        .await
        .map_err(|_| RelayFail::Dest)?;
    *sent += last.len() as u64;
    Ok(())
}

/// `[CRLF ending the previous chunk] SIZE-IN-HEX CRLF`, written into `out`.
fn chunk_line(out: &mut [u8; 24], size: usize, first: bool) -> &[u8] {
    let mut n = 0;
    if !first {
        out[..2].copy_from_slice(b"\r\n");
        n = 2;
    }
    let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in (0..digits).rev() {
        out[n] = b"0123456789abcdef"[(size >> (4 * i)) & 15];
        n += 1;
    }
    out[n..n + 2].copy_from_slice(b"\r\n");
    &out[..n + 2]
}

#[cfg(test)]
mod tests {
    use super::chunk_line;

    #[test]
    fn chunk_lines() {
        let mut b = [0u8; 24];
        assert_eq!(chunk_line(&mut b, 0, true), b"0\r\n");
        assert_eq!(chunk_line(&mut b, 255, true), b"ff\r\n");
        assert_eq!(chunk_line(&mut b, 65536, false), b"\r\n10000\r\n");
        assert_eq!(chunk_line(&mut b, usize::MAX, false).len(), 2 + 16 + 2);
    }
}
