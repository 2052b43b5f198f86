//! A blocking HTTP/1.1 test client that keeps unread bytes between responses (pipelining) and
//! reads every body framing: Content-Length, chunked, close-delimited, none (HEAD, 1xx, 204,
//! 304). Reads are bounded by the socket's read timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    /// "HTTP/1.1" or "HTTP/1.0".
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// The body came chunked.
    pub chunked: bool,
}

impl Resp {
    pub fn all(&self, name: &str) -> Vec<&str> {
        super::field_values(&self.headers, name)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The response says the connection closes.
    pub fn closes(&self) -> bool {
        self.all("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("close"))
    }
}

pub struct Client {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.s.write_all(bytes.as_ref()).unwrap();
    }

    /// Writes and ignores failures (the proxy may already have closed).
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        self.s.write_all(bytes.as_ref()).is_ok()
    }

    /// Reads more; false on EOF or reset. Panics on a read timeout.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("client read failed: {e}"),
        }
    }

    /// The next response head (an interim one included), or None if the connection closed
    /// first.
    pub fn try_head(&mut self) -> Option<Resp> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 512];
            let mut r = httparse::Response::new(&mut fields);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let resp = Resp {
                        status: r.code.unwrap(),
                        version: format!("HTTP/1.{}", r.version.unwrap()),
                        headers: r
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_string(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        body: Vec::new(),
                        chunked: false,
                    };
                    self.buf.drain(..len);
                    return Some(resp);
                }
                Ok(httparse::Status::Partial) => {
                    if !self.fill() {
                        assert!(
                            self.buf.is_empty(),
                            "closed inside a response head: {:?}",
                            String::from_utf8_lossy(&self.buf)
                        );
                        return None;
                    }
                }
                Err(e) => panic!(
                    "invalid response head ({e}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    pub fn head(&mut self) -> Resp {
        self.try_head()
            .expect("connection closed before a response")
    }

    /// The next final response to a request with `method`, interim responses skipped.
    pub fn response_to(&mut self, method: &str) -> Resp {
        self.try_response_to(method)
            .expect("connection closed before a response")
    }

    /// A response to a GET-like request.
    pub fn response(&mut self) -> Resp {
        self.response_to("GET")
    }

    /// Like `response_to`, but None when the connection closed before a response head. A body
    /// cut short panics.
    pub fn try_response_to(&mut self, method: &str) -> Option<Resp> {
        let mut resp = loop {
            let r = self.try_head()?;
            if r.status >= 200 || r.status == 101 {
                break r;
            }
        };
        let (body, chunked) = self.read_body(&resp, method).expect("body cut short");
        resp.body = body;
        resp.chunked = chunked;
        Some(resp)
    }

    /// Reads the body of `resp`; Err(partial body) if the connection closed inside it.
    pub fn read_body(&mut self, resp: &Resp, method: &str) -> Result<(Vec<u8>, bool), Vec<u8>> {
        if method == "HEAD" || resp.status < 200 || resp.status == 204 || resp.status == 304 {
            return Ok((Vec::new(), false));
        }
        let te = resp
            .all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        if te {
            return self.chunked_body().map(|b| (b, true));
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("unparsable Content-Length {len:?}"));
            while self.buf.len() < len {
                if !self.fill() {
                    return Err(std::mem::take(&mut self.buf));
                }
            }
            return Ok((self.buf.drain(..len).collect(), false));
        }
        while self.fill() {}
        Ok((std::mem::take(&mut self.buf), false))
    }

    /// The index of the first CRLF in the buffer, reading more as needed; `None` at EOF.
    fn line_end(&mut self) -> Option<usize> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Some(i);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn chunked_body(&mut self) -> Result<Vec<u8>, Vec<u8>> {
        let mut data = Vec::new();
        loop {
            let Some(eol) = self.line_end() else {
                return Err(data);
            };
            let line = String::from_utf8_lossy(&self.buf[..eol]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            self.buf.drain(..eol + 2);
            if size == 0 {
                loop {
                    let Some(eol) = self.line_end() else {
                        return Err(data);
                    };
                    self.buf.drain(..eol + 2);
                    if eol == 0 {
                        return Ok(data);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill() {
                    data.extend_from_slice(&self.buf);
                    return Err(data);
                }
            }
            data.extend_from_slice(&self.buf[..size]);
            assert_eq!(&self.buf[size..size + 2], b"\r\n", "chunk without CRLF");
            self.buf.drain(..size + 2);
        }
    }

    /// True when the peer closes (EOF or reset) with no further bytes, within the read timeout.
    pub fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut b = [0u8; 256];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                false
            }
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Bytes received and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

/// A GET head with `Host: host` and the extra header lines `extra` (each ending in CRLF).
pub fn get_req(host: &str, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")
}

/// A chunked encoding of `body`, chunk sizes cycling through `sizes`.
pub fn chunk(body: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let mut c = format!("{n:x}\r\n").into_bytes();
        c.extend_from_slice(&rest[..n]);
        c.extend_from_slice(b"\r\n");
        out.push(c);
        rest = &rest[n..];
    }
    out.push(b"0\r\n\r\n".to_vec());
    out
}
