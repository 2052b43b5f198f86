//! Conditions beyond host and path: the method, header fields and query parameters a route
//! requires. Only routes that name some pay for them; they are checked after the host and path
//! have chosen the candidates, against the parsed head (no copy of a field).

use crate::http1::Header;
use std::borrow::Cow;

/// A route's extra conditions; all must hold.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Allowed methods (as sent, upper case); empty: any.
    pub methods: Box<[Box<[u8]>]>,
    pub headers: Box<[FieldMatch]>,
    pub query: Box<[FieldMatch]>,
    /// A regex the normalised path must match; its captures are variables of the route's
    /// templates (`$1`, `${name}`).
    pub path_regex: Option<regex::bytes::Regex>,
}

/// One named field or parameter and the test its value must pass.
#[derive(Debug, Clone)]
pub struct FieldMatch {
    /// Header names compare case-insensitively, query parameter names exactly (decoded).
    pub name: Box<str>,
    pub test: Test,
}

#[derive(Debug, Clone)]
pub enum Test {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    /// Matched anywhere in the value unless anchored (`^…$`).
    Regex(regex::bytes::Regex),
    /// `true`: the field is there (any value); `false`: it is absent.
    Present(bool),
}

impl Test {
    fn passes(&self, value: &[u8]) -> bool {
        match self {
            Test::Exact(v) => value == &**v,
            Test::Prefix(v) => value.starts_with(v),
            Test::Regex(r) => r.is_match(value),
            Test::Present(p) => *p,
        }
    }
}

/// What conditions are checked against: the parsed request head.
#[derive(Clone, Copy)]
pub struct RequestView<'r> {
    pub method: &'r [u8],
    /// The normalised path the route was chosen on.
    pub path: &'r [u8],
    pub headers: &'r [Header],
    pub buf: &'r [u8],
    /// The query after `?` (empty when none).
    pub query: &'r [u8],
}

impl Conditions {
    pub fn admit(&self, req: &RequestView) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| **m == *req.method))
            && self
                .path_regex
                .as_ref()
                .is_none_or(|r| r.is_match(req.path))
            && self.headers.iter().all(|m| {
                let mut fields = req
                    .headers
                    .iter()
                    .filter(|h| h.name.of(req.buf).eq_ignore_ascii_case(m.name.as_bytes()));
                match m.test {
                    Test::Present(want) => fields.next().is_some() == want,
                    ref t => fields.any(|h| t.passes(h.value.of(req.buf))),
                }
            })
            && self
                .query
                .iter()
                .all(|m| match query_param(req.query, &m.name) {
                    None => matches!(m.test, Test::Present(false)),
                    Some(v) => m.test.passes(&v),
                })
    }
}

/// The first value of query parameter `name` in `query`, percent-decoded (`+` as space);
/// borrowed unless it holds an escape.
pub fn query_param<'q>(query: &'q [u8], name: &str) -> Option<Cow<'q, [u8]>> {
    crate::http1::query_pairs(query)
        .find_map(|(n, v)| (decode(n) == name.as_bytes()).then(|| decode(v)))
}

/// Percent-decodes a query component (`+` is a space); a broken escape is kept as it is.
pub fn decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(s.get(i + 1)), hex(s.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(b: Option<&u8>) -> Option<u8> {
    b.and_then(|&b| crate::http1::hex_digit(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        assert_eq!(query_param(b"a=1&b=2", "b").as_deref(), Some(&b"2"[..]));
        assert_eq!(query_param(b"a=1&b", "b").as_deref(), Some(&b""[..]));
        assert_eq!(
            query_param(b"x%20y=a+b%2F", "x y").as_deref(),
            Some(&b"a b/"[..])
        );
        assert_eq!(query_param(b"a=%zz", "a").as_deref(), Some(&b"%zz"[..]));
        assert_eq!(query_param(b"a=1", "c"), None);
        assert_eq!(query_param(b"", "a"), None);
    }
}
