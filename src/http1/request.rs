//! Request heads (RFC 9112 §3): request line, header fields, and the request-level rules
//! (`Host`, the target form each method allows).

use super::chars::{is_token, REG_NAME};
use super::fields::{parse_fields, HeaderKind};
use super::{finish, simd, Error, Header, Span, Status, Step, Stop, Version};

/// The method, recognised for the ones the proxy treats specially; the exact bytes are always
/// in [`Request::method_span`]. Methods are case-sensitive: `get` is [`Method::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl Method {
    fn of(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// The four request-target forms (RFC 9112 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://authority/path?query` (requests to a proxy)
    Absolute,
    /// `host:port`, CONNECT only
    Authority,
    /// `*`, OPTIONS only
    Asterisk,
}

/// A parsed request head. Byte positions refer to the parsed buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub method_span: Span,
    pub target: Span,
    pub form: TargetForm,
    pub version: Version,
    /// Number of entries filled in the caller's header array.
    pub header_count: usize,
    /// Index of the `Host` field in the header array, if any.
    pub host: Option<u16>,
    /// Bytes from the start of the buffer to the end of the head (leading empty lines included).
    pub head_len: usize,
}

impl Request {
    /// For an absolute-form target, the authority and the path-and-query (`/` when empty);
    /// for the other forms, `None`.
    pub fn absolute_parts(&self, buf: &[u8]) -> Option<(Span, Span)> {
        if self.form != TargetForm::Absolute {
            return None;
        }
        let t = self.target.of(buf);
        let auth_start = t.windows(3).position(|w| w == b"://")? + 3;
        let auth_len = t[auth_start..]
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'));
        let auth_end = auth_start + auth_len.unwrap_or(t.len() - auth_start);
        let base = self.target.start as usize;
        Some((
            Span::new(base + auth_start, base + auth_end),
            Span::new(base + auth_end, base + t.len()),
        ))
    }
}

/// Parses a request head at the start of `buf`, filling `headers` (its length is the limit on
/// the number of fields). Pure and allocation-free; see [`super::HeadReader`] for cheap
/// re-parsing as bytes trickle in.
// One out-of-line copy: callers (HeadReader, benches) call it. Inlined into criterion's loop it
// ran 10–20% slower on the minimal head (cause not isolated), and the proxy gains nothing from
// several copies of a ~1,400-instruction function.
#[inline(never)]
pub fn parse_request(buf: &[u8], headers: &mut [Header]) -> Result<Status<Request>, Error> {
    let buf = &buf[..buf.len().min(u32::MAX as usize)];
    finish(request(buf, headers))
}

#[inline]
fn request(buf: &[u8], headers: &mut [Header]) -> Step<Request> {
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let mut start = 0;
    loop {
        match buf.get(start) {
            Some(b'\r') => match buf.get(start + 1) {
                Some(b'\n') => start += 2,
                Some(_) => return Err(Error::BareCr.into()),
                None => return Err(Stop::Partial),
            },
            Some(b'\n') => return Err(Error::NewLine.into()),
            Some(_) => break,
            None => return Err(Stop::Partial),
        }
    }

    const GET: u32 = u32::from_le_bytes(*b"GET ");
    const POST: u32 = u32::from_le_bytes(*b"POST");
    let word = buf.get(start..).and_then(|b| b.first_chunk::<5>());
    let (method, mut i) = match word.map(|w| (u32::from_le_bytes([w[0], w[1], w[2], w[3]]), w[4])) {
        Some((GET, _)) => (Method::Get, start + 3),
        Some((POST, b' ')) => (Method::Post, start + 4),
        _ => {
            let len = buf[start..]
                .iter()
                .position(|&b| !is_token(b))
                .ok_or(Stop::Partial)?;
            let i = start + len;
            if i == start || buf[i] != b' ' {
                return Err(Error::Method.into());
            }
            (Method::of(&buf[start..i]), i)
        }
    };
    let method_span = Span::new(start, i);

    i += 1;
    let t_start = i;
    let t_end = simd::scan_target(buf, i);
    match buf.get(t_end) {
        None => return Err(Stop::Partial),
        Some(b' ') if t_end > t_start => {}
        Some(b' ') => return Err(Error::Separator.into()),
        // `GET /\r\n` is HTTP/0.9, which is not spoken.
        Some(b'\r' | b'\n') if t_end > t_start => return Err(Error::Version.into()),
        Some(_) => return Err(Error::Target.into()),
    }
    let target = Span::new(t_start, t_end);

    i = t_end + 1;
    let version = version(buf, i)?;
    i += 8;
    match buf.get(i) {
        Some(b'\r') => match buf.get(i + 1) {
            Some(b'\n') => {}
            Some(_) => return Err(Error::BareCr.into()),
            None => return Err(Stop::Partial),
        },
        Some(b'\n') => return Err(Error::NewLine.into()),
        Some(b' ') => return Err(Error::Separator.into()),
        Some(_) => return Err(Error::Version.into()),
        None => return Err(Stop::Partial),
    }
    i += 2;

    // RFC 9112 §3.2: exactly one `Host` on HTTP/1.1, at most one on HTTP/1.0, a valid
    // authority. Checked as each field is parsed, while its bytes are in cache.
    let mut host = None;
    let (header_count, head_len) = parse_fields(
        buf,
        i,
        headers,
        #[inline(always)]
        |h, n| {
            if h.kind == HeaderKind::Host {
                if host.is_some() {
                    return Err(Error::DuplicateHost.into());
                }
                host = Some(n as u16);
                check_host(buf, h.value)?;
            }
            Ok(())
        },
    )?;
    if host.is_none() && version == Version::Http11 {
        return Err(Error::MissingHost.into());
    }
    let form = match target.of(buf) {
        [b'/', ..] if method != Method::Connect => TargetForm::Origin,
        t => target_form(method, t)?,
    };
    Ok(Request {
        method,
        method_span,
        target,
        form,
        version,
        header_count,
        host,
        head_len,
    })
}

/// Reads `HTTP/1.0` or `HTTP/1.1` at `i`; a prefix of either is partial.
#[inline(always)]
pub(crate) fn version(buf: &[u8], i: usize) -> Step<Version> {
    const V11: u64 = u64::from_le_bytes(*b"HTTP/1.1");
    const V10: u64 = u64::from_le_bytes(*b"HTTP/1.0");
    if let Some(&have) = buf.get(i..).and_then(|b| b.first_chunk::<8>()) {
        return match u64::from_le_bytes(have) {
            V11 => Ok(Version::Http11),
            V10 => Ok(Version::Http10),
            _ => Err(Error::Version.into()),
        };
    }
    let have = &buf[i.min(buf.len())..];
    if b"HTTP/1."[..have.len().min(7)] == have[..have.len().min(7)] {
        Err(Stop::Partial)
    } else {
        Err(Error::Version.into())
    }
}

#[inline(never)]
fn target_form(method: Method, t: &[u8]) -> Step<TargetForm> {
    let form = match t {
        [b'/', ..] => TargetForm::Origin,
        b"*" => TargetForm::Asterisk,
        _ if method == Method::Connect => TargetForm::Authority,
        _ => TargetForm::Absolute,
    };
    let ok = match form {
        TargetForm::Origin => method != Method::Connect,
        TargetForm::Asterisk => method == Method::Options,
        TargetForm::Authority => is_authority(t, true),
        TargetForm::Absolute => is_absolute(t),
    };
    if ok {
        Ok(form)
    } else {
        Err(Error::Target.into())
    }
}

/// `scheme "://" authority [path-abempty] ...`, with a non-empty authority.
fn is_absolute(t: &[u8]) -> bool {
    let Some(colon) = t.iter().position(|&b| b == b':') else {
        return false;
    };
    let scheme = &t[..colon];
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let rest = &t[colon..];
    if !scheme_ok || !rest.starts_with(b"://") {
        return false;
    }
    let rest = &rest[3..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    // userinfo is deprecated in http(s) URIs and a classic source of confusion: refuse it.
    !authority.contains(&b'@') && is_authority(authority, false)
}

/// `uri-host [":" port]`: a reg-name or an IP literal, and a port of digits.
/// With `need_port`, the port is required (CONNECT's authority-form).
pub(crate) fn is_authority(a: &[u8], need_port: bool) -> bool {
    let (host, port) = if let Some(rest) = a.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let lit = &rest[..close];
        if lit.is_empty()
            || !lit
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        let after = &rest[close + 1..];
        match after {
            [] => (&a[..0], None),
            [b':', port @ ..] => (&a[..0], Some(port)),
            _ => return false,
        }
    } else {
        match a.iter().rposition(|&b| b == b':') {
            Some(c) => (&a[..c], Some(&a[c + 1..])),
            None => (a, None),
        }
    };
    let host_ok = host.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'_' | b'~' | b'%' | b'!' | b'$' | b'&' | b'\''
            )
            || matches!(b, b'(' | b')' | b'*' | b'+' | b';' | b'=')
    });
    let port_ok = match port {
        None => !need_port,
        Some(p) => !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit),
    };
    host_ok && port_ok && !(need_port && host.is_empty() && !a.starts_with(b"["))
}

/// A `Host` value: names made of letters, digits, `-`, `.` and `_` pass one vector test;
/// anything else (a port, other reg-name bytes, an IP literal) takes the general path. A `,`
/// means several values were folded into one field.
#[inline(always)]
fn check_host(buf: &[u8], value: Span) -> Step<()> {
    let (start, end) = (value.start as usize, value.end as usize);
    // The value ends before SP, HTAB or CR, none of them word bytes: the scan stops at `end`.
    let p = simd::scan_word(buf, start);
    if p >= end {
        return Ok(());
    }
    host_slow(&buf[start..end], p - start)
}

/// The rest of [`check_host`] for a value `v` whose first `p` bytes are word bytes.
#[cold]
fn host_slow(v: &[u8], p: usize) -> Step<()> {
    let p = v[p..]
        .iter()
        .position(|&b| !REG_NAME[b as usize])
        .map_or(v.len(), |q| p + q);
    let ok = match v.get(p) {
        None => true,
        Some(b':') => {
            let port = &v[p + 1..];
            !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
        }
        Some(b',') => return Err(Error::DuplicateHost.into()),
        Some(b'[') if p == 0 => is_authority(v, false),
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidHost.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = (Request, Vec<(String, String)>);

    fn parse(input: &[u8]) -> Result<Status<Parsed>, Error> {
        let mut hs = [Header::default(); 16];
        Ok(match parse_request(input, &mut hs)? {
            Status::Partial => Status::Partial,
            Status::Complete(r) => {
                let list = hs[..r.header_count]
                    .iter()
                    .map(|h| {
                        let s = |sp: Span| String::from_utf8_lossy(sp.of(input)).into_owned();
                        (s(h.name), s(h.value))
                    })
                    .collect();
                Status::Complete((r, list))
            }
        })
    }

    fn ok(input: &[u8]) -> Parsed {
        match parse(input) {
            Ok(Status::Complete(r)) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn err(input: &[u8]) -> Error {
        match parse(input) {
            Err(e) => e,
            other => panic!(
                "{:?}: expected an error, got {other:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    #[test]
    fn minimal_get() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (r, hs) = ok(input);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target.of(input), b"/");
        assert_eq!(r.form, TargetForm::Origin);
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.head_len, input.len());
        assert_eq!(r.host, Some(0));
        assert_eq!(hs, vec![("Host".into(), "a".into())]);
    }

    #[test]
    fn bytes_after_the_head_are_not_part_of_it() {
        let input = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET";
        assert_eq!(ok(input).0.head_len, input.len() - 6);
    }

    #[test]
    fn target_forms() {
        let (r, _) = ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.form, TargetForm::Asterisk);
        let input = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        assert_eq!(ok(input).0.form, TargetForm::Authority);
        let input = b"GET http://example.com:8080/p?q HTTP/1.1\r\nHost: x\r\n\r\n";
        let (r, _) = ok(input);
        assert_eq!(r.form, TargetForm::Absolute);
        let (auth, path) = r.absolute_parts(input).unwrap();
        assert_eq!(
            (auth.of(input), path.of(input)),
            (&b"example.com:8080"[..], &b"/p?q"[..])
        );
        let input = b"GET https://[::1] HTTP/1.1\r\nHost: x\r\n\r\n";
        let (r, _) = ok(input);
        let (auth, path) = r.absolute_parts(input).unwrap();
        assert_eq!((auth.of(input), path.of(input)), (&b"[::1]"[..], &b""[..]));

        assert_eq!(err(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Target);
        assert_eq!(err(b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Target);
        assert_eq!(
            err(b"CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n"),
            Error::Target
        );
        assert_eq!(
            err(b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Error::Target
        );
        assert_eq!(
            err(b"GET http://u@h/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Error::Target
        );
        assert_eq!(
            err(b"GET http:/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Error::Target
        );
        assert_eq!(err(b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Target);
        assert_eq!(
            err(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Error::Target
        );
        assert_eq!(
            err(b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n"),
            Error::Target
        );
        assert_eq!(err(b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Target);
    }

    #[test]
    fn versions() {
        let (r, _) = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!((r.version, r.host), (Version::Http10, None));
        assert_eq!(err(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Error::Version);
        assert_eq!(err(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"), Error::Version);
        assert_eq!(err(b"GET / http/1.1\r\nHost: a\r\n\r\n"), Error::Version);
        assert_eq!(err(b"GET / HTTP/1.10\r\nHost: a\r\n\r\n"), Error::Version);
        assert_eq!(err(b"GET /\r\n\r\n"), Error::Version);
        assert_eq!(err(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), Error::Separator);
        assert_eq!(err(b"GET / HTTX"), Error::Version);
        assert_eq!(parse(b"GET / HTTP/1"), Ok(Status::Partial));
    }

    #[test]
    fn request_line_strictness() {
        assert_eq!(err(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Separator);
        assert_eq!(err(b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Method);
        assert_eq!(err(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Method);
        assert_eq!(err(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Method);
        assert_eq!(err(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), Error::NewLine);
        assert_eq!(err(b"GET / HTTP/1.1\rHost: a\r\n\r\n"), Error::BareCr);
        assert_eq!(err(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), Error::NewLine);
        // Methods are case-sensitive tokens: unknown ones pass through as Other.
        assert_eq!(
            ok(b"get / HTTP/1.1\r\nHost: a\r\n\r\n").0.method,
            Method::Other
        );
        assert_eq!(
            ok(b"PURGE / HTTP/1.1\r\nHost: a\r\n\r\n").0.method,
            Method::Other
        );
    }

    #[test]
    fn leading_empty_lines_are_ignored() {
        let input = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (r, _) = ok(input);
        assert_eq!(r.method_span.of(input), b"GET");
        assert_eq!(r.head_len, input.len());
        assert_eq!(parse(b"\r\n\r"), Ok(Status::Partial));
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), Error::MissingHost);
        // Checked as soon as the `Host` line is complete, before the head is.
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\nX-More: "),
            Error::DuplicateHost
        );
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a/b\r\n"), Error::InvalidHost);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a/b"), Ok(Status::Partial));
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            Error::DuplicateHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            Error::DuplicateHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"),
            Error::DuplicateHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            Error::InvalidHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            Error::InvalidHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a:x\r\n\r\n"),
            Error::InvalidHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
            Error::InvalidHost
        );
        for bad in [
            &b"exa\xe9mple.com"[..],
            b"a.b.c.d.e.f.g.h@x",
            b"host/x",
            b"ab\"cd",
            b"a:",
        ] {
            let mut input = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            input.extend_from_slice(bad);
            input.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                err(&input),
                Error::InvalidHost,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for ok_host in [
            &b"a:80"[..],
            b"[::1]:8080",
            b"",
            b"xn--bcher-kva.example",
            b"10.0.0.1",
            b"EXAMPLE.com",
            b"very-long-sub.domain.example.co.uk:65535",
            b"a_b.example",
        ] {
            let mut input = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            input.extend_from_slice(ok_host);
            input.extend_from_slice(b"\r\n\r\n");
            ok(&input);
        }
    }

    #[test]
    fn header_rules_apply_in_requests() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n"),
            Error::ObsFold
        );
        assert_eq!(err(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"), Error::ObsFold);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            Error::WhitespaceBeforeColon
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n"),
            Error::HeaderValue
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
            Error::BareCr
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\n\r\n"),
            Error::NewLine
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX\"Y: a\r\n\r\n"),
            Error::HeaderName
        );
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for _ in 0..16 {
            many.extend_from_slice(b"X: y\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(err(&many), Error::TooManyHeaders);
        assert_eq!(Error::TooManyHeaders.status(), 431);
    }

    #[test]
    fn every_prefix_of_a_valid_head_is_partial() {
        let input =
            b"\r\nPOST /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nX-Long: \
                      0123456789abcdef0123456789abcdef\r\n\r\n";
        for n in 0..input.len() {
            assert_eq!(parse(&input[..n]), Ok(Status::Partial), "prefix {n}");
        }
        assert_eq!(ok(input).0.head_len, input.len());
    }
}
