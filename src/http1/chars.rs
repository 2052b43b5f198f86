//! Byte classes as 256-entry constant tables (RFC 9110 §5.6.2 tokens, §5.5 field values,
//! RFC 9112 §3.2 request-targets). A table lookup is one load; no branches per class.

macro_rules! table {
    (|$b:ident| $e:expr) => {{
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $b = i as u8;
            t[i] = $e;
            i += 1;
        }
        t
    }};
}

const fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// `tchar`: method names, field names, transfer-coding names, chunk-extension names.
pub static TOKEN: [bool; 256] = table!(|b| is_tchar(b));

/// Bytes allowed inside a field value (field-vchar, SP, HTAB, obs-text).
pub static FIELD_VALUE: [bool; 256] = table!(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));

/// Bytes that are not controls (HTAB included) or DEL: field values without HTAB, the class
/// `simd::scan_controls` scans for.
pub static NO_CONTROL: [bool; 256] = table!(|b| b >= 0x20 && b != 0x7f);

/// Bytes allowed in a request-target: visible ASCII only. Non-ASCII must be percent-encoded;
/// controls, SP and DEL end or break the request line.
pub static TARGET: [bool; 256] = table!(|b| b > 0x20 && b < 0x7f);

/// ASCII letters, digits, `-`, `.` and `_`: the bytes of nearly every field name and host
/// name, all of them `tchar`s and reg-name bytes (the fast class of `simd::scan_word`).
pub static WORD: [bool; 256] =
    table!(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');

/// ASCII letters and `-`: nearly every byte of nearly every field name (the fast class of
/// `simd::scan_name`; the other `tchar`s are checked byte by byte after it).
pub static NAME: [bool; 256] = table!(|b| b.is_ascii_alphabetic() || b == b'-');

/// `qdtext` of a quoted-string (RFC 9110 §5.6.4), used in chunk extensions.
pub static QDTEXT: [bool; 256] =
    table!(|b| b == b'\t' || b == b' ' || b == 0x21 || (b >= 0x23 && b != 0x5c && b != 0x7f));

/// Bytes of a reg-name host (unreserved, pct-encoded, sub-delims except `,`).
pub static REG_NAME: [bool; 256] = table!(|b| b.is_ascii_alphanumeric()
    || matches!(
        b,
        b'-' | b'.' | b'_' | b'~' | b'%' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')'
    )
    || matches!(b, b'*' | b'+' | b';' | b'='));

/// Reason phrase: HTAB, SP, VCHAR, obs-text.
pub use FIELD_VALUE as REASON;

#[inline(always)]
pub fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// True when every byte is a `tchar` and there is at least one.
pub fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Trims optional whitespace (SP / HTAB) on both sides.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The value of a hex digit (either case).
pub fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The `name=value` pairs of a query (without the `?`), as received: a pair without `=` has an
/// empty value; empty pairs (`a=1&&b=2`) are skipped.
pub fn query_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| match memchr::memchr(b'=', pair) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(is_token(b'!') && is_token(b'~') && is_token(b'Z') && is_token(b'7'));
        assert!(!is_token(b' ') && !is_token(b':') && !is_token(b'"') && !is_token(0x80));
        assert!(FIELD_VALUE[b'\t' as usize] && FIELD_VALUE[0x80] && FIELD_VALUE[b' ' as usize]);
        assert!(!FIELD_VALUE[0] && !FIELD_VALUE[b'\r' as usize] && !FIELD_VALUE[0x7f]);
        assert!(TARGET[b'/' as usize] && TARGET[b'~' as usize]);
        assert!(
            !TARGET[b' ' as usize] && !TARGET[0x7f] && !TARGET[0x80] && !TARGET[b'\t' as usize]
        );
        assert!(QDTEXT[b'a' as usize] && !QDTEXT[b'"' as usize] && !QDTEXT[b'\\' as usize]);
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"  "), b"");
    }
}
