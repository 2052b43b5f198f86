//! Response heads (RFC 9112 §4): status line and header fields.

use super::fields::parse_fields;
use super::request::version;
use super::{chars::REASON, finish, Error, Header, Span, Status, Step, Stop, Version};

/// A parsed response head. Byte positions refer to the parsed buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    pub version: Version,
    pub code: u16,
    pub reason: Span,
    pub header_count: usize,
    pub head_len: usize,
}

/// Parses a response head at the start of `buf`, filling `headers`.
///
/// The status code must be three digits in 100..=599. The reason phrase may be empty, and the
/// space before an empty reason phrase may be missing (`HTTP/1.1 200\r\n`, sent by enough
/// servers to matter, is unambiguous).
pub fn parse_response(buf: &[u8], headers: &mut [Header]) -> Result<Status<Response>, Error> {
    let buf = &buf[..buf.len().min(u32::MAX as usize)];
    finish(response(buf, headers))
}

#[inline]
fn response(buf: &[u8], headers: &mut [Header]) -> Step<Response> {
    let version = version(buf, 0)?;
    match buf.get(8) {
        Some(b' ') => {}
        Some(_) => return Err(Error::Separator.into()),
        None => return Err(Stop::Partial),
    }
    let mut code = 0u16;
    for i in 9..12 {
        match *buf.get(i).ok_or(Stop::Partial)? {
            d @ b'0'..=b'9' => code = code * 10 + (d - b'0') as u16,
            _ => return Err(Error::Status.into()),
        }
    }
    if !(100..=599).contains(&code) {
        return Err(Error::Status.into());
    }
    let mut i = 12;
    let reason_start = match *buf.get(i).ok_or(Stop::Partial)? {
        b' ' => {
            i += 1;
            i
        }
        b'\r' | b'\n' => i,
        _ => return Err(Error::Status.into()),
    };
    while let Some(&b) = buf.get(i) {
        if !REASON[b as usize] {
            break;
        }
        i += 1;
    }
    match buf.get(i) {
        None => return Err(Stop::Partial),
        Some(b'\r') => match buf.get(i + 1) {
            None => return Err(Stop::Partial),
            Some(b'\n') => {}
            Some(_) => return Err(Error::BareCr.into()),
        },
        Some(b'\n') => return Err(Error::NewLine.into()),
        Some(_) => return Err(Error::Status.into()),
    }
    let reason = Span::new(reason_start, i);
    let (header_count, head_len) = parse_fields(buf, i + 2, headers, |_, _| Ok(()))?;
    Ok(Response {
        version,
        code,
        reason,
        header_count,
        head_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Status<Response>, Error> {
        parse_response(input, &mut [Header::default(); 8])
    }

    #[test]
    fn status_lines() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        let r = parse(input).unwrap().complete().unwrap();
        assert_eq!(
            (r.version, r.code, r.reason.of(input)),
            (Version::Http11, 200, &b"OK"[..])
        );
        assert_eq!((r.header_count, r.head_len), (1, input.len() - 2));
        let input = b"HTTP/1.0 404 Not \tFound \xe9\r\n\r\n";
        let r = parse(input).unwrap().complete().unwrap();
        assert_eq!(
            (r.version, r.code, r.reason.of(input)),
            (Version::Http10, 404, &b"Not \tFound \xe9"[..])
        );
        let input = b"HTTP/1.1 204 \r\n\r\n";
        assert_eq!(
            parse(input).unwrap().complete().unwrap().reason.of(input),
            b""
        );
        let input = b"HTTP/1.1 204\r\n\r\n";
        assert_eq!(parse(input).unwrap().complete().unwrap().code, 204);
    }

    #[test]
    fn bad_status_lines() {
        assert_eq!(parse(b"HTTP/1.1 20 OK\r\n\r\n"), Err(Error::Status));
        assert_eq!(parse(b"HTTP/1.1 2000 OK\r\n\r\n"), Err(Error::Status));
        assert_eq!(parse(b"HTTP/1.1 099 X\r\n\r\n"), Err(Error::Status));
        assert_eq!(parse(b"HTTP/1.1 600 X\r\n\r\n"), Err(Error::Status));
        assert_eq!(parse(b"HTTP/1.1 -20 X\r\n\r\n"), Err(Error::Status));
        assert_eq!(parse(b"HTTP/1.1 200 O\x00K\r\n\r\n"), Err(Error::Status));
        assert_eq!(parse(b"HTTP/1.1  200 OK\r\n\r\n"), Err(Error::Status));
        assert_eq!(parse(b"HTTP/1.1\t200 OK\r\n\r\n"), Err(Error::Separator));
        assert_eq!(parse(b"HTTP/1.1 200 OK\n\r\n"), Err(Error::NewLine));
        assert_eq!(parse(b"HTTP/1.1 200 OK\rX\r\n"), Err(Error::BareCr));
        assert_eq!(parse(b"HTTP/2 200 OK\r\n\r\n"), Err(Error::Version));
        assert_eq!(parse(b"ICY 200 OK\r\n\r\n"), Err(Error::Version));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n"),
            Err(Error::WhitespaceBeforeColon)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n"),
            Err(Error::ObsFold)
        );
    }

    #[test]
    fn prefixes_are_partial() {
        let input = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n";
        for n in 0..input.len() {
            assert_eq!(parse(&input[..n]), Ok(Status::Partial), "prefix {n}");
        }
    }
}
