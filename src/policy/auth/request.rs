//! Finding a credential in a request: field lookups over the parsed head, the `Authorization`
//! scheme, cookies, query parameters. Slices of the received buffer; nothing allocates.

use aws_lc_rs::digest;

use crate::http1::{trim_ows, Header};

/// The credential was given more than once, or in a way that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ambiguous;

/// The value of the one field named `name` (case-insensitive): `None` when there is none, an
/// error when there are several (which one the upstream would read is not ours to guess).
pub(super) fn single_field<'b>(
    hs: &[Header],
    buf: &'b [u8],
    name: &str,
) -> Result<Option<&'b [u8]>, Ambiguous> {
    let mut found = None;
    for h in hs {
        if h.name.of(buf).eq_ignore_ascii_case(name.as_bytes()) {
            if found.is_some() {
                return Err(Ambiguous);
            }
            found = Some(h.value.of(buf));
        }
    }
    Ok(found)
}

/// The credentials of an `Authorization` value whose scheme is `scheme` (compared
/// case-insensitively, RFC 9110 §11.1), trimmed; `None` for another scheme.
pub(super) fn credentials<'v>(value: &'v [u8], scheme: &str) -> Option<&'v [u8]> {
    let value = trim_ows(value);
    let (name, rest) = match memchr::memchr2(b' ', b'\t', value) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, &[][..]),
    };
    name.eq_ignore_ascii_case(scheme.as_bytes())
        .then(|| trim_ows(rest))
}

/// The value of the first cookie named `name` in the `Cookie` fields.
pub(super) use crate::http1::cookie;

/// The raw (still percent-encoded) value of query parameter `name`: `None` when absent, an
/// error when given twice.
pub(super) fn query_param<'q>(query: &'q [u8], name: &str) -> Result<Option<&'q [u8]>, Ambiguous> {
    let mut found = None;
    for (n, v) in crate::http1::query_pairs(query) {
        if n == name.as_bytes() {
            if found.is_some() {
                return Err(Ambiguous);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// SHA-256 of `raw` with its `%XX` escapes decoded (`+` is kept: RFC 3986, not form
/// encoding), fed through a small stack buffer; an error for a malformed escape.
pub(super) fn decoded_digest(raw: &[u8]) -> Result<[u8; 32], Ambiguous> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    if memchr::memchr(b'%', raw).is_none() {
        ctx.update(raw);
    } else {
        let mut chunk = [0u8; 64];
        let mut n = 0;
        let mut i = 0;
        while i < raw.len() {
            let b = match raw[i] {
                b'%' => {
                    let hex = raw.get(i + 1..i + 3).ok_or(Ambiguous)?;
                    i += 3;
                    (hex_val(hex[0]).ok_or(Ambiguous)? << 4) | hex_val(hex[1]).ok_or(Ambiguous)?
                }
                b => {
                    i += 1;
                    b
                }
            };
            chunk[n] = b;
            n += 1;
            if n == chunk.len() {
                ctx.update(&chunk);
                n = 0;
            }
        }
        ctx.update(&chunk[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

use crate::http1::hex_digit as hex_val;

/// SHA-256 of `bytes`.
pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}
