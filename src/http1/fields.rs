//! Field lines (RFC 9112 §5): the shared parser for request, response and trailer sections,
//! the classification of the few fields the proxy reads, and lookup helpers over the parsed
//! array (`Connection` token lists among them).

use super::chars::{is_token, trim_ows};
use super::{simd, Error, Header, Span, Step, Stop};

/// The fields a proxy reads or rewrites, recognised once while parsing so that lookups and
/// hop-by-hop removal compare one byte instead of a name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum HeaderKind {
    #[default]
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    Forwarded,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
}

impl HeaderKind {
    /// Classifies a field name (case-insensitive). The name is a token (the parser checked),
    /// so OR-ing 0x20 into each byte lowercases its letters and maps no other token byte onto
    /// a lowercase letter, digit or `-`: comparing 8-byte words of the lowered name against
    /// the lowercase constants is an exact case-insensitive match.
    #[inline(always)]
    pub fn of(name: &[u8]) -> HeaderKind {
        macro_rules! is {
            ($w:expr, $s:literal, $at:literal) => {{
                const C: u64 = lit($s, $at);
                $w == C
            }};
        }
        match name.len() {
            2 if is!(word(name, 0), b"te", 0) => HeaderKind::Te,
            4 if is!(word(name, 0), b"host", 0) => HeaderKind::Host,
            6 if is!(word(name, 0), b"expect", 0) => HeaderKind::Expect,
            7 if is!(word(name, 0), b"upgrade", 0) => HeaderKind::Upgrade,
            7 if is!(word(name, 0), b"trailer", 0) => HeaderKind::Trailer,
            9..=17 => {
                // The first lowered word rejects almost every other name in one compare; the
                // rest is checked only for a candidate.
                let first = word(name, 0);
                let tail = |s: &[u8]| name[8..].eq_ignore_ascii_case(&s[8..]);
                macro_rules! is {
                    ($s:literal) => {{
                        const C: u64 = lit($s, 0);
                        first == C && tail($s)
                    }};
                }
                match name.len() {
                    9 if is!(b"forwarded") => HeaderKind::Forwarded,
                    10 if is!(b"connection") => HeaderKind::Connection,
                    10 if is!(b"keep-alive") => HeaderKind::KeepAlive,
                    14 if is!(b"content-length") => HeaderKind::ContentLength,
                    15 if is!(b"x-forwarded-for") => HeaderKind::XForwardedFor,
                    16 if is!(b"proxy-connection") => HeaderKind::ProxyConnection,
                    16 if is!(b"x-forwarded-host") => HeaderKind::XForwardedHost,
                    17 if is!(b"transfer-encoding") => HeaderKind::TransferEncoding,
                    17 if is!(b"x-forwarded-proto") => HeaderKind::XForwardedProto,
                    _ => HeaderKind::Other,
                }
            }
            _ => HeaderKind::Other,
        }
    }

    /// Hop-by-hop fields a proxy never forwards as received (RFC 9110 §7.6.1). Framing
    /// (`Transfer-Encoding`) is decided separately by the proxy. `Trailer` is not one: it
    /// announces trailer fields, which travel end to end with a chunked body (RFC 9110 §6.6.2).
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            HeaderKind::Connection
                | HeaderKind::KeepAlive
                | HeaderKind::ProxyConnection
                | HeaderKind::Te
                | HeaderKind::Upgrade
        )
    }
}

const LOWER: u64 = u64::from_ne_bytes([0x20; 8]);

/// Up to 8 bytes of a name from `at`, zero-padded past its end, every byte OR 0x20.
#[inline(always)]
fn word(s: &[u8], at: usize) -> u64 {
    let rest = s.get(at..).unwrap_or_default();
    let w = match rest.first_chunk::<8>() {
        Some(w) => *w,
        None => {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            w
        }
    };
    u64::from_le_bytes(w) | LOWER
}

/// [`word`] of a lowercase constant, evaluated at compile time.
const fn lit(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    let mut i = 0;
    while i < 8 && at + i < s.len() {
        w[i] = s[at + i];
        i += 1;
    }
    u64::from_le_bytes(w) | LOWER
}

/// One step of a field section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A field line; the next line starts at the index.
    Field(Header, usize),
    /// The empty line: the section ends here (after its CRLF).
    End(usize),
}

/// Parses the field line (or the empty line ending the section) at `pos`.
#[inline(always)]
pub(crate) fn parse_line(buf: &[u8], pos: usize) -> Step<Line> {
    let first = *buf.get(pos).ok_or(Stop::Partial)?;
    // CR (the empty line), LF, SP and HTAB (obs-fold) and the other controls are all below
    // `!`: one test keeps them off the common path.
    if first <= b' ' {
        if buf.get(pos..pos + 2) == Some(b"\r\n") {
            return Ok(Line::End(pos + 2));
        }
        return Err(line_start(buf, pos));
    }
    // Find the line end first, scanning from the line start: name, colon and OWS are all
    // field-value bytes. The next line's position then depends on this one scan only, and the
    // name and value work below runs off that critical path. Anything unusual (a byte not
    // allowed in a value, HTAB, a bare CR or LF, a line not yet complete) goes to `line_end`.
    let mut end = simd::scan_controls(buf, pos);
    if buf.get(end..end + 2) != Some(b"\r\n") {
        end = line_end(buf, pos, end)?;
    }
    // Letters and `-` in one vector test; the rarer `tchar`s (digits, `_`, `!`, ...) byte by
    // byte. The CR at `end` bounds both.
    let mut colon = simd::scan_name(buf, pos);
    while buf.get(colon).is_some_and(|&b| is_token(b)) {
        colon += 1;
    }
    if colon == pos || buf.get(colon) != Some(&b':') {
        return Err(line_error(buf, pos));
    }
    // OWS around the value; the line (name, colon, value) is `line = buf[pos..end]`.
    let line = &buf[pos..end];
    let mut value_start = colon - pos + 1;
    while let Some(b' ' | b'\t') = line.get(value_start) {
        value_start += 1;
    }
    let mut value_end = line.len();
    while value_end > value_start && matches!(line[value_end - 1], b' ' | b'\t') {
        value_end -= 1;
    }
    let name = Span::new(pos, colon);
    let header = Header {
        kind: HeaderKind::of(&line[..colon - pos]),
        name,
        value: Span::new(pos + value_start, pos + value_end),
    };
    Ok(Line::Field(header, end + 2))
}

/// Why a field line starting with a byte below `!` (other than the CRLF that ends the
/// section) is an error, or needs more bytes.
#[cold]
#[inline(never)]
fn line_start(buf: &[u8], pos: usize) -> Stop {
    match (buf[pos], buf.get(pos + 1)) {
        (b'\r', None) => Stop::Partial,
        (b'\r', Some(_)) => Error::BareCr.into(),
        (b'\n', _) => Error::NewLine.into(),
        (b' ' | b'\t', _) => Error::ObsFold.into(),
        _ => Error::HeaderName.into(),
    }
}

/// The line end when the control scan from `pos` stopped at `stop` on something other than
/// CRLF: HTAB is allowed in values (scan on past it); anything else is [`line_error`].
#[cold]
#[inline(never)]
fn line_end(buf: &[u8], pos: usize, mut stop: usize) -> Step<usize> {
    while buf.get(stop) == Some(&b'\t') {
        stop = simd::scan_controls(buf, stop + 1);
    }
    if buf.get(stop..stop + 2) == Some(b"\r\n") {
        Ok(stop)
    } else {
        Err(line_error(buf, pos))
    }
}

/// Why the field line at `pos` is not a complete, valid line, checked in the order a reader
/// meets the bytes: the name (and its colon) first, then the value and the line ending.
#[cold]
#[inline(never)]
fn line_error(buf: &[u8], pos: usize) -> Stop {
    let Some(name_len) = buf[pos..].iter().position(|&b| !is_token(b)) else {
        return Stop::Partial;
    };
    let colon = pos + name_len;
    match buf[colon] {
        b':' if name_len > 0 => {}
        b' ' | b'\t' if name_len > 0 => return Error::WhitespaceBeforeColon.into(),
        _ => return Error::HeaderName.into(),
    }
    let end = simd::scan_value(buf, colon + 1);
    match (buf.get(end), buf.get(end + 1)) {
        (None, _) | (Some(b'\r'), None) => Stop::Partial,
        (Some(b'\r'), Some(b'\n')) => {
            // `parse_line` accepts every line that gets this far.
            debug_assert!(false, "line_error called on a valid line");
            Error::HeaderName.into()
        }
        (Some(b'\r'), Some(_)) => Error::BareCr.into(),
        (Some(b'\n'), _) => Error::NewLine.into(),
        (Some(_), _) => Error::HeaderValue.into(),
    }
}

/// Parses field lines from `pos` to the empty line. Returns the count stored in `headers` and
/// the index after the final CRLF. `check` sees each stored field with its index while its
/// bytes are still in cache (requests check `Host` there).
#[inline(always)]
pub(crate) fn parse_fields(
    buf: &[u8],
    mut pos: usize,
    headers: &mut [Header],
    mut check: impl FnMut(&Header, usize) -> Step<()>,
) -> Step<(usize, usize)> {
    let mut n = 0;
    loop {
        match parse_line(buf, pos)? {
            Line::End(end) => return Ok((n, end)),
            // An error on the extra line wins: only a well-formed extra field is "too many".
            Line::Field(header, next) => {
                let slot = headers.get_mut(n).ok_or(Error::TooManyHeaders)?;
                *slot = header;
                check(slot, n)?;
                n += 1;
                pos = next;
            }
        }
    }
}

/// The value of the first field of `kind`.
pub fn find<'a>(headers: &[Header], buf: &'a [u8], kind: HeaderKind) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.kind == kind)
        .map(|h| h.value.of(buf))
}

/// The value of the first cookie named `name` (case-sensitive) in the `Cookie` fields, without
/// the double quotes RFC 6265 allows around it.
pub fn cookie<'a>(headers: &[Header], buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    find_all(headers, buf, b"cookie")
        .flat_map(|v| v.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = super::trim_ows(pair);
            let eq = memchr::memchr(b'=', pair)?;
            if &pair[..eq] != name.as_bytes() {
                return None;
            }
            Some(match &pair[eq + 1..] {
                [b'"', inner @ .., b'"'] => inner,
                v => v,
            })
        })
}

/// The values of every field named `name` (case-insensitive), in order.
pub fn find_all<'a, 'h>(
    headers: &'h [Header],
    buf: &'a [u8],
    name: &'h [u8],
) -> impl Iterator<Item = &'a [u8]> + 'h
where
    'a: 'h,
{
    headers
        .iter()
        .filter(move |h| h.name.of(buf).eq_ignore_ascii_case(name))
        .map(move |h| h.value.of(buf))
}

/// The elements of a comma-separated list value (RFC 9110 §5.6.1), trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// True when any `Connection` field lists `token` (case-insensitive): an option such as
/// `close`, or the name of a field it nominates as hop-by-hop.
pub fn connection_has(headers: &[Header], buf: &[u8], token: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Connection)
        .any(|h| tokens(h.value.of(buf)).any(|t| t.eq_ignore_ascii_case(token)))
}

/// What the `Connection` fields of a message say, read in one pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Some other field is nominated: the serializer must check names against the list.
    pub nominates_others: bool,
}

impl ConnectionOptions {
    /// The sender asks to close after this message: `close` in HTTP/1.1, no `keep-alive` in
    /// HTTP/1.0.
    pub fn closes_after(&self, version: super::Version) -> bool {
        match version {
            super::Version::Http11 => self.close,
            super::Version::Http10 => !self.keep_alive,
        }
    }

    pub fn parse(headers: &[Header], buf: &[u8]) -> ConnectionOptions {
        let mut o = ConnectionOptions::default();
        for h in headers.iter().filter(|h| h.kind == HeaderKind::Connection) {
            for t in tokens(h.value.of(buf)) {
                if t.eq_ignore_ascii_case(b"close") {
                    o.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    o.keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    o.upgrade = true;
                } else {
                    o.nominates_others = true;
                }
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn fields(input: &[u8]) -> Result<Fields, Stop> {
        let mut hs = [Header::default(); 8];
        let (n, end) = parse_fields(input, 0, &mut hs, |_, _| Ok(()))?;
        assert_eq!(end, input.len());
        Ok(hs[..n]
            .iter()
            .map(|h| (h.name.of(input).to_vec(), h.value.of(input).to_vec()))
            .collect())
    }

    #[test]
    fn values_are_trimmed_and_may_hold_tabs_and_obs_text() {
        let got = fields(b"A: x\r\nB:\t y z \t\r\nC:\r\nD: \xff\xfe\tq\r\n\r\n").unwrap();
        assert_eq!(got[0], (b"A".to_vec(), b"x".to_vec()));
        assert_eq!(got[1], (b"B".to_vec(), b"y z".to_vec()));
        assert_eq!(got[2], (b"C".to_vec(), b"".to_vec()));
        assert_eq!(got[3], (b"D".to_vec(), b"\xff\xfe\tq".to_vec()));
        // Every tchar in a name, with the rare ones where the vector name scan stops.
        let name = b"Az09-._!#$%&'*+^`|~Z";
        let mut line = name.to_vec();
        line.extend_from_slice(b":\tlong value with\ttabs and spaces  \r\n\r\n");
        let got = fields(&line).unwrap();
        assert_eq!(
            got,
            vec![(name.to_vec(), b"long value with\ttabs and spaces".to_vec())]
        );
    }

    #[test]
    fn each_rule_has_its_error() {
        // Each case alone (shorter than 16 bytes: the scalar scans) and after a long field
        // (the vector scans, and the overlapping tail load near the end of the buffer).
        let e = |s: &[u8]| {
            let alone = fields(s).unwrap_err();
            let mut padded = b"X-Padding: 0123456789abcdef0123456789\r\n".to_vec();
            padded.extend_from_slice(s);
            assert_eq!(
                fields(&padded).unwrap_err(),
                alone,
                "{:?}",
                padded.escape_ascii()
            );
            alone
        };
        assert_eq!(e(b"A: b\r\n c\r\n\r\n"), Stop::Invalid(Error::ObsFold));
        assert_eq!(e(b"A: b\r\n\tc\r\n\r\n"), Stop::Invalid(Error::ObsFold));
        assert_eq!(
            e(b"A : b\r\n\r\n"),
            Stop::Invalid(Error::WhitespaceBeforeColon)
        );
        assert_eq!(
            e(b"A\t: b\r\n\r\n"),
            Stop::Invalid(Error::WhitespaceBeforeColon)
        );
        assert_eq!(e(b": b\r\n\r\n"), Stop::Invalid(Error::HeaderName));
        assert_eq!(e(b"A(: b\r\n\r\n"), Stop::Invalid(Error::HeaderName));
        assert_eq!(e(b"A\x00: b\r\n\r\n"), Stop::Invalid(Error::HeaderName));
        assert_eq!(e(b"A: b\x00c\r\n\r\n"), Stop::Invalid(Error::HeaderValue));
        assert_eq!(e(b"A: b\x7fc\r\n\r\n"), Stop::Invalid(Error::HeaderValue));
        assert_eq!(e(b"A: b\x01c\r\n\r\n"), Stop::Invalid(Error::HeaderValue));
        assert_eq!(e(b"A: b\rc\r\n\r\n"), Stop::Invalid(Error::BareCr));
        assert_eq!(e(b"A: b\nC: d\r\n\r\n"), Stop::Invalid(Error::NewLine));
        assert_eq!(e(b"A: b\r\n\n"), Stop::Invalid(Error::NewLine));
        assert_eq!(e(b"A: b\r\n\rX"), Stop::Invalid(Error::BareCr));
        assert_eq!(e(b"A: b\r\n"), Stop::Partial);
        assert_eq!(e(b"A: b\r"), Stop::Partial);
        assert_eq!(e(b"A"), Stop::Partial);
        let nine = b"a:1\r\nb:1\r\nc:1\r\nd:1\r\ne:1\r\nf:1\r\ng:1\r\nh:1\r\ni:1\r\n\r\n";
        assert_eq!(e(nine), Stop::Invalid(Error::TooManyHeaders));
    }

    #[test]
    fn kinds_and_lookups() {
        for (name, kind) in [
            (&b"HOST"[..], HeaderKind::Host),
            (b"content-LENGTH", HeaderKind::ContentLength),
            (b"Transfer-Encoding", HeaderKind::TransferEncoding),
            (b"TE", HeaderKind::Te),
            (b"Proxy-Connection", HeaderKind::ProxyConnection),
            (b"X-Forwarded-Host", HeaderKind::XForwardedHost),
            (b"X-Forwarded-Proto", HeaderKind::XForwardedProto),
            (b"Hosts", HeaderKind::Other),
            (b"Content_Length", HeaderKind::Other),
            (b"Content-Lengtx", HeaderKind::Other),
            (b"Transfer-Encoding", HeaderKind::TransferEncoding),
            (b"X-FORWARDED-FOR", HeaderKind::XForwardedFor),
            (b"kEEP-aLIVE", HeaderKind::KeepAlive),
            (b"T^", HeaderKind::Other),
            (b"", HeaderKind::Other),
        ] {
            assert_eq!(
                HeaderKind::of(name),
                kind,
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
        let buf = b"Connection: keep-alive, X-Foo\r\nconnection: Upgrade,,\r\nX-Foo: 1\r\nHost: a\r\n\r\n";
        let mut hs = [Header::default(); 8];
        let (n, _) = parse_fields(buf, 0, &mut hs, |_, _| Ok(())).unwrap();
        let hs = &hs[..n];
        assert_eq!(find(hs, buf, HeaderKind::Host), Some(&b"a"[..]));
        assert_eq!(find(hs, buf, HeaderKind::Te), None);
        assert_eq!(
            find_all(hs, buf, b"x-foo").collect::<Vec<_>>(),
            vec![&b"1"[..]]
        );
        assert!(connection_has(hs, buf, b"upgrade"));
        assert!(connection_has(hs, buf, b"x-FOO"));
        assert!(!connection_has(hs, buf, b"close"));
        let o = ConnectionOptions::parse(hs, buf);
        assert_eq!(
            o,
            ConnectionOptions {
                close: false,
                keep_alive: true,
                upgrade: true,
                nominates_others: true
            }
        );
        assert_eq!(
            tokens(b" a ,, b\t,").collect::<Vec<_>>(),
            vec![&b"a"[..], b"b"]
        );
    }
}
