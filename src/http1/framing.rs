//! Message body framing (RFC 9112 §6): from a parsed head, how the body is delimited. This is
//! where request smuggling is stopped: every ambiguous combination is an error.

use super::chars::{is_token_str, trim_ows};
use super::fields::{tokens, HeaderKind};
use super::{Error, Header, Method, Request, Response, Version};

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (requests without `Content-Length`/`Transfer-Encoding`; HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection (responses only).
    UntilClose,
}

/// The framing of a request body (RFC 9112 §6.3, rules 3–6 for requests).
pub fn request_framing(req: &Request, headers: &[Header], buf: &[u8]) -> Result<Framing, Error> {
    let headers = &headers[..req.header_count.min(headers.len())];
    match transfer_encoding(headers, buf, req.version)? {
        Some(te) => {
            if content_length(headers, buf)?.is_some() {
                return Err(Error::ContentLengthWithTransferEncoding);
            }
            if !te.last_is_chunked {
                return Err(Error::TransferEncoding);
            }
            if te.other_codings {
                return Err(Error::UnsupportedTransferCoding);
            }
            Ok(Framing::Chunked)
        }
        None => Ok(content_length(headers, buf)?.map_or(Framing::None, Framing::Length)),
    }
}

/// The framing of a response body to a request with `method` (RFC 9112 §6.3 rules 1–7).
pub fn response_framing(
    resp: &Response,
    headers: &[Header],
    buf: &[u8],
    method: Method,
) -> Result<Framing, Error> {
    let headers = &headers[..resp.header_count.min(headers.len())];
    let code = resp.code;
    if method == Method::Head || (100..200).contains(&code) || code == 204 || code == 304 {
        return Ok(Framing::None);
    }
    if method == Method::Connect && (200..300).contains(&code) {
        return Ok(Framing::UntilClose);
    }
    match transfer_encoding(headers, buf, resp.version)? {
        Some(te) => {
            if content_length(headers, buf)?.is_some() {
                return Err(Error::ContentLengthWithTransferEncoding);
            }
            Ok(if te.last_is_chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            })
        }
        None => Ok(content_length(headers, buf)?.map_or(Framing::UntilClose, Framing::Length)),
    }
}

struct TransferCodings {
    last_is_chunked: bool,
    other_codings: bool,
}

/// Reads every `Transfer-Encoding` field as one list. `chunked` may appear only once, last.
fn transfer_encoding(
    headers: &[Header],
    buf: &[u8],
    version: Version,
) -> Result<Option<TransferCodings>, Error> {
    let mut seen = false;
    let mut codings = TransferCodings {
        last_is_chunked: false,
        other_codings: false,
    };
    for h in headers
        .iter()
        .filter(|h| h.kind == HeaderKind::TransferEncoding)
    {
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
        if version == Version::Http10 {
            return Err(Error::TransferEncoding);
        }
        let value = h.value.of(buf);
        if tokens(value).next().is_none() {
            return Err(Error::TransferEncoding);
        }
        // An empty list element is allowed by §5.6.1, but not a coding that is only spaces
        // around parameters; each element must be a token, optionally with parameters.
        for element in value.split(|&b| b == b',') {
            let element = trim_ows(element);
            if element.is_empty() {
                continue;
            }
            if codings.last_is_chunked {
                // Something after `chunked`: chunked applied twice or not last.
                return Err(Error::TransferEncoding);
            }
            let name = trim_ows(element.split(|&b| b == b';').next().unwrap_or_default());
            if !is_token_str(name) {
                return Err(Error::TransferEncoding);
            }
            if name.eq_ignore_ascii_case(b"chunked") {
                if name.len() != element.len() {
                    return Err(Error::TransferEncoding); // chunked takes no parameters
                }
                codings.last_is_chunked = true;
            } else {
                codings.other_codings = true;
            }
        }
        seen = true;
    }
    Ok(seen.then_some(codings))
}

/// Reads every `Content-Length` field: digits only, no sign, no overflow; several values
/// (repeated fields or a list) are accepted only when identical.
fn content_length(headers: &[Header], buf: &[u8]) -> Result<Option<u64>, Error> {
    let mut found: Option<u64> = None;
    for h in headers
        .iter()
        .filter(|h| h.kind == HeaderKind::ContentLength)
    {
        for element in h.value.of(buf).split(|&b| b == b',') {
            let n = parse_length(trim_ows(element)).ok_or(Error::ContentLength)?;
            match found {
                Some(prev) if prev != n => return Err(Error::ConflictingContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Decimal digits into a `u64`; `None` when empty, not all digits, or too large.
pub(crate) fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add((b - b'0') as u64)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{parse_request, parse_response};

    fn framing_after(start: &str, head: &str) -> Result<Framing, Error> {
        let input = format!("{start}\r\n{head}\r\n");
        let mut hs = [Header::default(); 8];
        let r = parse_request(input.as_bytes(), &mut hs)
            .unwrap()
            .complete()
            .unwrap();
        request_framing(&r, &hs, input.as_bytes())
    }

    fn req(head: &str) -> Result<Framing, Error> {
        framing_after("POST / HTTP/1.1\r\nHost: a", head)
    }

    fn req10(head: &str) -> Result<Framing, Error> {
        framing_after("POST / HTTP/1.0", head)
    }

    fn resp(line: &str, head: &str, method: Method) -> Result<Framing, Error> {
        let input = format!("{line}\r\n{head}\r\n");
        let mut hs = [Header::default(); 8];
        let r = parse_response(input.as_bytes(), &mut hs)
            .unwrap()
            .complete()
            .unwrap();
        response_framing(&r, &hs, input.as_bytes(), method)
    }

    #[test]
    fn request_bodies() {
        assert_eq!(req(""), Ok(Framing::None));
        assert_eq!(req("Content-Length: 0\r\n"), Ok(Framing::Length(0)));
        assert_eq!(req("Content-Length: 0042\r\n"), Ok(Framing::Length(42)));
        assert_eq!(
            req("Content-Length: 18446744073709551615\r\n"),
            Ok(Framing::Length(u64::MAX))
        );
        assert_eq!(
            req("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(req("Content-Length: 5, 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(req("Transfer-Encoding: chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(req("Transfer-Encoding: CHUNKED\r\n"), Ok(Framing::Chunked));
        assert_eq!(
            req("Transfer-Encoding: ,chunked,\r\n"),
            Ok(Framing::Chunked)
        );
    }

    #[test]
    fn content_length_rules() {
        use Error::*;
        for bad in [
            "+5",
            "-5",
            "5a",
            "0x5",
            "5 5",
            "",
            "18446744073709551616",
            "5,",
            " ,5",
            "1e3",
        ] {
            assert_eq!(
                req(&format!("Content-Length: {bad}\r\n")),
                Err(ContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            req("Content-Length: 5\r\nContent-Length: 6\r\n"),
            Err(ConflictingContentLength)
        );
        assert_eq!(
            req("Content-Length: 5, 6\r\n"),
            Err(ConflictingContentLength)
        );
    }

    #[test]
    fn transfer_encoding_rules() {
        use Error::*;
        let cl_te = "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n";
        assert_eq!(req(cl_te), Err(ContentLengthWithTransferEncoding));
        let te_cl = "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n";
        assert_eq!(req(te_cl), Err(ContentLengthWithTransferEncoding));
        assert_eq!(req("Transfer-Encoding: gzip\r\n"), Err(TransferEncoding));
        assert_eq!(
            req("Transfer-Encoding: chunked, gzip\r\n"),
            Err(TransferEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: chunked, chunked\r\n"),
            Err(TransferEncoding)
        );
        let twice = "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n";
        assert_eq!(req(twice), Err(TransferEncoding));
        assert_eq!(
            req("Transfer-Encoding: chunked;q=1\r\n"),
            Err(TransferEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: \"chunked\"\r\n"),
            Err(TransferEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: chun ked\r\n"),
            Err(TransferEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: xchunked\r\n"),
            Err(TransferEncoding)
        );
        assert_eq!(req("Transfer-Encoding:\r\n"), Err(TransferEncoding));
        assert_eq!(req("Transfer-Encoding: ,\r\n"), Err(TransferEncoding));
        assert_eq!(
            req("Transfer-Encoding: identity\r\n"),
            Err(TransferEncoding)
        );
        assert_eq!(
            req("Transfer-Encoding: gzip, chunked\r\n"),
            Err(UnsupportedTransferCoding)
        );
        assert_eq!(UnsupportedTransferCoding.status(), 501);
        assert_eq!(
            req10("Transfer-Encoding: chunked\r\n"),
            Err(TransferEncoding)
        );
        assert_eq!(req10("Content-Length: 3\r\n"), Ok(Framing::Length(3)));
    }

    #[test]
    fn response_bodies() {
        use Framing::*;
        let ok = "HTTP/1.1 200 OK";
        assert_eq!(
            resp(ok, "Content-Length: 7\r\n", Method::Get),
            Ok(Length(7))
        );
        assert_eq!(resp(ok, "Content-Length: 7\r\n", Method::Head), Ok(None));
        assert_eq!(
            resp(ok, "Transfer-Encoding: chunked\r\n", Method::Get),
            Ok(Chunked)
        );
        assert_eq!(
            resp(ok, "Transfer-Encoding: gzip, chunked\r\n", Method::Get),
            Ok(Chunked)
        );
        assert_eq!(
            resp(ok, "Transfer-Encoding: gzip\r\n", Method::Get),
            Ok(UntilClose)
        );
        assert_eq!(resp(ok, "", Method::Get), Ok(UntilClose));
        assert_eq!(
            resp(
                "HTTP/1.1 204 No Content",
                "Content-Length: 9\r\n",
                Method::Get
            ),
            Ok(None)
        );
        assert_eq!(
            resp(
                "HTTP/1.1 304 Not Modified",
                "Content-Length: 9\r\n",
                Method::Get
            ),
            Ok(None)
        );
        assert_eq!(resp("HTTP/1.1 100 Continue", "", Method::Post), Ok(None));
        assert_eq!(resp("HTTP/1.1 101 Switching", "", Method::Get), Ok(None));
        assert_eq!(resp(ok, "", Method::Connect), Ok(UntilClose));
        let both = "Content-Length: 7\r\nTransfer-Encoding: chunked\r\n";
        assert_eq!(
            resp(ok, both, Method::Get),
            Err(Error::ContentLengthWithTransferEncoding)
        );
        let te10 = resp(
            "HTTP/1.0 200 OK",
            "Transfer-Encoding: chunked\r\n",
            Method::Get,
        );
        assert_eq!(te10, Err(Error::TransferEncoding));
        assert_eq!(
            resp(ok, "Content-Length: 1, 2\r\n", Method::Get),
            Err(Error::ConflictingContentLength)
        );
    }
}
