//! HTTP/1.1 message framing shared by the backend (request bodies) and the load generator
//! (response bodies): decides how a body is delimited from the parsed head and walks it through
//! the receive buffer without copying, counting payload bytes. Heads are parsed with httparse.

use std::fmt;

/// How a message body is delimited, and how far it has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body at all (requests without framing headers, 1xx/204/304, HEAD responses).
    Empty,
    /// `Content-Length`: bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// A response without framing: the body ends when the connection closes.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Waiting for a `size[;ext]\r\n` line.
    Size,
    /// Inside chunk data: bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailer,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    BadContentLength,
    BadChunkSize,
    BadChunkEnd,
    LineTooLong,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FrameError::BadContentLength => "invalid Content-Length",
            FrameError::BadChunkSize => "invalid chunk size line",
            FrameError::BadChunkEnd => "chunk data not followed by CRLF",
            FrameError::LineTooLong => "chunk size or trailer line too long",
        };
        f.write_str(s)
    }
}

const MAX_LINE: usize = 4096;

/// Framing from headers. `is_response` selects the close-delimited default.
pub fn framing(headers: &[httparse::Header<'_>], is_response: bool) -> Result<Body, FrameError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the final coding decides; "gzip, chunked" is chunked.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(&[]);
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value.trim_ascii())
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(FrameError::BadContentLength)?;
            if length.is_some_and(|l| l != v) {
                return Err(FrameError::BadContentLength);
            }
            length = Some(v);
        }
    }
    Ok(if chunked {
        Body::Chunked(Chunk::Size)
    } else if let Some(n) = length {
        if n == 0 {
            Body::Empty
        } else {
            Body::Length(n)
        }
    } else if is_response {
        Body::UntilClose
    } else {
        Body::Empty
    })
}

/// True when a header list says `Connection: close` (token match, case-insensitive).
pub fn wants_close(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

impl Body {
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Body::Empty | Body::Length(0) | Body::Chunked(Chunk::Done)
        )
    }

    /// Walks over `data` (the start of the unread body). Returns (bytes consumed, payload bytes
    /// among them). Consumes less than `data.len()` only when the body is done or when a line is
    /// incomplete (then the caller reads more and calls again with the rest prepended).
    pub fn advance(&mut self, data: &[u8]) -> Result<(usize, u64), FrameError> {
        match self {
            Body::Empty => Ok((0, 0)),
            Body::UntilClose => Ok((data.len(), data.len() as u64)),
            Body::Length(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                Ok((n as usize, n))
            }
            Body::Chunked(state) => advance_chunked(state, data),
        }
    }
}

fn line(data: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let l = &data[..i];
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            Ok(Some((l, i + 1)))
        }
        None if data.len() > MAX_LINE => Err(FrameError::LineTooLong),
        None => Ok(None),
    }
}

fn advance_chunked(state: &mut Chunk, data: &[u8]) -> Result<(usize, u64), FrameError> {
    let mut pos = 0;
    let mut payload = 0u64;
    loop {
        let rest = &data[pos..];
        match *state {
            Chunk::Done => return Ok((pos, payload)),
            Chunk::Size => {
                let Some((l, used)) = line(rest)? else {
                    return Ok((pos, payload));
                };
                let hex = l.split(|&b| b == b';').next().unwrap_or(&[]).trim_ascii();
                if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(FrameError::BadChunkSize);
                }
                let size = u64::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16)
                    .map_err(|_| FrameError::BadChunkSize)?;
                pos += used;
                *state = if size == 0 {
                    Chunk::Trailer
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if rest.is_empty() {
                    return Ok((pos, payload));
                }
                let n = left.min(rest.len() as u64);
                pos += n as usize;
                payload += n;
                *state = if n == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n)
                };
            }
            Chunk::DataEnd => {
                if rest.starts_with(b"\r\n") {
                    pos += 2;
                } else if rest.starts_with(b"\n") {
                    pos += 1;
                } else if rest.is_empty() || rest == b"\r" {
                    return Ok((pos, payload));
                } else {
                    return Err(FrameError::BadChunkEnd);
                }
                *state = Chunk::Size;
            }
            Chunk::Trailer => {
                let Some((l, used)) = line(rest)? else {
                    return Ok((pos, payload));
                };
                pos += used;
                if l.is_empty() {
                    *state = Chunk::Done;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(mut body: Body, wire: &[u8], step: usize) -> (usize, u64, Body) {
        // Feed the bytes in `step`-sized arrivals, keeping unconsumed bytes like RxBuf does.
        let mut buf: Vec<u8> = Vec::new();
        let mut used_total = 0;
        let mut payload = 0;
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            let (used, p) = body.advance(&buf).unwrap();
            buf.drain(..used);
            used_total += used;
            payload += p;
            if body.is_done() {
                break;
            }
        }
        (used_total, payload, body)
    }

    #[test]
    fn chunked_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (used, payload, body) = walk(Body::Chunked(Chunk::Size), wire, step);
            assert!(body.is_done(), "step {step}");
            assert_eq!(payload, 21);
            assert_eq!(used, wire.len() - 4);
        }
    }

    #[test]
    fn chunked_errors() {
        let mut b = Body::Chunked(Chunk::Size);
        assert_eq!(b.advance(b"zz\r\n"), Err(FrameError::BadChunkSize));
        let mut b = Body::Chunked(Chunk::Size);
        assert_eq!(b.advance(b"2\r\nabX"), Err(FrameError::BadChunkEnd));
        let mut b = Body::Chunked(Chunk::Size);
        assert_eq!(b.advance(&[b'1'; 5000]), Err(FrameError::LineTooLong));
    }

    #[test]
    fn length_and_framing() {
        let (used, payload, body) = walk(Body::Length(10), b"0123456789extra", 3);
        assert_eq!((used, payload), (10, 10));
        assert!(body.is_done());
        let h = [httparse::Header {
            name: "Content-Length",
            value: b" 42 ",
        }];
        assert_eq!(framing(&h, true), Ok(Body::Length(42)));
        let h = [httparse::Header {
            name: "content-length",
            value: b"4x",
        }];
        assert_eq!(framing(&h, true), Err(FrameError::BadContentLength));
        assert_eq!(framing(&[], true), Ok(Body::UntilClose));
        assert_eq!(framing(&[], false), Ok(Body::Empty));
        let h = [
            httparse::Header {
                name: "Transfer-Encoding",
                value: b"gzip, Chunked",
            },
            httparse::Header {
                name: "Connection",
                value: b"keep-alive, close",
            },
        ];
        assert_eq!(framing(&h, true), Ok(Body::Chunked(Chunk::Size)));
        assert!(wants_close(&h));
    }
}
